//! Integration tests: one binary (faster to link), one module per area. Each test starts the
//! real service on port 0 (or the real executable) and talks HTTP to it.

mod agents;
mod api;
mod architecture;
mod authoring;
// The benchmark harness's load generator, for its unit tests: the bench target
// (`harness = false`) runs none.
#[allow(dead_code)]
#[path = "../../benches/gateway/load.rs"]
mod bench_load;
mod cluster;
mod cluster_sessions;
mod common;
mod config;
mod connectors;
mod contract;
mod durability;
mod events_bounds;
mod extensions;
mod frontdoor;
mod krawall;
mod lifecycle;
mod logs;
mod metrics;
mod mock;
mod model;
mod otlp;
mod pg;
mod robustness;
mod scripts;
mod sdk;
mod secrets;
mod sessions;
mod sessions_park;
mod shutdown;
mod slow_clients;
mod store;
mod store_backends;
mod supervision;
mod ui;
mod upstreams;
mod webapis;
mod webdriver;
mod webhooks;

//! Integration tests: one binary (faster to link), one module per area. Each test starts the
//! real service on port 0 (or the real executable) and talks HTTP to it.

mod api;
mod architecture;
mod authoring;
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
mod shutdown;
mod slow_clients;
mod store;
mod store_backends;
mod supervision;
mod ui;
mod upstreams;
mod webapis;
mod webdriver;

//! switchyard: a long-lived gateway that hosts plugins, each on its own supervised actor.
//!
//! It unites two plugin systems: Open Astra gateway plugins (`init(ctx)` / `start()` /
//! `stop()`, discovered and started in order, stopped in reverse) and Krawall connector plugins
//! (per-message hooks in priority order). Parts that can fail run as actors under our own
//! OTP-style supervisor; a broker actor is the event bus; HTTP (actix-web) serves the REST API
//! and health endpoints.
//!
//! # Layout
//!
//! - [`app`] — boot order, shutdown with a deadline; the one place things are wired together.
//! - [`settings`] — the typed settings tree and its layered loading; [`cli`] parses flags.
//! - [`supervisor`] — the supervisor actor, child specs, and the pure restart [`supervisor::policy`].
//! - [`broker`] — the event-bus actor, its stable handle, and the event catalogue.
//! - [`plugin`] — the `Plugin` trait, the plugin actor, dependency order, the host lifecycle.
//! - [`script`] — JS/TS plugins: discovery, the QuickJS engine per plugin, TS stripping, hot reload.
//! - [`route`], [`tool`], [`agent`] — what plugins register through their context: routes on the
//!   dynamic router, tools with JSON Schema parameters, agent configs and the agent runner.
//! - [`inference`] — OpenAI/Anthropic clients with retries, circuit breakers and fallbacks.
//! - [`api`] — HTTP routes, middleware and the single `ApiError` table.
//! - [`health`] — the snapshot table every probe reads; [`telemetry`] — log output.
//! - `test_util` — fault plugins for supervision tests (feature `test-util`).

pub mod agent;
pub mod api;
pub mod app;
pub mod broker;
pub mod bundled;
pub mod cli;
pub mod connector;
pub mod health;
pub mod inference;
pub mod plugin;
pub mod route;
pub mod script;
pub mod session;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod target;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tool;
pub mod turn;
pub mod util;

pub use app::{App, ExitReport, Options, ShutdownHandle, StartupError};
pub use settings::Settings;

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
//! Floors, lowest first; a module imports only its own floor or lower ones
//! (`tests/it/architecture.rs` keeps it so; docs/ARCHITECTURE.md has the map):
//!
//! 0. [`util`], [`health`] — small helpers; the snapshot table every probe reads;
//!    [`scaffold`] — `switchyard plugin new` (imports nothing of the crate);
//!    [`trace_context`] — W3C `traceparent` in and out (feature `otlp`).
//! 1. [`settings`] — the settings tree as data; [`supervisor`] — the supervisor actor, child
//!    specs and the pure restart [`supervisor::policy`]; [`broker`] — the event bus;
//!    [`metrics`] — the registry behind `GET /metrics`.
//! 2. [`store`] — rows in SQLite and the batched writer; [`connector`] — upstream protocols;
//!    [`route`], [`tool`], [`agent`] — what plugins register; [`inference`] — model clients.
//! 3. [`target`] — targets and their catalogue; [`plugin`] — the plugin runtime, with
//!    [`plugin::call`], the one way to call a plugin.
//! 4. [`script`] — JS/TS plugins on QuickJS; [`bundled`] — the plugins shipped in the
//!    binary; [`turn`] — agent turns.
//! 5. [`session`] — session actors and the message pipeline; [`frontdoor`] — OpenAI- and
//!    Anthropic-compatible traffic through implicit sessions: model routes, virtual keys.
//! 6. [`api`] — HTTP routes, middleware and the single `ApiError` table.
//! 7. [`app`] — boot order and shutdown, settings into each subsystem's config; [`cli`];
//!    [`telemetry`] — log output and trace export. `test_util` — fault plugins for supervision tests (feature
//!    `test-util`).

pub mod agent;
pub mod api;
pub mod app;
pub mod broker;
pub mod bundled;
pub mod cli;
pub mod connector;
pub mod frontdoor;
pub mod health;
pub mod inference;
pub mod metrics;
pub mod plugin;
pub mod route;
pub mod scaffold;
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
pub mod trace_context;
pub mod turn;
pub mod util;
pub mod webhook;

pub use app::{App, ExitReport, Options, ShutdownHandle, StartupError};
pub use settings::Settings;

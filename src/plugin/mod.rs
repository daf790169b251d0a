//! Plugins: the runtime every plugin runs in, native or loaded from files.
//!
//! Owns the `Plugin` trait (both seed contracts: Open Astra's `init`/`start`/`stop` lifecycle
//! and Krawall's connector metadata), the manifest, the context handed to `init`, and the
//! runtime around them:
//! - `actor`: one plugin instance on its own actor, with its messages;
//! - `call`: the one way to call a plugin (connector hook, route, tool, lifecycle step);
//! - `host`: the catalogue of plugins and the queries on it; `registry`: each plugin's current
//!   instance; `lifecycle`: boot order and supervision glue; `ops`: operator actions;
//!   `disabled`: the remembered disabled set; `cluster`: the other instances' plugin states
//!   and operator actions across instances (with `broker.nats_url`);
//! - `source`: where plugins come from, and the [`source::Loader`] trait engines plug in
//!   through (this module never names one);
//! - `deps`: dependency order; `config`: Krawall config schemas; `extensions`: routes, tools
//!   and agents registered as one unit.
//!
//! Does not own restarts (`supervisor`), event delivery (`broker`), any plugin engine
//! (`script`) nor the plugins shipped in the binary (`bundled`).

pub mod actor;
pub mod call;
pub mod cluster;
pub mod config;
pub mod deps;
pub mod disabled;
pub mod extensions;
pub mod host;
pub mod lifecycle;
pub mod ops;
pub mod registry;
pub mod source;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{Agent, AgentSource};
use crate::broker::{BrokerHandle, Event};
use crate::inference::{Client, ClientConfig};
use crate::route::{Method, Route, RouteRequest, RouteResponse};
use crate::tool::{Tool, ToolSpec};
pub use extensions::{Extensions, Staged};

/// Version of the host API plugins are written against; a plugin declares the range it needs.
pub const HOST_API_VERSION: Version = Version::new(1, 0, 0);

/// Connector types a plugin may declare in `compatibleConnectors`.
pub const CONNECTOR_TYPES: &[&str] = &["HTTP_REST", "WEBSOCKET", "GRPC", "SSE"];

/// Default priority of connector plugins (Krawall: lower runs first).
pub const DEFAULT_PRIORITY: u32 = 100;

/// A failure reported by a plugin hook.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct PluginError {
    pub message: String,
    /// The plugin cannot go on (it broke a resource limit): its actor stops and the supervisor
    /// restarts it.
    pub fatal: bool,
    /// Which step failed when it matters to the caller (`compile`, `validate`, `init`, …).
    pub step: Option<&'static str>,
}

impl PluginError {
    pub fn new(message: impl Into<String>) -> Self {
        PluginError {
            message: message.into(),
            fatal: false,
            step: None,
        }
    }

    /// An error after which the plugin counts as crashed.
    pub fn fatal(message: impl Into<String>) -> Self {
        PluginError {
            fatal: true,
            ..PluginError::new(message)
        }
    }

    pub fn at_step(mut self, step: &'static str) -> Self {
        self.step = Some(step);
        self
    }
}

/// Type of one configuration field (Krawall's `PluginConfigField.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Number,
    Boolean,
    Select,
    Json,
}

/// One choice of a `select` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectOption {
    pub label: String,
    pub value: String,
}

/// One field of a plugin's configuration schema, as Krawall's UI and validator expect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigField {
    pub key: String,
    pub label: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<SelectOption>>,
    /// Masked in every response and log.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A dependency on another plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub id: String,
    #[serde(serialize_with = "serialize_display")]
    pub version: VersionReq,
}

fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// What a plugin is: both seed contracts' metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginManifest {
    /// Unique id (Open Astra's `name`, Krawall's `id`).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    #[serde(serialize_with = "serialize_display")]
    pub version: Version,
    pub description: String,
    /// Pipeline position for connector hooks; lower runs first.
    pub priority: u32,
    /// Connector types it works with (`HTTP_REST`, `WEBSOCKET`, `GRPC`, `SSE`).
    pub compatible_connectors: Vec<String>,
    pub config_schema: Vec<ConfigField>,
    pub dependencies: Vec<Dependency>,
    /// Range of [`HOST_API_VERSION`] the plugin works with.
    #[serde(serialize_with = "serialize_display")]
    pub host_api: VersionReq,
}

impl PluginManifest {
    /// A manifest with the defaults filled in.
    pub fn new(id: &str, version: Version) -> Self {
        PluginManifest {
            id: id.to_string(),
            name: id.to_string(),
            version,
            description: String::new(),
            priority: DEFAULT_PRIORITY,
            compatible_connectors: Vec::new(),
            config_schema: Vec::new(),
            dependencies: Vec::new(),
            host_api: VersionReq::parse("^1").expect("valid requirement"),
        }
    }

    pub fn describe(mut self, description: &str) -> Self {
        self.description = description.to_string();
        self
    }

    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Adds a dependency; `req` is a semver requirement such as `^1.2`.
    pub fn depends_on(mut self, id: &str, req: &str) -> Self {
        self.dependencies.push(Dependency {
            id: id.to_string(),
            version: VersionReq::parse(req).expect("valid requirement in a built-in manifest"),
        });
        self
    }
}

/// A plugin. Hooks run on the plugin's own actor; all have defaults, so a plugin implements only
/// what it uses. The connector hooks of the session pipeline are added beside these.
#[async_trait(?Send)]
pub trait Plugin: Send + Sync + 'static {
    fn manifest(&self) -> PluginManifest;

    /// Called once per instance, in dependency order, before HTTP is up. A failure refuses the
    /// plugin (`plugin.error`, phase `init`); the others continue.
    async fn init(&self, _ctx: &PluginContext) -> Result<(), PluginError> {
        Ok(())
    }

    /// Called after HTTP is listening (and after each restart).
    async fn start(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Called on shutdown in reverse start order, within `plugins.stop_timeout_ms`.
    async fn stop(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// An event matching a pattern registered with `ctx.events().on(..)` during `init`.
    async fn on_event(&self, _event: &Event) -> Result<(), PluginError> {
        Ok(())
    }

    /// Krawall connector plugins this plugin provides. Native plugins provide at most one,
    /// under their own id, when they declare compatible connectors.
    fn connector_plugins(&self) -> Vec<ConnectorPluginInfo> {
        let m = self.manifest();
        if m.compatible_connectors.is_empty() {
            return Vec::new();
        }
        vec![ConnectorPluginInfo {
            id: m.id.clone(),
            name: m.name.clone(),
            description: m.description.clone(),
            version: m.version.to_string(),
            priority: m.priority,
            compatible_connectors: m.compatible_connectors.clone(),
            config_schema: m.config_schema.clone(),
            hooks: self.connector_hooks(),
        }]
    }

    /// The connector hooks this (native) plugin's `connector_hook` handles. The pipeline calls
    /// no other: it neither builds their input nor times them. By default every hook but
    /// [`Hook::OnChunk`] (called for each chunk of a streamed answer, so only on request).
    fn connector_hooks(&self) -> HookSet {
        HookSet::LIFECYCLE
    }

    /// Whether connector plugin `connector_plugin` has hook `hook`, asked of the instance
    /// running now on every call (a reload may add or drop hooks). Cheap: no input is built
    /// for a hook a plugin does not have.
    fn has_hook(&self, _connector_plugin: &str, hook: Hook) -> bool {
        self.connector_hooks().contains(hook)
    }

    /// Runs connector hook `hook` of connector plugin `connector_plugin`. `input` and the
    /// result are JSON in Krawall's shapes. `input` is lent, not given: a plugin that changes
    /// nothing reads it and answers `Ok(None)`, and nothing is copied for it; one that changes
    /// something builds only its answer (the pipeline may lend the same input to several
    /// plugins in a row, so it must not be assumed fresh):
    /// - `initialize`, `onDisconnect`: input `null`; the result is ignored;
    /// - `onConnect`: a `ConnectorConfig` in, the (changed) `ConnectorConfig` out;
    /// - `beforeSend`: `{message, metadata}` in, `{message, metadata?}` out;
    /// - `afterReceive`: `{response}` in, `{response, metadata?}` out;
    /// - `onChunk` (streamed answers, see [`Plugin::connector_hooks`]): `{chunk, index}` in,
    ///   `{chunk}` out to rewrite it (an empty string drops it).
    ///
    /// `ctx.state` is the plugin's per-session state: change it in place. `Ok(None)` means the
    /// plugin has no such hook or changes nothing (its input passes through).
    async fn connector_hook(
        &self,
        _connector_plugin: &str,
        _hook: Hook,
        _input: &Value,
        _ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        Ok(None)
    }

    /// Krawall's synchronous `onError(error, hookName, ctx)`: told about a failed hook.
    fn on_error(&self, _connector_plugin: &str, _error: &str, _hook: Hook, _ctx: &HookContext) {}

    /// Whether the session pipeline may call this plugin's connector hooks directly on the
    /// session's own thread instead of through its actor. True for native plugins (they are
    /// `Send + Sync` and keep per-session state in the `HookContext`), which saves two thread
    /// hops per hook; a panic there is still reported to the plugin's supervisor as a crash.
    /// Script plugins answer false: their engine lives on their actor's thread.
    fn hooks_inline(&self) -> bool {
        true
    }

    /// Answers a request to route `handler` (the number [`PluginContext::mount`] returned).
    async fn route(&self, handler: u32, _req: RouteRequest) -> Result<RouteResponse, PluginError> {
        Err(PluginError::new(format!(
            "this plugin has no route handler #{handler}"
        )))
    }

    /// Runs tool `name` (registered with [`PluginContext::register_tool`]) with parameters
    /// that already passed its schema.
    async fn tool(&self, name: &str, _params: Value) -> Result<Value, PluginError> {
        Err(PluginError::new(format!(
            "this plugin has no tool '{name}'"
        )))
    }
}

/// A connector hook (Krawall's lifecycle, in call order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Hook {
    Initialize,
    OnConnect,
    BeforeSend,
    AfterReceive,
    OnDisconnect,
    /// Each chunk of a streamed answer, before it reaches the client.
    OnChunk,
}

impl Hook {
    /// Every hook, in call order.
    pub const ALL: [Hook; 6] = [
        Hook::Initialize,
        Hook::OnConnect,
        Hook::BeforeSend,
        Hook::AfterReceive,
        Hook::OnDisconnect,
        Hook::OnChunk,
    ];

    /// The hook Krawall calls `name`.
    pub fn from_name(name: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Initialize => "initialize",
            Hook::OnConnect => "onConnect",
            Hook::BeforeSend => "beforeSend",
            Hook::AfterReceive => "afterReceive",
            Hook::OnDisconnect => "onDisconnect",
            Hook::OnChunk => "onChunk",
        }
    }
}

/// A set of connector hooks: what a connector plugin implements. Shown as the list of their
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookSet(u8);

impl HookSet {
    pub const EMPTY: HookSet = HookSet(0);
    /// Every hook but `onChunk`.
    pub const LIFECYCLE: HookSet = HookSet::EMPTY
        .with(Hook::Initialize)
        .with(Hook::OnConnect)
        .with(Hook::BeforeSend)
        .with(Hook::AfterReceive)
        .with(Hook::OnDisconnect);

    pub const fn with(self, hook: Hook) -> HookSet {
        HookSet(self.0 | 1 << hook as u8)
    }

    pub const fn contains(self, hook: Hook) -> bool {
        self.0 & 1 << hook as u8 != 0
    }

    /// The hooks named in `names`; unknown names are not hooks and are left out.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> HookSet {
        names
            .into_iter()
            .filter_map(Hook::from_name)
            .fold(HookSet::EMPTY, HookSet::with)
    }

    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::ALL.into_iter().filter(move |h| self.contains(*h))
    }
}

impl Serialize for HookSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Hook::name))
    }
}

/// Per-session, per-plugin context of a connector hook (Krawall's `PluginContext`). It lives in
/// the session and travels with each call, so a restarted plugin keeps its sessions' state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookContext {
    pub session_id: String,
    pub target_id: String,
    pub connector_type: String,
    pub state: serde_json::Map<String, Value>,
    pub plugin_config: serde_json::Map<String, Value>,
}

/// A connector plugin as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorPluginInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub version: String,
    pub priority: u32,
    pub compatible_connectors: Vec<String>,
    pub config_schema: Vec<ConfigField>,
    /// The hooks it implements; only those are called (`onChunk` for each chunk of a streamed
    /// answer).
    pub hooks: HookSet,
}

/// Builds fresh plugin instances; the supervisor calls it again on every restart.
pub type PluginFactory = Arc<dyn Fn() -> Arc<dyn Plugin> + Send + Sync>;

/// What `init(ctx)` receives: the gateway systems a plugin may use, scoped to that plugin.
#[derive(Clone)]
pub struct PluginContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    plugin: String,
    broker: BrokerHandle,
    server_addr: Arc<OnceLock<SocketAddr>>,
    subscriptions: Mutex<Vec<String>>,
    ext: Arc<Extensions>,
    /// Unique per plugin instance (each restart and reload makes a new one).
    instance: u64,
    /// Routes, tools and agents registered during `init`; installed together when it returns.
    staged: Mutex<Option<Staged>>,
    /// Stops this instance's actor with a reason (set once the actor runs).
    crash: OnceLock<CrashReporter>,
}

/// Stops a plugin instance's actor with a reason, so its supervisor restarts it.
pub(crate) type CrashReporter = Box<dyn Fn(String) + Send + Sync>;

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

impl PluginContext {
    pub(crate) fn new(
        plugin: &str,
        broker: BrokerHandle,
        server_addr: Arc<OnceLock<SocketAddr>>,
        ext: Arc<Extensions>,
    ) -> Self {
        PluginContext {
            inner: Arc::new(ContextInner {
                plugin: plugin.to_string(),
                broker,
                server_addr,
                subscriptions: Mutex::new(Vec::new()),
                ext,
                instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                staged: Mutex::new(Some(Staged::default())),
                crash: OnceLock::new(),
            }),
        }
    }

    /// Reports that this instance broke down outside any call (a script that broke a limit in
    /// a timer callback, say): its actor stops with `reason` and its supervisor restarts it,
    /// at once rather than at the next call.
    pub fn crash(&self, reason: impl Into<String>) {
        let reason = reason.into();
        match self.inner.crash.get() {
            Some(report) => report(reason),
            None => {
                tracing::warn!(plugin = %self.inner.plugin, %reason, "A plugin broke down before its actor ran; its next call reports it.")
            }
        }
    }

    pub(crate) fn on_crash(&self, report: CrashReporter) {
        let _ = self.inner.crash.set(report);
    }

    /// This plugin instance's number (a restart or reload gets a new one).
    pub fn instance(&self) -> u64 {
        self.inner.instance
    }

    pub(crate) fn extensions(&self) -> &Arc<Extensions> {
        &self.inner.ext
    }

    /// Registrations are staged during `init` only; `what` names the call for the error.
    fn stage<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Extensions, &mut Staged) -> Result<T, String>,
    ) -> Result<T, PluginError> {
        let mut staged = self.inner.staged.lock().unwrap_or_else(|e| e.into_inner());
        let staged = staged
            .as_mut()
            .ok_or_else(|| PluginError::new(format!("{what} is only possible during init(ctx)")))?;
        f(&self.inner.ext, staged).map_err(PluginError::new)
    }

    /// Mounts a route (Open Astra's `ctx.app.get(..)` and friends): under
    /// `/plugins/<id><path>`, or at `path` itself when `absolute`. Returns the handler number
    /// [`Plugin::route`] receives. Collisions with core routes or other plugins are refused.
    pub fn mount(&self, method: Method, path: &str, absolute: bool) -> Result<u32, PluginError> {
        let options = crate::route::RouteOptions {
            absolute,
            public: false,
        };
        self.mount_with(method, path, options)
    }

    /// [`mount`](Self::mount) with every option: `public` routes answer without the admin
    /// token (webhooks); the others require it whenever `server.admin_token` is set.
    pub fn mount_with(
        &self,
        method: Method,
        path: &str,
        options: crate::route::RouteOptions,
    ) -> Result<u32, PluginError> {
        let (plugin, instance) = (self.inner.plugin.clone(), self.inner.instance);
        self.stage("mounting a route", |ext, staged| {
            let handler = staged.routes.len() as u32;
            let route = Route::with_options(&plugin, method, path, options, handler, instance)
                .map_err(|e| e.to_string())?;
            ext.routes
                .check(&route, &staged.routes)
                .map_err(|e| e.to_string())?;
            staged.routes.push(route);
            Ok(handler)
        })
    }

    /// Registers a tool (Open Astra's `ctx.registerTool`); its name must be unique and its
    /// parameters a valid JSON Schema.
    pub fn register_tool(&self, spec: ToolSpec) -> Result<(), PluginError> {
        let (plugin, instance) = (self.inner.plugin.clone(), self.inner.instance);
        self.stage("registerTool", |ext, staged| {
            let tool = Tool::new(spec, &plugin, instance).map_err(|e| e.to_string())?;
            ext.tools
                .check(&tool, &staged.tools)
                .map_err(|e| e.to_string())?;
            staged.tools.push(tool);
            Ok(())
        })
    }

    /// Registers an agent configuration (Open Astra's `ctx.registerAgentConfig`); every
    /// problem in it is reported at once.
    pub fn register_agent_config(&self, id: &str, config: &Value) -> Result<(), PluginError> {
        let (plugin, instance) = (self.inner.plugin.clone(), self.inner.instance);
        self.stage("registerAgentConfig", |ext, staged| {
            let config = crate::agent::parse(Some(id), config).map_err(|errors| {
                crate::agent::AgentConfigError::Invalid {
                    id: id.to_string(),
                    errors,
                }
                .to_string()
            })?;
            let agent = Agent {
                config,
                source: AgentSource::Plugin(plugin),
                instance,
            };
            ext.agents
                .check(&agent, &staged.agents)
                .map_err(|e| e.to_string())?;
            staged.agents.push(agent);
            Ok(())
        })
    }

    /// An inference client (Open Astra's `ctx.resolveClient`), cached by
    /// `provider:modelId:endpoint`, with retries, the circuit breaker and the fallback.
    pub fn resolve_client(&self, config: &ClientConfig) -> Result<Arc<Client>, PluginError> {
        self.inner
            .ext
            .inference
            .resolve(config)
            .map_err(|e| PluginError::new(e.to_string()))
    }

    /// [`PluginContext::resolve_client`] from a script's JSON config.
    pub fn resolve_client_json(&self, config: &Value) -> Result<Arc<Client>, PluginError> {
        let config: ClientConfig = serde_json::from_value(config.clone()).map_err(|e| {
            PluginError::new(format!(
                "resolveClient(config): {e} (expected {{provider, modelId, endpoint?, temperature?, maxOutputTokens?, fallback?}})"
            ))
        })?;
        self.resolve_client(&config)
    }

    /// Ends staging and hands over what `init` registered.
    pub(crate) fn take_staged(&self) -> Staged {
        self.inner
            .staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// The plugin this context belongs to.
    pub fn plugin_id(&self) -> &str {
        &self.inner.plugin
    }

    /// The scoped logger (Open Astra's `ctx.logger`).
    pub fn logger(&self) -> PluginLogger {
        PluginLogger {
            plugin: self.inner.plugin.clone(),
        }
    }

    /// The event bus (Open Astra's `ctx.getEventBus()`).
    pub fn events(&self) -> EventBus<'_> {
        EventBus { ctx: self }
    }

    /// The address HTTP listens on, once it does (it does not during `init`).
    pub fn server_addr(&self) -> Option<SocketAddr> {
        self.inner.server_addr.get().copied()
    }

    pub(crate) fn take_subscriptions(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .inner
                .subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

/// A logger that tags every line with the plugin id.
pub struct PluginLogger {
    plugin: String,
}

impl PluginLogger {
    pub fn info(&self, message: &str) {
        tracing::info!(plugin = %self.plugin, "{message}");
    }

    pub fn warn(&self, message: &str) {
        tracing::warn!(plugin = %self.plugin, "{message}");
    }

    pub fn error(&self, message: &str) {
        tracing::error!(plugin = %self.plugin, "{message}");
    }
}

/// The plugin's view of the broker.
pub struct EventBus<'a> {
    ctx: &'a PluginContext,
}

impl EventBus<'_> {
    /// Delivers events matching `pattern` to the plugin's `on_event`, on its own actor. Takes
    /// effect when `init` returns.
    pub fn on(&self, pattern: &str) -> Result<(), PluginError> {
        crate::broker::Pattern::parse(pattern).map_err(|e| PluginError::new(e.to_string()))?;
        self.ctx
            .inner
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pattern.to_string());
        Ok(())
    }

    /// Publishes an event under the plugin's own name (host namespaces are refused).
    pub fn emit(&self, name: &str, data: Value) -> Result<(), PluginError> {
        let event = Event::custom(name, data).map_err(PluginError::new)?;
        self.ctx.inner.broker.publish(event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Hook, HookSet};

    #[test]
    fn hook_sets_hold_what_was_put_in_and_show_as_names_in_call_order() {
        let set = HookSet::from_names(["afterReceive", "beforeSend", "nonsense", "onChunk"]);
        assert!(set.contains(Hook::BeforeSend) && set.contains(Hook::AfterReceive));
        assert!(set.contains(Hook::OnChunk));
        assert!(!set.contains(Hook::Initialize) && !set.contains(Hook::OnConnect));
        assert_eq!(
            serde_json::to_value(set).unwrap(),
            serde_json::json!(["beforeSend", "afterReceive", "onChunk"])
        );
        assert!(Hook::ALL.iter().all(|h| !HookSet::EMPTY.contains(*h)));
        assert!(Hook::ALL
            .iter()
            .all(|h| HookSet::LIFECYCLE.contains(*h) == (*h != Hook::OnChunk)));
        for hook in Hook::ALL {
            assert_eq!(Hook::from_name(hook.name()), Some(hook));
        }
    }
}

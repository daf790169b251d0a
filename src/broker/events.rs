//! The event catalogue: every event the broker carries, with its payload type and publisher.
//!
//! Owns event names, payload shapes and the JSON envelope `{event, timestamp, data, origin}`
//! (and reading it back when it arrives from another instance). Does not own delivery
//! (`broker::Broker`, `broker::nats`). Payload fields are camelCase, as in the seeds.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A typed payload with its fixed event name.
pub trait Topic: Serialize {
    const NAME: &'static str;
}

/// An event as it travels on the bus and over the wire.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Event name, e.g. `plugin.loaded`.
    pub event: String,
    #[serde(serialize_with = "crate::util::serialize_rfc3339")]
    pub timestamp: SystemTime,
    /// At most `broker.max_event_bytes` of JSON once published: a larger payload is replaced
    /// by a marker `{"truncated": true, "originalBytes", "maxBytes", "preview", …}`
    /// (`broker::bound::marker`).
    pub data: Value,
    /// The instance that published it (`server.instance_id`); set by the broker on publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Arc<str>>,
    /// Whether it may reach other instances (with `broker.nats_url` set).
    #[serde(skip)]
    pub scope: Scope,
}

/// How far an event travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// To every instance of the cluster (only this one without NATS).
    #[default]
    Cluster,
    /// To this instance's subscribers only.
    Local,
}

/// The envelope as it arrives from another instance.
#[derive(Debug, Deserialize)]
struct Wire {
    event: String,
    timestamp: String,
    #[serde(default)]
    data: Value,
    origin: Option<String>,
}

impl Event {
    /// An event from the catalogue.
    pub fn new<T: Topic>(payload: &T) -> Event {
        Event {
            event: T::NAME.to_string(),
            timestamp: SystemTime::now(),
            data: serde_json::to_value(payload).unwrap_or(Value::Null),
            origin: None,
            scope: Scope::Cluster,
        }
    }

    /// This event for this instance's subscribers only.
    pub fn local(mut self) -> Event {
        self.scope = Scope::Local;
        self
    }

    /// Reads an envelope another instance published. It must name its origin: an event from
    /// nowhere could be taken for this instance's own.
    pub fn from_wire(bytes: &[u8]) -> Result<Event, String> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| format!("not an event envelope: {e}"))?;
        let timestamp = humantime::parse_rfc3339(&wire.timestamp)
            .map_err(|e| format!("bad timestamp '{}': {e}", wire.timestamp))?;
        let origin = wire
            .origin
            .filter(|o| !o.is_empty())
            .ok_or("the envelope names no origin")?;
        Ok(Event {
            event: wire.event,
            timestamp,
            data: wire.data,
            origin: Some(origin.into()),
            scope: Scope::Cluster,
        })
    }

    /// An event a plugin emits under a name of its own (`ctx.getEventBus().emit(name, data)`).
    /// Names in the host's namespaces are refused so a plugin cannot forge host events.
    pub fn custom(name: &str, data: Value) -> Result<Event, String> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            return Err(format!(
                "event name '{name}' must be 1-128 characters of letters, digits, '.', '_' or '-'"
            ));
        }
        if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(format!(
                "event name '{name}' is in a namespace reserved for the host ({})",
                RESERVED_PREFIXES.join(", ")
            ));
        }
        Ok(Event {
            event: name.to_string(),
            timestamp: SystemTime::now(),
            data,
            origin: None,
            scope: Scope::Cluster,
        })
    }

    /// The `data` field as a string, when it has one at `key`.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }
}

/// Namespaces only the host publishes in.
pub const RESERVED_PREFIXES: &[&str] = &["plugin.", "agent.", "tool.", "session.", "cluster."];

/// Lifecycle phase an error happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Finding the plugin and checking its manifest and dependencies.
    Discover,
    Init,
    Start,
    Stop,
    /// Running after start (a crash).
    Run,
    Reload,
}

/// A plugin's `init` succeeded. Published by the plugin host during boot and after restarts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginLoaded {
    pub plugin: String,
    pub version: String,
}
impl Topic for PluginLoaded {
    const NAME: &'static str = "plugin.loaded";
}

/// A plugin failed in some phase; the others continue. Published by the plugin host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginError {
    pub plugin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub phase: Phase,
    pub error: String,
}
impl Topic for PluginError {
    const NAME: &'static str = "plugin.error";
}

/// A plugin's `start` succeeded. Published by the plugin host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginStarted {
    pub plugin: String,
    pub version: String,
}
impl Topic for PluginStarted {
    const NAME: &'static str = "plugin.started";
}

/// A plugin's `stop` finished. Published by the plugin's actor as it stops.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginStopped {
    pub plugin: String,
    pub version: String,
    pub duration_ms: u64,
}
impl Topic for PluginStopped {
    const NAME: &'static str = "plugin.stopped";
}

/// A crashed plugin runs again. Published by the plugins supervisor's observer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginRestarted {
    pub plugin: String,
    pub generation: u64,
    pub restarts: u32,
    /// Why the previous instance ended.
    pub reason: String,
}
impl Topic for PluginRestarted {
    const NAME: &'static str = "plugin.restarted";
}

/// A plugin spent its restart budget and is parked as `failed`. Published by the plugins
/// supervisor's observer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginFailed {
    pub plugin: String,
    pub restarts: u32,
    pub last_error: String,
}
impl Topic for PluginFailed {
    const NAME: &'static str = "plugin.failed";
}

/// A script plugin was reloaded from its files and the new version serves. Published by the
/// plugin host (hot reload or `POST /api/plugins/{id}/reload`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginReloaded {
    pub plugin: String,
    pub old_version: String,
    pub new_version: String,
    pub duration_ms: u64,
}
impl Topic for PluginReloaded {
    const NAME: &'static str = "plugin.reloaded";
}

/// An operator disabled a plugin. Published by the plugin host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginDisabled {
    pub plugin: String,
}
impl Topic for PluginDisabled {
    const NAME: &'static str = "plugin.disabled";
}

/// An operator enabled a disabled plugin. Published by the plugin host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginEnabled {
    pub plugin: String,
}
impl Topic for PluginEnabled {
    const NAME: &'static str = "plugin.enabled";
}

/// A script plugin was unloaded (REST, or its directory was deleted). Published by the host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginUnloaded {
    pub plugin: String,
}
impl Topic for PluginUnloaded {
    const NAME: &'static str = "plugin.unloaded";
}

/// A connector hook failed for a session. Published by the session actor; `critical` says
/// whether the message failed or the plugin's change was skipped.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginHookFailed {
    pub plugin: String,
    pub hook: String,
    pub session_id: String,
    pub error: String,
    pub critical: bool,
}
impl Topic for PluginHookFailed {
    const NAME: &'static str = "plugin.hook_failed";
}

/// A session opened. Published by the session manager.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreated {
    pub session_id: String,
    pub target_id: String,
    pub plugins: Vec<String>,
}
impl Topic for SessionCreated {
    const NAME: &'static str = "session.created";
}

/// A session another instance owned is served here now: its owner's lease expired (the owner
/// died or lost the database), so this instance took the lease and rebuilt the session from
/// the store. Published by the session manager of the instance that took it (`to`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionTakenOver {
    pub session_id: String,
    /// The instance whose lease expired (absent when no lease was left at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    /// The index the next message takes (one past the last stored one).
    pub next_message_index: u64,
}
impl Topic for SessionTakenOver {
    const NAME: &'static str = "session.taken_over";
}

/// A session closed (deleted, idle, or shutdown). Published by the session actor.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionClosed {
    pub session_id: String,
    pub reason: String,
    pub message_count: u64,
}
impl Topic for SessionClosed {
    const NAME: &'static str = "session.closed";
}

/// A session crashed; sessions are not restarted. Published by the sessions supervisor.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionFailed {
    pub session_id: String,
    pub reason: String,
}
impl Topic for SessionFailed {
    const NAME: &'static str = "session.failed";
}

/// A tool call finished, successfully or not (parameters that failed the schema included).
/// Published by the tool registry, for REST invocations and agent turns alike.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolExecuted {
    pub tool_name: String,
    pub plugin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub params: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
}
impl Topic for ToolExecuted {
    const NAME: &'static str = "tool.executed";
}

/// Token counts of an agent turn (Open Astra's webhook shape).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// An agent turn began. Published by the agent runner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStarted {
    pub agent_id: String,
    pub session_id: String,
    pub surface: String,
}
impl Topic for AgentStarted {
    const NAME: &'static str = "agent.started";
}

/// An agent turn answered. Published by the agent runner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCompleted {
    pub agent_id: String,
    pub session_id: String,
    pub duration_ms: f64,
    pub usage: Usage,
    pub tool_call_count: u32,
}
impl Topic for AgentCompleted {
    const NAME: &'static str = "agent.completed";
}

/// An agent turn failed (the model could not be reached or answered an error). Published by
/// the agent runner; `consecutiveFailures` resets after any successful turn of the agent.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentFailed {
    pub agent_id: String,
    pub session_id: String,
    pub error: String,
    pub consecutive_failures: u32,
}
impl Topic for AgentFailed {
    const NAME: &'static str = "agent.failed";
}

/// An agent failed `agent.max_consecutive_failures` turns in a row and takes no more turns
/// until an operator resumes it. Published by the agent runner, once per pause.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentPaused {
    pub agent_id: String,
    /// Failed turns in a row that paused it.
    pub failures: u32,
    /// The last turn's error.
    pub last_error: String,
}
impl Topic for AgentPaused {
    const NAME: &'static str = "agent.paused";
}

/// A paused agent takes turns again (`POST /api/agents/{id}/resume`). Published by the agent
/// runner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentResumed {
    pub agent_id: String,
    /// Who resumed it (the request's `resumedBy`; `api` when it named nobody).
    pub resumed_by: String,
}
impl Topic for AgentResumed {
    const NAME: &'static str = "agent.resumed";
}

/// A conversation grew past its agent's context budget: its oldest messages were replaced by
/// a summary. Published by the agent runner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCompacted {
    pub agent_id: String,
    pub session_id: String,
    /// Messages the summary replaced.
    pub messages_compacted: u32,
    /// Whether the model wrote the summary (false: the model failed, a plain digest stands in).
    pub summarized_by_model: bool,
}
impl Topic for AgentCompacted {
    const NAME: &'static str = "agent.compacted";
}

/// A streamed turn's text delta, as the model sent it. Published by the agent runner.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStreamDelta {
    pub agent_id: String,
    pub session_id: String,
    pub delta: String,
}
impl Topic for AgentStreamDelta {
    const NAME: &'static str = "agent.stream.delta";
}

/// A streamed turn's model asked for a tool call (published before it runs).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStreamToolCall {
    pub agent_id: String,
    pub session_id: String,
    pub tool_call_id: String,
    pub tool_name: String,
    pub arguments: Value,
}
impl Topic for AgentStreamToolCall {
    const NAME: &'static str = "agent.stream.tool_call";
}

/// A streamed turn's tool call finished: its result, or `{error}` (what goes back to the
/// model).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStreamToolResult {
    pub agent_id: String,
    pub session_id: String,
    pub tool_call_id: String,
    pub tool_name: String,
    pub result: Value,
}
impl Topic for AgentStreamToolResult {
    const NAME: &'static str = "agent.stream.tool_result";
}

/// A streamed turn answered (before `agent.completed`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStreamComplete {
    pub agent_id: String,
    pub session_id: String,
    pub usage: Usage,
    pub tool_call_count: u32,
}
impl Topic for AgentStreamComplete {
    const NAME: &'static str = "agent.stream.complete";
}

/// An operator action on a plugin that the instances of a cluster carry out together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginOp {
    Restart,
    Disable,
    Enable,
    Reload,
    Unload,
    Load,
}

impl PluginOp {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginOp::Restart => "restart",
            PluginOp::Disable => "disable",
            PluginOp::Enable => "enable",
            PluginOp::Reload => "reload",
            PluginOp::Unload => "unload",
            PluginOp::Load => "load",
        }
    }
}

/// An operator's action on a plugin, done on the instance that took the REST call and asked
/// of every other one. Published by that instance's API; applied by the others' cluster view,
/// never published again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPluginCommand {
    pub op: PluginOp,
    pub plugin_id: String,
    /// Unique per command; the answers carry it.
    pub request_id: String,
    /// The instance that took the REST call.
    pub by: String,
}
impl Topic for ClusterPluginCommand {
    const NAME: &'static str = "cluster.plugin.command";
}

/// One instance's answer to a [`ClusterPluginCommand`]. Published by that instance's cluster
/// view once it applied the command (or could not).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPluginResult {
    pub request_id: String,
    pub instance: String,
    pub ok: bool,
    /// The plugin's state there afterwards (`unloaded` once unloaded); none when it has no
    /// such plugin.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
impl Topic for ClusterPluginResult {
    const NAME: &'static str = "cluster.plugin.result";
}

/// One plugin as the other instances see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginBrief {
    pub state: String,
    pub restarts: u32,
    pub version: String,
}

/// An instance's plugins and their states: its heartbeat. Published by each instance's cluster
/// view on every plugin change and every `broker.cluster_heartbeat_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPluginStates {
    pub instance: String,
    pub plugins: std::collections::BTreeMap<String, PluginBrief>,
}
impl Topic for ClusterPluginStates {
    const NAME: &'static str = "cluster.plugin.states";
}

/// Which shared configuration a [`ClusterConfigChanged`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    Target,
    ApiKey,
    ModelRoute,
    Webhook,
}

impl ConfigKind {
    pub const ALL: [ConfigKind; 4] = [
        ConfigKind::Target,
        ConfigKind::ApiKey,
        ConfigKind::ModelRoute,
        ConfigKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Target => "target",
            ConfigKind::ApiKey => "api_key",
            ConfigKind::ModelRoute => "model_route",
            ConfigKind::Webhook => "webhook",
        }
    }
}

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigOp {
    Upsert,
    Delete,
}

/// A target, API key, model route or webhook changed over REST on one instance, committed to
/// the shared store. Published by that instance's API; the others reload that kind from the
/// store (never publish again).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfigChanged {
    pub kind: ConfigKind,
    pub id: String,
    pub op: ConfigOp,
}
impl Topic for ClusterConfigChanged {
    const NAME: &'static str = "cluster.config.changed";
}

/// Every catalogue event name with who publishes it, for `GET /api/events/catalogue` and docs.
pub const CATALOGUE: &[(&str, &str)] = &[
    (PluginLoaded::NAME, "plugin host: init succeeded"),
    (
        PluginError::NAME,
        "plugin host: a phase failed (discover, init, start, stop, run, reload)",
    ),
    (PluginStarted::NAME, "plugin host: start succeeded"),
    (PluginStopped::NAME, "plugin actor: stop finished"),
    (
        PluginRestarted::NAME,
        "plugins supervisor: a crashed plugin runs again",
    ),
    (
        PluginFailed::NAME,
        "plugins supervisor: restart budget spent, plugin parked",
    ),
    (
        PluginReloaded::NAME,
        "plugin host: a script plugin's new version serves",
    ),
    (
        PluginDisabled::NAME,
        "plugin host: an operator disabled a plugin",
    ),
    (
        PluginEnabled::NAME,
        "plugin host: an operator enabled a plugin",
    ),
    (
        PluginUnloaded::NAME,
        "plugin host: a script plugin was unloaded",
    ),
    (
        PluginHookFailed::NAME,
        "session actor: a connector hook failed (skipped, or the message failed if critical)",
    ),
    (SessionCreated::NAME, "session manager: a session opened"),
    (SessionClosed::NAME, "session actor: a session closed"),
    (
        SessionTakenOver::NAME,
        "session manager: this instance took over a session whose owner's lease expired",
    ),
    (
        SessionFailed::NAME,
        "sessions supervisor: a session crashed (not restarted)",
    ),
    (
        ToolExecuted::NAME,
        "tool registry: a tool call finished (result or error, durationMs)",
    ),
    (AgentStarted::NAME, "agent runner: a turn began"),
    (
        AgentCompleted::NAME,
        "agent runner: a turn answered (usage, toolCallCount)",
    ),
    (AgentFailed::NAME, "agent runner: a turn failed"),
    (
        AgentPaused::NAME,
        "agent runner: too many failed turns in a row, the agent is paused",
    ),
    (
        AgentResumed::NAME,
        "agent runner: an operator resumed a paused agent",
    ),
    (
        AgentCompacted::NAME,
        "agent runner: a conversation's oldest messages were summarised",
    ),
    (
        AgentStreamDelta::NAME,
        "agent runner: a streamed turn's text delta",
    ),
    (
        AgentStreamToolCall::NAME,
        "agent runner: a streamed turn's model asked for a tool call",
    ),
    (
        AgentStreamToolResult::NAME,
        "agent runner: a streamed turn's tool call finished",
    ),
    (
        AgentStreamComplete::NAME,
        "agent runner: a streamed turn answered (usage, toolCallCount)",
    ),
    (
        ClusterPluginCommand::NAME,
        "plugin API: an operator's plugin action, for the other instances (broker.nats_url)",
    ),
    (
        ClusterPluginResult::NAME,
        "cluster view: an instance's answer to a cluster.plugin.command",
    ),
    (
        ClusterPluginStates::NAME,
        "cluster view: this instance's plugin states, on change and as a heartbeat",
    ),
    (
        ClusterConfigChanged::NAME,
        "API: a target, API key, model route or webhook changed in the shared store (kind, id, op), for the other instances",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_event_timestamp_data() {
        let ev = Event::new(&PluginLoaded {
            plugin: "hello".into(),
            version: "1.0.0".into(),
        });
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["event"], "plugin.loaded");
        assert_eq!(
            json["data"],
            serde_json::json!({"plugin": "hello", "version": "1.0.0"})
        );
        assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn custom_events_cannot_use_host_namespaces() {
        assert!(Event::custom("analytics.hit", Value::Null).is_ok());
        assert!(Event::custom("plugin.loaded", Value::Null)
            .unwrap_err()
            .contains("reserved"));
        assert!(Event::custom("bad name", Value::Null).is_err());
        assert!(Event::custom("", Value::Null).is_err());
    }
}

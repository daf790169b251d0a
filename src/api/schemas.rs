//! Schemas of the response bodies that other modules build (plugin views, targets, sessions,
//! tools, agents, events…), for the OpenAPI document (`openapi`).
//!
//! These types are documentation only: each mirrors what its owner serialises (named on each
//! one), with its fields, which of them are always there, and their types. They are never
//! built; the contract test (`tests/it/contract.rs`, schemathesis checking every response
//! against the document) keeps them honest. Bodies the API module builds itself have real
//! types next to their handlers instead.

#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A connector type (`plugin::CONNECTOR_TYPES`, `connector::SUPPORTED_CONNECTORS`; a test in
/// `openapi` keeps them in step).
#[derive(Serialize, ToSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ConnectorType {
    HTTP_REST,
    WEBSOCKET,
    GRPC,
    SSE,
}

/// One Server-Sent Event of a streamed answer (`POST /api/sessions/{id}/messages` with
/// `stream`): `chunk` events, then one `done` or one `error`.
#[derive(Serialize, ToSchema)]
pub struct MessageStreamEvent {
    #[schema(inline)]
    pub event: MessageStreamEventName,
    /// JSON: `{index, content}` for `chunk`; the reply (as the JSON answer has it) for `done`;
    /// `{code, message, details?}` for `error`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStreamEventName {
    Chunk,
    Done,
    Error,
}

/// One Server-Sent Event of a streamed agent turn.
#[derive(Serialize, ToSchema)]
pub struct AgentStreamEvent {
    #[schema(inline)]
    pub event: AgentStreamEventName,
    /// JSON with `type` (the event's name): `{text}` for `delta`; `{id, name, arguments}` for
    /// `tool_call`; `{id, name, result}` for `tool_result`; the JSON answer's fields for
    /// `complete`; `{code, message, details?}` for `error`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStreamEventName {
    Delta,
    ToolCall,
    ToolResult,
    Complete,
    Error,
}

/// One Server-Sent Event of `GET /api/events`.
#[derive(Serialize, ToSchema)]
pub struct BrokerStreamEvent {
    /// Numbers the stream's events from 1.
    pub id: String,
    /// The event's name (`plugin.loaded`, `ops.note`…); `stream.dropped` when the client fell
    /// behind and is cut off, `stream.closed` when the service shuts down.
    pub event: String,
    /// The event's JSON envelope `{event, timestamp, data, origin}`.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// `{status, output?}` of `/livez` and `/readyz`.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    #[schema(inline)]
    pub status: CheckStatus,
    /// Why it fails: `starting`, `draining`, or the reason a required actor gave up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A check's status (draft-inadarei-api-health-check).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

/// A supervised actor's lifecycle state (`health::ActorState`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActorState {
    Starting,
    Running,
    Restarting,
    Failed,
    Stopping,
    Stopped,
    Disabled,
}

/// `GET /health` (application/health+json): one check per actor, the broker's counters, the
/// store, each provider's breaker, insecure targets and the session count.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The worst status of all checks; `fail` answers 503.
    #[schema(inline)]
    pub status: CheckStatus,
    pub version: String,
    pub service_id: String,
    pub description: String,
    #[schema(inline)]
    pub phase: Phase,
    /// `actor:<path>`, `broker:events`, `store:writes`, `store:backend` (`sqlite` or `postgres`),
    /// `inference:<provider>`, `tls:insecure`, `sessions:count`: each a list with one check.
    pub checks: std::collections::BTreeMap<String, Vec<HealthCheck>>,
    /// What is not passing, when something is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Ready,
    Draining,
}

/// One check of `/health`: an actor's row (with `state`, `generation`…) or a component's
/// counters (`observedValue`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub component_type: String,
    #[schema(inline)]
    pub status: CheckStatus,
    /// Counters (an object), a count, or a list (`tls:insecure`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// An actor of the supervision tree (`GET /api/actors`), with its children.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorNode {
    /// The last segment of `path`.
    pub id: String,
    /// Its place in the tree, e.g. `root/plugins/hello`.
    pub path: String,
    /// `<path>#gen<generation>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
    /// `supervisor`, `broker`, `plugin`, `session`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub status: Option<CheckStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub state: Option<ActorState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reloads: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<Mailbox>,
    #[schema(no_recursion)]
    pub children: Vec<ActorNode>,
}

/// An actor's mailbox gauge.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mailbox {
    pub capacity: u64,
    pub depth: u64,
    pub high_water: u64,
    pub dropped: u64,
}

/// The last error of an actor or plugin.
#[derive(Serialize, ToSchema)]
pub struct LastError {
    pub message: String,
    /// RFC 3339.
    pub at: String,
}

/// A plugin as `GET /api/plugins` lists it (`plugin::host::PluginView`, without the config
/// schema).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginSummary {
    pub id: String,
    pub name: String,
    /// Semantic version.
    pub version: String,
    pub description: String,
    /// Pipeline position for connector hooks; lower runs first.
    pub priority: u32,
    /// Connector types it works with (`HTTP_REST`, `WEBSOCKET`, `GRPC`, `SSE`).
    pub compatible_connectors: Vec<String>,
    pub dependencies: Vec<Dependency>,
    /// The range of host API versions it works with, e.g. `^1`.
    pub host_api: String,
    /// `native`, or the loader it came from (`script`).
    pub source: String,
    #[schema(inline)]
    pub state: ActorState,
    /// Numbers the instance (a refused reload's candidate used a number too).
    pub generation: u64,
    /// Every start after the first.
    pub restarts: u32,
    /// Reloads that replaced it.
    pub reloads: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// Script plugins: source path, entry file, engine memory, fetch counters, module.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub script: Option<Value>,
    pub registrations: Registrations,
    /// For a connector plugin another plugin's module registered: that plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// With several instances (`broker.nats_url`) only: this plugin on every instance, by
    /// instance id (this one included), as each last told (`plugin::cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<std::collections::BTreeMap<String, InstancePlugin>>,
}

/// One instance's view of a plugin (`plugin::cluster::InstancePlugin`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancePlugin {
    /// The plugin's state there (as `state`), or `absent` when that instance has no such
    /// plugin.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When that instance last told its states (RFC 3339).
    pub last_seen: String,
    /// Unheard for three `broker.cluster_heartbeat_ms`: out of date, or down.
    pub stale: bool,
}

/// Another instance's answer to a plugin action (`plugin::cluster::InstanceAnswer`).
#[derive(Serialize, ToSchema)]
pub struct InstanceAnswer {
    pub instance: String,
    /// It did the action too.
    pub ok: bool,
    /// The plugin's state there afterwards; null when unknown (no answer, or no such plugin).
    pub state: Option<String>,
    /// Why it failed there (or that it did not answer in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// No answer within `broker.cluster_answer_ms` (it may still do the action).
    pub pending: bool,
}

/// A plugin with its config schema (`GET /api/plugins/{id}`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginDetail {
    #[serde(flatten)]
    pub summary: PluginSummary,
    pub config_schema: Vec<ConfigField>,
}

#[derive(Serialize, ToSchema)]
pub struct Dependency {
    pub id: String,
    /// A semver range, e.g. `^1`.
    pub version: String,
}

/// What a plugin registered through its context.
#[derive(Serialize, ToSchema)]
pub struct Registrations {
    pub routes: Vec<RouteView>,
    /// Tool names.
    pub tools: Vec<String>,
    /// Agent ids.
    pub agents: Vec<String>,
}

/// One field of a plugin's configuration schema, as Krawall's UI and validator expect it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigField {
    pub key: String,
    pub label: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    pub field_type: FieldType,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<SelectOption>>,
    /// Masked in every response and log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Number,
    Boolean,
    Select,
    Json,
    Array,
    Object,
}

#[derive(Serialize, ToSchema)]
pub struct SelectOption {
    pub label: String,
    pub value: Value,
}

/// A plugin route (`route::Route`).
#[derive(Serialize, ToSchema)]
pub struct RouteView {
    /// The owning plugin.
    pub plugin: String,
    pub method: String,
    /// The full pattern served, e.g. `/plugins/demo/items/:id`.
    pub path: String,
    /// The path as the plugin declared it.
    pub declared: String,
    pub absolute: bool,
    /// Answered without the admin token (webhooks).
    pub public: bool,
    /// Which of the plugin's handlers answers.
    pub handler: u32,
}

/// A registered tool (`tool::Tool`).
#[derive(Serialize, ToSchema)]
pub struct ToolView {
    pub name: String,
    pub description: String,
    /// JSON Schema of the parameters object.
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The owning plugin.
    pub plugin: String,
}

/// What `POST /api/tools/{name}/invoke` answers (`tool::Invocation`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub tool: String,
    pub plugin: String,
    /// Whatever the tool returned.
    pub result: Value,
    pub duration_ms: f64,
}

/// An agent configuration, defaults filled in (`agent::Agent`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: String,
    pub display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub model: ModelConfig,
    pub system_prompt_template: String,
    pub tools: ToolPolicy,
    pub skills: Vec<String>,
    pub source: AgentSource,
    #[serde(flatten)]
    pub status: AgentStatusView,
}

/// Whether an agent takes turns (`turn::AgentStatus`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatusView {
    /// `paused` after `agent.max_consecutive_failures` failed turns in a row, until
    /// `POST /api/agents/{id}/resume`.
    #[schema(inline)]
    pub state: AgentStateView,
    /// Failed turns in a row (a successful turn or a resume resets it).
    pub consecutive_failures: u32,
    /// When it was paused (RFC 3339), while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    /// The last failed turn's error, while it is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStateView {
    Active,
    Paused,
}

/// The model an agent talks to (`inference::ClientConfig`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    /// `openai` or `anthropic`.
    pub provider: String,
    pub model_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_context_tokens: Option<u32>,
    /// Used while this client's breaker is open, or when it failed after its retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub fallback: Option<Box<ModelConfig>>,
}

/// Which tools an agent may call: no `allow` means every tool; `deny` wins.
#[derive(Serialize, ToSchema)]
pub struct ToolPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

/// Who declared an agent: `{kind: "config"}` or `{kind: "plugin", id}`.
#[derive(Serialize, ToSchema)]
pub struct AgentSource {
    #[schema(inline)]
    pub kind: AgentSourceKind,
    /// The plugin, for `kind: plugin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentSourceKind {
    Config,
    Plugin,
}

/// What one agent turn answered (`turn::TurnOutcome`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatResult {
    pub content: String,
    /// The conversation: send it back to continue it.
    pub session_id: String,
    /// Tools that ran, in the order first used.
    pub tools_used: Vec<String>,
    pub usage: Usage,
    pub tool_call_count: u32,
    /// The provider that answered (a fallback's when it stood in).
    pub provider: String,
}

/// Token usage, normalised.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// An event as the broker carries it (`broker::Event`).
#[derive(Serialize, ToSchema)]
pub struct Event {
    /// Its name, e.g. `plugin.loaded` or `ops.note`.
    pub event: String,
    /// RFC 3339.
    pub timestamp: String,
    /// The payload (a truncation marker when it was larger than `broker.max_event_bytes`).
    pub data: Value,
    /// The instance that published it (`server.instance_id`).
    pub origin: String,
}

/// A target as responses show it: credentials masked (`target::Target::masked`), plus where it
/// comes from and the last connection test.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetView {
    pub id: String,
    pub name: String,
    pub connector_type: String,
    /// A password in the URL is shown masked.
    pub endpoint: String,
    #[schema(inline)]
    pub auth_type: AuthType,
    /// Credentials masked (`********`).
    #[schema(value_type = Object)]
    pub auth_config: Value,
    pub request_template: RequestTemplateView,
    pub response_template: ResponseTemplateView,
    #[schema(value_type = Object)]
    pub protocol_config: Value,
    pub timeout_ms: u64,
    pub plugins: Vec<PluginRefView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOptions>,
    /// `config` (declared in the settings: read-only) or `api`.
    #[schema(inline)]
    pub source: TargetSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_test: Option<TargetTestResult>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TargetSource {
    Config,
    Api,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthType {
    None,
    BearerToken,
    ApiKey,
    BasicAuth,
    CustomHeader,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestTemplateView {
    pub message_path: String,
    pub structure: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseTemplateView {
    pub response_path: String,
    pub token_usage_path: Option<String>,
    pub error_path: Option<String>,
    #[schema(inline)]
    pub transform: Transform,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    None,
    Markdown,
    Html,
}

/// A plugin of a target's pipeline, as shown (credential keys of its config masked).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRefView {
    pub id: String,
    pub config: Value,
    pub priority: Option<u32>,
    pub critical: bool,
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// A connection test's result (also kept as the target's `lastTest`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetTestResult {
    /// Whether the message came back.
    pub ok: bool,
    /// The health check, when it connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub health: Option<Value>,
    /// The message's outcome, when it connected: `{ok, content?, responseTimeMs?, error?,
    /// status?}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub message: Option<Value>,
    /// Why it failed, when it could not connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The upstream's HTTP status, when it answered one (null when it did not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `tls_error` when the TLS handshake failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why the TLS handshake failed (`untrusted_certificate`, `name_mismatch`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// RFC 3339.
    pub tested_at: String,
    pub duration_ms: u64,
}

/// A session's state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Opening,
    Open,
    Closing,
    Closed,
    Failed,
    Interrupted,
}

/// A live session (`session::SessionInfo`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveSession {
    pub id: String,
    pub target_id: String,
    pub connector_type: String,
    #[schema(inline)]
    pub state: SessionState,
    /// Its pipeline, in order.
    pub plugins: Vec<Stage>,
    pub message_count: u64,
    pub error_count: u64,
    pub hook_failures: u64,
    /// RFC 3339.
    pub created_at: String,
    pub last_activity_at: String,
}

/// One plugin of a session's pipeline.
#[derive(Serialize, ToSchema)]
pub struct Stage {
    pub id: String,
    pub plugin: String,
    pub priority: u32,
    pub critical: bool,
    /// Secrets masked.
    pub config: Value,
    pub failures: u64,
}

/// A session as the store keeps it (`store::SessionRow`), ended ones too.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredSession {
    pub id: String,
    pub target_id: String,
    #[schema(inline)]
    pub state: SessionState,
    /// Its pipeline as it was opened (secrets masked).
    pub plugins: Value,
    /// RFC 3339.
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    pub summary: SessionSummary,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    pub message_count: i64,
    /// Tokens of the session's answers, each counted once.
    pub total_tokens: i64,
    pub avg_response_time_ms: i64,
    pub error_count: i64,
}

/// A session: live (its snapshot) or stored (its summary).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SessionView {
    Live(LiveSession),
    Stored(StoredSession),
}

/// One transcript row (`store::MessageRow`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptRow {
    pub id: i64,
    pub message_index: i64,
    #[schema(inline)]
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_time_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// `sent` (the message), `received` (the answer) or `error` (the message failed).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
    Error,
}

/// The answer to a message (`session::actor`): the content after every `afterReceive`, the
/// merged metadata and each hook's outcome.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub content: String,
    /// What plugins and the connector added: `responseTimeMs`, `tokenUsage`, …
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub plugins: Vec<HookOutcome>,
}

/// One hook call of a message or a close.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookOutcome {
    pub plugin: String,
    #[schema(inline)]
    pub hook: HookName,
    #[schema(inline)]
    pub outcome: Outcome,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum HookName {
    Initialize,
    OnConnect,
    BeforeSend,
    AfterReceive,
    OnDisconnect,
    OnChunk,
}

/// `ok`: its change was taken; `passthrough`: it has no such hook; `failed`: skipped.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Passthrough,
    Failed,
}

/// What closing a session did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Closed {
    pub session_id: String,
    #[schema(inline)]
    pub state: SessionState,
    pub reason: String,
    /// Each plugin's `onDisconnect` (all of them, even if one failed).
    pub plugins: Vec<HookOutcome>,
}

/// One entry the `audit` plugin recorded.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// RFC 3339.
    pub timestamp: String,
    /// `sent` or `received`.
    pub direction: String,
    pub session_id: String,
    pub target_id: String,
    /// The message sent (`sent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The answer (`received`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<Value>,
}

// ---- Request bodies read as JSON values by their owners -----------------------------------

/// A target, with Krawall's field names, as `POST /api/targets` and `PUT /api/targets/{id}`
/// take it (`target::Target`, its shape checked field by field in `target::shape`). Beyond the
/// shape, the target is checked as a whole (an endpoint URL that suits the connector type,
/// the credentials its `authType` needs, a GRPC target's proto…), and every problem is
/// answered at once as `invalid_target`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "id": "echo",
    "name": "Echo bot",
    "connectorType": "HTTP_REST",
    "endpoint": "http://127.0.0.1:9000/chat",
    "authType": "BEARER_TOKEN",
    "authConfig": {"token": "sk-example"},
    "requestTemplate": {"messagePath": "message"},
    "responseTemplate": {"responsePath": "reply"},
    "timeoutMs": 5000
}))]
pub struct TargetBody {
    /// A fresh unique one when absent or null (create); the path's (update).
    #[schema(pattern = r"\S")]
    pub id: Option<String>,
    #[schema(pattern = r"\S")]
    pub name: String,
    #[schema(schema_with = super::openapi::supported_connectors)]
    pub connector_type: String,
    /// `http(s)://` (`ws(s)://` for `WEBSOCKET`) with a host.
    #[schema(pattern = r"^[a-z]+://\S+$")]
    pub endpoint: String,
    /// `NONE` when absent.
    #[serde(default)]
    #[schema(inline)]
    pub auth_type: AuthType,
    /// Credentials for `authType`: `token` (BEARER_TOKEN), `apiKey` and `headerName` (API_KEY),
    /// `username` and `password` (BASIC_AUTH), `headers` (CUSTOM_HEADER). A value sent back as
    /// shown (`********`) keeps the stored one.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub auth_config: Value,
    pub request_template: RequestTemplateBody,
    pub response_template: ResponseTemplateBody,
    /// Protocol options (`method`, `headers`, `path`, a GRPC target's `protoFile`…).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub protocol_config: Value,
    /// 30000 when absent.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: u64,
    /// The target's default pipeline.
    #[serde(default)]
    pub plugins: Vec<PluginRefBody>,
    #[serde(default)]
    pub tls: TlsOptionsBody,
    /// Shown by GET; ignored when sent back.
    pub source: Option<Value>,
    /// Shown by GET; ignored when sent back.
    pub last_test: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestTemplateBody {
    /// Where the message goes in the request body, e.g. `message` or `input`.
    #[schema(min_length = 1)]
    pub message_path: String,
    /// The request body's structure, with `${name}` placeholders.
    pub structure: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseTemplateBody {
    /// Where the answer is, e.g. `$.choices[0].message.content`.
    #[schema(min_length = 1)]
    pub response_path: String,
    pub token_usage_path: Option<String>,
    pub error_path: Option<String>,
    /// `none` when absent.
    #[serde(default)]
    #[schema(inline)]
    pub transform: Transform,
}

/// A plugin of a pipeline, with its config.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRefBody {
    pub id: String,
    /// Checked against the plugin's config schema (`{}` when absent).
    pub config: Option<Value>,
    /// Overrides the plugin's own priority for this pipeline.
    pub priority: Option<u32>,
    /// A critical plugin's `beforeSend`/`afterReceive` failure fails the message.
    #[serde(default)]
    pub critical: bool,
    /// Time a hook of this plugin may take (defaults to `sessions.hook_timeout_ms`).
    pub timeout_ms: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsOptionsBody {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Body of `POST /api/sessions` (`session::CreateSession`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"targetId": "echo", "plugins": [{"id": "openai", "config": {"model": "gpt-4o"}}, {"id": "audit"}]}))]
pub struct CreateSessionBody {
    pub target_id: String,
    /// The pipeline (the target's own when absent); every problem is reported at once.
    #[serde(default)]
    pub plugins: Vec<PluginRefBody>,
}

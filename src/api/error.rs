//! `ApiError`: every error the HTTP API answers, with its status and stable snake_case code.
//!
//! Owns the one table from error to (HTTP status, code, details) and the JSON body
//! `{"code", "message", "details"?}`: [`Code`] lists every stable code with its status and
//! meaning (the OpenAPI document's `Error` schema is generated from it), and `row` maps each
//! error to its code and details. Extractor errors (JSON body, path, query) are mapped here
//! too so bad input always gets the same shape. A 5xx never carries internals: the cause is
//! logged and the client gets a generic message.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("plugin '{0}' is not registered")]
    PluginNotFound(String),
    #[error("{message}")]
    InvalidEvent { event: String, message: String },
    #[error("{message}")]
    PluginStateConflict { plugin: String, message: String },
    #[error("{message}")]
    PluginSourceNotFound { plugin: String, message: String },
    #[error("reload of '{plugin}' failed at {step}: {error}; the previous version keeps serving")]
    ReloadFailed {
        plugin: String,
        step: String,
        error: String,
    },
    #[error("plugin '{plugin}' did not start: {error}")]
    PluginStartFailed { plugin: String, error: String },
    #[error("target '{0}' does not exist")]
    TargetNotFound(String),
    #[error("the store is off (store.enabled = false): transcripts are not kept")]
    StoreDisabled,
    #[error(transparent)]
    Target(#[from] crate::target::catalogue::TargetError),
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    InvalidQuery(String),
    /// The body could not be read (cut short, or not what its headers said).
    #[error("{0}")]
    InvalidBody(String),
    #[error("this endpoint only speaks WebSocket: a GET with `Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` is required ({reason})")]
    WebSocketUpgradeRequired { reason: String },
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive whole within {after_ms} ms")]
    BodyTimeout { after_ms: u64 },
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{method} is not allowed on {path}; allowed: {}", .allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: Vec<String>,
    },
    #[error("plugin '{0}' is not running (restarting, failed or disabled)")]
    PluginUnavailable(String),
    #[error("plugin '{plugin}' failed to answer: {message}")]
    PluginRouteFailed { plugin: String, message: String },
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error(transparent)]
    Agent(#[from] crate::turn::AgentError),
    /// The front doors (`/v1`) and their admin endpoints (keys, model routes).
    #[error(transparent)]
    Frontdoor(#[from] crate::frontdoor::FrontdoorError),
    /// Outbound webhooks (`/api/webhooks`).
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
    #[error("an internal error occurred")]
    Internal(String),
}

/// Declares [`Code`]: each variant with its HTTP status, its stable snake_case code and what it
/// means, and [`Code::ALL`], every one of them (complete by construction).
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = ($status:literal, $code:literal, $meaning:literal),)*) => {
        /// Every stable error code the API answers with (the `code` of an error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as it appears in an error body, e.g. `plugin_not_found`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The HTTP status it is answered with (499 included: a client that closed).
            pub const fn status_u16(self) -> u16 {
                match self {
                    $(Code::$variant => $status,)*
                }
            }

            /// What it means, in a sentence (the reference page and the spec show it).
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Code::$variant => $meaning,)*
                }
            }
        }
    };
}

codes! {
    RouteNotFound = (404, "route_not_found", "No route matches the method and path."),
    PluginNotFound = (404, "plugin_not_found", "No plugin is registered under this id."),
    InvalidEvent = (400, "invalid_event", "The event name is malformed (1-128 letters, digits, `.`, `_`, `-`) or in a namespace reserved for the host (`plugin.`, `agent.`, `tool.`, `session.`)."),
    PluginStateConflict = (409, "plugin_state_conflict", "The action makes no sense in the plugin's state (enable an enabled plugin, unload a native one…)."),
    PluginSourceNotFound = (404, "plugin_source_not_found", "The script plugin's files are gone."),
    ReloadFailed = (422, "reload_failed", "The new version failed at `details.step` (`compile`, `validate`, `init`, `start`); the old version keeps serving."),
    PluginStartFailed = (422, "plugin_start_failed", "The plugin did not start."),
    TargetNotFound = (404, "target_not_found", "No target has this id."),
    InvalidTarget = (400, "invalid_target", "The target is not valid; `details.errors` lists every problem with its field path."),
    TargetConflict = (409, "target_conflict", "A target with this id exists already, or the target is declared in the settings (read-only over REST)."),
    StoreDisabled = (409, "store_disabled", "Transcripts or webhooks were asked for with the store off (`store.enabled = false`)."),
    SessionNotFound = (404, "session_not_found", "No live or stored session has this id."),
    InvalidSessionPlugins = (400, "invalid_session_plugins", "The session's plugins are not valid; `details.errors` lists every problem."),
    SessionBusy = (429, "session_busy", "The session's message queue is full (`sessions.queue_capacity`)."),
    TooManySessions = (503, "too_many_sessions", "`sessions.max_sessions` sessions are open."),
    PluginHookFailed = (502, "plugin_hook_failed", "A plugin hook failed (`details.plugin`, `details.hook`): `initialize`/`onConnect` when opening, or a critical plugin's `beforeSend`/`afterReceive`."),
    UpstreamError = (502, "upstream_error", "The target's upstream failed or answered an error (`details.status`)."),
    TlsError = (502, "tls_error", "The TLS handshake with the upstream or provider failed; `details.reason` says why."),
    SessionOwnerUnavailable = (503, "session_owner_unavailable", "Another instance owns the session (`details.owner`) and cannot be reached; its lease runs out within `Retry-After` seconds (`details.retryAfterMs`), after which any instance takes the session over."),
    SessionEnded = (410, "session_ended", "The session ended (closed, failed or timed out)."),
    ClientClosedRequest = (499, "client_closed_request", "A streaming client went away before the answer was complete (recorded, never answered)."),
    TranscriptNotCommitted = (503, "transcript_not_committed", "`store.durability = \"acknowledged\"` and the answer's transcript could not be stored, so the answer is withheld."),
    Unauthorized = (401, "unauthorized", "A valid `Authorization: Bearer <admin token>` is required."),
    InvalidJson = (400, "invalid_json", "The body is not valid JSON, not a JSON object, or does not read as the endpoint's body (unknown or mistyped fields)."),
    InvalidPath = (400, "invalid_path", "A path parameter is not valid."),
    InvalidQuery = (400, "invalid_query", "The query string is not valid (unknown parameter, bad value)."),
    InvalidBody = (400, "invalid_body", "The body broke on the way (a malformed chunk, say)."),
    WebSocketUpgradeRequired = (400, "websocket_upgrade_required", "The endpoint only speaks WebSocket; `details.reason` names what the handshake lacks."),
    PayloadTooLarge = (413, "payload_too_large", "The body is larger than `server.max_body_bytes` (`details.limitBytes`)."),
    RequestBodyTimeout = (408, "request_body_timeout", "The body did not arrive whole within `server.request_body_timeout_ms` of the head; the connection is closed."),
    UnsupportedMediaType = (415, "unsupported_media_type", "The body must be JSON (`Content-Type: application/json`)."),
    MethodNotAllowed = (405, "method_not_allowed", "The path exists for other methods, listed in the `Allow` header and `details.allowed`."),
    PluginUnavailable = (503, "plugin_unavailable", "The owning plugin is restarting, failed or disabled."),
    PluginRouteFailed = (500, "plugin_route_failed", "A plugin route's handler threw or broke its time budget (`details.plugin`)."),
    ToolNotFound = (404, "tool_not_found", "No tool is registered under this name."),
    InvalidToolParams = (422, "invalid_tool_params", "The parameters do not match the tool's JSON Schema; `details.errors` lists each problem with its JSON Pointer."),
    ToolFailed = (502, "tool_failed", "The tool's plugin failed to run it."),
    InvalidTool = (400, "invalid_tool", "A tool registration is invalid (name, schema, or a name another plugin holds)."),
    AgentNotFound = (404, "agent_not_found", "No agent is registered under this id."),
    InvalidChatRequest = (400, "invalid_chat_request", "`message` is empty or `sessionId` is malformed (`details.field`)."),
    InferenceFailed = (502, "inference_failed", "The model provider failed or answered an error (`details.provider`, `details.status`)."),
    CircuitOpen = (503, "circuit_open", "The provider's circuit breaker is open (`details.retryInMs`)."),
    InvalidAgentModel = (422, "invalid_agent_model", "The agent's model configuration cannot make a client."),
    AgentTimeout = (504, "agent_timeout", "The agent turn did not finish within `agent.turn_timeout_ms`."),
    AgentPaused = (409, "agent_paused", "The agent failed `agent.max_consecutive_failures` turns in a row and is paused (`details.failures`); `POST /api/agents/{id}/resume` resumes it."),
    AgentNotPaused = (409, "agent_not_paused", "Only a paused agent can be resumed."),
    InvalidModelRequest = (400, "invalid_model_request", "A `/v1` request cannot be read as the provider's API takes it (`details.field` names the field)."),
    ModelNotFound = (404, "model_not_found", "No model route answers this model name (`details.model`), and there is no default route."),
    InvalidApiKey = (401, "invalid_api_key", "A `/v1` request carried no virtual API key, or one that is not valid."),
    ModelNotAllowed = (403, "model_not_allowed", "The virtual API key may not use this model (`details.model`)."),
    RateLimited = (429, "rate_limited", "The virtual API key made its requests per minute (`details.limit`); `Retry-After` says when to retry."),
    TokenBudgetExhausted = (429, "token_budget_exhausted", "The virtual API key has spent its token budget (`details.used`, `details.budget`)."),
    ApiKeyNotFound = (404, "api_key_not_found", "No virtual API key has this id."),
    InvalidApiKeyRequest = (400, "invalid_api_key_request", "The key to create is not valid; `details.errors` lists every problem."),
    InvalidModelRoute = (400, "invalid_model_route", "The model route is not valid; `details.errors` lists every problem with its field."),
    ModelRouteConflict = (409, "model_route_conflict", "A model route has this name already, is declared in the settings (read-only over REST), or is another route's fallback."),
    UpstreamTimeout = (504, "upstream_timeout", "The model route did not answer within its `timeoutMs` (`details.route`)."),
    InvalidWebhook = (400, "invalid_webhook", "The webhook to create is not valid; `details.field` names the field (`url`, `events`, `events[i]`, `secret`, `description`)."),
    WebhookNotFound = (404, "webhook_not_found", "No webhook has this id."),
    ServiceStopping = (503, "service_stopping", "The gateway is shutting down and takes no new work; retry (on another instance behind a load balancer)."),
    Internal = (500, "internal_error", "Something failed inside the gateway; the cause is logged, never answered."),
}

impl Code {
    pub fn status(self) -> StatusCode {
        StatusCode::from_u16(self.status_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// One row of the table: the code (with its status), and the fields the body's `details`
/// names (the plugin, target, session, field… concerned).
type Row = (Code, Option<Value>);

impl ApiError {
    /// The table: every error's code (with its status) and details, in one place.
    fn row(&self) -> Row {
        use Code as C;
        match self {
            ApiError::RouteNotFound { .. } => (C::RouteNotFound, None),
            ApiError::PluginNotFound(id) => (C::PluginNotFound, Some(json!({ "plugin": id }))),
            ApiError::InvalidEvent { event, .. } => (
                C::InvalidEvent,
                Some(json!({ "field": "event", "event": event })),
            ),
            ApiError::PluginStateConflict { plugin, .. } => {
                (C::PluginStateConflict, Some(json!({ "plugin": plugin })))
            }
            ApiError::PluginSourceNotFound { plugin, .. } => {
                (C::PluginSourceNotFound, Some(json!({ "plugin": plugin })))
            }
            ApiError::ReloadFailed { plugin, step, .. } => (
                C::ReloadFailed,
                Some(json!({ "plugin": plugin, "step": step })),
            ),
            ApiError::PluginStartFailed { plugin, .. } => {
                (C::PluginStartFailed, Some(json!({ "plugin": plugin })))
            }
            ApiError::TargetNotFound(id) => (C::TargetNotFound, Some(json!({ "target": id }))),
            ApiError::StoreDisabled => (C::StoreDisabled, None),
            ApiError::Target(e) => target_row(e),
            ApiError::Session(e) => session_row(e),
            ApiError::Unauthorized => (C::Unauthorized, None),
            ApiError::InvalidJson(_) => (C::InvalidJson, None),
            ApiError::InvalidPath(_) => (C::InvalidPath, None),
            ApiError::InvalidQuery(_) => (C::InvalidQuery, None),
            ApiError::InvalidBody(_) => (C::InvalidBody, None),
            ApiError::WebSocketUpgradeRequired { reason } => (
                C::WebSocketUpgradeRequired,
                Some(json!({ "reason": reason })),
            ),
            ApiError::PayloadTooLarge { limit } => {
                (C::PayloadTooLarge, Some(json!({ "limitBytes": limit })))
            }
            ApiError::BodyTimeout { after_ms } => (
                C::RequestBodyTimeout,
                Some(json!({ "timeoutMs": after_ms })),
            ),
            ApiError::UnsupportedMediaType => (C::UnsupportedMediaType, None),
            ApiError::MethodNotAllowed { allowed, .. } => {
                (C::MethodNotAllowed, Some(json!({ "allowed": allowed })))
            }
            ApiError::PluginUnavailable(plugin) => {
                (C::PluginUnavailable, Some(json!({ "plugin": plugin })))
            }
            // The plugin's own failure, reported as such (never the gateway's internals).
            ApiError::PluginRouteFailed { plugin, .. } => {
                (C::PluginRouteFailed, Some(json!({ "plugin": plugin })))
            }
            ApiError::Tool(e) => tool_row(e),
            ApiError::Agent(e) => agent_row(e),
            ApiError::Frontdoor(e) => frontdoor_row(e),
            ApiError::Webhook(e) => webhook_row(e),
            ApiError::Internal(_) => (C::Internal, None),
        }
    }

    /// The stable, documented code of each error.
    pub fn code(&self) -> &'static str {
        self.row().0.as_str()
    }

    /// The code as a [`Code`] (its status and meaning with it).
    pub fn kind(&self) -> Code {
        self.row().0
    }

    /// The JSON body: `{code, message, details?}` (also the data of a stream's `error` event).
    pub fn body(&self) -> Value {
        let (code, details) = self.row();
        // An internal failure's text (a database error, say) is logged, never answered.
        let message = if code == Code::Internal {
            "an internal error occurred".to_string()
        } else {
            self.to_string()
        };
        let mut body = json!({ "code": code.as_str(), "message": message });
        if let Some(details) = details {
            body["details"] = details;
        }
        body
    }

    pub fn from_json(error: &JsonPayloadError, limit: usize) -> ApiError {
        match error {
            JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) => ApiError::from_serde(e),
            JsonPayloadError::Payload(e) => ApiError::from_payload(e, limit),
            other => ApiError::InvalidJson(format!("invalid JSON body: {other}")),
        }
    }
}

impl ApiError {
    /// A JSON body that does not read as the endpoint's body: serde's message without the
    /// Rust type names (`expected struct CreateSession` says "expected a JSON object").
    pub fn from_serde(error: &serde_json::Error) -> ApiError {
        let mut message = error.to_string();
        while let Some(start) = message.find("expected struct ") {
            let rest = &message[start + "expected struct ".len()..];
            let name = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            message.replace_range(
                start..start + "expected struct ".len() + name,
                "expected a JSON object",
            );
        }
        let message = message
            .replace("invalid type: sequence", "invalid type: an array")
            .replace("invalid type: map", "invalid type: an object");
        ApiError::InvalidJson(format!("invalid JSON body: {message}"))
    }

    /// A body that could not be read: too large, or broken on the way.
    pub fn from_payload(error: &actix_web::error::PayloadError, limit: usize) -> ApiError {
        use actix_web::error::PayloadError as P;
        match error {
            P::Overflow => ApiError::PayloadTooLarge { limit },
            e if super::deadline::timed_out_after(e).is_some() => ApiError::BodyTimeout {
                after_ms: super::deadline::timed_out_after(e).unwrap_or_default(),
            },
            other => ApiError::InvalidBody(format!("the request body could not be read: {other}")),
        }
    }

    /// A request to a WebSocket endpoint that is not a WebSocket handshake.
    pub fn from_handshake(error: &actix_web_actors::ws::HandshakeError) -> ApiError {
        use actix_web_actors::ws::HandshakeError as H;
        let reason = match error {
            H::GetMethodRequired => "the method must be GET",
            H::NoWebsocketUpgrade => "no `Upgrade: websocket` header",
            H::NoConnectionUpgrade => "no `Connection: Upgrade` header",
            H::NoVersionHeader => "no `Sec-WebSocket-Version` header",
            H::UnsupportedVersion => "only `Sec-WebSocket-Version: 13` is supported",
            H::BadWebsocketKey => "the `Sec-WebSocket-Key` header is missing or malformed",
        };
        ApiError::WebSocketUpgradeRequired {
            reason: reason.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.row().0.status()
    }

    fn error_response(&self) -> HttpResponse {
        if self.code() == "internal_error" {
            tracing::error!(error = ?self, "Internal error.");
        }
        let mut response = HttpResponse::build(self.row().0.status());
        let body = self.body();
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            response.insert_header(("Allow", allowed.join(", ")));
        }
        if let ApiError::Session(crate::session::SessionError::OwnerUnavailable {
            retry_after_ms,
            ..
        }) = self
        {
            response.insert_header(("Retry-After", retry_after_secs(*retry_after_ms)));
        }
        response.json(body)
    }
}

/// A `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(ms: i64) -> String {
    (ms.max(1) as u64).div_ceil(1000).to_string()
}

pub fn json_error(
    limit: usize,
) -> impl Fn(JsonPayloadError, &HttpRequest) -> actix_web::Error + Clone {
    move |error, _req| ApiError::from_json(&error, limit).into()
}

pub fn path_error(error: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidPath(format!("invalid path parameter: {error}")).into()
}

pub fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidQuery(format!("invalid query string: {error}")).into()
}

impl ApiError {
    /// Maps an operator action's failure on plugin `id`.
    pub fn from_manage(id: &str, error: crate::plugin::host::ManageError) -> ApiError {
        use crate::plugin::host::ManageError as M;
        let plugin = id.to_string();
        match error {
            M::NotFound(id) => ApiError::PluginNotFound(id),
            M::Conflict(message) => ApiError::PluginStateConflict { plugin, message },
            e @ M::SourceNotFound { .. } => ApiError::PluginSourceNotFound {
                plugin,
                message: e.to_string(),
            },
            M::ReloadFailed { step, error } => ApiError::ReloadFailed {
                plugin,
                step,
                error,
            },
            M::StartFailed(error) => ApiError::PluginStartFailed { plugin, error },
            e @ M::Persist(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn webhook_row(e: &crate::webhook::WebhookError) -> Row {
    use crate::webhook::WebhookError as W;
    use Code as C;
    match e {
        W::Invalid { field, .. } => (C::InvalidWebhook, Some(json!({ "field": field }))),
        W::NotFound(id) => (C::WebhookNotFound, Some(json!({ "webhook": id }))),
        W::StoreDisabled => (C::StoreDisabled, None),
        W::Stopping => (C::ServiceStopping, None),
        W::Store(_) => (C::Internal, None),
    }
}

fn target_row(e: &crate::target::catalogue::TargetError) -> Row {
    use crate::target::catalogue::TargetError as T;
    use Code as C;
    match e {
        T::NotFound(id) => (C::TargetNotFound, Some(json!({ "target": id }))),
        T::Invalid(errors) => (
            C::InvalidTarget,
            Some(json!({ "field": "target", "errors": errors })),
        ),
        T::Conflict(_) => (C::TargetConflict, None),
        T::Store(_) => (C::Internal, None),
    }
}

fn session_row(e: &crate::session::SessionError) -> Row {
    use crate::session::SessionError as E;
    use Code as C;
    match e {
        E::TargetNotFound(id) => (C::TargetNotFound, Some(json!({ "target": id }))),
        E::SessionNotFound(id) => (C::SessionNotFound, Some(json!({ "session": id }))),
        E::InvalidPlugins(errors) => (
            C::InvalidSessionPlugins,
            Some(json!({ "field": "plugins", "errors": errors })),
        ),
        E::QueueFull(id) => (C::SessionBusy, Some(json!({ "session": id }))),
        E::TooManySessions(limit) => (C::TooManySessions, Some(json!({ "limit": limit }))),
        E::HookFailed { plugin, hook, .. } => (
            C::PluginHookFailed,
            Some(json!({ "plugin": plugin, "hook": hook })),
        ),
        E::Upstream(crate::connector::ConnectorError::Tls(tls)) => {
            (C::TlsError, Some(json!({ "reason": tls.reason() })))
        }
        E::Upstream(e) => (C::UpstreamError, Some(json!({ "status": e.status() }))),
        E::Ended { id, .. } => (C::SessionEnded, Some(json!({ "session": id }))),
        // nginx's "client closed request": only ever recorded, the client is gone.
        E::ClientGone => (C::ClientClosedRequest, None),
        E::NotCommitted(_) => (C::TranscriptNotCommitted, None),
        E::PluginUnavailable(plugin) => (C::PluginUnavailable, Some(json!({ "plugin": plugin }))),
        E::PluginDisabled(plugin) => (C::PluginStateConflict, Some(json!({ "plugin": plugin }))),
        E::OwnerUnavailable {
            id,
            owner,
            retry_after_ms,
        } => (
            C::SessionOwnerUnavailable,
            Some(json!({ "session": id, "owner": owner, "retryAfterMs": retry_after_ms })),
        ),
        E::Store(_) => (C::Internal, None),
    }
}

fn tool_row(e: &crate::tool::ToolError) -> Row {
    use crate::tool::ToolError as T;
    use Code as C;
    match e {
        T::NotFound(tool) => (C::ToolNotFound, Some(json!({ "tool": tool }))),
        T::InvalidParams { tool, errors } => (
            C::InvalidToolParams,
            Some(json!({ "tool": tool, "field": "params", "errors": errors })),
        ),
        T::Failed { tool, plugin, .. } => (
            C::ToolFailed,
            Some(json!({ "tool": tool, "plugin": plugin })),
        ),
        T::Unavailable { tool, plugin } => (
            C::PluginUnavailable,
            Some(json!({ "tool": tool, "plugin": plugin })),
        ),
        T::InvalidName(_) | T::InvalidSchema { .. } | T::Clash { .. } => (C::InvalidTool, None),
    }
}

fn frontdoor_row(e: &crate::frontdoor::FrontdoorError) -> Row {
    use crate::frontdoor::keys::KeyError as K;
    use crate::frontdoor::route::RouteError as R;
    use crate::frontdoor::FrontdoorError as F;
    use Code as C;
    match e {
        F::Invalid(invalid) => (
            C::InvalidModelRequest,
            invalid.param.as_ref().map(|p| json!({ "field": p })),
        ),
        F::ModelNotFound(model) => (C::ModelNotFound, Some(json!({ "model": model }))),
        F::Key(K::Missing | K::Invalid) => (C::InvalidApiKey, None),
        F::Key(K::ModelNotAllowed(model)) => (C::ModelNotAllowed, Some(json!({ "model": model }))),
        F::Key(K::RateLimited {
            limit,
            retry_after_ms,
        }) => (
            C::RateLimited,
            Some(json!({ "limit": limit, "retryAfterMs": retry_after_ms })),
        ),
        F::Key(K::BudgetExhausted { used, budget }) => (
            C::TokenBudgetExhausted,
            Some(json!({ "used": used, "budget": budget })),
        ),
        F::Key(K::NotFound(id)) => (C::ApiKeyNotFound, Some(json!({ "key": id }))),
        F::Key(K::InvalidBody(errors)) => (
            C::InvalidApiKeyRequest,
            Some(json!({ "field": "key", "errors": errors })),
        ),
        F::Key(K::Store(_)) => (C::Internal, None),
        F::Route(R::Invalid(errors)) => (
            C::InvalidModelRoute,
            Some(json!({ "field": "model", "errors": errors })),
        ),
        F::Route(R::NotFound(name)) => (C::ModelNotFound, Some(json!({ "model": name }))),
        F::Route(R::Conflict(_)) => (C::ModelRouteConflict, None),
        F::Session(e) => session_row(e),
        F::Timeout { route, .. } => (C::UpstreamTimeout, Some(json!({ "route": route }))),
    }
}

fn agent_row(e: &crate::turn::AgentError) -> Row {
    use crate::inference::InferenceError as I;
    use crate::turn::AgentError as A;
    use Code as C;
    match e {
        A::NotFound(id) => (C::AgentNotFound, Some(json!({ "agent": id }))),
        A::EmptyMessage => (C::InvalidChatRequest, Some(json!({ "field": "message" }))),
        A::InvalidSessionId(_) => (C::InvalidChatRequest, Some(json!({ "field": "sessionId" }))),
        A::Timeout(_) => (C::AgentTimeout, None),
        A::Paused { agent, failures } => (
            C::AgentPaused,
            Some(json!({ "agent": agent, "failures": failures })),
        ),
        A::NotPaused(agent) => (C::AgentNotPaused, Some(json!({ "agent": agent }))),
        A::Inference(I::CircuitOpen {
            provider,
            retry_in_ms,
        }) => (
            C::CircuitOpen,
            Some(json!({ "provider": provider, "retryInMs": retry_in_ms })),
        ),
        A::Inference(I::Config(_)) => (C::InvalidAgentModel, None),
        A::Inference(I::Status {
            provider, status, ..
        }) => (
            C::InferenceFailed,
            Some(json!({ "provider": provider, "status": status })),
        ),
        A::Inference(I::Tls { provider, error }) => (
            C::TlsError,
            Some(json!({ "provider": provider, "reason": error.reason() })),
        ),
        A::Inference(I::Network { provider, .. } | I::Decode { provider, .. }) => {
            (C::InferenceFailed, Some(json!({ "provider": provider })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body(e: ApiError) -> (u16, Value) {
        let resp = e.error_response();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn every_code_has_its_status_and_body() {
        let cases = [
            (
                crate::webhook::WebhookError::Stopping.into(),
                503,
                "service_stopping",
            ),
            (
                ApiError::RouteNotFound {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                404,
                "route_not_found",
            ),
            (
                ApiError::PluginNotFound("p".into()),
                404,
                "plugin_not_found",
            ),
            (
                ApiError::InvalidEvent {
                    event: "plugin.x".into(),
                    message: "reserved".into(),
                },
                400,
                "invalid_event",
            ),
            (
                ApiError::PluginStateConflict {
                    plugin: "p".into(),
                    message: "m".into(),
                },
                409,
                "plugin_state_conflict",
            ),
            (
                ApiError::PluginSourceNotFound {
                    plugin: "p".into(),
                    message: "m".into(),
                },
                404,
                "plugin_source_not_found",
            ),
            (
                ApiError::ReloadFailed {
                    plugin: "p".into(),
                    step: "compile".into(),
                    error: "e".into(),
                },
                422,
                "reload_failed",
            ),
            (
                ApiError::PluginStartFailed {
                    plugin: "p".into(),
                    error: "e".into(),
                },
                422,
                "plugin_start_failed",
            ),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::InvalidJson("bad".into()), 400, "invalid_json"),
            (ApiError::InvalidPath("bad".into()), 400, "invalid_path"),
            (ApiError::InvalidQuery("bad".into()), 400, "invalid_query"),
            (ApiError::InvalidBody("cut".into()), 400, "invalid_body"),
            (
                ApiError::WebSocketUpgradeRequired { reason: "r".into() },
                400,
                "websocket_upgrade_required",
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    path: "/livez".into(),
                    allowed: vec!["GET".into(), "HEAD".into()],
                },
                405,
                "method_not_allowed",
            ),
            (
                ApiError::PayloadTooLarge { limit: 10 },
                413,
                "payload_too_large",
            ),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (
                ApiError::Internal("secret detail".into()),
                500,
                "internal_error",
            ),
        ];
        for (error, status, code) in cases {
            let (s, b) = body(error);
            assert_eq!(s, status, "{code}");
            assert_eq!(b["code"], code);
            assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    #[test]
    fn body_errors_speak_json_not_rust() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct CreateThing {
            name: String,
        }
        let e = serde_json::from_str::<CreateThing>("true").unwrap_err();
        let message = ApiError::from_serde(&e).to_string();
        assert!(
            message.starts_with(
                "invalid JSON body: invalid type: boolean `true`, expected a JSON object"
            ),
            "{message}"
        );
        let e = serde_json::from_str::<CreateThing>(r#"{"name": []}"#).unwrap_err();
        let array = ApiError::from_serde(&e).to_string();
        assert!(
            array.contains("invalid type: an array, expected a string"),
            "{array}"
        );
        assert!(!message.contains("CreateThing"), "{message}");
    }

    /// One error of every kind the table maps, nested ones included.
    fn samples() -> Vec<ApiError> {
        use crate::connector::tls::TlsError;
        use crate::connector::ConnectorError;
        use crate::frontdoor::keys::KeyError as K;
        use crate::frontdoor::route::RouteError as R;
        use crate::frontdoor::FrontdoorError as F;
        use crate::inference::InferenceError as I;
        use crate::session::SessionError as E;
        use crate::target::catalogue::TargetError as T;
        use crate::tool::ToolError as Tl;
        use crate::turn::AgentError as A;
        let s = || "x".to_string();
        vec![
            ApiError::RouteNotFound {
                method: s(),
                path: s(),
            },
            ApiError::PluginNotFound(s()),
            ApiError::InvalidEvent {
                event: s(),
                message: s(),
            },
            ApiError::PluginStateConflict {
                plugin: s(),
                message: s(),
            },
            ApiError::PluginSourceNotFound {
                plugin: s(),
                message: s(),
            },
            ApiError::ReloadFailed {
                plugin: s(),
                step: s(),
                error: s(),
            },
            ApiError::PluginStartFailed {
                plugin: s(),
                error: s(),
            },
            ApiError::TargetNotFound(s()),
            ApiError::StoreDisabled,
            ApiError::Target(T::NotFound(s())),
            ApiError::Target(T::Invalid(vec![s()])),
            ApiError::Target(T::Conflict(s())),
            ApiError::Target(T::Store(s())),
            ApiError::Session(E::TargetNotFound(s())),
            ApiError::Session(E::SessionNotFound(s())),
            ApiError::Session(E::OwnerUnavailable {
                id: s(),
                owner: s(),
                retry_after_ms: 1,
            }),
            ApiError::Session(E::Store(s())),
            ApiError::Session(E::InvalidPlugins(vec![s()])),
            ApiError::Session(E::QueueFull(s())),
            ApiError::Session(E::TooManySessions(1)),
            ApiError::Session(E::HookFailed {
                plugin: s(),
                hook: "onConnect",
                message: s(),
            }),
            ApiError::Session(E::Upstream(ConnectorError::Timeout)),
            ApiError::Session(E::Upstream(ConnectorError::Tls(TlsError::Untrusted(s())))),
            ApiError::Session(E::Ended {
                id: s(),
                reason: s(),
            }),
            ApiError::Session(E::ClientGone),
            ApiError::Session(E::NotCommitted(
                crate::store::writer::CommitError::Unavailable,
            )),
            ApiError::Unauthorized,
            ApiError::InvalidJson(s()),
            ApiError::InvalidPath(s()),
            ApiError::InvalidQuery(s()),
            ApiError::InvalidBody(s()),
            ApiError::WebSocketUpgradeRequired { reason: s() },
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::BodyTimeout { after_ms: 1 },
            ApiError::UnsupportedMediaType,
            ApiError::MethodNotAllowed {
                method: s(),
                path: s(),
                allowed: vec![s()],
            },
            ApiError::PluginUnavailable(s()),
            ApiError::PluginRouteFailed {
                plugin: s(),
                message: s(),
            },
            ApiError::Tool(Tl::NotFound(s())),
            ApiError::Tool(Tl::InvalidName(s())),
            ApiError::Tool(Tl::InvalidParams {
                tool: s(),
                errors: vec![],
            }),
            ApiError::Tool(Tl::Failed {
                tool: s(),
                plugin: s(),
                message: s(),
            }),
            ApiError::Tool(Tl::Unavailable {
                tool: s(),
                plugin: s(),
            }),
            ApiError::Agent(A::NotFound(s())),
            ApiError::Agent(A::EmptyMessage),
            ApiError::Agent(A::InvalidSessionId(s())),
            ApiError::Agent(A::Timeout(1)),
            ApiError::Agent(A::Paused {
                agent: s(),
                failures: 1,
            }),
            ApiError::Agent(A::NotPaused(s())),
            ApiError::Agent(A::Inference(I::CircuitOpen {
                provider: s(),
                retry_in_ms: 1,
            })),
            ApiError::Agent(A::Inference(I::Config(s()))),
            ApiError::Agent(A::Inference(I::Status {
                provider: s(),
                status: 500,
                message: s(),
            })),
            ApiError::Agent(A::Inference(I::Tls {
                provider: s(),
                error: TlsError::Untrusted(s()),
            })),
            F::Invalid(crate::frontdoor::wire::Invalid {
                param: Some(s()),
                message: s(),
            })
            .into(),
            F::ModelNotFound(s()).into(),
            F::Key(K::Missing).into(),
            F::Key(K::ModelNotAllowed(s())).into(),
            F::Key(K::RateLimited {
                limit: 1,
                retry_after_ms: 1,
            })
            .into(),
            F::Key(K::BudgetExhausted { used: 1, budget: 1 }).into(),
            F::Key(K::NotFound(s())).into(),
            F::Key(K::InvalidBody(vec![s()])).into(),
            F::Route(R::Invalid(vec![s()])).into(),
            F::Route(R::Conflict(s())).into(),
            F::Timeout {
                route: s(),
                after_ms: 1,
            }
            .into(),
            crate::webhook::WebhookError::Invalid {
                field: s(),
                message: s(),
            }
            .into(),
            crate::webhook::WebhookError::NotFound(s()).into(),
            crate::webhook::WebhookError::StoreDisabled.into(),
            crate::webhook::WebhookError::Stopping.into(),
            ApiError::Internal(s()),
        ]
    }

    #[test]
    fn an_unreachable_owner_says_when_to_retry_in_whole_seconds_rounded_up() {
        let error = ApiError::Session(crate::session::SessionError::OwnerUnavailable {
            id: "s1".into(),
            owner: "gw-a".into(),
            retry_after_ms: 2_001,
        });
        let response = error.error_response();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.headers().get("Retry-After").unwrap(), "3");
        let (_, body) = body(error);
        assert_eq!(body["code"], "session_owner_unavailable");
        assert_eq!(
            body["details"],
            json!({ "session": "s1", "owner": "gw-a", "retryAfterMs": 2001 })
        );
        assert_eq!(retry_after_secs(0), "1");
        assert_eq!(retry_after_secs(1_000), "1");
    }

    /// `Code::ALL` is complete by construction (one macro declares both), and every error maps
    /// to a `Code`; this checks the other direction: no code in the table (and so in the
    /// OpenAPI document) is dead, and codes are unique, snake_case, 4xx or 5xx.
    #[test]
    fn every_code_in_the_table_is_answered_by_some_error_and_none_twice() {
        let produced: std::collections::HashSet<Code> =
            samples().iter().map(ApiError::kind).collect();
        for code in Code::ALL {
            assert!(produced.contains(code), "{code:?} is answered by no error");
            assert!((400..600).contains(&code.status_u16()), "{code:?}");
            assert!(code
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(!code.meaning().is_empty());
        }
        let names: std::collections::HashSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len(), "a code string is used twice");
        for error in samples() {
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), error.kind().status_u16());
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let (_, b) = body(ApiError::Internal("db password wrong".into()));
        assert!(!b.to_string().contains("password"));
    }
}

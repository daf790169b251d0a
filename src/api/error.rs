//! `ApiError`: every error the HTTP API answers, with its status and stable snake_case code.
//!
//! Owns the one table from error to (HTTP status, code, details) and the JSON body
//! `{"code", "message", "details"?}`; extractor errors (JSON body, path, query) are mapped here
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
    #[error("an internal error occurred")]
    Internal(String),
}

/// nginx's 499: the client closed the connection before the answer was complete.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// One row of the table: the HTTP status, the stable code, and the fields the body's
/// `details` names (the plugin, target, session, field… concerned).
type Row = (StatusCode, &'static str, Option<Value>);

impl ApiError {
    /// The table: every error's status, code and details, in one place.
    fn row(&self) -> Row {
        use StatusCode as S;
        match self {
            ApiError::RouteNotFound { .. } => (S::NOT_FOUND, "route_not_found", None),
            ApiError::PluginNotFound(id) => (
                S::NOT_FOUND,
                "plugin_not_found",
                Some(json!({ "plugin": id })),
            ),
            ApiError::InvalidEvent { event, .. } => (
                S::BAD_REQUEST,
                "invalid_event",
                Some(json!({ "field": "event", "event": event })),
            ),
            ApiError::PluginStateConflict { plugin, .. } => (
                S::CONFLICT,
                "plugin_state_conflict",
                Some(json!({ "plugin": plugin })),
            ),
            ApiError::PluginSourceNotFound { plugin, .. } => (
                S::NOT_FOUND,
                "plugin_source_not_found",
                Some(json!({ "plugin": plugin })),
            ),
            ApiError::ReloadFailed { plugin, step, .. } => (
                S::UNPROCESSABLE_ENTITY,
                "reload_failed",
                Some(json!({ "plugin": plugin, "step": step })),
            ),
            ApiError::PluginStartFailed { plugin, .. } => (
                S::UNPROCESSABLE_ENTITY,
                "plugin_start_failed",
                Some(json!({ "plugin": plugin })),
            ),
            ApiError::TargetNotFound(id) => (
                S::NOT_FOUND,
                "target_not_found",
                Some(json!({ "target": id })),
            ),
            ApiError::StoreDisabled => (S::CONFLICT, "store_disabled", None),
            ApiError::Target(e) => target_row(e),
            ApiError::Session(e) => session_row(e),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized", None),
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json", None),
            ApiError::InvalidPath(_) => (S::BAD_REQUEST, "invalid_path", None),
            ApiError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query", None),
            ApiError::InvalidBody(_) => (S::BAD_REQUEST, "invalid_body", None),
            ApiError::WebSocketUpgradeRequired { reason } => (
                S::BAD_REQUEST,
                "websocket_upgrade_required",
                Some(json!({ "reason": reason })),
            ),
            ApiError::PayloadTooLarge { limit } => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                Some(json!({ "limitBytes": limit })),
            ),
            ApiError::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None)
            }
            ApiError::MethodNotAllowed { allowed, .. } => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                Some(json!({ "allowed": allowed })),
            ),
            ApiError::PluginUnavailable(plugin) => (
                S::SERVICE_UNAVAILABLE,
                "plugin_unavailable",
                Some(json!({ "plugin": plugin })),
            ),
            // The plugin's own failure, reported as such (never the gateway's internals).
            ApiError::PluginRouteFailed { plugin, .. } => (
                S::INTERNAL_SERVER_ERROR,
                "plugin_route_failed",
                Some(json!({ "plugin": plugin })),
            ),
            ApiError::Tool(e) => tool_row(e),
            ApiError::Agent(e) => agent_row(e),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error", None),
        }
    }

    /// The stable, documented code of each error.
    pub fn code(&self) -> &'static str {
        self.row().1
    }

    /// The JSON body: `{code, message, details?}` (also the data of a stream's `error` event).
    pub fn body(&self) -> Value {
        let (_, code, details) = self.row();
        // An internal failure's text (a database error, say) is logged, never answered.
        let message = if code == "internal_error" {
            "an internal error occurred".to_string()
        } else {
            self.to_string()
        };
        let mut body = json!({ "code": code, "message": message });
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
        self.row().0
    }

    fn error_response(&self) -> HttpResponse {
        if self.code() == "internal_error" {
            tracing::error!(error = ?self, "Internal error.");
        }
        let mut response = HttpResponse::build(self.row().0);
        let body = self.body();
        if matches!(self, ApiError::Unauthorized) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            response.insert_header(("Allow", allowed.join(", ")));
        }
        response.json(body)
    }
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

fn target_row(e: &crate::target::catalogue::TargetError) -> Row {
    use crate::target::catalogue::TargetError as T;
    use StatusCode as S;
    match e {
        T::NotFound(id) => (
            S::NOT_FOUND,
            "target_not_found",
            Some(json!({ "target": id })),
        ),
        T::Invalid(errors) => (
            S::BAD_REQUEST,
            "invalid_target",
            Some(json!({ "field": "target", "errors": errors })),
        ),
        T::Conflict(_) => (S::CONFLICT, "target_conflict", None),
        T::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal_error", None),
    }
}

fn session_row(e: &crate::session::SessionError) -> Row {
    use crate::session::SessionError as E;
    use StatusCode as S;
    match e {
        E::TargetNotFound(id) => (
            S::NOT_FOUND,
            "target_not_found",
            Some(json!({ "target": id })),
        ),
        E::SessionNotFound(id) => (
            S::NOT_FOUND,
            "session_not_found",
            Some(json!({ "session": id })),
        ),
        E::InvalidPlugins(errors) => (
            S::BAD_REQUEST,
            "invalid_session_plugins",
            Some(json!({ "field": "plugins", "errors": errors })),
        ),
        E::QueueFull(id) => (
            S::TOO_MANY_REQUESTS,
            "session_busy",
            Some(json!({ "session": id })),
        ),
        E::TooManySessions(limit) => (
            S::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            Some(json!({ "limit": limit })),
        ),
        E::HookFailed { plugin, hook, .. } => (
            S::BAD_GATEWAY,
            "plugin_hook_failed",
            Some(json!({ "plugin": plugin, "hook": hook })),
        ),
        E::Upstream(crate::connector::ConnectorError::Tls(tls)) => (
            S::BAD_GATEWAY,
            "tls_error",
            Some(json!({ "reason": tls.reason() })),
        ),
        E::Upstream(e) => (
            S::BAD_GATEWAY,
            "upstream_error",
            Some(json!({ "status": e.status() })),
        ),
        E::Ended { id, .. } => (S::GONE, "session_ended", Some(json!({ "session": id }))),
        // nginx's "client closed request": only ever recorded, the client is gone.
        E::ClientGone => (client_closed(), "client_closed_request", None),
    }
}

fn tool_row(e: &crate::tool::ToolError) -> Row {
    use crate::tool::ToolError as T;
    use StatusCode as S;
    match e {
        T::NotFound(tool) => (
            S::NOT_FOUND,
            "tool_not_found",
            Some(json!({ "tool": tool })),
        ),
        T::InvalidParams { tool, errors } => (
            S::UNPROCESSABLE_ENTITY,
            "invalid_tool_params",
            Some(json!({ "tool": tool, "field": "params", "errors": errors })),
        ),
        T::Failed { tool, plugin, .. } => (
            S::BAD_GATEWAY,
            "tool_failed",
            Some(json!({ "tool": tool, "plugin": plugin })),
        ),
        T::Unavailable { tool, plugin } => (
            S::SERVICE_UNAVAILABLE,
            "plugin_unavailable",
            Some(json!({ "tool": tool, "plugin": plugin })),
        ),
        T::InvalidName(_) | T::InvalidSchema { .. } | T::Clash { .. } => {
            (S::BAD_REQUEST, "invalid_tool", None)
        }
    }
}

fn agent_row(e: &crate::turn::AgentError) -> Row {
    use crate::inference::InferenceError as I;
    use crate::turn::AgentError as A;
    use StatusCode as S;
    match e {
        A::NotFound(id) => (
            S::NOT_FOUND,
            "agent_not_found",
            Some(json!({ "agent": id })),
        ),
        A::EmptyMessage => (
            S::BAD_REQUEST,
            "invalid_chat_request",
            Some(json!({ "field": "message" })),
        ),
        A::InvalidSessionId(_) => (
            S::BAD_REQUEST,
            "invalid_chat_request",
            Some(json!({ "field": "sessionId" })),
        ),
        A::Timeout(_) => (S::GATEWAY_TIMEOUT, "agent_timeout", None),
        A::Inference(I::CircuitOpen {
            provider,
            retry_in_ms,
        }) => (
            S::SERVICE_UNAVAILABLE,
            "circuit_open",
            Some(json!({ "provider": provider, "retryInMs": retry_in_ms })),
        ),
        A::Inference(I::Config(_)) => (S::UNPROCESSABLE_ENTITY, "invalid_agent_model", None),
        A::Inference(I::Status {
            provider, status, ..
        }) => (
            S::BAD_GATEWAY,
            "inference_failed",
            Some(json!({ "provider": provider, "status": status })),
        ),
        A::Inference(I::Tls { provider, error }) => (
            S::BAD_GATEWAY,
            "tls_error",
            Some(json!({ "provider": provider, "reason": error.reason() })),
        ),
        A::Inference(I::Network { provider, .. } | I::Decode { provider, .. }) => (
            S::BAD_GATEWAY,
            "inference_failed",
            Some(json!({ "provider": provider })),
        ),
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

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let (_, b) = body(ApiError::Internal("db password wrong".into()));
        assert!(!b.to_string().contains("password"));
    }
}

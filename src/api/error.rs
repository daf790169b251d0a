//! `ApiError`: every error the HTTP API answers, with its status and stable snake_case code.
//!
//! Owns the one table from error to (HTTP status, code) and the JSON body
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

impl ApiError {
    /// The stable, documented code of each error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::PluginNotFound(_) => "plugin_not_found",
            ApiError::InvalidEvent { .. } => "invalid_event",
            ApiError::PluginStateConflict { .. } => "plugin_state_conflict",
            ApiError::PluginSourceNotFound { .. } => "plugin_source_not_found",
            ApiError::ReloadFailed { .. } => "reload_failed",
            ApiError::PluginStartFailed { .. } => "plugin_start_failed",
            ApiError::TargetNotFound(_) => "target_not_found",
            ApiError::StoreDisabled => "store_disabled",
            ApiError::Target(e) => {
                use crate::target::catalogue::TargetError as T;
                match e {
                    T::NotFound(_) => "target_not_found",
                    T::Invalid(_) => "invalid_target",
                    T::Conflict(_) => "target_conflict",
                    T::Store(_) => "internal_error",
                }
            }
            ApiError::Session(e) => {
                use crate::session::SessionError as S;
                match e {
                    S::TargetNotFound(_) => "target_not_found",
                    S::SessionNotFound(_) => "session_not_found",
                    S::InvalidPlugins(_) => "invalid_session_plugins",
                    S::QueueFull(_) => "session_busy",
                    S::TooManySessions(_) => "too_many_sessions",
                    S::HookFailed { .. } => "plugin_hook_failed",
                    S::Upstream(_) => "upstream_error",
                    S::Ended { .. } => "session_ended",
                }
            }
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PluginUnavailable(_) => "plugin_unavailable",
            ApiError::PluginRouteFailed { .. } => "plugin_route_failed",
            ApiError::Tool(e) => {
                use crate::tool::ToolError as T;
                match e {
                    T::NotFound(_) => "tool_not_found",
                    T::InvalidParams { .. } => "invalid_tool_params",
                    T::Failed { .. } => "tool_failed",
                    T::Unavailable { .. } => "plugin_unavailable",
                    T::InvalidName(_) | T::InvalidSchema { .. } | T::Clash { .. } => "invalid_tool",
                }
            }
            ApiError::Agent(e) => {
                use crate::inference::InferenceError as I;
                use crate::turn::AgentError as A;
                match e {
                    A::NotFound(_) => "agent_not_found",
                    A::EmptyMessage | A::InvalidSessionId(_) => "invalid_chat_request",
                    A::Timeout(_) => "agent_timeout",
                    A::Inference(I::CircuitOpen { .. }) => "circuit_open",
                    A::Inference(I::Config(_)) => "invalid_agent_model",
                    A::Inference(_) => "inference_failed",
                }
            }
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Option<Value> {
        match self {
            ApiError::PluginNotFound(id) => Some(json!({ "plugin": id })),
            ApiError::PayloadTooLarge { limit } => Some(json!({ "limitBytes": limit })),
            ApiError::TargetNotFound(id) => Some(json!({ "target": id })),
            ApiError::Target(e) => {
                use crate::target::catalogue::TargetError as T;
                match e {
                    T::NotFound(id) => Some(json!({ "target": id })),
                    T::Invalid(errors) => Some(json!({ "field": "target", "errors": errors })),
                    _ => None,
                }
            }
            ApiError::Session(e) => {
                use crate::session::SessionError as S;
                match e {
                    S::TargetNotFound(id) => Some(json!({ "target": id })),
                    S::SessionNotFound(id) | S::QueueFull(id) => Some(json!({ "session": id })),
                    S::InvalidPlugins(errors) => {
                        Some(json!({ "field": "plugins", "errors": errors }))
                    }
                    S::HookFailed { plugin, hook, .. } => {
                        Some(json!({ "plugin": plugin, "hook": hook }))
                    }
                    S::Upstream(e) => Some(json!({ "status": e.status() })),
                    S::Ended { id, .. } => Some(json!({ "session": id })),
                    S::TooManySessions(limit) => Some(json!({ "limit": limit })),
                }
            }
            ApiError::InvalidEvent { event, .. } => {
                Some(json!({ "field": "event", "event": event }))
            }
            ApiError::PluginStateConflict { plugin, .. }
            | ApiError::PluginSourceNotFound { plugin, .. }
            | ApiError::PluginStartFailed { plugin, .. } => Some(json!({ "plugin": plugin })),
            ApiError::ReloadFailed { plugin, step, .. } => {
                Some(json!({ "plugin": plugin, "step": step }))
            }
            ApiError::MethodNotAllowed { allowed, .. } => Some(json!({ "allowed": allowed })),
            ApiError::PluginUnavailable(plugin) | ApiError::PluginRouteFailed { plugin, .. } => {
                Some(json!({ "plugin": plugin }))
            }
            ApiError::Tool(e) => {
                use crate::tool::ToolError as T;
                match e {
                    T::NotFound(tool) => Some(json!({ "tool": tool })),
                    T::InvalidParams { tool, errors } => {
                        Some(json!({ "tool": tool, "field": "params", "errors": errors }))
                    }
                    T::Failed { tool, plugin, .. } | T::Unavailable { tool, plugin } => {
                        Some(json!({ "tool": tool, "plugin": plugin }))
                    }
                    _ => None,
                }
            }
            ApiError::Agent(e) => {
                use crate::inference::InferenceError as I;
                use crate::turn::AgentError as A;
                match e {
                    A::NotFound(id) => Some(json!({ "agent": id })),
                    A::EmptyMessage => Some(json!({ "field": "message" })),
                    A::InvalidSessionId(_) => Some(json!({ "field": "sessionId" })),
                    A::Inference(I::Status {
                        provider, status, ..
                    }) => Some(json!({ "provider": provider, "status": status })),
                    A::Inference(I::CircuitOpen {
                        provider,
                        retry_in_ms,
                    }) => Some(json!({ "provider": provider, "retryInMs": retry_in_ms })),
                    A::Inference(I::Network { provider, .. } | I::Decode { provider, .. }) => {
                        Some(json!({ "provider": provider }))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    pub fn from_json(error: &JsonPayloadError, limit: usize) -> ApiError {
        match error {
            JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
            JsonPayloadError::Deserialize(e) => {
                ApiError::InvalidJson(format!("invalid JSON body: {e}"))
            }
            other => ApiError::InvalidJson(format!("invalid JSON body: {other}")),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::TargetNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::StoreDisabled => StatusCode::CONFLICT,
            ApiError::Target(e) => {
                use crate::target::catalogue::TargetError as T;
                match e {
                    T::NotFound(_) => StatusCode::NOT_FOUND,
                    T::Invalid(_) => StatusCode::BAD_REQUEST,
                    T::Conflict(_) => StatusCode::CONFLICT,
                    T::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
            ApiError::Session(e) => {
                use crate::session::SessionError as S;
                match e {
                    S::TargetNotFound(_) | S::SessionNotFound(_) => StatusCode::NOT_FOUND,
                    S::InvalidPlugins(_) => StatusCode::BAD_REQUEST,
                    S::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
                    S::TooManySessions(_) => StatusCode::SERVICE_UNAVAILABLE,
                    S::HookFailed { .. } | S::Upstream(_) => StatusCode::BAD_GATEWAY,
                    S::Ended { .. } => StatusCode::GONE,
                }
            }
            ApiError::RouteNotFound { .. }
            | ApiError::PluginNotFound(_)
            | ApiError::PluginSourceNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::PluginStateConflict { .. } => StatusCode::CONFLICT,
            ApiError::ReloadFailed { .. } | ApiError::PluginStartFailed { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InvalidJson(_)
            | ApiError::InvalidPath(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidEvent { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PluginUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // The plugin's own failure, reported as such (never the gateway's internals).
            ApiError::PluginRouteFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Tool(e) => {
                use crate::tool::ToolError as T;
                match e {
                    T::NotFound(_) => StatusCode::NOT_FOUND,
                    T::InvalidParams { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                    T::Failed { .. } => StatusCode::BAD_GATEWAY,
                    T::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    T::InvalidName(_) | T::InvalidSchema { .. } | T::Clash { .. } => {
                        StatusCode::BAD_REQUEST
                    }
                }
            }
            ApiError::Agent(e) => {
                use crate::inference::InferenceError as I;
                use crate::turn::AgentError as A;
                match e {
                    A::NotFound(_) => StatusCode::NOT_FOUND,
                    A::EmptyMessage | A::InvalidSessionId(_) => StatusCode::BAD_REQUEST,
                    A::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    A::Inference(I::CircuitOpen { .. }) => StatusCode::SERVICE_UNAVAILABLE,
                    A::Inference(I::Config(_)) => StatusCode::UNPROCESSABLE_ENTITY,
                    A::Inference(_) => StatusCode::BAD_GATEWAY,
                }
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = %cause, "Internal error.");
        }
        let mut body = json!({ "code": self.code(), "message": self.to_string() });
        if let Some(details) = self.details() {
            body["details"] = details;
        }
        let mut response = HttpResponse::build(self.status_code());
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
    fn internal_errors_do_not_leak_their_cause() {
        let (_, b) = body(ApiError::Internal("db password wrong".into()));
        assert!(!b.to_string().contains("password"));
    }
}

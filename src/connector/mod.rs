//! Connectors: how a session talks to its upstream target.
//!
//! Owns the `Connector` trait (shaped for HTTP_REST now and SSE, WebSocket and gRPC later),
//! the connector config plugins may rewrite in `onConnect`, the response and error types the
//! pipeline passes through `afterReceive`, auth headers (`auth`), templating (`template`) and
//! the HTTP_REST connector (`http`). Speaks protocols only: does not own targets (`target`),
//! sessions or plugins.

pub mod auth;
pub mod http;
pub mod template;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use auth::AuthType;
use template::{RequestTemplate, ResponseTemplate};

/// Connector types this build can connect with. `WEBSOCKET`, `GRPC` and `SSE` are valid
/// plugin compatibilities but have no connector yet.
pub const SUPPORTED_CONNECTORS: &[&str] = &["HTTP_REST"];

/// What a connector connects with; plugins get it in `onConnect` and may return a changed
/// copy (Krawall's `ConnectorConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorConfig {
    pub endpoint: String,
    #[serde(default)]
    pub auth_type: AuthType,
    #[serde(default)]
    pub auth_config: Map<String, Value>,
    pub request_template: RequestTemplate,
    pub response_template: ResponseTemplate,
    #[serde(default)]
    pub protocol_config: Map<String, Value>,
    /// Milliseconds.
    pub timeout: u64,
}

/// Metadata of one response (Krawall's `ResponseMetadata`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseMetadata {
    pub response_time_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_response: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, Value>>,
}

/// One upstream answer (Krawall's `ConnectorResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorResponse {
    pub content: String,
    pub metadata: ResponseMetadata,
}

/// A failed send, with the messages Krawall's connectors use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// The upstream answered 4xx/5xx; `message` is the `errorPath` text or `HTTP <code>: <reason>`.
    #[error("{message}")]
    Status { status: u16, message: String },
    #[error("Request timeout")]
    Timeout,
    #[error("Cannot reach endpoint")]
    Unreachable(String),
    /// The upstream answered, but not with what the response template expects.
    #[error("{0}")]
    BadResponse(String),
    #[error("{0}")]
    Config(String),
}

impl ConnectorError {
    /// The upstream status code, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of a health check (Krawall's `HealthStatus`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A live connection to a target. Connectors run on their session's thread (`?Send`).
#[async_trait(?Send)]
pub trait Connector {
    /// `HTTP_REST`, `SSE`, …
    fn connector_type(&self) -> &'static str;

    /// Sends one message; `variables` (from plugins' metadata) fill the request template.
    async fn send_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ConnectorResponse, ConnectorError>;

    async fn health_check(&self) -> HealthStatus;

    /// Streaming arrives with the SSE and WebSocket connectors.
    fn supports_streaming(&self) -> bool {
        false
    }
}

/// Opens a connector of `connector_type` with `config`.
pub fn connect(
    connector_type: &str,
    config: ConnectorConfig,
) -> Result<Box<dyn Connector>, ConnectorError> {
    match connector_type {
        "HTTP_REST" => Ok(Box::new(http::HttpConnector::new(config)?)),
        other => Err(ConnectorError::Config(format!(
            "connector type '{other}' is not supported yet"
        ))),
    }
}

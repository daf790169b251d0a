//! Connectors: how a session talks to its upstream target.
//!
//! Owns the `Connector` trait (a whole answer, or a stream of chunks), the connector config
//! plugins may rewrite in `onConnect` and its checks, the response and error types the
//! pipeline passes through `afterReceive`, and the protocols: HTTP_REST (`http`), SSE (`sse`,
//! with the event-stream framing in `event_stream`), WEBSOCKET (`websocket`) and GRPC
//! (`grpc`, the `.proto` read at run time), with auth
//! headers (`auth`), templating (`template`) and TLS with the HTTP clients built on it
//! (`tls`, which model clients and plugins' HTTP calls use too). Speaks protocols only: does
//! not own targets (`target`), sessions or plugins.

pub mod auth;
pub mod event_stream;
pub mod grpc;
pub mod http;
pub mod sse;
pub mod template;
pub mod tls;
pub mod websocket;

use async_trait::async_trait;
use futures::stream::LocalBoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use auth::AuthType;
use template::{RequestTemplate, ResponseTemplate};
use tls::{TlsError, TlsOptions};

/// Connector types this build can connect with.
pub const SUPPORTED_CONNECTORS: &[&str] = &["HTTP_REST", "SSE", "WEBSOCKET", "GRPC"];

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
    /// TLS options for `https://` and `wss://` endpoints.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: TlsOptions,
}

pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
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
    /// Streamed answers: milliseconds from sending to the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_chunk_ms: Option<u64>,
    /// Streamed answers: how many chunks the upstream sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
    /// Tool calls the model asked for (`[{id, name, arguments}]`), from connectors that speak a
    /// model's wire format; the reply and the transcript carry them beside the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
}

/// One upstream answer (Krawall's `ConnectorResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorResponse {
    pub content: String,
    pub metadata: ResponseMetadata,
}

impl ConnectorResponse {
    /// The answer as JSON, moved rather than copied: what `serde_json::to_value` gives
    /// (camelCase keys in field order, absent options left out), without walking the raw
    /// upstream body and headers through a serializer on every message.
    pub fn into_value(self) -> Value {
        let m = self.metadata;
        let mut metadata = Map::with_capacity(7);
        metadata.insert("responseTimeMs".into(), Value::from(m.response_time_ms));
        let optional = [
            ("tokenUsage", m.token_usage),
            ("rawResponse", m.raw_response),
            ("headers", m.headers.map(Value::Object)),
            ("firstChunkMs", m.first_chunk_ms.map(Value::from)),
            ("chunks", m.chunks.map(Value::from)),
            ("toolCalls", m.tool_calls),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                metadata.insert(key.into(), value);
            }
        }
        let mut out = Map::with_capacity(2);
        out.insert("content".into(), Value::String(self.content));
        out.insert("metadata".into(), Value::Object(metadata));
        Value::Object(out)
    }
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
    /// The TLS handshake failed; says why (untrusted, name mismatch, expired, handshake).
    #[error(transparent)]
    Tls(TlsError),
    /// A held connection (a WebSocket) dropped or is gone; Krawall's words ("WebSocket
    /// disconnected", "WebSocket is not connected").
    #[error("{0}")]
    Disconnected(String),
    /// A streamed answer broke off after it had begun.
    #[error("the upstream stream broke off: {0}")]
    StreamBroken(String),
}

impl ConnectorError {
    /// The upstream status code, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What kind of failure this is, in one word for a span's `status` field.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::Status { .. } => "status",
            ConnectorError::Timeout => "timeout",
            ConnectorError::Unreachable(_) => "unreachable",
            ConnectorError::BadResponse(_) => "bad_response",
            ConnectorError::Config(_) => "config",
            ConnectorError::Tls(_) => "tls",
            ConnectorError::Disconnected(_) => "disconnected",
            ConnectorError::StreamBroken(_) => "stream_broken",
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

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// Text of the answer, in order.
    Delta(String),
    /// The answer is complete: its metadata (usage, timing, the last raw event). Always the
    /// last item of a stream that did not fail. Boxed: it is large and comes once.
    Done(Box<ResponseMetadata>),
}

/// A streamed answer. Dropping it cancels the upstream call.
pub type ChunkStream = LocalBoxStream<'static, Result<StreamItem, ConnectorError>>;

/// A whole answer as a stream of one chunk.
pub fn whole(answer: ConnectorResponse) -> ChunkStream {
    Box::pin(futures::stream::iter([
        Ok(StreamItem::Delta(answer.content)),
        Ok(StreamItem::Done(Box::new(answer.metadata))),
    ]))
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

    /// Whether [`Connector::stream_message`] streams (otherwise it yields the whole answer as
    /// one chunk).
    fn supports_streaming(&self) -> bool {
        false
    }

    /// Sends one message and yields the answer as it arrives. An error before the answer
    /// began (a refused request, an HTTP error status) is returned here, not in the stream.
    async fn stream_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ChunkStream, ConnectorError> {
        Ok(whole(self.send_message(message, variables).await?))
    }

    /// Closes what the connector holds open (a WebSocket, a stream). Called when the session
    /// closes; the default has nothing to close.
    async fn disconnect(&self) {}
}

impl ConnectorConfig {
    /// Every problem with the config for `connector_type`, as `(field, message)`: the checks a
    /// target gets when it is created, run again on a config a plugin returns in `onConnect`.
    pub fn problems(&self, connector_type: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .tls
            .problems()
            .into_iter()
            .map(|(field, message)| (format!("tls.{field}"), message))
            .collect();
        out.extend(match connector_type {
            "WEBSOCKET" => websocket::problems(&self.protocol_config),
            "GRPC" => grpc::problems(&self.protocol_config),
            _ => sse::StreamSpec::problems(&self.protocol_config),
        });
        out
    }
}

/// Opens a connector of `connector_type` with `config`: a WebSocket connects here, the
/// others on their first request.
pub async fn connect(
    connector_type: &str,
    config: ConnectorConfig,
) -> Result<Box<dyn Connector>, ConnectorError> {
    match connector_type {
        "HTTP_REST" => Ok(Box::new(http::HttpConnector::new(config)?)),
        "SSE" => Ok(Box::new(sse::SseConnector::new(config)?)),
        "WEBSOCKET" => Ok(Box::new(websocket::WsConnector::connect(config).await?)),
        "GRPC" => Ok(Box::new(grpc::GrpcConnector::connect(config).await?)),
        other => Err(ConnectorError::Config(format!(
            "connector type '{other}' is not supported; supported: {}",
            SUPPORTED_CONNECTORS.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_moved_into_json_reads_as_its_serialization() {
        let whole = ConnectorResponse {
            content: "hi".into(),
            metadata: ResponseMetadata {
                response_time_ms: 7,
                token_usage: Some(json!({"totalTokens": 3})),
                raw_response: Some(json!({"choices": [{"message": {"content": "hi"}}]})),
                headers: Some(Map::from_iter([("x-a".to_string(), json!("1"))])),
                first_chunk_ms: Some(2),
                chunks: Some(4),
                tool_calls: Some(Value::Null),
            },
        };
        let bare = ConnectorResponse {
            content: String::new(),
            metadata: ResponseMetadata::default(),
        };
        for answer in [whole, bare] {
            let expected = serde_json::to_value(&answer).unwrap();
            let moved = answer.into_value();
            assert_eq!(moved, expected);
            // Key order too (`preserve_order`): the reply and plugins see the same text.
            assert_eq!(moved.to_string(), expected.to_string());
        }
    }
}

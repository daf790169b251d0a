//! The HTTP_REST connector, on awc.
//!
//! Owns building the request (template, method, path, headers, auth, timeout), mapping failures
//! to Krawall's messages (`HTTP 503: …` or the `errorPath` text, `Request timeout`, `Cannot
//! reach endpoint`, and a TLS failure as itself), extracting content and usage, streamed
//! answers when the target asks for them (read by `sse`), and the health check. One pooled
//! client per thread and TLS configuration is shared by every session on it (`tls`).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use awc::error::{PayloadError, SendRequestError};
use awc::http::Method;
use serde_json::{Map, Value};

use super::auth::{auth_headers, text_pairs};
use super::sse::{read_stream, StreamSpec};
use super::template::{build_request, extract_content, extract_error, extract_usage};
use super::tls::{self, TlsError};
use super::{
    ChunkStream, Connector, ConnectorConfig, ConnectorError, ConnectorResponse, HealthStatus,
    ResponseMetadata,
};

/// Largest upstream body read (10 MiB).
const MAX_RESPONSE_BYTES: usize = 10 << 20;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// This thread's pooled HTTP client with the system's trusted roots (plugins and inference
/// clients share it).
pub fn client() -> awc::Client {
    tls::default_client()
}

/// Where and how requests go: method, URL, headers (auth included) and the client for the
/// target's TLS options. Shared by the HTTP_REST and SSE connectors.
pub(super) struct Endpoint {
    pub config: ConnectorConfig,
    pub method: Method,
    /// The endpoint (and `path`), parsed once when the endpoint is built.
    uri: awc::http::Uri,
    headers: Vec<Header>,
    client: awc::Client,
}

/// A header every request carries: parsed once when the endpoint is built, or kept as text
/// when it does not parse, so the send fails as it always did (awc reports it).
#[derive(Debug, Clone, PartialEq)]
enum Header {
    Parsed(
        awc::http::header::HeaderName,
        awc::http::header::HeaderValue,
    ),
    Text(String, String),
}

impl Header {
    fn of(name: String, value: String) -> Header {
        use awc::http::header::{HeaderName, HeaderValue};
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => Header::Parsed(name, value),
            _ => Header::Text(name, value),
        }
    }
}

impl Endpoint {
    pub fn new(config: ConnectorConfig, default_method: &str) -> Result<Self, ConnectorError> {
        let method_text = config
            .protocol_config
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or(default_method)
            .to_ascii_uppercase();
        let method = Method::from_bytes(method_text.as_bytes())
            .map_err(|_| ConnectorError::Config(format!("unknown HTTP method '{method_text}'")))?;
        let url = join(
            &config.endpoint,
            config.protocol_config.get("path").and_then(Value::as_str),
        );
        let uri = url
            .parse::<awc::http::Uri>()
            .map_err(|e| ConnectorError::Config(format!("endpoint '{url}': {e}")))?;
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        headers.extend(auth_headers(config.auth_type, &config.auth_config));
        if let Some(extra) = config.protocol_config.get("headers") {
            headers.extend(text_pairs(extra));
        }
        let headers = headers
            .into_iter()
            .map(|(name, value)| Header::of(name, value))
            .collect();
        let client = tls::http_client(&config.tls).map_err(ConnectorError::Tls)?;
        Ok(Endpoint {
            config,
            method,
            uri,
            headers,
            client,
        })
    }

    fn request<U>(&self, method: Method, url: U, timeout: Duration) -> awc::ClientRequest
    where
        awc::http::Uri: TryFrom<U>,
        <awc::http::Uri as TryFrom<U>>::Error: Into<awc::error::HttpError>,
    {
        let mut request = self.client.request(method, url).timeout(timeout);
        for header in &self.headers {
            request = match header {
                Header::Parsed(name, value) => request.insert_header((name.clone(), value.clone())),
                Header::Text(name, value) => request.insert_header((name.as_str(), value.as_str())),
            };
        }
        request
    }

    /// Sends one message; answers with the response once its status says it is not an error.
    /// `extra` headers go on this request only (`Accept`, `Last-Event-ID`).
    pub async fn send(
        &self,
        message: &str,
        variables: &Map<String, Value>,
        timeout: Duration,
        extra: &[(&str, String)],
    ) -> Result<awc::ClientResponse, ConnectorError> {
        let body = build_request(&self.config.request_template, message, variables);
        let mut request = self.request(self.method.clone(), self.uri.clone(), timeout);
        for (name, value) in extra {
            request = request.insert_header((*name, value.as_str()));
        }
        // The upstream joins the trace (empty unless traces are exported).
        for (name, value) in crate::trace_context::outgoing() {
            request = request.insert_header((name, value));
        }
        // `$headers` in a plugin's metadata overrides headers for this send (a refreshed token).
        if let Some(extra) = variables.get("$headers").and_then(Value::as_object) {
            for (name, value) in extra {
                if let Some(value) = value.as_str() {
                    request = request.insert_header((name.as_str(), value));
                }
            }
        }
        let sent = if self.method == Method::GET {
            // A GET carries the payload's top-level fields as query parameters.
            let query = text_pairs(&body);
            let request = request
                .query(&query)
                .map_err(|e| ConnectorError::Config(e.to_string()))?;
            request.send().await
        } else {
            request.send_json(&body).await
        };
        let mut response = sent.map_err(send_error)?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = response.body().limit(MAX_RESPONSE_BYTES);
            let bytes = match tokio::time::timeout(timeout, body).await {
                Ok(Ok(bytes)) => bytes,
                _ => Default::default(),
            };
            let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
            let message = parsed
                .as_ref()
                .and_then(|b| extract_error(&self.config.response_template, b))
                .unwrap_or_else(|| {
                    format!(
                        "HTTP {}: {}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("error")
                    )
                });
            return Err(ConnectorError::Status {
                status: status.as_u16(),
                message,
            });
        }
        Ok(response)
    }

    pub async fn health_check(&self) -> HealthStatus {
        let url = match self
            .config
            .protocol_config
            .get("healthCheckPath")
            .and_then(Value::as_str)
        {
            Some(path) => join(&self.config.endpoint, Some(path)),
            None => origin(&self.config.endpoint),
        };
        let started = Instant::now();
        match self
            .request(Method::GET, url.as_str(), HEALTH_TIMEOUT)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => HealthStatus {
                healthy: true,
                latency_ms: Some(started.elapsed().as_millis() as u64),
                error: None,
            },
            Ok(response) => HealthStatus {
                healthy: false,
                latency_ms: Some(started.elapsed().as_millis() as u64),
                error: Some(format!("HTTP {}", response.status().as_u16())),
            },
            Err(error) => HealthStatus {
                healthy: false,
                latency_ms: None,
                error: Some(send_error(error).to_string()),
            },
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout)
    }
}

/// `endpoint` + `path`, unless the path is absent or `/`.
fn join(endpoint: &str, path: Option<&str>) -> String {
    match path {
        Some(path) if !path.is_empty() && path != "/" => {
            format!(
                "{}/{}",
                endpoint.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        }
        _ => endpoint.to_string(),
    }
}

/// A failed send, with a TLS failure named as such (never "Cannot reach endpoint").
pub(super) fn send_error(error: SendRequestError) -> ConnectorError {
    if let Some(tls) = TlsError::from_send_error(&error) {
        return ConnectorError::Tls(tls);
    }
    match error {
        SendRequestError::Timeout => ConnectorError::Timeout,
        other => {
            tracing::debug!(error = ?other, "The upstream request failed.");
            ConnectorError::Unreachable(other.to_string())
        }
    }
}

/// A failure while reading a body: the connection broke, or the body was not what it said.
pub(super) fn payload_error(error: PayloadError) -> ConnectorError {
    match error {
        PayloadError::Io(_) | PayloadError::Incomplete(_) => {
            ConnectorError::Unreachable(error.to_string())
        }
        other => ConnectorError::BadResponse(format!("could not read the response: {other}")),
    }
}

/// The HTTP_REST connector. With `protocolConfig.stream: true` (or `"stream": true` in the
/// request template, as OpenAI's API takes it) the answer is read as it arrives: Server-Sent
/// Events or newline-delimited JSON, one chunk per event.
pub struct HttpConnector {
    endpoint: Endpoint,
    /// How a streamed answer is read, when the target asks for one.
    stream: Option<StreamSpec>,
}

impl HttpConnector {
    pub fn new(config: ConnectorConfig) -> Result<Self, ConnectorError> {
        let streaming = config.protocol_config.get("stream") == Some(&Value::Bool(true))
            || config
                .request_template
                .structure
                .as_ref()
                .and_then(|s| s.get("stream"))
                == Some(&Value::Bool(true));
        let stream = streaming.then(|| StreamSpec::from_config(&config));
        Ok(HttpConnector {
            endpoint: Endpoint::new(config, "POST")?,
            stream,
        })
    }
}

#[async_trait(?Send)]
impl Connector for HttpConnector {
    fn connector_type(&self) -> &'static str {
        "HTTP_REST"
    }

    async fn send_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ConnectorResponse, ConnectorError> {
        if self.stream.is_some() {
            return super::sse::collect(self.stream_message(message, variables).await?).await;
        }
        let started = Instant::now();
        let timeout = self.endpoint.timeout();
        let mut response = self.endpoint.send(message, variables, timeout, &[]).await?;
        let bytes = read_body(&mut response, timeout).await?;
        let response_time_ms = started.elapsed().as_millis() as u64;
        whole_answer(&self.endpoint.config, &response, &bytes, response_time_ms)
    }

    fn supports_streaming(&self) -> bool {
        self.stream.is_some()
    }

    async fn stream_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ChunkStream, ConnectorError> {
        let Some(spec) = &self.stream else {
            return Ok(super::whole(self.send_message(message, variables).await?));
        };
        let started = Instant::now();
        let accept = [(
            "Accept",
            "text/event-stream, application/x-ndjson, application/json".to_string(),
        )];
        let timeout = self.endpoint.timeout();
        let mut response = self
            .endpoint
            .send(message, variables, timeout, &accept)
            .await?;
        let kind = content_type(&response);
        if kind.starts_with("application/json") {
            // The upstream answered in one piece after all.
            let bytes = read_body(&mut response, timeout).await?;
            let elapsed = started.elapsed().as_millis() as u64;
            let answer = whole_answer(&self.endpoint.config, &response, &bytes, elapsed)?;
            return Ok(super::whole(answer));
        }
        let lines = !kind.starts_with("text/event-stream");
        let spec = spec.clone().with_headers(&response);
        Ok(read_stream(response, spec, started, lines, None))
    }

    async fn health_check(&self) -> HealthStatus {
        self.endpoint.health_check().await
    }
}

/// Reads a whole body within `timeout` (awc bounds only the wait for the headers, so an
/// upstream that sends them and then stalls would otherwise hold the session for good).
async fn read_body(
    response: &mut awc::ClientResponse,
    timeout: Duration,
) -> Result<actix_web::web::Bytes, ConnectorError> {
    match tokio::time::timeout(timeout, response.body().limit(MAX_RESPONSE_BYTES)).await {
        Ok(body) => body.map_err(payload_error),
        Err(_) => Err(ConnectorError::Timeout),
    }
}

/// The content type of a response, lower-cased (empty when absent).
pub(super) fn content_type(response: &awc::ClientResponse) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The response headers as a JSON object.
pub(super) fn header_map(response: &awc::ClientResponse) -> Map<String, Value> {
    response
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), Value::String(v.to_string())))
        })
        .collect()
}

/// A one-piece JSON answer: content and usage extracted with the response template.
fn whole_answer(
    config: &ConnectorConfig,
    response: &awc::ClientResponse,
    bytes: &[u8],
    response_time_ms: u64,
) -> Result<ConnectorResponse, ConnectorError> {
    let body: Value = serde_json::from_slice(bytes).map_err(|_| {
        ConnectorError::BadResponse(format!(
            "the response is not JSON: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ))
    })?;
    let content =
        extract_content(&config.response_template, &body).map_err(ConnectorError::BadResponse)?;
    Ok(ConnectorResponse {
        content,
        metadata: ResponseMetadata {
            response_time_ms,
            token_usage: extract_usage(&config.response_template, &body),
            raw_response: Some(body),
            headers: Some(header_map(response)),
            first_chunk_ms: None,
            chunks: None,
            tool_calls: None,
        },
    })
}

/// `scheme://host[:port]/` of a URL.
fn origin(endpoint: &str) -> String {
    match endpoint.parse::<awc::http::Uri>() {
        Ok(uri) => format!(
            "{}://{}/",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        ),
        Err(_) => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(join("http://h/v1/", Some("/chat")), "http://h/v1/chat");
        assert_eq!(join("http://h/v1/chat", Some("/")), "http://h/v1/chat");
        assert_eq!(join("http://h/v1/chat", None), "http://h/v1/chat");
        assert_eq!(
            origin("https://api.example.com:8443/v1/chat?x=1"),
            "https://api.example.com:8443/"
        );
    }

    #[test]
    fn headers_are_parsed_once_and_a_bad_one_is_kept_as_text() {
        let good = Header::of("X-Api-Key".into(), "k1".into());
        assert!(matches!(&good, Header::Parsed(n, v) if n.as_str() == "x-api-key" && v == "k1"));
        let bad = Header::of("bad name".into(), "v".into());
        assert_eq!(bad, Header::Text("bad name".into(), "v".into()));
        let bad_value = Header::of("x-a".into(), "line\nbreak".into());
        assert!(matches!(bad_value, Header::Text(..)));
    }
}

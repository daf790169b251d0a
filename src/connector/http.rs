//! The HTTP_REST connector, on awc.
//!
//! Owns building the request (template, method, path, headers, auth, timeout), mapping failures
//! to Krawall's messages (`HTTP 503: …` or the `errorPath` text, `Request timeout`, `Cannot
//! reach endpoint`), extracting content and usage, and the health check. One pooled client per
//! thread is shared by every session on it.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use awc::error::SendRequestError;
use awc::http::Method;
use serde_json::{Map, Value};

use super::auth::{auth_headers, text_pairs};
use super::template::{build_request, extract_content, extract_error, extract_usage};
use super::{
    Connector, ConnectorConfig, ConnectorError, ConnectorResponse, HealthStatus, ResponseMetadata,
};

/// Largest upstream body read (10 MiB).
const MAX_RESPONSE_BYTES: usize = 10 << 20;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// awc clients are per thread; keep-alive connections are pooled inside.
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_timeout()
        .max_http_version(awc::http::Version::HTTP_11)
        .finish();
}

/// This thread's pooled HTTP client (plugins making HTTP calls share it too).
pub fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

pub struct HttpConnector {
    config: ConnectorConfig,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
}

impl HttpConnector {
    pub fn new(config: ConnectorConfig) -> Result<Self, ConnectorError> {
        let method_text = config
            .protocol_config
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("POST")
            .to_ascii_uppercase();
        let method = Method::from_bytes(method_text.as_bytes())
            .map_err(|_| ConnectorError::Config(format!("unknown HTTP method '{method_text}'")))?;
        let url = join(
            &config.endpoint,
            config.protocol_config.get("path").and_then(Value::as_str),
        );
        url.parse::<awc::http::Uri>()
            .map_err(|e| ConnectorError::Config(format!("endpoint '{url}': {e}")))?;
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        headers.extend(auth_headers(config.auth_type, &config.auth_config));
        if let Some(extra) = config.protocol_config.get("headers") {
            headers.extend(text_pairs(extra));
        }
        Ok(HttpConnector {
            config,
            method,
            url,
            headers,
        })
    }

    fn request(&self, method: Method, url: &str, timeout: Duration) -> awc::ClientRequest {
        let mut request = client().request(method, url).timeout(timeout);
        for (name, value) in &self.headers {
            request = request.insert_header((name.as_str(), value.as_str()));
        }
        request
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

fn send_error(error: SendRequestError) -> ConnectorError {
    match error {
        SendRequestError::Timeout => ConnectorError::Timeout,
        other => ConnectorError::Unreachable(other.to_string()),
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
        let body = build_request(&self.config.request_template, message, variables);
        let timeout = Duration::from_millis(self.config.timeout);
        let started = Instant::now();
        let mut request = self.request(self.method.clone(), &self.url, timeout);
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
        let bytes = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                awc::error::PayloadError::Io(_) | awc::error::PayloadError::Incomplete(_) => {
                    ConnectorError::Unreachable(e.to_string())
                }
                other => {
                    ConnectorError::BadResponse(format!("could not read the response: {other}"))
                }
            })?;
        let response_time_ms = started.elapsed().as_millis() as u64;
        let status = response.status();
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_client_error() || status.is_server_error() {
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
        let body = parsed.ok_or_else(|| {
            ConnectorError::BadResponse(format!(
                "the response is not JSON: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        let content = extract_content(&self.config.response_template, &body)
            .map_err(ConnectorError::BadResponse)?;
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                v.to_str()
                    .ok()
                    .map(|v| (k.as_str().to_string(), Value::String(v.to_string())))
            })
            .collect();
        Ok(ConnectorResponse {
            content,
            metadata: ResponseMetadata {
                response_time_ms,
                token_usage: extract_usage(&self.config.response_template, &body),
                raw_response: Some(body),
                headers: Some(headers),
            },
        })
    }

    async fn health_check(&self) -> HealthStatus {
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
        match self.request(Method::GET, &url, HEALTH_TIMEOUT).send().await {
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
}

//! The GRPC connector: the `.proto` is read when the session connects, messages are built
//! from the request template's JSON, and answers come back as JSON for the response template.
//!
//! Owns loading the service (`protocolConfig.protoPath`, compiled at run time with protox, no
//! code generation; `packageName` `chat`, `serviceName` `ChatService` and `methodName`
//! `SendMessage` by default, as in Krawall), one HTTP/2 connection per session (h2, plaintext
//! or TLS by the endpoint's scheme or `useTls`, ALPN `h2`), gRPC's framing (a 5-byte prefix
//! per message), unary and server-streaming calls (each streamed message is a chunk, its
//! text at `eventPath`), the target's auth as metadata, and `grpc-status` as an error in
//! Krawall's words (`gRPC error (<code>): <message>`; UNAUTHENTICATED counts as a 401, so a
//! re-authenticating plugin can refresh its token). Field names are the `.proto`'s own (Krawall's
//! `keepCase`). Does not own sessions (`session`) nor TLS options (`tls`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

use super::auth::{auth_headers, text_pairs};
use super::template::{build_request, extract_content, extract_usage, get};
use super::tls::{self, TlsError};
use super::{
    ChunkStream, Connector, ConnectorConfig, ConnectorError, ConnectorResponse, HealthStatus,
    ResponseMetadata, StreamItem,
};

/// Largest message accepted (16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// The gRPC options in `protocolConfig`, every problem as `(field, message)`.
pub fn problems(protocol_config: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match protocol_config.get("protoPath") {
        None => out.push((
            "protocolConfig.protoPath".into(),
            "is required for GRPC (the .proto file of the service)".into(),
        )),
        Some(Value::String(path)) if !Path::new(path).is_file() => out.push((
            "protocolConfig.protoPath".into(),
            format!("'{path}' is not a readable file"),
        )),
        Some(Value::String(_)) => {}
        Some(_) => out.push(("protocolConfig.protoPath".into(), "must be a string".into())),
    }
    for key in ["packageName", "serviceName", "methodName", "eventPath"] {
        if protocol_config.get(key).is_some_and(|v| !v.is_string()) {
            out.push((format!("protocolConfig.{key}"), "must be a string".into()));
        }
    }
    if protocol_config
        .get("useTls")
        .is_some_and(|v| !v.is_boolean())
    {
        out.push((
            "protocolConfig.useTls".into(),
            "must be true or false".into(),
        ));
    }
    out
}

/// The method a target calls, read from its `.proto`.
struct Method {
    /// `/package.Service/Method`.
    path: String,
    input: MessageDescriptor,
    output: MessageDescriptor,
    server_streaming: bool,
}

fn load_method(config: &ConnectorConfig) -> Result<Method, ConnectorError> {
    let text = |key: &str, default: &str| {
        config
            .protocol_config
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    };
    let bad = |m: String| ConnectorError::Config(m);
    let proto = text("protoPath", "");
    if proto.is_empty() {
        return Err(bad("Proto file path is required for gRPC connector".into()));
    }
    let dir = Path::new(&proto)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    let files = protox::compile([&proto], [dir])
        .map_err(|e| bad(format!("cannot compile '{proto}': {e}")))?;
    let pool = DescriptorPool::from_file_descriptor_set(files)
        .map_err(|e| bad(format!("'{proto}': {e}")))?;
    let service_name = format!(
        "{}.{}",
        text("packageName", "chat"),
        text("serviceName", "ChatService")
    );
    let service = pool.get_service_by_name(&service_name).ok_or_else(|| {
        bad(format!(
            "Service {service_name} not found in proto definition"
        ))
    })?;
    let method_name = text("methodName", "SendMessage");
    let method = service
        .methods()
        .find(|m| m.name() == method_name)
        .ok_or_else(|| bad(format!("Method {method_name} not found in {service_name}")))?;
    if method.is_client_streaming() {
        return Err(bad(format!(
            "{service_name}/{method_name} streams its requests; only unary and server-streaming methods are supported"
        )));
    }
    Ok(Method {
        path: format!("/{service_name}/{method_name}"),
        input: method.input(),
        output: method.output(),
        server_streaming: method.is_server_streaming(),
    })
}

/// The GRPC connector.
pub struct GrpcConnector {
    config: ConnectorConfig,
    method: Method,
    client: h2::client::SendRequest<Bytes>,
    /// `scheme://authority`, for each request's URI.
    origin: String,
    metadata: Vec<(String, String)>,
    event_path: String,
}

impl GrpcConnector {
    /// Reads the service from its `.proto` and opens the HTTP/2 connection.
    pub async fn connect(config: ConnectorConfig) -> Result<GrpcConnector, ConnectorError> {
        let method = load_method(&config)?;
        let uri: http::Uri = config
            .endpoint
            .parse()
            .map_err(|e| ConnectorError::Config(format!("endpoint '{}': {e}", config.endpoint)))?;
        let tls = config
            .protocol_config
            .get("useTls")
            .and_then(Value::as_bool)
            .unwrap_or(uri.scheme_str() == Some("https"));
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let timeout = Duration::from_millis(config.timeout);
        let tcp = tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| ConnectorError::Timeout)?
        .map_err(|e| ConnectorError::Unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let client = if tls {
            let mut tls_config =
                (*tls::client_config(&config.tls).map_err(ConnectorError::Tls)?).clone();
            tls_config.alpn_protocols = vec![b"h2".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ConnectorError::Config(format!("'{host}': {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls_config))
                .connect(name, tcp)
                .await
                .map_err(|e| match TlsError::find(&e) {
                    Some(tls) => ConnectorError::Tls(tls),
                    None => ConnectorError::Unreachable(e.to_string()),
                })?;
            handshake(stream).await?
        } else {
            handshake(tcp).await?
        };
        let mut metadata: Vec<(String, String)> =
            auth_headers(config.auth_type, &config.auth_config)
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
        if let Some(extra) = config.protocol_config.get("headers") {
            metadata.extend(
                text_pairs(extra)
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v)),
            );
        }
        let event_path = config
            .protocol_config
            .get("eventPath")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| config.response_template.response_path.clone());
        let scheme = if tls { "https" } else { "http" };
        Ok(GrpcConnector {
            origin: format!("{scheme}://{host}:{port}"),
            config,
            method,
            client,
            metadata,
            event_path,
        })
    }

    /// Sends one request; answers with the response's body once its headers say it is not an
    /// error.
    async fn call(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<h2::RecvStream, ConnectorError> {
        let payload = build_request(&self.config.request_template, message, variables);
        let request =
            DynamicMessage::deserialize(self.method.input.clone(), payload).map_err(|e| {
                ConnectorError::Config(format!(
                    "the request template does not fit {}: {e}",
                    self.method.input.full_name()
                ))
            })?;
        let encoded = request.encode_to_vec();
        let mut frame = BytesMut::with_capacity(encoded.len() + 5);
        frame.extend_from_slice(&[0]);
        frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        frame.extend_from_slice(&encoded);
        let mut builder = http::Request::builder()
            .method("POST")
            .uri(format!("{}{}", self.origin, self.method.path))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in &self.metadata {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut request = builder
            .body(())
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        // `$headers` in a plugin's metadata replaces metadata for this call (a fresh token);
        // appended instead, the server would see the old token beside the new one.
        if let Some(extra) = variables.get("$headers").and_then(Value::as_object) {
            for (name, value) in extra {
                let name =
                    http::header::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes());
                let value = value.as_str().map(http::HeaderValue::from_str);
                match (name, value) {
                    (Ok(name), Some(Ok(value))) => {
                        request.headers_mut().insert(name, value);
                    }
                    _ => tracing::warn!("A $headers entry is not valid gRPC metadata; skipped."),
                }
            }
        }
        let timeout = Duration::from_millis(self.config.timeout);
        let send = async {
            let mut client = self.client.clone().ready().await.map_err(h2_error)?;
            let (response, mut body) = client.send_request(request, false).map_err(h2_error)?;
            body.send_data(frame.freeze(), true).map_err(h2_error)?;
            response.await.map_err(h2_error)
        };
        let response = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| ConnectorError::Timeout)??;
        let status = response.status();
        if !status.is_success() {
            return Err(ConnectorError::Status {
                status: status.as_u16(),
                message: format!("HTTP {}: the gRPC server refused the call", status.as_u16()),
            });
        }
        // A "trailers-only" answer carries its status in the headers.
        if let Some(error) = grpc_error(response.headers()) {
            return Err(error);
        }
        Ok(response.into_body())
    }
}

async fn handshake<T>(io: T) -> Result<h2::client::SendRequest<Bytes>, ConnectorError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (client, connection) = h2::client::handshake(io).await.map_err(h2_error)?;
    // The connection is driven on the session's thread; it ends when the client handles do.
    actix_web::rt::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "gRPC connection ended.");
        }
    });
    Ok(client)
}

fn h2_error(error: h2::Error) -> ConnectorError {
    if let Some(tls) = error.get_io().and_then(|io| TlsError::find(io)) {
        return ConnectorError::Tls(tls);
    }
    ConnectorError::Unreachable(error.to_string())
}

/// `grpc-status` (and `grpc-message`) as an error in Krawall's words, when not OK.
fn grpc_error(headers: &http::HeaderMap) -> Option<ConnectorError> {
    let code: u32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    if code == 0 {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(ConnectorError::Status {
        status: http_status(code),
        message: format!("gRPC error ({code}): {message}"),
    })
}

/// The HTTP status closest to a gRPC code (UNAUTHENTICATED is a 401, so a session whose
/// plugin set credentials re-authenticates, as after any 401).
fn http_status(code: u32) -> u16 {
    match code {
        3 | 9 | 11 => 400,
        16 => 401,
        7 => 403,
        5 => 404,
        6 | 10 => 409,
        8 => 429,
        12 => 501,
        14 => 503,
        4 => 504,
        _ => 500,
    }
}

/// `grpc-message` is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the messages of a gRPC response body.
struct Reader {
    body: h2::RecvStream,
    buffer: BytesMut,
    output: MessageDescriptor,
    done: bool,
}

impl Reader {
    /// The next message as JSON (field names as in the `.proto`); `None` at the end.
    async fn next(&mut self) -> Option<Result<Value, ConnectorError>> {
        loop {
            if let Some(message) = self.take_message() {
                return Some(message);
            }
            if self.done {
                return None;
            }
            match self.body.data().await {
                Some(Ok(bytes)) => {
                    let _ = self.body.flow_control().release_capacity(bytes.len());
                    self.buffer.extend_from_slice(&bytes);
                }
                Some(Err(error)) => {
                    self.done = true;
                    return Some(Err(ConnectorError::StreamBroken(error.to_string())));
                }
                None => {
                    self.done = true;
                    if !self.buffer.is_empty() {
                        return Some(Err(ConnectorError::StreamBroken(
                            "the gRPC answer ended inside a message".into(),
                        )));
                    }
                    return match self.body.trailers().await {
                        Ok(Some(trailers)) => grpc_error(&trailers).map(Err),
                        Ok(None) => None,
                        Err(error) => Some(Err(ConnectorError::StreamBroken(error.to_string()))),
                    };
                }
            }
        }
    }

    fn take_message(&mut self) -> Option<Result<Value, ConnectorError>> {
        if self.buffer.len() < 5 {
            return None;
        }
        let compressed = self.buffer[0] != 0;
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if length > MAX_MESSAGE {
            self.done = true;
            return Some(Err(ConnectorError::BadResponse(format!(
                "a gRPC message of {length} bytes is over the limit of {MAX_MESSAGE}"
            ))));
        }
        if self.buffer.len() < 5 + length {
            return None;
        }
        self.buffer.advance(5);
        let payload = self.buffer.split_to(length).freeze();
        if compressed {
            self.done = true;
            return Some(Err(ConnectorError::BadResponse(
                "the gRPC server compressed its answer; compression is not supported".into(),
            )));
        }
        let decoded = DynamicMessage::decode(self.output.clone(), payload)
            .map_err(|e| {
                ConnectorError::BadResponse(format!("a gRPC message does not decode: {e}"))
            })
            .and_then(|message| {
                let options = SerializeOptions::new().use_proto_field_name(true);
                message
                    .serialize_with_options(serde_json::value::Serializer, &options)
                    .map_err(|e| ConnectorError::BadResponse(e.to_string()))
            });
        Some(decoded)
    }
}

#[async_trait(?Send)]
impl Connector for GrpcConnector {
    fn connector_type(&self) -> &'static str {
        "GRPC"
    }

    async fn send_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ConnectorResponse, ConnectorError> {
        if self.method.server_streaming {
            return super::sse::collect(self.stream_message(message, variables).await?).await;
        }
        let started = Instant::now();
        let body = self.call(message, variables).await?;
        let mut reader = Reader {
            body,
            buffer: BytesMut::new(),
            output: self.method.output.clone(),
            done: false,
        };
        let timeout = Duration::from_millis(self.config.timeout);
        let answer = match tokio::time::timeout(timeout, reader.next()).await {
            Err(_) => return Err(ConnectorError::Timeout),
            Ok(None) => {
                return Err(ConnectorError::BadResponse(
                    "the gRPC server answered without a message".into(),
                ))
            }
            Ok(Some(answer)) => answer?,
        };
        // The status in the trailers still counts.
        if let Ok(Some(Err(error))) = tokio::time::timeout(timeout, reader.next()).await {
            return Err(error);
        }
        let content = extract_content(&self.config.response_template, &answer)
            .map_err(ConnectorError::BadResponse)?;
        Ok(ConnectorResponse {
            content,
            metadata: ResponseMetadata {
                response_time_ms: started.elapsed().as_millis() as u64,
                token_usage: extract_usage(&self.config.response_template, &answer),
                raw_response: Some(answer),
                headers: None,
                first_chunk_ms: None,
                chunks: None,
                tool_calls: None,
            },
        })
    }

    fn supports_streaming(&self) -> bool {
        self.method.server_streaming
    }

    async fn stream_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ChunkStream, ConnectorError> {
        if !self.method.server_streaming {
            return Ok(super::whole(self.send_message(message, variables).await?));
        }
        let started = Instant::now();
        let body = self.call(message, variables).await?;
        let state = Streaming {
            reader: Reader {
                body,
                buffer: BytesMut::new(),
                output: self.method.output.clone(),
                done: false,
            },
            template: self.config.response_template.clone(),
            event_path: self.event_path.clone(),
            idle: Duration::from_millis(self.config.timeout),
            started,
            first_chunk_ms: None,
            chunks: 0,
            usage: None,
            last: None,
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut state| async move { state.next().await.map(|item| (item, state)) },
        )))
    }

    async fn health_check(&self) -> HealthStatus {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), self.client.clone().ready()).await {
            Ok(Ok(_)) => HealthStatus {
                healthy: true,
                latency_ms: Some(started.elapsed().as_millis() as u64),
                error: None,
            },
            Ok(Err(error)) => HealthStatus {
                healthy: false,
                latency_ms: None,
                error: Some(format!("gRPC health check failed: {error}")),
            },
            Err(_) => HealthStatus {
                healthy: false,
                latency_ms: None,
                error: Some("gRPC health check timeout".into()),
            },
        }
    }
}

/// A server-streaming answer being read: each message is a chunk.
struct Streaming {
    reader: Reader,
    template: super::template::ResponseTemplate,
    event_path: String,
    idle: Duration,
    started: Instant,
    first_chunk_ms: Option<u64>,
    chunks: u64,
    usage: Option<Value>,
    last: Option<Value>,
    finished: bool,
}

impl Streaming {
    async fn next(&mut self) -> Option<Result<StreamItem, ConnectorError>> {
        loop {
            if self.finished {
                return None;
            }
            let Ok(read) = tokio::time::timeout(self.idle, self.reader.next()).await else {
                self.finished = true;
                return Some(Err(ConnectorError::StreamBroken(format!(
                    "no data for {} ms",
                    self.idle.as_millis()
                ))));
            };
            match read {
                None => {
                    self.finished = true;
                    return Some(Ok(StreamItem::Done(Box::new(ResponseMetadata {
                        response_time_ms: self.started.elapsed().as_millis() as u64,
                        token_usage: self.usage.take(),
                        raw_response: self.last.take(),
                        headers: None,
                        first_chunk_ms: self.first_chunk_ms,
                        chunks: Some(self.chunks),
                        tool_calls: None,
                    }))));
                }
                Some(Err(error)) => {
                    self.finished = true;
                    return Some(Err(error));
                }
                Some(Ok(message)) => {
                    if let Some(usage) = extract_usage(&self.template, &message) {
                        self.usage = Some(usage);
                    }
                    let text = get(&message, &self.event_path)
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned);
                    self.last = Some(message);
                    if let Some(text) = text {
                        self.chunks += 1;
                        self.first_chunk_ms
                            .get_or_insert(self.started.elapsed().as_millis() as u64);
                        return Some(Ok(StreamItem::Delta(text)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages_read_as_krawall_reports_them() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "16".parse().unwrap());
        headers.insert("grpc-message", "token%20expired".parse().unwrap());
        let error = grpc_error(&headers).unwrap();
        assert_eq!(error.to_string(), "gRPC error (16): token expired");
        assert_eq!(error.status(), Some(401));
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(grpc_error(&headers).is_none());
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn a_missing_proto_is_named() {
        let config: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "protoPath": "/nonexistent/chat.proto", "useTls": "yes"
        }))
        .unwrap();
        let fields: Vec<String> = problems(&config).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["protocolConfig.protoPath", "protocolConfig.useTls"]
        );
        assert_eq!(problems(&Map::new())[0].0, "protocolConfig.protoPath");
    }
}

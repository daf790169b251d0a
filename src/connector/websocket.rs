//! The WEBSOCKET connector: one connection per session, opened when the session connects.
//!
//! Owns the handshake (the target's auth as headers, `protocolConfig.headers`, sub-protocols
//! from `protocolConfig.subprotocols`, Krawall's `token`/`api_key` query parameters when
//! `protocolConfig.authInQuery` is set), keeping the connection alive with pings
//! (`pingIntervalMs`; a connection whose pong does not come back in two intervals counts as
//! dropped), reconnecting a dropped connection with exponential backoff (`maxReconnects`,
//! `reconnectDelayMs`; `noReconnect` turns it off, as in Krawall), and matching answers to
//! requests: by the id at `protocolConfig.idPath` (written into each request, read back from
//! each answer) or in order. With `protocolConfig.stream`, an answer is several frames: text at
//! `eventPath` until a frame equal to `doneMarker` or with a true `donePath`. Frames that are
//! not JSON or belong to no request are skipped, as Krawall does. A request waiting when the
//! connection drops fails with "WebSocket disconnected". Does not own sessions (`session`).
//!
//! The connection lives in a task on the session's thread; the connector talks to it through
//! channels, so a session never blocks on the socket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use actix_codec::Framed;
use async_trait::async_trait;
use awc::ws::{Codec, Frame, Message};
use awc::BoxedSocket;
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::auth::{auth_headers, text_pairs, AuthType};
use super::template::{build_request, extract_content, extract_usage, get, set};
use super::tls;
use super::{
    ChunkStream, Connector, ConnectorConfig, ConnectorError, ConnectorResponse, HealthStatus,
    ResponseMetadata, StreamItem,
};

/// Largest frame accepted (16 MiB): awc's default of 64 KiB is less than a long answer.
const MAX_FRAME: usize = 16 << 20;
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

type Socket = Framed<BoxedSocket, Codec>;

/// The WebSocket options in `protocolConfig`.
#[derive(Debug, Clone)]
struct WsOptions {
    id_path: Option<String>,
    stream: bool,
    event_path: String,
    done_marker: String,
    done_path: Option<String>,
    subprotocols: Vec<String>,
    ping_interval: Duration,
    max_reconnects: u32,
    reconnect_delay: Duration,
    auth_in_query: bool,
}

impl WsOptions {
    fn from_config(config: &ConnectorConfig) -> WsOptions {
        let p = &config.protocol_config;
        let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        let millis = |k: &str, default: u64| {
            Duration::from_millis(p.get(k).and_then(Value::as_u64).unwrap_or(default))
        };
        let no_reconnect = p
            .get("noReconnect")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        WsOptions {
            id_path: text("idPath"),
            stream: p.get("stream").and_then(Value::as_bool).unwrap_or(false),
            event_path: text("eventPath")
                .unwrap_or_else(|| config.response_template.response_path.clone()),
            done_marker: text("doneMarker").unwrap_or_else(|| "[DONE]".into()),
            done_path: text("donePath"),
            subprotocols: p
                .get("subprotocols")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            // Checked positive when the target is made; clamped so a config that slipped past
            // the checks can never make a zero-period timer.
            ping_interval: millis("pingIntervalMs", 20_000).max(Duration::from_millis(100)),
            max_reconnects: if no_reconnect {
                0
            } else {
                p.get("maxReconnects")
                    .and_then(Value::as_u64)
                    .unwrap_or(5)
                    .min(100) as u32
            },
            reconnect_delay: millis("reconnectDelayMs", 1_000),
            auth_in_query: p
                .get("authInQuery")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// Every problem with the WebSocket options, as `(field, message)`.
    pub fn problems(protocol_config: &Map<String, Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in ["idPath", "eventPath", "doneMarker", "donePath"] {
            if protocol_config.get(key).is_some_and(|v| !v.is_string()) {
                out.push((format!("protocolConfig.{key}"), "must be a string".into()));
            }
        }
        for key in ["stream", "noReconnect", "authInQuery"] {
            if protocol_config.get(key).is_some_and(|v| !v.is_boolean()) {
                out.push((
                    format!("protocolConfig.{key}"),
                    "must be true or false".into(),
                ));
            }
        }
        for key in ["pingIntervalMs", "reconnectDelayMs"] {
            if protocol_config
                .get(key)
                .is_some_and(|v| v.as_u64().is_none_or(|n| n == 0))
            {
                out.push((
                    format!("protocolConfig.{key}"),
                    "must be a positive whole number".into(),
                ));
            }
        }
        if protocol_config
            .get("maxReconnects")
            .is_some_and(|v| v.as_u64().is_none_or(|n| n > 100))
        {
            out.push((
                "protocolConfig.maxReconnects".into(),
                "must be a whole number from 0 to 100".into(),
            ));
        }
        if protocol_config
            .get("subprotocols")
            .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
        {
            out.push((
                "protocolConfig.subprotocols".into(),
                "must be a list of strings".into(),
            ));
        }
        out
    }
}

/// The options' problems, for target validation.
pub fn problems(protocol_config: &Map<String, Value>) -> Vec<(String, String)> {
    WsOptions::problems(protocol_config)
}

/// One answer being waited for: its text so far, and where the pieces go.
struct Waiting {
    id: Option<String>,
    started: Instant,
    first_chunk_ms: Option<u64>,
    chunks: u64,
    content: String,
    usage: Option<Value>,
    last_raw: Option<Value>,
    items: mpsc::UnboundedSender<Result<StreamItem, ConnectorError>>,
}

/// What the connector asks of its connection task.
enum Command {
    Send {
        text: String,
        id: Option<String>,
        items: mpsc::UnboundedSender<Result<StreamItem, ConnectorError>>,
    },
    Ping(oneshot::Sender<Result<(), String>>),
    Close,
}

/// The WEBSOCKET connector.
pub struct WsConnector {
    config: ConnectorConfig,
    options: WsOptions,
    commands: mpsc::UnboundedSender<Command>,
}

impl WsConnector {
    /// Opens the connection (the handshake is awaited, so a refused or unreachable endpoint
    /// fails the session's opening) and starts its task.
    pub async fn connect(config: ConnectorConfig) -> Result<WsConnector, ConnectorError> {
        let options = WsOptions::from_config(&config);
        let socket = handshake(&config, &options).await?;
        let (commands, inbox) = mpsc::unbounded_channel();
        let task = Connection {
            config: config.clone(),
            options: options.clone(),
            waiting: VecDeque::new(),
            pings: Vec::new(),
            last_pong: Instant::now(),
        };
        actix_web::rt::spawn(task.run(socket, inbox));
        Ok(WsConnector {
            config,
            options,
            commands,
        })
    }

    fn send(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ChunkStream, ConnectorError> {
        let mut payload = build_request(&self.config.request_template, message, variables);
        let id = self.options.id_path.as_ref().map(|path| {
            let id = crate::util::random_id();
            set(&mut payload, path, Value::String(id.clone()));
            id
        });
        let (items, answers) = mpsc::unbounded_channel();
        self.commands
            .send(Command::Send {
                text: payload.to_string(),
                id,
                items,
            })
            .map_err(|_| ConnectorError::Disconnected("WebSocket is not connected".into()))?;
        let timeout = Duration::from_millis(self.config.timeout);
        // Each piece must come within the target's timeout (Krawall: "WebSocket message
        // timeout").
        Ok(Box::pin(futures::stream::unfold(
            (answers, false, 0u64),
            move |(mut answers, done, pieces)| async move {
                if done {
                    return None;
                }
                let item = match tokio::time::timeout(timeout, answers.recv()).await {
                    Ok(Some(item)) => item,
                    Ok(None) => Err(ConnectorError::Disconnected(
                        "WebSocket disconnected".into(),
                    )),
                    Err(_) => Err(ConnectorError::Timeout),
                };
                // A failure after the answer began says how far it got (the pipeline adds the
                // count to a broken stream).
                let item = match item {
                    Err(error) if pieces > 0 => {
                        Err(ConnectorError::StreamBroken(error.to_string()))
                    }
                    other => other,
                };
                let last = !matches!(item, Ok(StreamItem::Delta(_)));
                Some((item, (answers, last, pieces + 1)))
            },
        )))
    }
}

#[async_trait(?Send)]
impl Connector for WsConnector {
    fn connector_type(&self) -> &'static str {
        "WEBSOCKET"
    }

    async fn send_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ConnectorResponse, ConnectorError> {
        super::sse::collect(self.send(message, variables)?).await
    }

    fn supports_streaming(&self) -> bool {
        self.options.stream
    }

    async fn stream_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ChunkStream, ConnectorError> {
        self.send(message, variables)
    }

    async fn health_check(&self) -> HealthStatus {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Ping(tx)).is_err() {
            return unhealthy("WebSocket is not connected", None);
        }
        let latency = || Some(started.elapsed().as_millis() as u64);
        match tokio::time::timeout(HEALTH_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => HealthStatus {
                healthy: true,
                latency_ms: latency(),
                error: None,
            },
            Ok(Ok(Err(error))) => unhealthy(&error, latency()),
            Ok(Err(_)) => unhealthy("WebSocket is not connected", latency()),
            Err(_) => unhealthy("WebSocket ping timeout", latency()),
        }
    }

    async fn disconnect(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

impl Drop for WsConnector {
    fn drop(&mut self) {
        // A connector replaced after a re-authentication closes its connection.
        let _ = self.commands.send(Command::Close);
    }
}

fn unhealthy(error: &str, latency_ms: Option<u64>) -> HealthStatus {
    HealthStatus {
        healthy: false,
        latency_ms,
        error: Some(error.to_string()),
    }
}

/// The URL to connect to: the endpoint, with Krawall's query credentials when asked for.
fn url(config: &ConnectorConfig, options: &WsOptions) -> String {
    let mut url = config.endpoint.clone();
    if options.auth_in_query {
        let text = |k: &str| {
            config
                .auth_config
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let param = match config.auth_type {
            AuthType::BearerToken => text("token").map(|t| ("token", t)),
            AuthType::ApiKey => text("apiKey").map(|k| ("api_key", k)),
            _ => None,
        };
        if let Some((name, value)) = param {
            let encoded: String = form_urlencoded(&value);
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{name}={encoded}"));
        }
    }
    url
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass as they are).
fn form_urlencoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

async fn handshake(
    config: &ConnectorConfig,
    options: &WsOptions,
) -> Result<Socket, ConnectorError> {
    let client = tls::http_client(&config.tls).map_err(ConnectorError::Tls)?;
    let mut request = client.ws(url(config, options)).max_frame_size(MAX_FRAME);
    if !options.subprotocols.is_empty() {
        request = request.protocols(&options.subprotocols);
    }
    let mut headers = auth_headers(config.auth_type, &config.auth_config);
    if let Some(extra) = config.protocol_config.get("headers") {
        headers.extend(text_pairs(extra));
    }
    for (name, value) in headers {
        request = request.set_header(name.as_str(), value.as_str());
    }
    let limit = Duration::from_millis(config.timeout);
    match tokio::time::timeout(limit, request.connect()).await {
        Err(_) => Err(ConnectorError::Disconnected(
            "WebSocket connection timeout".into(),
        )),
        Ok(Ok((_, socket))) => Ok(socket),
        Ok(Err(awc::error::WsClientError::SendRequest(error))) => {
            Err(super::http::send_error(error))
        }
        Ok(Err(awc::error::WsClientError::InvalidResponseStatus(status))) => {
            Err(ConnectorError::Status {
                status: status.as_u16(),
                message: format!(
                    "the WebSocket handshake was refused: HTTP {}",
                    status.as_u16()
                ),
            })
        }
        Ok(Err(other)) => Err(ConnectorError::BadResponse(format!(
            "the WebSocket handshake failed: {other}"
        ))),
    }
}

/// The task that owns one session's WebSocket.
struct Connection {
    config: ConnectorConfig,
    options: WsOptions,
    /// Answers being waited for, oldest first.
    waiting: VecDeque<Waiting>,
    pings: Vec<oneshot::Sender<Result<(), String>>>,
    last_pong: Instant,
}

/// Why the read loop stopped.
enum Ended {
    /// The connector asked (session closed) or is gone.
    Closed,
    /// The connection dropped.
    Dropped(String),
}

impl Connection {
    async fn run(mut self, mut socket: Socket, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut reconnects = 0;
        loop {
            match self.serve(&mut socket, &mut inbox).await {
                Ended::Closed => {
                    let _ = socket.close().await;
                    return;
                }
                Ended::Dropped(why) => {
                    tracing::info!(endpoint = %crate::util::loggable_url(&self.config.endpoint), reason = %why, "WebSocket dropped.");
                    self.fail_waiting("WebSocket disconnected");
                }
            }
            // Reconnect with exponential backoff. Requests arriving meanwhile fail at once (no
            // connection to send them on); a close ends the task.
            loop {
                if reconnects >= self.options.max_reconnects {
                    tracing::warn!(endpoint = %crate::util::loggable_url(&self.config.endpoint), "WebSocket gave up reconnecting.");
                    // Every later request fails at once: the channel closes with the task.
                    return;
                }
                reconnects += 1;
                let delay = self
                    .options
                    .reconnect_delay
                    .saturating_mul(2u32.saturating_pow(reconnects - 1))
                    .min(Duration::from_secs(60));
                if self.wait_out(delay, &mut inbox).await.is_err() {
                    return;
                }
                match handshake(&self.config, &self.options).await {
                    Ok(fresh) => {
                        tracing::info!(endpoint = %crate::util::loggable_url(&self.config.endpoint), attempt = reconnects, "WebSocket reconnected.");
                        socket = fresh;
                        self.last_pong = Instant::now();
                        reconnects = 0;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(endpoint = %crate::util::loggable_url(&self.config.endpoint), attempt = reconnects, %error, "WebSocket reconnection failed.");
                    }
                }
            }
        }
    }

    /// Serves one connection until it drops or is closed.
    async fn serve(
        &mut self,
        socket: &mut Socket,
        inbox: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Ended {
        let mut keepalive = tokio::time::interval(self.options.ping_interval);
        keepalive.tick().await;
        loop {
            tokio::select! {
                command = inbox.recv() => match command {
                    None | Some(Command::Close) => return Ended::Closed,
                    Some(Command::Send { text, id, items }) => {
                        if let Err(error) = socket.send(Message::Text(text.into())).await {
                            let _ = items.send(Err(ConnectorError::Disconnected(format!("WebSocket send failed: {error}"))));
                            return Ended::Dropped(error.to_string());
                        }
                        self.waiting.push_back(Waiting {
                            id,
                            started: Instant::now(),
                            first_chunk_ms: None,
                            chunks: 0,
                            content: String::new(),
                            usage: None,
                            last_raw: None,
                            items,
                        });
                    }
                    Some(Command::Ping(reply)) => {
                        if let Err(error) = socket.send(Message::Ping(Default::default())).await {
                            let _ = reply.send(Err(error.to_string()));
                            return Ended::Dropped(error.to_string());
                        }
                        self.pings.push(reply);
                    }
                },
                frame = socket.next() => match frame {
                    None => return Ended::Dropped("the server closed the connection".into()),
                    Some(Err(error)) => return Ended::Dropped(error.to_string()),
                    Some(Ok(Frame::Close(reason))) => {
                        let why = reason.map(|r| format!("closed by the server ({:?})", r.code)).unwrap_or_else(|| "closed by the server".into());
                        return Ended::Dropped(why);
                    }
                    Some(Ok(Frame::Ping(data))) => {
                        if socket.send(Message::Pong(data)).await.is_err() {
                            return Ended::Dropped("could not answer a ping".into());
                        }
                    }
                    Some(Ok(Frame::Pong(_))) => {
                        self.last_pong = Instant::now();
                        for reply in self.pings.drain(..) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(Ok(Frame::Text(bytes) | Frame::Binary(bytes))) => self.received(&bytes),
                    Some(Ok(Frame::Continuation(_))) => {}
                },
                _ = keepalive.tick() => {
                    if self.last_pong.elapsed() > self.options.ping_interval * 2 {
                        return Ended::Dropped("no pong for two ping intervals".into());
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        return Ended::Dropped("could not send a ping".into());
                    }
                }
            }
        }
    }

    /// Waits `delay` between reconnections, failing requests that arrive meanwhile; `Err`
    /// when the connector closed.
    async fn wait_out(
        &mut self,
        delay: Duration,
        inbox: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), ()> {
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => return Ok(()),
                command = inbox.recv() => match command {
                    None | Some(Command::Close) => return Err(()),
                    Some(Command::Send { items, .. }) => {
                        let gone = ConnectorError::Disconnected("WebSocket is not connected".into());
                        let _ = items.send(Err(gone));
                    }
                    Some(Command::Ping(reply)) => {
                        let _ = reply.send(Err("WebSocket is not connected".into()));
                    }
                },
            }
        }
    }

    /// One frame from the server: the answer (or a piece of it) to the request it matches.
    fn received(&mut self, bytes: &[u8]) {
        // Requests whose caller gave up (timed out, or its client left) wait for nothing: in
        // order mode they would take the next request's answer.
        self.waiting.retain(|w| !w.items.is_closed());
        let text = String::from_utf8_lossy(bytes);
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let at = match (&self.options.id_path, &json) {
            (Some(path), Some(json)) => {
                let id = get(json, path).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
                id.and_then(|id| {
                    self.waiting
                        .iter()
                        .position(|w| w.id.as_deref() == Some(&id))
                })
            }
            _ => (!self.waiting.is_empty()).then_some(0),
        };
        let Some(at) = at else {
            // Protocol frames (handshakes, keep-alives) and strays: skipped, as Krawall does.
            tracing::debug!(frame = %text.chars().take(100).collect::<String>(), "Skipping a WebSocket frame that answers no request.");
            return;
        };
        if !self.options.stream {
            let waiting = self.waiting.remove(at).expect("position found above");
            let answer = match &json {
                Some(json) => extract_content(&self.config.response_template, json)
                    .map_err(ConnectorError::BadResponse)
                    .map(|content| (content, extract_usage(&self.config.response_template, json))),
                None => Ok((text.into_owned(), None)),
            };
            match answer {
                Ok((content, usage)) => {
                    let metadata = ResponseMetadata {
                        response_time_ms: waiting.started.elapsed().as_millis() as u64,
                        token_usage: usage,
                        raw_response: json,
                        headers: None,
                        first_chunk_ms: None,
                        chunks: None,
                        tool_calls: None,
                    };
                    let _ = waiting.items.send(Ok(StreamItem::Delta(content)));
                    let _ = waiting.items.send(Ok(StreamItem::Done(Box::new(metadata))));
                }
                Err(error) => {
                    let _ = waiting.items.send(Err(error));
                }
            }
            return;
        }
        // Streamed: a piece, or the end of the answer.
        let done = text.trim() == self.options.done_marker
            || match (&self.options.done_path, &json) {
                (Some(path), Some(json)) => {
                    get(json, path).is_some_and(|v| v == &Value::Bool(true))
                }
                _ => false,
            };
        let waiting = &mut self.waiting[at];
        if let Some(json) = &json {
            if let Some(usage) = extract_usage(&self.config.response_template, json) {
                waiting.usage = Some(usage);
            }
        }
        let piece = match &json {
            Some(json) => get(json, &self.options.event_path)
                .and_then(Value::as_str)
                .map(str::to_owned),
            None if !done => Some(text.into_owned()),
            None => None,
        };
        if let Some(piece) = piece.filter(|p| !p.is_empty()) {
            waiting.chunks += 1;
            waiting
                .first_chunk_ms
                .get_or_insert(waiting.started.elapsed().as_millis() as u64);
            waiting.content.push_str(&piece);
            let _ = waiting.items.send(Ok(StreamItem::Delta(piece)));
        }
        if json.is_some() {
            waiting.last_raw = json;
        }
        if done {
            let waiting = self.waiting.remove(at).expect("index in range");
            let metadata = ResponseMetadata {
                response_time_ms: waiting.started.elapsed().as_millis() as u64,
                token_usage: waiting.usage,
                raw_response: waiting.last_raw,
                headers: None,
                first_chunk_ms: waiting.first_chunk_ms,
                chunks: Some(waiting.chunks),
                tool_calls: None,
            };
            let _ = waiting.items.send(Ok(StreamItem::Done(Box::new(metadata))));
        }
    }

    fn fail_waiting(&mut self, why: &str) {
        for waiting in self.waiting.drain(..) {
            let error = if waiting.chunks > 0 {
                ConnectorError::StreamBroken(why.to_string())
            } else {
                ConnectorError::Disconnected(why.to_string())
            };
            let _ = waiting.items.send(Err(error));
        }
        for reply in self.pings.drain(..) {
            let _ = reply.send(Err(why.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_credentials_are_encoded() {
        assert_eq!(form_urlencoded("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(form_urlencoded("tok-1_~."), "tok-1_~.");
    }

    #[test]
    fn options_are_checked_and_read() {
        let config: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "idPath": 3, "stream": "yes", "pingIntervalMs": 0, "subprotocols": ["a", 1]
        }))
        .unwrap();
        let fields: Vec<String> = WsOptions::problems(&config)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "protocolConfig.idPath",
                "protocolConfig.stream",
                "protocolConfig.pingIntervalMs",
                "protocolConfig.subprotocols"
            ]
        );
    }
}

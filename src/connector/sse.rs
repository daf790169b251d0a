//! The SSE connector, and reading any streamed answer (SSE or newline-delimited JSON) into
//! chunks.
//!
//! Owns what an event means for the answer: the text at the per-event extraction path
//! (`protocolConfig.eventPath`, else the response template's `responsePath`), the end of the
//! answer (a `[DONE]` data line, a named done event such as Anthropic's `message_stop`, a true
//! `donePath`, or — with `endOnClose`, the default for newline-delimited JSON — the end of the
//! body; an event stream that just stops was cut off), usage at `tokenUsagePath` (the last one seen), an `error` event or
//! `error` field as a broken stream, and reconnecting per the standard: when a stream with
//! event ids breaks, it is requested again with `Last-Event-ID` after the server's `retry:`
//! time. Framing is `event_stream`'s; the request is `http::Endpoint`'s. Does not own what
//! the session does with the chunks (`session`).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde_json::{Map, Value};

use super::event_stream::{SseEvent, SseParser};
use super::http::{content_type, header_map, payload_error, Endpoint};
use super::template::{extract_error, get};
use super::{
    ChunkStream, Connector, ConnectorConfig, ConnectorError, ConnectorResponse, HealthStatus,
    ResponseMetadata, StreamItem,
};

/// Reconnections of one answer, at most (`protocolConfig.maxReconnects`).
const DEFAULT_MAX_RECONNECTS: u32 = 3;
/// Longest line of newline-delimited JSON accepted (1 MiB).
const MAX_LINE: usize = 1 << 20;
/// Wait before reconnecting when the server gave no `retry:` (milliseconds).
const DEFAULT_RETRY_MS: u64 = 1_000;

/// How to read a streamed answer: which events carry text, where, and when it is done.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Path of the text in each event's JSON data (`choices[0].delta.content`).
    pub path: String,
    /// A data line that ends the answer.
    pub done_marker: String,
    /// An event type that ends the answer (`message_stop`).
    pub done_event: Option<String>,
    /// A path in an event's JSON that is `true` in the last one (Ollama's `done`).
    pub done_path: Option<String>,
    /// Whether the upstream closing the stream ends the answer. `None`: only for
    /// newline-delimited JSON; an event stream must end with its marker, or it was cut off.
    pub end_on_close: Option<bool>,
    /// Only these event types carry text (all when `None`).
    pub events: Option<Vec<String>>,
    pub usage_path: Option<String>,
    pub template: super::template::ResponseTemplate,
    pub max_reconnects: u32,
    /// Longest wait for the next piece of the stream (the target's timeout).
    pub idle: Duration,
    /// The response's headers, for the final metadata.
    headers: Option<Map<String, Value>>,
}

impl StreamSpec {
    pub fn from_config(config: &ConnectorConfig) -> StreamSpec {
        let text = |key: &str| {
            config
                .protocol_config
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        StreamSpec {
            path: text("eventPath")
                .unwrap_or_else(|| config.response_template.response_path.clone()),
            done_marker: text("doneMarker").unwrap_or_else(|| "[DONE]".into()),
            done_event: text("doneEvent"),
            done_path: text("donePath"),
            end_on_close: config
                .protocol_config
                .get("endOnClose")
                .and_then(Value::as_bool),
            events: config
                .protocol_config
                .get("events")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
            usage_path: config.response_template.token_usage_path.clone(),
            template: config.response_template.clone(),
            max_reconnects: config
                .protocol_config
                .get("maxReconnects")
                .and_then(Value::as_u64)
                .map(|n| n as u32)
                .unwrap_or(DEFAULT_MAX_RECONNECTS),
            idle: Duration::from_millis(config.timeout),
            headers: None,
        }
    }

    /// Every problem with the stream options in `protocolConfig`, as `(field, message)`.
    pub fn problems(protocol_config: &Map<String, Value>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in ["eventPath", "doneMarker", "doneEvent", "donePath"] {
            if let Some(v) = protocol_config.get(key) {
                if !v.is_string() {
                    out.push((format!("protocolConfig.{key}"), "must be a string".into()));
                }
            }
        }
        if let Some(v) = protocol_config.get("events") {
            if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                out.push((
                    "protocolConfig.events".into(),
                    "must be a list of event type names".into(),
                ));
            }
        }
        for key in ["stream", "endOnClose"] {
            if protocol_config.get(key).is_some_and(|v| !v.is_boolean()) {
                out.push((
                    format!("protocolConfig.{key}"),
                    "must be true or false".into(),
                ));
            }
        }
        if let Some(v) = protocol_config.get("maxReconnects") {
            if v.as_u64().is_none_or(|n| n > 100) {
                out.push((
                    "protocolConfig.maxReconnects".into(),
                    "must be a whole number from 0 to 100".into(),
                ));
            }
        }
        out
    }

    pub(super) fn with_headers(mut self, response: &awc::ClientResponse) -> StreamSpec {
        self.headers = Some(header_map(response));
        self
    }
}

/// Requests the stream again from `Last-Event-ID`.
pub(super) type Reconnect =
    Rc<dyn Fn(String) -> LocalBoxFuture<'static, Result<awc::ClientResponse, ConnectorError>>>;

/// Reads one streamed answer.
struct Reader {
    response: awc::ClientResponse,
    parser: SseParser,
    /// Newline-delimited JSON instead of SSE: each line is one event's data.
    lines: bool,
    line: Vec<u8>,
    pending: VecDeque<SseEvent>,
    spec: StreamSpec,
    started: Instant,
    first_chunk_ms: Option<u64>,
    chunks: u64,
    usage: Option<Value>,
    last_raw: Option<Value>,
    finished: bool,
    /// The last event said it was the last (`donePath`): the answer ends after its text.
    ending: bool,
    reconnect: Option<Reconnect>,
    reconnects: u32,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<StreamItem, ConnectorError>> {
        loop {
            if self.finished {
                return None;
            }
            if self.ending {
                self.finished = true;
                return Some(Ok(self.done()));
            }
            if let Some(event) = self.pending.pop_front() {
                match self.interpret(event) {
                    Some(item) => return Some(item),
                    None => continue,
                }
            }
            let Ok(read) = tokio::time::timeout(self.spec.idle, self.response.next()).await else {
                self.finished = true;
                return Some(Err(ConnectorError::StreamBroken(format!(
                    "no data for {} ms",
                    self.spec.idle.as_millis()
                ))));
            };
            match read {
                Some(Ok(bytes)) => {
                    if let Err(error) = self.feed(&bytes) {
                        self.finished = true;
                        return Some(Err(error));
                    }
                }
                Some(Err(error)) => {
                    let why = payload_error(error).to_string();
                    match self.resume_or_fail(&why).await {
                        None => continue,
                        Some(last) => return last,
                    }
                }
                None => {
                    // A last unterminated line of newline-delimited JSON still counts.
                    if self.lines && !self.line.is_empty() {
                        let data =
                            String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                        self.pending.push_back(line_event(data));
                        continue;
                    }
                    self.parser.finish();
                    // HTTP/1.1 cannot always tell a cut-off body from a finished one, so an
                    // event stream must say it is done; one that just stops was cut off.
                    if self.spec.end_on_close.unwrap_or(self.lines) {
                        self.finished = true;
                        return Some(Ok(self.done()));
                    }
                    match self
                        .resume_or_fail("the stream ended before its end marker")
                        .await
                    {
                        None => continue,
                        Some(last) => return last,
                    }
                }
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), ConnectorError> {
        if !self.lines {
            let events = self
                .parser
                .feed(bytes)
                .map_err(|e| ConnectorError::BadResponse(e.to_string()))?;
            self.pending.extend(events);
            return Ok(());
        }
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                let data = String::from_utf8_lossy(&line).trim().to_string();
                if !data.is_empty() {
                    self.pending.push_back(line_event(data));
                }
            } else if self.line.len() >= MAX_LINE {
                return Err(ConnectorError::BadResponse(format!(
                    "a newline-delimited JSON line is longer than {MAX_LINE} bytes"
                )));
            } else {
                self.line.push(b);
            }
        }
        Ok(())
    }

    /// The stream broke (`why`): resumed (`None`, read on), or the stream's last item.
    async fn resume_or_fail(
        &mut self,
        why: &str,
    ) -> Option<Option<Result<StreamItem, ConnectorError>>> {
        let failed = match self.resume().await {
            Ok(true) => return None,
            Ok(false) => ConnectorError::StreamBroken(why.to_string()),
            Err(again) => {
                ConnectorError::StreamBroken(format!("{why}; reconnecting failed: {again}"))
            }
        };
        self.finished = true;
        Some(Some(Err(failed)))
    }

    /// After a broken read: asks again from the last event id, when the stream gave one and
    /// reconnections are left. `Ok(false)`: the answer cannot be resumed.
    async fn resume(&mut self) -> Result<bool, ConnectorError> {
        let (Some(reconnect), Some(id)) = (&self.reconnect, self.parser.last_event_id()) else {
            return Ok(false);
        };
        if self.reconnects >= self.spec.max_reconnects {
            return Ok(false);
        }
        self.reconnects += 1;
        let id = id.to_string();
        tracing::info!(last_event_id = %id, attempt = self.reconnects, "The event stream broke; reconnecting.");
        // The server's `retry:`, but never longer than the wait for data allows.
        let wait = self
            .parser
            .reconnection_ms()
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_millis(DEFAULT_RETRY_MS))
            .min(self.spec.idle);
        tokio::time::sleep(wait).await;
        self.response = reconnect(id.clone()).await?;
        // The new stream starts afresh, but the last id carries over (the standard).
        self.parser = SseParser::new();
        self.parser.feed(format!("id: {id}\n").as_bytes()).ok();
        Ok(true)
    }

    fn interpret(&mut self, event: SseEvent) -> Option<Result<StreamItem, ConnectorError>> {
        if event.data.trim() == self.spec.done_marker
            || self.spec.done_event.as_deref() == Some(event.kind())
        {
            self.finished = true;
            return Some(Ok(self.done()));
        }
        let json = serde_json::from_str::<Value>(&event.data).ok();
        if event.kind() == "error" || json.as_ref().is_some_and(|j| !j["error"].is_null()) {
            let message = json
                .as_ref()
                .and_then(|j| extract_error(&self.spec.template, j))
                .or_else(|| {
                    json.as_ref()
                        .and_then(|j| j["error"]["message"].as_str().map(str::to_owned))
                })
                .unwrap_or_else(|| event.data.clone());
            self.finished = true;
            return Some(Err(ConnectorError::StreamBroken(format!(
                "the upstream sent an error: {message}"
            ))));
        }
        if let Some(only) = &self.spec.events {
            if !only.iter().any(|e| e == event.kind()) {
                return None;
            }
        }
        let text = match json {
            Some(json) => {
                if let Some(usage) = self
                    .spec
                    .usage_path
                    .as_deref()
                    .and_then(|p| get(&json, p))
                    .filter(|u| !u.is_null())
                {
                    self.usage = Some(usage.clone());
                }
                let text = get(&json, &self.spec.path)
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(path) = &self.spec.done_path {
                    self.ending = get(&json, path) == Some(&Value::Bool(true));
                }
                self.last_raw = Some(json);
                text
            }
            // Plain-text events carry their text as it is.
            None => Some(event.data),
        };
        let text = text.filter(|t| !t.is_empty())?;
        self.chunks += 1;
        if self.first_chunk_ms.is_none() {
            self.first_chunk_ms = Some(self.started.elapsed().as_millis() as u64);
        }
        Some(Ok(StreamItem::Delta(text)))
    }

    fn done(&mut self) -> StreamItem {
        StreamItem::Done(Box::new(ResponseMetadata {
            response_time_ms: self.started.elapsed().as_millis() as u64,
            token_usage: self.usage.take(),
            raw_response: self.last_raw.take(),
            headers: self.spec.headers.take(),
            first_chunk_ms: self.first_chunk_ms,
            chunks: Some(self.chunks),
            tool_calls: None,
        }))
    }
}

fn line_event(data: String) -> SseEvent {
    SseEvent {
        event: None,
        data,
        id: None,
        retry: None,
    }
}

/// Reads `response` (SSE, or newline-delimited JSON when `lines`) into a chunk stream.
pub(super) fn read_stream(
    response: awc::ClientResponse,
    spec: StreamSpec,
    started: Instant,
    lines: bool,
    reconnect: Option<Reconnect>,
) -> ChunkStream {
    let reader = Reader {
        response,
        parser: SseParser::new(),
        lines,
        line: Vec::new(),
        pending: VecDeque::new(),
        spec,
        started,
        first_chunk_ms: None,
        chunks: 0,
        usage: None,
        last_raw: None,
        finished: false,
        ending: false,
        reconnect,
        reconnects: 0,
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        reader.next().await.map(|item| (item, reader))
    }))
}

/// Assembles a whole answer from a stream (for callers that do not stream).
pub async fn collect(mut stream: ChunkStream) -> Result<ConnectorResponse, ConnectorError> {
    let mut content = String::new();
    while let Some(item) = stream.next().await {
        match item? {
            StreamItem::Delta(text) => content.push_str(&text),
            StreamItem::Done(metadata) => {
                return Ok(ConnectorResponse {
                    content,
                    metadata: *metadata,
                })
            }
        }
    }
    Err(ConnectorError::StreamBroken(
        "the stream ended without its last item".into(),
    ))
}

/// The SSE connector: the message goes out as a request (POST by default, or GET with the
/// payload as query parameters) and the answer comes back as an event stream.
pub struct SseConnector {
    endpoint: Rc<Endpoint>,
    spec: StreamSpec,
}

impl SseConnector {
    pub fn new(config: ConnectorConfig) -> Result<Self, ConnectorError> {
        let spec = StreamSpec::from_config(&config);
        Ok(SseConnector {
            endpoint: Rc::new(Endpoint::new(config, "POST")?),
            spec,
        })
    }
}

#[async_trait(?Send)]
impl Connector for SseConnector {
    fn connector_type(&self) -> &'static str {
        "SSE"
    }

    async fn send_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ConnectorResponse, ConnectorError> {
        collect(self.stream_message(message, variables).await?).await
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    async fn stream_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ChunkStream, ConnectorError> {
        let started = Instant::now();
        let timeout = self.endpoint.timeout();
        let accept = ("Accept", "text/event-stream".to_string());
        let response = self
            .endpoint
            .send(message, variables, timeout, std::slice::from_ref(&accept))
            .await?;
        let kind = content_type(&response);
        if !kind.starts_with("text/event-stream") {
            return Err(ConnectorError::BadResponse(format!(
                "expected an event stream (text/event-stream), got '{kind}'"
            )));
        }
        let spec = self.spec.clone().with_headers(&response);
        // A resumed stream repeats the same request with `Last-Event-ID`.
        let (endpoint, message, variables) = (
            self.endpoint.clone(),
            message.to_string(),
            variables.clone(),
        );
        let reconnect: Reconnect = Rc::new(move |last_id: String| {
            let (endpoint, message, variables) =
                (endpoint.clone(), message.clone(), variables.clone());
            Box::pin(async move {
                let headers = [
                    ("Accept", "text/event-stream".to_string()),
                    ("Last-Event-ID", last_id),
                ];
                let timeout = endpoint.timeout();
                endpoint.send(&message, &variables, timeout, &headers).await
            })
        });
        Ok(read_stream(response, spec, started, false, Some(reconnect)))
    }

    async fn health_check(&self) -> HealthStatus {
        self.endpoint.health_check().await
    }
}

//! Inference clients: what `ctx.resolveClient(config)` returns and agents call.
//!
//! Owns the provider table (OpenAI-compatible chat completions and Anthropic messages), the
//! client cache keyed by `provider:modelId:endpoint`, and the resilient call: 2 retries with
//! jittered exponential backoff for 429/5xx/network errors only, a circuit breaker per provider
//! (`breaker`), and an optional fallback client used while the breaker is open or when the
//! primary has failed for good. A call may be streamed ([`Client::chat_stream`]): text deltas
//! are handed over as they arrive (`stream` reads both providers' events), retries and the
//! fallback only apply while nothing was handed over yet. Does not own conversations or tool
//! loops (`turn`).

pub mod breaker;
pub mod stream;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::broker::events::Usage;
use breaker::{Breaker, BreakerPolicy, BreakerState};

/// Largest answer read from a provider (16 MiB).
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

/// A provider Open Astra names, with its defaults.
#[derive(Debug, Clone, Copy)]
pub struct Provider {
    pub name: &'static str,
    pub protocol: Protocol,
    pub endpoint: &'static str,
    /// Environment variable holding the API key (none for local servers).
    pub key_env: Option<&'static str>,
}

/// Open Astra's providers that speak one of our two protocols. `claude` is Anthropic's alias.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        name: "openai",
        protocol: Protocol::OpenAi,
        endpoint: "https://api.openai.com/v1",
        key_env: Some("OPENAI_API_KEY"),
    },
    Provider {
        name: "anthropic",
        protocol: Protocol::Anthropic,
        endpoint: "https://api.anthropic.com/v1",
        key_env: Some("ANTHROPIC_API_KEY"),
    },
    Provider {
        name: "claude",
        protocol: Protocol::Anthropic,
        endpoint: "https://api.anthropic.com/v1",
        key_env: Some("ANTHROPIC_API_KEY"),
    },
    Provider {
        name: "groq",
        protocol: Protocol::OpenAi,
        endpoint: "https://api.groq.com/openai/v1",
        key_env: Some("GROQ_API_KEY"),
    },
    Provider {
        name: "mistral",
        protocol: Protocol::OpenAi,
        endpoint: "https://api.mistral.ai/v1",
        key_env: Some("MISTRAL_API_KEY"),
    },
    Provider {
        name: "openrouter",
        protocol: Protocol::OpenAi,
        endpoint: "https://openrouter.ai/api/v1",
        key_env: Some("OPENROUTER_API_KEY"),
    },
    Provider {
        name: "grok",
        protocol: Protocol::OpenAi,
        endpoint: "https://api.x.ai/v1",
        key_env: Some("XAI_API_KEY"),
    },
    Provider {
        name: "gemini",
        protocol: Protocol::OpenAi,
        endpoint: "https://generativelanguage.googleapis.com/v1beta/openai",
        key_env: Some("GEMINI_API_KEY"),
    },
    Provider {
        name: "ollama",
        protocol: Protocol::OpenAi,
        endpoint: "http://127.0.0.1:11434/v1",
        key_env: None,
    },
    Provider {
        name: "vllm",
        protocol: Protocol::OpenAi,
        endpoint: "http://127.0.0.1:8000/v1",
        key_env: None,
    },
];

/// The provider called `name`, or why there is none.
pub fn provider(name: &str) -> Result<&'static Provider, String> {
    PROVIDERS.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        format!("unknown provider '{name}'; known: {}", known.join(", "))
    })
}

/// What a plugin or an agent asks for (`resolveClient(config)`, an agent's `model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    pub provider: String,
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_context_tokens: Option<u32>,
    /// Used while this client's breaker is open, or when it failed after its retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Box<ClientConfig>>,
}

impl ClientConfig {
    /// The cache key: `provider:modelId:endpoint` (plus the fallback's, if any).
    pub fn key(&self) -> String {
        let mut key = format!(
            "{}:{}:{}",
            self.provider,
            self.model_id,
            self.endpoint.as_deref().unwrap_or("")
        );
        if let Some(f) = &self.fallback {
            key.push('>');
            key.push_str(&f.key());
        }
        key
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn text(role: Role, content: &str) -> Self {
        ChatMessage {
            role,
            content: content.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatResponse {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub model: String,
    /// The provider that answered (the fallback's, when it was used).
    pub provider: String,
}

/// Why a model call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    #[error("{provider} answered HTTP {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach {provider}: {message}")]
    Network { provider: String, message: String },
    #[error("{provider} sent an answer that cannot be read: {message}")]
    Decode { provider: String, message: String },
    #[error("the circuit breaker of {provider} is open after repeated failures; retry in {retry_in_ms} ms")]
    CircuitOpen { provider: String, retry_in_ms: u64 },
    #[error("invalid client config: {0}")]
    Config(String),
    /// The TLS handshake with the provider failed (not retried: it fails the same way again).
    #[error("{provider}: {error}")]
    Tls {
        provider: String,
        error: crate::connector::tls::TlsError,
    },
}

impl InferenceError {
    /// 429, 500, 502, 503, 504 and network errors are worth retrying; nothing else is.
    pub fn retryable(&self) -> bool {
        match self {
            InferenceError::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            InferenceError::Network { .. } => true,
            _ => false,
        }
    }
}

/// Retry and breaker settings (`[inference]`).
#[derive(Debug, Clone)]
pub struct InferenceSettings {
    pub max_retries: u32,
    pub retry_base_delay: Duration,
    pub request_timeout: Duration,
    pub breaker: BreakerPolicy,
    /// Per-provider endpoint and key overrides.
    pub providers: BTreeMap<String, ProviderOverride>,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        InferenceSettings {
            max_retries: 2,
            retry_base_delay: Duration::from_millis(1000),
            request_timeout: Duration::from_secs(60),
            breaker: BreakerPolicy::default(),
            providers: BTreeMap::new(),
        }
    }
}

/// `[inference.providers.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderOverride {
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Name of the environment variable with the key (instead of the provider's default).
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// A breaker as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerView {
    pub provider: String,
    pub state: BreakerState,
    pub recent_failures: usize,
    pub trips: u64,
    pub retry_in_ms: u64,
}

/// What was sent to one provider, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Requests sent (each retry is one more).
    pub calls: u64,
    pub retries: u64,
    /// Calls that failed after their retries.
    pub failures: u64,
}

struct Shared {
    settings: InferenceSettings,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    /// By provider: a handful of names, and model calls are slow, so a lock is no cost.
    counts: Mutex<BTreeMap<String, CallCounts>>,
}

impl Shared {
    fn count(&self, provider: &str, f: impl FnOnce(&mut CallCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(provider) {
            Some(c) => f(c),
            None => f(counts.entry(provider.to_string()).or_default()),
        }
    }

    fn with_breaker<T>(&self, provider: &str, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = breakers
            .entry(provider.to_string())
            .or_insert_with(|| Breaker::new(self.settings.breaker));
        f(breaker)
    }
}

/// The client factory: resolves configs to cached clients and keeps the breakers.
pub struct Inference {
    shared: Arc<Shared>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Inference {
    pub fn new(settings: InferenceSettings) -> Arc<Self> {
        Arc::new(Inference {
            shared: Arc::new(Shared {
                settings,
                breakers: Mutex::new(BTreeMap::new()),
                counts: Mutex::new(BTreeMap::new()),
            }),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The client for `config`, from the cache when it was resolved before.
    pub fn resolve(&self, config: &ClientConfig) -> Result<Arc<Client>, InferenceError> {
        let key = config.key();
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(client.clone());
        }
        let fallback = match &config.fallback {
            Some(f) => Some(self.resolve(f)?),
            None => None,
        };
        let client = Arc::new(self.build(config, fallback)?);
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(client.clone());
        Ok(client)
    }

    fn build(
        &self,
        config: &ClientConfig,
        fallback: Option<Arc<Client>>,
    ) -> Result<Client, InferenceError> {
        let provider = provider(&config.provider).map_err(InferenceError::Config)?;
        if config.model_id.trim().is_empty() {
            return Err(InferenceError::Config("modelId must not be empty".into()));
        }
        let overrides = self.shared.settings.providers.get(provider.name);
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| overrides.and_then(|o| o.endpoint.clone()))
            .unwrap_or_else(|| provider.endpoint.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
            return Err(InferenceError::Config(format!(
                "endpoint '{endpoint}' must be an http:// or https:// URL"
            )));
        }
        let key_env = overrides
            .and_then(|o| o.api_key_env.clone())
            .or_else(|| provider.key_env.map(str::to_owned));
        let api_key = key_env
            .and_then(|name| std::env::var(name).ok())
            .filter(|k| !k.is_empty());
        Ok(Client {
            provider: provider.name.to_string(),
            protocol: provider.protocol,
            endpoint,
            model: config.model_id.clone(),
            api_key,
            temperature: config.temperature,
            max_output_tokens: config.max_output_tokens,
            fallback,
            shared: self.shared.clone(),
        })
    }

    /// Every provider's call counts, for `/metrics`.
    pub fn call_counts(&self) -> BTreeMap<String, CallCounts> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every provider's breaker, for `/health`.
    pub fn breakers(&self) -> Vec<BreakerView> {
        let now = Instant::now();
        let mut breakers = self
            .shared
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        breakers
            .iter_mut()
            .map(|(provider, b)| BreakerView {
                provider: provider.clone(),
                state: b.state(now),
                recent_failures: b.recent_failures(),
                trips: b.trips,
                retry_in_ms: b.retry_in(now).as_millis() as u64,
            })
            .collect()
    }
}

/// A resolved client: one provider, one model, one endpoint.
pub struct Client {
    pub provider: String,
    protocol: Protocol,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    temperature: Option<f64>,
    max_output_tokens: Option<u32>,
    fallback: Option<Arc<Client>>,
    shared: Arc<Shared>,
}

impl Client {
    /// One chat call with retries, the breaker and the fallback.
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, InferenceError> {
        self.call(request, None).await
    }

    /// One streamed chat call: each text delta goes to `on_delta` as it arrives, and the whole
    /// answer (tool calls, usage) is returned at the end. Retries and the fallback apply only
    /// while no delta was handed over (the caller cannot take text back).
    pub async fn chat_stream(
        &self,
        request: ChatRequest,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, InferenceError> {
        self.call(request, Some(on_delta)).await
    }

    async fn call(
        &self,
        request: ChatRequest,
        on_delta: Option<&mut dyn FnMut(&str)>,
    ) -> Result<ChatResponse, InferenceError> {
        let mut request = request;
        request.temperature = request.temperature.or(self.temperature);
        request.max_tokens = request.max_tokens.or(self.max_output_tokens);
        let span = tracing::info_span!("inference", provider = %self.provider, model = %self.model, streamed = on_delta.is_some());
        tracing::Instrument::instrument(self.chat_resilient(request, on_delta), span).await
    }

    async fn chat_resilient(
        &self,
        request: ChatRequest,
        mut on_delta: Option<&mut dyn FnMut(&str)>,
    ) -> Result<ChatResponse, InferenceError> {
        let settings = &self.shared.settings;
        let allowed = self.shared.with_breaker(&self.provider, |b| {
            let now = Instant::now();
            b.allow(now).then_some(()).ok_or(b.retry_in(now))
        });
        if let Err(retry_in) = allowed {
            if let Some(fallback) = &self.fallback {
                tracing::info!(fallback = %fallback.provider, "Breaker open; using the fallback client.");
                return Box::pin(fallback.call(request, on_delta)).await;
            }
            return Err(InferenceError::CircuitOpen {
                provider: self.provider.clone(),
                retry_in_ms: retry_in.as_millis() as u64,
            });
        }
        // Whether text was handed over: then nothing can be retried.
        let handed = std::cell::Cell::new(false);
        let mut attempt = 0;
        let error = loop {
            self.shared.count(&self.provider, |c| c.calls += 1);
            let sent = match on_delta.as_deref_mut() {
                None => self.send(&request).await,
                Some(sink) => {
                    let mut forward = |delta: &str| {
                        handed.set(true);
                        sink(delta);
                    };
                    self.send_stream(&request, &mut forward).await
                }
            };
            match sent {
                Ok(response) => {
                    self.shared
                        .with_breaker(&self.provider, |b| b.record_success(Instant::now()));
                    return Ok(response);
                }
                Err(error)
                    if error.retryable() && attempt < settings.max_retries && !handed.get() =>
                {
                    let delay = backoff(settings.retry_base_delay, attempt);
                    tracing::warn!(%error, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, "Model call failed; retrying.");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    self.shared.count(&self.provider, |c| c.retries += 1);
                }
                Err(error) => break error,
            }
        };
        self.shared.count(&self.provider, |c| c.failures += 1);
        if !error.retryable() {
            // The caller's fault (bad key, bad request): not the provider's health.
            return Err(error);
        }
        self.shared
            .with_breaker(&self.provider, |b| b.record_failure(Instant::now()));
        match &self.fallback {
            Some(fallback) if !handed.get() => {
                tracing::warn!(%error, fallback = %fallback.provider, "Model call failed after retries; using the fallback client.");
                Box::pin(fallback.call(request, on_delta)).await
            }
            _ => Err(error),
        }
    }

    /// The HTTP request of a call, and its body (`stream` set when streamed).
    fn http_request(&self, request: &ChatRequest, stream: bool) -> (awc::ClientRequest, Value) {
        let (url, mut body) = match self.protocol {
            Protocol::OpenAi => (
                format!("{}/chat/completions", self.endpoint),
                wire::openai_body(&self.model, request),
            ),
            Protocol::Anthropic => (
                format!("{}/messages", self.endpoint),
                wire::anthropic_body(&self.model, request, 4096),
            ),
        };
        if stream {
            body["stream"] = Value::Bool(true);
            if self.protocol == Protocol::OpenAi {
                // The usage comes in a last chunk only when asked for.
                body["stream_options"] = serde_json::json!({ "include_usage": true });
            }
        }
        let mut http = crate::connector::http::client()
            .post(&url)
            .timeout(self.shared.settings.request_timeout)
            .insert_header(("content-type", "application/json"));
        match (self.protocol, &self.api_key) {
            (Protocol::OpenAi, Some(key)) => {
                http = http.insert_header(("authorization", format!("Bearer {key}")));
            }
            (Protocol::Anthropic, key) => {
                http = http.insert_header(("anthropic-version", "2023-06-01"));
                if let Some(key) = key {
                    http = http.insert_header(("x-api-key", key.as_str()));
                }
            }
            _ => {}
        }
        (http, body)
    }

    fn send_error(&self, e: &awc::error::SendRequestError) -> InferenceError {
        match crate::connector::tls::TlsError::from_send_error(e) {
            Some(error) => InferenceError::Tls {
                provider: self.provider.clone(),
                error,
            },
            None => InferenceError::Network {
                provider: self.provider.clone(),
                message: e.to_string(),
            },
        }
    }

    /// A failed status's error, from its body.
    fn status_error(&self, status: u16, bytes: &[u8]) -> InferenceError {
        let json: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let message = wire::error_message(&json).unwrap_or_else(|| {
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
        });
        InferenceError::Status {
            provider: self.provider.clone(),
            status,
            message,
        }
    }

    /// A streamed call: deltas to `on_delta` as the events arrive. An answer that is not an
    /// event stream (a provider that ignored `stream`) is read whole, its text one delta.
    async fn send_stream(
        &self,
        request: &ChatRequest,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, InferenceError> {
        use futures::StreamExt;
        let (http, body) = self.http_request(request, true);
        let network = |message: String| InferenceError::Network {
            provider: self.provider.clone(),
            message,
        };
        let mut answer = http
            .send_json(&body)
            .await
            .map_err(|e| self.send_error(&e))?;
        let status = answer.status().as_u16();
        let is_stream = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status >= 400 || !is_stream {
            let bytes = answer
                .body()
                .limit(MAX_ANSWER_BYTES)
                .await
                .map_err(|e| network(e.to_string()))?;
            if status >= 400 {
                return Err(self.status_error(status, &bytes));
            }
            let response = self.read_whole(&bytes)?;
            if !response.content.is_empty() {
                on_delta(&response.content);
            }
            return Ok(response);
        }
        let decode = |message: String| InferenceError::Decode {
            provider: self.provider.clone(),
            message,
        };
        let mut parser = crate::connector::event_stream::SseParser::new();
        let mut assembler = stream::Assembler::new(self.protocol);
        let idle = self.shared.settings.request_timeout;
        let mut read = 0usize;
        loop {
            let next = tokio::time::timeout(idle, answer.next())
                .await
                .map_err(|_| {
                    network(format!(
                        "no part of the stream within {} ms",
                        idle.as_millis()
                    ))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| network(e.to_string()))?;
            read += chunk.len();
            if read > MAX_ANSWER_BYTES {
                return Err(decode(format!(
                    "the stream is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            for event in parser.feed(&chunk).map_err(|e| decode(e.to_string()))? {
                let text = assembler.event(&event).map_err(decode)?;
                if !text.is_empty() {
                    on_delta(&text);
                }
            }
            if assembler.is_ended() {
                break;
            }
        }
        let mut response = assembler.finish().map_err(decode)?;
        response.provider = self.provider.clone();
        if response.model.is_empty() {
            response.model = self.model.clone();
        }
        Ok(response)
    }

    /// Reads a whole (not streamed) answer.
    fn read_whole(&self, bytes: &[u8]) -> Result<ChatResponse, InferenceError> {
        let json: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        let parsed = match self.protocol {
            Protocol::OpenAi => wire::openai_response(&json),
            Protocol::Anthropic => wire::anthropic_response(&json),
        };
        let mut response = parsed.map_err(|message| InferenceError::Decode {
            provider: self.provider.clone(),
            message,
        })?;
        response.provider = self.provider.clone();
        if response.model.is_empty() {
            response.model = self.model.clone();
        }
        Ok(response)
    }

    async fn send(&self, request: &ChatRequest) -> Result<ChatResponse, InferenceError> {
        let (http, body) = self.http_request(request, false);
        let mut answer = http
            .send_json(&body)
            .await
            .map_err(|e| self.send_error(&e))?;
        let bytes =
            answer
                .body()
                .limit(MAX_ANSWER_BYTES)
                .await
                .map_err(|e| InferenceError::Network {
                    provider: self.provider.clone(),
                    message: e.to_string(),
                })?;
        let status = answer.status().as_u16();
        if status >= 400 {
            return Err(self.status_error(status, &bytes));
        }
        self.read_whole(&bytes)
    }
}

/// Exponential backoff from `base`, with full jitter between half and the whole delay.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1 << attempt.min(10));
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rate_limits_server_errors_and_network_errors_are_retried() {
        let status = |s| InferenceError::Status {
            provider: "p".into(),
            status: s,
            message: String::new(),
        };
        for s in [429, 500, 502, 503, 504] {
            assert!(status(s).retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 422, 501] {
            assert!(!status(s).retryable(), "{s}");
        }
        assert!(InferenceError::Network {
            provider: "p".into(),
            message: String::new()
        }
        .retryable());
        assert!(!InferenceError::Decode {
            provider: "p".into(),
            message: String::new()
        }
        .retryable());
    }

    #[test]
    fn backoff_doubles_with_jitter_inside_bounds() {
        for attempt in 0..4 {
            let d = backoff(Duration::from_millis(100), attempt);
            let full = 100u64 << attempt;
            assert!(
                d >= Duration::from_millis(full / 2) && d <= Duration::from_millis(full),
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn clients_are_cached_by_provider_model_and_endpoint() {
        let inference = Inference::new(InferenceSettings::default());
        let config = |model: &str, endpoint: Option<&str>| ClientConfig {
            provider: "openai".into(),
            model_id: model.into(),
            endpoint: endpoint.map(str::to_owned),
            temperature: None,
            max_output_tokens: None,
            max_context_tokens: None,
            fallback: None,
        };
        let a = inference
            .resolve(&config("m", Some("http://127.0.0.1:1/v1")))
            .unwrap();
        let b = inference
            .resolve(&config("m", Some("http://127.0.0.1:1/v1")))
            .unwrap();
        let c = inference
            .resolve(&config("n", Some("http://127.0.0.1:1/v1")))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &c));
        let bad = ClientConfig {
            provider: "bedrock".into(),
            ..config("m", None)
        };
        assert!(
            matches!(inference.resolve(&bad), Err(InferenceError::Config(m)) if m.contains("unknown provider 'bedrock'"))
        );
        assert!(inference.resolve(&config("m", Some("ftp://x"))).is_err());
    }
}

//! Krawall's four built-in connector plugins, native Rust, registered at every boot.
//!
//! Owns `multi-step-auth` (10), `openai` (50), `anthropic` (50) and `audit` (200), with the
//! behaviour seed-systems.md §1.8 records, and the places we do better than Krawall:
//! multi-step-auth keeps the target's other auth headers and refreshes an expiring token;
//! openai actually sends the history and model parameters (as request-template variables);
//! audit is bounded and readable over REST. Does not own the pipeline (`session`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use semver::Version;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{
    ConfigField, FieldType, Hook, HookContext, Plugin, PluginError, PluginFactory, PluginManifest,
    SelectOption,
};
use crate::connector::target::{auth_headers, AuthType};
use crate::connector::template;
use crate::connector::ConnectorConfig;

/// Every built-in connector plugin, sharing one audit log.
pub fn catalogue(audit: Arc<AuditLog>) -> Vec<PluginFactory> {
    vec![
        Arc::new(|| Arc::new(MultiStepAuth) as Arc<dyn Plugin>),
        Arc::new(|| Arc::new(OpenAi) as Arc<dyn Plugin>),
        Arc::new(|| Arc::new(Anthropic) as Arc<dyn Plugin>),
        Arc::new(move || Arc::new(Audit { log: audit.clone() }) as Arc<dyn Plugin>),
    ]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn field(
    key: &str,
    label: &str,
    field_type: FieldType,
    required: bool,
    default: Option<Value>,
    description: &str,
) -> ConfigField {
    ConfigField {
        key: key.into(),
        label: label.into(),
        field_type,
        required,
        default,
        description: description.into(),
        options: None,
        secret: false,
    }
}

fn select(
    key: &str,
    label: &str,
    values: &[&str],
    required: bool,
    default: Option<&str>,
    description: &str,
) -> ConfigField {
    ConfigField {
        options: Some(
            values
                .iter()
                .map(|v| SelectOption {
                    label: v.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        ),
        ..field(
            key,
            label,
            FieldType::Select,
            required,
            default.map(|d| json!(d)),
            description,
        )
    }
}

fn manifest(
    id: &str,
    name: &str,
    description: &str,
    priority: u32,
    connectors: &[&str],
    schema: Vec<ConfigField>,
) -> PluginManifest {
    let mut m = PluginManifest::new(id, Version::new(1, 0, 0))
        .named(name)
        .describe(description);
    m.priority = priority;
    m.compatible_connectors = connectors.iter().map(|c| c.to_string()).collect();
    m.config_schema = schema;
    m
}

fn text<'a>(ctx: &'a HookContext, key: &str) -> Option<&'a str> {
    ctx.plugin_config
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Normalised usage `{promptTokens, completionTokens, totalTokens}`.
fn usage(prompt: u64, completion: u64, total: Option<u64>) -> Value {
    json!({ "promptTokens": prompt, "completionTokens": completion, "totalTokens": total.unwrap_or(prompt + completion) })
}

fn messages(ctx: &HookContext) -> Vec<Value> {
    ctx.state
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn add_tokens(ctx: &mut HookContext, key: &str, n: u64) {
    let total = ctx.state.get(key).and_then(Value::as_u64).unwrap_or(0) + n;
    ctx.state.insert(key.into(), json!(total));
}

// ---- multi-step-auth --------------------------------------------------------------------------

/// Fetches a token before connecting and sends it as a header on every request.
pub struct MultiStepAuth;

/// Seconds before expiry at which the token is refreshed.
const REFRESH_MARGIN_MS: u64 = 5_000;

impl MultiStepAuth {
    async fn handshake(ctx: &mut HookContext) -> Result<String, PluginError> {
        let endpoint = text(ctx, "authEndpoint")
            .ok_or_else(|| PluginError::new("authEndpoint is required"))?
            .to_string();
        let method = text(ctx, "authMethod")
            .unwrap_or("POST")
            .to_ascii_uppercase();
        let client = crate::connector::http::client();
        let request = if method == "GET" {
            client.get(&endpoint)
        } else {
            client.post(&endpoint)
        }
        .insert_header(("Content-Type", "application/json"))
        .timeout(std::time::Duration::from_secs(10));
        let sent = match ctx.plugin_config.get("authBody").filter(|b| !b.is_null()) {
            Some(body) if method != "GET" => request.send_json(body).await,
            _ => request.send().await,
        };
        let mut response =
            sent.map_err(|e| PluginError::new(format!("Auth handshake failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PluginError::new(format!(
                "Auth handshake failed: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        let body: Value = response.json().limit(1 << 20).await.map_err(|e| {
            PluginError::new(format!(
                "Auth handshake failed: the answer is not JSON: {e}"
            ))
        })?;
        let token_path = text(ctx, "tokenPath").unwrap_or("token").to_string();
        let token = template::get(&body, &token_path)
            .and_then(|t| match t {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                PluginError::new(format!(
                    "No token found at path \"{token_path}\" in the auth response"
                ))
            })?;
        ctx.state.insert("authToken".into(), json!(token));
        let expires_at = text(ctx, "expiresInPath")
            .and_then(|p| template::get(&body, p))
            .and_then(Value::as_f64)
            .map(|secs| now_ms() + (secs * 1000.0) as u64);
        ctx.state.insert("tokenExpiresAt".into(), json!(expires_at));
        Ok(token)
    }

    fn header(ctx: &HookContext, token: &str) -> (String, String) {
        let name = text(ctx, "tokenHeader")
            .unwrap_or("Authorization")
            .to_string();
        // Krawall left a leading space with an empty prefix; we do not.
        let prefix = ctx
            .plugin_config
            .get("tokenPrefix")
            .and_then(Value::as_str)
            .unwrap_or("Bearer");
        let value = if prefix.is_empty() {
            token.to_string()
        } else {
            format!("{prefix} {token}")
        };
        (name, value)
    }
}

#[async_trait(?Send)]
impl Plugin for MultiStepAuth {
    fn manifest(&self) -> PluginManifest {
        manifest(
            "multi-step-auth",
            "Multi-Step Auth",
            "Fetches a token from an auth endpoint before connecting (e.g. POST /auth/token) and sends it as a header; refreshes it before it expires.",
            10,
            &["HTTP_REST"],
            vec![
                field("authEndpoint", "Auth Endpoint", FieldType::String, true, None, "URL of the token endpoint."),
                select("authMethod", "Auth Method", &["POST", "GET"], false, Some("POST"), "HTTP method of the handshake."),
                field("authBody", "Auth Body", FieldType::Json, false, None, "JSON body of the handshake."),
                field("tokenPath", "Token Path", FieldType::String, false, Some(json!("token")), "Where the token is in the answer, e.g. data.access_token."),
                field("tokenHeader", "Token Header", FieldType::String, false, Some(json!("Authorization")), "Header that carries the token."),
                field("tokenPrefix", "Token Prefix", FieldType::String, false, Some(json!("Bearer")), "Put before the token in the header."),
                field("expiresInPath", "Expires-In Path", FieldType::String, false, None, "Where the token's lifetime in seconds is in the answer; the token is refreshed before it runs out."),
            ],
        )
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        match hook {
            Hook::Initialize | Hook::OnDisconnect => {
                ctx.state.insert("authToken".into(), Value::Null);
                ctx.state.insert("tokenExpiresAt".into(), Value::Null);
                Ok(Some(Value::Null))
            }
            Hook::OnConnect => {
                let token = Self::handshake(ctx).await?;
                let mut config: ConnectorConfig = serde_json::from_value(input)
                    .map_err(|e| PluginError::new(format!("unexpected connector config: {e}")))?;
                // Keep every header the target's own auth produced, then add the token's.
                let mut headers: Map<String, Value> =
                    auth_headers(config.auth_type, &config.auth_config)
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                let (name, value) = Self::header(ctx, &token);
                headers.insert(name, Value::String(value));
                config.auth_type = AuthType::CustomHeader;
                config.auth_config =
                    Map::from_iter([("headers".to_string(), Value::Object(headers))]);
                Ok(Some(serde_json::to_value(config).unwrap_or(Value::Null)))
            }
            Hook::BeforeSend => {
                let expires = ctx.state.get("tokenExpiresAt").and_then(Value::as_u64);
                if expires.is_none_or(|at| now_ms() + REFRESH_MARGIN_MS < at) {
                    return Ok(None);
                }
                let token = Self::handshake(ctx).await?;
                let (name, value) = Self::header(ctx, &token);
                let message = input.get("message").cloned().unwrap_or(Value::Null);
                // `$headers` in the message metadata overrides request headers for this send.
                Ok(Some(
                    json!({ "message": message, "metadata": { "$headers": { name: value } } }),
                ))
            }
            Hook::AfterReceive => Ok(None),
        }
    }

    fn on_error(&self, _id: &str, error: &str, hook: Hook, ctx: &HookContext) {
        tracing::error!(plugin = "multi-step-auth", hook = hook.name(), session = %ctx.session_id, %error, "Hook failed.");
    }
}

// ---- openai -----------------------------------------------------------------------------------

/// Keeps the conversation and sends it, with the model parameters, to an OpenAI-compatible API.
pub struct OpenAi;

#[async_trait(?Send)]
impl Plugin for OpenAi {
    fn manifest(&self) -> PluginManifest {
        manifest(
            "openai",
            "OpenAI Conversation Plugin",
            "Manages conversation history, system prompts and token usage for OpenAI-compatible APIs. History and model parameters reach the request template as ${messages}, ${model}, ${temperature} and ${max_tokens}.",
            50,
            &["HTTP_REST"],
            vec![
                select("model", "Model", &["gpt-4", "gpt-4-turbo", "gpt-4o", "gpt-3.5-turbo"], true, Some("gpt-4"), "OpenAI model to use"),
                field("temperature", "Temperature", FieldType::Number, false, Some(json!(1)), "Sampling temperature (0-2)."),
                field("max_tokens", "Max Tokens", FieldType::Number, false, Some(json!(1024)), "Maximum tokens in the answer."),
                field("systemPrompt", "System Prompt", FieldType::String, false, None, "First message of the conversation."),
            ],
        )
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        match hook {
            Hook::Initialize => {
                let mut history = Vec::new();
                if let Some(prompt) = text(ctx, "systemPrompt") {
                    history.push(json!({ "role": "system", "content": prompt }));
                }
                ctx.state.insert("messages".into(), Value::Array(history));
                ctx.state.insert("totalTokens".into(), json!(0));
                Ok(Some(Value::Null))
            }
            Hook::BeforeSend => {
                let message = input["message"].as_str().unwrap_or_default().to_string();
                let mut history = messages(ctx);
                history.push(json!({ "role": "user", "content": message }));
                ctx.state
                    .insert("messages".into(), Value::Array(history.clone()));
                let cfg = &ctx.plugin_config;
                Ok(Some(json!({
                    "message": message,
                    "metadata": {
                        "messages": history,
                        "model": cfg.get("model").cloned().unwrap_or(json!("gpt-4")),
                        "temperature": cfg.get("temperature").cloned().unwrap_or(json!(1)),
                        "max_tokens": cfg.get("max_tokens").cloned().unwrap_or(json!(1024)),
                    }
                })))
            }
            Hook::AfterReceive => {
                let mut response = input["response"].clone();
                let mut history = messages(ctx);
                history.push(json!({ "role": "assistant", "content": response["content"] }));
                ctx.state.insert("messages".into(), Value::Array(history));
                let raw = &response["metadata"]["rawResponse"]["usage"];
                if raw.is_object() {
                    let prompt = raw["prompt_tokens"].as_u64().unwrap_or(0);
                    let completion = raw["completion_tokens"].as_u64().unwrap_or(0);
                    let normalised = usage(prompt, completion, raw["total_tokens"].as_u64());
                    add_tokens(
                        ctx,
                        "totalTokens",
                        normalised["totalTokens"].as_u64().unwrap_or(0),
                    );
                    response["metadata"]["tokenUsage"] = normalised;
                }
                Ok(Some(json!({ "response": response })))
            }
            Hook::OnDisconnect => {
                ctx.state.insert("messages".into(), json!([]));
                ctx.state.insert("totalTokens".into(), json!(0));
                Ok(Some(Value::Null))
            }
            Hook::OnConnect => Ok(None),
        }
    }
}

// ---- anthropic --------------------------------------------------------------------------------

/// Conversation with role alternation, system prompt, text blocks and usage for Anthropic.
pub struct Anthropic;

#[async_trait(?Send)]
impl Plugin for Anthropic {
    fn manifest(&self) -> PluginManifest {
        manifest(
            "anthropic",
            "Anthropic Conversation Plugin",
            "Manages conversation history with role alternation, the system prompt, text-block extraction and token usage for Anthropic APIs. Variables: ${messages}, ${system}, ${model}, ${max_tokens}, ${temperature}.",
            50,
            &["HTTP_REST"],
            vec![
                select("model", "Model", &["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"], true, None, "Anthropic model to use"),
                field("max_tokens", "Max Tokens", FieldType::Number, false, Some(json!(1024)), "Maximum tokens in the answer."),
                field("temperature", "Temperature", FieldType::Number, false, Some(json!(1)), "Sampling temperature."),
                field("systemPrompt", "System Prompt", FieldType::String, false, None, "Sent as `system`, never as a message."),
            ],
        )
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        match hook {
            Hook::Initialize | Hook::OnDisconnect => {
                ctx.state.insert("messages".into(), json!([]));
                ctx.state.insert("totalInputTokens".into(), json!(0));
                ctx.state.insert("totalOutputTokens".into(), json!(0));
                let prompt = text(ctx, "systemPrompt").map(str::to_owned);
                ctx.state.insert("systemPrompt".into(), json!(prompt));
                Ok(Some(Value::Null))
            }
            Hook::BeforeSend => {
                let message = input["message"].as_str().unwrap_or_default().to_string();
                let mut history = messages(ctx);
                let turn = json!({ "role": "user", "content": message });
                // Roles must alternate: an unanswered user turn is replaced, not doubled.
                match history.last() {
                    Some(last) if last["role"] == "user" => {
                        *history.last_mut().expect("non-empty") = turn
                    }
                    _ => history.push(turn),
                }
                ctx.state
                    .insert("messages".into(), Value::Array(history.clone()));
                let cfg = &ctx.plugin_config;
                let mut metadata = json!({
                    "messages": history,
                    "model": cfg.get("model").cloned().unwrap_or(Value::Null),
                    "max_tokens": cfg.get("max_tokens").cloned().unwrap_or(json!(1024)),
                    "temperature": cfg.get("temperature").cloned().unwrap_or(json!(1)),
                });
                if let Some(prompt) = ctx.state.get("systemPrompt").filter(|p| !p.is_null()) {
                    metadata["system"] = prompt.clone();
                    metadata["systemPrompt"] = prompt.clone();
                }
                Ok(Some(json!({ "message": message, "metadata": metadata })))
            }
            Hook::AfterReceive => {
                let mut response = input["response"].clone();
                let raw = response["metadata"]["rawResponse"].clone();
                if let Some(text) = raw["content"]
                    .as_array()
                    .and_then(|blocks| blocks.iter().find(|b| b["type"] == "text"))
                    .and_then(|b| b["text"].as_str())
                {
                    response["content"] = json!(text);
                }
                let mut history = messages(ctx);
                history.push(json!({ "role": "assistant", "content": response["content"] }));
                ctx.state.insert("messages".into(), Value::Array(history));
                if raw["usage"].is_object() {
                    let input_tokens = raw["usage"]["input_tokens"].as_u64().unwrap_or(0);
                    let output_tokens = raw["usage"]["output_tokens"].as_u64().unwrap_or(0);
                    add_tokens(ctx, "totalInputTokens", input_tokens);
                    add_tokens(ctx, "totalOutputTokens", output_tokens);
                    response["metadata"]["tokenUsage"] = usage(input_tokens, output_tokens, None);
                }
                Ok(Some(json!({ "response": response })))
            }
            Hook::OnConnect => Ok(None),
        }
    }
}

// ---- audit ------------------------------------------------------------------------------------

/// One audit entry (Krawall's `AuditLogEntry`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub timestamp: String,
    /// `sent` or `received`.
    pub direction: &'static str,
    pub session_id: String,
    pub target_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<Value>,
}

/// The audit log. With the store on, entries are written to the database (kept by the
/// retention rules, read back after restarts); without it, they stay in memory, bounded per
/// session and in sessions kept. Either way it outlives plugin restarts and closed sessions
/// (Krawall kept it in memory, unbounded, lost on restart).
pub struct AuditLog {
    per_session: usize,
    sessions: usize,
    entries: Mutex<AuditEntries>,
    store: Option<crate::store::writer::StoreHandle>,
}

/// Entries by session, and sessions in the order they first appeared (to evict the oldest).
#[derive(Default)]
struct AuditEntries {
    by_session: HashMap<String, VecDeque<AuditEntry>>,
    order: VecDeque<String>,
}

impl AuditLog {
    pub fn new(
        per_session: usize,
        sessions: usize,
        store: Option<crate::store::writer::StoreHandle>,
    ) -> Arc<Self> {
        Arc::new(AuditLog {
            per_session,
            sessions,
            entries: Mutex::new(AuditEntries::default()),
            store,
        })
    }

    fn push(&self, entry: AuditEntry) {
        if let Some(store) = &self.store {
            store.write(crate::store::writer::Write::Audit(entry));
            return;
        }
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let AuditEntries {
            by_session: map,
            order,
        } = &mut *guard;
        if !map.contains_key(&entry.session_id) {
            order.push_back(entry.session_id.clone());
            while order.len() > self.sessions {
                if let Some(oldest) = order.pop_front() {
                    map.remove(&oldest);
                }
            }
        }
        let log = map.entry(entry.session_id.clone()).or_default();
        log.push_back(entry);
        while log.len() > self.per_session {
            log.pop_front();
        }
    }

    /// A session's entries, oldest first (from the store when it is on); `None` when there
    /// are none.
    pub async fn entries(
        &self,
        session_id: &str,
    ) -> Result<Option<Vec<AuditEntry>>, crate::store::StoreError> {
        match &self.store {
            Some(store) => {
                store.flush().await;
                let entries = store.store().audit(session_id).await?;
                Ok((!entries.is_empty()).then_some(entries))
            }
            None => Ok(self.get(session_id)),
        }
    }

    /// A session's entries in memory, oldest first; `None` when the log has none for it.
    pub fn get(&self, session_id: &str) -> Option<Vec<AuditEntry>> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .by_session
            .get(session_id)
            .map(|log| log.iter().cloned().collect())
    }
}

/// Passively records every message and answer.
pub struct Audit {
    log: Arc<AuditLog>,
}

#[async_trait(?Send)]
impl Plugin for Audit {
    fn manifest(&self) -> PluginManifest {
        manifest(
            "audit",
            "Audit Log",
            "Passive logging of all messages with timestamps, response times and token counts; GET /api/sessions/{id}/audit.",
            200,
            &["HTTP_REST", "WEBSOCKET", "GRPC", "SSE"],
            Vec::new(),
        )
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        let entry = |direction| AuditEntry {
            timestamp: crate::util::rfc3339(SystemTime::now()),
            direction,
            session_id: ctx.session_id.clone(),
            target_id: ctx.target_id.clone(),
            message: None,
            response_content: None,
            response_time_ms: None,
            token_usage: None,
        };
        match hook {
            Hook::BeforeSend => {
                let mut sent = entry("sent");
                sent.message = input["message"].as_str().map(str::to_owned);
                self.log.push(sent);
                ctx.state
                    .insert("lastSendTimestamp".into(), json!(now_ms()));
            }
            Hook::AfterReceive => {
                let response = &input["response"];
                let mut received = entry("received");
                received.response_content = response["content"].as_str().map(str::to_owned);
                received.response_time_ms = ctx
                    .state
                    .get("lastSendTimestamp")
                    .and_then(Value::as_u64)
                    .map(|sent| now_ms().saturating_sub(sent))
                    .or_else(|| response["metadata"]["responseTimeMs"].as_u64());
                received.token_usage = response["metadata"].get("tokenUsage").cloned();
                self.log.push(received);
            }
            Hook::Initialize | Hook::OnDisconnect => {
                ctx.state.insert("lastSendTimestamp".into(), Value::Null);
            }
            Hook::OnConnect => {}
        }
        // Passive: it never changes what flows through.
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_log_is_bounded() {
        let log = AuditLog::new(3, 2, None);
        let entry = |s: &str, m: &str| AuditEntry {
            timestamp: String::new(),
            direction: "sent",
            session_id: s.into(),
            target_id: "t".into(),
            message: Some(m.into()),
            response_content: None,
            response_time_ms: None,
            token_usage: None,
        };
        for i in 0..5 {
            log.push(entry("a", &i.to_string()));
        }
        let kept: Vec<String> = log
            .get("a")
            .unwrap()
            .into_iter()
            .filter_map(|e| e.message)
            .collect();
        assert_eq!(kept, ["2", "3", "4"]);
        log.push(entry("b", "x"));
        log.push(entry("c", "y"));
        assert!(log.get("a").is_none(), "the oldest session is evicted");
        assert!(log.get("b").is_some() && log.get("c").is_some());
    }
}

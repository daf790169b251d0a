//! The front doors' wire formats: OpenAI chat completions and Anthropic messages, as clients
//! speak them.
//!
//! Owns reading a client's request into one [`Request`] (messages with tool calls and tool
//! results, tools, sampling options, `stream`, the `user`), writing an [`Answer`] back in the
//! client's dialect (whole, or as the provider's own Server-Sent Events through
//! [`StreamEncoder`]), and each provider's error body and error type for a status. Pure
//! functions: no HTTP, no routing, no keys (the parent module and `api::frontdoor` do those).

use serde_json::{json, Map, Value};

use crate::broker::events::Usage;
use crate::inference::{ChatMessage, ChatRequest, Role, ToolCall, ToolDefinition};

/// Which provider's API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
        }
    }
}

/// A client's request, whichever dialect it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub model: String,
    /// The whole conversation, system messages included, in order.
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolDefinition>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stream: bool,
    /// OpenAI's `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// The end user (`user`, or Anthropic's `metadata.user_id`): a conversation key.
    pub user: Option<String>,
}

impl Request {
    /// The text of the last user message: what `beforeSend` sees as the message.
    pub fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default()
    }

    /// The request as a model client takes it.
    pub fn chat_request(&self) -> ChatRequest {
        ChatRequest {
            messages: self.messages.clone(),
            tools: self.tools.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
        }
    }
}

/// A request that cannot be read; `param` names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub param: Option<String>,
    pub message: String,
}

fn invalid(param: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        param: Some(param.to_string()),
        message: message.into(),
    }
}

fn object(body: &Value) -> Result<&Map<String, Value>, Invalid> {
    body.as_object().ok_or_else(|| Invalid {
        param: None,
        message: "the body must be a JSON object".into(),
    })
}

fn model_of(body: &Map<String, Value>) -> Result<String, Invalid> {
    match body.get("model").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => Ok(m.to_string()),
        _ => Err(invalid("model", "`model` is required: a model name")),
    }
}

fn optional_f64(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(key, format!("`{key}` must be a number"))),
    }
}

/// The request's `tools`, in either dialect: each tool's fields sit under `within` (OpenAI's
/// `function`) or at its top (Anthropic), its JSON Schema under `schema`. A missing schema is
/// an object with no properties.
fn tool_definitions(
    body: &Map<String, Value>,
    within: Option<&str>,
    schema: &str,
) -> Result<Vec<ToolDefinition>, Invalid> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "`tools` must be an array")),
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let (fields, at) = match within {
                Some(key) => (&tool[key], format!("tools[{i}].{key}.name")),
                None => (tool, format!("tools[{i}].name")),
            };
            let name = fields["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid(&at, "a tool needs a name"))?;
            Ok(ToolDefinition {
                name: name.to_string(),
                description: fields["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                parameters: match &fields[schema] {
                    Value::Null => json!({ "type": "object", "properties": {} }),
                    p => p.clone(),
                },
            })
        })
        .collect()
}

fn optional_u32(body: &Map<String, Value>, key: &str) -> Result<Option<u32>, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1 && *n <= u32::MAX as u64)
            .map(|n| Some(n as u32))
            .ok_or_else(|| invalid(key, format!("`{key}` must be a positive integer"))),
    }
}

fn optional_bool(body: &Map<String, Value>, key: &str) -> Result<bool, Invalid> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(key, format!("`{key}` must be a boolean"))),
    }
}

/// Text of a content that is a string or an array of parts (`{type: "text", text}`); other
/// parts (images) are refused rather than silently dropped.
fn text_of(content: &Value, param: &str) -> Result<String, Invalid> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(invalid(
                            param,
                            format!(
                                "content parts of type '{}' are not supported; send text",
                                kind.unwrap_or("?")
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err(invalid(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

/// Tool arguments as a client sends them (OpenAI: a JSON string) as JSON.
fn arguments_of(args: &Value) -> Value {
    match args {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Value::Null => json!({}),
        other => other.clone(),
    }
}

/// Reads an OpenAI `chat/completions` body.
pub fn openai_request(body: &Value) -> Result<Request, Invalid> {
    let body = object(body)?;
    let model = model_of(body)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("messages", "`messages` must be a non-empty array"))?;
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match m["role"].as_str() {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            _ => {
                return Err(invalid(
                    &format!("{at}.role"),
                    "`role` must be system, developer, user, assistant or tool",
                ))
            }
        };
        let content = text_of(&m["content"], &format!("{at}.content"))?;
        let tool_calls = match m.get("tool_calls").and_then(Value::as_array) {
            Some(calls) => calls
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let name = c["function"]["name"].as_str().ok_or_else(|| {
                        invalid(
                            &format!("{at}.tool_calls[{j}].function.name"),
                            "a tool call needs a function name",
                        )
                    })?;
                    Ok(ToolCall {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        name: name.to_string(),
                        arguments: arguments_of(&c["function"]["arguments"]),
                    })
                })
                .collect::<Result<Vec<_>, Invalid>>()?,
            None => Vec::new(),
        };
        let tool_call_id = m["tool_call_id"].as_str().map(str::to_owned);
        if role == Role::Tool && tool_call_id.is_none() {
            return Err(invalid(
                &format!("{at}.tool_call_id"),
                "a tool message needs `tool_call_id`",
            ));
        }
        out.push(ChatMessage {
            role,
            content,
            tool_calls,
            tool_call_id,
        });
    }
    // OpenAI: `{type: "function", function: {name, description, parameters}}`.
    let tools = tool_definitions(body, Some("function"), "parameters")?;
    let max_tokens = match optional_u32(body, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => optional_u32(body, "max_tokens")?,
    };
    Ok(Request {
        model,
        messages: out,
        tools,
        temperature: optional_f64(body, "temperature")?,
        max_tokens,
        stream: optional_bool(body, "stream")?,
        include_usage: body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
        user: body
            .get("user")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
    })
}

/// Reads an Anthropic `messages` body. A user turn's `tool_result` blocks become tool
/// messages (before the turn's text), an assistant turn's `tool_use` blocks its tool calls.
pub fn anthropic_request(body: &Value) -> Result<Request, Invalid> {
    let body = object(body)?;
    let model = model_of(body)?;
    let max_tokens = optional_u32(body, "max_tokens")?
        .ok_or_else(|| invalid("max_tokens", "`max_tokens` is required"))?;
    let turns = body
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("messages", "`messages` must be a non-empty array"))?;
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            let text = text_of(system, "system")?;
            if !text.is_empty() {
                messages.push(ChatMessage::text(Role::System, &text));
            }
        }
    }
    for (i, turn) in turns.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match turn["role"].as_str() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => {
                return Err(invalid(
                    &format!("{at}.role"),
                    "`role` must be user or assistant",
                ))
            }
        };
        let blocks = match &turn["content"] {
            Value::String(s) => vec![json!({ "type": "text", "text": s })],
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(invalid(
                    &format!("{at}.content"),
                    "`content` must be a string or an array of blocks",
                ))
            }
        };
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let param = format!("{at}.content[{j}]");
            match block["type"].as_str() {
                Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                Some("tool_use") if role == Role::Assistant => tool_calls.push(ToolCall {
                    id: block["id"].as_str().unwrap_or_default().to_string(),
                    name: block["name"].as_str().unwrap_or_default().to_string(),
                    arguments: arguments_of(&block["input"]),
                }),
                Some("tool_result") if role == Role::User => {
                    let id = block["tool_use_id"].as_str().ok_or_else(|| {
                        invalid(
                            &format!("{param}.tool_use_id"),
                            "a tool result needs `tool_use_id`",
                        )
                    })?;
                    messages.push(ChatMessage {
                        role: Role::Tool,
                        content: text_of(&block["content"], &format!("{param}.content"))?,
                        tool_calls: Vec::new(),
                        tool_call_id: Some(id.to_string()),
                    });
                }
                other => {
                    return Err(invalid(
                        &param,
                        format!(
                            "blocks of type '{}' are not supported in a {} turn",
                            other.unwrap_or("?"),
                            role.as_str()
                        ),
                    ))
                }
            }
        }
        if !text.is_empty() || !tool_calls.is_empty() {
            messages.push(ChatMessage {
                role,
                content: text,
                tool_calls,
                tool_call_id: None,
            });
        }
    }
    // Anthropic: `{name, description, input_schema}`.
    let tools = tool_definitions(body, None, "input_schema")?;
    Ok(Request {
        model,
        messages,
        tools,
        temperature: optional_f64(body, "temperature")?,
        max_tokens: Some(max_tokens),
        stream: optional_bool(body, "stream")?,
        include_usage: true,
        user: body
            .get("metadata")
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
    })
}

/// The messages as an OpenAI-compatible target's request template takes them
/// (`${messages}`).
pub fn openai_messages(messages: &[ChatMessage]) -> Value {
    let request = ChatRequest {
        messages: messages.to_vec(),
        ..ChatRequest::default()
    };
    crate::inference::wire::openai_body("", &request)["messages"].take()
}

/// What the gateway answers, whichever route produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The response id (`chatcmpl-…`, `msg_…` are added by the dialect).
    pub id: String,
    /// The model name the client asked for.
    pub model: String,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// Seconds since the epoch.
    pub created: u64,
}

/// Reads the tool calls and usage a session's reply carries in its metadata
/// (`toolCalls`, `tokenUsage` with `promptTokens`/`completionTokens`/`totalTokens`).
pub fn reply_parts(metadata: &Value) -> (Vec<ToolCall>, Usage) {
    let tool_calls = metadata
        .get("toolCalls")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default();
    let u = &metadata["tokenUsage"];
    let number = |a: &str, b: &str| u[a].as_u64().or_else(|| u[b].as_u64()).unwrap_or(0);
    let prompt = number("promptTokens", "prompt_tokens");
    let completion = number("completionTokens", "completion_tokens");
    let total = u["totalTokens"]
        .as_u64()
        .or_else(|| u["total_tokens"].as_u64())
        .unwrap_or(prompt + completion);
    (
        tool_calls,
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total,
        },
    )
}

fn openai_tool_calls(calls: &[ToolCall]) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({ "index": i, "id": c.id, "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments.to_string() } })
        })
        .collect()
}

fn openai_usage(u: &Usage) -> Value {
    json!({ "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens })
}

fn anthropic_input(arguments: &Value) -> Value {
    if arguments.is_object() {
        arguments.clone()
    } else {
        json!({})
    }
}

impl Answer {
    fn finish_reason(&self, dialect: Dialect) -> &'static str {
        match (dialect, self.tool_calls.is_empty()) {
            (Dialect::OpenAi, true) => "stop",
            (Dialect::OpenAi, false) => "tool_calls",
            (Dialect::Anthropic, true) => "end_turn",
            (Dialect::Anthropic, false) => "tool_use",
        }
    }

    /// The whole answer as `dialect`'s API returns it.
    pub fn render(&self, dialect: Dialect) -> Value {
        match dialect {
            Dialect::OpenAi => {
                let mut message = json!({ "role": "assistant",
                    "content": if self.content.is_empty() && !self.tool_calls.is_empty() { Value::Null } else { json!(self.content) } });
                if !self.tool_calls.is_empty() {
                    let mut calls = openai_tool_calls(&self.tool_calls);
                    for c in &mut calls {
                        if let Some(c) = c.as_object_mut() {
                            c.shift_remove("index");
                        }
                    }
                    message["tool_calls"] = Value::Array(calls);
                }
                json!({
                    "id": format!("chatcmpl-{}", self.id),
                    "object": "chat.completion",
                    "created": self.created,
                    "model": self.model,
                    "choices": [{ "index": 0, "message": message, "logprobs": null,
                                  "finish_reason": self.finish_reason(dialect) }],
                    "usage": openai_usage(&self.usage),
                })
            }
            Dialect::Anthropic => {
                let mut content = Vec::new();
                if !self.content.is_empty() {
                    content.push(json!({ "type": "text", "text": self.content }));
                }
                for c in &self.tool_calls {
                    content.push(json!({ "type": "tool_use", "id": c.id, "name": c.name,
                                         "input": anthropic_input(&c.arguments) }));
                }
                json!({
                    "id": format!("msg_{}", self.id),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": content,
                    "stop_reason": self.finish_reason(dialect),
                    "stop_sequence": null,
                    "usage": { "input_tokens": self.usage.prompt_tokens, "output_tokens": self.usage.completion_tokens },
                })
            }
        }
    }
}

/// Writes a streamed answer as the provider's own Server-Sent Events: OpenAI's
/// `chat.completion.chunk` data lines ending in `[DONE]`, or Anthropic's `message_start`,
/// content blocks, `message_delta` and `message_stop`. Tool calls arrive with the answer's
/// end, so each is sent whole, in one delta, after the text.
#[derive(Debug)]
pub struct StreamEncoder {
    dialect: Dialect,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Anthropic: a text block is open (it opens with the first chunk).
    text_open: bool,
}

fn frame(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

impl StreamEncoder {
    pub fn new(dialect: Dialect, id: &str, model: &str, created: u64, include_usage: bool) -> Self {
        StreamEncoder {
            dialect,
            id: id.to_string(),
            model: model.to_string(),
            created,
            include_usage,
            text_open: false,
        }
    }

    fn openai_chunk(&self, delta: Value, finish: Option<&str>) -> String {
        frame(
            None,
            &json!({
                "id": format!("chatcmpl-{}", self.id),
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
            }),
        )
    }

    /// What opens the stream.
    pub fn start(&mut self, prompt_tokens: u64) -> String {
        match self.dialect {
            Dialect::OpenAi => {
                self.openai_chunk(json!({ "role": "assistant", "content": "" }), None)
            }
            Dialect::Anthropic => frame(
                Some("message_start"),
                &json!({ "type": "message_start", "message": {
                    "id": format!("msg_{}", self.id), "type": "message", "role": "assistant",
                    "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": { "input_tokens": prompt_tokens, "output_tokens": 0 } } }),
            ),
        }
    }

    /// One piece of the answer's text.
    pub fn chunk(&mut self, text: &str) -> String {
        match self.dialect {
            Dialect::OpenAi => self.openai_chunk(json!({ "content": text }), None),
            Dialect::Anthropic => {
                let mut out = String::new();
                if !self.text_open {
                    self.text_open = true;
                    out.push_str(&frame(
                        Some("content_block_start"),
                        &json!({ "type": "content_block_start", "index": 0,
                                 "content_block": { "type": "text", "text": "" } }),
                    ));
                }
                out.push_str(&frame(
                    Some("content_block_delta"),
                    &json!({ "type": "content_block_delta", "index": 0,
                             "delta": { "type": "text_delta", "text": text } }),
                ));
                out
            }
        }
    }

    /// What ends the stream: the tool calls, the finish reason and the usage.
    pub fn finish(&mut self, tool_calls: &[ToolCall], usage: &Usage) -> String {
        let reason = match (self.dialect, tool_calls.is_empty()) {
            (Dialect::OpenAi, true) => "stop",
            (Dialect::OpenAi, false) => "tool_calls",
            (Dialect::Anthropic, true) => "end_turn",
            (Dialect::Anthropic, false) => "tool_use",
        };
        let mut out = String::new();
        match self.dialect {
            Dialect::OpenAi => {
                if !tool_calls.is_empty() {
                    out.push_str(&self.openai_chunk(
                        json!({ "tool_calls": openai_tool_calls(tool_calls) }),
                        None,
                    ));
                }
                out.push_str(&self.openai_chunk(json!({}), Some(reason)));
                if self.include_usage {
                    out.push_str(&frame(
                        None,
                        &json!({ "id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk",
                                 "created": self.created, "model": self.model, "choices": [],
                                 "usage": openai_usage(usage) }),
                    ));
                }
                out.push_str("data: [DONE]\n\n");
            }
            Dialect::Anthropic => {
                let mut index = 0;
                if self.text_open {
                    out.push_str(&frame(
                        Some("content_block_stop"),
                        &json!({ "type": "content_block_stop", "index": 0 }),
                    ));
                    index = 1;
                }
                for call in tool_calls {
                    out.push_str(&frame(
                        Some("content_block_start"),
                        &json!({ "type": "content_block_start", "index": index,
                                 "content_block": { "type": "tool_use", "id": call.id, "name": call.name, "input": {} } }),
                    ));
                    out.push_str(&frame(
                        Some("content_block_delta"),
                        &json!({ "type": "content_block_delta", "index": index,
                                 "delta": { "type": "input_json_delta",
                                            "partial_json": anthropic_input(&call.arguments).to_string() } }),
                    ));
                    out.push_str(&frame(
                        Some("content_block_stop"),
                        &json!({ "type": "content_block_stop", "index": index }),
                    ));
                    index += 1;
                }
                out.push_str(&frame(
                    Some("message_delta"),
                    &json!({ "type": "message_delta",
                             "delta": { "stop_reason": reason, "stop_sequence": null },
                             "usage": { "output_tokens": usage.completion_tokens } }),
                ));
                out.push_str(&frame(
                    Some("message_stop"),
                    &json!({ "type": "message_stop" }),
                ));
            }
        }
        out
    }

    /// An error after the stream began, in the dialect's error shape; it ends the stream.
    pub fn error(&self, status: u16, code: &str, message: &str) -> String {
        match self.dialect {
            Dialect::OpenAi => frame(None, &error_body(self.dialect, status, code, message, None)),
            Dialect::Anthropic => frame(
                Some("error"),
                &error_body(self.dialect, status, code, message, None),
            ),
        }
    }
}

/// OpenAI's error `type` for a status.
fn openai_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "invalid_request_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error body in `dialect`'s shape: OpenAI's `{"error": {message, type, param, code}}`
/// (`code` is the gateway's stable code) or Anthropic's `{"type": "error", "error": {type,
/// message}}`.
pub fn error_body(
    dialect: Dialect,
    status: u16,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Value {
    match dialect {
        Dialect::OpenAi => json!({ "error": {
            "message": message, "type": openai_type(status), "param": param, "code": code } }),
        Dialect::Anthropic => json!({ "type": "error", "error": {
            "type": anthropic_type(status), "message": message } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_data(frames: &str) -> Vec<Value> {
        frames
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn an_openai_request_with_a_tool_round_reads_into_one_conversation() {
        let r = openai_request(&json!({
            "model": "gpt-x", "stream": true, "stream_options": { "include_usage": true }, "user": "u1",
            "max_completion_tokens": 50,
            "messages": [
                { "role": "developer", "content": "be brief" },
                { "role": "user", "content": [{ "type": "text", "text": "weather in " }, { "type": "text", "text": "Oslo?" }] },
                { "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function",
                    "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } }] },
                { "role": "tool", "tool_call_id": "c1", "content": "3 degrees" }
            ],
            "tools": [{ "type": "function", "function": { "name": "weather", "parameters": { "type": "object" } } }]
        }))
        .unwrap();
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.last_user_text(), "weather in Oslo?");
        assert_eq!(
            r.messages[2].tool_calls[0].arguments,
            json!({"city": "Oslo"})
        );
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.tools[0].name, "weather");
        assert!(r.stream && r.include_usage);
        assert_eq!((r.max_tokens, r.user.as_deref()), (Some(50), Some("u1")));
    }

    #[test]
    fn bad_openai_requests_name_the_field() {
        let param = |body: Value| openai_request(&body).unwrap_err().param;
        assert_eq!(param(json!({ "messages": [] })), Some("model".into()));
        assert_eq!(
            param(json!({ "model": "m", "messages": [] })),
            Some("messages".into())
        );
        assert_eq!(
            param(json!({ "model": "m", "messages": [{ "role": "robot", "content": "x" }] })),
            Some("messages[0].role".into())
        );
        assert_eq!(
            param(json!({ "model": "m", "messages": [{ "role": "tool", "content": "x" }] })),
            Some("messages[0].tool_call_id".into())
        );
        assert_eq!(
            param(
                json!({ "model": "m", "stream": "yes", "messages": [{ "role": "user", "content": "x" }] })
            ),
            Some("stream".into())
        );
        assert_eq!(openai_request(&json!([1])).unwrap_err().param, None);
    }

    #[test]
    fn an_anthropic_request_moves_tool_results_into_tool_messages() {
        let r = anthropic_request(&json!({
            "model": "claude-x", "max_tokens": 100, "system": [{ "type": "text", "text": "be brief" }],
            "metadata": { "user_id": "u2" },
            "messages": [
                { "role": "user", "content": "weather?" },
                { "role": "assistant", "content": [{ "type": "tool_use", "id": "t1", "name": "weather", "input": { "city": "Oslo" } }] },
                { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t1", "content": [{ "type": "text", "text": "3" }] }] }
            ],
            "tools": [{ "name": "weather", "description": "d", "input_schema": { "type": "object" } }]
        }))
        .unwrap();
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::Tool]
        );
        assert_eq!(r.messages[3].content, "3");
        assert_eq!(r.messages[2].tool_calls[0].name, "weather");
        assert_eq!((r.max_tokens, r.user.as_deref()), (Some(100), Some("u2")));
        assert_eq!(
            anthropic_request(
                &json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] })
            )
            .unwrap_err()
            .param
            .as_deref(),
            Some("max_tokens")
        );
    }

    fn answer(tool_calls: Vec<ToolCall>) -> Answer {
        Answer {
            id: "1".into(),
            model: "m".into(),
            content: if tool_calls.is_empty() {
                "hi".into()
            } else {
                String::new()
            },
            tool_calls,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
            },
            created: 9,
        }
    }

    fn call() -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: "weather".into(),
            arguments: json!({ "city": "Oslo" }),
        }
    }

    #[test]
    fn whole_answers_render_in_each_dialect() {
        let a = answer(vec![call()]).render(Dialect::OpenAi);
        assert_eq!(a["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(a["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            a["choices"][0]["message"]["tool_calls"][0],
            json!({ "id": "c1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } })
        );
        assert_eq!(a["usage"]["total_tokens"], 7);
        let b = answer(vec![]).render(Dialect::Anthropic);
        assert_eq!(b["content"], json!([{ "type": "text", "text": "hi" }]));
        assert_eq!(
            (
                b["stop_reason"].as_str(),
                b["usage"]["output_tokens"].as_u64()
            ),
            (Some("end_turn"), Some(4))
        );
        let c = answer(vec![call()]).render(Dialect::Anthropic);
        assert_eq!(c["content"][0]["input"], json!({ "city": "Oslo" }));
    }

    #[test]
    fn an_openai_stream_sends_text_then_tool_calls_then_usage_and_done() {
        let mut e = StreamEncoder::new(Dialect::OpenAi, "1", "m", 9, true);
        let mut out = e.start(3);
        out.push_str(&e.chunk("he"));
        out.push_str(&e.finish(&[call()], &answer(vec![]).usage));
        assert!(out.ends_with("data: [DONE]\n\n"));
        let data = sse_data(&out);
        assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(data[1]["choices"][0]["delta"]["content"], "he");
        assert_eq!(data[2]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(data[3]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(data[4]["usage"]["total_tokens"], 7);
        assert!(data.iter().all(|d| d["object"] == "chat.completion.chunk"));
    }

    #[test]
    fn an_anthropic_stream_opens_and_closes_each_block_in_order() {
        let mut e = StreamEncoder::new(Dialect::Anthropic, "1", "m", 9, true);
        let mut out = e.start(3);
        out.push_str(&e.chunk("a"));
        out.push_str(&e.chunk("b"));
        out.push_str(&e.finish(&[call()], &answer(vec![]).usage));
        let events: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            events,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let data = sse_data(&out);
        assert_eq!(data[5]["index"], 1);
        assert_eq!(data[6]["delta"]["partial_json"], "{\"city\":\"Oslo\"}");
        assert_eq!(data[8]["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn errors_take_each_providers_shape_and_type() {
        let o = error_body(Dialect::OpenAi, 429, "rate_limited", "slow down", None);
        assert_eq!(o["error"]["type"], "rate_limit_error");
        assert_eq!(o["error"]["code"], "rate_limited");
        let a = error_body(Dialect::Anthropic, 401, "invalid_api_key", "no", None);
        assert_eq!(
            a,
            json!({ "type": "error", "error": { "type": "authentication_error", "message": "no" } })
        );
        assert_eq!(anthropic_type(404), "not_found_error");
        assert_eq!(openai_type(502), "api_error");
        let reply = json!({ "toolCalls": [{ "id": "c", "name": "n", "arguments": {} }],
                            "tokenUsage": { "promptTokens": 1, "completionTokens": 2 } });
        let (calls, usage) = reply_parts(&reply);
        assert_eq!((calls.len(), usage.total_tokens), (1, 3));
    }
}

//! The two wire protocols: OpenAI-compatible chat completions and Anthropic messages.
//!
//! Owns turning a [`ChatRequest`] into each provider's JSON body (tools and tool results
//! included) and each provider's answer back into a [`ChatResponse`] with normalised usage.
//! Pure functions; the HTTP exchange is the `Client`'s, in the parent module.

use serde_json::{json, Map, Value};

use super::{ChatMessage, ChatRequest, ChatResponse, Role, ToolCall};
use crate::broker::events::Usage;

/// The OpenAI `chat/completions` body.
pub fn openai_body(model: &str, req: &ChatRequest) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| match m.role {
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
                "content": m.content,
            }),
            Role::Assistant if !m.tool_calls.is_empty() => json!({
                "role": "assistant",
                "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
                "tool_calls": m.tool_calls.iter().map(|c| json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments.to_string() },
                })).collect::<Vec<_>>(),
            }),
            role => json!({ "role": role.as_str(), "content": m.content }),
        })
        .collect();
    let mut body = json!({ "model": model, "messages": messages });
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
            .collect();
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = req.max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

/// Reads an OpenAI answer.
pub fn openai_response(body: &Value) -> Result<ChatResponse, String> {
    let message = body
        .pointer("/choices/0/message")
        .ok_or("the answer has no choices[0].message")?;
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let args = &c["function"]["arguments"];
                    ToolCall {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        name: c["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        // Models send arguments as a JSON string; a broken one reaches the tool
                        // as a string and fails its schema, which goes back to the model.
                        arguments: match args {
                            Value::String(s) => {
                                serde_json::from_str(s).unwrap_or_else(|_| json!(s))
                            }
                            other => other.clone(),
                        },
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let u = &body["usage"];
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let completion = u["completion_tokens"].as_u64().unwrap_or(0);
    Ok(ChatResponse {
        content: message["content"].as_str().unwrap_or_default().to_string(),
        tool_calls,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: u["total_tokens"].as_u64().unwrap_or(prompt + completion),
        },
        model: body["model"].as_str().unwrap_or_default().to_string(),
        provider: String::new(),
    })
}

/// The Anthropic `messages` body. System messages go to `system`; tool results become
/// `tool_result` blocks of a user turn; consecutive turns of one role are merged, as the API
/// requires alternation.
pub fn anthropic_body(model: &str, req: &ChatRequest, default_max_tokens: u32) -> Value {
    let system: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in req.messages.iter().filter(|m| m.role != Role::System) {
        let (role, blocks) = anthropic_blocks(m);
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": req.max_tokens.unwrap_or(default_max_tokens),
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !req.tools.is_empty() {
        body["tools"] = req
            .tools
            .iter()
            .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
            .collect();
    }
    if let Some(t) = req.temperature {
        // Anthropic accepts 0–1; Open Astra's range is 0–2.
        body["temperature"] = json!(t.min(1.0));
    }
    body
}

fn anthropic_blocks(m: &ChatMessage) -> (&'static str, Vec<Value>) {
    match m.role {
        Role::Tool => (
            "user",
            vec![
                json!({ "type": "tool_result", "tool_use_id": m.tool_call_id.clone().unwrap_or_default(), "content": m.content }),
            ],
        ),
        Role::Assistant => {
            let mut blocks = Vec::new();
            if !m.content.is_empty() {
                blocks.push(json!({ "type": "text", "text": m.content }));
            }
            for c in &m.tool_calls {
                let input = if c.arguments.is_object() {
                    c.arguments.clone()
                } else {
                    Value::Object(Map::new())
                };
                blocks.push(
                    json!({ "type": "tool_use", "id": c.id, "name": c.name, "input": input }),
                );
            }
            ("assistant", blocks)
        }
        _ => ("user", vec![json!({ "type": "text", "text": m.content })]),
    }
}

/// Reads an Anthropic answer.
pub fn anthropic_response(body: &Value) -> Result<ChatResponse, String> {
    let blocks = body["content"]
        .as_array()
        .ok_or("the answer has no content array")?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => content.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or_default().to_string(),
                name: block["name"].as_str().unwrap_or_default().to_string(),
                arguments: block["input"].clone(),
            }),
            _ => {}
        }
    }
    let prompt = body["usage"]["input_tokens"].as_u64().unwrap_or(0);
    let completion = body["usage"]["output_tokens"].as_u64().unwrap_or(0);
    Ok(ChatResponse {
        content,
        tool_calls,
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        },
        model: body["model"].as_str().unwrap_or_default().to_string(),
        provider: String::new(),
    })
}

/// The provider's own error text from an error body, if it has one.
pub fn error_message(body: &Value) -> Option<String> {
    body.pointer("/error/message")
        .or_else(|| body.get("error").filter(|e| e.is_string()))
        .or_else(|| body.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::super::ToolDefinition;
    use super::*;

    fn conversation() -> ChatRequest {
        ChatRequest {
            messages: vec![
                ChatMessage::text(Role::System, "be brief"),
                ChatMessage::text(Role::User, "weather in Oslo?"),
                ChatMessage {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Oslo"}),
                    }],
                    tool_call_id: None,
                },
                ChatMessage {
                    role: Role::Tool,
                    content: "{\"c\":3}".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("c1".into()),
                },
            ],
            tools: vec![ToolDefinition {
                name: "weather".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            temperature: Some(1.5),
            max_tokens: None,
        }
    }

    #[test]
    fn openai_body_carries_tool_calls_as_json_strings_and_tool_results_by_id() {
        let body = openai_body("gpt-4o", &conversation());
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
        assert_eq!(body["temperature"], 1.5);
    }

    #[test]
    fn anthropic_body_moves_system_out_and_keeps_turns_alternating() {
        let body = anthropic_body("claude", &conversation(), 4096);
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["temperature"], 1.0, "capped to Anthropic's range");
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "c1");
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
    }

    #[test]
    fn answers_are_read_with_normalised_usage_and_tool_calls() {
        let r = openai_response(&json!({ "model": "m", "choices": [{ "message": { "content": null,
            "tool_calls": [{ "id": "x", "function": { "name": "t", "arguments": "{\"a\":1}" } }] } }],
            "usage": { "prompt_tokens": 3, "completion_tokens": 4 } })).unwrap();
        assert_eq!(r.tool_calls[0].arguments, json!({"a": 1}));
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7
            }
        );
        let r = anthropic_response(&json!({ "content": [{ "type": "text", "text": "hi" },
            { "type": "tool_use", "id": "u", "name": "t", "input": { "b": 2 } }],
            "usage": { "input_tokens": 5, "output_tokens": 6 } }))
        .unwrap();
        assert_eq!(
            (
                r.content.as_str(),
                r.tool_calls[0].name.as_str(),
                r.usage.total_tokens
            ),
            ("hi", "t", 11)
        );
        assert!(openai_response(&json!({})).is_err());
        assert_eq!(
            error_message(&json!({"error": {"message": "bad key"}})).as_deref(),
            Some("bad key")
        );
    }
}

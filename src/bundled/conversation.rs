//! `openai` and `anthropic` (priority 50): keep a session's conversation and hand it, with the
//! model parameters, to the request template.
//!
//! Both run the same hook sequence (reset the history on `initialize`/`onDisconnect`, add the
//! user's turn and expose `${messages}` and the parameters in `beforeSend`, the history as a
//! `$private` key so it never reaches the reply or the transcript, record the answer and its
//! usage in `afterReceive`); an [`Api`] holds what differs between the two wire formats:
//! OpenAI's system message and `usage.prompt_tokens`, Anthropic's separate `system`, strict role
//! alternation, text blocks and `usage.input_tokens`. Does not own sending (`connector`).

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{add_tokens, field, manifest, messages, select, text, usage};
use crate::plugin::{FieldType, Hook, HookContext, HookSet, Plugin, PluginError, PluginManifest};

/// Which provider's conversation format a [`Conversation`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// Keeps the conversation of each session and exposes it to the request template.
pub struct Conversation {
    api: Api,
}

impl Conversation {
    pub fn openai() -> Self {
        Conversation { api: Api::OpenAi }
    }

    pub fn anthropic() -> Self {
        Conversation {
            api: Api::Anthropic,
        }
    }

    /// The state a session starts with (and returns to on disconnect).
    fn reset(&self, ctx: &mut HookContext, hook: Hook) {
        let prompt = text(ctx, "systemPrompt").map(str::to_owned);
        match self.api {
            Api::OpenAi => {
                // OpenAI carries the system prompt as the first message of a new conversation.
                let history: Vec<Value> = prompt
                    .filter(|_| hook == Hook::Initialize)
                    .map(|p| json!({ "role": "system", "content": p }))
                    .into_iter()
                    .collect();
                ctx.state.insert("messages".into(), Value::Array(history));
                ctx.state.insert("totalTokens".into(), json!(0));
            }
            Api::Anthropic => {
                ctx.state.insert("messages".into(), json!([]));
                ctx.state.insert("totalInputTokens".into(), json!(0));
                ctx.state.insert("totalOutputTokens".into(), json!(0));
                ctx.state.insert("systemPrompt".into(), json!(prompt));
            }
        }
    }

    /// Adds the user's turn; Anthropic's roles must alternate, so an unanswered user turn is
    /// replaced rather than doubled.
    fn add_user_turn(&self, history: &mut Vec<Value>, message: &str) {
        let turn = json!({ "role": "user", "content": message });
        match history.last_mut() {
            Some(last) if self.api == Api::Anthropic && last["role"] == "user" => *last = turn,
            _ => history.push(turn),
        }
    }

    /// The request-template variables of one send. The history and the system prompt are
    /// listed under `$private`: later plugins and the template see them, but the reply and the
    /// transcript do not (each row would otherwise carry the whole conversation so far).
    fn variables(&self, ctx: &HookContext, history: Vec<Value>) -> Value {
        let cfg = &ctx.plugin_config;
        let param = |key: &str, default: Value| cfg.get(key).cloned().unwrap_or(default);
        match self.api {
            Api::OpenAi => json!({
                "messages": history,
                "model": param("model", json!("gpt-4")),
                "temperature": param("temperature", json!(1)),
                "max_tokens": param("max_tokens", json!(1024)),
                "$private": ["messages"],
            }),
            Api::Anthropic => {
                let mut vars = json!({
                    "messages": history,
                    "model": param("model", Value::Null),
                    "max_tokens": param("max_tokens", json!(1024)),
                    "temperature": param("temperature", json!(1)),
                    "$private": ["messages", "system", "systemPrompt"],
                });
                if let Some(prompt) = ctx.state.get("systemPrompt").filter(|p| !p.is_null()) {
                    vars["system"] = prompt.clone();
                    vars["systemPrompt"] = prompt.clone();
                }
                vars
            }
        }
    }

    /// Reads the answer's text and usage out of the raw upstream body; returns the normalised
    /// usage, after adding it to the session's totals.
    fn read_answer(&self, ctx: &mut HookContext, response: &mut Value) -> Option<Value> {
        let raw = &response["metadata"]["rawResponse"];
        let usage_of = |input: &str, output: &str| {
            let u = &raw["usage"];
            u.is_object().then(|| {
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                (n(input), n(output), u["total_tokens"].as_u64())
            })
        };
        match self.api {
            Api::OpenAi => {
                let (prompt, completion, total) = usage_of("prompt_tokens", "completion_tokens")?;
                let normalised = usage(prompt, completion, total);
                let sum = normalised["totalTokens"].as_u64().unwrap_or(0);
                add_tokens(ctx, "totalTokens", sum);
                Some(normalised)
            }
            Api::Anthropic => {
                let block = raw["content"]
                    .as_array()
                    .and_then(|blocks| blocks.iter().find(|b| b["type"] == "text"))
                    .and_then(|b| b["text"].as_str())
                    .map(str::to_owned);
                let tokens = usage_of("input_tokens", "output_tokens");
                if let Some(text) = block {
                    response["content"] = json!(text);
                }
                let (input, output, _) = tokens?;
                add_tokens(ctx, "totalInputTokens", input);
                add_tokens(ctx, "totalOutputTokens", output);
                Some(usage(input, output, None))
            }
        }
    }
}

#[async_trait(?Send)]
impl Plugin for Conversation {
    fn manifest(&self) -> PluginManifest {
        match self.api {
            Api::OpenAi => manifest(
                "openai",
                "OpenAI Conversation Plugin",
                "Manages conversation history, system prompts and token usage for OpenAI-compatible APIs. History and model parameters reach the request template as ${messages}, ${model}, ${temperature} and ${max_tokens}.",
                50,
                crate::plugin::CONNECTOR_TYPES,
                vec![
                    select("model", "Model", &["gpt-4", "gpt-4-turbo", "gpt-4o", "gpt-3.5-turbo"], true, Some("gpt-4"), "OpenAI model to use"),
                    field("temperature", "Temperature", FieldType::Number, false, Some(json!(1)), "Sampling temperature (0-2)."),
                    field("max_tokens", "Max Tokens", FieldType::Number, false, Some(json!(1024)), "Maximum tokens in the answer."),
                    field("systemPrompt", "System Prompt", FieldType::String, false, None, "First message of the conversation."),
                ],
            ),
            Api::Anthropic => manifest(
                "anthropic",
                "Anthropic Conversation Plugin",
                "Manages conversation history with role alternation, the system prompt, text-block extraction and token usage for Anthropic APIs. Variables: ${messages}, ${system}, ${model}, ${max_tokens}, ${temperature}.",
                50,
                crate::plugin::CONNECTOR_TYPES,
                vec![
                    select("model", "Model", &["claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"], true, None, "Anthropic model to use"),
                    field("max_tokens", "Max Tokens", FieldType::Number, false, Some(json!(1024)), "Maximum tokens in the answer."),
                    field("temperature", "Temperature", FieldType::Number, false, Some(json!(1)), "Sampling temperature."),
                    field("systemPrompt", "System Prompt", FieldType::String, false, None, "Sent as `system`, never as a message."),
                ],
            ),
        }
    }

    fn connector_hooks(&self) -> HookSet {
        HookSet::EMPTY
            .with(Hook::Initialize)
            .with(Hook::BeforeSend)
            .with(Hook::AfterReceive)
            .with(Hook::OnDisconnect)
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: &Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        match hook {
            Hook::Initialize | Hook::OnDisconnect => {
                self.reset(ctx, hook);
                Ok(Some(Value::Null))
            }
            Hook::BeforeSend => {
                let message = input["message"].as_str().unwrap_or_default().to_string();
                let mut history = messages(ctx);
                self.add_user_turn(&mut history, &message);
                ctx.state
                    .insert("messages".into(), Value::Array(history.clone()));
                let metadata = self.variables(ctx, history);
                Ok(Some(json!({ "message": message, "metadata": metadata })))
            }
            Hook::AfterReceive => {
                let mut response = input["response"].clone();
                let usage = self.read_answer(ctx, &mut response);
                let mut history = messages(ctx);
                history.push(json!({ "role": "assistant", "content": response["content"] }));
                ctx.state.insert("messages".into(), Value::Array(history));
                if let Some(usage) = usage {
                    response["metadata"]["tokenUsage"] = usage;
                }
                Ok(Some(json!({ "response": response })))
            }
            Hook::OnConnect | Hook::OnChunk => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(config: Value) -> HookContext {
        HookContext {
            plugin_config: config.as_object().cloned().unwrap_or_default(),
            ..HookContext::default()
        }
    }

    async fn turn(plugin: &Conversation, ctx: &mut HookContext, say: &str, raw: Value) -> Value {
        plugin
            .connector_hook("", Hook::BeforeSend, &json!({ "message": say }), ctx)
            .await
            .unwrap();
        let response = json!({ "content": "", "metadata": { "rawResponse": raw } });
        plugin
            .connector_hook(
                "",
                Hook::AfterReceive,
                &json!({ "response": response }),
                ctx,
            )
            .await
            .unwrap()
            .unwrap()
    }

    #[actix_web::test]
    async fn openai_keeps_the_system_prompt_first_and_sums_usage() {
        let plugin = Conversation::openai();
        let mut ctx = ctx(json!({ "systemPrompt": "Be brief." }));
        plugin
            .connector_hook("", Hook::Initialize, &Value::Null, &mut ctx)
            .await
            .unwrap();
        let raw = json!({ "usage": { "prompt_tokens": 3, "completion_tokens": 2 } });
        let out = turn(&plugin, &mut ctx, "hi", raw.clone()).await;
        assert_eq!(
            out["response"]["metadata"]["tokenUsage"],
            json!({ "promptTokens": 3, "completionTokens": 2, "totalTokens": 5 })
        );
        turn(&plugin, &mut ctx, "again", raw).await;
        let roles: Vec<&str> = ctx.state["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
        assert_eq!(ctx.state["totalTokens"], json!(10));
    }

    #[actix_web::test]
    async fn anthropic_reads_text_blocks_and_never_doubles_a_user_turn() {
        let plugin = Conversation::anthropic();
        let mut ctx = ctx(json!({ "systemPrompt": "Be brief.", "model": "m" }));
        plugin
            .connector_hook("", Hook::Initialize, &Value::Null, &mut ctx)
            .await
            .unwrap();
        let first = plugin
            .connector_hook("", Hook::BeforeSend, &json!({ "message": "a" }), &mut ctx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first["metadata"]["system"], json!("Be brief."));
        assert_eq!(
            first["metadata"]["$private"],
            json!(["messages", "system", "systemPrompt"])
        );
        // The first send failed upstream: the next user turn replaces the unanswered one.
        let raw = json!({
            "content": [{ "type": "text", "text": "hello" }],
            "usage": { "input_tokens": 4, "output_tokens": 1 },
        });
        let out = turn(&plugin, &mut ctx, "b", raw).await;
        assert_eq!(out["response"]["content"], json!("hello"));
        assert_eq!(
            out["response"]["metadata"]["tokenUsage"]["totalTokens"],
            json!(5)
        );
        assert_eq!(
            ctx.state["messages"],
            json!([{ "role": "user", "content": "b" }, { "role": "assistant", "content": "hello" }])
        );
        assert_eq!(ctx.state["totalInputTokens"], json!(4));
    }
}

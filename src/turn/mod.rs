//! Agent turns: one `POST /api/agents/{id}/chat` turn, Open Astra's agent loop.
//!
//! Owns a turn: render the system prompt, add the conversation's history and the user's
//! message, call the model through the agent's resolved client, run the tool calls it asks for
//! through the tool registry (the agent's allow/deny respected; a refused or failing tool goes
//! back to the model as a tool result), at most `max_tool_rounds` rounds, then keep the turn in
//! the conversation and publish `agent.started` / `agent.completed` / `agent.failed`. Turns of
//! one conversation run one at a time. Conversations live in memory (least recently used go
//! first). Does not own agent configs (`agent`), the model protocol (`inference`) nor calling a
//! tool's plugin (`plugin::call`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::agent::{Agent, AgentConfig};
use crate::broker::events::{AgentCompleted, AgentFailed, AgentStarted, Usage};
use crate::broker::BrokerHandle;
use crate::inference::{ChatMessage, ChatRequest, InferenceError, Role, ToolDefinition};
use crate::plugin::host::PluginHost;
use crate::tool::Caller;

/// Why a turn could not be played.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("agent '{0}' is not registered")]
    NotFound(String),
    #[error("`message` must be a non-empty string")]
    EmptyMessage,
    #[error("`sessionId` '{0}' must be 1-128 characters of letters, digits, '.', '_' or '-'")]
    InvalidSessionId(String),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("the turn did not finish within {0} ms")]
    Timeout(u64),
}

/// What a turn answered (Open Astra's `/agent/chat` body).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnOutcome {
    pub content: String,
    pub session_id: String,
    /// Tools that ran, in the order first used.
    pub tools_used: Vec<String>,
    pub usage: Usage,
    pub tool_call_count: u32,
    /// The provider that answered (a fallback's when it stood in).
    pub provider: String,
}

type Conversation = Arc<tokio::sync::Mutex<Vec<ChatMessage>>>;

#[derive(Default)]
struct Conversations {
    by_key: HashMap<(String, String), (Conversation, u64)>,
    clock: u64,
}

/// What the runner plays turns with (from `[agent]`).
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub max_tool_rounds: u32,
    /// Messages of history kept per conversation.
    pub history_messages: usize,
    /// Conversations kept in memory (least recently used go first).
    pub max_sessions: usize,
    pub turn_timeout: Duration,
    /// Time one tool call may take.
    pub tool_timeout: Duration,
}

/// Plays agent turns.
pub struct AgentRunner {
    plugins: Arc<PluginHost>,
    broker: BrokerHandle,
    settings: RunnerConfig,
    conversations: Mutex<Conversations>,
    /// Failed turns in a row, per agent (`agent.failed`'s `consecutiveFailures`).
    failures: Mutex<HashMap<String, u32>>,
}

impl AgentRunner {
    pub fn new(
        plugins: Arc<PluginHost>,
        broker: BrokerHandle,
        settings: RunnerConfig,
    ) -> Arc<Self> {
        Arc::new(AgentRunner {
            plugins,
            broker,
            settings,
            conversations: Mutex::new(Conversations::default()),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Plays one turn of agent `agent_id` in conversation `session_id` (a new one if `None`).
    pub async fn chat(
        &self,
        agent_id: &str,
        message: &str,
        session_id: Option<String>,
    ) -> Result<TurnOutcome, AgentError> {
        if message.trim().is_empty() {
            return Err(AgentError::EmptyMessage);
        }
        let agent = self
            .plugins
            .extensions()
            .agents
            .get(agent_id)
            .ok_or_else(|| AgentError::NotFound(agent_id.to_string()))?;
        let session_id = match session_id {
            Some(id) if valid_session_id(&id) => id,
            Some(id) => return Err(AgentError::InvalidSessionId(id)),
            None => crate::util::random_id(),
        };
        self.broker.emit(&AgentStarted {
            agent_id: agent_id.to_string(),
            session_id: session_id.clone(),
            surface: "api".into(),
        });
        let began = Instant::now();
        let span = tracing::info_span!("agent_turn", agent = %agent_id, session = %session_id);
        let limit = self.settings.turn_timeout;
        let turn = tracing::Instrument::instrument(self.turn(&agent, &session_id, message), span);
        let outcome = match tokio::time::timeout(limit, turn).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AgentError::Timeout(limit.as_millis() as u64)),
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Ok(done) => {
                failures.remove(agent_id);
                self.broker.emit(&AgentCompleted {
                    agent_id: agent_id.to_string(),
                    session_id,
                    duration_ms: began.elapsed().as_secs_f64() * 1000.0,
                    usage: done.usage,
                    tool_call_count: done.tool_call_count,
                });
            }
            Err(error) => {
                let count = failures.entry(agent_id.to_string()).or_insert(0);
                *count += 1;
                tracing::warn!(agent = %agent_id, %error, consecutive = *count, "Agent turn failed.");
                self.broker.emit(&AgentFailed {
                    agent_id: agent_id.to_string(),
                    session_id,
                    error: error.to_string(),
                    consecutive_failures: *count,
                });
            }
        }
        outcome
    }

    async fn turn(
        &self,
        agent: &Agent,
        session_id: &str,
        message: &str,
    ) -> Result<TurnOutcome, AgentError> {
        let ext = self.plugins.extensions();
        let config = &agent.config;
        let client = ext.inference.resolve(&config.model)?;
        let conversation = self.conversation(&config.id, session_id);
        let mut history = conversation.lock().await;
        let offered: Vec<ToolDefinition> = ext
            .tools
            .list()
            .into_iter()
            .filter(|t| config.tools.permits(&t.spec.name))
            .map(|t| ToolDefinition {
                name: t.spec.name,
                description: t.spec.description,
                parameters: t.spec.parameters,
            })
            .collect();
        let mut messages = Vec::with_capacity(history.len() + 4);
        let system = render_prompt(config);
        if !system.is_empty() {
            messages.push(ChatMessage::text(Role::System, &system));
        }
        messages.extend(history.iter().cloned());
        let first_new = messages.len();
        messages.push(ChatMessage::text(Role::User, message));

        let caller = Caller {
            agent_id: Some(config.id.clone()),
            session_id: Some(session_id.to_string()),
        };
        let mut usage = Usage::default();
        let mut tools_used: Vec<String> = Vec::new();
        let mut tool_call_count = 0;
        let max_rounds = self.settings.max_tool_rounds;
        for round in 0..=max_rounds {
            // The last round offers no tools, so the model has to answer.
            let tools = if round < max_rounds {
                offered.clone()
            } else {
                Vec::new()
            };
            let response = client
                .chat(ChatRequest {
                    messages: messages.clone(),
                    tools,
                    temperature: None,
                    max_tokens: None,
                })
                .await?;
            usage.add(response.usage);
            if response.tool_calls.is_empty() || round == max_rounds {
                messages.push(ChatMessage::text(Role::Assistant, &response.content));
                history.extend(messages.drain(first_new..));
                trim(&mut history, self.settings.history_messages);
                return Ok(TurnOutcome {
                    content: response.content,
                    session_id: session_id.to_string(),
                    tools_used,
                    usage,
                    tool_call_count,
                    provider: response.provider,
                });
            }
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: response.content.clone(),
                tool_calls: response.tool_calls.clone(),
                tool_call_id: None,
            });
            for call in response.tool_calls {
                tool_call_count += 1;
                let result = if !offered.iter().any(|t| t.name == call.name) {
                    json!({ "error": format!("tool '{}' is not available to this agent", call.name) })
                } else {
                    let invoked = crate::plugin::call::tool(
                        &self.plugins,
                        &self.broker,
                        &call.name,
                        call.arguments.clone(),
                        &caller,
                        self.settings.tool_timeout,
                    );
                    match invoked.await {
                        Ok(done) => {
                            if !tools_used.contains(&call.name) {
                                tools_used.push(call.name.clone());
                            }
                            done.result
                        }
                        // The model decides what to do about a failed tool (Open Astra).
                        Err(error) => json!({ "error": error.to_string() }),
                    }
                };
                messages.push(ChatMessage {
                    role: Role::Tool,
                    content: result.to_string(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call.id),
                });
            }
        }
        unreachable!("the last round always returns")
    }

    /// The conversation of `(agent, session)`, created on first use; the least recently used
    /// one goes when there are too many.
    fn conversation(&self, agent: &str, session: &str) -> Conversation {
        let mut all = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
        all.clock += 1;
        let now = all.clock;
        let key = (agent.to_string(), session.to_string());
        if let Some((conversation, used)) = all.by_key.get_mut(&key) {
            *used = now;
            return conversation.clone();
        }
        if all.by_key.len() >= self.settings.max_sessions {
            if let Some(oldest) = all
                .by_key
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                all.by_key.remove(&oldest);
            }
        }
        let conversation = Conversation::default();
        all.by_key.insert(key, (conversation.clone(), now));
        conversation
    }

    /// The messages of a conversation, for tests and the API.
    pub async fn history(&self, agent: &str, session: &str) -> Option<Vec<ChatMessage>> {
        let conversation = {
            let all = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
            all.by_key
                .get(&(agent.to_string(), session.to_string()))
                .map(|(c, _)| c.clone())
        }?;
        let history = conversation.lock().await;
        Some(history.clone())
    }
}

fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keeps at most `max` messages, starting at a user message so no tool result is orphaned.
fn trim(history: &mut Vec<ChatMessage>, max: usize) {
    if history.len() <= max {
        return;
    }
    let mut cut = history.len() - max;
    while cut < history.len() && history[cut].role != Role::User {
        cut += 1;
    }
    history.drain(..cut);
}

/// The system prompt: `{{date}}`, `{{agentId}}` and `{{displayName}}` are filled in;
/// `{{#if memory}}…{{/if}}` blocks are dropped (switchyard keeps no memory tiers).
pub fn render_prompt(config: &AgentConfig) -> String {
    let mut text = config.system_prompt_template.clone();
    while let Some(start) = text.find("{{#if memory}}") {
        let end = text[start..]
            .find("{{/if}}")
            .map(|e| start + e + "{{/if}}".len())
            .unwrap_or(text.len());
        text.replace_range(start..end, "");
    }
    let date = crate::util::rfc3339(std::time::SystemTime::now());
    text.replace("{{date}}", &date[..10])
        .replace("{{agentId}}", &config.id)
        .replace("{{displayName}}", &config.display_name)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_template_is_filled_in_and_memory_blocks_dropped() {
        let mut config =
            crate::agent::parse(None, &crate::agent::example("helper", "http://x")).unwrap();
        config.system_prompt_template = "I am {{displayName}} ({{agentId}}). {{#if memory}}Remember {{memory}}.{{/if}}Today is {{date}}.".into();
        let prompt = render_prompt(&config);
        assert!(
            prompt.starts_with("I am Example (helper). Today is 20"),
            "{prompt}"
        );
        assert!(!prompt.contains("{{"), "{prompt}");
    }

    #[test]
    fn history_is_trimmed_to_a_user_message_boundary() {
        let m = |role| ChatMessage::text(role, "x");
        let mut h = vec![
            m(Role::User),
            m(Role::Assistant),
            m(Role::Tool),
            m(Role::Assistant),
            m(Role::User),
            m(Role::Assistant),
        ];
        trim(&mut h, 5);
        assert_eq!(h.len(), 2, "the orphaned tool exchange goes too");
        assert_eq!(h[0].role, Role::User);
        let mut short = vec![m(Role::User)];
        trim(&mut short, 5);
        assert_eq!(short.len(), 1);
        assert!(valid_session_id("abc-1.2_3") && !valid_session_id("a b") && !valid_session_id(""));
    }
}

//! Agent turns: one `POST /api/agents/{id}/chat` turn, Open Astra's agent loop.
//!
//! Owns a turn: render the system prompt, add the conversation's history and the user's
//! message, call the model through the agent's resolved client, run the tool calls it asks for
//! through the tool registry (the agent's allow/deny respected; a refused or failing tool goes
//! back to the model as a tool result), at most `max_tool_rounds` rounds, then keep the turn in
//! the conversation and publish `agent.started` / `agent.completed` / `agent.failed`. An agent
//! whose turns failed `max_consecutive_failures` times in a row is paused (`agent.paused`):
//! it plays no turn until an operator resumes it (`agent.resumed`). Turns of
//! one conversation run one at a time. Conversations are kept in the store (written whole
//! after each turn, the turn answering once committed) with a cache in memory in front (least
//! recently used go first, read back from the store when used again). A conversation that
//! would pass its agent's context budget (`model.maxContextTokens`, else
//! `agent.context_tokens`; tokens estimated at four characters each) has its oldest messages
//! replaced by a summary the model writes (`agent.compacted`), sent as a system message.
//! A turn may be streamed (`play` with a sink): the model's text deltas, each tool call and
//! each tool result go to the sink as [`StreamFrame`]s and to the bus as `agent.stream.delta` /
//! `agent.stream.tool_call` / `agent.stream.tool_result`, then `agent.stream.complete`; the
//! turn runs to its end whether or not anyone still reads the sink, so it is kept in the
//! conversation and counted like any other.
//! Does not own agent configs (`agent`), the model protocol (`inference`) nor calling a
//! tool's plugin (`plugin::call`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;

use crate::agent::{Agent, AgentConfig};
use crate::broker::events::{
    AgentCompacted, AgentCompleted, AgentFailed, AgentPaused, AgentResumed, AgentStarted,
    AgentStreamComplete, AgentStreamDelta, AgentStreamToolCall, AgentStreamToolResult, Usage,
};
use crate::broker::BrokerHandle;
use crate::inference::{
    ChatMessage, ChatRequest, ChatResponse, InferenceError, Role, ToolCall, ToolDefinition,
};
use crate::plugin::host::PluginHost;
use crate::store::writer::StoreHandle;
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
    #[error("agent '{agent}' is paused after {failures} failed turns in a row; resume it with POST /api/agents/{agent}/resume")]
    Paused { agent: String, failures: u32 },
    #[error("agent '{0}' is not paused")]
    NotPaused(String),
}

/// Whether an agent takes turns, and its failed turns in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Active {
        failures: u32,
    },
    /// Too many failed turns in a row: no turn is played until an operator resumes it.
    Paused {
        failures: u32,
        last_error: String,
        since: SystemTime,
    },
}

impl Default for Standing {
    fn default() -> Self {
        Standing::Active { failures: 0 }
    }
}

impl Standing {
    pub fn failures(&self) -> u32 {
        match self {
            Standing::Active { failures } | Standing::Paused { failures, .. } => *failures,
        }
    }

    /// What a finished turn makes of this standing: a success clears the count, a failure
    /// adds one and pauses an active agent once the count reaches `threshold` (0: never).
    /// Answers true when this very turn paused it. A paused agent stays paused whatever a
    /// turn that was already under way does: only an operator resumes it.
    pub fn after_turn(
        self,
        outcome: Result<(), &str>,
        threshold: u32,
        now: SystemTime,
    ) -> (Standing, bool) {
        match (self, outcome) {
            (Standing::Active { .. }, Ok(())) => (Standing::Active { failures: 0 }, false),
            (Standing::Active { failures }, Err(error)) => {
                let failures = failures.saturating_add(1);
                if threshold > 0 && failures >= threshold {
                    let paused = Standing::Paused {
                        failures,
                        last_error: error.to_string(),
                        since: now,
                    };
                    (paused, true)
                } else {
                    (Standing::Active { failures }, false)
                }
            }
            (paused @ Standing::Paused { .. }, Ok(())) => (paused, false),
            (
                Standing::Paused {
                    failures, since, ..
                },
                Err(error),
            ) => (
                Standing::Paused {
                    failures: failures.saturating_add(1),
                    last_error: error.to_string(),
                    since,
                },
                false,
            ),
        }
    }

    /// The view `GET /api/agents` and `/health` show.
    pub fn status(&self) -> AgentStatus {
        match self {
            Standing::Active { failures } => AgentStatus {
                state: AgentState::Active,
                consecutive_failures: *failures,
                paused_at: None,
                last_error: None,
            },
            Standing::Paused {
                failures,
                last_error,
                since,
            } => AgentStatus {
                state: AgentState::Paused,
                consecutive_failures: *failures,
                paused_at: Some(crate::util::rfc3339(*since)),
                last_error: Some(last_error.clone()),
            },
        }
    }
}

/// `active` or `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Active,
    Paused,
}

/// An agent's standing as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub state: AgentState,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One step of a streamed turn, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum StreamFrame {
    /// Text as the model sent it.
    #[serde(rename = "delta")]
    Delta { text: String },
    /// The model asked for a tool call (sent before it runs).
    #[serde(rename = "tool_call")]
    ToolCall {
        id: String,
        name: String,
        arguments: serde_json::Value,
    },
    /// A tool call's result (or `{error}`), as it goes back to the model.
    #[serde(rename = "tool_result")]
    ToolResult {
        id: String,
        name: String,
        result: serde_json::Value,
    },
}

impl StreamFrame {
    /// The frame's type: the SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamFrame::Delta { .. } => "delta",
            StreamFrame::ToolCall { .. } => "tool_call",
            StreamFrame::ToolResult { .. } => "tool_result",
        }
    }
}

/// Where a streamed turn's frames go. A receiver that went away is not an error: the turn
/// goes on.
pub type FrameSink = tokio::sync::mpsc::UnboundedSender<StreamFrame>;

/// A turn checked and ready to play ([`AgentRunner::prepare`]).
#[derive(Debug, Clone)]
pub struct PreparedTurn {
    agent: Agent,
    session_id: String,
    message: String,
}

impl PreparedTurn {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
}

/// A streamed turn's frames, to the sink and the bus.
struct Streamer<'a> {
    sink: &'a FrameSink,
    broker: &'a BrokerHandle,
    agent_id: &'a str,
    session_id: &'a str,
}

impl Streamer<'_> {
    fn delta(&self, text: &str) {
        self.broker.emit(&AgentStreamDelta {
            agent_id: self.agent_id.to_string(),
            session_id: self.session_id.to_string(),
            delta: text.to_string(),
        });
        let _ = self.sink.send(StreamFrame::Delta {
            text: text.to_string(),
        });
    }

    fn tool_call(&self, call: &ToolCall) {
        self.broker.emit(&AgentStreamToolCall {
            agent_id: self.agent_id.to_string(),
            session_id: self.session_id.to_string(),
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            arguments: call.arguments.clone(),
        });
        let _ = self.sink.send(StreamFrame::ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        });
    }

    fn tool_result(&self, call: &ToolCall, result: &serde_json::Value) {
        self.broker.emit(&AgentStreamToolResult {
            agent_id: self.agent_id.to_string(),
            session_id: self.session_id.to_string(),
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            result: result.clone(),
        });
        let _ = self.sink.send(StreamFrame::ToolResult {
            id: call.id.clone(),
            name: call.name.clone(),
            result: result.clone(),
        });
    }
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

/// What is kept of one conversation.
#[derive(Debug, Default)]
struct Kept {
    /// The store was read for it already (or there is no store).
    loaded: bool,
    /// What compaction replaced, summarised.
    summary: Option<String>,
    messages: Vec<ChatMessage>,
}

type Conversation = Arc<tokio::sync::Mutex<Kept>>;

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
    /// Failed turns in a row that pause an agent (0: never).
    pub max_consecutive_failures: u32,
    /// Context window (estimated tokens) of agents whose model sets no `maxContextTokens`.
    pub context_tokens: u32,
}

/// Plays agent turns.
pub struct AgentRunner {
    plugins: Arc<PluginHost>,
    broker: BrokerHandle,
    /// Where conversations are kept across restarts (none: memory only).
    store: Option<StoreHandle>,
    settings: RunnerConfig,
    conversations: Mutex<Conversations>,
    /// Each agent's standing (absent: active, no failure yet).
    standings: Mutex<HashMap<String, Standing>>,
}

impl AgentRunner {
    pub fn new(
        plugins: Arc<PluginHost>,
        broker: BrokerHandle,
        store: Option<StoreHandle>,
        settings: RunnerConfig,
    ) -> Arc<Self> {
        Arc::new(AgentRunner {
            plugins,
            broker,
            store,
            settings,
            conversations: Mutex::new(Conversations::default()),
            standings: Mutex::new(HashMap::new()),
        })
    }

    /// Plays one turn of agent `agent_id` in conversation `session_id` (a new one if `None`).
    pub async fn chat(
        &self,
        agent_id: &str,
        message: &str,
        session_id: Option<String>,
    ) -> Result<TurnOutcome, AgentError> {
        let turn = self.prepare(agent_id, message, session_id)?;
        self.play(turn, None).await
    }

    /// Checks a turn before it is played: the message, the agent (registered, not paused) and
    /// the session id (a new one if `None`).
    pub fn prepare(
        &self,
        agent_id: &str,
        message: &str,
        session_id: Option<String>,
    ) -> Result<PreparedTurn, AgentError> {
        if message.trim().is_empty() {
            return Err(AgentError::EmptyMessage);
        }
        let agent = self
            .plugins
            .extensions()
            .agents
            .get(agent_id)
            .ok_or_else(|| AgentError::NotFound(agent_id.to_string()))?;
        if let Standing::Paused { failures, .. } = self.standing(agent_id) {
            return Err(AgentError::Paused {
                agent: agent_id.to_string(),
                failures,
            });
        }
        let session_id = match session_id {
            Some(id) if valid_session_id(&id) => id,
            Some(id) => return Err(AgentError::InvalidSessionId(id)),
            None => crate::util::random_id(),
        };
        Ok(PreparedTurn {
            agent,
            session_id,
            message: message.to_string(),
        })
    }

    /// Plays a prepared turn; streamed when `sink` is given.
    pub async fn play(
        &self,
        turn: PreparedTurn,
        sink: Option<FrameSink>,
    ) -> Result<TurnOutcome, AgentError> {
        let PreparedTurn {
            agent,
            session_id,
            message,
        } = turn;
        let agent_id = agent.config.id.as_str();
        self.broker.emit(&AgentStarted {
            agent_id: agent_id.to_string(),
            session_id: session_id.clone(),
            surface: "api".into(),
        });
        let began = Instant::now();
        let span = tracing::info_span!("agent_turn", agent = %agent_id, session = %session_id);
        let limit = self.settings.turn_timeout;
        let turn = tracing::Instrument::instrument(
            self.turn(&agent, &session_id, &message, sink.as_ref()),
            span,
        );
        let outcome = match tokio::time::timeout(limit, turn).await {
            Ok(outcome) => outcome,
            Err(_) => Err(AgentError::Timeout(limit.as_millis() as u64)),
        };
        let verdict: Result<(), String> = outcome.as_ref().map(drop).map_err(|e| e.to_string());
        let (standing, paused) = {
            let mut standings = self.standings.lock().unwrap_or_else(|e| e.into_inner());
            let entry = standings.entry(agent_id.to_string()).or_default();
            let (next, paused) = std::mem::take(entry).after_turn(
                verdict.as_ref().map(|_| ()).map_err(String::as_str),
                self.settings.max_consecutive_failures,
                SystemTime::now(),
            );
            *entry = next.clone();
            (next, paused)
        };
        match (&outcome, verdict) {
            (Ok(done), _) => {
                if sink.is_some() {
                    self.broker.emit(&AgentStreamComplete {
                        agent_id: agent_id.to_string(),
                        session_id: session_id.clone(),
                        usage: done.usage,
                        tool_call_count: done.tool_call_count,
                    });
                }
                self.broker.emit(&AgentCompleted {
                    agent_id: agent_id.to_string(),
                    session_id,
                    duration_ms: began.elapsed().as_secs_f64() * 1000.0,
                    usage: done.usage,
                    tool_call_count: done.tool_call_count,
                });
            }
            (Err(_), Err(error)) => {
                let count = standing.failures();
                tracing::warn!(agent = %agent_id, %error, consecutive = count, "Agent turn failed.");
                self.broker.emit(&AgentFailed {
                    agent_id: agent_id.to_string(),
                    session_id,
                    error: error.clone(),
                    consecutive_failures: count,
                });
                if paused {
                    tracing::warn!(agent = %agent_id, failures = count, "Agent paused after failed turns in a row; POST /api/agents/{agent_id}/resume resumes it.");
                    self.broker.emit(&AgentPaused {
                        agent_id: agent_id.to_string(),
                        failures: count,
                        last_error: error,
                    });
                }
            }
            // The verdict is the outcome's.
            (Err(_), Ok(())) => {}
        }
        outcome
    }

    async fn turn(
        &self,
        agent: &Agent,
        session_id: &str,
        message: &str,
        sink: Option<&FrameSink>,
    ) -> Result<TurnOutcome, AgentError> {
        let ext = self.plugins.extensions();
        let config = &agent.config;
        let client = ext.inference.resolve(&config.model)?;
        let conversation = self.conversation(&config.id, session_id);
        let mut kept = conversation.lock().await;
        if !kept.loaded {
            self.load(&config.id, session_id, &mut kept).await;
        }
        let system = render_prompt(config);
        let mut usage = Usage::default();
        let budget = config
            .model
            .max_context_tokens
            .unwrap_or(self.settings.context_tokens) as usize;
        let compacted = self
            .compact(
                &client, config, session_id, &system, message, budget, &mut kept, &mut usage,
            )
            .await;
        let streamer = sink.map(|sink| Streamer {
            sink,
            broker: &self.broker,
            agent_id: &config.id,
            session_id,
        });
        let outcome = self
            .rounds(
                &client,
                config,
                session_id,
                &system,
                message,
                &mut kept,
                usage,
                streamer.as_ref(),
            )
            .await;
        // A failed turn keeps no message, but a compaction it made stands.
        if outcome.is_ok() || compacted {
            self.persist(&config.id, session_id, &kept).await;
        }
        outcome
    }

    /// The model calls and tool runs of one turn; on success the turn's messages join the
    /// conversation.
    #[allow(clippy::too_many_arguments)]
    async fn rounds(
        &self,
        client: &crate::inference::Client,
        config: &AgentConfig,
        session_id: &str,
        system: &str,
        message: &str,
        kept: &mut Kept,
        mut usage: Usage,
        streamer: Option<&Streamer<'_>>,
    ) -> Result<TurnOutcome, AgentError> {
        let ext = self.plugins.extensions();
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
        let mut messages = Vec::with_capacity(kept.messages.len() + 5);
        if !system.is_empty() {
            messages.push(ChatMessage::text(Role::System, system));
        }
        if let Some(summary) = &kept.summary {
            messages.push(summary_message(summary));
        }
        messages.extend(kept.messages.iter().cloned());
        let first_new = messages.len();
        messages.push(ChatMessage::text(Role::User, message));

        let caller = Caller {
            agent_id: Some(config.id.clone()),
            session_id: Some(session_id.to_string()),
        };
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
            let request = ChatRequest {
                messages: messages.clone(),
                tools,
                temperature: None,
                max_tokens: None,
            };
            let response: ChatResponse = match streamer {
                None => client.chat(request).await?,
                Some(streamer) => {
                    client
                        .chat_stream(request, &mut |delta| streamer.delta(delta))
                        .await?
                }
            };
            usage.add(response.usage);
            if response.tool_calls.is_empty() || round == max_rounds {
                messages.push(ChatMessage::text(Role::Assistant, &response.content));
                kept.messages.extend(messages.drain(first_new..));
                trim(&mut kept.messages, self.settings.history_messages);
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
                if let Some(streamer) = streamer {
                    streamer.tool_call(&call);
                }
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
                if let Some(streamer) = streamer {
                    streamer.tool_result(&call, &result);
                }
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

    /// Reads a conversation that is not in memory from the store (once). A store that cannot
    /// be read leaves it empty: the turn is played without its history rather than refused.
    async fn load(&self, agent_id: &str, session_id: &str, kept: &mut Kept) {
        kept.loaded = true;
        let Some(store) = &self.store else {
            return;
        };
        match store.store().conversation(agent_id, session_id).await {
            Ok(Some(row)) => match serde_json::from_value::<Vec<ChatMessage>>(row.messages) {
                Ok(messages) => {
                    kept.messages = messages;
                    kept.summary = row.summary;
                }
                Err(error) => {
                    tracing::warn!(agent = %agent_id, session = %session_id, %error, "A stored conversation cannot be read; it starts again.");
                }
            },
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(agent = %agent_id, session = %session_id, %error, "The conversation could not be read from the store; this turn is played without its history.");
            }
        }
    }

    /// Keeps the conversation in the store; the turn answers once it is committed, so an
    /// answered turn survives a crash.
    async fn persist(&self, agent_id: &str, session_id: &str, kept: &Kept) {
        let Some(store) = &self.store else {
            return;
        };
        let write = crate::store::writer::Write::Conversation {
            agent_id: agent_id.to_string(),
            session_id: session_id.to_string(),
            summary: kept.summary.clone(),
            messages: serde_json::to_value(&kept.messages).unwrap_or_default(),
            at: crate::util::rfc3339(SystemTime::now()),
        };
        if let Err(error) = store.write_committed(write).await {
            tracing::warn!(agent = %agent_id, session = %session_id, %error, "The conversation could not be stored; it is kept in memory.");
        }
    }

    /// When the conversation with `message` would pass `budget` (estimated tokens), replaces
    /// its oldest messages by a summary the model writes (a plain digest when the model
    /// fails) and publishes `agent.compacted`. Answers whether it did.
    #[allow(clippy::too_many_arguments)]
    async fn compact(
        &self,
        client: &crate::inference::Client,
        config: &AgentConfig,
        session_id: &str,
        system: &str,
        message: &str,
        budget: usize,
        kept: &mut Kept,
        usage: &mut Usage,
    ) -> bool {
        let fixed = estimate_tokens(system)
            + kept.summary.as_deref().map_or(0, estimate_tokens)
            + estimate_tokens(message)
            + 3 * MESSAGE_OVERHEAD_TOKENS;
        let Some(cut) = compaction_cut(fixed, &kept.messages, budget) else {
            return false;
        };
        // Nothing leaves the conversation until the summary is in hand: a turn timed out
        // during the summary call drops this future, and must not lose the oldest messages.
        let transcript = transcript(kept.summary.as_deref(), &kept.messages[..cut], budget * 2);
        let request = ChatRequest {
            messages: vec![
                ChatMessage::text(Role::System, SUMMARY_INSTRUCTIONS),
                ChatMessage::text(Role::User, &transcript),
            ],
            tools: Vec::new(),
            temperature: Some(0.0),
            max_tokens: Some((budget / 4).clamp(64, 2048) as u32),
        };
        let (summary, by_model) = match client.chat(request).await {
            Ok(answer) if !answer.content.trim().is_empty() => {
                usage.add(answer.usage);
                (answer.content.trim().to_string(), true)
            }
            Ok(_) => (digest(&transcript, budget), false),
            Err(error) => {
                tracing::warn!(agent = %config.id, session = %session_id, %error, "The model could not summarise the conversation; a plain digest stands in.");
                (digest(&transcript, budget), false)
            }
        };
        kept.messages.drain(..cut);
        kept.summary = Some(summary);
        tracing::info!(agent = %config.id, session = %session_id, messages = cut, by_model, "Conversation compacted.");
        self.broker.emit(&AgentCompacted {
            agent_id: config.id.clone(),
            session_id: session_id.to_string(),
            messages_compacted: cut as u32,
            summarized_by_model: by_model,
        });
        true
    }

    /// The conversation of `(agent, session)`, created on first use; the least recently used
    /// one that no turn holds goes when there are too many (evicting a held one would let a
    /// second turn of that conversation start beside the first, from the stored copy).
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
                .filter(|(_, (conversation, _))| Arc::strong_count(conversation) == 1)
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

    fn standing(&self, agent_id: &str) -> Standing {
        self.standings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Agent `agent_id`'s standing, for the API.
    pub fn status(&self, agent_id: &str) -> AgentStatus {
        self.standing(agent_id).status()
    }

    /// The paused agents with their standing, by id (`/health`).
    pub fn paused(&self) -> Vec<(String, AgentStatus)> {
        let standings = self.standings.lock().unwrap_or_else(|e| e.into_inner());
        let mut paused: Vec<(String, AgentStatus)> = standings
            .iter()
            .filter(|(_, s)| matches!(s, Standing::Paused { .. }))
            .map(|(id, s)| (id.clone(), s.status()))
            .collect();
        paused.sort_by(|a, b| a.0.cmp(&b.0));
        paused
    }

    /// Resumes paused agent `agent_id` (`resumed_by`: who did, for `agent.resumed`); its
    /// failure count starts again from zero.
    pub fn resume(&self, agent_id: &str, resumed_by: &str) -> Result<AgentStatus, AgentError> {
        if self.plugins.extensions().agents.get(agent_id).is_none() {
            return Err(AgentError::NotFound(agent_id.to_string()));
        }
        {
            let mut standings = self.standings.lock().unwrap_or_else(|e| e.into_inner());
            match standings.get_mut(agent_id) {
                Some(standing @ Standing::Paused { .. }) => *standing = Standing::default(),
                _ => return Err(AgentError::NotPaused(agent_id.to_string())),
            }
        }
        tracing::info!(agent = %agent_id, %resumed_by, "Agent resumed.");
        self.broker.emit(&AgentResumed {
            agent_id: agent_id.to_string(),
            resumed_by: resumed_by.to_string(),
        });
        Ok(Standing::default().status())
    }

    /// The messages of a conversation, for tests and the API.
    pub async fn history(&self, agent: &str, session: &str) -> Option<Vec<ChatMessage>> {
        let conversation = {
            let all = self.conversations.lock().unwrap_or_else(|e| e.into_inner());
            all.by_key
                .get(&(agent.to_string(), session.to_string()))
                .map(|(c, _)| c.clone())
        }?;
        let kept = conversation.lock().await;
        Some(kept.messages.clone())
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

/// Tokens a message costs besides its text (role, separators), in the estimate.
const MESSAGE_OVERHEAD_TOKENS: usize = 4;

/// What the model is asked when it summarises a conversation's oldest messages.
const SUMMARY_INSTRUCTIONS: &str = "You compact conversations. Summarise the conversation below in a few sentences: keep the facts, names, numbers, decisions and open questions the assistant will need to continue it. Answer with the summary only.";

/// Estimated tokens of `text`: about four characters each (no tokenizer is bundled).
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// Estimated tokens of one message, its tool calls included.
fn message_tokens(message: &ChatMessage) -> usize {
    MESSAGE_OVERHEAD_TOKENS
        + estimate_tokens(&message.content)
        + message
            .tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments.to_string()))
            .sum::<usize>()
}

/// How many of the oldest messages of `history` to compact, if any: none while `fixed` (the
/// system prompt, summary and new message) and the history fit in `budget`; otherwise the
/// newest messages kept are those fitting in half the budget beside `fixed`, starting at a
/// user message so no tool exchange is split (all of them go if none fits).
fn compaction_cut(fixed: usize, history: &[ChatMessage], budget: usize) -> Option<usize> {
    let total: usize = fixed + history.iter().map(message_tokens).sum::<usize>();
    if total <= budget || history.is_empty() {
        return None;
    }
    let room = (budget / 2).saturating_sub(fixed);
    let mut kept_tokens = 0;
    let mut cut = history.len();
    for i in (0..history.len()).rev() {
        kept_tokens += message_tokens(&history[i]);
        if kept_tokens > room {
            break;
        }
        if history[i].role == Role::User {
            cut = i;
        }
    }
    (cut > 0).then_some(cut)
}

/// The text the model summarises: the earlier summary, then one line per message; at most
/// `max_chars`, the newest part kept.
fn transcript(summary: Option<&str>, messages: &[ChatMessage], max_chars: usize) -> String {
    let mut text = String::new();
    if let Some(summary) = summary {
        text.push_str(&format!("(summary of what came before) {summary}\n"));
    }
    for m in messages {
        text.push_str(m.role.as_str());
        text.push_str(": ");
        text.push_str(&m.content);
        for call in &m.tool_calls {
            text.push_str(&format!(" [called {}({})]", call.name, call.arguments));
        }
        text.push('\n');
    }
    tail_chars(&text, max_chars.max(1)).to_string()
}

/// The last `max` characters of `text`.
fn tail_chars(text: &str, max: usize) -> &str {
    let count = text.chars().count();
    if count <= max {
        return text;
    }
    let skip = text
        .char_indices()
        .nth(count - max)
        .map_or(text.len(), |(i, _)| i);
    &text[skip..]
}

/// The summary when the model cannot write one: the transcript's newest part, within a
/// quarter of the budget.
fn digest(transcript: &str, budget: usize) -> String {
    let clipped = tail_chars(transcript.trim(), (budget / 4).max(16) * 4);
    format!("Earlier messages (compacted without a model summary): {clipped}")
}

/// The message that carries a conversation's summary to the model.
fn summary_message(summary: &str) -> ChatMessage {
    ChatMessage::text(
        Role::System,
        &format!("Summary of the earlier conversation: {summary}"),
    )
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
    fn failed_turns_in_a_row_pause_an_agent_and_a_success_clears_the_count() {
        let now = SystemTime::UNIX_EPOCH;
        let fail = |s: Standing, threshold| s.after_turn(Err("boom"), threshold, now);
        let (s, paused) = fail(Standing::default(), 3);
        assert_eq!(
            (s.clone(), paused),
            (Standing::Active { failures: 1 }, false)
        );
        let (s, _) = fail(s, 3);
        let (s, _) = s.after_turn(Ok(()), 3, now);
        assert_eq!(
            s,
            Standing::Active { failures: 0 },
            "a success resets the count"
        );
        let (s, _) = fail(s, 3);
        let (s, _) = fail(s, 3);
        let (s, paused) = fail(s, 3);
        assert!(paused, "the third failure in a row pauses");
        assert_eq!(s.status().state, AgentState::Paused);
        assert_eq!(s.status().last_error.as_deref(), Some("boom"));
        // A turn already under way when it paused: counted, but no second pause, and a late
        // success does not resume it.
        let (s, paused) = fail(s, 3);
        assert_eq!((s.failures(), paused), (4, false));
        let (s, _) = s.after_turn(Ok(()), 3, now);
        assert!(matches!(s, Standing::Paused { failures: 4, .. }));
        // 0 never pauses.
        let mut s = Standing::default();
        for _ in 0..100 {
            let (next, paused) = fail(s, 0);
            assert!(!paused);
            s = next;
        }
        assert_eq!(s, Standing::Active { failures: 100 });
    }

    fn said(role: Role, chars: usize) -> ChatMessage {
        ChatMessage::text(role, &"x".repeat(chars))
    }

    #[test]
    fn a_conversation_within_its_budget_is_not_compacted() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("ééé"), 1, "characters, not bytes");
        let history = vec![said(Role::User, 40), said(Role::Assistant, 40)];
        // 2 × (4 + 10) = 28 tokens of history.
        assert_eq!(compaction_cut(10, &history, 38), None);
        assert_eq!(compaction_cut(1000, &[], 10), None, "nothing to compact");
    }

    #[test]
    fn compaction_keeps_the_newest_turns_in_half_the_budget_from_a_user_message() {
        // Each message costs 14 tokens; turns are user, assistant(tool call), tool, assistant.
        let mut history = Vec::new();
        for _ in 0..4 {
            history.push(said(Role::User, 40));
            history.push(said(Role::Assistant, 40));
        }
        // 8 × 14 = 112 > 100: keep what fits in 50 - 10 = 40 tokens, from a user message:
        // the last two messages (28 tokens).
        assert_eq!(compaction_cut(10, &history, 100), Some(6));
        // A tool exchange is not split: the cut lands on a user message. Two long old
        // messages (104 tokens each), then a turn with a tool call (4 × 14 tokens).
        let with_tools = vec![
            said(Role::User, 400),
            said(Role::Assistant, 400),
            said(Role::User, 40),
            said(Role::Assistant, 40),
            said(Role::Tool, 40),
            said(Role::Assistant, 40),
        ];
        assert_eq!(compaction_cut(0, &with_tools, 200), Some(2));
        // Room for 3 of its 4 messages only: the whole turn goes rather than a split one.
        assert_eq!(compaction_cut(0, &with_tools, 100), Some(6));
        // A huge fixed part leaves no room: everything is compacted.
        assert_eq!(compaction_cut(500, &history, 100), Some(8));
    }

    #[test]
    fn the_transcript_and_the_digest_keep_the_newest_text() {
        let messages = vec![
            ChatMessage::text(Role::User, "my name is Ada"),
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![crate::inference::ToolCall {
                    id: "c1".into(),
                    name: "add".into(),
                    arguments: json!({ "a": 1 }),
                }],
                tool_call_id: None,
            },
        ];
        let text = transcript(Some("earlier"), &messages, 1000);
        assert_eq!(
            text,
            "(summary of what came before) earlier\nuser: my name is Ada\nassistant:  [called add({\"a\":1})]\n"
        );
        assert_eq!(transcript(None, &messages, 10), "{\"a\":1})]\n");
        assert_eq!(tail_chars("héllo", 4), "éllo");
        let digest = digest(&"word ".repeat(1000), 40);
        assert!(digest.starts_with("Earlier messages (compacted"));
        assert!(digest.len() < 120, "{}", digest.len());
        assert!(summary_message("s")
            .content
            .contains("Summary of the earlier conversation"));
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

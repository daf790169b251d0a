//! `SessionActor`: one session, one message at a time, through its plugins in priority order.
//!
//! Owns a session's life (`opening` → `open` → `closing` → `closed`): `initialize` and the
//! `onConnect` chain on open, one message at a time through the pipeline (`beforeSend`, the
//! connector, `afterReceive`, run by `pipeline`; a streamed answer goes on to the client chunk
//! by chunk, through `onChunk`), re-authenticating once after an upstream 401,
//! the idle timeout, `onDisconnect` on close, and queueing its rows on the store writer.
//! Per-plugin state lives here, so it survives a plugin's restart. Does not own calling a
//! plugin (`plugin::call`: inline for native plugins, through the actor for script ones) nor
//! the chain's failure policy (`pipeline`).

use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::pipeline::{
    call_stage, connect_chain, elapsed_ms, merge, notify, open_failed, stream_answer, transcript,
    Chain, Exchange, HookOutcome, Outcome, StreamEvent,
};
use super::{reply_json, AfterReceiveOrder, SessionError};
use crate::broker::events;
use crate::broker::BrokerHandle;
use crate::connector::Connector;
use crate::plugin::host::PluginHost;
use crate::plugin::{ConnectorPluginInfo, Hook, HookContext};
use crate::store::writer::{Durability, StoreHandle, Write};
use crate::supervisor::child::DownGuard;
use crate::supervisor::policy::ExitReason;
use crate::target::Target;
use tokio::sync::mpsc;

/// One plugin in a session's pipeline.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The plugin (actor) that provides the connector plugin.
    pub module: String,
    pub info: ConnectorPluginInfo,
    pub priority: u32,
    pub critical: bool,
    pub timeout: Duration,
    /// The config as responses show it (secrets masked).
    pub masked_config: Value,
    /// The config as the store keeps it (secrets sealed with the store's key).
    pub stored_config: Value,
    /// This plugin's per-session context (state, bound config).
    pub ctx: HookContext,
    pub failures: u64,
}

/// What the upstream answered: in one piece, or as a stream still to read.
enum Sent {
    /// Boxed: an answer is large and this enum is moved around the send loop.
    Whole(Box<crate::connector::ConnectorResponse>),
    Stream(crate::connector::ChunkStream),
}

/// Sends one message: read as a stream when the client streams or the upstream does (so
/// `onChunk` sees the same chunks either way), otherwise whole.
async fn send(
    connector: &dyn Connector,
    message: &str,
    variables: &Map<String, Value>,
    client_streams: bool,
) -> Result<Sent, crate::connector::ConnectorError> {
    if client_streams || connector.supports_streaming() {
        connector
            .stream_message(message, variables)
            .await
            .map(Sent::Stream)
    } else {
        connector
            .send_message(message, variables)
            .await
            .map(|r| Sent::Whole(Box::new(r)))
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Opening,
    Open,
    Closing,
    Closed,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Opening => "opening",
            SessionState::Open => "open",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
        }
    }
}

/// What every session actor needs from the service.
#[derive(Clone)]
pub struct SessionDeps {
    pub host: Arc<PluginHost>,
    pub broker: BrokerHandle,
    pub settings: super::SessionConfig,
    /// Where sessions and transcripts are persisted, when the store is on.
    pub store: Option<StoreHandle>,
}

/// A session as `GET /api/sessions/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub target_id: String,
    pub connector_type: String,
    pub state: SessionState,
    pub plugins: Vec<StageInfo>,
    pub message_count: u64,
    pub error_count: u64,
    pub hook_failures: u64,
    pub created_at: String,
    pub last_activity_at: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageInfo {
    pub id: String,
    pub plugin: String,
    pub priority: u32,
    pub critical: bool,
    pub config: Value,
    pub failures: u64,
}

// ---- Messages -------------------------------------------------------------------------------

/// Run `initialize` on every plugin, then the `onConnect` chain, then connect.
#[derive(Message)]
#[rtype(result = "Result<(), SessionError>")]
pub struct Open;

/// Run one message through the pipeline and the connector.
#[derive(Message)]
#[rtype(result = "Result<Value, SessionError>")]
pub struct SendMessage {
    pub message: String,
    pub metadata: Option<Value>,
    /// Stream the answer here as it arrives (then `Done` or `Failed` ends it).
    pub stream: Option<mpsc::Sender<StreamEvent>>,
}

/// Run every plugin's `onDisconnect`, disconnect, and stop. Answers with what happened.
#[derive(Message)]
#[rtype(result = "Value")]
pub struct Close {
    pub reason: String,
}

// ---- The actor ------------------------------------------------------------------------------

pub struct SessionActor {
    id: String,
    target: Target,
    stages: Vec<Stage>,
    connector: Option<Rc<dyn Connector>>,
    /// A plugin set the connection's credentials in `onConnect`; after an upstream 401 the
    /// chain runs once more (re-authenticating) and the message is sent again once.
    reauth_on_401: bool,
    store: Option<StoreHandle>,
    host: Arc<PluginHost>,
    broker: BrokerHandle,
    settings: super::SessionConfig,
    guard: DownGuard,
    state: SessionState,
    created_at: SystemTime,
    last_activity: (Instant, SystemTime),
    messages: u64,
    errors: u64,
    snapshot: Arc<RwLock<Option<SessionInfo>>>,
    span: tracing::Span,
}

impl SessionActor {
    pub fn new(
        id: String,
        target: Target,
        stages: Vec<Stage>,
        deps: SessionDeps,
        guard: DownGuard,
        snapshot: Arc<RwLock<Option<SessionInfo>>>,
    ) -> Self {
        let SessionDeps {
            host,
            broker,
            settings,
            store,
        } = deps;
        let span = tracing::info_span!("session", session.id = %id, target.id = %target.id);
        SessionActor {
            id,
            target,
            stages,
            connector: None,
            reauth_on_401: false,
            store,
            host,
            broker,
            settings,
            guard,
            state: SessionState::Opening,
            created_at: SystemTime::now(),
            last_activity: (Instant::now(), SystemTime::now()),
            messages: 0,
            errors: 0,
            snapshot,
            span,
        }
    }

    /// Publishes the current info where the API reads it (never through the mailbox, so a
    /// session busy with a slow upstream still answers `GET /api/sessions/{id}`).
    fn publish(&self) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(self.info());
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            target_id: self.target.id.clone(),
            connector_type: self.target.connector_type.clone(),
            state: self.state,
            plugins: self
                .stages
                .iter()
                .map(|s| StageInfo {
                    id: s.info.id.clone(),
                    plugin: s.module.clone(),
                    priority: s.priority,
                    critical: s.critical,
                    config: s.masked_config.clone(),
                    failures: s.failures,
                })
                .collect(),
            message_count: self.messages,
            error_count: self.errors,
            hook_failures: self.stages.iter().map(|s| s.failures).sum(),
            created_at: crate::util::rfc3339(self.created_at),
            last_activity_at: crate::util::rfc3339(self.last_activity.1),
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let idle = self.settings.idle_timeout;
        let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        ctx.run_interval(every, move |act, ctx| {
            if act.state == SessionState::Open && act.last_activity.0.elapsed() >= idle {
                tracing::info!(parent: &act.span, "Session idle; closing.");
                ctx.address().do_send(Close {
                    reason: "idle timeout".into(),
                });
            }
        });
    }
}

impl Handler<Open> for SessionActor {
    type Result = AtomicResponse<Self, Result<(), SessionError>>;

    fn handle(&mut self, _msg: Open, _ctx: &mut Context<Self>) -> Self::Result {
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.host.clone();
        let target = self.target.clone();
        let open = async move {
            for i in 0..stages.len() {
                let stage = &mut stages[i];
                if let Err(error) = call_stage(&host, stage, Hook::Initialize, Value::Null).await {
                    let error = open_failed(&host, stage, Hook::Initialize, error);
                    return (stages, Err(error));
                }
            }
            let connector = connect_chain(&host, &mut stages, &target).await;
            (stages, connector)
        };
        AtomicResponse::new(Box::pin(open.into_actor(self).map(|(stages, connector), act, ctx| {
            act.stages = stages;
            match connector {
                Ok((connector, reauth)) => {
                    act.connector = Some(Rc::from(connector));
                    act.reauth_on_401 = reauth;
                    act.state = SessionState::Open;
                    act.publish();
                    if let Some(store) = &act.store {
                        let info = act.info();
                        // The row keeps the sealed configs, never the masked or the clear ones.
                        let plugins: Vec<StageInfo> = info
                            .plugins
                            .into_iter()
                            .zip(&act.stages)
                            .map(|(shown, stage)| StageInfo {
                                config: stage.stored_config.clone(),
                                ..shown
                            })
                            .collect();
                        store.write(Write::SessionOpened {
                            id: act.id.clone(),
                            target_id: act.target.id.clone(),
                            plugins: serde_json::to_value(&plugins).unwrap_or(Value::Null),
                            at: info.created_at,
                        });
                    }
                    tracing::info!(parent: &act.span, plugins = act.stages.len(), "Session open.");
                    Ok(())
                }
                Err(error) => {
                    tracing::info!(parent: &act.span, %error, detail = ?error, "Session could not open.");
                    act.guard.set_reason(ExitReason::Shutdown);
                    act.state = SessionState::Closed;
                    ctx.stop();
                    Err(error)
                }
            }
        })))
    }
}

impl Handler<SendMessage> for SessionActor {
    type Result = AtomicResponse<Self, Result<Value, SessionError>>;

    fn handle(&mut self, msg: SendMessage, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(connector) = self
            .connector
            .clone()
            .filter(|_| self.state == SessionState::Open)
        else {
            let error = SessionError::Ended {
                id: self.id.clone(),
                reason: format!("it is {}", self.state.as_str()),
            };
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(error))));
        };
        self.last_activity = (Instant::now(), SystemTime::now());
        let index = self.messages;
        self.messages += 1;
        self.publish();
        let sent_text = msg.message.clone();
        let store = self.store.clone();
        let durability = self.settings.durability;
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.host.clone();
        let broker = self.broker.clone();
        let after_receive = self.settings.after_receive;
        let reauth = self.reauth_on_401;
        let target = self.target.clone();
        let session_id = self.id.clone();
        let stream = msg.stream;
        let stream_client = stream.clone();
        let pipeline = async move {
            let mut metadata = Map::new();
            metadata.insert("sessionId".into(), json!(session_id));
            metadata.insert("messageIndex".into(), json!(index));
            metadata.insert(
                "timestamp".into(),
                json!(crate::util::rfc3339(SystemTime::now())),
            );
            merge(&mut metadata, msg.metadata.as_ref());
            let mut exchange = Exchange {
                message: msg.message,
                metadata,
                ..Exchange::default()
            };
            let mut chain = Chain {
                host: &host,
                broker: &broker,
                session_id: &session_id,
                outcomes: Vec::new(),
            };
            let order = 0..stages.len();
            if let Err(fatal) = chain
                .run(&mut stages, order, Hook::BeforeSend, &mut exchange)
                .await
            {
                return (stages, Err(fatal), None);
            }

            let (message, variables) = (&exchange.message, &exchange.extensions);
            let mut reconnected: Option<Rc<dyn Connector>> = None;
            let client_streams = stream.is_some();
            let mut sent = send(&*connector, message, variables, client_streams).await;
            if reauth && matches!(&sent, Err(e) if e.status() == Some(401)) {
                match connect_chain(&host, &mut stages, &target).await {
                    Ok((fresh, _)) => {
                        let fresh: Rc<dyn Connector> = Rc::from(fresh);
                        sent = send(&*fresh, message, variables, client_streams).await;
                        reconnected = Some(fresh);
                    }
                    Err(error) => return (stages, Err(error), None),
                }
            }
            let response = match (sent, &stream) {
                (Ok(Sent::Whole(response)), _) => *response,
                (Ok(Sent::Stream(chunks)), client) => {
                    match stream_answer(&mut chain, &mut stages, chunks, client.as_ref()).await {
                        Ok(response) => response,
                        Err(error) => return (stages, Err(error), reconnected),
                    }
                }
                (Err(error), _) => {
                    return (stages, Err(SessionError::Upstream(error)), reconnected)
                }
            };
            exchange.response = serde_json::to_value(response).unwrap_or(Value::Null);

            let order: Box<dyn Iterator<Item = usize>> = match after_receive {
                AfterReceiveOrder::Same => Box::new(0..stages.len()),
                AfterReceiveOrder::Reverse => Box::new((0..stages.len()).rev()),
            };
            if let Err(fatal) = chain
                .run(&mut stages, order, Hook::AfterReceive, &mut exchange)
                .await
            {
                return (stages, Err(fatal), reconnected);
            }

            let content = exchange.response["content"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // `$`-keys and private keys (the conversation history) reach later plugins and the
            // connector, never the client or the transcript.
            let reply_metadata = exchange.reply_metadata();
            let reply = reply_json(&content, Value::Object(reply_metadata), &chain.outcomes);
            (stages, Ok(reply), reconnected)
        };
        let transcript_of = self.id.clone();
        let pipeline = async move {
            let (stages, mut result, reconnected) = pipeline.await;
            if let Some(store) = store {
                let write = transcript(&transcript_of, index, sent_text, &result);
                match durability {
                    // Queued, not awaited: the caller never waits for the database.
                    Durability::Batched => store.write(write),
                    // The answer (whole or the stream's last event) only once it is stored.
                    Durability::Acknowledged => {
                        if let Err(error) = store.write_committed(write).await {
                            tracing::error!(%error, "An answer was withheld: its transcript could not be committed.");
                            if result.is_ok() {
                                result = Err(SessionError::NotCommitted(error));
                            }
                        }
                    }
                }
            }
            if let Some(client) = stream_client {
                // The stream's last event (waiting for room, as chunks do); a client that left
                // gets nothing.
                let last = match &result {
                    Ok(reply) => StreamEvent::Done(reply.clone()),
                    Err(error) => StreamEvent::Failed(error.clone()),
                };
                let _ = client.send(last).await;
            }
            (stages, result, reconnected)
        };
        AtomicResponse::new(Box::pin(pipeline.into_actor(self).map(
            move |(stages, result, reconnected), act, _| {
                act.stages = stages;
                if let Some(fresh) = reconnected {
                    act.connector = Some(fresh);
                }

                if result.is_err() {
                    act.errors += 1;
                }
                act.last_activity = (Instant::now(), SystemTime::now());
                act.publish();
                result
            },
        )))
    }
}

impl Handler<Close> for SessionActor {
    type Result = AtomicResponse<Self, Value>;

    fn handle(&mut self, msg: Close, _ctx: &mut Context<Self>) -> Self::Result {
        if matches!(self.state, SessionState::Closing | SessionState::Closed) {
            let state = self.state;
            return AtomicResponse::new(Box::pin(actix::fut::ready(
                json!({ "sessionId": self.id, "state": state }),
            )));
        }
        self.state = SessionState::Closing;
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.host.clone();
        let connector = self.connector.take();
        let close = async move {
            // Every plugin's onDisconnect runs, whatever the others do.
            let mut outcomes = Vec::new();
            for stage in stages.iter_mut() {
                let began = Instant::now();
                let (outcome, error) =
                    match call_stage(&host, stage, Hook::OnDisconnect, Value::Null).await {
                        Ok(None) => (Outcome::Passthrough, None),
                        Ok(Some(_)) => (Outcome::Ok, None),
                        Err(error) => {
                            let error = error.to_string();
                            notify(&host, stage, Hook::OnDisconnect, &error);
                            (Outcome::Failed, Some(error))
                        }
                    };
                outcomes.push(HookOutcome {
                    plugin: stage.info.id.clone(),
                    hook: Hook::OnDisconnect,
                    outcome,
                    duration_ms: elapsed_ms(began),
                    error,
                });
            }
            if let Some(connector) = connector {
                connector.disconnect().await;
            }
            (stages, outcomes)
        };
        AtomicResponse::new(Box::pin(close.into_actor(self).map(move |(stages, outcomes), act, ctx| {
            act.stages = stages;
            act.connector = None;
            act.state = SessionState::Closed;
            act.publish();
            tracing::info!(parent: &act.span, reason = %msg.reason, messages = act.messages, "Session closed.");
            if let Some(store) = &act.store {
                store.write(Write::SessionEnded {
                    id: act.id.clone(),
                    state: "closed",
                    reason: msg.reason.clone(),
                    at: crate::util::rfc3339(SystemTime::now()),
                });
            }
            act.broker.emit(&events::SessionClosed {
                session_id: act.id.clone(),
                reason: msg.reason.clone(),
                message_count: act.messages,
            });
            act.guard.set_reason(ExitReason::Shutdown);
            ctx.stop();
            json!({ "sessionId": act.id, "state": "closed", "reason": msg.reason, "plugins": outcomes })
        })))
    }
}

/// Test hook: make the session actor panic, to exercise its supervision.
#[cfg(any(test, feature = "test-util"))]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashSession;

#[cfg(any(test, feature = "test-util"))]
impl Handler<CrashSession> for SessionActor {
    type Result = ();

    fn handle(&mut self, _msg: CrashSession, _ctx: &mut Context<Self>) {
        panic!("session crash requested by a test");
    }
}

//! `SessionActor`: one session, one message at a time, through its plugins in priority order.
//!
//! Owns the per-message pipeline (seed-systems.md §1.3–1.5): `beforeSend` in order, chaining
//! the message and merging returned metadata into what later plugins and the connector see;
//! the connector call; `afterReceive` in the same order (or reversed, by setting), chaining the
//! response. Every hook goes to the plugin's actor with a timeout. The failure policy (§1.4):
//! `onError` is told (guarded); a non-critical plugin's failed change is skipped, counted and
//! reported as `plugin.hook_failed`; a critical one fails the message (nothing is sent when it
//! fails in `beforeSend`). Per-plugin state lives here, so it survives a plugin's restart.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures::FutureExt;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use super::{reply_json, HookOutcome, SessionError};
use crate::broker::events;
use crate::broker::BrokerHandle;
use crate::target::Target;
use crate::connector::{self, Connector, ConnectorConfig};
use crate::plugin::actor::{CallHook, KillPlugin, NotifyError, PluginActor};
use crate::plugin::host::PluginHost;
use crate::plugin::{ConnectorPluginInfo, Hook, HookContext, Plugin};
use crate::store::writer::{StoreHandle, Write};
use crate::supervisor::child::{panic_message, take_last_panic, DownGuard};
use crate::supervisor::policy::ExitReason;

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
    /// This plugin's per-session context (state, bound config).
    pub ctx: HookContext,
    pub failures: u64,
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
    /// `opening`, `open`, `closing` or `closed`.
    pub state: &'static str,
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
    state: &'static str,
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
            state: "opening",
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

/// Calls one hook of one stage on its plugin's actor (looked up per call: the plugin may have
/// been restarted), within the stage's timeout. `Ok(None)`: the plugin has no such hook.
async fn call(
    host: &PluginHost,
    stage: &mut Stage,
    hook: Hook,
    input: Value,
) -> Result<Option<Value>, String> {
    if let Some((plugin, addr)) = host.inline_hooks(&stage.module) {
        return call_inline(plugin, addr, stage, hook, input).await;
    }
    let Some((addr, gauge)) = host.running_addr(&stage.module) else {
        return Err(format!("plugin '{}' is not running", stage.module));
    };
    gauge.enqueued();
    let message = CallHook {
        connector_plugin: stage.info.id.clone(),
        hook,
        input,
        ctx: stage.ctx.clone(),
    };
    match tokio::time::timeout(stage.timeout, addr.send(message)).await {
        Ok(Ok(Ok(reply))) => {
            stage.ctx = reply.ctx;
            Ok(reply.output)
        }
        Ok(Ok(Err(error))) => Err(error.message),
        Ok(Err(_)) => {
            gauge.dequeued();
            Err("the plugin crashed during the call".into())
        }
        Err(_) => Err(format!("timed out after {} ms", stage.timeout.as_millis())),
    }
}

/// The fast path for native plugins: the hook runs right here, on the session's thread. The
/// plugin's crash semantics stay those of its actor: a panic (or a fatal error) stops that
/// actor with the reason, and its supervisor restarts it fresh.
async fn call_inline(
    plugin: Arc<dyn Plugin>,
    addr: Addr<PluginActor>,
    stage: &mut Stage,
    hook: Hook,
    input: Value,
) -> Result<Option<Value>, String> {
    let mut ctx = stage.ctx.clone();
    let span = tracing::info_span!("plugin_hook", plugin = %stage.module, hook = hook.name());
    let run = AssertUnwindSafe(plugin.connector_hook(&stage.info.id, hook, input, &mut ctx))
        .catch_unwind()
        .instrument(span);
    let crashed = |reason: ExitReason| {
        addr.do_send(KillPlugin { reason });
    };
    match tokio::time::timeout(stage.timeout, run).await {
        Ok(Ok(Ok(output))) => {
            stage.ctx = ctx;
            Ok(output)
        }
        Ok(Ok(Err(error))) => {
            if error.fatal {
                crashed(ExitReason::Error(format!(
                    "{}: {}",
                    hook.name(),
                    error.message
                )));
            }
            Err(error.message)
        }
        Ok(Err(payload)) => {
            take_last_panic();
            let message = panic_message(&*payload);
            tracing::error!(plugin = %stage.module, hook = hook.name(), panic = %message, "Plugin hook panicked.");
            crashed(ExitReason::Panic(message.clone()));
            Err(format!("the plugin crashed during the call: {message}"))
        }
        Err(_) => Err(format!("timed out after {} ms", stage.timeout.as_millis())),
    }
}

/// Tells the plugin its hook failed (`onError`), without waiting and without letting a failure
/// there matter.
fn notify_error(host: &PluginHost, stage: &Stage, hook: Hook, error: &str) {
    if let Some((addr, gauge)) = host.running_addr(&stage.module) {
        gauge.enqueued();
        if addr
            .try_send(NotifyError {
                connector_plugin: stage.info.id.clone(),
                error: error.to_string(),
                hook,
                ctx: stage.ctx.clone(),
            })
            .is_err()
        {
            gauge.dequeued();
        }
    }
}

fn hook_failed(stage: &Stage, hook: Hook, message: String) -> SessionError {
    SessionError::HookFailed {
        plugin: stage.info.id.clone(),
        hook: hook.name(),
        message,
    }
}

/// The `onConnect` chain (each plugin gets the config the one before it returned), then a new
/// connector with the final config. Used to open, and once more after an upstream 401.
async fn connect_chain(
    host: &PluginHost,
    stages: &mut [Stage],
    target: &Target,
) -> Result<(Box<dyn Connector>, bool), SessionError> {
    let mut config = serde_json::to_value(target.connector_config()).unwrap_or(Value::Null);
    let mut changed_by_plugin = false;
    for stage in stages.iter_mut() {
        match call(host, stage, Hook::OnConnect, config.clone()).await {
            Ok(None) => {}
            Ok(Some(changed)) => match serde_json::from_value::<ConnectorConfig>(changed.clone()) {
                Ok(_) => {
                    changed_by_plugin |= changed != config;
                    config = changed;
                }
                Err(e) => {
                    let error = format!("onConnect returned an invalid connector config: {e}");
                    notify_error(host, stage, Hook::OnConnect, &error);
                    return Err(hook_failed(stage, Hook::OnConnect, error));
                }
            },
            Err(error) => {
                notify_error(host, stage, Hook::OnConnect, &error);
                return Err(hook_failed(stage, Hook::OnConnect, error));
            }
        }
    }
    let config: ConnectorConfig = serde_json::from_value(config).expect("checked above");
    let connector =
        connector::connect(&target.connector_type, config).map_err(SessionError::Upstream)?;
    Ok((connector, changed_by_plugin))
}

/// The transcript write for one message and its outcome.
fn transcript(
    session_id: &str,
    index: u64,
    sent: String,
    result: &Result<Value, SessionError>,
) -> Write {
    let at = crate::util::rfc3339(SystemTime::now());
    match result {
        Ok(reply) => {
            let metadata = &reply["metadata"];
            let usage = metadata.get("tokenUsage").filter(|u| !u.is_null()).cloned();
            Write::Exchange {
                session_id: session_id.to_string(),
                index,
                sent,
                received: reply["content"].as_str().map(str::to_owned),
                metadata: Some(metadata.clone()),
                response_time_ms: metadata["responseTimeMs"].as_u64(),
                tokens: usage
                    .as_ref()
                    .and_then(|u| u["totalTokens"].as_u64())
                    .unwrap_or(0),
                token_usage: usage,
                error: None,
                at,
            }
        }
        Err(error) => Write::Exchange {
            session_id: session_id.to_string(),
            index,
            sent,
            received: None,
            metadata: None,
            response_time_ms: None,
            token_usage: None,
            tokens: 0,
            error: Some(error.to_string()),
            at,
        },
    }
}

fn merge(into: &mut Map<String, Value>, from: Option<&Value>) {
    if let Some(Value::Object(map)) = from {
        for (k, v) in map {
            into.insert(k.clone(), v.clone());
        }
    }
}

fn elapsed_ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let idle = self.settings.idle_timeout;
        let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        ctx.run_interval(every, move |act, ctx| {
            if act.state == "open" && act.last_activity.0.elapsed() >= idle {
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
                if let Err(error) = call(&host, stage, Hook::Initialize, Value::Null).await {
                    notify_error(&host, stage, Hook::Initialize, &error);
                    let error = hook_failed(stage, Hook::Initialize, error);
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
                    act.state = "open";
                    act.publish();
                    if let Some(store) = &act.store {
                        let info = act.info();
                        store.write(Write::SessionOpened {
                            id: act.id.clone(),
                            target_id: act.target.id.clone(),
                            plugins: serde_json::to_value(&info.plugins).unwrap_or(Value::Null),
                            at: info.created_at,
                        });
                    }
                    tracing::info!(parent: &act.span, plugins = act.stages.len(), "Session open.");
                    Ok(())
                }
                Err(error) => {
                    tracing::info!(parent: &act.span, %error, "Session could not open.");
                    act.guard.set_reason(ExitReason::Shutdown);
                    act.state = "closed";
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
        let Some(connector) = self.connector.clone().filter(|_| self.state == "open") else {
            let error = SessionError::Ended {
                id: self.id.clone(),
                reason: format!("it is {}", self.state),
            };
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(error))));
        };
        self.last_activity = (Instant::now(), SystemTime::now());
        let index = self.messages;
        self.messages += 1;
        self.publish();
        let sent = msg.message.clone();
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.host.clone();
        let broker = self.broker.clone();
        let reverse = self.settings.after_receive == super::AfterReceiveOrder::Reverse;
        let reauth = self.reauth_on_401;
        let target = self.target.clone();
        let session_id = self.id.clone();
        let pipeline = async move {
            let mut outcomes = Vec::new();
            let mut extensions = Map::new();
            let mut metadata = Map::new();
            metadata.insert("sessionId".into(), json!(session_id));
            metadata.insert("messageIndex".into(), json!(index));
            metadata.insert(
                "timestamp".into(),
                json!(crate::util::rfc3339(SystemTime::now())),
            );
            merge(&mut metadata, msg.metadata.as_ref());
            let mut message = msg.message;

            // A failed hook: tell the plugin, count it, report it; fail the message if critical.
            let failed = |stage: &mut Stage,
                          hook: Hook,
                          error: String,
                          began: Instant,
                          outcomes: &mut Vec<HookOutcome>| {
                notify_error(&host, stage, hook, &error);
                stage.failures += 1;
                broker.emit(&events::PluginHookFailed {
                    plugin: stage.info.id.clone(),
                    hook: hook.name().into(),
                    session_id: session_id.clone(),
                    error: error.clone(),
                    critical: stage.critical,
                });
                outcomes.push(HookOutcome {
                    plugin: stage.info.id.clone(),
                    hook,
                    outcome: "failed",
                    duration_ms: elapsed_ms(began),
                    error: Some(error.clone()),
                });
                stage.critical.then(|| SessionError::HookFailed {
                    plugin: stage.info.id.clone(),
                    hook: hook.name(),
                    message: error,
                })
            };

            for i in 0..stages.len() {
                let stage = &mut stages[i];
                let began = Instant::now();
                let mut seen = metadata.clone();
                seen.extend(extensions.iter().map(|(k, v)| (k.clone(), v.clone())));
                // Built directly: `json!` would copy every value through a serializer.
                let mut input = Map::with_capacity(2);
                input.insert("message".into(), Value::String(message.clone()));
                input.insert("metadata".into(), Value::Object(seen));
                let input = Value::Object(input);
                let result = match call(&host, stage, Hook::BeforeSend, input).await {
                    Ok(None) => Ok("passthrough"),
                    Ok(Some(out)) => match out.get("message").and_then(Value::as_str) {
                        Some(changed) => {
                            message = changed.to_string();
                            merge(&mut extensions, out.get("metadata"));
                            Ok("ok")
                        }
                        None => {
                            Err("beforeSend must return { message: string, metadata? }".to_string())
                        }
                    },
                    Err(error) => Err(error),
                };
                match result {
                    Ok(outcome) => outcomes.push(HookOutcome {
                        plugin: stage.info.id.clone(),
                        hook: Hook::BeforeSend,
                        outcome,
                        duration_ms: elapsed_ms(began),
                        error: None,
                    }),
                    Err(error) => {
                        if let Some(fatal) =
                            failed(stage, Hook::BeforeSend, error, began, &mut outcomes)
                        {
                            return (stages, Err(fatal), None);
                        }
                    }
                }
            }

            let mut reconnected = None;
            let mut sent = connector.send_message(&message, &extensions).await;
            if reauth && matches!(&sent, Err(e) if e.status() == Some(401)) {
                match connect_chain(&host, &mut stages, &target).await {
                    Ok((fresh, _)) => {
                        sent = fresh.send_message(&message, &extensions).await;
                        reconnected = Some(fresh);
                    }
                    Err(error) => return (stages, Err(error), None),
                }
            }
            let response = match sent {
                Ok(response) => response,
                Err(error) => return (stages, Err(SessionError::Upstream(error)), reconnected),
            };
            let mut response = serde_json::to_value(response).unwrap_or(Value::Null);

            let order: Vec<usize> = if reverse {
                (0..stages.len()).rev().collect()
            } else {
                (0..stages.len()).collect()
            };
            for i in order {
                let stage = &mut stages[i];
                let began = Instant::now();
                let mut input = Map::with_capacity(1);
                input.insert("response".into(), response.clone());
                let result = match call(&host, stage, Hook::AfterReceive, Value::Object(input)).await {
                    Ok(None) => Ok("passthrough"),
                    Ok(Some(out)) => match out.get("response") {
                        Some(changed) if changed.get("content").is_some_and(Value::is_string) => {
                            response = changed.clone();
                            merge(&mut extensions, out.get("metadata"));
                            Ok("ok")
                        }
                        _ => Err("afterReceive must return { response: { content: string, metadata }, metadata? }".to_string()),
                    },
                    Err(error) => Err(error),
                };
                match result {
                    Ok(outcome) => outcomes.push(HookOutcome {
                        plugin: stage.info.id.clone(),
                        hook: Hook::AfterReceive,
                        outcome,
                        duration_ms: elapsed_ms(began),
                        error: None,
                    }),
                    Err(error) => {
                        if let Some(fatal) =
                            failed(stage, Hook::AfterReceive, error, began, &mut outcomes)
                        {
                            return (stages, Err(fatal), reconnected);
                        }
                    }
                }
            }

            let content = response["content"].as_str().unwrap_or_default().to_string();
            let mut reply_metadata = extensions;
            if let Some(meta) = response.get("metadata").and_then(Value::as_object) {
                for (k, v) in meta {
                    // The raw upstream body and headers stay internal.
                    if k != "rawResponse" && k != "headers" {
                        reply_metadata.insert(k.clone(), v.clone());
                    }
                }
            }
            let reply = reply_json(&content, Value::Object(reply_metadata), &outcomes);
            (stages, Ok(reply), reconnected)
        };
        AtomicResponse::new(Box::pin(pipeline.into_actor(self).map(
            move |(stages, result, reconnected), act, _| {
                act.stages = stages;
                if let Some(fresh) = reconnected {
                    act.connector = Some(Rc::from(fresh));
                }
                if result.is_err() {
                    act.errors += 1;
                }
                if let Some(store) = &act.store {
                    // Queued, not awaited: the caller never waits for the database.
                    store.write(transcript(&act.id, index, sent, &result));
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
        if self.state == "closing" || self.state == "closed" {
            let state = self.state;
            return AtomicResponse::new(Box::pin(actix::fut::ready(
                json!({ "sessionId": self.id, "state": state }),
            )));
        }
        self.state = "closing";
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.host.clone();
        let close = async move {
            // Every plugin's onDisconnect runs, whatever the others do.
            let mut outcomes = Vec::new();
            for stage in stages.iter_mut() {
                let began = Instant::now();
                let (outcome, error) =
                    match call(&host, stage, Hook::OnDisconnect, Value::Null).await {
                        Ok(None) => ("passthrough", None),
                        Ok(Some(_)) => ("ok", None),
                        Err(error) => {
                            notify_error(&host, stage, Hook::OnDisconnect, &error);
                            ("failed", Some(error))
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
            (stages, outcomes)
        };
        AtomicResponse::new(Box::pin(close.into_actor(self).map(move |(stages, outcomes), act, ctx| {
            act.stages = stages;
            act.connector = None;
            act.state = "closed";
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

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
//!
//! Also owns parking: an open session idle for `sessions.park_after_ms` (and not holding a live
//! connection) stops its actor and leaves a [`Parked`] record in the registry: only what the
//! shared view and the target cannot say again (plugins' non-empty state, a non-default bound
//! config or timeout, the connector config an `onConnect` chain settled on); its actor's
//! `DownGuard` is disarmed, since the session goes on. The next message (or a close, an idle
//! timeout, a lost lease, shutdown) wakes it ([`SessionActor::woken`]): the actor is rebuilt
//! from the record without `initialize` or `onConnect`, with a new guard reporting to the
//! sessions supervisor, so a woken session's crash is reported as a live one's. Its connector
//! is made with its next message: a close, hand-over or lost lease needs no connector, and one
//! that cannot be made again then fails that message, not the session.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::pipeline::{
    call_stage, connect_chain, connect_with, elapsed_ms, merge, notify, open_failed, stream_answer,
    transcript, Chain, Exchange, HookOutcome, Outcome, StreamEvent,
};
use super::{reply_json, AfterReceiveOrder, Registry, SessionError};
use crate::broker::events;
use crate::broker::BrokerHandle;
use crate::connector::{Connector, ConnectorConfig};
use crate::plugin::host::PluginHost;
use crate::plugin::{ConnectorPluginInfo, Hook, HookContext};
use crate::store::writer::{Durability, StoreHandle, Write};
use crate::supervisor::child::DownGuard;
use crate::supervisor::policy::ExitReason;
use crate::target::Target;
use tokio::sync::mpsc;

/// One plugin in a session's pipeline. What describes the plugin is shared (`Arc`) with the
/// host and every other session of it; the session's own part is its context and counters.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The plugin (actor) that provides the connector plugin.
    pub module: Arc<str>,
    pub info: Arc<ConnectorPluginInfo>,
    pub priority: u32,
    pub critical: bool,
    pub timeout: Duration,
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
/// `onChunk` sees the same chunks either way), otherwise whole. In an `upstream` span (a child
/// of the message's) with the target, the connector type, how it went (`status`: `ok` or the
/// failure's kind, with `http.status_code` when the upstream answered one) and `latency_ms`:
/// until the whole answer, or until a stream began (its chunks are read later, by the
/// pipeline).
async fn send(
    connector: &dyn Connector,
    target: &Target,
    message: &str,
    variables: &Map<String, Value>,
    client_streams: bool,
) -> Result<Sent, crate::connector::ConnectorError> {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "upstream",
        target.id = %target.id,
        "connector.type" = %target.connector_type,
        otel.kind = "client",
        status = Empty,
        http.status_code = Empty,
        latency_ms = Empty,
        otel.status_code = Empty,
    );
    let call = async {
        let began = Instant::now();
        let sent = if client_streams || connector.supports_streaming() {
            connector
                .stream_message(message, variables)
                .await
                .map(Sent::Stream)
        } else {
            connector
                .send_message(message, variables)
                .await
                .map(|r| Sent::Whole(Box::new(r)))
        };
        let span = tracing::Span::current();
        span.record("latency_ms", began.elapsed().as_secs_f64() * 1000.0);
        match &sent {
            Ok(_) => span.record("status", "ok"),
            Err(error) => {
                if let Some(code) = error.status() {
                    span.record("http.status_code", code);
                }
                span.record("otel.status_code", "ERROR");
                span.record("status", error.kind())
            }
        };
        sent
    };
    tracing::Instrument::instrument(call, span).await
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
    fn from_u8(n: u8) -> Self {
        match n {
            0 => SessionState::Opening,
            1 => SessionState::Open,
            2 => SessionState::Closing,
            _ => SessionState::Closed,
        }
    }

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
    /// Keep each session's plugin state with its messages (instances share the store, so
    /// another may take the session over).
    pub keep_state: bool,
    /// Set at a graceful shutdown when other instances share the store and are live: the
    /// sessions are handed over ([`HandOver`]) rather than closed.
    pub hand_over: Arc<std::sync::atomic::AtomicBool>,
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

/// A session as the API reads it, shared by its actor and the registry (it is most of a
/// parked session's record): what is fixed at open, plus counters the actor sets as it goes.
/// `GET /api/sessions/{id}` builds a [`SessionInfo`] from it only when asked (never through
/// the mailbox, so a session busy with a slow upstream still answers), and a message only
/// stores a few numbers here. Nothing in it is a copy: the id is the registry's key, target id
/// and connector type are the target's, and the plugin list is shared by every session with
/// the same one (`SessionManager::shared_plan`).
pub struct SessionView {
    /// Also the registry's key (one allocation).
    id: Arc<str>,
    /// Which incarnation of session `id` this is (its `DownGuard` reports it).
    generation: u64,
    target: Arc<Target>,
    /// Nanoseconds since the Unix epoch.
    created_at: u64,
    /// In pipeline order; shared with other sessions of the same plugins and configs.
    plugins: Arc<[PluginView]>,
    /// Each plugin's hook failures, in `plugins`' order; made at the first failure (most
    /// sessions never have one).
    failures: OnceLock<Box<[AtomicU64]>>,
    state: AtomicU8,
    messages: AtomicU64,
    errors: AtomicU64,
    /// Nanoseconds since the Unix epoch.
    last_activity: AtomicU64,
    /// Messages accepted and not yet answered (the queue bound).
    pub pending: AtomicUsize,
}

/// One plugin of a session as the API shows it (its failure count is the session's own, in
/// [`SessionView`]).
pub(super) struct PluginView {
    info: Arc<ConnectorPluginInfo>,
    module: Arc<str>,
    priority: u32,
    critical: bool,
    /// The config as responses show it (secrets masked); `None` for `{}`, the usual case,
    /// which then takes no room.
    config: Option<Box<Value>>,
}

impl PluginView {
    /// The same plugin (the same registration), priority, criticality and masked config.
    fn same(&self, other: &PluginView) -> bool {
        Arc::ptr_eq(&self.info, &other.info)
            && self.module == other.module
            && self.priority == other.priority
            && self.critical == other.critical
            && self.config == other.config
    }
}

/// A pipeline as the view shows it: `masked` holds each stage's config as responses show it,
/// in the stages' order.
pub(super) fn plan(stages: &[Stage], masked: Vec<Value>) -> Vec<PluginView> {
    stages
        .iter()
        .zip(masked)
        .map(|(s, config)| PluginView {
            info: s.info.clone(),
            module: s.module.clone(),
            priority: s.priority,
            critical: s.critical,
            config: compact(config),
        })
        .collect()
}

/// Whether two pipeline views show the same thing (one may stand for the other).
pub(super) fn same_plan(a: &[PluginView], b: &[PluginView]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same(b))
}

/// `None` for an empty object (see [`PluginView`]).
fn compact(config: Value) -> Option<Box<Value>> {
    match &config {
        Value::Object(map) if map.is_empty() => None,
        _ => Some(Box::new(config)),
    }
}

/// What [`compact`] kept, as it was.
fn expand(config: &Option<Box<Value>>) -> Value {
    match config {
        Some(config) => Value::clone(config),
        None => Value::Object(Map::new()),
    }
}

fn epoch_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl SessionView {
    /// A session opening now, its pipeline shown as `plugins` (see [`plan`]).
    pub(super) fn new(
        id: Arc<str>,
        generation: u64,
        target: Arc<Target>,
        plugins: Arc<[PluginView]>,
    ) -> Self {
        let now = epoch_nanos(SystemTime::now());
        SessionView {
            id,
            generation,
            target,
            created_at: now,
            plugins,
            failures: OnceLock::new(),
            state: AtomicU8::new(SessionState::Opening as u8),
            messages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_activity: AtomicU64::new(now),
            pending: AtomicUsize::new(0),
        }
    }

    pub fn state(&self) -> SessionState {
        SessionState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(super) fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Plugin `i`'s hook failures.
    fn failures(&self, i: usize) -> u64 {
        self.failures
            .get()
            .map_or(0, |all| all[i].load(Ordering::Relaxed))
    }

    /// Sets the plugins' failure counts (in pipeline order); the counters are made at the
    /// first failure.
    fn set_failures(&self, counts: impl ExactSizeIterator<Item = u64> + Clone) {
        let all = match self.failures.get() {
            Some(all) => all,
            None if counts.clone().all(|n| n == 0) => return,
            None => self
                .failures
                .get_or_init(|| (0..self.plugins.len()).map(|_| AtomicU64::new(0)).collect()),
        };
        for (counter, n) in all.iter().zip(counts) {
            counter.store(n, Ordering::Relaxed);
        }
    }

    /// The session as `GET /api/sessions/{id}` shows it, built now.
    pub fn info(&self) -> SessionInfo {
        let plugins: Vec<StageInfo> = self
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| StageInfo {
                id: p.info.id.clone(),
                plugin: p.module.to_string(),
                priority: p.priority,
                critical: p.critical,
                config: expand(&p.config),
                failures: self.failures(i),
            })
            .collect();
        let last = self.last_activity.load(Ordering::Relaxed);
        SessionInfo {
            id: self.id.to_string(),
            target_id: self.target.id.clone(),
            connector_type: self.target.connector_type.clone(),
            state: self.state(),
            hook_failures: plugins.iter().map(|p| p.failures).sum(),
            plugins,
            message_count: self.messages.load(Ordering::Relaxed),
            error_count: self.errors.load(Ordering::Relaxed),
            created_at: crate::util::rfc3339(UNIX_EPOCH + Duration::from_nanos(self.created_at)),
            last_activity_at: crate::util::rfc3339(UNIX_EPOCH + Duration::from_nanos(last)),
        }
    }
}

/// One plugin of a session as its stored row keeps it (a [`StageInfo`] whose config is
/// sealed): what a takeover rebuilds the pipeline from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredStage {
    pub id: String,
    pub priority: u32,
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub config: Value,
}

// ---- Parking ---------------------------------------------------------------------------------

/// An open session with no actor: what its actor is rebuilt from on wake. Everything the
/// shared [`SessionView`] (target, plugins, priorities, counters) already holds is read back
/// from there, not kept twice. No supervision record either: a parked session cannot crash,
/// and whatever ends it wakes it first; the woken actor carries a new guard.
pub struct Parked {
    make_connector: Option<super::MakeConnector>,
    /// The connector config the `onConnect` chain settled on, when a plugin changed the
    /// target's (credentials a multi-step login set): the connection goes on with it.
    settled: Option<Box<ConnectorConfig>>,
    /// Per stage, in order: `None` when the stage is as a fresh one (empty state, default
    /// config and timeout), the usual case; the whole list `None` when every stage is.
    stages: Option<Box<[Option<Box<ParkedStage>>]>>,
    /// The thread it ran on, where it wakes.
    thread: ArbiterHandle,
    last_activity: Instant,
    reauth_on_401: bool,
}

impl Parked {
    /// When the session last had a message (the idle timeout of a parked session).
    pub(super) fn last_activity(&self) -> Instant {
        self.last_activity
    }

    pub(super) fn thread(&self) -> &ArbiterHandle {
        &self.thread
    }
}

/// What one stage held that a fresh stage would not.
struct ParkedStage {
    state: Map<String, Value>,
    plugin_config: Map<String, Value>,
    timeout: Duration,
}

/// A stage's bound config when the session gave it none: the schema's defaults.
fn fresh_config(info: &ConnectorPluginInfo) -> Map<String, Value> {
    crate::plugin::config::bind(&info.config_schema, &Value::Object(Map::new()))
}

/// Whether a connector type's sessions may park: those whose connector holds nothing live
/// between messages (a request per message). A WEBSOCKET or GRPC session keeps its actor,
/// since its connector holds an open connection (and the upstream's session on it).
pub fn parkable(connector_type: &str) -> bool {
    matches!(connector_type, "HTTP_REST" | "SSE")
}

/// Whether an open session parks now: parking is on (`park_after` > 0), the session has been
/// idle that long, and its connector may park. (That no message is on its way is checked
/// under the registry's lock.)
pub fn should_park(park_after: Duration, idle_for: Duration, connector_type: &str) -> bool {
    !park_after.is_zero() && idle_for >= park_after && parkable(connector_type)
}

/// How often a session looks at its idle time (and the parked sweep at theirs): a quarter of
/// the shorter of the idle timeout and the park delay, between 10 ms and 5 s.
pub fn tick(idle_timeout: Duration, park_after: Duration) -> Duration {
    let shortest = if park_after.is_zero() {
        idle_timeout
    } else {
        idle_timeout.min(park_after)
    };
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
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
    /// Request-template variables for this message only (see `Exchange::seed`).
    pub variables: Map<String, Value>,
    /// Whether the reply carries each hook's outcome (`plugins`): the REST API's does, a
    /// front door's does not, and then no outcome is recorded at all.
    pub outcomes: bool,
    /// The caller's span (the request): the message's log lines carry its request id.
    pub span: tracing::Span,
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
    target: Arc<Target>,
    stages: Vec<Stage>,
    /// Each stage's config as the store keeps it (secrets sealed with the store's key), until
    /// the session's row is written at open.
    stored_configs: Vec<Value>,
    connector: Option<Rc<dyn Connector>>,
    /// Makes the connector instead of the target's connector type (a front door's model
    /// provider); `None` for sessions opened over REST.
    make_connector: Option<super::MakeConnector>,
    /// A plugin set the connection's credentials in `onConnect`; after an upstream 401 the
    /// chain runs once more (re-authenticating) and the message is sent again once.
    reauth_on_401: bool,
    /// The connector config that chain settled on (kept for parking), when a plugin changed it.
    settled: Option<Box<ConnectorConfig>>,
    /// Shared by every session.
    deps: Arc<SessionDeps>,
    /// Where the session parks (its registry entry).
    registry: Arc<Registry>,
    /// Reports the session's end to the sessions supervisor: armed once the session is open
    /// (one that never opened is not reported), disarmed when it parks.
    guard: DownGuard,
    state: SessionState,
    last_activity: (Instant, SystemTime),
    messages: u64,
    errors: u64,
    view: Arc<SessionView>,
    span: tracing::Span,
    /// Rebuilt from the store (a takeover): its row exists, and its transcript goes on.
    resumed: bool,
    /// A takeover's plugin states as of the last committed message (`{pluginId: state}`),
    /// laid over each plugin's fresh state between `initialize` and `onConnect`.
    restored: Option<Value>,
}

impl SessionActor {
    pub(super) fn new(
        id: String,
        target: Arc<Target>,
        stages: Vec<Stage>,
        stored_configs: Vec<Value>,
        deps: Arc<SessionDeps>,
        registry: Arc<Registry>,
        view: Arc<SessionView>,
    ) -> Self {
        let span = tracing::info_span!("session", session.id = %id, target.id = %target.id);
        let mut guard = DownGuard::detached(&id);
        guard.disarm();
        SessionActor {
            id,
            target,
            stages,
            stored_configs,
            connector: None,
            make_connector: None,
            reauth_on_401: false,
            settled: None,
            deps,
            registry,
            guard,
            state: SessionState::Opening,
            last_activity: (Instant::now(), SystemTime::now()),
            messages: 0,
            errors: 0,
            view,
            span,
            resumed: false,
            restored: None,
        }
    }

    /// A session taken over from another instance: its next message takes index `next` (the
    /// stored transcript goes on), and its row, which exists, is not written again at open.
    pub fn resumed_at(mut self, next: Option<u64>, restored: Option<Value>) -> Self {
        if let Some(next) = next {
            self.messages = next;
            self.resumed = true;
            self.restored = restored;
        }
        self
    }

    /// The session's connector is made by `make` instead of its target's connector type.
    pub fn with_connector(mut self, make: Option<super::MakeConnector>) -> Self {
        self.make_connector = make;
        self
    }

    /// A parked session's actor again, from its record and its view: open, its stages as they
    /// were (state included), its counters where they stood. Its connector is made again with
    /// its next message (no `initialize`, no `onConnect`: the session never stopped being
    /// connected).
    pub(super) fn woken(
        view: Arc<SessionView>,
        parked: Parked,
        guard: DownGuard,
        deps: Arc<SessionDeps>,
        registry: Arc<Registry>,
    ) -> Self {
        let Parked {
            make_connector,
            settled,
            reauth_on_401,
            stages: kept,
            thread: _,
            last_activity,
        } = parked;
        let (id, target) = (view.id.to_string(), view.target.clone());
        let kept = kept.map(Vec::from).unwrap_or_default();
        let kept = kept.into_iter().chain(std::iter::repeat_with(|| None));
        let stages = view
            .plugins
            .iter()
            .zip(kept)
            .enumerate()
            .map(|(i, (shown, kept))| {
                let (state, plugin_config, timeout) = match kept {
                    Some(kept) => {
                        let ParkedStage {
                            state,
                            plugin_config,
                            timeout,
                        } = *kept;
                        (state, plugin_config, timeout)
                    }
                    None => (
                        Map::new(),
                        fresh_config(&shown.info),
                        deps.settings.hook_timeout,
                    ),
                };
                Stage {
                    module: shown.module.clone(),
                    info: shown.info.clone(),
                    priority: shown.priority,
                    critical: shown.critical,
                    timeout,
                    ctx: HookContext {
                        session_id: id.clone(),
                        target_id: target.id.clone(),
                        connector_type: target.connector_type.clone(),
                        state,
                        plugin_config,
                    },
                    failures: view.failures(i),
                }
            })
            .collect();
        let last = UNIX_EPOCH + Duration::from_nanos(view.last_activity.load(Ordering::Relaxed));
        let mut actor =
            SessionActor::new(id, target, stages, Vec::new(), deps, registry, view.clone());
        actor.guard = guard;
        actor.make_connector = make_connector;
        actor.settled = settled;
        actor.reauth_on_401 = reauth_on_401;
        actor.state = SessionState::Open;
        actor.last_activity = (last_activity, last);
        actor.messages = view.messages.load(Ordering::Relaxed);
        actor.errors = view.errors.load(Ordering::Relaxed);
        actor
    }

    /// Parks the session if nothing is on its way to it: its record goes into the registry in
    /// its actor's place and the actor stops, its guard disarmed (the session goes on).
    fn park(&mut self, ctx: &mut Context<Self>) {
        let registry = self.registry.clone();
        let generation = self.view.generation();
        let parked = registry.park(&self.id, generation, || {
            let fresh_timeout = self.deps.settings.hook_timeout;
            let stages: Box<[Option<Box<ParkedStage>>]> = std::mem::take(&mut self.stages)
                .into_iter()
                .map(|stage| {
                    let fresh = stage.ctx.state.is_empty()
                        && stage.timeout == fresh_timeout
                        && stage.ctx.plugin_config == fresh_config(&stage.info);
                    (!fresh).then(|| {
                        Box::new(ParkedStage {
                            state: stage.ctx.state,
                            plugin_config: stage.ctx.plugin_config,
                            timeout: stage.timeout,
                        })
                    })
                })
                .collect();
            // This actor's end is not the session's: nothing to report, no panic to read.
            self.guard.disarm();
            Parked {
                make_connector: self.make_connector.take(),
                settled: self.settled.take(),
                reauth_on_401: self.reauth_on_401,
                stages: stages.iter().any(Option::is_some).then_some(stages),
                thread: Arbiter::current(),
                last_activity: self.last_activity.0,
            }
        });
        if parked {
            tracing::debug!(parent: &self.span, "Session idle; parked.");
            self.connector = None;
            ctx.stop();
        }
    }

    /// Publishes the current counters where the API reads them (never through the mailbox,
    /// so a session busy with a slow upstream still answers `GET /api/sessions/{id}`).
    fn publish(&self) {
        let view = &self.view;
        view.state.store(self.state as u8, Ordering::Release);
        view.messages.store(self.messages, Ordering::Relaxed);
        view.errors.store(self.errors, Ordering::Relaxed);
        view.last_activity
            .store(epoch_nanos(self.last_activity.1), Ordering::Relaxed);
        view.set_failures(self.stages.iter().map(|s| s.failures));
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let idle = self.deps.settings.idle_timeout;
        let park_after = self.deps.settings.park_after;
        ctx.run_interval(tick(idle, park_after), move |act, ctx| {
            if act.state != SessionState::Open {
                return;
            }
            let idle_for = act.last_activity.0.elapsed();
            if idle_for >= idle {
                tracing::info!(parent: &act.span, "Session idle; closing.");
                ctx.address().do_send(Close {
                    reason: "idle timeout".into(),
                });
            } else if should_park(park_after, idle_for, &act.target.connector_type) {
                act.park(ctx);
            }
        });
    }
}

impl Handler<Open> for SessionActor {
    type Result = AtomicResponse<Self, Result<(), SessionError>>;

    fn handle(&mut self, _msg: Open, _ctx: &mut Context<Self>) -> Self::Result {
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.deps.host.clone();
        let target = self.target.clone();
        let make = self.make_connector.clone();
        let restored = self.restored.take();
        let open = async move {
            for i in 0..stages.len() {
                let stage = &mut stages[i];
                if let Err(error) =
                    call_stage(&host, stage, Hook::Initialize, || &Value::Null, None).await
                {
                    let error = open_failed(&host, stage, Hook::Initialize, error);
                    return (stages, Err(error));
                }
            }
            if let Some(Value::Object(mut restored)) = restored {
                for stage in stages.iter_mut() {
                    if let Some(Value::Object(state)) = restored.shift_remove(&stage.info.id) {
                        stage.ctx.state.extend(state);
                    }
                }
            }
            let connector = connect_chain(&host, &mut stages, &target, make.as_ref()).await;
            (stages, connector)
        };
        let open = tracing::Instrument::instrument(open, self.span.clone());
        AtomicResponse::new(Box::pin(open.into_actor(self).map(|(stages, connector), act, ctx| {
            act.stages = stages;
            match connector {
                Ok((connector, settled)) => {
                    act.connector = Some(Rc::from(connector));
                    act.reauth_on_401 = settled.is_some();
                    act.settled = settled.map(Box::new);
                    act.state = SessionState::Open;
                    // Idle from now, not from when the actor was built: a slow `onConnect`
                    // chain does not count against the idle timeout.
                    act.last_activity = (Instant::now(), SystemTime::now());
                    act.publish();
                    // Open: from now on its end is the sessions supervisor's to hear of.
                    act.guard = act.registry.guard(&act.view);
                    // Needed for the row only: not kept while the session lives.
                    let stored = std::mem::take(&mut act.stored_configs);
                    if let Some(store) = act.deps.store.as_ref().filter(|_| !act.resumed) {
                        let info = act.view.info();
                        // The row keeps the sealed configs, never the masked or the clear ones.
                        let plugins: Vec<StageInfo> = info
                            .plugins
                            .into_iter()
                            .zip(stored)
                            .map(|(shown, config)| StageInfo { config, ..shown })
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
        if self.state != SessionState::Open {
            let error = SessionError::Ended {
                id: self.id.clone(),
                reason: format!("it is {}", self.state.as_str()),
            };
            return AtomicResponse::new(Box::pin(actix::fut::ready(Err(error))));
        }
        // A woken session makes its connector with its first message, not when it wakes: a
        // close, hand-over or lost lease needs no connector, and one that cannot be made
        // again fails this message, not the session.
        let connector = self.connector.clone();
        // What it is made from, when it is: the config the `onConnect` chain settled on, if
        // one did.
        let settled = match connector {
            Some(_) => None,
            None => self.settled.as_deref().cloned(),
        };
        self.last_activity = (Instant::now(), SystemTime::now());
        let index = self.messages;
        self.messages += 1;
        let metrics = self.deps.host.metrics();
        metrics.message(&self.target.id, &self.target.connector_type);
        let span = tracing::info_span!(parent: &msg.span, "message", session.id = %self.id, target.id = %self.target.id);
        self.publish();
        let sent_text = msg.message.clone();
        let store = self.deps.store.clone();
        let durability = self.deps.settings.durability;
        let mut stages = std::mem::take(&mut self.stages);
        let host = self.deps.host.clone();
        let broker = self.deps.broker.clone();
        let after_receive = self.deps.settings.after_receive;
        let reauth = self.reauth_on_401;
        let target = self.target.clone();
        let make = self.make_connector.clone();
        let session_id = self.id.clone();
        let stream = msg.stream;
        let outcomes = msg.outcomes;
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
            exchange.seed(msg.variables);
            let mut chain = Chain {
                host: &host,
                broker: &broker,
                session_id: &session_id,
                outcomes: outcomes.then(Vec::new),
                // No message-wide timeout is configured: each hook has its own.
                deadline: None,
            };
            let order = 0..stages.len();
            if let Err(fatal) = chain
                .run(&mut stages, order, Hook::BeforeSend, &mut exchange)
                .await
            {
                return (stages, Err(fatal), None);
            }

            let (message, variables) = (&exchange.message, &exchange.extensions);
            let mut reconnected: Option<(Rc<dyn Connector>, Option<ConnectorConfig>)> = None;
            let connector = match connector {
                Some(connector) => connector,
                None => {
                    let config = settled.clone().unwrap_or_else(|| target.connector_config());
                    match connect_with(&target, make.as_ref(), config).await {
                        Ok(made) => {
                            let made: Rc<dyn Connector> = Rc::from(made);
                            reconnected = Some((made.clone(), settled));
                            made
                        }
                        Err(error) => return (stages, Err(error), None),
                    }
                }
            };
            let client_streams = stream.is_some();
            let upstream = Instant::now();
            let mut sent = send(&*connector, &target, message, variables, client_streams).await;
            let (metrics, took) = (host.metrics(), upstream.elapsed());
            metrics.upstream_called(&target.id, &target.connector_type, took, sent.is_ok());
            if reauth && matches!(&sent, Err(e) if e.status() == Some(401)) {
                match connect_chain(&host, &mut stages, &target, make.as_ref()).await {
                    Ok((fresh, settled)) => {
                        let fresh: Rc<dyn Connector> = Rc::from(fresh);
                        sent = send(&*fresh, &target, message, variables, client_streams).await;
                        reconnected = Some((fresh, settled));
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
            exchange.respond(response.into_value());

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
            let reply = reply_json(
                &content,
                Value::Object(reply_metadata),
                chain.outcomes.take(),
            );
            (stages, Ok(reply), reconnected)
        };
        let pipeline = tracing::Instrument::instrument(pipeline, span);
        let transcript_of = self.id.clone();
        let keep_state = self.deps.keep_state;
        let pipeline = async move {
            let (stages, mut result, reconnected) = pipeline.await;
            if let Some(store) = store {
                if keep_state {
                    // Before the message's write: committed no later than it is.
                    let state: Map<String, Value> = stages
                        .iter()
                        .map(|s| (s.info.id.clone(), Value::Object(s.ctx.state.clone())))
                        .collect();
                    store.write(Write::PluginState {
                        session_id: transcript_of.clone(),
                        state: Value::Object(state),
                    });
                }
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
                if let Some((fresh, settled)) = reconnected {
                    act.connector = Some(fresh);
                    act.settled = settled.map(Box::new);
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
        let host = self.deps.host.clone();
        let connector = self.connector.take();
        let close = async move {
            // Every plugin's onDisconnect runs, whatever the others do.
            let mut outcomes = Vec::new();
            for stage in stages.iter_mut() {
                let began = Instant::now();
                let (outcome, error) =
                    match call_stage(&host, stage, Hook::OnDisconnect, || &Value::Null, None).await
                    {
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
            // Not listed once `session.closed` is out (its end's report only confirms it).
            act.registry.forget(&act.id, act.view.generation());
            tracing::info!(parent: &act.span, reason = %msg.reason, messages = act.messages, "Session closed.");
            if let Some(store) = &act.deps.store {
                store.write(Write::SessionEnded {
                    id: act.id.clone(),
                    state: "closed",
                    reason: msg.reason.clone(),
                    at: crate::util::rfc3339(SystemTime::now()),
                });
            }
            act.deps.broker.emit(&events::SessionClosed {
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

/// A graceful shutdown with other live instances on the shared store: the session leaves this
/// instance but stays open. Its plugins' `onDisconnect` does not run and its row stays `open`;
/// its upstream connection is closed, what it wrote is committed (its plugin state as of its
/// last message), and then its lease is released so the next message, wherever it arrives,
/// takes it over at once (not after the lease's time). Queued behind the messages in flight,
/// which finish first. Answers false, doing nothing, for a session no other instance could
/// take over (a front door's, with its own connector): that one is to be closed.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct HandOver;

impl Handler<HandOver> for SessionActor {
    type Result = AtomicResponse<Self, bool>;

    fn handle(&mut self, _msg: HandOver, _ctx: &mut Context<Self>) -> Self::Result {
        if self.make_connector.is_some() {
            return AtomicResponse::new(Box::pin(actix::fut::ready(false)));
        }
        if matches!(self.state, SessionState::Closing | SessionState::Closed) {
            return AtomicResponse::new(Box::pin(actix::fut::ready(true)));
        }
        // No message is taken from here on.
        self.state = SessionState::Closing;
        let connector = self.connector.take();
        let store = self.deps.store.clone();
        let id = self.id.clone();
        let hand_over = async move {
            if let Some(connector) = connector {
                connector.disconnect().await;
            }
            let Some(store) = store else {
                return false;
            };
            // The lease goes only once the session's writes are committed: released earlier,
            // another instance could take it over from an older state.
            if let Err(error) = store.flushed().await {
                tracing::warn!(session = %id, %error, "A handed-over session's writes were not committed; its lease is kept and expires by itself.");
                return false;
            }
            match store.store().release_lease(&id).await {
                Ok(released) => released,
                Err(error) => {
                    tracing::warn!(session = %id, %error, "A handed-over session's lease could not be released; it expires by itself.");
                    false
                }
            }
        };
        AtomicResponse::new(Box::pin(hand_over.into_actor(self).map(
            |released, act, ctx| {
                act.state = SessionState::Closed;
                tracing::info!(parent: &act.span, messages = act.messages, released, "Session handed over: it stays open for another instance.");
                act.guard.set_reason(ExitReason::Shutdown);
                ctx.stop();
                true
            },
        )))
    }
}

/// Test hook: make the session actor panic, to exercise its supervision.
/// Another instance holds this session's lease now (this one lost it, e.g. cut off from the
/// database for longer than the lease): the session stops here at once, without running its
/// plugins' `onDisconnect` or touching its row, which belongs to the new owner.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LeaseLost;

impl Handler<LeaseLost> for SessionActor {
    type Result = ();

    fn handle(&mut self, _msg: LeaseLost, ctx: &mut Context<Self>) {
        tracing::warn!(parent: &self.span, "Session's lease is held by another instance; it stops here.");
        self.guard.set_reason(ExitReason::Error(
            "its lease is held by another instance".into(),
        ));
        ctx.stop();
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        serde_json::from_value(json!({
            "id": "t1",
            "name": "T",
            "connectorType": "HTTP_REST",
            "endpoint": "http://127.0.0.1:9/v1",
            "requestTemplate": { "messagePath": "message" },
            "responseTemplate": { "responsePath": "content" }
        }))
        .expect("a target")
    }

    fn stage(id: &str, priority: u32) -> Stage {
        Stage {
            module: Arc::from(id),
            info: Arc::new(ConnectorPluginInfo {
                id: id.into(),
                name: id.into(),
                description: String::new(),
                version: "1.0.0".into(),
                priority,
                compatible_connectors: vec!["HTTP_REST".into()],
                config_schema: Vec::new(),
                hooks: crate::plugin::HookSet::LIFECYCLE,
            }),
            priority,
            critical: false,
            timeout: Duration::from_secs(1),
            ctx: HookContext::default(),
            failures: 0,
        }
    }

    #[test]
    fn a_state_survives_its_number() {
        for state in [
            SessionState::Opening,
            SessionState::Open,
            SessionState::Closing,
            SessionState::Closed,
        ] {
            assert_eq!(SessionState::from_u8(state as u8), state);
        }
    }

    #[test]
    fn a_compacted_config_comes_back_as_it_was() {
        for config in [
            json!({}),
            json!({ "a": 1, "b": "***" }),
            Value::Null,
            json!([]),
        ] {
            assert_eq!(expand(&compact(config.clone())), config);
        }
        assert!(
            compact(json!({})).is_none(),
            "an empty config takes no room"
        );
    }

    #[test]
    fn the_view_shows_the_stages_in_order_with_the_latest_counters() {
        let stages = vec![stage("a", 1), stage("b", 2)];
        let view = SessionView::new(
            Arc::from("s1"),
            1,
            Arc::new(target()),
            Arc::from(plan(&stages, vec![json!({}), json!({ "key": "***" })])),
        );
        let opening = view.info();
        assert_eq!(opening.state, SessionState::Opening);
        assert_eq!((opening.message_count, opening.hook_failures), (0, 0));

        view.state
            .store(SessionState::Open as u8, Ordering::Release);
        view.messages.store(3, Ordering::Relaxed);
        view.errors.store(1, Ordering::Relaxed);
        assert!(
            view.failures.get().is_none(),
            "no counters before a failure"
        );
        view.set_failures([0, 0].into_iter());
        assert!(view.failures.get().is_none(), "nor for zeros");
        view.set_failures([0, 2].into_iter());
        let info = view.info();
        assert_eq!(info.id, "s1");
        assert_eq!(info.target_id, "t1");
        assert_eq!(info.connector_type, "HTTP_REST");
        assert_eq!(info.state, SessionState::Open);
        assert_eq!((info.message_count, info.error_count), (3, 1));
        assert_eq!(info.hook_failures, 2);
        let shown: Vec<(&str, &str, u32, u64)> = info
            .plugins
            .iter()
            .map(|p| (p.id.as_str(), p.plugin.as_str(), p.priority, p.failures))
            .collect();
        assert_eq!(shown, vec![("a", "a", 1, 0), ("b", "b", 2, 2)]);
        assert_eq!(info.plugins[0].config, json!({}));
        assert_eq!(info.plugins[1].config, json!({ "key": "***" }));
        assert_eq!(info.created_at, info.last_activity_at);
    }

    #[test]
    fn only_an_idle_session_without_a_live_connection_parks() {
        let after = Duration::from_secs(5);
        assert!(should_park(after, after, "HTTP_REST"));
        assert!(should_park(after, Duration::from_secs(60), "SSE"));
        assert!(!should_park(
            after,
            Duration::from_millis(4_999),
            "HTTP_REST"
        ));
        assert!(!should_park(after, Duration::from_secs(60), "WEBSOCKET"));
        assert!(!should_park(after, Duration::from_secs(60), "GRPC"));
        assert!(
            !should_park(Duration::ZERO, Duration::from_secs(3600), "HTTP_REST"),
            "0 never parks"
        );
    }

    #[test]
    fn the_tick_follows_the_shorter_of_idle_timeout_and_park_delay() {
        let s = Duration::from_secs;
        assert_eq!(tick(s(600), s(5)), Duration::from_millis(1_250));
        assert_eq!(tick(s(2), s(5)), Duration::from_millis(500));
        assert_eq!(tick(s(600), Duration::ZERO), s(5), "capped at 5 s");
        assert_eq!(
            tick(Duration::from_millis(8), Duration::ZERO),
            Duration::from_millis(10),
            "at least 10 ms"
        );
    }

    /// What an idle session holds, printed (`--nocapture`) for the record, and the parked
    /// record's fixed part kept small.
    #[test]
    fn a_parked_record_is_small() {
        let sizes = [
            ("SessionActor", std::mem::size_of::<SessionActor>()),
            ("Stage", std::mem::size_of::<Stage>()),
            ("HookContext", std::mem::size_of::<HookContext>()),
            ("SessionView", std::mem::size_of::<SessionView>()),
            ("PluginView", std::mem::size_of::<PluginView>()),
            ("Parked", std::mem::size_of::<Parked>()),
            ("ParkedStage", std::mem::size_of::<ParkedStage>()),
            ("DownGuard", std::mem::size_of::<DownGuard>()),
            ("ConnectorConfig", std::mem::size_of::<ConnectorConfig>()),
            (
                "HttpConnector",
                std::mem::size_of::<crate::connector::http::HttpConnector>(),
            ),
            ("Target", std::mem::size_of::<Target>()),
            ("tracing::Span", std::mem::size_of::<tracing::Span>()),
            (
                "Context<SessionActor>",
                std::mem::size_of::<Context<SessionActor>>(),
            ),
        ];
        for (name, size) in sizes {
            println!("size_of {name}: {size}");
        }
        assert!(std::mem::size_of::<Parked>() <= 80);
        assert_eq!(std::mem::size_of::<Option<Box<ParkedStage>>>(), 8);
    }

    #[test]
    fn sessions_of_the_same_plugins_and_configs_share_one_plan() {
        let stages = vec![stage("a", 1), stage("b", 2)];
        let configs = || vec![json!({}), json!({ "key": "***" })];
        let one = plan(&stages, configs());
        assert!(same_plan(&one, &plan(&stages, configs())));
        assert!(
            !same_plan(
                &one,
                &plan(&stages, vec![json!({}), json!({ "key": "other" })])
            ),
            "another config"
        );
        assert!(
            !same_plan(&one, &plan(&stages[..1], vec![json!({})])),
            "fewer plugins"
        );
        let mut other = stages.clone();
        other[1].critical = true;
        assert!(!same_plan(&one, &plan(&other, configs())), "critical");
        other[1].critical = false;
        other[0].priority = 7;
        assert!(!same_plan(&one, &plan(&other, configs())), "priority");
        // A plugin registered again (a reload) is another plan, even with the same info.
        let again = vec![stage("a", 1), stage("b", 2)];
        assert!(!same_plan(&one, &plan(&again, configs())));
        // The plan is the view's: sessions sharing it still count their failures apart.
        let plan: Arc<[PluginView]> = Arc::from(one);
        let view = |id: &str| SessionView::new(Arc::from(id), 1, Arc::new(target()), plan.clone());
        let (first, second) = (view("s1"), view("s2"));
        first.set_failures([1, 0].into_iter());
        assert_eq!(first.info().hook_failures, 1);
        assert_eq!(second.info().hook_failures, 0);
        assert_eq!(first.info().plugins[1].config, json!({ "key": "***" }));
        assert_eq!(Arc::strong_count(&plan), 3);
    }

    #[test]
    fn stages_share_the_plugin_info() {
        let first = stage("a", 1);
        let second = Stage {
            ctx: HookContext {
                session_id: "other".into(),
                ..HookContext::default()
            },
            ..first.clone()
        };
        assert!(Arc::ptr_eq(&first.info, &second.info));
        assert!(Arc::ptr_eq(&first.module, &second.module));
    }
}

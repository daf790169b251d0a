//! Sessions: a conversation with one upstream target through a pipeline of connector plugins.
//!
//! Owns checking a session's plugin list against its target (unknown plugin,
//! incompatible connector type, invalid config: every error at once), building its pipeline
//! in priority order, opening sessions, and the registry the REST API uses: one entry per open
//! session, its only record (the sessions supervisor, `supervisor`, keeps none: it hears of a
//! session's end through the guard the session's actor carries; a crashed session is not
//! restarted, an event says why). A session's life is its actor (`actor`); the chain of hooks
//! a message passes through is `pipeline`. Targets are the target catalogue's (`target`).
//!
//! When instances share the store (PostgreSQL), each live session is owned through a lease
//! (`store::lease`): taken when the session opens, renewed in one statement per instance by a
//! timer, released when it ends. A message for a session that is not live here is located
//! ([`SessionManager::locate`]): forwarded to its owner while the owner's lease runs, or taken
//! over (the session rebuilt from its stored row, its transcript continued) once it expired
//! (`owner`). An SQLite store has one instance: no leases, nothing located.
//!
//! An idle session parks (`actor`): its registry entry holds a compact record instead of an
//! actor's address, and whatever reaches it next (a message, a close, the idle timeout's sweep
//! over parked sessions, a lost lease, shutdown) wakes it first ([`Registry::acquire`]). Its
//! lease is this instance's all along (leases are renewed per instance, not per actor).

pub mod actor;
pub mod owner;
pub mod pipeline;
pub mod secrets;
pub mod supervisor;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::broker::events;
use crate::broker::BrokerHandle;
use crate::connector::{Connector, ConnectorConfig, ConnectorError};
use crate::plugin::config;
use crate::plugin::host::PluginHost;
use crate::plugin::HookContext;
use crate::store::writer::StoreHandle;
use crate::supervisor::child::{ChildFactory, DownGuard, RunningChild, StartArgs, StartError};
use crate::supervisor::ChildDown;
use crate::target::catalogue::TargetRegistry;
use crate::target::{PluginRef, Target};
use actor::{
    Close, Open, Parked, PluginView, SendMessage, SessionActor, SessionDeps, SessionInfo,
    SessionView, Stage,
};
pub use pipeline::StreamEvent;
use supervisor::{RunningSessions, SessionsSupervisor};

/// What sessions run with (from `[sessions]`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Time a hook may take unless the plugin reference says otherwise.
    pub hook_timeout: Duration,
    /// A session without messages for this long is closed.
    pub idle_timeout: Duration,
    /// Messages a session may have waiting.
    pub queue_capacity: usize,
    pub after_receive: AfterReceiveOrder,
    pub max_sessions: usize,
    /// Session threads (0: one per core).
    pub threads: usize,
    /// Whether a reply waits for its transcript rows to commit.
    pub durability: crate::store::writer::Durability,
    /// How long a session's ownership lease lasts unrenewed (shared stores only); renewed
    /// every third of it.
    pub lease_ttl: Duration,
    /// An open session idle this long parks (its actor stops, a record stays); zero: never.
    pub park_after: Duration,
}

/// The order `afterReceive` runs in, relative to `beforeSend`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReceiveOrder {
    /// The same priority order (Krawall's behaviour).
    Same,
    /// Reversed, so the first plugin to see a message is the last to see its answer.
    Reverse,
}

/// Chunks buffered between a streaming session and its client; a slower client holds the
/// session back (and with it the upstream read) rather than growing a queue.
const STREAM_BUFFER: usize = 32;

/// Distinct pipelines whose view is kept for sharing (see `SessionManager::plans`).
const SHARED_PLANS: usize = 64;

/// The error of a message sent to a session whose actor has gone.
fn stopped(id: &str) -> SessionError {
    SessionError::Ended {
        id: id.to_string(),
        reason: "it stopped (see the session.failed event)".into(),
    }
}

/// Why a session request failed; `api::error` maps each to a status and code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("target '{0}' does not exist")]
    TargetNotFound(String),
    #[error("session '{0}' does not exist")]
    SessionNotFound(String),
    #[error("the session's plugins are not valid ({} problems)", .0.len())]
    InvalidPlugins(Vec<String>),
    #[error("session '{0}' is busy: its message queue is full")]
    QueueFull(String),
    #[error("too many sessions are open (the limit is {0})")]
    TooManySessions(usize),
    #[error("plugin '{plugin}' failed in {hook}: {message}")]
    HookFailed {
        plugin: String,
        hook: &'static str,
        message: String,
    },
    #[error("the upstream failed: {0}")]
    Upstream(ConnectorError),
    #[error("session '{id}' ended: {reason}")]
    Ended { id: String, reason: String },
    /// A streaming client went away before the answer was complete; the upstream call was
    /// cancelled.
    #[error(
        "the client went away before the answer was complete; the upstream call was cancelled"
    )]
    ClientGone,
    /// `store.durability = "acknowledged"` and the answer's transcript rows could not be
    /// committed: the answer is withheld rather than acknowledged without its record.
    #[error("the answer was not sent because its transcript could not be stored: {0}")]
    NotCommitted(crate::store::writer::CommitError),
    /// A plugin of the session is not running (disabled, restarting or failed).
    #[error("plugin '{0}' is not running (restarting or failed)")]
    PluginUnavailable(String),
    /// A plugin of the session was disabled by an operator.
    #[error("plugin '{0}' is disabled; enable it first")]
    PluginDisabled(String),
    /// Another instance owns the session and could not be reached (or the instances disagree
    /// on its owner for a moment): its lease runs for `retry_after_ms` more, after which any
    /// instance takes the session over.
    #[error("session '{id}' is owned by instance '{owner}', which cannot be reached; retry in {retry_after_ms} ms")]
    OwnerUnavailable {
        id: String,
        owner: String,
        retry_after_ms: i64,
    },
    /// The shared store failed while locating or taking over a session.
    #[error("the store failed: {0}")]
    Store(String),
}

/// Where a session lives, for a request that reached this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Live here (perhaps just taken over): serve it.
    Here,
    /// Live on instance `owner`, reached at `url` (its advertised base URL).
    There {
        owner: String,
        url: String,
        retry_after_ms: i64,
        /// Found in the owner cache, not read from the store just now: should the owner not
        /// answer, forget it and locate again (it may have handed the session over).
        cached: bool,
    },
}

/// A session rebuilt from the store (a takeover): its id and where its transcript goes on.
struct Resumed {
    id: String,
    next_index: u64,
    /// Its plugins' states as of its last committed message (`{pluginId: state}`).
    state: Option<Value>,
}

fn store_error(error: crate::store::StoreError) -> SessionError {
    SessionError::Store(error.to_string())
}

/// `POST /api/sessions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    pub target_id: String,
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
}

/// Makes a session's connector from the config its `onConnect` chain settled on, in place of
/// the target's connector type: a front door's route to a model provider. Runs on the
/// session's thread.
pub type MakeConnector =
    Arc<dyn Fn(ConnectorConfig) -> Result<Box<dyn Connector>, ConnectorError> + Send + Sync>;

/// A session opened by the service itself rather than over REST (a front door's implicit
/// session): the target as given, not looked up, and optionally its own connector.
pub struct OpenSpec {
    pub target: Target,
    pub plugins: Vec<PluginRef>,
    pub connector: Option<MakeConnector>,
}

/// A session's actor, held while something is on its way to it: its view's `pending` counts
/// the holder, so the session cannot park meanwhile; [`Handle::release`] ends the hold.
#[derive(Clone)]
struct Handle {
    addr: Addr<SessionActor>,
    /// What the API reads, and the queue bound's count; written by the actor itself.
    view: Arc<SessionView>,
}

impl Handle {
    fn release(&self) {
        self.view.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an open session is in the registry: an actor, or parked (no actor while idle).
enum Slot {
    Live(Addr<SessionActor>),
    Parked(Box<Parked>),
}

/// One open session in the registry: its key is the view's id (one allocation for both).
struct Entry {
    /// What the API reads, live or parked.
    view: Arc<SessionView>,
    slot: Slot,
}

/// One stage of a pipeline being built, with the configs only the view and the store's row
/// need (the stage itself does not keep them).
struct Planned {
    stage: Stage,
    /// As responses show it (secrets masked).
    masked: Value,
    /// As the store keeps it (secrets sealed with the store's key).
    stored: Value,
}

/// Shared between the manager, the sessions supervisor and the session actors. The entry is a
/// session's only record: the sessions supervisor keeps none of its own.
struct Registry {
    live: RwLock<HashMap<Arc<str>, Entry>>,
    /// What a woken session's actor holds.
    deps: Arc<SessionDeps>,
    /// Where session actors report their end: the running sessions supervisor.
    down: Mutex<Option<Recipient<ChildDown>>>,
    /// Sessions may be added (a sessions supervisor runs and is not stopping). Changed and
    /// read under `live`'s write lock, so no session slips in past a stop.
    accepting: AtomicBool,
    /// Sessions that ended here whose end is not committed yet (and, on a shared store, whose
    /// lease is not released yet): until then their row still reads `open` under this
    /// instance's lease, and a message for one must not take it over again here.
    ending: Mutex<HashSet<Arc<str>>>,
    /// The last generation given to a session: its `ChildDown` names it, and the stop goes
    /// newest first by it.
    generations: AtomicU64,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Entry>> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Entry>> {
        self.live.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `id`'s actor, held ([`Handle`]); a parked session is woken first. With `bound`,
    /// a hold beyond one in progress plus `bound` waiting is refused (the message queue).
    fn acquire(self: &Arc<Self>, id: &str, bound: Option<usize>) -> Result<Handle, SessionError> {
        let not_found = || SessionError::SessionNotFound(id.to_string());
        {
            // Counted under the lock: a session parks only under the write lock, with nothing
            // counted, so a counted hold always reaches a live actor.
            let live = self.read();
            let entry = live.get(id).ok_or_else(not_found)?;
            if let Slot::Live(addr) = &entry.slot {
                return hold(id, addr, &entry.view, bound);
            }
        }
        let mut live = self.write();
        let entry = live.remove(id).ok_or_else(not_found)?;
        let addr = match entry.slot {
            Slot::Live(addr) => addr,
            Slot::Parked(parked) => self.wake(&entry.view, parked),
        };
        let handle = hold(id, &addr, &entry.view, bound);
        live.insert(
            entry.view.id().clone(),
            Entry {
                view: entry.view,
                slot: Slot::Live(addr),
            },
        );
        handle
    }

    /// Starts a parked session's actor again, on the thread it ran on; messages sent to it
    /// meanwhile wait in its mailbox and are answered in order once its connector is made
    /// again.
    fn wake(self: &Arc<Self>, view: &Arc<SessionView>, parked: Box<Parked>) -> Addr<SessionActor> {
        let thread = parked.thread().clone();
        let guard = self.guard(view);
        let (view, deps, registry) = (view.clone(), self.deps.clone(), self.clone());
        SessionActor::start_in_arbiter(&thread, move |_| {
            SessionActor::woken(view, *parked, guard, deps, registry)
        })
    }

    /// Puts `parked()` in session `id`'s actor's place, unless something is on its way to the
    /// actor (a held handle), the session is not live, or the entry is another incarnation's
    /// (`generation` is the parking actor's).
    fn park(&self, id: &str, generation: u64, parked: impl FnOnce() -> Parked) -> bool {
        let mut live = self.write();
        let Some(entry) = live.get_mut(id) else {
            return false;
        };
        if entry.view.generation() != generation
            || !matches!(entry.slot, Slot::Live(_))
            || entry.view.pending.load(Ordering::Acquire) != 0
        {
            return false;
        }
        entry.slot = Slot::Parked(Box::new(parked()));
        true
    }

    /// Adds an opened session, unless the sessions supervisor is stopping (or gone): then
    /// false, and the caller closes it.
    fn insert(&self, view: Arc<SessionView>, addr: Addr<SessionActor>) -> bool {
        let mut live = self.write();
        if !self.accepting.load(Ordering::Acquire) {
            return false;
        }
        live.insert(
            view.id().clone(),
            Entry {
                view,
                slot: Slot::Live(addr),
            },
        );
        true
    }

    /// Forgets session `id` if it is still the incarnation `generation`: it ended. It stays
    /// [`Registry::is_ending`] until [`Registry::ended`] (its end committed).
    fn forget(&self, id: &str, generation: u64) {
        let mut live = self.write();
        if live
            .get(id)
            .is_some_and(|e| e.view.generation() == generation)
        {
            if let Some((key, _)) = live.remove_entry(id) {
                self.ending().insert(key);
            }
        }
    }

    fn ending(&self) -> std::sync::MutexGuard<'_, HashSet<Arc<str>>> {
        self.ending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether session `id` ended here and its end is not committed yet.
    fn is_ending(&self, id: &str) -> bool {
        self.ending().contains(id)
    }

    /// Session `id`'s end is committed (and its lease released): it may be taken over again.
    fn ended(&self, id: &str) {
        self.ending().remove(id);
    }

    /// The guard an opened session's actor carries: it reports the session's end to the
    /// sessions supervisor (to no one when none runs).
    fn guard(&self, view: &SessionView) -> DownGuard {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match down {
            Some(down) => DownGuard::new(view.id().to_string(), view.generation(), down),
            None => {
                let mut guard = DownGuard::detached(view.id());
                guard.disarm();
                guard
            }
        }
    }

    /// A new sessions supervisor runs: every session is forgotten (a restarted sessions
    /// supervisor starts empty; its predecessor stopped them) and new ones are accepted.
    fn install(&self, down: Recipient<ChildDown>) {
        let mut live = self.write();
        live.clear();
        live.shrink_to_fit();
        self.ending().clear();
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(down);
        self.accepting.store(true, Ordering::Release);
    }

    /// The sessions supervisor reporting to `down` is gone: unless a newer one is installed
    /// already, no session is added until one is.
    fn refuse(&self, down: &Recipient<ChildDown>) {
        let _live = self.write();
        let mut installed = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if installed.as_ref() == Some(down) {
            *installed = None;
            self.accepting.store(false, Ordering::Release);
        }
    }

    /// The sessions supervisor stops: no session is added from now on. Answers the open ones,
    /// newest first (the order they are stopped in).
    fn stop_accepting(&self) -> Vec<Arc<str>> {
        let live = self.write();
        self.accepting.store(false, Ordering::Release);
        let mut open: Vec<(u64, Arc<str>)> = live
            .values()
            .map(|e| (e.view.generation(), e.view.id().clone()))
            .collect();
        open.sort_unstable_by_key(|(generation, _)| std::cmp::Reverse(*generation));
        open.into_iter().map(|(_, id)| id).collect()
    }

    /// Parked sessions whose idle timeout has passed.
    fn expired(&self, idle: Duration) -> Vec<String> {
        self.read()
            .iter()
            .filter_map(|(id, entry)| match &entry.slot {
                Slot::Parked(p) if p.last_activity().elapsed() >= idle => Some(id.to_string()),
                _ => None,
            })
            .collect()
    }

    /// How many sessions are parked now.
    fn parked(&self) -> usize {
        self.read()
            .values()
            .filter(|e| matches!(e.slot, Slot::Parked(_)))
            .count()
    }
}

/// Counts a hold on a live session (see [`Registry::acquire`]).
fn hold(
    id: &str,
    addr: &Addr<SessionActor>,
    view: &Arc<SessionView>,
    bound: Option<usize>,
) -> Result<Handle, SessionError> {
    let queued = view.pending.fetch_add(1, Ordering::AcqRel);
    if bound.is_some_and(|bound| queued > bound) {
        view.pending.fetch_sub(1, Ordering::AcqRel);
        return Err(SessionError::QueueFull(id.to_string()));
    }
    Ok(Handle {
        addr: addr.clone(),
        view: view.clone(),
    })
}

/// Sessions and targets, for the REST API.
pub struct SessionManager {
    targets: Arc<TargetRegistry>,
    registry: Arc<Registry>,
    host: Arc<PluginHost>,
    broker: BrokerHandle,
    settings: SessionConfig,
    store: Option<StoreHandle>,
    /// What every session actor holds, shared.
    deps: Arc<SessionDeps>,
    /// Threads session actors run on, one per core, picked in turn: sessions (with the native
    /// hooks they run inline) use every core instead of the system thread alone.
    threads: Vec<Arbiter>,
    next_thread: AtomicUsize,
    /// The name of each plugin module, one copy shared by every session's stages (as few as
    /// there are plugins).
    modules: Mutex<HashMap<String, Arc<str>>>,
    /// Recent pipelines as the view shows them, shared by every session whose plugins,
    /// priorities and masked configs are the same (most sessions of a target): a session's
    /// view then holds a pointer, not a copy per plugin. At most [`SHARED_PLANS`], the dead
    /// ones dropped first.
    plans: Mutex<Vec<Weak<[PluginView]>>>,
    /// Sessions are owned through leases: the store is shared (PostgreSQL).
    leased: bool,
    /// One takeover at a time per session, so two messages for one session arriving together
    /// rebuild it once, while a dead owner's other sessions are taken over beside it (one slow
    /// `onConnect` holds only its own session). Entries go when their takeover ends.
    takeovers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Owners of sessions live elsewhere, while the lease read runs (`owner::OwnerCache`): a
    /// forwarded message costs no database read.
    owners: Mutex<owner::OwnerCache>,
    /// The parked sessions' idle sweep runs (started once, with the first sessions supervisor).
    sweeping: std::sync::atomic::AtomicBool,
}

/// `configured`, or one per CPU core when 0.
fn thread_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Drop for SessionManager {
    fn drop(&mut self) {
        for thread in &self.threads {
            thread.stop();
        }
    }
}

impl SessionManager {
    pub fn new(
        targets: Arc<TargetRegistry>,
        host: Arc<PluginHost>,
        broker: BrokerHandle,
        settings: SessionConfig,
        store: Option<StoreHandle>,
    ) -> Arc<Self> {
        let (host_for_deps, broker_for_deps) = (host.clone(), broker.clone());
        let leased = store
            .as_ref()
            .is_some_and(|s| s.store().backend() == crate::store::Backend::Postgres);
        let deps = Arc::new(SessionDeps {
            host: host_for_deps,
            broker: broker_for_deps,
            settings: settings.clone(),
            store: store.clone(),
            keep_state: leased,
            hand_over: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        });
        Arc::new(SessionManager {
            targets,
            registry: Arc::new(Registry {
                live: RwLock::new(HashMap::new()),
                deps: deps.clone(),
                down: Mutex::new(None),
                accepting: AtomicBool::new(false),
                ending: Mutex::new(HashSet::new()),
                generations: AtomicU64::new(0),
            }),
            host,
            broker,
            threads: (0..thread_count(settings.threads))
                .map(|_| Arbiter::new())
                .collect(),
            next_thread: AtomicUsize::new(0),
            modules: Mutex::new(HashMap::new()),
            plans: Mutex::new(Vec::new()),
            deps,
            sweeping: std::sync::atomic::AtomicBool::new(false),
            settings,
            store,
            leased,
            takeovers: Mutex::new(HashMap::new()),
            owners: Mutex::new(owner::OwnerCache::default()),
        })
    }

    /// The store, when sessions are owned through leases (a shared store).
    fn leases(&self) -> Option<&crate::store::Store> {
        self.store
            .as_ref()
            .filter(|_| self.leased)
            .map(|s| s.store())
    }

    /// Whether sessions are owned through leases (the store is shared).
    pub fn leased(&self) -> bool {
        self.leased
    }

    /// Part of a graceful shutdown when other instances share the store and are live: the
    /// sessions then stopped are handed over (left open, their leases released once their
    /// writes are committed) rather than closed. Nothing without leases.
    pub fn hand_over_on_stop(&self) {
        if self.leased {
            self.deps.hand_over.store(true, Ordering::Relaxed);
        }
    }

    /// Renews this instance's leases every third of their lifetime, in one statement, for as
    /// long as the manager lives. Nothing with an unshared store.
    pub fn renew_leases(self: &Arc<Self>) {
        if !self.leased {
            return;
        }
        let manager = Arc::downgrade(self);
        let ttl = self.settings.lease_ttl;
        actix_web::rt::spawn(async move {
            loop {
                actix_web::rt::time::sleep(ttl / 3).await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                let Some(store) = manager.leases() else {
                    return;
                };
                // Sessions live before the check began had their lease before they went live:
                // one of them without a valid lease now was taken over elsewhere.
                let live: Vec<String> = manager
                    .registry
                    .read()
                    .keys()
                    .map(|id| id.to_string())
                    .collect();
                if let Err(error) = store.renew_leases(ttl).await {
                    tracing::warn!(%error, "Session leases could not be renewed; other instances may take the sessions over.");
                    continue;
                }
                match store.owned_sessions().await {
                    Ok(owned) => {
                        let owned: std::collections::HashSet<String> = owned.into_iter().collect();
                        for id in live.iter().filter(|id| !owned.contains(*id)) {
                            // Handing sessions over (a graceful stop): a released lease is
                            // the hand-over's, never to be taken back.
                            if manager.deps.hand_over.load(Ordering::Relaxed) {
                                break;
                            }
                            // Lapsed but free (nobody took it): ours again. Taken: it stops.
                            // (A failed statement proves nothing: the next check decides.)
                            if !matches!(store.acquire_lease(id, ttl).await, Ok(false)) {
                                continue;
                            }
                            // A parked session wakes to stop like a live one (its guard
                            // reports). Not awaited here: `LeaseLost` waits behind a message
                            // in flight, and the other sessions' renewals must not.
                            if let Ok(handle) = manager.registry.acquire(id, None) {
                                actix_web::rt::spawn(async move {
                                    let _ = handle.addr.send(actor::LeaseLost).await;
                                    handle.release();
                                });
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "This instance's leases could not be listed; lost sessions stay until the next check.")
                    }
                }
            }
        });
    }

    /// Closes parked sessions whose idle timeout passed (a live session's own timer does), for
    /// as long as the manager lives: each wakes, so its plugins' `onDisconnect` runs.
    fn sweep_parked(self: &Arc<Self>) {
        if self.settings.park_after.is_zero()
            || self
                .sweeping
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let manager = Arc::downgrade(self);
        let idle = self.settings.idle_timeout;
        let every = actor::tick(idle, self.settings.park_after);
        actix_web::rt::spawn(async move {
            loop {
                actix_web::rt::time::sleep(every).await;
                let Some(manager) = manager.upgrade() else {
                    return;
                };
                for id in manager.registry.expired(idle) {
                    let Ok(handle) = manager.registry.acquire(&id, None) else {
                        continue;
                    };
                    tracing::info!(session = %id, "Session idle; closing.");
                    actix_web::rt::spawn(async move {
                        let _ = handle
                            .addr
                            .send(Close {
                                reason: "idle timeout".into(),
                            })
                            .await;
                        handle.release();
                    });
                }
            }
        });
    }

    /// Where session `id` lives, for a request that reached this instance (`forwarded`: from
    /// another instance). Live here: at once, without the store. Otherwise, with a shared
    /// store, by its lease: owned elsewhere (forward it there), or taken over here when its
    /// owner's lease expired. Without leases, a session not live here is not found.
    pub async fn locate(&self, id: &str, forwarded: bool) -> Result<Located, SessionError> {
        if self.is_live(id) {
            return Ok(Located::Here);
        }
        let not_found = || SessionError::SessionNotFound(id.to_string());
        let Some(store) = self.leases() else {
            return Err(not_found());
        };
        // A forwarded request never goes on (the loop guard below reads the lease itself).
        if !forwarded {
            let known = self.owners().get(id, std::time::Instant::now());
            if let Some(route) = known {
                return Ok(Located::There {
                    owner: route.owner,
                    url: route.url,
                    retry_after_ms: route.retry_after_ms,
                    cached: true,
                });
            }
        }
        let row = store.session(id).await.map_err(store_error)?;
        // Ended sessions stay ended, as on one instance.
        let row = row
            .filter(|r| matches!(r.state.as_str(), "open" | "interrupted"))
            .ok_or_else(not_found)?;
        let (lease, now) = store.lease(id).await.map_err(store_error)?;
        let decision = crate::store::lease::decide(lease.as_ref(), store.instance(), now);
        match owner::step(decision, forwarded) {
            owner::Step::Forward {
                owner,
                retry_after_ms,
            } => match store.instance_url(&owner).await.map_err(store_error)? {
                Some(url) => {
                    self.owners().remember(
                        id,
                        &owner,
                        &url,
                        retry_after_ms,
                        std::time::Instant::now(),
                    );
                    Ok(Located::There {
                        owner,
                        url,
                        retry_after_ms,
                        cached: false,
                    })
                }
                None => Err(SessionError::OwnerUnavailable {
                    id: id.to_string(),
                    owner,
                    retry_after_ms,
                }),
            },
            owner::Step::Unavailable {
                owner,
                retry_after_ms,
            } => Err(SessionError::OwnerUnavailable {
                id: id.to_string(),
                owner,
                retry_after_ms,
            }),
            // It just ended here and its end is not committed yet: ended, not taken over again.
            owner::Step::TakeOver { .. } if self.registry.is_ending(id) => Err(not_found()),
            owner::Step::TakeOver { from } => self.take_over(row, from).await,
        }
    }

    /// Forgets where session `id` was found elsewhere (its owner did not answer); answers
    /// whether it had been remembered.
    pub fn forget_owner(&self, id: &str) -> bool {
        self.owners().forget(id)
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, owner::OwnerCache> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes session `row` over: its lease (atomically: of instances racing, one wins), then
    /// the session rebuilt from its row (target, plugins and their configs; `initialize` runs,
    /// each plugin's state as of the last committed message is laid over what it set, then
    /// `onConnect` and the connector), its transcript continuing at the next index.
    async fn take_over(
        &self,
        row: crate::store::SessionRow,
        from: Option<String>,
    ) -> Result<Located, SessionError> {
        let id = row.id.clone();
        let turn = self.takeover_lock(&id);
        let _one_at_a_time = turn.lock().await;
        let located = self.take_over_locked(row, from).await;
        // The last one out removes the entry (the map holds one reference, each waiter one).
        let mut all = self.takeovers.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&turn) == 2 {
            all.remove(&id);
        }
        located
    }

    /// The lock of session `id`'s takeover, made on first use.
    fn takeover_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut all = self.takeovers.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(all.entry(id.to_string()).or_default())
    }

    /// [`SessionManager::take_over`] with the session's takeover lock held.
    async fn take_over_locked(
        &self,
        row: crate::store::SessionRow,
        from: Option<String>,
    ) -> Result<Located, SessionError> {
        let id = row.id.clone();
        if self.is_live(&id) {
            return Ok(Located::Here);
        }
        let store = self
            .leases()
            .ok_or_else(|| SessionError::SessionNotFound(id.clone()))?;
        if self.count() >= self.settings.max_sessions {
            return Err(SessionError::TooManySessions(self.settings.max_sessions));
        }
        if !store
            .acquire_lease(&id, self.settings.lease_ttl)
            .await
            .map_err(store_error)?
        {
            // Another instance won the race a moment ago: the client retries (and is then
            // forwarded to the winner).
            let (lease, now) = store.lease(&id).await.map_err(store_error)?;
            let (owner, retry_after_ms) = match lease {
                Some(l) => (l.owner, (l.expires_at_ms - now).max(1)),
                None => (String::new(), 1),
            };
            return Err(SessionError::OwnerUnavailable {
                id,
                owner,
                retry_after_ms,
            });
        }
        let resumed = self.resume(store, &row).await;
        let (target, plugins, next_index, state) = match resumed {
            Ok(parts) => parts,
            Err(error) => {
                let _ = store.release_lease(&id).await;
                return Err(error);
            }
        };
        let opened = self
            .start(
                target,
                plugins,
                None,
                Some(Resumed {
                    id: id.clone(),
                    next_index,
                    state,
                }),
            )
            .await;
        if let Err(error) = opened {
            let _ = store.release_lease(&id).await;
            return Err(error);
        }
        tracing::info!(session = %id, from = from.as_deref().unwrap_or(""), next_index, "Session taken over.");
        self.broker.emit(&events::SessionTakenOver {
            session_id: id,
            from,
            to: store.instance().to_string(),
            next_message_index: next_index,
        });
        Ok(Located::Here)
    }

    /// What a stored session is rebuilt from: its target, its plugins (configs opened with the
    /// store's key) and the index its next message takes; the row is marked open here.
    async fn resume(
        &self,
        store: &crate::store::Store,
        row: &crate::store::SessionRow,
    ) -> Result<(Arc<Target>, Vec<PluginRef>, u64, Option<Value>), SessionError> {
        let target = self
            .targets
            .shared(&row.target_id)
            .ok_or_else(|| SessionError::TargetNotFound(row.target_id.clone()))?;
        let stored: Vec<actor::StoredStage> = serde_json::from_value(row.plugins.clone())
            .map_err(|e| SessionError::Store(format!("the session's plugins do not read: {e}")))?;
        let mut plugins = Vec::with_capacity(stored.len());
        for stage in stored {
            let config = match store.secrets() {
                Some(key) => key
                    .open(&stage.config)
                    .map_err(|e| SessionError::Store(e.to_string()))?,
                None => stage.config,
            };
            plugins.push(PluginRef {
                id: stage.id,
                config,
                priority: Some(stage.priority),
                critical: stage.critical,
                timeout_ms: None,
            });
        }
        let next_index = store
            .next_message_index(&row.id)
            .await
            .map_err(store_error)?;
        let state = store.plugin_state(&row.id).await.map_err(store_error)?;
        store.claim_session(&row.id).await.map_err(store_error)?;
        Ok((target, plugins, next_index, state))
    }

    /// The thread the next session runs on.
    fn pick_thread(&self) -> ArbiterHandle {
        let i = self.next_thread.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        self.threads[i].handle()
    }

    /// The store, when sessions are persisted.
    pub fn store(&self) -> Option<&StoreHandle> {
        self.store.as_ref()
    }

    /// The targets the service knows.
    pub fn targets(&self) -> &TargetRegistry {
        &self.targets
    }

    pub fn target(&self, id: &str) -> Option<Target> {
        self.targets.get(id)
    }

    /// How many sessions are open (parked ones included).
    pub fn count(&self) -> usize {
        self.registry.read().len()
    }

    /// How many open sessions are parked (no actor while idle).
    pub fn parked(&self) -> usize {
        self.registry.parked()
    }

    /// Whether session `id` is open here, live or parked (the message path asks).
    fn is_live(&self, id: &str) -> bool {
        self.registry.read().contains_key(id)
    }

    /// What the API reads of session `id` (no wake).
    fn view(&self, id: &str) -> Result<Arc<SessionView>, SessionError> {
        self.registry
            .read()
            .get(id)
            .map(|e| e.view.clone())
            .ok_or_else(|| SessionError::SessionNotFound(id.to_string()))
    }

    /// The shared copy of module name `module`.
    fn module_name(&self, module: String) -> Arc<str> {
        let mut names = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = names.get(&module) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(module.as_str());
        names.insert(module, name.clone());
        name
    }

    /// The shared copy of pipeline view `plan`: a recent session's when it is the same, else
    /// `plan`, kept for the next sessions.
    fn shared_plan(&self, plan: Vec<PluginView>) -> Arc<[PluginView]> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans.retain(|p| p.strong_count() > 0);
        if let Some(known) = plans
            .iter()
            .filter_map(Weak::upgrade)
            .find(|known| actor::same_plan(known, &plan))
        {
            return known;
        }
        let plan: Arc<[PluginView]> = Arc::from(plan);
        if plans.len() >= SHARED_PLANS {
            plans.remove(0);
        }
        plans.push(Arc::downgrade(&plan));
        plan
    }

    /// Checks the plugin list of a session on `target` and builds its pipeline from the
    /// target's plugins and the request's (a request entry replaces the target's of the same
    /// id): ascending priority, ties in registration order. Every problem is reported.
    fn pipeline(
        &self,
        target: &Target,
        requested: &[PluginRef],
        session_id: &str,
    ) -> Result<Vec<Planned>, SessionError> {
        let mut refs: Vec<PluginRef> = target.plugins.clone();
        for r in requested {
            match refs.iter_mut().find(|t| t.id == r.id) {
                Some(existing) => *existing = r.clone(),
                None => refs.push(r.clone()),
            }
        }
        let mut errors = Vec::new();
        let mut stages = Vec::new();
        for r in refs {
            let Some((module, info)) = self.host.connector_plugin(&r.id) else {
                errors.push(format!("Plugin '{}' is not registered", r.id));
                continue;
            };
            if !info.compatible_connectors.contains(&target.connector_type) {
                errors.push(format!(
                    "Plugin '{}' is not compatible with connector type {} (it supports: {})",
                    r.id,
                    target.connector_type,
                    info.compatible_connectors.join(", ")
                ));
                continue;
            }
            let problems = config::validate(&info.config_schema, &r.config);
            if !problems.is_empty() {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("Plugin '{}': {p}", r.id)),
                );
                continue;
            }
            let masked = secrets::redact(&info.config_schema, &r.config);
            // Never in clear: sealed with the store's key, or masked without one.
            let stored = match self.store.as_ref().and_then(|s| s.store().secrets()) {
                Some(key) => secrets::seal(&info.config_schema, &r.config, key),
                None => masked.clone(),
            };
            let stage = Stage {
                module: self.module_name(module),
                priority: r.priority.unwrap_or(info.priority),
                critical: r.critical,
                timeout: r
                    .timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.settings.hook_timeout),
                ctx: HookContext {
                    session_id: session_id.to_string(),
                    target_id: target.id.clone(),
                    connector_type: target.connector_type.clone(),
                    state: Default::default(),
                    plugin_config: config::bind(&info.config_schema, &r.config),
                },
                info,
                failures: 0,
            };
            stages.push(Planned {
                stage,
                masked,
                stored,
            });
        }
        if !errors.is_empty() {
            return Err(SessionError::InvalidPlugins(errors));
        }
        // Ascending priority; ties in registration order (Krawall's stable sort over its
        // registry), whatever order the request listed them in.
        let registered: Vec<String> = self
            .host
            .connector_plugins()
            .into_iter()
            .map(|(_, c)| c.id.clone())
            .collect();
        let position = |id: &str| {
            registered
                .iter()
                .position(|r| r == id)
                .unwrap_or(usize::MAX)
        };
        stages.sort_by_key(|p| (p.stage.priority, position(&p.stage.info.id)));
        Ok(stages)
    }

    /// Opens a session: checks it, starts its actor under the sessions supervisor, runs every
    /// plugin's `initialize`, then the `onConnect` chain, then connects.
    pub async fn create(&self, request: CreateSession) -> Result<SessionInfo, SessionError> {
        if self.count() >= self.settings.max_sessions {
            return Err(SessionError::TooManySessions(self.settings.max_sessions));
        }
        // Shared with the catalogue: a session keeps no copy of its target.
        let target = self
            .targets
            .shared(&request.target_id)
            .ok_or_else(|| SessionError::TargetNotFound(request.target_id.clone()))?;
        self.start(target, request.plugins, None, None).await
    }

    /// Opens a session on a target the caller holds (and, optionally, its own connector), as
    /// [`SessionManager::create`] does for a catalogue target.
    pub async fn open(&self, spec: OpenSpec) -> Result<SessionInfo, SessionError> {
        if self.count() >= self.settings.max_sessions {
            return Err(SessionError::TooManySessions(self.settings.max_sessions));
        }
        let OpenSpec {
            target,
            plugins,
            connector,
        } = spec;
        self.start(Arc::new(target), plugins, connector, None).await
    }

    async fn start(
        &self,
        target: Arc<Target>,
        plugins: Vec<PluginRef>,
        connector: Option<MakeConnector>,
        resumed: Option<Resumed>,
    ) -> Result<SessionInfo, SessionError> {
        let (id, first_index, restored) = match &resumed {
            Some(r) => (r.id.clone(), Some(r.next_index), r.state.clone()),
            None => (crate::util::random_id(), None, None),
        };
        let planned = self.pipeline(&target, &plugins, &id)?;
        let mut stages = Vec::with_capacity(planned.len());
        let mut masked = Vec::with_capacity(planned.len());
        let mut stored = Vec::with_capacity(planned.len());
        for p in planned {
            stages.push(p.stage);
            masked.push(p.masked);
            stored.push(p.stored);
        }
        if !self.registry.accepting.load(Ordering::Acquire) {
            return Err(SessionError::Ended {
                id,
                reason: "the sessions supervisor is not running".into(),
            });
        }
        // A new session is owned from the start (a fresh id: nobody else holds it). A resumed
        // one holds its lease already.
        if let (Some(store), None) = (self.leases(), &resumed) {
            store
                .acquire_lease(&id, self.settings.lease_ttl)
                .await
                .map_err(store_error)?;
        }
        let plan = self.shared_plan(actor::plan(&stages, masked));
        let generation = self.registry.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let view = Arc::new(SessionView::new(
            Arc::from(id.as_str()),
            generation,
            target.clone(),
            plan,
        ));
        // Built on its own thread: the actor holds thread-bound parts (its connector). Its
        // guard reports to the sessions supervisor once it is open (a session that does not
        // open is not one to report).
        let (shown, deps, registry, session_id) = (
            view.clone(),
            self.deps.clone(),
            self.registry.clone(),
            id.clone(),
        );
        let addr = SessionActor::start_in_arbiter(&self.pick_thread(), move |_| {
            SessionActor::new(session_id, target, stages, stored, deps, registry, shown)
                .with_connector(connector)
                .resumed_at(first_index, restored)
        });
        // A task of its own: a session that opens is listed even if the caller goes away
        // meanwhile (no actor left running unlisted).
        let (registry, session_id) = (self.registry.clone(), id.clone());
        let taken_over = resumed.is_some();
        let opening = async move {
            let opened = addr.send(Open).await.unwrap_or_else(|_| {
                Err(SessionError::Ended {
                    id: session_id.clone(),
                    reason: "it crashed while opening".into(),
                })
            });
            if opened.is_ok() && !registry.insert(view, addr.clone()) {
                // The sessions supervisor began stopping meanwhile: stopped like the others
                // (a session taken over is handed over again when this instance hands its
                // sessions over), and waited for, so its lease goes only after.
                let handed = taken_over
                    && registry.deps.hand_over.load(Ordering::Relaxed)
                    && addr.send(actor::HandOver).await.unwrap_or(true);
                if !handed {
                    let _ = addr
                        .send(Close {
                            reason: "shutdown".into(),
                        })
                        .await;
                }
                return Err(SessionError::Ended {
                    id: session_id,
                    reason: "the supervisor is shutting down".into(),
                });
            }
            opened
        };
        let opened = actix_web::rt::spawn(opening).await.unwrap_or_else(|_| {
            Err(SessionError::Ended {
                id: id.clone(),
                reason: "it stopped while opening".into(),
            })
        });
        self.host.metrics().session_opened(opened.is_ok());
        opened?;
        let info = self.describe(&id).await?;
        if resumed.is_some() {
            return Ok(info);
        }
        // Opening is not the message path either: once created, the session is listed.
        if let Some(store) = &self.store {
            store.flush().await;
        }
        self.broker.emit(&events::SessionCreated {
            session_id: id.clone(),
            target_id: info.target_id.clone(),
            plugins: info.plugins.iter().map(|p| p.id.clone()).collect(),
        });
        Ok(info)
    }

    /// Runs one message through the session's pipeline. Messages to one session are handled
    /// one at a time, in order; a full queue answers `QueueFull`. The reply is the REST one:
    /// `{content, metadata, plugins}`, with each hook's outcome.
    pub async fn send(
        &self,
        id: &str,
        message: String,
        metadata: Option<Value>,
    ) -> Result<Value, SessionError> {
        self.send_message(id, message, metadata, serde_json::Map::new(), true)
            .await
    }

    /// [`SessionManager::send`] with request-template variables for this message only (a
    /// front door's whole request; `$private` lists the keys kept out of the reply). A front
    /// door shows no hook outcomes, so none are recorded: the reply is `{content, metadata}`.
    pub async fn send_with(
        &self,
        id: &str,
        message: String,
        metadata: Option<Value>,
        variables: serde_json::Map<String, Value>,
    ) -> Result<Value, SessionError> {
        self.send_message(id, message, metadata, variables, false)
            .await
    }

    async fn send_message(
        &self,
        id: &str,
        message: String,
        metadata: Option<Value>,
        variables: serde_json::Map<String, Value>,
        outcomes: bool,
    ) -> Result<Value, SessionError> {
        let handle = self.enqueue(id)?;
        let message = SendMessage {
            message,
            metadata,
            stream: None,
            variables,
            outcomes,
            span: tracing::Span::current(),
        };
        let result = handle.addr.send(message).await;
        handle.release();
        result.unwrap_or_else(|_| Err(stopped(id)))
    }

    /// Counts a message into the session's queue: one in progress plus `queue_capacity`
    /// waiting; a full queue refuses it. A parked session wakes.
    fn enqueue(&self, id: &str) -> Result<Handle, SessionError> {
        self.registry
            .acquire(id, Some(self.settings.queue_capacity))
    }

    /// Sends a message whose answer is streamed: chunks as they arrive, then one `Done` or
    /// `Failed`. Errors before the message is queued (unknown session, full queue) come back
    /// here; every later one comes through the stream.
    pub fn send_streaming(
        &self,
        id: &str,
        message: String,
        metadata: Option<Value>,
    ) -> Result<mpsc::Receiver<StreamEvent>, SessionError> {
        self.stream_message(id, message, metadata, serde_json::Map::new(), true)
    }

    /// [`SessionManager::send_streaming`] with variables and without hook outcomes, as
    /// [`SessionManager::send_with`].
    pub fn send_streaming_with(
        &self,
        id: &str,
        message: String,
        metadata: Option<Value>,
        variables: serde_json::Map<String, Value>,
    ) -> Result<mpsc::Receiver<StreamEvent>, SessionError> {
        self.stream_message(id, message, metadata, variables, false)
    }

    fn stream_message(
        &self,
        id: &str,
        message: String,
        metadata: Option<Value>,
        variables: serde_json::Map<String, Value>,
        outcomes: bool,
    ) -> Result<mpsc::Receiver<StreamEvent>, SessionError> {
        let handle = self.enqueue(id)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let message = SendMessage {
            message,
            metadata,
            stream: Some(tx.clone()),
            variables,
            outcomes,
            span: tracing::Span::current(),
        };
        let id = id.to_string();
        actix_web::rt::spawn(async move {
            let result = handle.addr.send(message).await;
            handle.release();
            // The actor ends a stream it ran; one refused before it began (the session is not
            // open, or it is gone) is ended here. A second end is never read.
            let failed = match result {
                Ok(Err(error)) => error,
                Err(_) => stopped(&id),
                Ok(Ok(_)) => return,
            };
            // Waits for room like any event; a client that left gets nothing.
            let _ = tx.send(StreamEvent::Failed(failed)).await;
        });
        Ok(rx)
    }

    /// Session `id` as the API shows it (a parked session stays parked).
    pub async fn describe(&self, id: &str) -> Result<SessionInfo, SessionError> {
        Ok(self.view(id)?.info())
    }

    /// Every open session, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let live = self.registry.read();
        let mut out: Vec<SessionInfo> = live.values().map(|e| e.view.info()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        out
    }

    /// Test hook: crash a session's actor.
    #[cfg(any(test, feature = "test-util"))]
    pub fn crash(&self, id: &str) -> Result<(), SessionError> {
        let handle = self.registry.acquire(id, None)?;
        actix_web::rt::spawn(async move {
            let _ = handle.addr.send(actor::CrashSession).await;
            handle.release();
        });
        Ok(())
    }

    /// Closes a session: every plugin's `onDisconnect` runs (even if one fails), then the
    /// connector disconnects and the actor stops.
    pub async fn close(&self, id: &str) -> Result<Value, SessionError> {
        let handle = self.registry.acquire(id, None)?;
        let report = handle
            .addr
            .send(Close {
                reason: "closed".into(),
            })
            .await;
        handle.release();
        // The `Close` handler took the session out of the registry.
        let report = report.map_err(|_| SessionError::SessionNotFound(id.to_string()))?;
        // Not the message path: the caller may wait for the "closed" row to be written, so
        // reading the session right after closing it is consistent.
        if let Some(store) = &self.store {
            store.flush().await;
        }
        Ok(report)
    }
}

/// Starts the sessions supervisor under the root.
pub struct SessionsSupervisorFactory {
    pub manager: Arc<SessionManager>,
}

impl ChildFactory for SessionsSupervisorFactory {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>> {
        let manager = self.manager.clone();
        manager.sweep_parked();
        let addr = SessionsSupervisor {
            registry: manager.registry.clone(),
            broker: manager.broker.clone(),
            store: manager.store.clone(),
            leased: manager.leased,
            shutdown_timeout: manager.settings.hook_timeout.saturating_mul(2),
            guard: args.guard,
            stopping: false,
        }
        .start();
        // A restarted sessions supervisor starts empty: sessions are temporary.
        manager.registry.install(addr.clone().recipient());
        async move { Ok(Box::new(RunningSessions(addr)) as Box<dyn RunningChild>) }.boxed_local()
    }
}

/// The JSON of a message reply (kept here so the actor and the API agree). Built directly:
/// `json!` would copy the metadata and every outcome through a serializer. `plugins` (each
/// hook's outcome) is there when the caller asked for outcomes, and only then.
pub fn reply_json(
    content: &str,
    metadata: Value,
    outcomes: Option<Vec<pipeline::HookOutcome>>,
) -> Value {
    let mut reply = serde_json::Map::with_capacity(3);
    reply.insert("content".into(), Value::String(content.to_owned()));
    reply.insert("metadata".into(), metadata);
    if let Some(outcomes) = outcomes {
        reply.insert(
            "plugins".into(),
            Value::Array(
                outcomes
                    .into_iter()
                    .map(pipeline::HookOutcome::into_json)
                    .collect(),
            ),
        );
    }
    Value::Object(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one parked session keeps (a REST session whose plugins have no state): its
    /// registry bucket, its id (the key and the view's), its view and its `Parked` record,
    /// by `size_of`; printed with `--nocapture` for BENCHMARKS.md. Nothing in it grows with
    /// the plugins (the plugin list is shared) and nothing is kept by the sessions supervisor.
    #[test]
    fn a_parked_session_keeps_a_few_hundred_bytes_whatever_its_plugins() {
        let word = std::mem::size_of::<usize>();
        let rows = [
            (
                "registry bucket: (Arc<str>, Entry) + 1 control byte",
                std::mem::size_of::<(Arc<str>, Entry)>() + 1,
            ),
            (
                "id: Arc<str> (counts + 32 hex digits), key and view",
                2 * word + crate::util::random_id().len(),
            ),
            (
                "SessionView in its Arc",
                2 * word + std::mem::size_of::<SessionView>(),
            ),
            ("Parked, boxed", std::mem::size_of::<Parked>()),
        ];
        for (what, bytes) in rows {
            println!("{what}: {bytes} B");
        }
        let total: usize = rows.iter().map(|(_, bytes)| bytes).sum();
        println!("total (before allocator rounding and table slack): {total} B");
        println!(
            "per plugin, shared by the sessions of one plan: PluginView {} B",
            std::mem::size_of::<PluginView>()
        );
        assert!(std::mem::size_of::<Entry>() <= 32);
        assert!(std::mem::size_of::<SessionView>() <= 128);
        assert!(std::mem::size_of::<Parked>() <= 80);
        assert!(total <= 400, "{total} B");
    }
}

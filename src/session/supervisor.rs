//! The sessions supervisor: the root's `sessions` child, one actor over every session.
//!
//! Owns what a supervisor does for sessions, without a record per session (the registry entry
//! is the session's record): sessions are temporary, so a session that ends (closed, idle,
//! handed over, crashed, its lease lost) is never restarted. Each opened session's actor
//! carries a `DownGuard` that reports to this actor (`ChildDown`, as to any supervisor); on
//! that report it forgets the session in the registry, publishes `session.failed` and records
//! the session failed when the end was abnormal, and releases the session's lease (shared
//! store) once its end is committed. [`StopSessions`] (shutdown, or the root restarting this
//! child) stops every session, newest first, each within the shutdown timeout (a parked one
//! wakes to close, so its plugins' `onDisconnect` runs; handed over instead when other
//! instances share the store), refuses sessions opening meanwhile and ignores the ends that
//! follow, then stops this actor.
//!
//! Does not own opening a session (`SessionManager::start`) nor the registry (`Registry`). Why
//! not the generic supervisor with one child per session: its child record (spec, factory,
//! restart history, running handle) is ≈ 0.5 KB per session once allocated, for restart
//! decisions a temporary child never needs (BENCHMARKS.md, issue 15).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::actor::{self, Close};
use super::Registry;
use crate::broker::events;
use crate::broker::BrokerHandle;
use crate::store::writer::{StoreHandle, Write};
use crate::supervisor::child::{DownGuard, RunningChild};
use crate::supervisor::policy::ExitReason;
use crate::supervisor::ChildDown;

/// The actor; started by `SessionsSupervisorFactory`.
pub struct SessionsSupervisor {
    pub(super) registry: Arc<Registry>,
    pub(super) broker: BrokerHandle,
    pub(super) store: Option<StoreHandle>,
    /// Leases to release when a session ends (a shared store).
    pub(super) leased: bool,
    /// How long one session may take to stop.
    pub(super) shutdown_timeout: Duration,
    /// Reports this actor's own end to the root.
    pub(super) guard: DownGuard,
    /// Stopping every session: their ends are the stop's, not reported.
    pub(super) stopping: bool,
}

impl Actor for SessionsSupervisor {
    type Context = Context<Self>;

    /// Also after a panic: no session opens while no sessions supervisor hears its end (the
    /// root starts a new one, which accepts again; one started already is left alone).
    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.registry.refuse(&ctx.address().recipient());
    }
}

impl Handler<ChildDown> for SessionsSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildDown, _ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let ChildDown {
            id,
            generation,
            reason,
        } = msg;
        self.registry.forget(&id, generation);
        if reason.is_abnormal() {
            tracing::warn!(session = %id, reason = %reason.describe(), "Session crashed; it is not restarted.");
            self.broker.emit(&events::SessionFailed {
                session_id: id.clone(),
                reason: reason.describe(),
            });
            if let Some(store) = &self.store {
                store.write(Write::SessionEnded {
                    id: id.clone(),
                    state: "failed",
                    reason: reason.describe(),
                    at: crate::util::rfc3339(std::time::SystemTime::now()),
                });
            }
        } else {
            tracing::debug!(session = %id, reason = %reason.describe(), "Session ended.");
        }
        // Ended, however it ended: its lease goes (off the message path, not awaited), but
        // only once its end is committed: a row still `open` without a lease would be taken
        // over by another instance.
        let Some(handle) = self.store.as_ref().filter(|_| self.leased) else {
            self.registry.ended(&id);
            return;
        };
        let flushed = handle.flushed();
        let (store, registry) = (handle.store().clone(), self.registry.clone());
        actix_web::rt::spawn(async move {
            match flushed.await {
                Err(error) => {
                    tracing::warn!(%error, session = %id, "A session's end was not committed; its lease is kept and expires by itself.");
                }
                Ok(()) => {
                    if let Err(error) = store.release_lease(&id).await {
                        tracing::warn!(%error, session = %id, "A session's lease could not be released; it expires by itself.");
                    }
                }
            }
            registry.ended(&id);
        });
    }
}

/// Stops every session, newest first, each within the shutdown timeout, then this actor.
/// Sessions opening meanwhile are refused. Sent again while it runs (the root's kill after its
/// own timeout), it stops this actor at once, abandoning the sessions left.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSessions;

impl Handler<StopSessions> for SessionsSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: StopSessions, ctx: &mut Context<Self>) -> Self::Result {
        if self.stopping {
            self.guard.set_reason(ExitReason::Shutdown);
            ctx.stop();
            return Box::pin(actix::fut::ready(()));
        }
        self.stopping = true;
        let ids = self.registry.stop_accepting();
        let (registry, timeout) = (self.registry.clone(), self.shutdown_timeout);
        let stop = async move {
            for id in ids {
                if tokio::time::timeout(timeout, stop_session(&registry, &id))
                    .await
                    .is_err()
                {
                    tracing::warn!(session = %id, "Session did not stop within its timeout; abandoned.");
                    kill_session(&registry, &id);
                }
            }
        };
        Box::pin(stop.into_actor(self).map(|(), act, ctx| {
            // The reason is set here, not in `stopped()`: actix runs that after panics too.
            act.guard.set_reason(ExitReason::Shutdown);
            ctx.stop();
        }))
    }
}

/// Stops session `id`: handed over when it can be (a graceful stop with other live instances
/// on the shared store), closed otherwise (its plugins' `onDisconnect` runs). A parked session
/// wakes first.
fn stop_session(registry: &Arc<Registry>, id: &str) -> LocalBoxFuture<'static, ()> {
    let handle = registry.acquire(id, None);
    let hand_over = registry.deps.hand_over.load(Ordering::Relaxed);
    async move {
        if let Ok(handle) = handle {
            let handed = hand_over && handle.addr.send(actor::HandOver).await.unwrap_or(true);
            if !handed {
                let _ = handle
                    .addr
                    .send(Close {
                        reason: "shutdown".into(),
                    })
                    .await;
            }
            handle.release();
        }
    }
    .boxed_local()
}

/// Asks session `id` to close without waiting (after its stop's timeout).
fn kill_session(registry: &Arc<Registry>, id: &str) {
    if let Ok(handle) = registry.acquire(id, None) {
        handle.addr.do_send(Close {
            reason: "shutdown".into(),
        });
        handle.release();
    }
}

/// The root's grip on the sessions supervisor.
pub struct RunningSessions(pub Addr<SessionsSupervisor>);

impl RunningChild for RunningSessions {
    fn stop(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        let addr = self.0.clone();
        async move {
            addr.send(StopSessions)
                .await
                .map_err(|e| format!("the sessions supervisor is unreachable: {e}"))
        }
        .boxed_local()
    }

    fn kill(&self) {
        self.0.do_send(StopSessions);
    }
}

//! The supervisor actor: our own OTP-style supervision on plain actix actors.
//!
//! Owns a list of children in start order, starts each from its factory, learns of every death
//! through the child's `DownGuard` (with the panic text), restarts per the child's policy
//! (`policy`), parks or escalates when the budget is spent, and stops children in reverse order
//! with a timeout each. Strategy `one_for_one` restarts only the dead child; `rest_for_one`
//! (the root) first stops the children started after it and restarts them afterwards.
//! Every change is written to the health table. Does not own what a child *is* (its factory
//! decides) nor the meaning of its events (an observer publishes them).
//!
//! actix's own `Supervisor` is not used: it never restarts after a panic, reuses the old state
//! and has no budget (see docs/ARCHITECTURE.md).

pub mod child;
pub mod policy;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use futures::FutureExt;
use tokio::sync::oneshot;

use crate::health::{ActorRecord, ActorState, HealthRegistry, LastError};
use child::{ChildSpec, DownGuard, OnExhausted, RunningChild, StartArgs, StartError, StartPhase};
use policy::{Decision, ExitReason, RestartTracker, RestartType};

/// How a supervisor reacts to one child's death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the child that died.
    OneForOne,
    /// Stop the children started after the dead one, restart it, then restart them in order.
    RestForOne,
}

/// Told about supervision events; the plugins supervisor's observer turns them into
/// `plugin.restarted` / `plugin.failed` events, the root's stops the service on escalation.
pub trait SupervisorObserver: Send + Sync + 'static {
    /// A child died and will be started again after `delay`.
    fn restarting(&self, _id: &str, _reason: &ExitReason, _delay: Duration) {}
    /// A child is running again.
    fn restarted(&self, _id: &str, _generation: u64, _restarts: u32, _reason: &ExitReason) {}
    /// A child spent its restart budget and was parked as failed.
    fn parked(&self, _id: &str, _restarts: u32, _reason: &ExitReason) {}
    /// A child whose budget is spent may not be parked: the service must stop.
    fn escalate(&self, _id: &str, _reason: &ExitReason) {}
    /// A child ended and stays ended (temporary, or transient after a normal exit).
    fn stopped(&self, _id: &str, _reason: &ExitReason) {}
}

/// An observer that only logs (what the default hooks do).
pub struct NoObserver;
impl SupervisorObserver for NoObserver {}

// ---- Messages -------------------------------------------------------------------------------

/// Sent by a child's `DownGuard` when its actor is gone.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChildDown {
    pub id: String,
    /// Generation of the instance that died; reports from older instances are ignored.
    pub generation: u64,
    pub reason: ExitReason,
}

/// Why a request about a child was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildError {
    #[error("no child named '{0}'")]
    NotFound(String),
    #[error("'{0}' is not a disabled child")]
    NotDisabled(String),
    #[error("a child named '{0}' already exists")]
    Exists(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    #[error("the supervisor stopped before the child started")]
    Gone,
    /// The child was started and did not come up.
    #[error(transparent)]
    Start(StartError),
}

/// Adds a child at the end of the start order and starts it. Answers once it runs, or with the
/// reason it could not start (it is then kept as `failed`).
#[derive(Message)]
#[rtype(result = "Result<(), ChildError>")]
pub struct AddChild {
    pub spec: ChildSpec,
    pub phase: StartPhase,
    /// Register it without starting it (an operator disabled it); `EnableChild` starts it.
    pub disabled: bool,
}

/// Prepares a new instance of a running child beside the old one and swaps it in only if it
/// prepared fine: then the old one stops and the new one is activated. On failure the old
/// instance keeps running untouched. Answers with the outcome.
#[derive(Message)]
#[rtype(result = "Result<(), ReloadError>")]
pub struct ReloadChild {
    pub id: String,
}

/// Why a reload did not happen, and whether the old instance still runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    NotRunning(String),
    /// The candidate failed to prepare; the old instance keeps running.
    #[error("{0}")]
    Rejected(StartError),
    /// The candidate replaced the old instance but failed to activate; it is being restarted.
    #[error("{0}")]
    ActivationFailed(StartError),
}

/// Stops a child and keeps it stopped as `disabled` until `EnableChild`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct DisableChild {
    pub id: String,
}

/// Starts a disabled child (fully: plugins `init` and `start`). Answers once it runs.
#[derive(Message)]
#[rtype(result = "Result<(), ChildError>")]
pub struct EnableChild {
    pub id: String,
}

/// Stops a child and forgets it.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct RemoveChild {
    pub id: String,
}

/// Restarts a child now, whatever its state (an operator's restart or unpark). Answers once it
/// runs again, or with the reason it could not start.
#[derive(Message)]
#[rtype(result = "Result<(), ChildError>")]
pub struct RestartChild {
    pub id: String,
}

/// Stops every child in reverse start order, each within its shutdown timeout, and optionally
/// the supervisor itself afterwards. Answers with one report per child.
#[derive(Message)]
#[rtype(result = "Vec<StopReport>")]
pub struct StopAll {
    pub then_exit: bool,
}

/// How one child's stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopReport {
    pub id: String,
    pub outcome: StopOutcome,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    /// It did not finish within its shutdown timeout and was abandoned.
    TimedOut,
    Failed(String),
}

// ---- The actor ------------------------------------------------------------------------------

struct Child {
    spec: ChildSpec,
    /// Generation of the current instance; only its `ChildDown` counts.
    generation: u64,
    /// Highest generation ever handed out (reload candidates take one too).
    issued: u64,
    state: ActorState,
    running: Option<Box<dyn RunningChild>>,
    tracker: RestartTracker,
    /// Times an instance was started again (after a crash, an operator restart or enable),
    /// every attempt counted, including those that failed to start.
    restarts: u32,
    /// Times a reload replaced the instance.
    reloads: u32,
    /// Why the last instance died; carried into the restart event.
    last_exit: Option<ExitReason>,
    /// Stopped because an older sibling died (rest_for_one); restarted after it.
    waiting_for_sibling: bool,
    /// Answers the `AddChild` or `RestartChild` that started this instance.
    reply: Option<oneshot::Sender<Result<(), ChildError>>>,
}

/// A supervisor actor. Create it with [`Supervisor::new`] and start it like any actor.
pub struct Supervisor {
    path: String,
    strategy: Strategy,
    children: Vec<Child>,
    health: HealthRegistry,
    observer: Arc<dyn SupervisorObserver>,
    stopping: bool,
    /// Reports this supervisor's own death when it is itself a child.
    guard: Option<DownGuard>,
    span: tracing::Span,
}

impl Supervisor {
    pub fn new(
        path: impl Into<String>,
        strategy: Strategy,
        health: HealthRegistry,
        observer: Arc<dyn SupervisorObserver>,
        guard: Option<DownGuard>,
    ) -> Self {
        let path = path.into();
        let span = tracing::info_span!("supervisor", supervisor.path = %path);
        Supervisor {
            path,
            strategy,
            children: Vec::new(),
            health,
            observer,
            stopping: false,
            guard,
            span,
        }
    }

    fn child_path(&self, id: &str) -> String {
        format!("{}/{}", self.path, id)
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    /// Writes child `idx` into the health table.
    fn report(&self, idx: usize) {
        let child = &self.children[idx];
        if !child.spec.in_health {
            return;
        }
        let path = self.child_path(&child.spec.id);
        let kind = child.spec.kind.as_str();
        let role = child.spec.role;
        let required = child.spec.on_exhausted == OnExhausted::Escalate;
        self.health.upsert(
            &path,
            || ActorRecord::new(path.clone(), kind, role),
            |row| {
                row.required = required;
                row.state = child.state;
                row.generation = child.generation;
                row.restarts = child.restarts;
                row.reloads = child.reloads;
                if let Some(reason) = child.last_exit.as_ref().filter(|r| r.is_abnormal()) {
                    let message = reason.describe();
                    if row.last_error.as_ref().map(|e| &e.message) != Some(&message) {
                        row.last_error = Some(LastError {
                            message,
                            at: SystemTime::now(),
                        });
                    }
                }
                match child.state {
                    ActorState::Running => {
                        if row.started_at.is_none() {
                            row.started_at = Some((Instant::now(), SystemTime::now()));
                        }
                        row.mailbox = child.running.as_ref().and_then(|r| r.mailbox());
                    }
                    _ => row.started_at = None,
                }
            },
        );
    }

    fn set_state(&mut self, idx: usize, state: ActorState) {
        self.children[idx].state = state;
        self.report(idx);
    }

    /// Starts a new instance of child `idx`; the outcome arrives in `on_started`.
    fn begin_start(&mut self, idx: usize, phase: StartPhase, ctx: &mut Context<Self>) {
        let child = &mut self.children[idx];
        child.issued += 1;
        child.generation = child.issued;
        if phase == StartPhase::Restart {
            child.restarts += 1;
        }
        let generation = child.generation;
        let id = child.spec.id.clone();
        let args = StartArgs {
            id: id.clone(),
            path: format!("{}/{}", self.path, id),
            generation,
            phase,
            placement: child.spec.placement,
            guard: DownGuard::new(id.clone(), generation, ctx.address().recipient()),
        };
        let start = child.spec.factory.start(args);
        self.set_state(
            idx,
            if phase == StartPhase::Boot {
                ActorState::Starting
            } else {
                ActorState::Restarting
            },
        );
        // The start runs beside the mailbox, so a slow child never stalls the supervisor.
        ctx.spawn(
            start
                .into_actor(self)
                .map(move |result, act, ctx| act.on_started(&id, generation, phase, result, ctx)),
        );
    }

    fn on_started(
        &mut self,
        id: &str,
        generation: u64,
        phase: StartPhase,
        result: Result<Box<dyn RunningChild>, StartError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(idx) = self.index(id) else { return };
        if self.children[idx].generation != generation || self.stopping {
            // Superseded (stopped or restarted meanwhile): this instance is not wanted.
            if let Ok(running) = result {
                running.kill();
            }
            return;
        }
        match result {
            Ok(running) => {
                let child = &mut self.children[idx];
                child.running = Some(running);
                child.tracker.started(Instant::now());
                let restarts = child.restarts;
                let reason = child.last_exit.clone();
                if let Some(reply) = child.reply.take() {
                    let _ = reply.send(Ok(()));
                }
                self.set_state(idx, ActorState::Running);
                if phase == StartPhase::Restart {
                    let reason = reason.unwrap_or(ExitReason::Shutdown);
                    tracing::info!(parent: &self.span, child = id, generation, restarts, "Child restarted.");
                    self.observer.restarted(id, generation, restarts, &reason);
                }
                // rest_for_one: bring back the next younger sibling that waited for this one.
                if let Some(next) =
                    (idx + 1..self.children.len()).find(|&i| self.children[i].waiting_for_sibling)
                {
                    self.children[next].waiting_for_sibling = false;
                    self.begin_start(next, StartPhase::Restart, ctx);
                }
            }
            Err(error) => {
                tracing::warn!(parent: &self.span, child = id, generation, %error, "Child failed to start.");
                let reason = ExitReason::Error(error.to_string());
                if phase == StartPhase::Boot {
                    // A child that cannot boot is refused, not retried (Open Astra: the others
                    // continue); an operator restart can try again.
                    let child = &mut self.children[idx];
                    child.last_exit = Some(reason);
                    if let Some(reply) = child.reply.take() {
                        let _ = reply.send(Err(ChildError::Start(error)));
                    }
                    self.set_state(idx, ActorState::Failed);
                } else {
                    if let Some(reply) = self.children[idx].reply.take() {
                        let _ = reply.send(Err(ChildError::Start(error)));
                    }
                    self.handle_exit(idx, reason, ctx);
                }
            }
        }
    }

    /// Applies the restart policy to child `idx`, which has just died with `reason`.
    fn handle_exit(&mut self, idx: usize, reason: ExitReason, ctx: &mut Context<Self>) {
        let child = &mut self.children[idx];
        let id = child.spec.id.clone();
        let decision = child.tracker.on_exit(
            Instant::now(),
            child.spec.restart,
            &reason,
            &child.spec.policy,
            fastrand::f64(),
        );
        child.last_exit = Some(reason.clone());
        match decision {
            Decision::Restart { delay, attempt } => {
                tracing::warn!(parent: &self.span, child = %id, reason = %reason.describe(),
                    delay_ms = delay.as_millis() as u64, attempt, "Child died; restarting after backoff.");
                self.set_state(idx, ActorState::Restarting);
                self.observer.restarting(&id, &reason, delay);
                let generation = self.children[idx].generation;
                let restart = move |act: &mut Self, ctx: &mut Context<Self>| {
                    let Some(idx) = act.index(&id) else { return };
                    // Only if nothing else (a stop, a disable, a manual restart) happened meanwhile.
                    let child = &act.children[idx];
                    if !act.stopping
                        && child.generation == generation
                        && child.running.is_none()
                        && child.state == ActorState::Restarting
                    {
                        act.begin_start(idx, StartPhase::Restart, ctx);
                    }
                };
                if delay.is_zero() {
                    // A timer would round up to the next 1 ms tick.
                    restart(self, ctx);
                } else {
                    ctx.run_later(delay, restart);
                }
            }
            Decision::Stay => {
                tracing::debug!(parent: &self.span, child = %id, reason = %reason.describe(), "Child stopped; not restarted.");
                self.observer.stopped(&id, &reason);
                if self.children[idx].spec.restart == RestartType::Temporary {
                    // Temporary children (sessions) are forgotten, or they would pile up.
                    let child = self.children.remove(idx);
                    self.health.remove(&self.child_path(&child.spec.id));
                } else {
                    self.set_state(idx, ActorState::Stopped);
                }
            }
            Decision::GiveUp { restarts_in_period } => {
                tracing::error!(parent: &self.span, child = %id, reason = %reason.describe(),
                    restarts_in_period, "Child spent its restart budget.");
                self.set_state(idx, ActorState::Failed);
                match self.children[idx].spec.on_exhausted {
                    OnExhausted::Park => self.observer.parked(&id, restarts_in_period, &reason),
                    OnExhausted::Escalate => self.observer.escalate(&id, &reason),
                }
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(parent: &self.span, "Supervisor started.");
    }
}

impl Handler<AddChild> for Supervisor {
    type Result = ResponseFuture<Result<(), ChildError>>;

    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) -> Self::Result {
        if self.stopping {
            return Box::pin(async { Err(ChildError::ShuttingDown) });
        }
        if self.index(&msg.spec.id).is_some() {
            let id = msg.spec.id;
            return Box::pin(async move { Err(ChildError::Exists(id)) });
        }
        let (tx, rx) = oneshot::channel();
        let disabled = msg.disabled;
        self.children.push(Child {
            spec: msg.spec,
            generation: 0,
            issued: 0,
            state: if disabled {
                ActorState::Disabled
            } else {
                ActorState::Starting
            },
            running: None,
            tracker: RestartTracker::default(),
            restarts: 0,
            reloads: 0,
            last_exit: None,
            waiting_for_sibling: false,
            reply: Some(tx),
        });
        let idx = self.children.len() - 1;
        if disabled {
            self.children[idx].reply = None;
            self.report(idx);
            return Box::pin(async { Ok(()) });
        }
        self.begin_start(idx, msg.phase, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(ChildError::Gone)) })
    }
}

impl Handler<ChildDown> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildDown, ctx: &mut Context<Self>) {
        let Some(idx) = self.index(&msg.id) else {
            return;
        };
        let current = self.children[idx].generation;
        if msg.generation != current {
            tracing::debug!(parent: &self.span, child = %msg.id, generation = msg.generation,
                current, "Ignoring a late report from an older instance.");
            return;
        }
        let child = &mut self.children[idx];
        if child.running.take().is_none() {
            // Not running: it is being started, stopped or was already handled.
            return;
        }
        if self.stopping || child.state == ActorState::Stopping {
            self.set_state(idx, ActorState::Stopped);
            return;
        }
        match self.strategy {
            Strategy::OneForOne => self.handle_exit(idx, msg.reason, ctx),
            Strategy::RestForOne => {
                // Stop the younger siblings (newest first), restart this one, then them.
                let younger: Vec<(String, Box<dyn RunningChild>, Duration)> = (idx + 1
                    ..self.children.len())
                    .rev()
                    .filter_map(|i| {
                        let c = &mut self.children[i];
                        let running = c.running.take()?;
                        c.waiting_for_sibling = true;
                        c.state = ActorState::Restarting;
                        Some((c.spec.id.clone(), running, c.spec.shutdown_timeout))
                    })
                    .collect();
                for i in idx + 1..self.children.len() {
                    self.report(i);
                }
                let reason = msg.reason;
                ctx.wait(
                    stop_in_order(younger)
                        .into_actor(self)
                        .map(move |_reports, act, ctx| act.handle_exit(idx, reason, ctx)),
                );
            }
        }
    }
}

impl Handler<RestartChild> for Supervisor {
    type Result = ResponseFuture<Result<(), ChildError>>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        let Some(idx) = self.index(&msg.id) else {
            return Box::pin(async move { Err(ChildError::NotFound(msg.id)) });
        };
        if self.stopping {
            return Box::pin(async { Err(ChildError::ShuttingDown) });
        }
        let (tx, rx) = oneshot::channel();
        let child = &mut self.children[idx];
        child.tracker.reset();
        child.reply = Some(tx);
        child.last_exit = Some(ExitReason::Shutdown);
        let old = child.running.take();
        let timeout = child.spec.shutdown_timeout;
        let id = msg.id.clone();
        // The old instance's report is ignored once its handle is taken (`running` is None).
        self.set_state(idx, ActorState::Restarting);
        let stop_old = async move {
            if let Some(old) = old {
                stop_in_order(vec![(id, old, timeout)]).await;
            }
        };
        ctx.wait(stop_old.into_actor(self).map(move |_, act, ctx| {
            if let Some(idx) = act.index(&msg.id) {
                act.begin_start(idx, StartPhase::Restart, ctx);
            }
        }));
        Box::pin(async move { rx.await.unwrap_or(Err(ChildError::Gone)) })
    }
}

impl Handler<StopAll> for Supervisor {
    type Result = ResponseActFuture<Self, Vec<StopReport>>;

    fn handle(&mut self, msg: StopAll, _ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let mut to_stop = Vec::new();
        for idx in (0..self.children.len()).rev() {
            let child = &mut self.children[idx];
            if let Some(reply) = child.reply.take() {
                let _ = reply.send(Err(ChildError::ShuttingDown));
            }
            if let Some(running) = child.running.take() {
                to_stop.push((child.spec.id.clone(), running, child.spec.shutdown_timeout));
                self.set_state(idx, ActorState::Stopping);
            } else if !matches!(
                child.state,
                ActorState::Failed | ActorState::Stopped | ActorState::Disabled
            ) {
                self.set_state(idx, ActorState::Stopped);
            }
        }
        let span = self.span.clone();
        Box::pin(stop_in_order(to_stop).into_actor(self).map(move |reports, act, ctx| {
            for report in &reports {
                if let Some(idx) = act.index(&report.id) {
                    act.set_state(idx, ActorState::Stopped);
                }
                if report.outcome == StopOutcome::TimedOut {
                    tracing::warn!(parent: &span, child = %report.id, "Child did not stop within its timeout; abandoned.");
                }
            }
            if msg.then_exit {
                // The reason is set here, not in `stopped()`: actix runs that after panics too.
                if let Some(guard) = act.guard.as_mut() {
                    guard.set_reason(ExitReason::Shutdown);
                }
                ctx.stop();
            }
            reports
        }))
    }
}

impl Handler<ReloadChild> for Supervisor {
    type Result = ResponseFuture<Result<(), ReloadError>>;

    fn handle(&mut self, msg: ReloadChild, ctx: &mut Context<Self>) -> Self::Result {
        let Some(idx) = self.index(&msg.id) else {
            return Box::pin(async move {
                Err(ReloadError::NotRunning(format!(
                    "no child named '{}'",
                    msg.id
                )))
            });
        };
        let child = &mut self.children[idx];
        if self.stopping || child.state != ActorState::Running {
            let state = child.state.as_str();
            return Box::pin(async move {
                Err(ReloadError::NotRunning(format!(
                    "it is {state}, not running"
                )))
            });
        }
        child.issued += 1;
        let candidate = child.issued;
        let id = msg.id;
        let path = format!("{}/{}", self.path, id);
        let child = &self.children[idx];
        let args = StartArgs {
            id: id.clone(),
            path,
            generation: candidate,
            phase: StartPhase::Reload,
            placement: child.spec.placement,
            guard: DownGuard::new(id.clone(), candidate, ctx.address().recipient()),
        };
        let prepare = child.spec.factory.start(args);
        let (tx, rx) = oneshot::channel();
        ctx.spawn(prepare.into_actor(self).map(move |prepared, act, ctx| {
            let new = match prepared {
                Ok(new) => new,
                Err(error) => {
                    let _ = tx.send(Err(ReloadError::Rejected(error)));
                    return;
                }
            };
            let Some(idx) = act
                .index(&id)
                .filter(|&i| act.children[i].state == ActorState::Running && !act.stopping)
            else {
                new.kill();
                let _ = tx.send(Err(ReloadError::NotRunning(
                    "it stopped while the new version was prepared".into(),
                )));
                return;
            };
            // The swap: from here on only the new instance's reports count.
            let child = &mut act.children[idx];
            let activate = new.activate();
            let old = child.running.replace(new);
            child.generation = candidate;
            child.reloads += 1;
            child.tracker.started(Instant::now());
            let timeout = child.spec.shutdown_timeout;
            act.report(idx);
            let stop_old = stop_in_order(
                old.map(|o| vec![(id.clone(), o, timeout)])
                    .unwrap_or_default(),
            );
            ctx.spawn(
                async move {
                    stop_old.await;
                    activate.await
                }
                .into_actor(act)
                .map(move |activated, act, ctx| match activated {
                    Ok(()) => {
                        let _ = tx.send(Ok(()));
                    }
                    Err(error) => {
                        let _ = tx.send(Err(ReloadError::ActivationFailed(error.clone())));
                        let error = error.to_string();
                        if let Some(idx) = act.index(&id) {
                            if act.children[idx].generation == candidate {
                                if let Some(running) = act.children[idx].running.take() {
                                    running.kill();
                                }
                                act.handle_exit(idx, ExitReason::Error(error), ctx);
                            }
                        }
                    }
                }),
            );
        }));
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ReloadError::NotRunning(
                    "the supervisor stopped during the reload".into(),
                ))
            })
        })
    }
}

impl Handler<DisableChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: DisableChild, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(idx) = self.index(&msg.id) else {
            return Box::pin(actix::fut::ready(Err(format!(
                "no child named '{}'",
                msg.id
            ))));
        };
        let child = &mut self.children[idx];
        let running = child.running.take();
        let timeout = child.spec.shutdown_timeout;
        // Cancels a pending delayed restart too (it checks for `Restarting`).
        self.set_state(
            idx,
            if running.is_some() {
                ActorState::Stopping
            } else {
                ActorState::Disabled
            },
        );
        let stop = stop_in_order(
            running
                .map(|r| vec![(msg.id.clone(), r, timeout)])
                .unwrap_or_default(),
        );
        Box::pin(stop.into_actor(self).map(move |_, act, _| {
            if let Some(idx) = act.index(&msg.id) {
                act.set_state(idx, ActorState::Disabled);
            }
            Ok(())
        }))
    }
}

impl Handler<EnableChild> for Supervisor {
    type Result = ResponseFuture<Result<(), ChildError>>;

    fn handle(&mut self, msg: EnableChild, ctx: &mut Context<Self>) -> Self::Result {
        let Some(idx) = self
            .index(&msg.id)
            .filter(|&i| self.children[i].state == ActorState::Disabled)
        else {
            return Box::pin(async move { Err(ChildError::NotDisabled(msg.id)) });
        };
        let (tx, rx) = oneshot::channel();
        let child = &mut self.children[idx];
        child.tracker.reset();
        child.reply = Some(tx);
        self.begin_start(idx, StartPhase::Restart, ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(ChildError::Gone)) })
    }
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: RemoveChild, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(idx) = self.index(&msg.id) else {
            return Box::pin(actix::fut::ready(Err(format!(
                "no child named '{}'",
                msg.id
            ))));
        };
        let child = self.children.remove(idx);
        let path = self.child_path(&msg.id);
        let timeout = child.spec.shutdown_timeout;
        let stop = stop_in_order(
            child
                .running
                .map(|r| vec![(msg.id.clone(), r, timeout)])
                .unwrap_or_default(),
        );
        Box::pin(stop.into_actor(self).map(move |_, act, _| {
            act.health.remove(&path);
            Ok(())
        }))
    }
}

/// Stops children one after another (the order given), each bounded by its timeout. A child
/// that overruns is killed and reported as `TimedOut`; the next one is stopped regardless.
async fn stop_in_order(
    children: Vec<(String, Box<dyn RunningChild>, Duration)>,
) -> Vec<StopReport> {
    let mut reports = Vec::with_capacity(children.len());
    for (id, running, timeout) in children {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, running.stop()).await {
            Ok(Ok(())) => StopOutcome::Stopped,
            Ok(Err(error)) => StopOutcome::Failed(error),
            Err(_) => {
                running.kill();
                StopOutcome::TimedOut
            }
        };
        reports.push(StopReport {
            id,
            outcome,
            elapsed: started.elapsed(),
        });
    }
    reports
}

/// A running child that is itself a supervisor.
pub struct RunningSupervisor(pub Addr<Supervisor>);

impl RunningChild for RunningSupervisor {
    fn stop(&self) -> futures::future::LocalBoxFuture<'static, Result<(), String>> {
        let addr = self.0.clone();
        async move {
            addr.send(StopAll { then_exit: true })
                .await
                .map(|_| ())
                .map_err(|e| format!("supervisor unreachable: {e}"))
        }
        .boxed_local()
    }

    fn kill(&self) {
        // There is no way to kill an actor from outside; a supervisor that overran its stop is
        // abandoned and asked to finish up as soon as it can.
        self.0.do_send(StopAll { then_exit: true });
    }
}

#[cfg(test)]
mod tests {
    use super::child::{
        install_panic_hook, ChildFactory, ChildKind, OnExhausted, Placement, StartError,
    };
    use super::policy::{Backoff, Intensity, RestartPolicy, RestartType};
    use super::*;
    use futures::future::LocalBoxFuture;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Where a test actor panics.
    #[derive(Clone, Copy)]
    enum PanicIn {
        Started,
        Timer,
        /// `start` itself fails (a restart that cannot bring the child back).
        Start,
        Nowhere,
    }

    struct Worker {
        /// Reports the worker's death when it is dropped.
        _guard: DownGuard,
        panic_in: PanicIn,
    }

    impl Actor for Worker {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            match self.panic_in {
                PanicIn::Started => panic!("panic in started"),
                PanicIn::Timer => {
                    ctx.run_later(Duration::from_millis(5), |_, _| panic!("panic in a timer"));
                }
                PanicIn::Start | PanicIn::Nowhere => {}
            }
        }
    }

    /// Holds the worker's address so it is not stopped for lack of one.
    struct Running {
        _addr: Addr<Worker>,
    }
    impl RunningChild for Running {
        fn stop(&self) -> LocalBoxFuture<'static, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
        fn kill(&self) {}
    }

    /// Starts workers that panic on their first `fail_first` generations, then behave.
    struct Factory {
        panic_in: PanicIn,
        fail_first: u64,
        starts: Arc<AtomicU32>,
    }

    impl ChildFactory for Factory {
        fn start(
            &self,
            args: StartArgs,
        ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>> {
            self.starts.fetch_add(1, Ordering::SeqCst);
            let panic_in = if args.generation <= self.fail_first {
                self.panic_in
            } else {
                PanicIn::Nowhere
            };
            if matches!(panic_in, PanicIn::Start) {
                // The first instance crashes; the next ones fail to start.
                if args.generation > 1 {
                    return Box::pin(async { Err(StartError::new("init", "cannot start")) });
                }
                let addr = Worker {
                    _guard: args.guard,
                    panic_in: PanicIn::Started,
                }
                .start();
                return Box::pin(async move {
                    Ok(Box::new(Running { _addr: addr }) as Box<dyn RunningChild>)
                });
            }
            let addr = Worker {
                _guard: args.guard,
                panic_in,
            }
            .start();
            Box::pin(async move { Ok(Box::new(Running { _addr: addr }) as Box<dyn RunningChild>) })
        }
    }

    /// A one_for_one supervisor `t` reporting to `health`.
    fn one_for_one(health: &HealthRegistry) -> Addr<Supervisor> {
        Supervisor::new(
            "t",
            Strategy::OneForOne,
            health.clone(),
            Arc::new(NoObserver),
            None,
        )
        .start()
    }

    fn spec(id: &str, factory: Factory) -> ChildSpec {
        ChildSpec {
            id: id.into(),
            kind: ChildKind::Worker,
            role: "test",
            restart: RestartType::Permanent,
            shutdown_timeout: Duration::from_millis(100),
            placement: Placement::Shared,
            on_exhausted: OnExhausted::Park,
            policy: RestartPolicy {
                intensity: Intensity {
                    max_restarts: 5,
                    period: Duration::from_secs(10),
                },
                backoff: Backoff {
                    min: Duration::from_millis(1),
                    max: Duration::from_millis(5),
                    factor: 2.0,
                    jitter: 0.0,
                    reset_after: Duration::from_secs(60),
                },
            },
            factory: Arc::new(factory),
            in_health: true,
        }
    }

    async fn wait_for(
        health: &HealthRegistry,
        path: &str,
        check: impl Fn(&ActorRecord) -> bool,
    ) -> ActorRecord {
        for _ in 0..500 {
            if let Some(row) = health.get(path).filter(|r| check(r)) {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "{path} never reached the expected state: {:?}",
            health.get(path)
        );
    }

    #[actix_web::test]
    async fn panics_in_started_and_in_timers_are_detected_and_restarted_fresh() {
        install_panic_hook();
        let health = HealthRegistry::default();
        let sup = one_for_one(&health);
        for (id, panic_in) in [
            ("in-started", PanicIn::Started),
            ("in-timer", PanicIn::Timer),
        ] {
            let starts = Arc::new(AtomicU32::new(0));
            let factory = Factory {
                panic_in,
                fail_first: 2,
                starts: starts.clone(),
            };
            let _ = sup
                .send(AddChild {
                    spec: spec(id, factory),
                    phase: StartPhase::Boot,
                    disabled: false,
                })
                .await;
            let row = wait_for(&health, &format!("t/{id}"), |r| {
                r.generation == 3 && r.state == ActorState::Running
            })
            .await;
            assert_eq!(row.restarts, 2, "{id}");
            assert_eq!(
                starts.load(Ordering::SeqCst),
                3,
                "{id}: built from the factory each time"
            );
            let error = row.last_error.expect("last error").message;
            let expected = if id == "in-started" {
                "panic in started"
            } else {
                "panic in a timer"
            };
            assert!(error.contains(expected), "{id}: {error}");
        }
    }

    #[actix_web::test]
    async fn every_restart_attempt_is_counted_even_one_that_fails_to_start() {
        install_panic_hook();
        let health = HealthRegistry::default();
        let sup = one_for_one(&health);
        let starts = Arc::new(AtomicU32::new(0));
        // Generation 1 crashes; generations 2 and 3 fail to start; generation 4 runs.
        let factory = Factory {
            panic_in: PanicIn::Start,
            fail_first: 3,
            starts: starts.clone(),
        };
        let _ = sup
            .send(AddChild {
                spec: spec("w", factory),
                phase: StartPhase::Boot,
                disabled: false,
            })
            .await;
        let row = wait_for(&health, "t/w", |r| {
            r.generation == 4 && r.state == ActorState::Running
        })
        .await;
        assert_eq!((row.restarts, row.reloads), (3, 0));
        assert_eq!(starts.load(Ordering::SeqCst), 4);
    }

    #[actix_web::test]
    async fn late_reports_from_old_generations_are_ignored() {
        let health = HealthRegistry::default();
        let sup = one_for_one(&health);
        let starts = Arc::new(AtomicU32::new(0));
        let factory = Factory {
            panic_in: PanicIn::Nowhere,
            fail_first: 0,
            starts: starts.clone(),
        };
        sup.send(AddChild {
            spec: spec("w", factory),
            phase: StartPhase::Boot,
            disabled: false,
        })
        .await
        .unwrap()
        .unwrap();
        // A report for a generation that is not the current one changes nothing.
        sup.send(ChildDown {
            id: "w".into(),
            generation: 7,
            reason: ExitReason::Panic("stale".into()),
        })
        .await
        .unwrap();
        let row = health.get("t/w").unwrap();
        assert_eq!(
            (row.state, row.generation, row.restarts),
            (ActorState::Running, 1, 0)
        );
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }
}

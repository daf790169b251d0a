//! Child specifications and the contract between a supervisor and the actors it runs.
//!
//! Owns `ChildSpec` (how to start a child and what to do when it dies), the `ChildFactory` /
//! `RunningChild` traits a child kind implements, and the `DownGuard` every supervised actor
//! carries so that its death, by panic anywhere or by a clean stop, reaches the supervisor.
//! Does not own restart decisions (`policy`) or the supervisor actor itself.

use std::cell::RefCell;
use std::sync::{Arc, Once};
use std::time::Duration;

use actix::Recipient;
use futures::future::LocalBoxFuture;

use super::policy::{ExitReason, RestartPolicy, RestartType};
use super::ChildDown;
use crate::health::MailboxGauge;

/// Whether a child is a worker actor or a supervisor of its own children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Worker,
    Supervisor,
}

impl ChildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Worker => "actor",
            ChildKind::Supervisor => "supervisor",
        }
    }
}

/// Where a child's actor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the supervisor's own arbiter (cheap; for actors that never block).
    Shared,
    /// On an arbiter (OS thread) of its own; for engines that are not `Send` or may block.
    Dedicated,
}

/// What happens when a child's restart budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Park it as `failed`; its siblings keep running (optional plugins).
    Park,
    /// Tell the supervisor's observer, which stops the service (required infrastructure).
    Escalate,
}

/// Whether a start is the first one or a restart after boot finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPhase {
    /// During boot: the service is not serving yet (plugins only `init`).
    Boot,
    /// Later: the child must come back fully working (plugins `init` and `start`).
    Restart,
    /// A candidate to replace a running instance: prepared (plugins `init`) but not activated
    /// until the old instance has stopped (see [`RunningChild::activate`]).
    Reload,
}

/// Everything a supervisor needs to run one child.
#[derive(Clone)]
pub struct ChildSpec {
    pub id: String,
    pub kind: ChildKind,
    /// What the child is (`broker`, `plugin`, `supervisor`), shown in `/health`.
    pub role: &'static str,
    pub restart: RestartType,
    pub shutdown_timeout: Duration,
    pub placement: Placement,
    pub on_exhausted: OnExhausted,
    pub policy: RestartPolicy,
    pub factory: Arc<dyn ChildFactory>,
    /// Whether the child gets its own row in `/health` (sessions are too many; they are
    /// reported as an aggregate instead).
    pub in_health: bool,
}

/// Builds a fresh instance of a child. Called again on every restart, so state never leaks from
/// a crashed instance into its replacement.
pub trait ChildFactory: Send + Sync + 'static {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>>;
}

/// Why a child did not start: the step that failed and what it said. The supervisor knows no
/// steps of its own; each kind of child names its own (plugins: `compile`, `validate`, `init`,
/// `start`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {message}")]
pub struct StartError {
    pub step: &'static str,
    pub message: String,
}

impl StartError {
    pub fn new(step: &'static str, message: impl Into<String>) -> Self {
        StartError {
            step,
            message: message.into(),
        }
    }
}

/// What a factory gets for one start.
pub struct StartArgs {
    pub id: String,
    /// Health path, e.g. `root/plugins/hello`.
    pub path: String,
    pub generation: u64,
    pub phase: StartPhase,
    pub placement: Placement,
    /// Must be moved into the new actor so its death is reported.
    pub guard: DownGuard,
}

/// The supervisor's grip on a running child.
pub trait RunningChild {
    /// Asks the child to stop cleanly; resolves once it has (or failed to).
    fn stop(&self) -> LocalBoxFuture<'static, Result<(), String>>;
    /// Stops the child without waiting (used after its shutdown timeout).
    fn kill(&self);
    /// Makes a prepared reload candidate live (plugins: `start`).
    fn activate(&self) -> LocalBoxFuture<'static, Result<(), StartError>> {
        Box::pin(async { Ok(()) })
    }
    /// The child's mailbox gauge, shown in `/health`.
    fn mailbox(&self) -> Option<Arc<MailboxGauge>> {
        None
    }
}

/// Carried by every supervised actor. When the actor is dropped, for whatever reason, the guard
/// reports `ChildDown` to the supervisor. A clean stop sets the reason where it *begins* (the
/// stop handler), never in `Actor::stopped`, because actix runs `stopped` after a panic as well.
/// Without a reason the actor was torn down by a panic (tokio drops a task whose poll panicked)
/// and the panic text recorded by the process-wide hook becomes the reason.
pub struct DownGuard {
    id: String,
    generation: u64,
    notify: Option<Recipient<ChildDown>>,
    reason: Option<ExitReason>,
}

impl DownGuard {
    pub fn new(id: String, generation: u64, notify: Recipient<ChildDown>) -> Self {
        DownGuard {
            id,
            generation,
            notify: Some(notify),
            reason: None,
        }
    }

    /// A guard that reports to no one (for actors started outside a supervisor, e.g. in tests).
    pub fn detached(id: &str) -> Self {
        DownGuard {
            id: id.to_string(),
            generation: 0,
            notify: None,
            reason: None,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records why the actor is ending; call it from a clean stop path.
    pub fn set_reason(&mut self, reason: ExitReason) {
        self.reason.get_or_insert(reason);
    }

    /// Reports to no one from now on: the actor's end is not the child's (a parked session's
    /// actor stops while the session goes on). Dropped, it reads no panic text either.
    pub fn disarm(&mut self) {
        self.notify = None;
        self.set_reason(ExitReason::Normal);
    }
}

impl Drop for DownGuard {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or_else(|| {
            ExitReason::Panic(
                take_last_panic().unwrap_or_else(|| "actor ended without a clean stop".into()),
            )
        });
        if let Some(notify) = self.notify.take() {
            // Control message to the supervisor: do_send is deliberate (it must not be lost to
            // a full mailbox, and the supervisor's mailbox only carries control traffic).
            notify.do_send(ChildDown {
                id: std::mem::take(&mut self.id),
                generation: self.generation,
                reason,
            });
        }
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that remembers the last panic message of each thread, so a
/// `DownGuard` dropped right after can say why its actor died. The previous hook still runs.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            let message = match info.location() {
                Some(loc) => format!("{message} (at {}:{})", loc.file(), loc.line()),
                None => message,
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
            previous(info);
        }));
    });
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

/// Takes the last panic message recorded on this thread.
pub fn take_last_panic() -> Option<String> {
    LAST_PANIC.with(|last| last.borrow_mut().take())
}

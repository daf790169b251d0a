//! Health: the snapshot table of every supervised actor, mailbox gauges, and the service's
//! lifecycle phase.
//!
//! Supervisors write the table as children change state; HTTP handlers only read it, so a stuck
//! actor can never stall `/health`, `/livez` or `/readyz`. Does not own the HTTP rendering
//! (`api::health`) nor any decision about restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// Lifecycle state of one supervised actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorState {
    Starting,
    Running,
    Restarting,
    Failed,
    Stopping,
    Stopped,
    /// Turned off by an operator (plugins only).
    Disabled,
}

impl ActorState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Restarting => "restarting",
            ActorState::Failed => "failed",
            ActorState::Stopping => "stopping",
            ActorState::Stopped => "stopped",
            ActorState::Disabled => "disabled",
        }
    }
}

/// Observed mailbox use of one actor. Senders count up, the handler counts down, so the depth is
/// what is waiting. actix has no queue-length API, hence the counters.
#[derive(Debug, Default)]
pub struct MailboxGauge {
    capacity: AtomicUsize,
    depth: AtomicUsize,
    high_water: AtomicUsize,
    dropped: AtomicU64,
}

impl MailboxGauge {
    pub fn new(capacity: usize) -> Arc<Self> {
        let gauge = MailboxGauge::default();
        gauge.capacity.store(capacity, Ordering::Relaxed);
        Arc::new(gauge)
    }

    /// A message was queued.
    pub fn enqueued(&self) {
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        self.high_water.fetch_max(depth, Ordering::Relaxed);
    }

    /// Reserves a place for a message in a mailbox the gauge itself bounds: counts it as queued
    /// and answers true, or answers false when `capacity` messages already wait (the caller
    /// then drops the message and calls [`MailboxGauge::dropped`]). Reserve before sending and
    /// call [`MailboxGauge::dequeued`] when the message leaves (or the send fails): the depth
    /// then never passes the capacity, nor does the high-water mark.
    pub fn try_enqueue(&self) -> bool {
        let capacity = self.capacity.load(Ordering::Relaxed);
        match self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                (d < capacity).then_some(d + 1)
            }) {
            Ok(before) => {
                self.high_water.fetch_max(before + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// A message left the queue (handler started, or the send failed).
    pub fn dequeued(&self) {
        // Saturating: a restarted actor may see a late decrement for a message of its predecessor.
        let _ = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1));
    }

    /// A message could not be queued (mailbox full or closed).
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MailboxSnapshot {
        MailboxSnapshot {
            capacity: self.capacity.load(Ordering::Relaxed),
            depth: self.depth.load(Ordering::Relaxed),
            high_water: self.high_water.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxSnapshot {
    pub capacity: usize,
    pub depth: usize,
    pub high_water: usize,
    pub dropped: u64,
}

/// The last error of an actor.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub message: String,
    #[serde(serialize_with = "crate::util::serialize_rfc3339")]
    pub at: SystemTime,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct ActorRecord {
    /// Position in the tree, e.g. `root/plugins/hello`.
    pub path: String,
    /// `actor` or `supervisor`.
    pub component_type: &'static str,
    /// What the actor is: `broker`, `plugin`, `supervisor`, …
    pub role: &'static str,
    /// A failed required actor fails `/health`; a failed optional one only warns.
    pub required: bool,
    pub state: ActorState,
    /// The instance's number: it grows with every start, restart and reload (a reload
    /// candidate that failed used one too).
    pub generation: u64,
    /// Starts after the first: crash restarts, operator restarts and enables, attempts that
    /// failed to start included.
    pub restarts: u32,
    /// Reloads that replaced the instance.
    pub reloads: u32,
    pub last_error: Option<LastError>,
    pub started_at: Option<(Instant, SystemTime)>,
    pub mailbox: Option<Arc<MailboxGauge>>,
}

impl ActorRecord {
    pub fn new(path: String, component_type: &'static str, role: &'static str) -> Self {
        ActorRecord {
            path,
            component_type,
            role,
            required: true,
            state: ActorState::Starting,
            generation: 0,
            restarts: 0,
            reloads: 0,
            last_error: None,
            started_at: None,
            mailbox: None,
        }
    }

    /// The id: the last path segment.
    pub fn id(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// The shared snapshot table.
#[derive(Clone, Default)]
pub struct HealthRegistry {
    rows: Arc<RwLock<BTreeMap<String, ActorRecord>>>,
}

impl HealthRegistry {
    /// Inserts the row if missing (built by `make`) and applies `update` to it.
    pub fn upsert(
        &self,
        path: &str,
        make: impl FnOnce() -> ActorRecord,
        update: impl FnOnce(&mut ActorRecord),
    ) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        let row = rows.entry(path.to_string()).or_insert_with(make);
        update(row);
    }

    /// Applies `update` to an existing row.
    pub fn update(&self, path: &str, update: impl FnOnce(&mut ActorRecord)) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        if let Some(row) = rows.get_mut(path) {
            update(row);
        }
    }

    pub fn remove(&self, path: &str) {
        let mut rows = self.rows.write().unwrap_or_else(|e| e.into_inner());
        rows.remove(path);
    }

    pub fn get(&self, path: &str) -> Option<ActorRecord> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.get(path).cloned()
    }

    /// Every row, ordered by path.
    pub fn snapshot(&self) -> Vec<ActorRecord> {
        let rows = self.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.values().cloned().collect()
    }
}

/// Phase of the whole service, behind `/readyz` and `/livez`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Building the tree; not ready.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutting down; `/readyz` answers 503.
    Draining = 2,
}

/// The service's lifecycle latch, shared by the app and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    /// Wakes [`Lifecycle::draining`] waiters when the phase changes.
    changed: tokio::sync::Notify,
    /// Set when a required child spent its restart budget: `/livez` fails and the service exits.
    fatal: RwLock<Option<String>>,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Resolves once the service is draining (at once if it already is): endless streams
    /// end on it rather than hold the HTTP drain open.
    pub async fn draining(&self) {
        loop {
            // Registered before the check, so a change in between still wakes it.
            let changed = self.changed.notified();
            if self.phase() == Phase::Draining {
                return;
            }
            changed.await;
        }
    }

    pub fn set_fatal(&self, reason: String) {
        let mut fatal = self.fatal.write().unwrap_or_else(|e| e.into_inner());
        fatal.get_or_insert(reason);
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_gauge_never_passes_its_capacity() {
        let gauge = MailboxGauge::new(8);
        let admitted: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).filter(|_| gauge.try_enqueue()).count()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(admitted, 8);
        let snap = gauge.snapshot();
        assert_eq!((snap.depth, snap.high_water), (8, 8));
        gauge.dequeued();
        assert!(gauge.try_enqueue());
        assert!(!gauge.try_enqueue());
    }
}

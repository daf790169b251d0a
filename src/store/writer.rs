//! The store writer: one actor that batches writes into transactions.
//!
//! Owns the write queue (the actor's bounded mailbox; a full queue drops and counts, it never
//! blocks the message path), batching (a batch is written when it is full or its window has
//! passed), retries of a failed batch, the counters `/health` shows, and flushing on a clean
//! stop so nothing acknowledged is lost on SIGTERM. A hard kill loses at most one window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::Serialize;
use serde_json::Value;

use super::Store;
use crate::health::MailboxGauge;
use crate::supervisor::child::{ChildFactory, DownGuard, RunningChild, StartArgs, StartError};
use crate::supervisor::policy::ExitReason;

/// One thing to persist.
#[derive(Debug, Clone)]
pub enum Write {
    SessionOpened {
        id: String,
        target_id: String,
        plugins: Value,
        at: String,
    },
    /// One message and its answer (or its error), with the summary counters to add.
    Exchange {
        session_id: String,
        index: u64,
        sent: String,
        received: Option<String>,
        metadata: Option<Value>,
        response_time_ms: Option<u64>,
        token_usage: Option<Value>,
        tokens: u64,
        error: Option<String>,
        at: String,
    },
    SessionEnded {
        id: String,
        state: &'static str,
        reason: String,
        at: String,
    },
    Audit(super::AuditEntry),
}

/// Queue one write.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub Write);

/// Write everything queued now; answers when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

/// Flush, then stop (part of shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopWriter;

/// Counters shown in `/health`.
#[derive(Default)]
pub struct WriterStats {
    written: AtomicU64,
    failed_batches: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterSnapshot {
    pub written: u64,
    pub failed_batches: u64,
    pub dropped: u64,
    pub retries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last batch failed or writes were dropped since the last good batch.
    pub degraded: bool,
}

impl WriterStats {
    pub fn snapshot(&self) -> WriterSnapshot {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        WriterSnapshot {
            written: self.written.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            degraded: last_error.is_some(),
            last_error,
        }
    }

    fn failed(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

/// The stable way to write: survives writer restarts, never blocks.
#[derive(Clone)]
pub struct StoreHandle {
    store: Store,
    current: Arc<RwLock<Option<Addr<StoreWriter>>>>,
    stats: Arc<WriterStats>,
    gauge: Arc<MailboxGauge>,
    settings: WriterSettings,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub batch_window: Duration,
    pub batch_max_rows: usize,
    pub queue_capacity: usize,
    /// Audit entries older than this are pruned.
    pub audit_retention: Option<Duration>,
    /// At most this many audit entries are kept.
    pub audit_max_rows: Option<i64>,
    pub prune_interval: Duration,
}

impl StoreHandle {
    pub fn new(store: Store, settings: WriterSettings) -> Self {
        StoreHandle {
            store,
            current: Arc::new(RwLock::new(None)),
            stats: Arc::new(WriterStats::default()),
            gauge: MailboxGauge::new(settings.queue_capacity),
            settings,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> WriterSnapshot {
        self.stats.snapshot()
    }

    /// Queues `write`. A full queue or a writer that is restarting drops it, counted.
    pub fn write(&self, write: Write) {
        let addr = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let queued = addr.is_some_and(|a| a.try_send(Enqueue(write)).is_ok());
        if queued {
            self.gauge.enqueued();
            return;
        }
        self.gauge.dropped();
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.stats
            .failed("a write was dropped: the writer's queue was full or it was restarting".into());
        tracing::warn!("Store write dropped: the writer's queue is full or it is restarting.");
    }

    /// Waits until everything queued so far is written (tests, benchmarks).
    pub async fn flush(&self) {
        let addr = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(addr) = addr {
            let _ = addr.send(Flush).await;
        }
    }
}

pub struct StoreWriter {
    handle: StoreHandle,
    buffer: Vec<Write>,
    scheduled: Option<SpawnHandle>,
    guard: DownGuard,
}

/// Writes one batch in one transaction.
async fn write_batch(store: &Store, batch: &[Write]) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    for write in batch {
        match write {
            Write::SessionOpened {
                id,
                target_id,
                plugins,
                at,
            } => {
                sqlx::query("INSERT OR IGNORE INTO sessions (id, target_id, state, plugins, created_at) VALUES (?, ?, 'open', ?, ?)")
                    .bind(id)
                    .bind(target_id)
                    .bind(plugins.to_string())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::Exchange {
                session_id,
                index,
                sent,
                received,
                metadata,
                response_time_ms,
                token_usage,
                tokens,
                error,
                at,
            } => {
                let index = *index as i64;
                sqlx::query("INSERT INTO messages (session_id, message_index, direction, content, created_at) VALUES (?, ?, 'sent', ?, ?)")
                    .bind(session_id)
                    .bind(index)
                    .bind(sent)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                let direction = if error.is_some() { "error" } else { "received" };
                sqlx::query("INSERT INTO messages (session_id, message_index, direction, content, metadata, response_time_ms, token_usage, error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
                    .bind(session_id)
                    .bind(index)
                    .bind(direction)
                    .bind(received)
                    .bind(metadata.as_ref().map(Value::to_string))
                    .bind(response_time_ms.map(|v| v as i64))
                    .bind(token_usage.as_ref().map(Value::to_string))
                    .bind(error)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE sessions SET message_count = message_count + 1, total_tokens = total_tokens + ?, total_response_ms = total_response_ms + ?, error_count = error_count + ? WHERE id = ?")
                    .bind(*tokens as i64)
                    .bind(response_time_ms.unwrap_or(0) as i64)
                    .bind(i64::from(error.is_some()))
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::Audit(entry) => {
                sqlx::query("INSERT INTO audit (session_id, target_id, direction, message, response_content, response_time_ms, token_usage, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
                    .bind(&entry.session_id)
                    .bind(&entry.target_id)
                    .bind(entry.direction.as_str())
                    .bind(&entry.message)
                    .bind(&entry.response_content)
                    .bind(entry.response_time_ms.map(|v| v as i64))
                    .bind(entry.token_usage.as_ref().map(Value::to_string))
                    .bind(&entry.timestamp)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::SessionEnded {
                id,
                state,
                reason,
                at,
            } => {
                sqlx::query(
                    "UPDATE sessions SET state = ?, end_reason = ?, ended_at = ? WHERE id = ?",
                )
                .bind(*state)
                .bind(reason)
                .bind(at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await
}

/// Attempts of one batch before it is given up (logged and counted).
const ATTEMPTS: u32 = 3;

impl StoreWriter {
    /// Writes the buffer now; the mailbox waits meanwhile (that is the queue's backpressure).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let write = self.take_batch(ctx);
        ctx.wait(write.into_actor(self));
    }

    /// The write of everything buffered, as a future (nothing to do when the buffer is empty).
    fn take_batch(&mut self, ctx: &mut Context<Self>) -> futures::future::BoxFuture<'static, ()> {
        if let Some(handle) = self.scheduled.take() {
            ctx.cancel_future(handle);
        }
        let batch = std::mem::take(&mut self.buffer);
        if batch.is_empty() {
            return Box::pin(async {});
        }
        let store = self.handle.store.clone();
        let stats = self.handle.stats.clone();
        let write = async move {
            let mut last = None;
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                match write_batch(&store, &batch).await {
                    Ok(()) => {
                        stats
                            .written
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        return;
                    }
                    Err(error) => last = Some(error.to_string()),
                }
            }
            let error = last.unwrap_or_default();
            tracing::error!(%error, rows = batch.len(), "Store write failed after retries; the batch is lost.");
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            stats.failed(error);
        };
        Box::pin(write)
    }
}

impl StoreWriter {
    /// Applies the audit retention rules, between batches (the writer owns all writes).
    fn prune(&mut self, ctx: &mut Context<Self>) {
        let settings = self.handle.settings;
        let cutoff = settings
            .audit_retention
            .and_then(|age| std::time::SystemTime::now().checked_sub(age))
            .map(crate::util::rfc3339);
        let store = self.handle.store.clone();
        let prune = async move {
            match store
                .prune_audit(cutoff.as_deref(), settings.audit_max_rows)
                .await
            {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "Old audit entries pruned."),
                Err(error) => {
                    tracing::warn!(%error, "Pruning audit entries failed; will try again.")
                }
            }
        };
        ctx.wait(prune.into_actor(self));
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.handle.settings.queue_capacity);
        let settings = self.handle.settings;
        if settings.audit_retention.is_some() || settings.audit_max_rows.is_some() {
            ctx.run_interval(settings.prune_interval, |act, ctx| act.prune(ctx));
        }
    }
}

impl Handler<Enqueue> for StoreWriter {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.handle.gauge.dequeued();
        self.buffer.push(msg.0);
        if self.buffer.len() >= self.handle.settings.batch_max_rows {
            self.flush(ctx);
        } else if self.scheduled.is_none() {
            self.scheduled = Some(
                ctx.run_later(self.handle.settings.batch_window, |act, ctx| {
                    act.scheduled = None;
                    act.flush(ctx);
                }),
            );
        }
    }
}

impl Handler<Flush> for StoreWriter {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Context<Self>) -> Self::Result {
        // Answered once the batch is written; the mailbox waits meanwhile.
        let write = self.take_batch(ctx);
        AtomicResponse::new(Box::pin(write.into_actor(self)))
    }
}

impl Handler<StopWriter> for StoreWriter {
    type Result = ();

    fn handle(&mut self, _msg: StopWriter, ctx: &mut Context<Self>) {
        self.flush(ctx);
        self.guard.set_reason(ExitReason::Shutdown);
        ctx.stop();
    }
}

/// Starts writer instances for the root supervisor.
pub struct StoreWriterFactory {
    pub handle: StoreHandle,
}

struct RunningWriter {
    addr: Addr<StoreWriter>,
    gauge: Arc<MailboxGauge>,
}

impl RunningChild for RunningWriter {
    fn stop(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        let addr = self.addr.clone();
        async move {
            // Flush first and wait for it, so the stop covers every queued write.
            let _ = addr.send(Flush).await;
            addr.send(StopWriter)
                .await
                .map_err(|e| format!("store writer unreachable: {e}"))
        }
        .boxed_local()
    }

    fn kill(&self) {
        self.addr.do_send(StopWriter);
    }

    fn mailbox(&self) -> Option<Arc<MailboxGauge>> {
        Some(self.gauge.clone())
    }
}

impl ChildFactory for StoreWriterFactory {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>> {
        let addr = StoreWriter {
            handle: self.handle.clone(),
            buffer: Vec::new(),
            scheduled: None,
            guard: args.guard,
        }
        .start();
        *self
            .handle
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
        let gauge = self.handle.gauge.clone();
        async move { Ok(Box::new(RunningWriter { addr, gauge }) as Box<dyn RunningChild>) }
            .boxed_local()
    }
}

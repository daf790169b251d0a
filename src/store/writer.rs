//! The store writer: one actor that batches writes into transactions.
//!
//! Owns the write queue (shared by every sender: a lock and a push per write, and a wake for
//! the writer only when none is on its way; a full queue drops and counts, it never blocks the
//! message path), batching (a batch is written when it is full or its window has passed),
//! retries of a failed batch, the counters `/health` shows, and flushing on a clean stop so
//! nothing acknowledged is lost on SIGTERM. The queue outlives the writer: a restarted writer
//! starts with what was queued.
//!
//! Two durabilities ([`Durability`]). `Batched`: a write is queued and forgotten; a hard kill
//! loses what was queued but not yet committed (the last window while the writer keeps up, at
//! most `queue_capacity` writes when it falls behind). `Acknowledged`: the caller waits for
//! the commit ([`StoreHandle::write_committed`]); the first such write wakes the writer to
//! commit at once, taking everything queued until then into the same transaction (group
//! commit), so a hard kill loses nothing that was acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::{Pool, Store};
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
    /// An agent conversation, whole (an upsert: the last one of a batch wins).
    Conversation {
        agent_id: String,
        session_id: String,
        summary: Option<String>,
        /// The messages kept, a JSON array.
        messages: Value,
        at: String,
    },
    /// A session's plugin state (`{pluginId: state}`) as of its latest message, kept when
    /// instances share the store so a takeover restores it. Queued before the message's own
    /// write, so it commits no later than the message does.
    PluginState {
        session_id: String,
        state: Value,
    },
}

/// When a reply may be sent, relative to its transcript rows' commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The rows are queued and the reply sent at once; a batch commits per window.
    #[default]
    Batched,
    /// The reply waits until its rows are committed (group commit).
    Acknowledged,
}

/// Why a write the caller waits for was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("the store writer is not running (it is restarting or stopped)")]
    Unavailable,
    #[error("the store could not commit the write: {0}")]
    Failed(String),
}

/// Told once a write's transaction commits (or fails for good).
pub type Committed = tokio::sync::oneshot::Sender<Result<(), CommitError>>;

/// Writes arrived while none was on its way: schedule the window's flush (or flush now when
/// the batch is full). Sent by the first write after a flush, not by every write.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

/// A caller waits for its write: commit what is queued now. Sent by the first such write
/// after a flush; every write queued until the commit starts goes into the same transaction.
#[derive(Message)]
#[rtype(result = "()")]
struct CommitNow;

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
    batches: AtomicU64,
    failed_batches: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriterSnapshot {
    pub written: u64,
    /// Transactions committed (each holds one or more writes).
    pub batches: u64,
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
            batches: self.batches.load(Ordering::Relaxed),
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
    queue: Arc<Mutex<Queue>>,
    stats: Arc<WriterStats>,
    gauge: Arc<MailboxGauge>,
    settings: WriterSettings,
}

/// The writes waiting for the writer, shared by every sender and the writer: queueing a write
/// is a lock and a push, and the writer is woken only when no wake is on its way already (one
/// wake per batch, not per write). It outlives a writer's restart, so nothing queued is lost.
#[derive(Default)]
struct Queue {
    writes: Vec<Write>,
    /// Callers waiting for the queued writes to commit.
    waiters: Vec<Committed>,
    /// A [`Wake`] is on its way or the window's flush is scheduled.
    woken: bool,
    /// A [`CommitNow`] is on its way.
    commit_soon: bool,
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
    /// Agent conversations and finished webhook deliveries older than this are pruned.
    pub history_retention: Option<Duration>,
    pub prune_interval: Duration,
}

impl StoreHandle {
    pub fn new(store: Store, settings: WriterSettings) -> Self {
        StoreHandle {
            store,
            current: Arc::new(RwLock::new(None)),
            queue: Arc::new(Mutex::new(Queue::default())),
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

    /// Writes queued and not yet taken by the writer (for `/metrics`).
    pub fn queue_depth(&self) -> usize {
        self.queue().writes.len()
    }

    fn writer(&self) -> Option<Addr<StoreWriter>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `write`. A full queue drops it, counted (the store is then degraded).
    pub fn write(&self, write: Write) {
        let wake = {
            let mut queue = self.queue();
            if queue.writes.len() >= self.settings.queue_capacity {
                None
            } else {
                queue.writes.push(write);
                self.gauge.enqueued();
                // A full batch is worth a wake of its own: it is written at once.
                let wake = !queue.woken || queue.writes.len() == self.settings.batch_max_rows;
                queue.woken = true;
                Some(wake)
            }
        };
        match wake {
            Some(true) => {
                // No writer (it is restarting): the next one starts with what is queued.
                if let Some(addr) = self.writer() {
                    let _ = addr.try_send(Wake);
                }
            }
            Some(false) => {}
            None => {
                self.gauge.dropped();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .failed("a write was dropped: the writer's queue was full".into());
                tracing::warn!("Store write dropped: the writer's queue is full.");
            }
        }
    }

    /// Waits until every write queued before this call is committed (or failed for good):
    /// what must not happen before a write lands, e.g. a session's lease given up before its
    /// end is recorded, waits on this.
    pub fn flushed(&self) -> impl std::future::Future<Output = Result<(), CommitError>> + 'static {
        let (committed, done) = tokio::sync::oneshot::channel();
        let wake = {
            let mut queue = self.queue();
            queue.waiters.push(committed);
            !std::mem::replace(&mut queue.commit_soon, true)
        };
        if wake {
            if let Some(addr) = self.writer() {
                let _ = addr.try_send(CommitNow);
            }
        }
        async move { done.await.unwrap_or(Err(CommitError::Unavailable)) }
    }

    /// Queues `write` and waits until it is committed. Such writes are never dropped for a
    /// full queue: each one holds its caller (a session's message in flight), so their number
    /// is already bounded by the callers.
    pub fn write_committed(
        &self,
        write: Write,
    ) -> impl std::future::Future<Output = Result<(), CommitError>> + 'static {
        let (committed, done) = tokio::sync::oneshot::channel();
        let wake = {
            let mut queue = self.queue();
            queue.writes.push(write);
            queue.waiters.push(committed);
            self.gauge.enqueued();
            !std::mem::replace(&mut queue.commit_soon, true)
        };
        if wake {
            if let Some(addr) = self.writer() {
                let _ = addr.try_send(CommitNow);
            }
        }
        // A writer that stops for good without committing drops the sender.
        async move { done.await.unwrap_or(Err(CommitError::Unavailable)) }
    }

    /// Waits until everything queued so far is written (tests, benchmarks).
    pub async fn flush(&self) {
        if let Some(addr) = self.writer() {
            let _ = addr.send(Flush).await;
        }
    }
}

pub struct StoreWriter {
    handle: StoreHandle,
    scheduled: Option<SpawnHandle>,
    /// A checkpoint is running (a slow disk must not stack them up).
    checkpointing: bool,
    guard: DownGuard,
}

/// Rows per multi-row INSERT: 9 parameters each stays far below SQLite's 32,766 (and
/// PostgreSQL's 65,535).
const ROWS_PER_INSERT: usize = 1000;

/// A batch sorted by kind of write, in the order they are written.
struct Parts<'a> {
    opened: Vec<&'a Write>,
    rows: Vec<MessageRow<'a>>,
    audit: Vec<&'a super::AuditEntry>,
    ended: Vec<&'a Write>,
    /// The last write of each conversation in the batch (one statement may not upsert a row
    /// twice on PostgreSQL).
    conversations: Vec<&'a Write>,
    /// Each session's latest plugin state in the batch (the earlier ones are superseded).
    states: Vec<(&'a str, &'a Value)>,
}

impl<'a> Parts<'a> {
    fn of(batch: &'a [Write]) -> Parts<'a> {
        let mut parts = Parts {
            opened: Vec::new(),
            rows: Vec::new(),
            audit: Vec::new(),
            ended: Vec::new(),
            conversations: Vec::new(),
            states: Vec::new(),
        };
        for write in batch {
            match write {
                Write::SessionOpened { .. } => parts.opened.push(write),
                Write::Exchange {
                    session_id,
                    index,
                    sent,
                    received,
                    metadata,
                    response_time_ms,
                    token_usage,
                    error,
                    at,
                } => {
                    parts.rows.push(MessageRow {
                        session_id,
                        index: *index as i64,
                        direction: "sent",
                        content: Some(sent.as_str()),
                        metadata: None,
                        response_time_ms: None,
                        token_usage: None,
                        error: None,
                        at,
                    });
                    parts.rows.push(MessageRow {
                        session_id,
                        index: *index as i64,
                        direction: if error.is_some() { "error" } else { "received" },
                        content: received.as_deref(),
                        metadata: metadata.as_ref().map(Value::to_string),
                        response_time_ms: response_time_ms.map(|v| v as i64),
                        token_usage: token_usage.as_ref().map(Value::to_string),
                        error: error.as_deref(),
                        at,
                    });
                }
                Write::Audit(entry) => parts.audit.push(entry),
                Write::SessionEnded { .. } => parts.ended.push(write),
                Write::Conversation {
                    agent_id,
                    session_id,
                    ..
                } => {
                    let same = |w: &&Write| {
                        matches!(w, Write::Conversation { agent_id: a, session_id: s, .. }
                            if a == agent_id && s == session_id)
                    };
                    parts.conversations.retain(|w| !same(w));
                    parts.conversations.push(write);
                }
                Write::PluginState { session_id, state } => {
                    match parts.states.iter_mut().find(|(id, _)| id == session_id) {
                        Some(latest) => latest.1 = state,
                        None => parts.states.push((session_id, state)),
                    }
                }
            }
        }
        parts
    }

    /// Messages alone (the steady state): one statement that commits by itself.
    fn messages_only(&self) -> bool {
        self.opened.is_empty()
            && self.audit.is_empty()
            && self.ended.is_empty()
            && self.conversations.is_empty()
            && self.states.is_empty()
            && self.rows.len() <= ROWS_PER_INSERT
    }
}

/// One multi-row INSERT of `$rows` for database `$db` (none for no rows).
macro_rules! insert_messages {
    ($db:ty, $rows:expr) => {{
        let rows = $rows;
        (!rows.is_empty()).then(|| {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO messages (session_id, message_index, direction, content, metadata, response_time_ms, token_usage, error, created_at) ",
            );
            q.push_values(rows, |mut b, row| {
                b.push_bind(row.session_id)
                    .push_bind(row.index)
                    .push_bind(row.direction)
                    .push_bind(row.content)
                    .push_bind(row.metadata.as_deref())
                    .push_bind(row.response_time_ms)
                    .push_bind(row.token_usage.as_deref())
                    .push_bind(row.error)
                    .push_bind(row.at);
            });
            q
        })
    }};
}

/// Writes `$parts` into database `$db` through `$pool`, atomically: the same statements on
/// both backends (`QueryBuilder` numbers each backend's placeholders itself).
macro_rules! write_parts {
    ($db:ty, $pool:expr, $parts:expr, $instance:expr) => {{
        let (pool, parts, instance) = ($pool, $parts, $instance);
        if parts.messages_only() {
            return match insert_messages!($db, &parts.rows) {
                Some(mut q) => q.build().execute(pool).await.map(|_| ()),
                None => Ok(()),
            };
        }
        let mut tx = pool.begin().await?;
        if !parts.opened.is_empty() {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO sessions (id, target_id, state, plugins, created_at, instance_id) ",
            );
            q.push_values(&parts.opened, |mut b, write| {
                if let Write::SessionOpened {
                    id,
                    target_id,
                    plugins,
                    at,
                } = write
                {
                    b.push_bind(id)
                        .push_bind(target_id)
                        .push_bind("open")
                        .push_bind(plugins.to_string())
                        .push_bind(at)
                        .push_bind(instance);
                }
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in parts.rows.chunks(ROWS_PER_INSERT) {
            if let Some(mut q) = insert_messages!($db, chunk) {
                q.build().execute(&mut *tx).await?;
            }
        }
        for chunk in parts.audit.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO audit (session_id, target_id, direction, message, response_content, response_time_ms, token_usage, created_at) ",
            );
            q.push_values(chunk, |mut b, entry| {
                b.push_bind(&entry.session_id)
                    .push_bind(&entry.target_id)
                    .push_bind(entry.direction.as_str())
                    .push_bind(&entry.message)
                    .push_bind(&entry.response_content)
                    .push_bind(entry.response_time_ms.map(|v| v as i64))
                    .push_bind(entry.token_usage.as_ref().map(Value::to_string))
                    .push_bind(&entry.timestamp);
            });
            q.build().execute(&mut *tx).await?;
        }
        for (id, state) in &parts.states {
            sqlx::query("UPDATE sessions SET plugin_state = $1 WHERE id = $2")
                .bind(state.to_string())
                .bind(*id)
                .execute(&mut *tx)
                .await?;
        }
        for write in &parts.ended {
            if let Write::SessionEnded {
                id,
                state,
                reason,
                at,
            } = write
            {
                // Only the instance whose session it is ends it: one that lost it to a takeover
                // must not close it under its new owner ('' is a row older than the column).
                sqlx::query("UPDATE sessions SET state = $1, end_reason = $2, ended_at = $3 WHERE id = $4 AND instance_id IN ($5, '')")
                    .bind(*state)
                    .bind(reason)
                    .bind(at)
                    .bind(id)
                    .bind(instance)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for chunk in parts.conversations.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<$db>::new(
                "INSERT INTO conversations (agent_id, session_id, summary, messages, updated_at) ",
            );
            q.push_values(chunk, |mut b, write| {
                if let Write::Conversation {
                    agent_id,
                    session_id,
                    summary,
                    messages,
                    at,
                } = write
                {
                    b.push_bind(agent_id)
                        .push_bind(session_id)
                        .push_bind(summary)
                        .push_bind(messages.to_string())
                        .push_bind(at);
                }
            });
            q.push(" ON CONFLICT (agent_id, session_id) DO UPDATE SET summary = excluded.summary, messages = excluded.messages, updated_at = excluded.updated_at");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await
    }};
}

/// Writes one batch atomically with as few statements as its kinds of writes need, each a
/// round trip to the database: sessions opened, then every message row in order (a trigger
/// adds each answer to its session's counters), audit entries, sessions ended, then agent
/// conversations (the last state of each). A batch of
/// messages alone (the steady state) is one statement and commits by itself.
async fn write_batch(store: &Store, batch: &[Write]) -> Result<(), sqlx::Error> {
    let parts = Parts::of(batch);
    let instance = store.instance();
    match store.pool() {
        Pool::Sqlite(pool) => write_parts!(Sqlite, pool, &parts, instance),
        Pool::Postgres(pool) => write_parts!(Postgres, pool, &parts, instance),
    }
}

/// One `messages` row of a batch, borrowed from its write.
struct MessageRow<'a> {
    session_id: &'a str,
    index: i64,
    direction: &'static str,
    content: Option<&'a str>,
    metadata: Option<String>,
    response_time_ms: Option<i64>,
    token_usage: Option<String>,
    error: Option<&'a str>,
    at: &'a str,
}

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Attempts of one batch before it is given up (logged and counted).
const ATTEMPTS: u32 = 3;

impl StoreWriter {
    /// Writes what is queued now; the writer's own messages wait meanwhile.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let write = self.take_batch(ctx);
        ctx.wait(write.into_actor(self));
    }

    /// The write of everything queued, as a future (nothing to do when the queue is empty).
    fn take_batch(&mut self, ctx: &mut Context<Self>) -> futures::future::BoxFuture<'static, ()> {
        if let Some(handle) = self.scheduled.take() {
            ctx.cancel_future(handle);
        }
        let (batch, waiters) = {
            // Taken with the flags cleared under one lock: a write queued after this wakes
            // the writer again, one queued before is in this batch.
            let mut queue = self.handle.queue();
            queue.woken = false;
            queue.commit_soon = false;
            (
                std::mem::take(&mut queue.writes),
                std::mem::take(&mut queue.waiters),
            )
        };
        for _ in 0..batch.len() {
            self.handle.gauge.dequeued();
        }
        if batch.is_empty() {
            // Only `flushed` waits on an empty batch: what it waited for is committed.
            for waiter in waiters {
                let _ = waiter.send(Ok(()));
            }
            return Box::pin(async {});
        }
        let store = self.handle.store.clone();
        let stats = self.handle.stats.clone();
        let write = async move {
            let outcome = commit_with_retries(&store, &batch, &stats).await;
            for waiter in waiters {
                let _ = waiter.send(outcome.clone());
            }
        };
        Box::pin(write)
    }
}

/// Writes `batch`, retrying a failed transaction; counts the outcome.
async fn commit_with_retries(
    store: &Store,
    batch: &[Write],
    stats: &WriterStats,
) -> Result<(), CommitError> {
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let began = std::time::Instant::now();
        match write_batch(store, batch).await {
            Ok(()) => {
                tracing::debug!(
                    rows = batch.len(),
                    took_ms = began.elapsed().as_millis() as u64,
                    "Batch committed."
                );
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return Ok(());
            }
            Err(error) => last = Some(error.to_string()),
        }
    }
    let error = last.unwrap_or_default();
    tracing::error!(%error, rows = batch.len(), "Store write failed after retries; the batch is lost.");
    stats.failed_batches.fetch_add(1, Ordering::Relaxed);
    stats.failed(error.clone());
    Err(CommitError::Failed(error))
}

impl StoreWriter {
    /// Applies the retention rules (audit, conversations, webhook deliveries), between
    /// batches (the writer owns all writes).
    fn prune(&mut self, ctx: &mut Context<Self>) {
        let settings = self.handle.settings;
        let now = std::time::SystemTime::now();
        let cutoff = settings
            .audit_retention
            .and_then(|age| now.checked_sub(age))
            .map(crate::util::rfc3339);
        let history = settings
            .history_retention
            .and_then(|age| now.checked_sub(age));
        let store = self.handle.store.clone();
        let prune = async move {
            if cutoff.is_some() || settings.audit_max_rows.is_some() {
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
            }
            if let Some(before) = history {
                match store.prune_history(before).await {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(
                        removed,
                        "Old conversations and finished webhook deliveries pruned."
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "Pruning conversations and deliveries failed; will try again.")
                    }
                }
            }
        };
        ctx.wait(prune.into_actor(self));
    }
}

impl Actor for StoreWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let settings = self.handle.settings;
        if settings.audit_retention.is_some()
            || settings.audit_max_rows.is_some()
            || settings.history_retention.is_some()
        {
            ctx.run_interval(settings.prune_interval, |act, ctx| act.prune(ctx));
        }
        // SQLite: checkpoints off the commit path, on a connection of their own: commits never
        // wait for the database file to be synced, and the WAL stays small. (PostgreSQL
        // checkpoints by itself.)
        let sqlite = self.handle.store.backend() == super::Backend::Sqlite;
        if sqlite {
            ctx.run_interval(CHECKPOINT_EVERY, |act, ctx| {
                if std::mem::replace(&mut act.checkpointing, true) {
                    return;
                }
                let store = act.handle.store.clone();
                let checkpoint = async move {
                    if let Err(error) = store.checkpoint().await {
                        tracing::warn!(%error, "WAL checkpoint failed; will try again.");
                    }
                };
                ctx.spawn(
                    checkpoint
                        .into_actor(act)
                        .map(|_, act, _| act.checkpointing = false),
                );
            });
        }
        // Writes queued while no writer ran (a restart) are written now.
        if !self.handle.queue().writes.is_empty() {
            ctx.notify(CommitNow);
        }
    }
}

impl Handler<Wake> for StoreWriter {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Context<Self>) {
        let queued = self.handle.queue().writes.len();
        if queued >= self.handle.settings.batch_max_rows {
            self.flush(ctx);
        } else if self.scheduled.is_none() && queued > 0 {
            self.scheduled = Some(
                ctx.run_later(self.handle.settings.batch_window, |act, ctx| {
                    act.scheduled = None;
                    act.flush(ctx);
                }),
            );
        }
    }
}

impl Handler<CommitNow> for StoreWriter {
    type Result = ();

    fn handle(&mut self, _msg: CommitNow, ctx: &mut Context<Self>) {
        self.flush(ctx);
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

/// Starts a writer outside any supervision tree (tests and benchmarks of the store itself).
#[cfg(any(test, feature = "test-util"))]
pub fn start_detached(handle: &StoreHandle) -> Addr<StoreWriter> {
    let addr = StoreWriter {
        handle: handle.clone(),
        scheduled: None,
        checkpointing: false,
        guard: DownGuard::detached("store"),
    }
    .start();
    *handle.current.write().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
    addr
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
            scheduled: None,
            checkpointing: false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(id: &str) -> Write {
        Write::SessionOpened {
            id: id.into(),
            target_id: "t".into(),
            plugins: Value::Array(Vec::new()),
            at: "2026-11-26T00:00:00.000Z".into(),
        }
    }

    async fn handle(dir: &std::path::Path, capacity: usize) -> StoreHandle {
        let store = Store::open(&dir.join("db.sqlite")).await.unwrap();
        StoreHandle::new(
            store,
            WriterSettings {
                batch_window: Duration::from_millis(10),
                batch_max_rows: 500,
                queue_capacity: capacity,
                audit_retention: None,
                history_retention: None,
                audit_max_rows: None,
                prune_interval: Duration::from_secs(3600),
            },
        )
    }

    fn start_writer(handle: &StoreHandle) -> Addr<StoreWriter> {
        start_detached(handle)
    }

    async fn sessions(handle: &StoreHandle) -> i64 {
        on_pool!(handle.store().pool(), p => sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(p)
            .await
            .unwrap())
    }

    #[actix_web::test]
    async fn a_full_queue_drops_and_counts_and_a_new_writer_writes_what_was_queued() {
        let dir = tempfile::tempdir().unwrap();
        let handle = handle(dir.path(), 3).await;
        // No writer yet (as during a restart): writes wait in the queue, up to its capacity.
        for i in 0..5 {
            handle.write(opened(&format!("s{i}")));
        }
        assert_eq!(handle.stats().dropped, 2);
        assert_eq!(handle.gauge.snapshot().depth, 3);
        assert_eq!(handle.gauge.snapshot().high_water, 3);
        start_writer(&handle);
        handle.flush().await;
        assert_eq!(sessions(&handle).await, 3);
        assert_eq!(handle.gauge.snapshot().depth, 0);
    }

    #[actix_web::test]
    async fn waiting_writes_commit_together_without_waiting_for_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut handle = handle(dir.path(), 100).await;
        // A window far longer than the test: only a waiting write can bring the commit forward.
        handle.settings.batch_window = Duration::from_secs(3600);
        start_writer(&handle);
        handle.write(opened("batched"));
        let waits: Vec<_> = (0..20)
            .map(|i| handle.write_committed(opened(&format!("w{i}"))))
            .collect();
        let began = std::time::Instant::now();
        for outcome in futures::future::join_all(waits).await {
            outcome.unwrap();
        }
        assert!(began.elapsed() < Duration::from_secs(5));
        // Committed means readable, the batched write queued before them included.
        assert_eq!(sessions(&handle).await, 21);
        // One transaction: the first waiting write woke the writer, the rest rode along.
        assert_eq!((handle.stats().written, handle.stats().batches), (21, 1));
    }

    #[actix_web::test]
    async fn a_damaged_conversation_row_is_an_error_not_an_empty_history() {
        let dir = tempfile::tempdir().unwrap();
        let handle = handle(dir.path(), 100).await;
        let store = handle.store();
        sqlx::query(
            "INSERT INTO conversations (agent_id, session_id, summary, messages, updated_at) \
             VALUES ('helper', 'a', NULL, '[{not json', '2026-01-01T00:00:00Z')",
        )
        .execute(store.pool().sqlite().unwrap())
        .await
        .unwrap();
        let error = store.conversation("helper", "a").await.unwrap_err();
        assert!(
            matches!(
                error,
                crate::store::StoreError::Corrupt {
                    what: "conversation",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[actix_web::test]
    async fn a_conversation_written_twice_in_a_batch_keeps_its_last_state() {
        let dir = tempfile::tempdir().unwrap();
        let handle = handle(dir.path(), 100).await;
        let conversation = |session: &str, n: u64| Write::Conversation {
            agent_id: "helper".into(),
            session_id: session.into(),
            summary: (n > 1).then(|| format!("summary {n}")),
            messages: serde_json::json!([{ "role": "user", "content": format!("turn {n}") }]),
            at: "2026-01-01T00:00:00Z".into(),
        };
        // Queued before the writer starts: one batch, one statement.
        handle.write(conversation("a", 1));
        handle.write(conversation("b", 1));
        let last = handle.write_committed(conversation("a", 2));
        start_writer(&handle);
        last.await.unwrap();
        let store = handle.store();
        let a = store.conversation("helper", "a").await.unwrap().unwrap();
        assert_eq!(a.summary.as_deref(), Some("summary 2"));
        assert_eq!(a.messages[0]["content"], "turn 2");
        assert!(store.conversation("helper", "b").await.unwrap().is_some());
        assert!(store.conversation("other", "a").await.unwrap().is_none());
        // A later batch updates the row in place.
        handle.write_committed(conversation("a", 3)).await.unwrap();
        let a = store.conversation("helper", "a").await.unwrap().unwrap();
        assert_eq!(a.messages[0]["content"], "turn 3");
    }
}

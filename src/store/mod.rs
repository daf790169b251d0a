//! The store: sessions, transcripts, audit entries, targets, and the front doors' virtual API
//! keys (digests only) and model routes, in an embedded SQLite database (the default) or in
//! PostgreSQL (`store.url = "postgres://…"`), through sqlx.
//!
//! Owns opening the database (SQLite: WAL mode, created if missing; PostgreSQL: a pool of
//! `store.pool_size` connections, reached within `store.connect_timeout_ms` or start-up fails
//! naming the URL with its password masked), the embedded migrations of both dialects (the same
//! versions and names, `migrations/sqlite` and `migrations/postgres`), and the read queries the
//! API uses (sessions with filters and pagination, a session's messages, an agent
//! conversation). Writes go through the
//! batched writer actor (`writer`) so the message path never waits for the database. Queries
//! are plain SQL with `$N` placeholders, which SQLite accepts too: one text serves both
//! backends, compiled once per backend by [`on_pool!`]; only what differs (SQLite's pragmas and
//! checkpoints, marking sessions interrupted) is written per dialect. On PostgreSQL everything
//! here is shared by every instance pointed at the same database; each instance names itself
//! (`server.instance_id`) so it marks only its own sessions interrupted at start, and an
//! instance whose key does not open what the others sealed refuses to start
//! ([`Store::check_shared_key`]). `lease` holds session ownership with a lease (the SQL and the
//! pure decision; the session layer does not take leases yet).
//! With a key ([`Store::with_secrets`]) a target row is sealed on its way in: its whole
//! `authConfig` subtree, an endpoint with a password, credential headers of
//! `protocolConfig.headers` and credential keys of its plugins' configs (nested and non-string
//! values too), and opened on its way out, so no credential of a target is kept in clear
//! whatever its shape.

/// Runs `$body` with `$p` bound to the pool of whichever backend `$pool` is: one SQL text
/// (`$N` placeholders, which SQLite accepts too), compiled once per backend.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => $body,
            $crate::store::Pool::Postgres($p) => $body,
        }
    };
}

pub mod audit;
pub mod lease;
pub mod secrets;
pub mod sweep;
pub mod webhooks;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use crate::settings::StoreLocation;

/// One migration of both dialects: its version, its name, its SQLite and PostgreSQL texts.
type Migrations = &'static [(i64, &'static str, &'static str)];

macro_rules! migrations {
    ($dialect:literal: $(($version:literal, $name:literal, $file:literal)),* $(,)?) => {
        &[$(($version, $name, include_str!(concat!("../../migrations/", $dialect, "/", $file)))),*]
    };
}

/// The migrations, compiled in: the binary needs no files next to it. Both lists have the same
/// versions and names (a unit test checks it).
const SQLITE_MIGRATIONS: Migrations = migrations!("sqlite":
    (1, "sessions", "0001_sessions.sql"),
    (2, "audit", "0002_audit.sql"),
    (3, "targets", "0003_targets.sql"),
    (4, "store_meta", "0004_store_meta.sql"),
    (5, "session_counters", "0005_session_counters.sql"),
    (6, "frontdoor", "0006_frontdoor.sql"),
    (7, "session_instance", "0007_session_instance.sql"),
    (8, "session_owners", "0008_session_owners.sql"),
    (9, "webhooks", "0009_webhooks.sql"),
    (10, "conversations", "0010_conversations.sql"),
    (11, "instances", "0011_instances.sql"),
);
const POSTGRES_MIGRATIONS: Migrations = migrations!("postgres":
    (1, "sessions", "0001_sessions.sql"),
    (2, "audit", "0002_audit.sql"),
    (3, "targets", "0003_targets.sql"),
    (4, "store_meta", "0004_store_meta.sql"),
    (5, "session_counters", "0005_session_counters.sql"),
    (6, "frontdoor", "0006_frontdoor.sql"),
    (7, "session_instance", "0007_session_instance.sql"),
    (8, "session_owners", "0008_session_owners.sql"),
    (9, "webhooks", "0009_webhooks.sql"),
    (10, "conversations", "0010_conversations.sql"),
    (11, "instances", "0011_instances.sql"),
);

#[derive(Debug)]
struct Embedded(Migrations);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        (*name).into(),
                        MigrationType::Simple,
                        (*sql).into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Errors of the store. A database URL in a message never carries its password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {at}: {source}")]
    Open {
        at: String,
        #[source]
        source: sqlx::Error,
    },
    /// PostgreSQL could not be reached (or refused us) at start.
    #[error("cannot reach PostgreSQL at {url} within {timeout_ms} ms (store.url): {reason}")]
    Unreachable {
        /// The URL, its password masked.
        url: String,
        timeout_ms: u64,
        /// The driver's reason, with the password scrubbed should it appear.
        reason: String,
    },
    #[error("cannot bring the database at {at} up to date: {source}")]
    Migrate {
        at: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("a stored credential cannot be read: {0}")]
    Secret(#[from] secrets::SecretError),
    /// A stored JSON column does not parse (a damaged row): said, never read as empty.
    #[error("a stored {what} is not valid JSON: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// PostgreSQL: the database's credentials were sealed with another key than this
    /// instance's.
    #[error("the credentials in the database at {url} were sealed with another key: every instance sharing it needs the same store.secret_key (SWITCHYARD_SECRET_KEY)")]
    KeyMismatch { url: String },
}

/// The database behind a store.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    /// The SQLite pool, when the store is on SQLite (tests that read the file's rows).
    pub fn sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Pool::Sqlite(pool) => Some(pool),
            Pool::Postgres(_) => None,
        }
    }

    /// Closes every connection (tests reopen the same database).
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// Which database a store is on (`/health` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How to reach the database, from the settings.
#[derive(Debug, Clone)]
pub struct Connect {
    pub location: StoreLocation,
    /// PostgreSQL: the most connections in the pool.
    pub pool_size: u32,
    /// PostgreSQL: how long to wait for a connection.
    pub connect_timeout: Duration,
    /// This instance's name (`server.instance_id`), kept with the sessions it opens.
    pub instance: String,
}

/// The database. Cheap to clone (a connection pool, and the key for credentials at rest).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    secrets: Option<secrets::Secrets>,
    instance: String,
}

/// Reads a row's columns the same way on either backend (each panics, as `Row::get` does, on a
/// column the migrations did not make).
trait Columns {
    fn text(&self, column: &str) -> String;
    fn maybe_text(&self, column: &str) -> Option<String>;
    fn int(&self, column: &str) -> i64;
    fn maybe_int(&self, column: &str) -> Option<i64>;
}

macro_rules! columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> String {
                self.get(column)
            }
            fn maybe_text(&self, column: &str) -> Option<String> {
                self.get(column)
            }
            fn int(&self, column: &str) -> i64 {
                self.get(column)
            }
            fn maybe_int(&self, column: &str) -> Option<i64> {
                self.get(column)
            }
        }
    };
}
columns!(SqliteRow);
columns!(PgRow);

/// Filters of `GET /api/sessions`.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub target_id: Option<String>,
    pub state: Option<String>,
}

/// A session as the store keeps it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    pub id: String,
    pub target_id: String,
    pub state: String,
    pub plugins: Value,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub message_count: i64,
    pub total_tokens: i64,
    pub avg_response_time_ms: i64,
    pub error_count: i64,
}

/// One transcript row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRow {
    pub id: i64,
    pub message_index: i64,
    pub direction: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_time_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
}

fn json_column(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Store {
    /// Opens (creating if missing) the SQLite database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::connect(&Connect {
            location: StoreLocation::Sqlite(path.to_path_buf()),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            instance: String::new(),
        })
        .await
    }

    /// Opens the database `connect` names (an SQLite file is created if missing) and migrates
    /// it. PostgreSQL that cannot be reached within the timeout is [`StoreError::Unreachable`].
    pub async fn connect(connect: &Connect) -> Result<Store, StoreError> {
        let (pool, at) = match &connect.location {
            StoreLocation::Sqlite(path) => (open_sqlite(path).await?, path.display().to_string()),
            StoreLocation::Postgres(url) => (
                open_postgres(url, connect).await?,
                crate::util::masked_url(url),
            ),
        };
        let migrate = |source| StoreError::Migrate {
            at: at.clone(),
            source,
        };
        let migrations = match pool {
            Pool::Sqlite(_) => SQLITE_MIGRATIONS,
            Pool::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        // PostgreSQL: sqlx holds an advisory lock meanwhile, so instances starting together
        // migrate one after the other.
        let migrator = Migrator::new(Embedded(migrations)).await.map_err(migrate)?;
        on_pool!(&pool, p => migrator.run(p).await).map_err(migrate)?;
        Ok(Store {
            pool,
            secrets: None,
            instance: connect.instance.clone(),
        })
    }

    /// This store with the key that encrypts credentials at rest (`store.secret_key` or the key
    /// file): target rows are sealed with it, and sessions seal their plugins' secrets with it.
    pub fn with_secrets(mut self, secrets: secrets::Secrets) -> Store {
        self.secrets = Some(secrets);
        self
    }

    /// PostgreSQL: checks that this instance's key opens what the others sealed, by a value
    /// sealed with the first instance's key (`store_meta.key_check`, written on first use).
    /// Instances with different keys would each read the others' credentials as noise. (An
    /// SQLite file has one instance: nothing to check.)
    pub async fn check_shared_key(&self, shown_url: &str) -> Result<(), StoreError> {
        let (Pool::Postgres(p), Some(secrets)) = (&self.pool, &self.secrets) else {
            return Ok(());
        };
        const PROBE: &str = "switchyard key check";
        sqlx::query(
            "INSERT INTO store_meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(secrets.encrypt(PROBE))
        .execute(p)
        .await?;
        let sealed: String =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE key = 'key_check'")
                .fetch_one(p)
                .await?;
        match secrets.decrypt(&sealed) {
            Ok(text) if text == PROBE => Ok(()),
            _ => Err(StoreError::KeyMismatch {
                url: shown_url.to_string(),
            }),
        }
    }

    /// The key for credentials at rest, when the store was given one.
    pub fn secrets(&self) -> Option<&secrets::Secrets> {
        self.secrets.as_ref()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// This instance's name, kept with the sessions it opens.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// SQLite: copies what the WAL holds into the database file, without waiting for (or
    /// blocking) readers and writers; the WAL is then reused from its start. PostgreSQL
    /// checkpoints by itself: nothing to do.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite(pool) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Marks sessions that were open when this instance stopped as `interrupted`. An SQLite
    /// file has one instance: every open session is its. On PostgreSQL only the sessions this
    /// instance opened: the others' are theirs, still running.
    pub async fn mark_interrupted(&self, at: &str) -> Result<u64, StoreError> {
        const MARK: &str = "UPDATE sessions SET state = 'interrupted', ended_at = $1, end_reason = 'the service stopped' WHERE state = 'open'";
        let done = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(MARK).bind(at).execute(p).await?.rows_affected(),
            Pool::Postgres(p) => sqlx::query(&format!("{MARK} AND instance_id = $2"))
                .bind(at)
                .bind(&self.instance)
                .execute(p)
                .await?
                .rows_affected(),
        };
        Ok(done)
    }

    /// Sessions matching `filter`, newest first, and how many match in all.
    pub async fn sessions(
        &self,
        filter: &SessionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SessionRow>, i64), StoreError> {
        const WHERE: &str = "WHERE ($1 IS NULL OR target_id = $1) AND ($2 IS NULL OR state = $2)";
        let count = format!("SELECT COUNT(*) FROM sessions {WHERE}");
        let page = format!(
            "SELECT * FROM sessions {WHERE} ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
        );
        on_pool!(&self.pool, p => {
            let total: i64 = sqlx::query_scalar(&count)
                .bind(&filter.target_id)
                .bind(&filter.state)
                .fetch_one(p)
                .await?;
            let rows = sqlx::query(&page)
                .bind(&filter.target_id)
                .bind(&filter.state)
                .bind(limit)
                .bind(offset)
                .fetch_all(p)
                .await?;
            Ok((rows.iter().map(session_row).collect(), total))
        })
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        on_pool!(&self.pool, p => {
            let row = sqlx::query("SELECT * FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?;
            Ok(row.as_ref().map(session_row))
        })
    }

    /// A session's transcript, oldest first, and its length.
    pub async fn messages(
        &self,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<MessageRow>, i64), StoreError> {
        on_pool!(&self.pool, p => {
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE session_id = $1")
                    .bind(session_id)
                    .fetch_one(p)
                    .await?;
            let rows = sqlx::query(
                "SELECT * FROM messages WHERE session_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
            )
            .bind(session_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?;
            Ok((rows.iter().map(message_row).collect(), total))
        })
    }
}

/// An agent conversation as the store keeps it (`turn` reads its messages).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRow {
    /// What compaction replaced, summarised.
    pub summary: Option<String>,
    /// The messages kept, a JSON array.
    pub messages: Value,
}

impl Store {
    /// The stored conversation of `(agent, session)`, if any.
    pub async fn conversation(
        &self,
        agent_id: &str,
        session_id: &str,
    ) -> Result<Option<ConversationRow>, StoreError> {
        on_pool!(&self.pool, p => {
            let row = sqlx::query(
                "SELECT summary, messages FROM conversations WHERE agent_id = $1 AND session_id = $2",
            )
            .bind(agent_id)
            .bind(session_id)
            .fetch_optional(p)
            .await?;
            // A damaged row is an error: read as empty, the next turn would save an empty
            // conversation over it and the history would be gone for good.
            row.map(|r| {
                Ok(ConversationRow {
                    summary: r.maybe_text("summary"),
                    messages: serde_json::from_str(&r.text("messages")).map_err(|e| {
                        StoreError::Corrupt {
                            what: "conversation",
                            reason: e.to_string(),
                        }
                    })?,
                })
            })
            .transpose()
        })
    }
}

fn message_row(r: &impl Columns) -> MessageRow {
    MessageRow {
        id: r.int("id"),
        message_index: r.int("message_index"),
        direction: r.text("direction"),
        content: r.maybe_text("content"),
        // Sealed values (rows of older versions, sealed by the sweep) read as the mask.
        metadata: json_column(r.maybe_text("metadata")).map(|mut m| {
            secrets::mask_sealed(&mut m);
            m
        }),
        response_time_ms: r.maybe_int("response_time_ms"),
        token_usage: json_column(r.maybe_text("token_usage")),
        error: r.maybe_text("error"),
        created_at: r.text("created_at"),
    }
}

fn audit_entry(r: &impl Columns) -> AuditEntry {
    AuditEntry {
        timestamp: r.text("created_at"),
        direction: if r.text("direction") == "sent" {
            AuditDirection::Sent
        } else {
            AuditDirection::Received
        },
        session_id: r.text("session_id"),
        target_id: r.text("target_id"),
        message: r.maybe_text("message"),
        response_content: r.maybe_text("response_content"),
        response_time_ms: r.maybe_int("response_time_ms").map(|v| v.max(0) as u64),
        token_usage: json_column(r.maybe_text("token_usage")),
    }
}

impl Store {
    /// A session's audit entries, oldest first (`None`: none recorded).
    pub async fn audit(&self, session_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query("SELECT * FROM audit WHERE session_id = $1 ORDER BY id")
                .bind(session_id)
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(audit_entry).collect())
        })
    }

    /// Deletes agent conversations not written since `before`, and webhook deliveries that
    /// finished (delivered or dead) before it; returns how many rows went. Pending and
    /// retrying deliveries stay whatever their age.
    pub async fn prune_history(&self, before: std::time::SystemTime) -> Result<u64, StoreError> {
        let at = crate::util::rfc3339(before);
        let ms = before
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
        let conversations = on_pool!(&self.pool, p => sqlx::query("DELETE FROM conversations WHERE updated_at < $1")
            .bind(&at)
            .execute(p)
            .await?
            .rows_affected());
        let deliveries = on_pool!(&self.pool, p => sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state IN ('delivered', 'dead') AND updated_at < $1",
        )
        .bind(ms)
        .execute(p)
        .await?
        .rows_affected());
        Ok(conversations + deliveries)
    }

    /// Applies the audit retention rules; returns how many entries went.
    pub async fn prune_audit(
        &self,
        older_than: Option<&str>,
        max_rows: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Some(cutoff) = older_than {
            removed += on_pool!(&self.pool, p => sqlx::query("DELETE FROM audit WHERE created_at < $1")
                .bind(cutoff)
                .execute(p)
                .await?
                .rows_affected());
        }
        if let Some(max) = max_rows {
            removed += on_pool!(&self.pool, p => sqlx::query(
                "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET $1)",
            )
            .bind(max)
            .execute(p)
            .await?
            .rows_affected());
        }
        Ok(removed)
    }
}

/// One audit entry (Krawall's `AuditLogEntry`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub timestamp: String,
    pub direction: AuditDirection,
    pub session_id: String,
    pub target_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_time_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_usage: Option<Value>,
}

/// Which way an audited message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDirection {
    Sent,
    Received,
}

impl AuditDirection {
    /// The value kept in the `direction` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDirection::Sent => "sent",
            AuditDirection::Received => "received",
        }
    }
}

/// A stored target: its JSON (credentials as the caller saved them) and its last test.
pub struct StoredTarget {
    pub body: Value,
    pub last_test: Option<Value>,
}

/// Whether an endpoint URL carries a password (`scheme://user:password@host/…`).
fn has_url_password(endpoint: &str) -> bool {
    let Some((_, rest)) = endpoint.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Seals, at any depth of `value`, every entry whose key looks like a credential.
fn seal_credential_keys(value: &mut Value, secrets: &secrets::Secrets) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if secrets::looks_like_credential(key) {
                    *v = secrets.seal(v);
                } else {
                    seal_credential_keys(v, secrets);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| seal_credential_keys(v, secrets)),
        _ => {}
    }
}

/// A target's row as it is kept: the whole `authConfig` sealed as one value (nested and
/// non-string credentials included), the endpoint when it holds a password, the credential
/// headers of `protocolConfig.headers` and the credential keys of its plugins' configs.
fn seal_target(body: &Value, secrets: &secrets::Secrets) -> Value {
    let mut sealed = body.clone();
    let Some(target) = sealed.as_object_mut() else {
        return sealed;
    };
    if let Some(auth) = target
        .get_mut("authConfig")
        .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
    {
        *auth = secrets.seal(auth);
    }
    if let Some(endpoint) = target
        .get_mut("endpoint")
        .filter(|e| e.as_str().is_some_and(has_url_password))
    {
        *endpoint = secrets.seal(endpoint);
    }
    if let Some(headers) = target
        .get_mut("protocolConfig")
        .and_then(|p| p.get_mut("headers"))
    {
        seal_credential_keys(headers, secrets);
    }
    if let Some(Value::Array(plugins)) = target.get_mut("plugins") {
        for plugin in plugins {
            if let Some(config) = plugin.get_mut("config") {
                seal_credential_keys(config, secrets);
            }
        }
    }
    sealed
}

impl Store {
    /// Stored targets, their sealed values opened again (a row saved without a key is read as
    /// it is; a value sealed with another key is an error).
    pub async fn targets(&self) -> Result<Vec<StoredTarget>, StoreError> {
        let rows: Vec<(Option<String>, Option<String>)> = on_pool!(&self.pool, p => {
            sqlx::query_as("SELECT body, last_test FROM targets ORDER BY created_at, id")
                .fetch_all(p)
                .await?
        });
        rows.into_iter()
            .map(|(body, last_test)| {
                let body = json_column(body).unwrap_or(Value::Null);
                let body = match &self.secrets {
                    Some(secrets) => secrets.open(&body)?,
                    None => body,
                };
                Ok(StoredTarget {
                    body,
                    last_test: json_column(last_test),
                })
            })
            .collect()
    }

    /// Inserts or replaces target `id`. With a key, its credentials are sealed whole here
    /// (whatever the caller encrypted already); `targets` gives back what was passed in.
    pub async fn save_target(&self, id: &str, body: &Value, at: &str) -> Result<(), StoreError> {
        let body = match &self.secrets {
            Some(secrets) => seal_target(body, secrets),
            None => body.clone(),
        };
        on_pool!(&self.pool, p => sqlx::query("INSERT INTO targets (id, body, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at")
            .bind(id)
            .bind(body.to_string())
            .bind(at)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn delete_target(&self, id: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM targets WHERE id = $1")
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn set_last_test(&self, id: &str, result: &Value) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query("UPDATE targets SET last_test = $1 WHERE id = $2")
            .bind(result.to_string())
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }
}

/// A virtual API key of the front doors as the store keeps it: its digest, never its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    /// SHA-256 of the key's text, lowercase hex.
    pub key_hash: String,
    /// Model names it may use; empty: every model.
    pub models: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub token_budget: Option<u64>,
    pub tokens_used: u64,
    pub created_at: String,
}

fn api_key_row(r: &impl Columns) -> ApiKeyRow {
    ApiKeyRow {
        id: r.text("id"),
        name: r.text("name"),
        prefix: r.text("prefix"),
        key_hash: r.text("key_hash"),
        models: json_column(r.maybe_text("models"))
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        requests_per_minute: r
            .maybe_int("requests_per_minute")
            .map(|n| n.clamp(0, u32::MAX as i64) as u32),
        token_budget: r.maybe_int("token_budget").map(|n| n.max(0) as u64),
        tokens_used: r.int("tokens_used").max(0) as u64,
        created_at: r.text("created_at"),
    }
}

impl Store {
    /// Every virtual API key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query("SELECT id, name, prefix, key_hash, models, requests_per_minute, token_budget, tokens_used, created_at FROM api_keys ORDER BY created_at, id")
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(api_key_row).collect())
        })
    }

    pub async fn save_api_key(&self, key: &ApiKeyRow) -> Result<(), StoreError> {
        let models = serde_json::to_string(&key.models).unwrap_or_else(|_| "[]".into());
        on_pool!(&self.pool, p => sqlx::query("INSERT INTO api_keys (id, name, prefix, key_hash, models, requests_per_minute, token_budget, tokens_used, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.key_hash)
            .bind(&models)
            .bind(key.requests_per_minute.map(i64::from))
            .bind(key.token_budget.map(|n| n.min(i64::MAX as u64) as i64))
            .bind(key.tokens_used.min(i64::MAX as u64) as i64)
            .bind(&key.created_at)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Adds `tokens` to what key `id` has spent of its budget (one UPDATE: instances sharing
    /// the database add up, none overwrites another's spend).
    pub async fn add_api_key_tokens(&self, id: &str, tokens: u64) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query("UPDATE api_keys SET tokens_used = tokens_used + $1 WHERE id = $2")
            .bind(tokens.min(i64::MAX as u64) as i64)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Model routes created over REST, oldest first, as they were sent.
    pub async fn model_routes(&self) -> Result<Vec<Value>, StoreError> {
        let bodies: Vec<Option<String>> = on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT body FROM model_routes ORDER BY created_at, name")
                .fetch_all(p)
                .await?
        });
        Ok(bodies.into_iter().filter_map(json_column).collect())
    }

    pub async fn save_model_route(
        &self,
        name: &str,
        body: &Value,
        at: &str,
    ) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query("INSERT INTO model_routes (name, body, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET body = excluded.body")
            .bind(name)
            .bind(body.to_string())
            .bind(at)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn delete_model_route(&self, name: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM model_routes WHERE name = $1")
            .bind(name)
            .execute(p)
            .await?
            .rows_affected());
        Ok(())
    }
}

fn session_row(r: &impl Columns) -> SessionRow {
    let messages = r.int("message_count");
    let total_ms = r.int("total_response_ms");
    SessionRow {
        id: r.text("id"),
        target_id: r.text("target_id"),
        state: r.text("state"),
        plugins: json_column(r.maybe_text("plugins")).unwrap_or(Value::Null),
        created_at: r.text("created_at"),
        ended_at: r.maybe_text("ended_at"),
        end_reason: r.maybe_text("end_reason"),
        summary: Summary {
            message_count: messages,
            total_tokens: r.int("total_tokens"),
            avg_response_time_ms: if messages > 0 { total_ms / messages } else { 0 },
            error_count: r.int("error_count"),
        },
    }
}

/// Opens (creating if missing) the SQLite file at `path`.
async fn open_sqlite(path: &Path) -> Result<Pool, StoreError> {
    let fail = |source| StoreError::Open {
        at: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(sqlx::Error::Io(e)))?;
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(fail)?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // No checkpoint inside a commit (it syncs the database file: milliseconds on the
        // message path); the writer checkpoints from another connection instead.
        .pragma("wal_autocheckpoint", "0")
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        // A file connection does not go stale as a network one does: no ping (a round trip
        // to the database thread) before each use.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(fail)?;
    Ok(Pool::Sqlite(pool))
}

/// Connects to PostgreSQL at `url`: one connection made now (so an unreachable database stops
/// the start), up to `pool_size` on demand.
async fn open_postgres(url: &str, connect: &Connect) -> Result<Pool, StoreError> {
    let unreachable = |error: sqlx::Error| StoreError::Unreachable {
        url: crate::util::masked_url(url),
        timeout_ms: connect.connect_timeout.as_millis() as u64,
        reason: scrub_password(&error.to_string(), url),
    };
    let options = PgConnectOptions::from_str(url)
        .map_err(unreachable)?
        .application_name("switchyard");
    let pool = PgPoolOptions::new()
        .max_connections(connect.pool_size)
        .acquire_timeout(connect.connect_timeout)
        .connect_with(options)
        .await
        .map_err(unreachable)?;
    Ok(Pool::Postgres(pool))
}

/// `text` with the password of `url` (if any) replaced by the mask, should a driver's message
/// ever quote it.
fn scrub_password(text: &str, url: &str) -> String {
    let Some(password) = url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .filter(|p| !p.is_empty())
    else {
        return text.to_string();
    };
    // As written in the URL (percent-encoded) and as sent.
    let decoded = url::form_urlencoded::parse(format!("p={password}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut text = text.replace(&password, crate::util::MASK);
    if !decoded.is_empty() {
        text = text.replace(&decoded, crate::util::MASK);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_dialects_have_the_same_migrations() {
        let names = |list: Migrations| -> Vec<(i64, &str)> {
            list.iter().map(|(v, n, _)| (*v, *n)).collect()
        };
        assert_eq!(names(SQLITE_MIGRATIONS), names(POSTGRES_MIGRATIONS));
        // And the files on disk are exactly those listed, in both folders.
        for (dialect, list) in [
            ("sqlite", SQLITE_MIGRATIONS),
            ("postgres", POSTGRES_MIGRATIONS),
        ] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let listed: Vec<String> = list
                .iter()
                .map(|(v, n, _)| format!("{v:04}_{n}.sql"))
                .collect();
            assert_eq!(files, listed, "{dialect}");
        }
    }

    #[test]
    fn a_password_quoted_by_the_driver_is_scrubbed() {
        assert_eq!(
            scrub_password("auth failed for s3cret", "postgres://u:s3cret@h/db"),
            "auth failed for ********"
        );
        assert_eq!(scrub_password("refused", "postgres://u@h/db"), "refused");
        assert_eq!(
            scrub_password("bad p@ss and p%40ss", "postgres://u:p%40ss@h/db"),
            "bad ******** and ********"
        );
    }

    #[test]
    fn url_passwords_are_found_in_the_authority_only() {
        assert!(has_url_password("http://user:pw@host/chat"));
        assert!(has_url_password("wss://u:p@h:8080?q=1"));
        assert!(!has_url_password("http://user@host/chat"));
        assert!(!has_url_password("http://host/a:b@c"));
        assert!(!has_url_password("not a url"));
    }

    #[test]
    fn a_target_row_keeps_no_credential_in_clear_and_opens_to_what_was_saved() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = secrets::Secrets::load(None, dir.path()).unwrap();
        let body = json!({
            "id": "t", "endpoint": "http://bob:hunter2@h/x",
            "authType": "CUSTOM_HEADER",
            "authConfig": { "headers": { "X-Pin": 4815162342u64 }, "extra": { "deep": "d33p" } },
            "protocolConfig": { "headers": { "Authorization": "Bearer pc-tok", "Accept": "text/plain" } },
            "plugins": [{ "id": "multi-step-auth", "config": { "authBody": { "password": "pw-1" }, "tokenPath": "data.token" } }],
        });
        let sealed = seal_target(&body, &secrets);
        let text = sealed.to_string();
        for secret in ["hunter2", "4815162342", "d33p", "pc-tok", "pw-1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(sealed["protocolConfig"]["headers"]["Accept"], "text/plain");
        assert_eq!(sealed["plugins"][0]["config"]["tokenPath"], "data.token");
        assert_eq!(secrets.open(&sealed).unwrap(), body);
        // Nothing to seal: the row is as it was.
        let plain = json!({ "id": "p", "endpoint": "http://h/x", "authConfig": {} });
        assert_eq!(seal_target(&plain, &secrets), plain);
    }
}

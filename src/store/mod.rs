//! The store: sessions, transcripts, audit entries, targets, and the front doors' virtual API
//! keys (digests only) and model routes in an embedded SQLite database
//! (sqlx).
//!
//! Owns opening the database (WAL mode, created if missing), the embedded migrations, and the
//! read queries the API uses (sessions with filters and pagination, a session's messages).
//! Writes go through the batched writer actor (`writer`) so the message path never waits for
//! the database. Queries are plain SQL through sqlx, so the same code can move to PostgreSQL.
//! With a key ([`Store::with_secrets`]) a target row is sealed on its way in: its whole
//! `authConfig` subtree, an endpoint with a password, credential headers of
//! `protocolConfig.headers` and credential keys of its plugins' configs (nested and non-string
//! values too), and opened on its way out, so no credential of a target is kept in clear
//! whatever its shape.

pub mod audit;
pub mod secrets;
pub mod sweep;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// The migrations, compiled in: the binary needs no files next to it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "sessions",
        include_str!("../../migrations/0001_sessions.sql"),
    ),
    (2, "audit", include_str!("../../migrations/0002_audit.sql")),
    (
        3,
        "targets",
        include_str!("../../migrations/0003_targets.sql"),
    ),
    (
        4,
        "store_meta",
        include_str!("../../migrations/0004_store_meta.sql"),
    ),
    (
        5,
        "session_counters",
        include_str!("../../migrations/0005_session_counters.sql"),
    ),
    (
        6,
        "frontdoor",
        include_str!("../../migrations/0006_frontdoor.sql"),
    ),
];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
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

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot bring the database at {path} up to date: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("a stored credential cannot be read: {0}")]
    Secret(#[from] secrets::SecretError),
}

/// The database. Cheap to clone (a connection pool, and the key for credentials at rest).
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    secrets: Option<secrets::Secrets>,
}

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
    /// Opens (creating if missing) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let fail = |source| StoreError::Open {
            path: path.to_path_buf(),
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
        let migrate = |source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        };
        Migrator::new(Embedded)
            .await
            .map_err(migrate)?
            .run(&pool)
            .await
            .map_err(migrate)?;
        Ok(Store {
            pool,
            secrets: None,
        })
    }

    /// This store with the key that encrypts credentials at rest (`store.secret_key` or the key
    /// file): target rows are sealed with it, and sessions seal their plugins' secrets with it.
    pub fn with_secrets(mut self, secrets: secrets::Secrets) -> Store {
        self.secrets = Some(secrets);
        self
    }

    /// The key for credentials at rest, when the store was given one.
    pub fn secrets(&self) -> Option<&secrets::Secrets> {
        self.secrets.as_ref()
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Copies what the WAL holds into the database file, without waiting for (or blocking)
    /// readers and writers; the WAL is then reused from its start.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks sessions that were open when the process stopped as `interrupted`.
    pub async fn mark_interrupted(&self, at: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE sessions SET state = 'interrupted', ended_at = ?, end_reason = 'the service stopped' WHERE state = 'open'")
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Sessions matching `filter`, newest first, and how many match in all.
    pub async fn sessions(
        &self,
        filter: &SessionFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SessionRow>, i64), StoreError> {
        const WHERE: &str = "WHERE (?1 IS NULL OR target_id = ?1) AND (?2 IS NULL OR state = ?2)";
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM sessions {WHERE}"))
            .bind(&filter.target_id)
            .bind(&filter.state)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM sessions {WHERE} ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
        ))
        .bind(&filter.target_id)
        .bind(&filter.state)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.iter().map(session_row).collect(), total))
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(session_row))
    }

    /// A session's transcript, oldest first, and its length.
    pub async fn messages(
        &self,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<MessageRow>, i64), StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE session_id = ?")
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?;
        let rows =
            sqlx::query("SELECT * FROM messages WHERE session_id = ? ORDER BY id LIMIT ? OFFSET ?")
                .bind(session_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
        let messages = rows
            .iter()
            .map(|r| MessageRow {
                id: r.get("id"),
                message_index: r.get("message_index"),
                direction: r.get("direction"),
                content: r.get("content"),
                // Sealed values (rows of older versions, sealed by the sweep) read as the mask.
                metadata: json_column(r.get("metadata")).map(|mut m| {
                    secrets::mask_sealed(&mut m);
                    m
                }),
                response_time_ms: r.get("response_time_ms"),
                token_usage: json_column(r.get("token_usage")),
                error: r.get("error"),
                created_at: r.get("created_at"),
            })
            .collect();
        Ok((messages, total))
    }
}

impl Store {
    /// A session's audit entries, oldest first (`None`: none recorded).
    pub async fn audit(&self, session_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit WHERE session_id = ? ORDER BY id")
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                timestamp: r.get("created_at"),
                direction: if r.get::<String, _>("direction") == "sent" {
                    AuditDirection::Sent
                } else {
                    AuditDirection::Received
                },
                session_id: r.get("session_id"),
                target_id: r.get("target_id"),
                message: r.get("message"),
                response_content: r.get("response_content"),
                response_time_ms: r
                    .get::<Option<i64>, _>("response_time_ms")
                    .map(|v| v.max(0) as u64),
                token_usage: json_column(r.get("token_usage")),
            })
            .collect())
    }

    /// Applies the audit retention rules; returns how many entries went.
    pub async fn prune_audit(
        &self,
        older_than: Option<&str>,
        max_rows: Option<i64>,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        if let Some(cutoff) = older_than {
            removed += sqlx::query("DELETE FROM audit WHERE created_at < ?")
                .bind(cutoff)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        if let Some(max) = max_rows {
            removed += sqlx::query("DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?)")
                .bind(max)
                .execute(&self.pool)
                .await?
                .rows_affected();
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
        let rows = sqlx::query("SELECT body, last_test FROM targets ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let body = json_column(r.get("body")).unwrap_or(Value::Null);
                let body = match &self.secrets {
                    Some(secrets) => secrets.open(&body)?,
                    None => body,
                };
                Ok(StoredTarget {
                    body,
                    last_test: json_column(r.get("last_test")),
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
        sqlx::query("INSERT INTO targets (id, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at")
            .bind(id)
            .bind(body.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_target(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM targets WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_last_test(&self, id: &str, result: &Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE targets SET last_test = ? WHERE id = ?")
            .bind(result.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
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

impl Store {
    /// Every virtual API key, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows = sqlx::query("SELECT id, name, prefix, key_hash, models, requests_per_minute, token_budget, tokens_used, created_at FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| ApiKeyRow {
                id: r.get("id"),
                name: r.get("name"),
                prefix: r.get("prefix"),
                key_hash: r.get("key_hash"),
                models: json_column(r.get("models"))
                    .and_then(|v| serde_json::from_value(v).ok())
                    .unwrap_or_default(),
                requests_per_minute: r
                    .get::<Option<i64>, _>("requests_per_minute")
                    .map(|n| n.clamp(0, u32::MAX as i64) as u32),
                token_budget: r
                    .get::<Option<i64>, _>("token_budget")
                    .map(|n| n.max(0) as u64),
                tokens_used: r.get::<i64, _>("tokens_used").max(0) as u64,
                created_at: r.get("created_at"),
            })
            .collect())
    }

    pub async fn save_api_key(&self, key: &ApiKeyRow) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (id, name, prefix, key_hash, models, requests_per_minute, token_budget, tokens_used, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key.key_hash)
            .bind(serde_json::to_string(&key.models).unwrap_or_else(|_| "[]".into()))
            .bind(key.requests_per_minute.map(i64::from))
            .bind(key.token_budget.map(|n| n.min(i64::MAX as u64) as i64))
            .bind(key.tokens_used.min(i64::MAX as u64) as i64)
            .bind(&key.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_api_key(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds `tokens` to what key `id` has spent of its budget.
    pub async fn add_api_key_tokens(&self, id: &str, tokens: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET tokens_used = tokens_used + ? WHERE id = ?")
            .bind(tokens.min(i64::MAX as u64) as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Model routes created over REST, oldest first, as they were sent.
    pub async fn model_routes(&self) -> Result<Vec<Value>, StoreError> {
        let rows = sqlx::query("SELECT body FROM model_routes ORDER BY created_at, name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| json_column(r.get("body")))
            .collect())
    }

    pub async fn save_model_route(
        &self,
        name: &str,
        body: &Value,
        at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO model_routes (name, body, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET body = excluded.body")
            .bind(name)
            .bind(body.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_model_route(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM model_routes WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn session_row(r: &sqlx::sqlite::SqliteRow) -> SessionRow {
    let messages: i64 = r.get("message_count");
    let total_ms: i64 = r.get("total_response_ms");
    SessionRow {
        id: r.get("id"),
        target_id: r.get("target_id"),
        state: r.get("state"),
        plugins: json_column(r.get("plugins")).unwrap_or(Value::Null),
        created_at: r.get("created_at"),
        ended_at: r.get("ended_at"),
        end_reason: r.get("end_reason"),
        summary: Summary {
            message_count: messages,
            total_tokens: r.get("total_tokens"),
            avg_response_time_ms: if messages > 0 { total_ms / messages } else { 0 },
            error_count: r.get("error_count"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

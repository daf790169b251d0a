//! The one-time upgrade of rows written before credentials were sealed at rest: target rows,
//! sessions' plugin configs and transcript metadata that still hold a credential in clear.
//!
//! Owns the sweep and its marker (`store_meta.credentials_sealed`, so it runs once per
//! database). Target rows are sealed by the target rules (`seal_target`); in sessions and
//! transcripts every value under a credential-like key (`password`, `apiKey`,
//! `Authorization`…) not sealed yet is sealed; values a plugin's schema marked secret under
//! another name cannot be recognised in an old row and are left as they are. On SQLite the
//! sweep runs with `secure_delete` and truncates the WAL afterwards, so the old plaintext does not
//! linger in freed pages. Does not own the key or the cipher (`secrets`).

use serde_json::Value;
use sqlx::{Connection, Row};

use super::secrets::{is_sealed, looks_like_credential, Secrets};
use super::{json_column, seal_target, Backend, Store, StoreError};

/// Rows read and rewritten per transaction.
const PAGE: i64 = 500;
const MARKER: &str = "credentials_sealed";

/// What the sweep sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub targets: u64,
    pub sessions: u64,
    pub messages: u64,
}

/// Seals, in place, every value under a credential-like key of `value` that is not sealed yet;
/// answers whether anything changed.
fn seal_plain_credentials(value: &mut Value, secrets: &Secrets) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, v) in map.iter_mut() {
                if looks_like_credential(key) {
                    if !v.is_null() && !is_sealed(v) {
                        *v = secrets.seal(v);
                        changed = true;
                    }
                } else {
                    changed |= seal_plain_credentials(v, secrets);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, v| {
            seal_plain_credentials(v, secrets) | changed
        }),
        _ => false,
    }
}

impl Store {
    /// Runs the sweep unless this database had it already (or there is no key). On PostgreSQL
    /// (no older version wrote there) it finds nothing to seal but records its marker all the
    /// same; two instances starting together both may run it: sealing is idempotent and the
    /// marker is written once.
    pub async fn seal_plaintext_once(&self) -> Result<Option<Sealed>, StoreError> {
        let Some(secrets) = self.secrets.as_ref() else {
            return Ok(None);
        };
        on_pool!(&self.pool, p => {
            let done: Option<String> =
                sqlx::query_scalar("SELECT value FROM store_meta WHERE key = $1")
                    .bind(MARKER)
                    .fetch_optional(p)
                    .await?;
            if done.is_some() {
                return Ok(None);
            }
            let mut conn = p.acquire().await?;
            let sqlite = self.backend() == Backend::Sqlite;
            if sqlite {
                sqlx::query("PRAGMA secure_delete = ON")
                    .execute(&mut *conn)
                    .await?;
            }
            let mut sealed = Sealed::default();

            let mut tx = conn.begin().await?;
            let rows = sqlx::query("SELECT id, body FROM targets")
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let stored = json_column(row.get("body")).unwrap_or(Value::Null);
                let body = seal_target(&secrets.open(&stored)?, secrets);
                sqlx::query("UPDATE targets SET body = $1 WHERE id = $2")
                    .bind(body.to_string())
                    .bind(row.get::<String, _>("id"))
                    .execute(&mut *tx)
                    .await?;
                sealed.targets += 1;
            }
            let rows = sqlx::query("SELECT id, plugins FROM sessions")
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let Some(mut plugins) = json_column(row.get("plugins")) else {
                    continue;
                };
                if seal_plain_credentials(&mut plugins, secrets) {
                    sqlx::query("UPDATE sessions SET plugins = $1 WHERE id = $2")
                        .bind(plugins.to_string())
                        .bind(row.get::<String, _>("id"))
                        .execute(&mut *tx)
                        .await?;
                    sealed.sessions += 1;
                }
            }
            tx.commit().await?;

            // Transcripts can be large: a page per transaction.
            let mut after = 0i64;
            loop {
                let mut tx = conn.begin().await?;
                let rows = sqlx::query(
                    "SELECT id, metadata FROM messages WHERE id > $1 AND metadata IS NOT NULL ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(PAGE)
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = rows.last() else { break };
                after = last.get("id");
                for row in &rows {
                    let Some(mut metadata) = json_column(row.get("metadata")) else {
                        continue;
                    };
                    if seal_plain_credentials(&mut metadata, secrets) {
                        sqlx::query("UPDATE messages SET metadata = $1 WHERE id = $2")
                            .bind(metadata.to_string())
                            .bind(row.get::<i64, _>("id"))
                            .execute(&mut *tx)
                            .await?;
                        sealed.messages += 1;
                    }
                }
                tx.commit().await?;
            }
            sqlx::query("INSERT INTO store_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(MARKER)
                .bind(crate::util::rfc3339(std::time::SystemTime::now()))
                .execute(&mut *conn)
                .await?;
            if sqlite {
                sqlx::query("PRAGMA secure_delete = OFF")
                    .execute(&mut *conn)
                    .await?;
                // The old pages' copies in the WAL go too.
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(Some(sealed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_plain_values_under_credential_keys_are_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(None, dir.path()).unwrap();
        let already = secrets.seal(&json!("old"));
        let mut value = json!([{ "id": "auth", "config": {
            "authBody": { "password": "pw" }, "tokenPath": "data.token",
            "nested": { "apiKey": 42, "Authorization": already.clone(), "empty": null },
            "password": null
        } }]);
        assert!(seal_plain_credentials(&mut value, &secrets));
        let config = &value[0]["config"];
        assert!(is_sealed(&config["authBody"]));
        assert!(is_sealed(&config["nested"]["apiKey"]));
        assert_eq!(config["nested"]["Authorization"], already);
        assert_eq!(config["tokenPath"], "data.token");
        assert_eq!(config["password"], Value::Null);
        assert_eq!(
            secrets.open(&config["authBody"]).unwrap(),
            json!({ "password": "pw" })
        );
        // Sealed already: nothing changes.
        assert!(!seal_plain_credentials(&mut value, &secrets));
    }
}

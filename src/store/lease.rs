//! Session ownership with a lease: which instance runs a live session, and until when.
//!
//! Owns the `session_owners` rows (one per owned session: instance id and the lease's expiry in
//! Unix milliseconds, by the database's clock so instances' clocks need not agree), the SQL
//! that acquires, renews, releases and lists expired leases (one text for both dialects but
//! the database clock's expression), and the pure decision of what an instance may do about a
//! session given its current lease ([`decide`]). Acquiring is one statement: a free session,
//! one this instance owns already, or one whose lease expired is taken atomically; two
//! instances racing for it cannot both win. Does not own when to renew or what a takeover does
//! with the session (the session layer and, across instances, the event bus).

use std::time::Duration;

use super::{Backend, Store, StoreError};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session_id: String,
    /// The instance that owns the session (`server.instance_id`).
    pub owner: String,
    /// Unix milliseconds, by the database's clock.
    pub expires_at_ms: i64,
}

/// What an instance may do about a session, given its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody owns it: take it.
    Acquire,
    /// It is ours and still valid: renew it to keep it.
    Renew,
    /// Its owner's lease expired (the owner stopped renewing: it died or lost the database):
    /// take it over.
    TakeOver { from: String },
    /// Another instance owns it and its lease runs: leave it for at least this long.
    Wait { owner: String, for_ms: i64 },
    /// It was ours but our lease expired: another instance may have taken it already, so we
    /// must acquire it again before acting for it (and stop if that fails).
    Lapsed,
}

/// What instance `me` may do about a session whose lease is `current`, at `now_ms` (the
/// database's clock). A lease is valid while `now_ms < expires_at_ms`.
pub fn decide(current: Option<&Lease>, me: &str, now_ms: i64) -> Decision {
    match current {
        None => Decision::Acquire,
        Some(lease) if lease.expires_at_ms > now_ms => {
            if lease.owner == me {
                Decision::Renew
            } else {
                Decision::Wait {
                    owner: lease.owner.clone(),
                    for_ms: lease.expires_at_ms - now_ms,
                }
            }
        }
        Some(lease) if lease.owner == me => Decision::Lapsed,
        Some(lease) => Decision::TakeOver {
            from: lease.owner.clone(),
        },
    }
}

/// The database's clock in Unix milliseconds, per dialect.
fn now_ms(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        Backend::Postgres => "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    ttl.as_millis().min(i64::MAX as u128) as i64
}

impl Store {
    /// Takes session `id` for this instance for `ttl`: when nobody owns it, when this instance
    /// does already, or when its owner's lease expired. Answers whether this instance owns it
    /// now; one statement, so of two instances racing only one wins.
    pub async fn acquire_lease(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms(self.backend());
        let sql = format!(
            "INSERT INTO session_owners (session_id, instance_id, lease_expires_at) VALUES ($1, $2, {now} + $3) \
             ON CONFLICT (session_id) DO UPDATE SET instance_id = excluded.instance_id, lease_expires_at = excluded.lease_expires_at \
             WHERE session_owners.instance_id = excluded.instance_id OR session_owners.lease_expires_at <= {now}"
        );
        let done = on_pool!(&self.pool, p => sqlx::query(&sql)
            .bind(id)
            .bind(&self.instance)
            .bind(ttl_ms(ttl))
            .execute(p)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Extends every lease of this instance that is still valid by `ttl` from now; answers how
    /// many. A lease that expired meanwhile is not renewed ([`Decision::Lapsed`]).
    pub async fn renew_leases(&self, ttl: Duration) -> Result<u64, StoreError> {
        let now = now_ms(self.backend());
        let sql = format!(
            "UPDATE session_owners SET lease_expires_at = {now} + $2 WHERE instance_id = $1 AND lease_expires_at > {now}"
        );
        Ok(on_pool!(&self.pool, p => sqlx::query(&sql)
            .bind(&self.instance)
            .bind(ttl_ms(ttl))
            .execute(p)
            .await?
            .rows_affected()))
    }

    /// The sessions this instance holds a valid lease on.
    pub async fn owned_sessions(&self) -> Result<Vec<String>, StoreError> {
        let now = now_ms(self.backend());
        let sql = format!(
            "SELECT session_id FROM session_owners WHERE instance_id = $1 AND lease_expires_at > {now}"
        );
        on_pool!(&self.pool, p => {
            let ids: Vec<String> = sqlx::query_scalar(&sql)
                .bind(&self.instance)
                .fetch_all(p)
                .await?;
            Ok(ids)
        })
    }

    /// Gives session `id` up (it ended); answers whether this instance held it.
    pub async fn release_lease(&self, id: &str) -> Result<bool, StoreError> {
        let done = on_pool!(&self.pool, p => sqlx::query(
            "DELETE FROM session_owners WHERE session_id = $1 AND instance_id = $2",
        )
        .bind(id)
        .bind(&self.instance)
        .execute(p)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Session `id`'s lease, if any, and the database's clock now (for [`decide`]).
    pub async fn lease(&self, id: &str) -> Result<(Option<Lease>, i64), StoreError> {
        let now = now_ms(self.backend());
        let sql = format!(
            "SELECT s.session_id, s.instance_id, s.lease_expires_at, n.now FROM (SELECT {now} AS now) n \
             LEFT JOIN session_owners s ON s.session_id = $1"
        );
        let row: (Option<String>, Option<String>, Option<i64>, i64) =
            on_pool!(&self.pool, p => sqlx::query_as(&sql).bind(id).fetch_one(p).await?);
        let lease = match row {
            (Some(session_id), Some(owner), Some(expires_at_ms), _) => Some(Lease {
                session_id,
                owner,
                expires_at_ms,
            }),
            _ => None,
        };
        Ok((lease, row.3))
    }

    /// Leases whose owner stopped renewing them, oldest expiry first: the sessions another
    /// instance may take over.
    pub async fn expired_leases(&self) -> Result<Vec<Lease>, StoreError> {
        let now = now_ms(self.backend());
        let sql = format!(
            "SELECT session_id, instance_id, lease_expires_at FROM session_owners \
             WHERE lease_expires_at <= {now} ORDER BY lease_expires_at, session_id"
        );
        let rows: Vec<(String, String, i64)> =
            on_pool!(&self.pool, p => sqlx::query_as(&sql).fetch_all(p).await?);
        Ok(rows
            .into_iter()
            .map(|(session_id, owner, expires_at_ms)| Lease {
                session_id,
                owner,
                expires_at_ms,
            })
            .collect())
    }
}

impl Store {
    /// Records where this instance is reached (its advertised base URL), replacing what an
    /// earlier start of it wrote.
    pub async fn register_instance(&self, url: &str, at: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO instances (instance_id, advertise_url, started_at) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id) DO UPDATE SET advertise_url = excluded.advertise_url, started_at = excluded.started_at",
        )
        .bind(&self.instance)
        .bind(url)
        .bind(at)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    /// The advertised base URL of instance `id`, if it ever started on this database.
    pub async fn instance_url(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT advertise_url FROM instances WHERE instance_id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await?))
    }

    /// Session `id`'s row says this instance runs it again (a takeover): `open`, no end.
    pub async fn claim_session(&self, id: &str) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query(
            "UPDATE sessions SET state = 'open', instance_id = $2, ended_at = NULL, end_reason = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(&self.instance)
        .execute(p)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Session `id`'s plugin state (`{pluginId: state}`) as of its last committed message, if
    /// any was kept.
    pub async fn plugin_state(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<Option<String>> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT plugin_state FROM sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await?);
        Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The index the next message of session `id` takes: one past its last stored one.
    pub async fn next_message_index(&self, id: &str) -> Result<u64, StoreError> {
        let last: Option<i64> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT MAX(message_index) FROM messages WHERE session_id = $1",
        )
        .bind(id)
        .fetch_one(p)
        .await?);
        Ok(last.map_or(0, |n| u64::try_from(n).unwrap_or(0) + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str, expires_at_ms: i64) -> Lease {
        Lease {
            session_id: "s".into(),
            owner: owner.into(),
            expires_at_ms,
        }
    }

    #[test]
    fn a_free_session_is_acquired_and_an_own_valid_lease_renewed() {
        assert_eq!(decide(None, "a", 1_000), Decision::Acquire);
        assert_eq!(
            decide(Some(&lease("a", 1_001)), "a", 1_000),
            Decision::Renew
        );
    }

    #[test]
    fn another_owners_valid_lease_is_waited_for_and_an_expired_one_taken_over() {
        assert_eq!(
            decide(Some(&lease("b", 1_500)), "a", 1_000),
            Decision::Wait {
                owner: "b".into(),
                for_ms: 500
            }
        );
        // Expiry is exclusive: at the very millisecond the lease ends, it is free to take.
        for now in [1_500, 9_999] {
            assert_eq!(
                decide(Some(&lease("b", 1_500)), "a", now),
                Decision::TakeOver { from: "b".into() }
            );
        }
    }

    #[test]
    fn an_own_lease_that_expired_must_be_acquired_again() {
        assert_eq!(
            decide(Some(&lease("a", 1_000)), "a", 1_000),
            Decision::Lapsed
        );
    }
}

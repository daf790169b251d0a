//! Rows of the outbound webhooks (`webhook/`): the webhooks themselves and their deliveries.
//!
//! Owns the SQL of both tables (`0009_webhooks.sql`) on either backend. A webhook's signing
//! secret is sealed with the store's key on its way in and opened on its way out, so it is
//! never kept in clear. Does not own what a state means, when to retry, or which events go
//! where (`webhook`): states are kept as their text.

use serde_json::Value;

use super::{Columns, Store, StoreError};

/// A webhook as the store keeps it (its secret in clear here: sealed only in the row).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// The event patterns.
    pub events: Vec<String>,
    pub secret: String,
    pub description: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    /// The JSON envelope sent, exactly as signed.
    pub body: String,
    /// `pending`, `retrying`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    /// Why the last attempt failed (never a secret: a status line or a network error).
    pub last_error: Option<String>,
    pub latency_ms: Option<i64>,
    /// Unix milliseconds of the next attempt, while one is due.
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const DELIVERY_COLUMNS: &str = "id, webhook_id, event, body, state, attempts, last_status, last_error, latency_ms, next_attempt_at, created_at, updated_at";

fn webhook_row(r: &impl Columns) -> WebhookRow {
    WebhookRow {
        id: r.text("id"),
        url: r.text("url"),
        events: serde_json::from_str::<Value>(&r.text("events"))
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        secret: r.text("secret"),
        description: r.maybe_text("description"),
        created_at: r.int("created_at"),
    }
}

fn delivery_row(r: &impl Columns) -> DeliveryRow {
    DeliveryRow {
        id: r.text("id"),
        webhook_id: r.text("webhook_id"),
        event: r.text("event"),
        body: r.text("body"),
        state: r.text("state"),
        attempts: r.int("attempts"),
        last_status: r.maybe_int("last_status"),
        last_error: r.maybe_text("last_error"),
        latency_ms: r.maybe_int("latency_ms"),
        next_attempt_at: r.maybe_int("next_attempt_at"),
        created_at: r.int("created_at"),
        updated_at: r.int("updated_at"),
    }
}

impl Store {
    /// Every webhook, oldest first, its secret opened.
    pub async fn webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let rows: Vec<WebhookRow> = on_pool!(&self.pool, p => {
            let rows = sqlx::query("SELECT id, url, events, secret, description, created_at FROM webhooks ORDER BY created_at, id")
                .fetch_all(p)
                .await?;
            rows.iter().map(webhook_row).collect()
        });
        rows.into_iter()
            .map(|mut row| {
                if let Some(secrets) = &self.secrets {
                    row.secret = secrets.decrypt(&row.secret)?;
                }
                Ok(row)
            })
            .collect()
    }

    /// Saves a new webhook, its secret sealed (when the store has a key).
    pub async fn save_webhook(&self, hook: &WebhookRow) -> Result<(), StoreError> {
        let events = serde_json::to_string(&hook.events).unwrap_or_else(|_| "[]".into());
        let secret = match &self.secrets {
            Some(secrets) => secrets.encrypt(&hook.secret),
            None => hook.secret.clone(),
        };
        on_pool!(&self.pool, p => sqlx::query("INSERT INTO webhooks (id, url, events, secret, description, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&hook.id)
            .bind(&hook.url)
            .bind(&events)
            .bind(&secret)
            .bind(&hook.description)
            .bind(hook.created_at)
            .execute(p)
            .await
            .map(drop))?;
        Ok(())
    }

    /// Deletes a webhook and its delivery history; whether it existed.
    pub async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let removed = on_pool!(&self.pool, p => sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(|done| done.rows_affected()))?;
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(drop))?;
        Ok(removed > 0)
    }

    /// Records a delivery as it is, or as it now is (the same id replaces its row).
    pub async fn save_delivery(&self, d: &DeliveryRow) -> Result<(), StoreError> {
        on_pool!(&self.pool, p => sqlx::query(&format!("INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}, instance_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, last_status = excluded.last_status, last_error = excluded.last_error, latency_ms = excluded.latency_ms, next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at"))
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(&d.event)
            .bind(&d.body)
            .bind(&d.state)
            .bind(d.attempts)
            .bind(d.last_status)
            .bind(&d.last_error)
            .bind(d.latency_ms)
            .bind(d.next_attempt_at)
            .bind(d.created_at)
            .bind(d.updated_at)
            .bind(&self.instance)
            .execute(p)
            .await
            .map(drop))?;
        Ok(())
    }

    /// A webhook's deliveries, newest first, at most `limit`.
    pub async fn deliveries(
        &self,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"))
                .bind(webhook_id)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(delivery_row).collect())
        })
    }

    /// This instance's deliveries not finished yet (`pending` or `retrying`), oldest first:
    /// taken up again at start. Another instance's are its own to finish, even on a shared
    /// database: taking them too would send them twice.
    pub async fn unfinished_deliveries(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE instance_id = $1 AND state IN ('pending', 'retrying') ORDER BY created_at, id"))
                .bind(&self.instance)
                .fetch_all(p)
                .await?;
            Ok(rows.iter().map(delivery_row).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str) -> WebhookRow {
        WebhookRow {
            id: id.into(),
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["plugin.*".into(), "custom.thing".into()],
            secret: "s3cret-value".into(),
            description: Some("test".into()),
            created_at: 1,
        }
    }

    fn delivery(id: &str, at: i64, state: &str) -> DeliveryRow {
        DeliveryRow {
            id: id.into(),
            webhook_id: "wh1".into(),
            event: "custom.thing".into(),
            body: "{}".into(),
            state: state.into(),
            attempts: 0,
            last_status: None,
            last_error: None,
            latency_ms: None,
            next_attempt_at: Some(at),
            created_at: at,
            updated_at: at,
        }
    }

    #[actix_web::test]
    async fn webhooks_keep_their_secret_sealed_and_deliveries_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = super::super::secrets::Secrets::load(None, dir.path()).unwrap();
        let store = Store::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap()
            .with_secrets(secrets);
        store.save_webhook(&hook("wh1")).await.unwrap();
        let raw: String = sqlx::query_scalar("SELECT secret FROM webhooks WHERE id = 'wh1'")
            .fetch_one(store.pool().sqlite().unwrap())
            .await
            .unwrap();
        assert!(raw.starts_with("enc:v1:"), "{raw}");
        assert_eq!(store.webhooks().await.unwrap(), vec![hook("wh1")]);

        store
            .save_delivery(&delivery("d1", 10, "pending"))
            .await
            .unwrap();
        store
            .save_delivery(&delivery("d2", 20, "pending"))
            .await
            .unwrap();
        let mut done = delivery("d1", 10, "delivered");
        done.attempts = 2;
        done.last_status = Some(200);
        store.save_delivery(&done).await.unwrap();
        let newest_first = store.deliveries("wh1", 10).await.unwrap();
        assert_eq!(
            newest_first
                .iter()
                .map(|d| d.id.as_str())
                .collect::<Vec<_>>(),
            ["d2", "d1"]
        );
        assert_eq!(newest_first[1], done);
        assert_eq!(store.deliveries("wh1", 1).await.unwrap().len(), 1);
        let unfinished = store.unfinished_deliveries().await.unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].id, "d2");

        assert!(store.delete_webhook("wh1").await.unwrap());
        assert!(!store.delete_webhook("wh1").await.unwrap());
        assert!(store.webhooks().await.unwrap().is_empty());
        assert!(store.deliveries("wh1", 10).await.unwrap().is_empty());
    }
}

//! Outbound webhooks: bus events forwarded to HTTP receivers, signed, retried, recorded.
//!
//! Owns the webhooks (URL, event patterns in the broker's own syntax, a signing secret shown
//! once), their validation, the table the dispatcher reads, and the service the API calls
//! ([`Webhooks`]: create, list, get, delete, a delivery's history, a test delivery). Sending,
//! retrying and resuming after a restart belong to the one [`dispatcher::Dispatcher`] actor;
//! when to retry or give up is the pure [`policy`]; signatures and secrets are [`sign`]. Rows
//! are kept by `store::webhooks` (the secret sealed with the store's key). Does not own event
//! matching (`broker::Pattern`, reused as it is) nor the HTTP client (`connector`).
//!
//! In a cluster (`broker.nats_url`) each instance delivers only the events it published, and
//! resumes only the deliveries it made (their rows carry its `server.instance_id`), so an
//! event reaches a receiver once; the webhook table is read from the database at start and
//! changed by this instance's API (another instance's changes are seen after its restart).

pub mod dispatcher;
pub mod policy;
pub mod sign;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::broker::{BrokerHandle, Pattern};
use crate::store::webhooks::{DeliveryRow, WebhookRow};
use crate::store::{Store, StoreError};
pub use policy::{DeliveryState, RetryPolicy};

/// The most patterns one webhook may have, and the longest description and URL.
const MAX_PATTERNS: usize = 64;
const MAX_DESCRIPTION: usize = 500;
const MAX_URL: usize = 2048;
/// A secret given by the caller: long enough to resist guessing, short enough for a header
/// line of configuration.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// The most deliveries one history answer lists.
pub const MAX_HISTORY: u32 = 500;

/// Settings of deliveries (`[webhooks]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub retry: RetryPolicy,
    /// One attempt's budget: connecting, sending, and the answer's head and body.
    pub timeout: Duration,
    /// Attempts in flight at once; more wait their turn.
    pub concurrency: usize,
    /// How long shutdown waits for attempts in flight (the others resume at the next start).
    pub drain_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Errors of the webhook API.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A field of the webhook to create is not valid.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("webhook '{0}' does not exist")]
    NotFound(String),
    /// Webhooks and their deliveries live in the store.
    #[error("webhooks need the store (store.enabled = false)")]
    StoreDisabled,
    /// The dispatcher is gone (the service is stopping).
    #[error("webhook deliveries are stopping")]
    Stopping,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Body of `POST /api/webhooks`. Every field is optional to serde so a missing one is named
/// in the answer (`field`) rather than reported as unreadable JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewWebhook {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A webhook, ready to match and sign.
#[derive(Debug)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    patterns: Vec<Pattern>,
    secret: String,
    pub description: Option<String>,
    pub created_at: i64,
}

impl Webhook {
    fn from_row(row: WebhookRow) -> Webhook {
        Webhook {
            // Stored patterns were checked when created; one that no longer parses matches
            // nothing rather than stopping the start.
            patterns: row
                .events
                .iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect(),
            id: row.id,
            url: row.url,
            events: row.events,
            secret: row.secret,
            description: row.description,
            created_at: row.created_at,
        }
    }

    /// Whether an event called `name` goes to this webhook.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }

    /// The secret deliveries are signed with.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn view(&self) -> WebhookView {
        WebhookView {
            id: self.id.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
            description: self.description.clone(),
            created_at: rfc3339_ms(self.created_at),
            has_secret: true,
        }
    }
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// Event patterns: exact names, prefixes like `plugin.*`, or `*`.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub created_at: String,
    /// Always true: every webhook signs with a secret, shown only when it was created.
    pub has_secret: bool,
}

/// One delivery as the API shows it (not its body).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// Also the `X-Switchyard-Delivery` header and the envelope's `id`.
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// The status of the last answer; null when none came (network error, timeout).
    pub last_status: Option<u16>,
    /// Why the last attempt failed; null once delivered.
    pub last_error: Option<String>,
    /// How long the last attempt took, in milliseconds.
    pub latency_ms: Option<u64>,
    /// When the next attempt is due (RFC 3339), while one is.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl DeliveryView {
    pub fn from_row(row: &DeliveryRow) -> DeliveryView {
        DeliveryView {
            id: row.id.clone(),
            webhook_id: row.webhook_id.clone(),
            event: row.event.clone(),
            state: DeliveryState::parse(&row.state),
            attempts: row.attempts.clamp(0, u32::MAX as i64) as u32,
            last_status: row.last_status.map(|s| s.clamp(0, u16::MAX as i64) as u16),
            last_error: row.last_error.clone(),
            latency_ms: row.latency_ms.map(|l| l.max(0) as u64),
            next_attempt_at: row.next_attempt_at.map(rfc3339_ms),
            created_at: rfc3339_ms(row.created_at),
            updated_at: rfc3339_ms(row.updated_at),
        }
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn rfc3339_ms(ms: i64) -> String {
    crate::util::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// Checks a webhook to create; the first problem, with the field it concerns.
pub fn validate(new: &NewWebhook) -> Result<(String, Vec<String>), WebhookError> {
    let url = new
        .url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid("url", "is required"))?;
    if url.len() > MAX_URL {
        return Err(invalid(
            "url",
            format!("is longer than {MAX_URL} characters"),
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid("url", format!("is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url", "must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // It would be shown in every answer; receivers check the signature instead.
        return Err(invalid(
            "url",
            "must not carry a user or password (receivers verify the signature instead)",
        ));
    }
    let events = new
        .events
        .as_ref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| invalid("events", "must list at least one event pattern"))?;
    if events.len() > MAX_PATTERNS {
        return Err(invalid(
            "events",
            format!("lists more than {MAX_PATTERNS} patterns"),
        ));
    }
    for (i, pattern) in events.iter().enumerate() {
        Pattern::parse(pattern).map_err(|e| invalid(format!("events[{i}]"), e.to_string()))?;
    }
    if let Some(secret) = &new.secret {
        if !SECRET_LEN.contains(&secret.len())
            || secret.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(invalid(
                "secret",
                format!(
                    "must be {}-{} characters without spaces (or absent: one is generated)",
                    SECRET_LEN.start(),
                    SECRET_LEN.end()
                ),
            ));
        }
    }
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(invalid(
            "description",
            format!("is longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok((url.to_string(), events.clone()))
}

/// The webhooks in force, shared by the API and the dispatcher, and the store behind them.
pub struct Registry {
    store: Store,
    hooks: RwLock<Vec<Arc<Webhook>>>,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Webhook>>> {
        self.hooks.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Webhook>> {
        self.read().iter().find(|h| h.id == id).cloned()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.read().iter().any(|h| h.id == id)
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The webhooks an event called `name` goes to.
    pub fn matching(&self, name: &str) -> Vec<Arc<Webhook>> {
        self.read()
            .iter()
            .filter(|h| h.matches(name))
            .cloned()
            .collect()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The service behind `/api/webhooks`: the registry and the dispatcher's address.
pub struct Webhooks {
    registry: Arc<Registry>,
    dispatcher: Addr<dispatcher::Dispatcher>,
    config: Config,
    /// Held by a create or delete from its store write to its memory update, and by
    /// [`Webhooks::sync`] from its store read to its memory update.
    changing: tokio::sync::Mutex<()>,
}

impl Webhooks {
    /// Loads the webhooks, starts the dispatcher on this thread's arbiter (it subscribes to the
    /// broker while any webhook exists) and resumes the deliveries left unfinished.
    pub async fn start(
        store: Store,
        broker: BrokerHandle,
        config: Config,
    ) -> Result<Webhooks, StoreError> {
        let hooks = store
            .webhooks()
            .await?
            .into_iter()
            .map(|row| Arc::new(Webhook::from_row(row)))
            .collect();
        let registry = Arc::new(Registry {
            store,
            hooks: RwLock::new(hooks),
        });
        let dispatcher = dispatcher::Dispatcher::new(registry.clone(), broker, config).start();
        Ok(Webhooks {
            registry,
            dispatcher,
            config,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// Takes the webhooks from the store again, as the other instances of a cluster left
    /// them (each instance delivers the events published on it to every webhook). Answers
    /// how many there are now.
    pub async fn sync(&self) -> Result<usize, WebhookError> {
        let _changing = self.changing.lock().await;
        let rows = self.registry.store.webhooks().await?;
        let count = rows.len();
        {
            let mut hooks = self
                .registry
                .hooks
                .write()
                .unwrap_or_else(|e| e.into_inner());
            // A webhook kept is kept as it was (no change over REST but delete).
            let old = std::mem::take(&mut *hooks);
            *hooks = rows
                .into_iter()
                .map(|row| {
                    old.iter()
                        .find(|h| h.id == row.id)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Webhook::from_row(row)))
                })
                .collect();
        }
        let _ = self.dispatcher.send(dispatcher::Refresh).await;
        Ok(count)
    }

    /// Creates a webhook; its view and its secret (the only time the secret is shown).
    pub async fn create(&self, new: NewWebhook) -> Result<(WebhookView, String), WebhookError> {
        let (url, events) = validate(&new)?;
        let secret = new.secret.clone().unwrap_or_else(sign::generate_secret);
        let _changing = self.changing.lock().await;
        let row = WebhookRow {
            id: format!("wh_{}", &crate::util::random_id()[..20]),
            url,
            events,
            secret: secret.clone(),
            description: new.description.filter(|d| !d.is_empty()),
            created_at: now_ms(),
        };
        self.registry.store.save_webhook(&row).await?;
        let hook = Arc::new(Webhook::from_row(row));
        let view = hook.view();
        self.registry
            .hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(hook);
        // Awaited: once the answer is out, events published after it reach the webhook.
        let _ = self.dispatcher.send(dispatcher::Refresh).await;
        Ok((view, secret))
    }

    /// Every webhook, oldest first.
    pub fn list(&self) -> Vec<WebhookView> {
        self.registry.read().iter().map(|h| h.view()).collect()
    }

    pub fn get(&self, id: &str) -> Result<WebhookView, WebhookError> {
        self.hook(id).map(|h| h.view())
    }

    fn hook(&self, id: &str) -> Result<Arc<Webhook>, WebhookError> {
        self.registry
            .get(id)
            .ok_or_else(|| WebhookError::NotFound(id.to_string()))
    }

    /// Deletes a webhook and its history; its deliveries still waiting are not sent.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let _changing = self.changing.lock().await;
        self.hook(id)?;
        // The store first: a delete it refuses leaves the webhook as it was, here and after
        // a restart, instead of silent until then.
        self.registry.store.delete_webhook(id).await?;
        self.registry
            .hooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|h| h.id != id);
        let _ = self.dispatcher.send(dispatcher::Refresh).await;
        Ok(())
    }

    /// A webhook's deliveries, newest first.
    pub async fn deliveries(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryView>, WebhookError> {
        self.hook(id)?;
        let rows = self
            .registry
            .store
            .deliveries(id, limit.clamp(1, MAX_HISTORY))
            .await?;
        Ok(rows.iter().map(DeliveryView::from_row).collect())
    }

    /// Sends a `webhook.test` event to this one webhook; the delivery after its first attempt
    /// (retried afterwards like any other when it failed).
    pub async fn test(&self, id: &str) -> Result<DeliveryView, WebhookError> {
        let hook = self.hook(id)?;
        let reply = self
            .dispatcher
            .send(dispatcher::SendTest { hook })
            .await
            .map_err(|_| WebhookError::Stopping)?;
        // The attempt has its own timeout; this one only guards against a lost reply.
        let row = tokio::time::timeout(self.config.timeout + Duration::from_secs(5), reply)
            .await
            .map_err(|_| WebhookError::Stopping)?
            .map_err(|_| WebhookError::Stopping)?;
        Ok(DeliveryView::from_row(&row))
    }

    /// Shutdown: stops taking events and waits (at most `drain_timeout`) for attempts in
    /// flight; deliveries still waiting stay `pending`/`retrying` for the next start.
    pub async fn stop(&self) {
        let _ = self.dispatcher.send(dispatcher::Drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str, events: &[&str]) -> NewWebhook {
        NewWebhook {
            url: Some(url.into()),
            events: Some(events.iter().map(|e| e.to_string()).collect()),
            ..NewWebhook::default()
        }
    }

    fn field(result: Result<(String, Vec<String>), WebhookError>) -> String {
        match result {
            Err(WebhookError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_webhook_needs_an_http_url_with_a_host_and_a_valid_pattern() {
        assert!(validate(&new("https://example.com/hook", &["plugin.*"])).is_ok());
        assert!(validate(&new("http://127.0.0.1:8080/x", &["*", "custom.event"])).is_ok());
        assert_eq!(field(validate(&NewWebhook::default())), "url");
        assert_eq!(field(validate(&new("ftp://example.com", &["*"]))), "url");
        assert_eq!(field(validate(&new("not a url", &["*"]))), "url");
        assert_eq!(field(validate(&new("http://", &["*"]))), "url");
        assert_eq!(
            field(validate(&new("https://u:p@example.com", &["*"]))),
            "url"
        );
        assert_eq!(field(validate(&new("https://example.com", &[]))), "events");
        let mut no_events = new("https://example.com", &[]);
        no_events.events = None;
        assert_eq!(field(validate(&no_events)), "events");
        assert_eq!(
            field(validate(&new("https://example.com", &["plugin.*", "a*b"]))),
            "events[1]"
        );
        let mut short = new("https://example.com", &["*"]);
        short.secret = Some("short".into());
        assert_eq!(field(validate(&short)), "secret");
        let mut long = new("https://example.com", &["*"]);
        long.description = Some("x".repeat(MAX_DESCRIPTION + 1));
        assert_eq!(field(validate(&long)), "description");
    }

    #[test]
    fn patterns_match_as_the_event_stream_does() {
        let hook = Webhook::from_row(WebhookRow {
            id: "wh".into(),
            url: "http://h".into(),
            events: vec!["plugin.*".into(), "custom.thing".into()],
            secret: "s".into(),
            description: None,
            created_at: 0,
        });
        assert!(hook.matches("plugin.loaded"));
        assert!(hook.matches("custom.thing"));
        assert!(!hook.matches("custom.thing2"));
        assert!(!hook.matches("pluginx.loaded"));
        assert!(!hook.matches("session.opened"));
    }
}

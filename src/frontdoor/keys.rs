//! Virtual API keys: who may call the front doors, which models, how often, how many tokens.
//!
//! Owns making a key (`sk-sy-` and 32 random base64url characters, shown once), keeping only
//! its SHA-256 digest, recognising a presented key by its digest, and the pure accounting: a
//! sliding one-minute window of requests per key ([`Window`]) and a token budget spent by
//! each answer's usage. Keys live in memory and, with the store on, in its `api_keys` table.
//! Does not own where a key comes from in a request (`api::frontdoor`) nor routing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::store::{ApiKeyRow, Store};

/// What every key starts with (so secret scanners and people can tell what it is).
pub const KEY_PREFIX: &str = "sk-sy-";

/// The window of a per-minute rate.
const MINUTE: Duration = Duration::from_secs(60);

/// Why a key was refused; `api::error` maps each to a status and code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a valid API key is required (Authorization: Bearer sk-… or x-api-key)")]
    Missing,
    #[error("the API key is not valid")]
    Invalid,
    #[error("this API key may not use model '{0}'")]
    ModelNotAllowed(String),
    #[error("this API key has reached its limit of {limit} requests per minute; retry in {retry_after_ms} ms")]
    RateLimited { limit: u32, retry_after_ms: u64 },
    #[error("this API key has spent its token budget ({used} of {budget} tokens)")]
    BudgetExhausted { used: u64, budget: u64 },
    #[error("API key '{0}' does not exist")]
    NotFound(String),
    #[error("the key is not valid ({} problems)", .0.len())]
    InvalidBody(Vec<String>),
    #[error("the API keys could not be stored: {0}")]
    Store(String),
}

/// `POST /api/keys` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub token_budget: Option<u64>,
}

impl NewKey {
    /// Every problem with the body.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() || self.name.len() > 128 {
            out.push("name: must be 1-128 characters".to_string());
        }
        if self.requests_per_minute == Some(0) {
            out.push("requestsPerMinute: must be at least 1 (leave it out for no limit)".into());
        }
        if self.token_budget == Some(0) {
            out.push("tokenBudget: must be at least 1 (leave it out for no budget)".into());
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.is_empty() {
                out.push(format!("models[{i}]: must not be empty"));
            }
        }
        out
    }
}

/// A key as the admin API shows it: never its text or digest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    pub models: Vec<String>,
    pub requests_per_minute: Option<u32>,
    pub token_budget: Option<u64>,
    pub tokens_used: u64,
    pub created_at: String,
}

fn view(row: &ApiKeyRow) -> KeyView {
    KeyView {
        id: row.id.clone(),
        name: row.name.clone(),
        prefix: row.prefix.clone(),
        models: row.models.clone(),
        requests_per_minute: row.requests_per_minute,
        token_budget: row.token_budget,
        tokens_used: row.tokens_used,
        created_at: row.created_at.clone(),
    }
}

/// SHA-256 of a key's text, lowercase hex: what is kept and looked up. Keys are random and
/// long, so a fast digest is enough (no password stretching is needed).
pub fn digest(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key's text: the prefix and 24 random bytes in base64url.
pub fn generate() -> Result<String, KeyError> {
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Store("no randomness available".into()))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The requests per minute one of `instances` live instances admits for a key whose limit
/// is `limit` across the cluster: an even share, rounded down so the instances together never
/// admit more than the limit, but at least 1 so a small limit still lets a key through
/// (then the cluster admits at most one per instance).
pub fn rate_share(limit: u32, instances: u32) -> u32 {
    (limit / instances.max(1)).max(1).min(limit.max(1))
}

/// A sliding one-minute window of admitted requests.
#[derive(Debug, Default, Clone)]
pub struct Window {
    admitted: VecDeque<Instant>,
}

impl Window {
    /// Admits a request at `now` when fewer than `limit` were admitted in the minute before;
    /// otherwise says how long until one leaves the window.
    pub fn admit(&mut self, limit: u32, now: Instant) -> Result<(), Duration> {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= limit as usize {
            let oldest = self.admitted.front().copied().unwrap_or(now);
            return Err(MINUTE.saturating_sub(now.saturating_duration_since(oldest)));
        }
        self.admitted.push_back(now);
        Ok(())
    }
}

/// Whether a key with `budget` that spent `used` may make another request.
pub fn within_budget(used: u64, budget: Option<u64>) -> Result<(), KeyError> {
    match budget {
        Some(budget) if used >= budget => Err(KeyError::BudgetExhausted { used, budget }),
        _ => Ok(()),
    }
}

struct Entry {
    row: ApiKeyRow,
    window: Window,
}

/// Every key, by id and by digest.
pub struct KeyRing {
    entries: Mutex<HashMap<String, Entry>>,
    store: Option<Store>,
    /// Held by a create or delete from its store write to its memory update, and by
    /// [`KeyRing::sync`] from its store read to its memory update, so neither undoes the other.
    changing: tokio::sync::Mutex<()>,
    /// The live instances of the cluster (1 alone): each admits its share of a key's rate.
    instances: std::sync::atomic::AtomicU32,
}

impl KeyRing {
    /// The keys the store holds (none without a store).
    pub async fn load(store: Option<Store>) -> Result<KeyRing, KeyError> {
        let rows = match &store {
            Some(store) => store
                .api_keys()
                .await
                .map_err(|e| KeyError::Store(e.to_string()))?,
            None => Vec::new(),
        };
        let entries = rows
            .into_iter()
            .map(|row| {
                (
                    row.id.clone(),
                    Entry {
                        row,
                        window: Window::default(),
                    },
                )
            })
            .collect();
        Ok(KeyRing {
            entries: Mutex::new(entries),
            store,
            changing: tokio::sync::Mutex::new(()),
            instances: std::sync::atomic::AtomicU32::new(1),
        })
    }

    /// The live instances of the cluster, this one included (at least 1), as the cluster
    /// view last saw them: each admits [`rate_share`] of a key's requests per minute.
    pub fn set_instances(&self, live: u32) {
        self.instances
            .store(live.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes the keys from the store again, as the other instances of a cluster left them: a
    /// key revoked elsewhere stops working here, one made elsewhere works here. A key kept
    /// keeps its rate window; its tokens used are the store's count (every instance adds to
    /// it). Answers how many keys there are now; without a store, nothing changes.
    pub async fn sync(&self) -> Result<usize, KeyError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let _changing = self.changing.lock().await;
        let rows = store
            .api_keys()
            .await
            .map_err(|e| KeyError::Store(e.to_string()))?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut old = std::mem::take(&mut *entries);
        for row in rows {
            let window = old.remove(&row.id).map(|e| e.window).unwrap_or_default();
            entries.insert(row.id.clone(), Entry { row, window });
        }
        Ok(entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<KeyView> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<KeyView> = entries.values().map(|e| view(&e.row)).collect();
        out.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        out
    }

    pub fn get(&self, id: &str) -> Option<KeyView> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(id).map(|e| view(&e.row))
    }

    /// Makes a key; answers with its view and its text (shown this once).
    pub async fn create(&self, body: NewKey) -> Result<(KeyView, String), KeyError> {
        let problems = body.problems();
        if !problems.is_empty() {
            return Err(KeyError::InvalidBody(problems));
        }
        let text = generate()?;
        let _changing = self.changing.lock().await;
        let row = ApiKeyRow {
            id: format!("key_{}", crate::util::random_id()),
            name: body.name,
            prefix: text[..KEY_PREFIX.len() + 4].to_string(),
            key_hash: digest(&text),
            models: body.models,
            requests_per_minute: body.requests_per_minute,
            token_budget: body.token_budget,
            tokens_used: 0,
            created_at: crate::util::rfc3339(SystemTime::now()),
        };
        if let Some(store) = &self.store {
            store
                .save_api_key(&row)
                .await
                .map_err(|e| KeyError::Store(e.to_string()))?;
        }
        let shown = view(&row);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                row.id.clone(),
                Entry {
                    row,
                    window: Window::default(),
                },
            );
        Ok((shown, text))
    }

    pub async fn delete(&self, id: &str) -> Result<(), KeyError> {
        let _changing = self.changing.lock().await;
        if self.get(id).is_none() {
            return Err(KeyError::NotFound(id.to_string()));
        }
        if let Some(store) = &self.store {
            store
                .delete_api_key(id)
                .await
                .map_err(|e| KeyError::Store(e.to_string()))?;
        }
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    /// The id of the key whose text is `presented`.
    pub fn verify(&self, presented: &str) -> Result<String, KeyError> {
        let hash = digest(presented);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .values()
            .find(|e| e.row.key_hash == hash)
            .map(|e| e.row.id.clone())
            .ok_or(KeyError::Invalid)
    }

    /// Admits one request of key `id` for the route `model`: allowed models, then the budget,
    /// then the rate (so a refused request does not count against the rate).
    pub fn admit(&self, id: &str, model: &str, now: Instant) -> Result<(), KeyError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(id).ok_or(KeyError::Invalid)?;
        if !entry.row.models.is_empty() && !entry.row.models.iter().any(|m| m == model) {
            return Err(KeyError::ModelNotAllowed(model.to_string()));
        }
        within_budget(entry.row.tokens_used, entry.row.token_budget)?;
        if let Some(limit) = entry.row.requests_per_minute {
            let live = self.instances.load(std::sync::atomic::Ordering::Relaxed);
            entry
                .window
                .admit(rate_share(limit, live), now)
                .map_err(|wait| KeyError::RateLimited {
                    limit,
                    retry_after_ms: wait.as_millis() as u64,
                })?;
        }
        Ok(())
    }

    /// Charges an answer's tokens to key `id`'s budget.
    pub async fn charge(&self, id: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let known = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .get_mut(id)
                .map(|e| e.row.tokens_used = e.row.tokens_used.saturating_add(tokens))
                .is_some()
        };
        if let (true, Some(store)) = (known, &self.store) {
            if let Err(error) = store.add_api_key_tokens(id, tokens).await {
                tracing::warn!(key = %id, %error, "A key's token count could not be stored.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_shared_evenly_by_the_live_instances_never_above_the_limit() {
        assert_eq!(rate_share(60, 1), 60);
        assert_eq!(rate_share(60, 0), 60);
        assert_eq!(rate_share(60, 3), 20);
        assert_eq!(rate_share(10, 3), 3);
        assert_eq!(rate_share(2, 3), 1);
        assert_eq!(rate_share(1, 1), 1);
        for limit in 1..200u32 {
            for n in 1..8u32 {
                let share = rate_share(limit, n);
                assert!(share >= 1);
                assert!(share * n <= limit.max(n), "{limit} {n}");
            }
        }
    }
    use proptest::prelude::*;

    #[test]
    fn a_key_is_recognised_by_its_digest_only() {
        let text = generate().unwrap();
        assert!(text.starts_with(KEY_PREFIX) && text.len() == KEY_PREFIX.len() + 32);
        assert_ne!(generate().unwrap(), text);
        let d = digest(&text);
        assert_eq!(d.len(), 64);
        assert!(!d.contains(&text[KEY_PREFIX.len()..]));
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[actix_web::test]
    async fn keys_admit_their_models_within_budget_and_rate() {
        let ring = KeyRing::load(None).await.unwrap();
        let (shown, text) = ring
            .create(NewKey {
                name: "ci".into(),
                models: vec!["a".into()],
                requests_per_minute: Some(2),
                token_budget: Some(10),
            })
            .await
            .unwrap();
        assert!(text.starts_with(&shown.prefix));
        let id = ring.verify(&text).unwrap();
        assert_eq!(ring.verify("sk-sy-nope"), Err(KeyError::Invalid));
        let t0 = Instant::now();
        assert!(matches!(
            ring.admit(&id, "b", t0),
            Err(KeyError::ModelNotAllowed(_))
        ));
        ring.admit(&id, "a", t0).unwrap();
        ring.admit(&id, "a", t0).unwrap();
        assert!(matches!(
            ring.admit(&id, "a", t0),
            Err(KeyError::RateLimited { limit: 2, .. })
        ));
        ring.admit(&id, "a", t0 + MINUTE).unwrap();
        ring.charge(&id, 10).await;
        assert!(matches!(
            ring.admit(&id, "a", t0 + MINUTE * 3),
            Err(KeyError::BudgetExhausted {
                used: 10,
                budget: 10
            })
        ));
        let bad = ring
            .create(NewKey {
                name: " ".into(),
                models: vec![String::new()],
                requests_per_minute: Some(0),
                token_budget: Some(0),
            })
            .await;
        assert!(matches!(bad, Err(KeyError::InvalidBody(p)) if p.len() == 4));
        ring.delete(&id).await.unwrap();
        assert_eq!(ring.verify(&text), Err(KeyError::Invalid));
    }

    proptest! {
        /// Whatever the arrival times, no 60-second span holds more than `limit` admitted
        /// requests, and a refusal says to wait no longer than a minute.
        #[test]
        fn never_more_than_the_limit_in_any_minute(
            limit in 1u32..6,
            gaps in proptest::collection::vec(0u64..30_000, 1..60)
        ) {
            let start = Instant::now();
            let mut window = Window::default();
            let mut at = start;
            let mut admitted = Vec::new();
            for gap in gaps {
                at += Duration::from_millis(gap);
                match window.admit(limit, at) {
                    Ok(()) => admitted.push(at),
                    Err(wait) => prop_assert!(wait <= MINUTE && !wait.is_zero()),
                }
            }
            for (i, t) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().filter(|u| u.duration_since(*t) < MINUTE).count();
                prop_assert!(in_window <= limit as usize);
            }
        }
    }
}

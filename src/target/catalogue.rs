//! The targets the service knows: from the settings (read-only) and created over REST
//! (persisted in the store with credentials encrypted, when the store is on).
//!
//! Owns create/update/delete with every validation problem reported (a create without an `id`
//! gets a fresh one, as in Krawall; an update takes its id from the path), the read-only rule for
//! configured targets, the connection test (connect, health check, one message) and its stored
//! result. Does not own sessions or the wire protocol.

use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::{parse_targets, Target};
use crate::store::secrets::Secrets;
use crate::store::Store;

/// Why a target request failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target '{0}' does not exist")]
    NotFound(String),
    #[error("the target is not valid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Conflict(String),
    #[error("the target could not be saved: {0}")]
    Store(String),
}

/// Where a target comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `[[targets]]` or the targets file: read-only over REST.
    Config,
    Api,
}

struct Entry {
    /// Shared with the sessions opened on it (an update replaces it; they keep theirs).
    target: Arc<Target>,
    source: Source,
    last_test: Option<Value>,
}

/// Persistence of API targets: the store and the key for their credentials.
pub struct Persistence {
    pub store: Store,
    pub secrets: Secrets,
}

pub struct TargetRegistry {
    entries: RwLock<Vec<Entry>>,
    persistence: Option<Persistence>,
    /// Held by a change over REST from its store write to its memory update, and by a
    /// [`TargetRegistry::sync`] from its store read to its memory update, so neither can
    /// undo the other.
    changing: tokio::sync::Mutex<()>,
}

impl TargetRegistry {
    /// Configured targets, then the stored ones (a stored target whose id a configured one
    /// uses is ignored, with a warning).
    pub async fn load(
        configured: Vec<Target>,
        persistence: Option<Persistence>,
    ) -> Result<TargetRegistry, String> {
        let mut entries: Vec<Entry> = configured
            .into_iter()
            .map(|target| Entry {
                target: Arc::new(target),
                source: Source::Config,
                last_test: None,
            })
            .collect();
        if let Some(p) = &persistence {
            let stored = p.store.targets().await.map_err(|e| e.to_string())?;
            for row in stored {
                let target: Target = serde_json::from_value(row.body)
                    .map_err(|e| format!("a stored target is unreadable: {e}"))?;
                if entries.iter().any(|e| e.target.id == target.id) {
                    tracing::warn!(target = %target.id, "A stored target has the id of a configured one; the configured one wins.");
                    continue;
                }
                // Opened by the store already (rows from before it sealed whole values too).
                entries.push(Entry {
                    target: Arc::new(target),
                    source: Source::Api,
                    last_test: row.last_test,
                });
            }
        }
        Ok(TargetRegistry {
            entries: RwLock::new(entries),
            persistence,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Target> {
        self.read()
            .iter()
            .find(|e| e.target.id == id)
            .map(|e| Target::clone(&e.target))
    }

    /// Target `id`, shared rather than copied (what a session keeps).
    pub fn shared(&self, id: &str) -> Option<Arc<Target>> {
        self.read()
            .iter()
            .find(|e| e.target.id == id)
            .map(|e| e.target.clone())
    }

    fn view(entry: &Entry) -> Value {
        let mut value = entry.target.masked();
        value["source"] = json!(if entry.source == Source::Config {
            "config"
        } else {
            "api"
        });
        if let Some(test) = &entry.last_test {
            value["lastTest"] = test.clone();
        }
        value
    }

    /// Logs a warning for each target that accepts any certificate.
    pub fn warn_insecure(&self) {
        self.read().iter().for_each(|e| e.target.warn_if_insecure());
    }

    /// Targets that accept any server certificate (`tls.insecureSkipVerify`).
    pub fn insecure(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|e| e.target.tls.insecure_skip_verify)
            .map(|e| e.target.id.clone())
            .collect()
    }

    /// Every target as responses show it (credentials masked, `source`, `lastTest`).
    pub fn views(&self) -> Vec<Value> {
        self.read().iter().map(Self::view).collect()
    }

    pub fn view_of(&self, id: &str) -> Option<Value> {
        self.read()
            .iter()
            .find(|e| e.target.id == id)
            .map(Self::view)
    }

    /// Reads `body` as a target, with `extra` problems found before (paths start `target`).
    /// What a view adds (`source`, `lastTest`) is dropped, so a target read with GET can be
    /// edited and sent back as it is.
    fn parse(mut body: Value, extra: Vec<String>) -> Result<Target, TargetError> {
        if let Some(object) = body.as_object_mut() {
            object.shift_remove("source");
            object.shift_remove("lastTest");
        }
        let parsed = parse_targets(&[("target".to_string(), body)]);
        let problems: Vec<String> = extra
            .into_iter()
            .chain(
                parsed
                    .as_ref()
                    .err()
                    .into_iter()
                    .flatten()
                    .map(|(path, m)| format!("{path}: {m}")),
            )
            .collect();
        match parsed {
            Ok(mut targets) if problems.is_empty() && !targets.is_empty() => {
                let target = targets.swap_remove(0);
                target.warn_if_insecure();
                Ok(target)
            }
            _ => Err(TargetError::Invalid(problems)),
        }
    }

    /// A fresh id no target has (as Krawall gives a target created without one).
    fn fresh_id(&self) -> String {
        loop {
            let id = crate::util::random_id();
            if self.get(&id).is_none() {
                return id;
            }
        }
    }

    async fn persist(&self, target: &Target) -> Result<(), TargetError> {
        if let Some(p) = &self.persistence {
            // The store seals the credentials (the whole authConfig, endpoint passwords,
            // credential headers and plugin-config keys) as it writes the row.
            let body = serde_json::to_value(target).unwrap_or(Value::Null);
            p.store
                .save_target(&target.id, &body, &crate::util::rfc3339(SystemTime::now()))
                .await
                .map_err(|e| TargetError::Store(e.to_string()))?;
        }
        Ok(())
    }

    /// Creates a target from `body`; without an `id` (or with `null`), it gets a fresh one.
    pub async fn create(&self, mut body: Value) -> Result<Value, TargetError> {
        if let Some(object) = body.as_object_mut() {
            if object.get("id").is_none_or(Value::is_null) {
                object.insert("id".into(), Value::String(self.fresh_id()));
            }
        }
        let target = Self::parse(body, Vec::new())?;
        let _changing = self.changing.lock().await;
        if self.get(&target.id).is_some() {
            return Err(TargetError::Conflict(format!(
                "a target '{}' already exists",
                target.id
            )));
        }
        self.persist(&target).await?;
        let entry = Entry {
            target: Arc::new(target),
            source: Source::Api,
            last_test: None,
        };
        let view = Self::view(&entry);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
        Ok(view)
    }

    fn editable(&self, id: &str) -> Result<(), TargetError> {
        match self
            .read()
            .iter()
            .find(|e| e.target.id == id)
            .map(|e| e.source)
        {
            None => Err(TargetError::NotFound(id.to_string())),
            Some(Source::Config) => Err(TargetError::Conflict(format!(
                "target '{id}' is declared in the settings and is read-only over REST"
            ))),
            Some(Source::Api) => Ok(()),
        }
    }

    /// Replaces target `id`. Credentials given as the mask keep their stored values, so a
    /// client can send back what it read.
    pub async fn update(&self, id: &str, mut body: Value) -> Result<Value, TargetError> {
        let _changing = self.changing.lock().await;
        self.editable(id)?;
        let current = self
            .get(id)
            .ok_or_else(|| TargetError::NotFound(id.to_string()))?;
        // The path names the target: a body without an id gets it, one with another id is
        // refused (among every other problem). Anything but an object is refused by `parse`.
        let mut extra = Vec::new();
        if let Some(object) = body.as_object_mut() {
            match object.get("id") {
                None | Some(Value::Null) => {
                    object.insert("id".into(), json!(id));
                }
                Some(Value::String(given)) if given != id => {
                    extra.push(format!(
                        "target.id: '{given}' does not match the path's '{id}'"
                    ));
                    object.insert("id".into(), json!(id));
                }
                _ => {}
            }
        }
        keep_masked_secrets(&mut body, &current.auth_config);
        // Masked credential headers and plugin-config keys keep their stored values too.
        let stored = serde_json::to_value(&current).unwrap_or(Value::Null);
        for pointer in ["/protocolConfig", "/plugins"] {
            if let (Some(sent), Some(kept)) = (body.pointer_mut(pointer), stored.pointer(pointer)) {
                super::restore_masks(sent, kept);
            }
        }
        // The endpoint as shown (password masked) keeps the stored password.
        if let Some(endpoint) = body.get_mut("endpoint") {
            if endpoint.as_str() == Some(super::mask_url_password(&current.endpoint).as_str())
                && endpoint.as_str() != Some(current.endpoint.as_str())
            {
                *endpoint = Value::String(current.endpoint.clone());
            }
        }
        let target = Self::parse(body, extra)?;
        self.persist(&target).await?;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .iter_mut()
            .find(|e| e.target.id == id)
            .ok_or_else(|| TargetError::NotFound(id.to_string()))?;
        entry.target = Arc::new(target);
        Ok(Self::view(entry))
    }

    pub async fn delete(&self, id: &str) -> Result<(), TargetError> {
        let _changing = self.changing.lock().await;
        self.editable(id)?;
        if let Some(p) = &self.persistence {
            p.store
                .delete_target(id)
                .await
                .map_err(|e| TargetError::Store(e.to_string()))?;
        }
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|e| e.target.id != id);
        Ok(())
    }

    /// Takes the targets created over REST from the store again, as another instance of a
    /// cluster left them (added, changed, deleted); configured ones stay as they are. The
    /// sessions open on a replaced or deleted target keep the one they opened with.
    /// Answers how many API targets there are now; without a store, nothing changes.
    pub async fn sync(&self) -> Result<usize, TargetError> {
        let Some(p) = &self.persistence else {
            return Ok(0);
        };
        let _changing = self.changing.lock().await;
        let rows = p
            .store
            .targets()
            .await
            .map_err(|e| TargetError::Store(e.to_string()))?;
        let mut stored = Vec::with_capacity(rows.len());
        for row in rows {
            match serde_json::from_value::<Target>(row.body) {
                Ok(target) => stored.push((target, row.last_test)),
                // One unreadable row must not take the others' changes away.
                Err(error) => tracing::warn!(%error, "A stored target is unreadable; skipped."),
            }
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let kept: Vec<Entry> = entries
            .drain(..)
            .filter(|e| e.source == Source::Config)
            .collect();
        *entries = kept;
        let mut count = 0;
        for (target, last_test) in stored {
            if entries.iter().any(|e| e.target.id == target.id) {
                continue;
            }
            entries.push(Entry {
                target: Arc::new(target),
                source: Source::Api,
                last_test,
            });
            count += 1;
        }
        Ok(count)
    }

    /// Connects, checks health and sends one message; the result is kept as `lastTest`.
    pub async fn test(&self, id: &str, message: &str) -> Result<Value, TargetError> {
        let target = self
            .get(id)
            .ok_or_else(|| TargetError::NotFound(id.to_string()))?;
        let started = Instant::now();
        let connector =
            crate::connector::connect(&target.connector_type, target.connector_config()).await;
        let result = match connector {
            Err(error) => failure(&error),
            Ok(connector) => {
                let health = connector.health_check().await;
                let sent = match connector.send_message(message, &Map::new()).await {
                    Ok(reply) => {
                        json!({ "ok": true, "content": reply.content, "responseTimeMs": reply.metadata.response_time_ms })
                    }
                    Err(error) => failure(&error),
                };
                connector.disconnect().await;
                json!({ "ok": sent["ok"] == true, "health": health, "message": sent })
            }
        };
        let mut result = result;
        result["testedAt"] = json!(crate::util::rfc3339(SystemTime::now()));
        result["durationMs"] = json!(started.elapsed().as_millis() as u64);
        let persisted = self
            .read()
            .iter()
            .any(|e| e.target.id == id && e.source == Source::Api);
        if let (Some(p), true) = (&self.persistence, persisted) {
            p.store
                .set_last_test(id, &result)
                .await
                .map_err(|e| TargetError::Store(e.to_string()))?;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.iter_mut().find(|e| e.target.id == id) {
            entry.last_test = Some(result.clone());
        }
        Ok(result)
    }
}

/// Replaces masked credential values in `body` with the current ones.
fn keep_masked_secrets(body: &mut Value, current: &Map<String, Value>) {
    let Some(auth) = body.get_mut("authConfig").and_then(Value::as_object_mut) else {
        return;
    };
    for (key, value) in auth.iter_mut() {
        if key == "headers" {
            if let (Some(headers), Some(old)) = (
                value.as_object_mut(),
                current.get("headers").and_then(Value::as_object),
            ) {
                for (name, v) in headers.iter_mut() {
                    if v == crate::util::MASK {
                        if let Some(previous) = old.get(name) {
                            *v = previous.clone();
                        }
                    }
                }
            }
        } else if value == crate::util::MASK {
            if let Some(previous) = current.get(key) {
                *value = previous.clone();
            }
        }
    }
}

/// A failed connection test: the error, the upstream status, and a TLS failure named as such.
fn failure(error: &crate::connector::ConnectorError) -> Value {
    let mut out = json!({ "ok": false, "error": error.to_string(), "status": error.status() });
    if let crate::connector::ConnectorError::Tls(tls) = error {
        out["code"] = json!("tls_error");
        out["reason"] = json!(tls.reason());
    }
    out
}

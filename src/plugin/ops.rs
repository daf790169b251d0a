//! What an operator (over REST) or a file change asks of a plugin: restart, disable, enable,
//! unload, load and reload.
//!
//! Owns checking that the request makes sense in the plugin's state, asking the plugins
//! supervisor to carry it out, remembering disabled plugins, refreshing a reloaded plugin's
//! manifest, and the `plugin.*` events of each action. A reload prepares the new version beside
//! the old one; a failure names the step that failed (typed, from the supervisor) and the old
//! version keeps serving. Does not own how a plugin starts (`lifecycle`).

use super::deps;
use super::host::{Entry, ManageError, PluginHost, PluginView, PLUGINS_PATH};
use super::source::{Discovered, Loader, Source};
use crate::broker::events::{self, Phase};
use crate::health::ActorState;
use crate::supervisor::child::{StartError, StartPhase};
use crate::supervisor::{
    AddChild, ChildError, DisableChild, EnableChild, ReloadChild, ReloadError, RemoveChild,
    RestartChild, Supervisor,
};
use actix::Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl PluginHost {
    /// Checks that `id` is under supervision and returns where it comes from.
    fn supervised(&self, id: &str) -> Result<Source, ManageError> {
        let entries = self.read();
        let entry = entries
            .iter()
            .find(|e| e.manifest.id == id)
            .ok_or_else(|| ManageError::NotFound(id.to_string()))?;
        match &entry.refused {
            Some(reason) => Err(ManageError::Conflict(format!(
                "plugin '{id}' was refused at start-up ({reason}); fix that and restart the service"
            ))),
            None => Ok(entry.source),
        }
    }

    /// The supervised unit an operator means by `id` (a connector plugin registered by
    /// another plugin's module means that plugin).
    fn unit(&self, id: &str) -> String {
        self.unit_of(id).unwrap_or_else(|| id.to_string())
    }

    fn view_of(&self, id: &str) -> Result<PluginView, ManageError> {
        self.get(id)
            .ok_or_else(|| ManageError::NotFound(id.to_string()))
    }

    fn sup(&self) -> Result<Addr<Supervisor>, ManageError> {
        self.supervisor()
            .ok_or_else(|| ManageError::Conflict("the plugins supervisor is not running".into()))
    }

    /// Refreshes a loaded plugin's manifest from its newest good instance.
    fn refresh_manifest(&self, id: &str) {
        let mut entries = self.write();
        if let Some(entry) = entries.iter_mut().find(|e| e.manifest.id == id) {
            if let Some(status) = &entry.status {
                if let Some(manifest) = status.manifest() {
                    entry.manifest = manifest;
                }
                if let Some(connectors) = status.connectors() {
                    entry.connectors = connectors.into_iter().map(Arc::new).collect();
                }
            }
        }
    }

    /// A supervised restart; answers once the plugin runs again.
    pub async fn restart(&self, id: &str) -> Result<PluginView, ManageError> {
        let id = self.unit(id);
        let id = id.as_str();
        self.supervised(id)?;
        if self.is_disabled(id) {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is disabled; enable it instead"
            )));
        }
        self.sup()?
            .send(RestartChild { id: id.to_string() })
            .await
            .map_err(|e| ManageError::StartFailed(e.to_string()))?
            .map_err(|e| ManageError::StartFailed(e.to_string()))?;
        self.refresh_manifest(id);
        self.view_of(id)
    }

    /// Stops the plugin and keeps it stopped, across service restarts too.
    pub async fn disable(&self, id: &str) -> Result<PluginView, ManageError> {
        let id = self.unit(id);
        let id = id.as_str();
        self.supervised(id)?;
        if self.is_disabled(id) {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is already disabled"
            )));
        }
        self.disabled.change(|set| set.insert(id.to_string()))?;
        self.sup()?
            .send(DisableChild { id: id.to_string() })
            .await
            .map_err(|e| ManageError::StartFailed(e.to_string()))?
            .map_err(ManageError::Conflict)?;
        self.broker().emit(&events::PluginDisabled {
            plugin: id.to_string(),
        });
        self.view_of(id)
    }

    /// Starts a disabled plugin (init and start); answers once it runs.
    pub async fn enable(&self, id: &str) -> Result<PluginView, ManageError> {
        let id = self.unit(id);
        let id = id.as_str();
        self.supervised(id)?;
        if !self.is_disabled(id) {
            let state = self.state_of(id).map(|s| s.as_str()).unwrap_or("unknown");
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is not disabled (it is {state})"
            )));
        }
        self.disabled.change(|set| set.remove(id))?;
        self.broker().emit(&events::PluginEnabled {
            plugin: id.to_string(),
        });
        let started = self.sup()?.send(EnableChild { id: id.to_string() }).await;
        self.refresh_manifest(id);
        started
            .map_err(|e| ManageError::StartFailed(e.to_string()))?
            .map_err(|e| ManageError::StartFailed(e.to_string()))?;
        self.view_of(id)
    }

    /// Unloads a loaded plugin: stops it and forgets it (its files stay).
    pub async fn unload(&self, id: &str) -> Result<(), ManageError> {
        let id = self.unit(id);
        let id = id.as_str();
        let source = self
            .read()
            .iter()
            .find(|e| e.manifest.id == id)
            .map(|e| e.source)
            .ok_or_else(|| ManageError::NotFound(id.to_string()))?;
        if source == Source::Native {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is native (compiled in) and cannot be unloaded; disable it instead"
            )));
        }
        if let Ok(sup) = self.sup() {
            // A plugin refused before boot has no child; that is fine.
            let _ = sup.send(RemoveChild { id: id.to_string() }).await;
        }
        self.health.remove(&format!("{PLUGINS_PATH}/{id}"));
        self.write().retain(|e| e.manifest.id != id);
        tracing::info!(plugin = id, "Plugin unloaded.");
        self.broker().emit(&events::PluginUnloaded {
            plugin: id.to_string(),
        });
        Ok(())
    }

    /// Loads a plugin from its files (the first loader that knows `key`: a directory name or
    /// a declared id) and starts it.
    pub async fn load(&self, key: &str) -> Result<PluginView, ManageError> {
        if self.get(key).is_some() {
            return Err(ManageError::Conflict(format!(
                "plugin '{key}' is already loaded"
            )));
        }
        // Finding the files may evaluate every module, and making the instance evaluates one:
        // blocking work, kept off the HTTP worker.
        let loaders = self.loaders.clone();
        let wanted = key.to_string();
        let (discovered, instance) = tokio::task::spawn_blocking(move || {
            let discovered = find_files(&loaders, &wanted)?;
            let instance = (discovered.factory)();
            Ok::<_, ManageError>((discovered, instance))
        })
        .await
        .map_err(|e| ManageError::Conflict(format!("loading '{key}' failed: {e}")))??;
        let entry = Entry::new(discovered, instance.as_ref(), true);
        let id = &entry.manifest.id.clone();
        {
            let entries = self.read();
            let mut claims: Vec<deps::Claim> = entries
                .iter()
                .filter(|e| e.refused.is_none())
                .map(Entry::claim)
                .collect();
            claims.push(entry.claim());
            if let Some((_, reason)) = deps::clashes(&claims).pop() {
                drop(entries);
                self.broker().emit(&events::PluginError {
                    plugin: id.clone(),
                    version: Some(entry.manifest.version.to_string()),
                    phase: Phase::Discover,
                    error: reason.clone(),
                });
                return Err(ManageError::Conflict(reason));
            }
        }
        let spec = self.spec(&entry);
        self.write().push(entry);
        let phase = if self.booted.load(Ordering::Acquire) {
            StartPhase::Restart
        } else {
            StartPhase::Boot
        };
        let disabled = self.is_disabled(id);
        let started = self
            .sup()?
            .send(AddChild {
                spec,
                phase,
                disabled,
            })
            .await;
        self.refresh_manifest(id);
        started
            .map_err(|e| ManageError::StartFailed(e.to_string()))?
            .map_err(|e| ManageError::StartFailed(e.to_string()))?;
        self.view_of(id)
    }

    /// Reloads a loaded plugin from its files: the new version is prepared beside the old one
    /// and swapped in only if it initialises; otherwise the old one keeps serving. Counted and
    /// timed for `/metrics` (an operator's reload and the watcher's alike).
    pub async fn reload(&self, id: &str) -> Result<(PluginView, String), ManageError> {
        let began = std::time::Instant::now();
        let result = self.reload_uncounted(id).await;
        // Only plugins that exist get a series: an id from a request is unbounded.
        if let Some(id) = self.unit_of(id) {
            self.metrics()
                .reloaded(&id, began.elapsed(), result.is_ok());
        }
        result
    }

    async fn reload_uncounted(&self, id: &str) -> Result<(PluginView, String), ManageError> {
        let id = self.unit(id);
        let id = id.as_str();
        if self.supervised(id)? == Source::Native {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is native (compiled in); restart it instead"
            )));
        }
        if self.is_disabled(id) {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is disabled; enable it first"
            )));
        }
        self.read_files_next(id);
        let declared = self.declared_now(id).await;
        // Its files now declare an id (its own or a connector plugin's) another plugin holds:
        // refused before anything is unloaded.
        if let Some(reason) = declared.as_ref().and_then(|d| d.clash.clone()) {
            return Err(ManageError::Conflict(format!(
                "{reason}; the version declaring '{id}' keeps serving"
            )));
        }
        if let Some(moved) = declared.filter(|d| d.id != id) {
            // Its files now declare another id: it leaves under the old one and comes back
            // under the new one.
            tracing::info!(plugin = %id, now = %moved.id, "The module now declares another id; moving it.");
            self.unload(id).await?;
            let view = self.load(&moved.key).await?;
            return Ok((view, String::new()));
        }
        let old_version = self
            .manifest(id)
            .map(|m| m.version.to_string())
            .unwrap_or_default();
        let began = std::time::Instant::now();
        let running = self.state_of(id) == Some(ActorState::Running);
        self.read_files_next(id);
        let outcome = if running {
            self.sup()?
                .send(ReloadChild { id: id.to_string() })
                .await
                .map_err(|e| ManageError::StartFailed(e.to_string()))?
                .map_err(|e| match e {
                    ReloadError::Rejected(error) | ReloadError::ActivationFailed(error) => {
                        reload_failed(error)
                    }
                    ReloadError::NotRunning(error) => ManageError::Conflict(error),
                })
        } else {
            // Not running (failed, parked): start it afresh from the new files.
            self.sup()?
                .send(RestartChild { id: id.to_string() })
                .await
                .map_err(|e| ManageError::StartFailed(e.to_string()))?
                .map_err(|error| match error {
                    ChildError::Start(error) => reload_failed(error),
                    other => ManageError::ReloadFailed {
                        step: "init".into(),
                        error: other.to_string(),
                    },
                })
        };
        if let Err(ManageError::ReloadFailed { step, error }) = &outcome {
            tracing::warn!(plugin = id, step = %step, %error, "Reload failed; the previous version keeps serving.");
            if running {
                // The rejected candidate already reported `plugin.error` with phase `reload`.
            } else {
                self.broker().emit(&events::PluginError {
                    plugin: id.to_string(),
                    version: None,
                    phase: Phase::Reload,
                    error: error.clone(),
                });
            }
        }
        outcome?;
        self.refresh_manifest(id);
        let new_version = self
            .manifest(id)
            .map(|m| m.version.to_string())
            .unwrap_or_default();
        let duration_ms = began.elapsed().as_millis() as u64;
        tracing::info!(plugin = id, old_version = %old_version, new_version = %new_version, duration_ms, "Plugin reloaded.");
        self.broker().emit(&events::PluginReloaded {
            plugin: id.to_string(),
            old_version: old_version.clone(),
            new_version,
            duration_ms,
        });
        Ok((self.view_of(id)?, old_version))
    }

    /// Tells a loaded plugin's loader that its next instance reads the files.
    fn read_files_next(&self, id: &str) {
        if let Some(status) = self
            .read()
            .iter()
            .find(|e| e.manifest.id == id)
            .and_then(|e| e.status.clone())
        {
            status.read_files_next();
        }
    }

    /// What a loaded plugin's files declare now (`None` for a plugin without files): its
    /// id, and whether its ids clash with another plugin's.
    async fn declared_now(&self, id: &str) -> Option<Declared> {
        let (key, factory, origin) = {
            let entries = self.read();
            let entry = entries.iter().find(|e| e.manifest.id == id)?;
            let status = entry.status.as_ref()?;
            (
                status.key().to_string(),
                entry.factory.clone(),
                status.origin(),
            )
        };
        // Evaluating the module is blocking work: off the HTTP worker.
        let (now, ids) = tokio::task::spawn_blocking(move || {
            let instance = factory();
            let now = instance.manifest().id;
            let mut ids = vec![now.clone()];
            ids.extend(
                instance
                    .connector_plugins()
                    .into_iter()
                    .map(|c| c.id)
                    .filter(|c| *c != now),
            );
            (now, ids)
        })
        .await
        .ok()?;
        let mut claims: Vec<deps::Claim> = self
            .read()
            .iter()
            .filter(|e| e.refused.is_none() && e.manifest.id != id)
            .map(Entry::claim)
            .collect();
        claims.push(deps::Claim {
            ids,
            origin,
            native: false,
        });
        let last = claims.len() - 1;
        let clash = deps::clashes(&claims)
            .into_iter()
            .find(|(i, _)| *i == last)
            .map(|(_, reason)| reason);
        Some(Declared {
            key,
            id: now,
            clash,
        })
    }

    /// What each loaded plugin with files is known by to its loader (a script plugin's
    /// directory): after a watcher lost events, each is checked again.
    pub fn source_keys(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter_map(|e| e.status.as_ref().map(|s| s.key().to_string()))
            .collect()
    }

    /// A loaded plugin's files changed (hot reload): reload, load or unload it. `key` is what
    /// its loader knows it by (a script plugin's directory).
    pub async fn source_changed(&self, key: &str) {
        let on_disk = self.loaders.iter().any(|l| l.exists(key));
        let known = self
            .read()
            .iter()
            .find(|e| e.status.as_ref().is_some_and(|s| s.key() == key))
            .map(|e| e.manifest.id.clone());
        let outcome = match (on_disk, known) {
            (true, Some(id)) => self.reload(&id).await.map(|_| ()),
            (true, None) => self.load(key).await.map(|_| ()),
            (false, Some(id)) => self.unload(&id).await,
            (false, None) => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::warn!(plugin = key, %error, "Applying a file change failed.");
        }
    }
}

/// What a loaded plugin's files declare now.
struct Declared {
    /// What its loader knows it by (a script plugin's directory).
    key: String,
    /// The id they declare.
    id: String,
    /// Why their ids cannot be taken (another plugin holds one).
    clash: Option<String>,
}

/// The files of plugin `id`, from the first loader that has them.
fn find_files(loaders: &[Arc<dyn Loader>], id: &str) -> Result<Discovered, ManageError> {
    let mut why = Vec::new();
    for loader in loaders {
        match loader.load(id) {
            Ok(found) => return Ok(found),
            Err(message) => why.push(message),
        }
    }
    let message = if why.is_empty() {
        format!("no plugin loader is configured, so '{id}' cannot be loaded from files")
    } else {
        why.join("; ")
    };
    Err(ManageError::SourceNotFound {
        id: id.to_string(),
        message,
    })
}

/// A start step that failed during a reload.
fn reload_failed(error: StartError) -> ManageError {
    ManageError::ReloadFailed {
        step: error.step.to_string(),
        error: error.message,
    }
}

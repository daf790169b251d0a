//! The plugin host: discovery, dependency order, and the Open Astra lifecycle across plugins.
//!
//! Owns the catalogue of every discovered plugin, native or script (loaded or refused, and
//! why), the boot sequence (`init` each plugin in dependency order under the plugins
//! supervisor, then `start` each once HTTP listens), the operator actions (restart, reload,
//! disable/enable remembered in the data directory, unload/load), the table of current actor
//! addresses (stable handles that survive restarts), and the observer that turns supervision
//! into `plugin.*` events. Stopping in reverse order is the plugins supervisor's job: it holds
//! the plugins in start order.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::actor::{KillPlugin, PluginActor, PluginChildFactory, PluginRuntime, StartPlugin};
use super::call::send;
use super::{deps, ConnectorPluginInfo, PluginFactory, PluginManifest};
use crate::broker::events::{self, Phase};
use crate::broker::BrokerHandle;
use crate::health::{ActorRecord, ActorState, HealthRegistry, LastError, MailboxGauge};
use crate::script::engine::Limits;
use crate::script::{self, ScriptSource, ScriptStatus, ScriptView};
use crate::supervisor::child::{
    ChildFactory, ChildKind, ChildSpec, OnExhausted, Placement, RunningChild, StartArgs, StartPhase,
};
use crate::supervisor::policy::{ExitReason, RestartPolicy, RestartType};
use crate::supervisor::{
    AddChild, DisableChild, EnableChild, ReloadChild, ReloadError, RemoveChild, RestartChild,
    RunningSupervisor, Strategy, Supervisor, SupervisorObserver,
};

/// Health path of the plugins supervisor; plugin `x` is at `root/plugins/x`.
pub const PLUGINS_PATH: &str = "root/plugins";

/// A plugin actor's address with its mailbox gauge (senders count what they queue).
pub type PluginAddr = (Addr<PluginActor>, Arc<MailboxGauge>);

/// Current actor address of each plugin, replaced on every restart, and the instance itself
/// for plugins whose hooks run inline ([`Plugin::hooks_inline`]).
#[derive(Default)]
pub struct AddrTable {
    addrs: RwLock<HashMap<String, PluginAddr>>,
    inline: RwLock<HashMap<String, Arc<dyn crate::plugin::Plugin>>>,
}

impl AddrTable {
    pub fn set(&self, id: &str, addr: Addr<PluginActor>, gauge: Arc<MailboxGauge>) {
        self.addrs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (addr, gauge));
    }

    /// Records the running instance of a plugin whose hooks run inline (or forgets it).
    pub fn set_inline(&self, id: &str, plugin: Option<Arc<dyn crate::plugin::Plugin>>) {
        let mut inline = self.inline.write().unwrap_or_else(|e| e.into_inner());
        match plugin {
            Some(p) => inline.insert(id.to_string(), p),
            None => inline.remove(id),
        };
    }

    fn inline(&self, id: &str) -> Option<Arc<dyn crate::plugin::Plugin>> {
        self.inline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn get(&self, id: &str) -> Option<PluginAddr> {
        self.addrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// Lifecycle settings of plugins.
#[derive(Debug, Clone)]
pub struct PluginTimings {
    pub init_timeout: Duration,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub mailbox_capacity: usize,
    pub policy: RestartPolicy,
}

/// Where script plugins come from and what limits each gets.
pub struct ScriptSettings {
    /// The `plugins/core` directory.
    pub root: PathBuf,
    pub limits: Box<dyn Fn(&str) -> Limits + Send + Sync>,
}

/// A plugin found at start-up (or loaded later), before dependency resolution.
pub struct Discovered {
    pub source: &'static str,
    pub factory: PluginFactory,
    pub placement: Placement,
    pub script: Option<Arc<ScriptStatus>>,
}

impl Discovered {
    pub fn native(factory: PluginFactory) -> Self {
        Discovered {
            source: "native",
            factory,
            placement: Placement::Shared,
            script: None,
        }
    }

    /// A script plugin: its own engine on its own arbiter (the engine may block its thread).
    pub fn script(source: ScriptSource, limits: Limits) -> Self {
        let status = ScriptStatus::new(source.clone());
        Discovered {
            source: "script",
            factory: script::factory(source, limits, status.clone()),
            placement: Placement::Dedicated,
            script: Some(status),
        }
    }
}

struct Entry {
    manifest: PluginManifest,
    /// Connector plugins it provides (a script module may register several).
    connectors: Vec<ConnectorPluginInfo>,
    source: &'static str,
    factory: PluginFactory,
    placement: Placement,
    script: Option<Arc<ScriptStatus>>,
    /// Why the plugin is not under supervision, when it was refused before boot.
    refused: Option<String>,
    /// Whether the plugins supervisor has a child for it.
    supervised: bool,
}

/// Why an operator's request about a plugin could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("plugin '{0}' is not registered")]
    NotFound(String),
    /// The request makes no sense in the plugin's current state.
    #[error("{0}")]
    Conflict(String),
    #[error("no plugin directory '{id}' with an index.ts or index.js in {root}")]
    SourceNotFound { id: String, root: String },
    #[error("reload failed at {step}: {error}")]
    ReloadFailed { step: String, error: String },
    /// The plugin was (re)started but did not come up.
    #[error("{0}")]
    StartFailed(String),
    #[error("cannot remember the change in {path}: {error}")]
    Persist { path: String, error: String },
}

/// The plugin host. Shared (`Arc`) by the app, the HTTP handlers and the plugins supervisor's
/// factory.
pub struct PluginHost {
    runtime: PluginRuntime,
    timings: PluginTimings,
    health: HealthRegistry,
    entries: RwLock<Vec<Entry>>,
    supervisor: RwLock<Option<Addr<Supervisor>>>,
    /// Set once every plugin has been started at boot; restarts after that start plugins too.
    booted: AtomicBool,
    scripts: ScriptSettings,
    /// Plugins an operator disabled; kept in `state_file` across restarts.
    disabled: Mutex<BTreeSet<String>>,
    state_file: PathBuf,
}

/// A plugin as `GET /api/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    #[serde(flatten)]
    pub manifest: Value,
    pub source: &'static str,
    pub state: ActorState,
    pub generation: u64,
    pub restarts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptView>,
    /// Routes, tools and agents it registered through its context.
    pub registrations: crate::plugin::extensions::PluginRegistrations,
}

/// The persisted operator choices.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistedState {
    disabled: BTreeSet<String>,
}

impl PluginHost {
    pub fn new(
        broker: BrokerHandle,
        health: HealthRegistry,
        server_addr: Arc<OnceLock<SocketAddr>>,
        timings: PluginTimings,
        scripts: ScriptSettings,
        data_dir: &Path,
        ext: Arc<crate::plugin::Extensions>,
    ) -> Arc<Self> {
        let state_file = data_dir.join("plugins.json");
        let disabled = match std::fs::read_to_string(&state_file) {
            Ok(text) => match serde_json::from_str::<PersistedState>(&text) {
                Ok(state) => state.disabled,
                Err(error) => {
                    tracing::error!(file = %state_file.display(), %error, "Unreadable plugin state; no plugin starts disabled.");
                    BTreeSet::new()
                }
            },
            Err(_) => BTreeSet::new(),
        };
        Arc::new(PluginHost {
            runtime: PluginRuntime {
                broker,
                server_addr,
                init_timeout: timings.init_timeout,
                start_timeout: timings.start_timeout,
                mailbox_capacity: timings.mailbox_capacity,
                addrs: Arc::new(AddrTable::default()),
                ext,
            },
            timings,
            health,
            entries: RwLock::new(Vec::new()),
            supervisor: RwLock::new(None),
            booted: AtomicBool::new(false),
            scripts,
            disabled: Mutex::new(disabled),
            state_file,
        })
    }

    fn broker(&self) -> &BrokerHandle {
        &self.runtime.broker
    }

    fn supervisor(&self) -> Option<Addr<Supervisor>> {
        self.supervisor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    fn is_disabled(&self, id: &str) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn spec(&self, entry: &Entry) -> ChildSpec {
        ChildSpec {
            id: entry.manifest.id.clone(),
            kind: ChildKind::Worker,
            role: "plugin",
            restart: RestartType::Permanent,
            shutdown_timeout: self.timings.stop_timeout,
            placement: entry.placement,
            on_exhausted: OnExhausted::Park,
            policy: self.timings.policy,
            factory: Arc::new(PluginChildFactory {
                factory: entry.factory.clone(),
                runtime: self.runtime.clone(),
            }),
            in_health: true,
        }
    }

    /// Discovers script plugins in the script root, in directory-name order.
    pub fn discover_scripts(&self) -> Vec<Discovered> {
        script::discover(&self.scripts.root)
            .into_iter()
            .map(|source| {
                let limits = (self.scripts.limits)(&source.id);
                Discovered::script(source, limits)
            })
            .collect()
    }

    /// Registers the discovered plugins (in discovery order), resolves their dependencies and
    /// refuses, with a `plugin.error` each, those that cannot load.
    pub fn discover(&self, plugins: Vec<Discovered>) {
        let mut entries: Vec<(Entry, Option<usize>)> = plugins
            .into_iter()
            .map(|d| {
                let instance = (d.factory)();
                let entry = Entry {
                    manifest: instance.manifest(),
                    connectors: instance.connector_plugins(),
                    source: d.source,
                    factory: d.factory,
                    placement: d.placement,
                    script: d.script,
                    refused: None,
                    supervised: false,
                };
                (entry, None)
            })
            .collect();
        let manifests: Vec<PluginManifest> =
            entries.iter().map(|(e, _)| e.manifest.clone()).collect();
        let resolution = deps::resolve(&manifests);
        for (position, &i) in resolution.order.iter().enumerate() {
            entries[i].1 = Some(position);
        }
        for (i, reason) in resolution.refused {
            self.refuse(&mut entries[i].0, Phase::Discover, reason);
        }
        entries.sort_by_key(|(_, order)| order.unwrap_or(usize::MAX));
        *self.write() = entries.into_iter().map(|(e, _)| e).collect();
    }

    fn refuse(&self, entry: &mut Entry, phase: Phase, reason: String) {
        tracing::warn!(plugin = %entry.manifest.id, ?phase, error = %reason, "Plugin refused.");
        self.broker().emit(&events::PluginError {
            plugin: entry.manifest.id.clone(),
            version: Some(entry.manifest.version.to_string()),
            phase,
            error: reason.clone(),
        });
        let path = format!("{PLUGINS_PATH}/{}", entry.manifest.id);
        self.health.upsert(
            &path,
            || ActorRecord::new(path.clone(), "actor", "plugin"),
            |row| {
                row.required = false;
                row.state = ActorState::Failed;
                row.last_error = Some(LastError {
                    message: reason.clone(),
                    at: std::time::SystemTime::now(),
                });
            },
        );
        entry.refused = Some(reason);
    }

    /// Boot, step 1: `init` every loadable plugin in start order under the plugins supervisor.
    /// A plugin whose dependency failed to initialise is refused too; disabled plugins are
    /// registered but not started.
    pub async fn init_all(&self) {
        let Some(supervisor) = self.supervisor() else {
            return;
        };
        let count = self.read().len();
        for i in 0..count {
            let (spec, blocked, disabled) = {
                let entries = self.read();
                let entry = &entries[i];
                if entry.refused.is_some() {
                    continue;
                }
                // A dependency must be up (initialised) before a dependant may init.
                let blocked = entry.manifest.dependencies.iter().find_map(|dep| {
                    let up = entries
                        .iter()
                        .any(|e| e.manifest.id == dep.id && e.refused.is_none())
                        && self.state_of(&dep.id) == Some(ActorState::Running);
                    (!up).then(|| format!("depends on '{}', which failed to initialise", dep.id))
                });
                (
                    self.spec(entry),
                    blocked,
                    self.is_disabled(&entry.manifest.id),
                )
            };
            if let Some(reason) = blocked {
                let mut entries = self.write();
                self.refuse(&mut entries[i], Phase::Init, reason);
                continue;
            }
            let outcome = supervisor
                .send(AddChild {
                    spec,
                    phase: StartPhase::Boot,
                    disabled,
                })
                .await
                .unwrap_or_else(|e| Err(format!("plugins supervisor unreachable: {e}")));
            let mut entries = self.write();
            entries[i].supervised = outcome.is_ok();
            if let Err(reason) = outcome {
                // The supervisor keeps the child as `failed` (a restart or reload may retry it).
                entries[i].supervised = true;
                tracing::debug!(plugin = %entries[i].manifest.id, %reason, "Plugin did not initialise.");
            }
        }
    }

    /// Boot, step 2 (HTTP is listening): `start` every initialised plugin in start order. A
    /// plugin whose `start` fails is treated as crashed: the supervisor restarts it (init and
    /// start again) within its budget.
    pub async fn start_all(&self) {
        let ids: Vec<String> = self
            .read()
            .iter()
            .filter(|e| e.refused.is_none() && e.supervised)
            .map(|e| e.manifest.id.clone())
            .filter(|id| self.state_of(id) == Some(ActorState::Running))
            .collect();
        for id in ids {
            let Some((addr, gauge)) = self.runtime.addrs.get(&id) else {
                continue;
            };
            let version = self
                .manifest(&id)
                .map(|m| m.version.to_string())
                .unwrap_or_default();
            let started = send(&addr, &gauge, StartPlugin, self.timings.start_timeout).await;
            match started.map_err(|e| e.into_plugin_error("start")) {
                Ok(()) => {
                    tracing::info!(plugin = %id, "Plugin started.");
                    self.broker().emit(&events::PluginStarted {
                        plugin: id,
                        version,
                    });
                }
                Err(error) => {
                    tracing::warn!(plugin = %id, %error, "Plugin failed to start.");
                    self.broker().emit(&events::PluginError {
                        plugin: id,
                        version: Some(version),
                        phase: Phase::Start,
                        error: error.message.clone(),
                    });
                    addr.do_send(KillPlugin {
                        reason: ExitReason::Error(format!("start failed: {}", error.message)),
                    });
                }
            }
        }
        self.booted.store(true, Ordering::Release);
    }

    fn state_of(&self, id: &str) -> Option<ActorState> {
        self.health
            .get(&format!("{PLUGINS_PATH}/{id}"))
            .map(|r| r.state)
    }

    pub fn manifest(&self, id: &str) -> Option<PluginManifest> {
        self.read()
            .iter()
            .find(|e| e.manifest.id == id)
            .map(|e| e.manifest.clone())
    }

    /// Every discovered plugin, in start order (refused ones last), with its state.
    pub fn list(&self) -> Vec<PluginView> {
        self.read().iter().map(|e| self.view(e)).collect()
    }

    /// Plugins compatible with `connector`, in pipeline order: ascending priority, ties in
    /// registration order (a stable sort).
    pub fn pipeline_order(&self, connector: &str) -> Vec<PluginView> {
        let entries = self.read();
        let mut compatible: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                e.manifest
                    .compatible_connectors
                    .iter()
                    .any(|c| c == connector)
            })
            .collect();
        compatible.sort_by_key(|e| e.manifest.priority);
        compatible.into_iter().map(|e| self.view(e)).collect()
    }

    /// Resolves a connector plugin id (as sessions name it) to the plugin that provides it.
    pub fn connector_plugin(&self, id: &str) -> Option<(String, ConnectorPluginInfo)> {
        self.read()
            .iter()
            .filter(|e| e.refused.is_none())
            .find_map(|e| {
                e.connectors
                    .iter()
                    .find(|c| c.id == id)
                    .map(|c| (e.manifest.id.clone(), c.clone()))
            })
    }

    /// Every connector plugin, in registration order.
    pub fn connector_plugins(&self) -> Vec<(String, ConnectorPluginInfo)> {
        self.read()
            .iter()
            .filter(|e| e.refused.is_none())
            .flat_map(|e| {
                e.connectors
                    .iter()
                    .map(|c| (e.manifest.id.clone(), c.clone()))
            })
            .collect()
    }

    /// The running actor of plugin `id`.
    /// The running actor of plugin `id`. Called for every hook of every message, so it only
    /// checks that the current actor is alive: a stopped, parked or disabled plugin's is not.
    /// The routes, tools and agents plugins registered.
    pub fn extensions(&self) -> &Arc<crate::plugin::Extensions> {
        &self.runtime.ext
    }

    /// The running instance of `id` and its actor, when its connector hooks run inline.
    pub fn inline_hooks(
        &self,
        id: &str,
    ) -> Option<(Arc<dyn crate::plugin::Plugin>, Addr<PluginActor>)> {
        let plugin = self.runtime.addrs.inline(id)?;
        let (addr, _) = self.running_addr(id)?;
        Some((plugin, addr))
    }

    pub fn running_addr(&self, id: &str) -> Option<PluginAddr> {
        self.runtime
            .addrs
            .get(id)
            .filter(|(addr, _)| addr.connected())
    }

    pub fn get(&self, id: &str) -> Option<PluginView> {
        self.read()
            .iter()
            .find(|e| e.manifest.id == id)
            .map(|e| self.view(e))
    }

    fn view(&self, entry: &Entry) -> PluginView {
        let row = self
            .health
            .get(&format!("{PLUGINS_PATH}/{}", entry.manifest.id));
        PluginView {
            manifest: serde_json::to_value(&entry.manifest).unwrap_or(Value::Null),
            source: entry.source,
            state: row.as_ref().map(|r| r.state).unwrap_or(ActorState::Failed),
            generation: row.as_ref().map(|r| r.generation).unwrap_or(0),
            restarts: row.as_ref().map(|r| r.restarts).unwrap_or(0),
            last_error: row.and_then(|r| r.last_error),
            script: entry.script.as_ref().map(|s| s.view()),
            registrations: self.runtime.ext.of(&entry.manifest.id),
        }
    }

    // ---- Operator actions (REST) and file changes --------------------------------------------

    /// Checks that `id` is under supervision and returns its source kind.
    fn supervised(&self, id: &str) -> Result<&'static str, ManageError> {
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

    fn view_of(&self, id: &str) -> Result<PluginView, ManageError> {
        self.get(id)
            .ok_or_else(|| ManageError::NotFound(id.to_string()))
    }

    fn sup(&self) -> Result<Addr<Supervisor>, ManageError> {
        self.supervisor()
            .ok_or_else(|| ManageError::Conflict("the plugins supervisor is not running".into()))
    }

    /// Refreshes a script plugin's manifest from its newest good instance.
    fn refresh_manifest(&self, id: &str) {
        let mut entries = self.write();
        if let Some(entry) = entries.iter_mut().find(|e| e.manifest.id == id) {
            if let Some(script) = &entry.script {
                if let Some(manifest) = script.manifest() {
                    entry.manifest = manifest;
                }
                if let Some(connectors) = script.connectors() {
                    entry.connectors = connectors;
                }
            }
        }
    }

    /// A supervised restart; answers once the plugin runs again.
    pub async fn restart(&self, id: &str) -> Result<PluginView, ManageError> {
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
            .map_err(ManageError::StartFailed)?;
        self.refresh_manifest(id);
        self.view_of(id)
    }

    /// Stops the plugin and keeps it stopped, across service restarts too.
    pub async fn disable(&self, id: &str) -> Result<PluginView, ManageError> {
        self.supervised(id)?;
        if self.is_disabled(id) {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is already disabled"
            )));
        }
        self.persist(|set| set.insert(id.to_string()))?;
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
        self.supervised(id)?;
        if !self.is_disabled(id) {
            let state = self.state_of(id).map(|s| s.as_str()).unwrap_or("unknown");
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is not disabled (it is {state})"
            )));
        }
        self.persist(|set| set.remove(id))?;
        self.broker().emit(&events::PluginEnabled {
            plugin: id.to_string(),
        });
        let started = self.sup()?.send(EnableChild { id: id.to_string() }).await;
        self.refresh_manifest(id);
        started
            .map_err(|e| ManageError::StartFailed(e.to_string()))?
            .map_err(ManageError::StartFailed)?;
        self.view_of(id)
    }

    /// Unloads a script plugin: stops it and forgets it (its files stay).
    pub async fn unload(&self, id: &str) -> Result<(), ManageError> {
        let source = self
            .read()
            .iter()
            .find(|e| e.manifest.id == id)
            .map(|e| e.source)
            .ok_or_else(|| ManageError::NotFound(id.to_string()))?;
        if source != "script" {
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

    /// Loads script plugin `id` from its directory and starts it.
    pub async fn load(&self, id: &str) -> Result<PluginView, ManageError> {
        if self.get(id).is_some() {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is already loaded"
            )));
        }
        let source = script::source_for(&self.scripts.root, id).ok_or_else(|| {
            ManageError::SourceNotFound {
                id: id.to_string(),
                root: self.scripts.root.display().to_string(),
            }
        })?;
        let discovered = Discovered::script(source, (self.scripts.limits)(id));
        let instance = (discovered.factory)();
        let entry = Entry {
            manifest: instance.manifest(),
            connectors: instance.connector_plugins(),
            source: discovered.source,
            factory: discovered.factory,
            placement: discovered.placement,
            script: discovered.script,
            refused: None,
            supervised: true,
        };
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
            .map_err(ManageError::StartFailed)?;
        self.view_of(id)
    }

    /// Reloads a script plugin from its files: the new version is prepared beside the old one
    /// and swapped in only if it initialises; otherwise the old one keeps serving.
    pub async fn reload(&self, id: &str) -> Result<(PluginView, String), ManageError> {
        if self.supervised(id)? != "script" {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is native (compiled in); restart it instead"
            )));
        }
        if self.is_disabled(id) {
            return Err(ManageError::Conflict(format!(
                "plugin '{id}' is disabled; enable it first"
            )));
        }
        let old_version = self
            .manifest(id)
            .map(|m| m.version.to_string())
            .unwrap_or_default();
        let began = std::time::Instant::now();
        let running = self.state_of(id) == Some(ActorState::Running);
        let outcome = if running {
            self.sup()?
                .send(ReloadChild { id: id.to_string() })
                .await
                .map_err(|e| ManageError::StartFailed(e.to_string()))?
                .map_err(|e| match e {
                    ReloadError::Rejected(error) => split_step(&error),
                    ReloadError::ActivationFailed(error) => ManageError::ReloadFailed {
                        step: "start".into(),
                        error,
                    },
                    ReloadError::NotRunning(error) => ManageError::Conflict(error),
                })
        } else {
            // Not running (failed, parked): start it afresh from the new files.
            self.sup()?
                .send(RestartChild { id: id.to_string() })
                .await
                .map_err(|e| ManageError::StartFailed(e.to_string()))?
                .map_err(|error| split_step(&error))
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

    /// A script plugin's files changed (hot reload): reload, load or unload it.
    pub async fn source_changed(&self, id: &str) {
        let on_disk = script::source_for(&self.scripts.root, id).is_some();
        let known = self.get(id).is_some();
        let outcome = match (on_disk, known) {
            (true, true) => self.reload(id).await.map(|_| ()),
            (true, false) => self.load(id).await.map(|_| ()),
            (false, true) => self.unload(id).await,
            (false, false) => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::warn!(plugin = id, %error, "Applying a file change failed.");
        }
    }

    /// Applies `change` to the disabled set and writes it to the data directory.
    fn persist(
        &self,
        change: impl FnOnce(&mut BTreeSet<String>) -> bool,
    ) -> Result<(), ManageError> {
        let mut disabled = self.disabled.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = disabled.clone();
        change(&mut next);
        let fail = |error: std::io::Error| ManageError::Persist {
            path: self.state_file.display().to_string(),
            error: error.to_string(),
        };
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text = serde_json::to_string_pretty(&PersistedState {
            disabled: next.clone(),
        })
        .unwrap_or_default();
        // Write then rename, so a crash never leaves half a file.
        let tmp = self.state_file.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &self.state_file).map_err(fail)?;
        *disabled = next;
        Ok(())
    }
}

/// Splits a factory failure (`"<step>: <message>"`) into a `ReloadFailed`.
fn split_step(error: &str) -> ManageError {
    match error.split_once(": ") {
        Some((step, rest)) if ["compile", "validate", "init", "start"].contains(&step) => {
            ManageError::ReloadFailed {
                step: step.to_string(),
                error: rest.to_string(),
            }
        }
        _ => ManageError::ReloadFailed {
            step: "init".into(),
            error: error.to_string(),
        },
    }
}

/// Turns the plugins supervisor's decisions into `plugin.*` events.
pub struct PluginsObserver {
    pub broker: BrokerHandle,
    pub ext: Arc<crate::plugin::Extensions>,
}

impl SupervisorObserver for PluginsObserver {
    fn restarting(&self, id: &str, reason: &ExitReason, _delay: Duration) {
        self.broker.emit(&events::PluginError {
            plugin: id.to_string(),
            version: None,
            phase: Phase::Run,
            error: reason.describe(),
        });
    }

    fn restarted(&self, id: &str, generation: u64, restarts: u32, reason: &ExitReason) {
        self.broker.emit(&events::PluginRestarted {
            plugin: id.to_string(),
            generation,
            restarts,
            reason: reason.describe(),
        });
    }

    fn parked(&self, id: &str, restarts: u32, reason: &ExitReason) {
        // A parked plugin serves nothing: its routes answer 404 and its tools are gone.
        self.ext.remove(id, None);
        self.broker.emit(&events::PluginFailed {
            plugin: id.to_string(),
            restarts,
            last_error: reason.describe(),
        });
    }
}

/// Starts the plugins supervisor under the root. After a root-level restart (the broker died and
/// `rest_for_one` took the plugins down with it) it brings every plugin back, started.
pub struct PluginsSupervisorFactory {
    pub host: Arc<PluginHost>,
}

impl ChildFactory for PluginsSupervisorFactory {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, String>> {
        let host = self.host.clone();
        let observer = Arc::new(PluginsObserver {
            broker: host.broker().clone(),
            ext: host.runtime.ext.clone(),
        });
        let addr = Supervisor::new(
            args.path,
            Strategy::OneForOne,
            host.health.clone(),
            observer,
            Some(args.guard),
        )
        .start();
        *host.supervisor.write().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
        async move {
            if host.booted.load(Ordering::Acquire) {
                let specs: Vec<(ChildSpec, bool)> = {
                    let entries = host.read();
                    entries
                        .iter()
                        .filter(|e| e.refused.is_none() && e.supervised)
                        .map(|e| (host.spec(e), host.is_disabled(&e.manifest.id)))
                        .collect()
                };
                for (spec, disabled) in specs {
                    let id = spec.id.clone();
                    if let Ok(Err(error)) = addr.send(AddChild { spec, phase: StartPhase::Restart, disabled }).await {
                        tracing::warn!(plugin = %id, %error, "Plugin did not come back after a restart of its supervisor.");
                    }
                }
            }
            Ok(Box::new(RunningSupervisor(addr)) as Box<dyn RunningChild>)
        }
        .boxed_local()
    }
}

//! The plugin host: the catalogue of every discovered plugin and the queries on it.
//!
//! Owns the catalogue (native or loaded, running or refused, and why), what the API and the
//! pipeline read from it (views, manifests, connector plugins in pipeline order, the current
//! instance of a plugin), and the host's parts: the address table (`registry`), the disabled
//! set (`disabled`) and the loader engines plug in through (`source`). The boot sequence and
//! supervision glue live in `lifecycle`, the operator actions in `ops`. Stopping in reverse
//! order is the plugins supervisor's job: it holds the plugins in start order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::actor::PluginActor;
use super::disabled::{Disabled, PersistError};
use super::lifecycle::{PluginChildFactory, PluginRuntime};
use super::registry::{AddrTable, PluginAddr};
use super::source::{LoadedStatus, Loader, Source};
use super::{ConnectorPluginInfo, Extensions, Plugin, PluginFactory, PluginManifest};
use crate::broker::BrokerHandle;
use crate::health::{ActorState, HealthRegistry, LastError};
use crate::supervisor::child::{ChildKind, ChildSpec, OnExhausted, Placement};
use crate::supervisor::policy::{RestartPolicy, RestartType};
use crate::supervisor::Supervisor;

/// Health path of the plugins supervisor; plugin `x` is at `root/plugins/x`.
pub const PLUGINS_PATH: &str = "root/plugins";

/// Lifecycle settings of plugins.
#[derive(Debug, Clone)]
pub struct PluginTimings {
    pub init_timeout: Duration,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub mailbox_capacity: usize,
    pub policy: RestartPolicy,
}

pub(super) struct Entry {
    pub manifest: PluginManifest,
    /// Connector plugins it provides (a loaded module may register several).
    /// Shared (`Arc`): every session of a plugin points at the same one.
    pub connectors: Vec<Arc<ConnectorPluginInfo>>,
    pub source: Source,
    pub factory: PluginFactory,
    pub placement: Placement,
    pub status: Option<Arc<dyn LoadedStatus>>,
    /// Why the plugin is not under supervision, when it was refused before boot.
    pub refused: Option<String>,
    /// Whether the plugins supervisor has a child for it.
    pub supervised: bool,
}

/// Why an operator's request about a plugin could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("plugin '{0}' is not registered")]
    NotFound(String),
    /// The request makes no sense in the plugin's current state.
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    SourceNotFound { id: String, message: String },
    #[error("reload failed at {step}: {error}")]
    ReloadFailed { step: String, error: String },
    /// The plugin was (re)started but did not come up.
    #[error("{0}")]
    StartFailed(String),
    #[error(transparent)]
    Persist(#[from] PersistError),
}

/// The plugin host. Shared (`Arc`) by the app, the HTTP handlers and the plugins supervisor's
/// factory.
pub struct PluginHost {
    pub(super) runtime: PluginRuntime,
    pub(super) timings: PluginTimings,
    pub(super) health: HealthRegistry,
    pub(super) entries: RwLock<Vec<Entry>>,
    pub(super) supervisor: RwLock<Option<Addr<Supervisor>>>,
    /// Set once every plugin has been started at boot; restarts after that start plugins too.
    pub(super) booted: AtomicBool,
    /// The engines that load plugins from files (none: native plugins only).
    pub(super) loaders: Vec<Arc<dyn Loader>>,
    /// Plugins an operator disabled; kept in the data directory across restarts.
    pub(super) disabled: Disabled,
    /// What `/metrics` shows; the call path and sessions record into it.
    pub(super) metrics: Arc<crate::metrics::Metrics>,
}

/// A plugin as `GET /api/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    #[serde(flatten)]
    pub manifest: Value,
    pub source: Source,
    pub state: ActorState,
    /// See `health::ActorRecord`: the instance's number, its restarts and its reloads.
    pub generation: u64,
    pub restarts: u32,
    pub reloads: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// What the loader says about the plugin's files and engine (script plugins).
    #[serde(rename = "script", skip_serializing_if = "Option::is_none")]
    pub files: Option<Value>,
    /// Routes, tools and agents it registered through its context.
    pub registrations: super::extensions::PluginRegistrations,
    /// For a connector plugin registered by another plugin's module: that plugin. They share
    /// one engine and one supervised unit (restarted, reloaded and disabled together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl PluginHost {
    pub fn new(
        broker: BrokerHandle,
        health: HealthRegistry,
        server_addr: Arc<OnceLock<SocketAddr>>,
        timings: PluginTimings,
        loaders: Vec<Arc<dyn Loader>>,
        data_dir: &Path,
        ext: Arc<Extensions>,
    ) -> Arc<Self> {
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
            loaders,
            disabled: Disabled::load(data_dir),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        })
    }

    /// The service's metrics (`GET /metrics`).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub(super) fn broker(&self) -> &BrokerHandle {
        &self.runtime.broker
    }

    pub(super) fn supervisor(&self) -> Option<Addr<Supervisor>> {
        self.supervisor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Entry>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an operator disabled plugin `id` (it stays stopped until enabled).
    pub fn is_disabled(&self, id: &str) -> bool {
        self.disabled.contains(id)
    }

    /// The child spec of a catalogue entry: a permanent worker, parked when it spends its
    /// restart budget (the other plugins go on).
    pub(super) fn spec(&self, entry: &Entry) -> ChildSpec {
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

    /// Every plugin the loaders find, in their order.
    pub fn discover_loaded(&self) -> Vec<super::source::Discovered> {
        self.loaders.iter().flat_map(|l| l.discover()).collect()
    }

    pub(super) fn state_of(&self, id: &str) -> Option<ActorState> {
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

    /// Every discovered plugin, in start order (refused ones last), with its state; the other
    /// connector plugins a module registers follow the plugin that registered them.
    pub fn list(&self) -> Vec<PluginView> {
        self.read()
            .iter()
            .flat_map(|e| {
                let own = self.view(e);
                let members = e
                    .connectors
                    .iter()
                    // A refused plugin provides nothing: its members are not listed either.
                    .filter(|c| c.id != e.manifest.id && e.refused.is_none())
                    .map(|c| self.member_view(e, c, &own))
                    .collect::<Vec<_>>();
                std::iter::once(own).chain(members)
            })
            .collect()
    }

    /// The supervised unit that provides plugin `id`: itself, or the plugin whose module
    /// registered connector plugin `id`.
    pub fn unit_of(&self, id: &str) -> Option<String> {
        let entries = self.read();
        entries
            .iter()
            .find(|e| e.manifest.id == id)
            .or_else(|| {
                entries
                    .iter()
                    .filter(|e| e.refused.is_none())
                    .find(|e| e.connectors.iter().any(|c| c.id == id))
            })
            .map(|e| e.manifest.id.clone())
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
    pub fn connector_plugin(&self, id: &str) -> Option<(String, Arc<ConnectorPluginInfo>)> {
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
    pub fn connector_plugins(&self) -> Vec<(String, Arc<ConnectorPluginInfo>)> {
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

    /// The routes, tools and agents plugins registered.
    pub fn extensions(&self) -> &Arc<Extensions> {
        &self.runtime.ext
    }

    /// The running instance of `id` and its actor, when its connector hooks run inline.
    pub fn inline_hooks(&self, id: &str) -> Option<(Arc<dyn Plugin>, Addr<PluginActor>)> {
        let plugin = self.runtime.addrs.inline(id)?;
        let (addr, _) = self.running_addr(id)?;
        Some((plugin, addr))
    }

    /// The running actor of plugin `id`. Called for every hook of every message, so it only
    /// checks that the current actor is alive: a stopped, parked or disabled plugin's is not.
    pub fn running_addr(&self, id: &str) -> Option<PluginAddr> {
        self.runtime
            .addrs
            .get(id)
            .filter(|(addr, _)| addr.connected())
    }

    pub fn get(&self, id: &str) -> Option<PluginView> {
        let entries = self.read();
        if let Some(entry) = entries.iter().find(|e| e.manifest.id == id) {
            return Some(self.view(entry));
        }
        entries
            .iter()
            .filter(|e| e.refused.is_none())
            .find_map(|e| {
                let member = e.connectors.iter().find(|c| c.id == id)?;
                Some(self.member_view(e, member, &self.view(e)))
            })
    }

    /// A connector plugin another plugin's module registered: its own manifest, its unit's
    /// state.
    fn member_view(&self, entry: &Entry, c: &ConnectorPluginInfo, unit: &PluginView) -> PluginView {
        let version = semver::Version::parse(&c.version).unwrap_or(entry.manifest.version.clone());
        let mut manifest = PluginManifest::new(&c.id, version)
            .named(&c.name)
            .describe(&c.description);
        manifest.priority = c.priority;
        manifest.compatible_connectors = c.compatible_connectors.clone();
        manifest.config_schema = c.config_schema.clone();
        PluginView {
            manifest: serde_json::to_value(&manifest).unwrap_or(Value::Null),
            unit: Some(entry.manifest.id.clone()),
            registrations: Default::default(),
            ..unit.clone()
        }
    }

    pub(super) fn view(&self, entry: &Entry) -> PluginView {
        let row = self
            .health
            .get(&format!("{PLUGINS_PATH}/{}", entry.manifest.id));
        PluginView {
            manifest: serde_json::to_value(&entry.manifest).unwrap_or(Value::Null),
            source: entry.source,
            state: row.as_ref().map(|r| r.state).unwrap_or(ActorState::Failed),
            generation: row.as_ref().map(|r| r.generation).unwrap_or(0),
            restarts: row.as_ref().map(|r| r.restarts).unwrap_or(0),
            reloads: row.as_ref().map(|r| r.reloads).unwrap_or(0),
            last_error: row.and_then(|r| r.last_error),
            files: entry.status.as_ref().map(|s| s.view()),
            registrations: self.runtime.ext.of(&entry.manifest.id),
            unit: None,
        }
    }
}

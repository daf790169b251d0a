//! The plugin host: discovery, dependency order, and the Open Astra lifecycle across plugins.
//!
//! Owns the catalogue of every discovered plugin (loaded or refused, and why), the boot
//! sequence (`init` each plugin in dependency order under the plugins supervisor, then `start`
//! each once HTTP listens), the table of current actor addresses (stable handles that survive
//! restarts), and the observer that turns supervision into `plugin.*` events. Stopping in
//! reverse order is the plugins supervisor's job: it holds the plugins in start order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::Serialize;
use serde_json::Value;

use super::actor::{call, KillPlugin, PluginActor, PluginChildFactory, PluginRuntime, StartPlugin};
use super::{deps, PluginFactory, PluginManifest};
use crate::broker::events::{self, Phase};
use crate::broker::BrokerHandle;
use crate::health::{ActorRecord, ActorState, HealthRegistry, LastError, MailboxGauge};
use crate::supervisor::child::{
    ChildFactory, ChildKind, ChildSpec, OnExhausted, Placement, RunningChild, StartArgs, StartPhase,
};
use crate::supervisor::policy::{ExitReason, RestartPolicy, RestartType};
use crate::supervisor::{AddChild, RunningSupervisor, Strategy, Supervisor, SupervisorObserver};

/// Health path of the plugins supervisor; plugin `x` is at `root/plugins/x`.
pub const PLUGINS_PATH: &str = "root/plugins";

/// A plugin actor's address with its mailbox gauge (senders count what they queue).
pub type PluginAddr = (Addr<PluginActor>, Arc<MailboxGauge>);

/// Current actor address of each plugin, replaced on every restart.
#[derive(Default)]
pub struct AddrTable {
    addrs: RwLock<HashMap<String, PluginAddr>>,
}

impl AddrTable {
    pub fn set(&self, id: &str, addr: Addr<PluginActor>, gauge: Arc<MailboxGauge>) {
        self.addrs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), (addr, gauge));
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

struct Entry {
    manifest: PluginManifest,
    source: &'static str,
    factory: PluginFactory,
    /// Why the plugin is not running, when it was refused before or during boot.
    refused: Option<String>,
    /// Position in the start order, for plugins that were handed to the supervisor.
    order: Option<usize>,
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
}

impl PluginHost {
    pub fn new(
        broker: BrokerHandle,
        health: HealthRegistry,
        server_addr: Arc<OnceLock<SocketAddr>>,
        timings: PluginTimings,
    ) -> Arc<Self> {
        Arc::new(PluginHost {
            runtime: PluginRuntime {
                broker,
                server_addr,
                init_timeout: timings.init_timeout,
                start_timeout: timings.start_timeout,
                mailbox_capacity: timings.mailbox_capacity,
                addrs: Arc::new(AddrTable::default()),
            },
            timings,
            health,
            entries: RwLock::new(Vec::new()),
            supervisor: RwLock::new(None),
            booted: AtomicBool::new(false),
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

    fn spec(&self, entry: &Entry) -> ChildSpec {
        ChildSpec {
            id: entry.manifest.id.clone(),
            kind: ChildKind::Worker,
            role: "plugin",
            restart: RestartType::Permanent,
            shutdown_timeout: self.timings.stop_timeout,
            placement: Placement::Shared,
            on_exhausted: OnExhausted::Park,
            policy: self.timings.policy,
            factory: Arc::new(PluginChildFactory {
                factory: entry.factory.clone(),
                runtime: self.runtime.clone(),
            }),
        }
    }

    /// Registers the discovered plugins (in discovery order), resolves their dependencies and
    /// refuses, with a `plugin.error` each, those that cannot load.
    pub fn discover(&self, plugins: Vec<(&'static str, PluginFactory)>) {
        let mut entries: Vec<Entry> = plugins
            .into_iter()
            .map(|(source, factory)| Entry {
                manifest: factory().manifest(),
                source,
                factory,
                refused: None,
                order: None,
            })
            .collect();
        let manifests: Vec<PluginManifest> = entries.iter().map(|e| e.manifest.clone()).collect();
        let resolution = deps::resolve(&manifests);
        for (position, &i) in resolution.order.iter().enumerate() {
            entries[i].order = Some(position);
        }
        for (i, reason) in resolution.refused {
            self.refuse(&mut entries[i], Phase::Discover, reason);
        }
        entries.sort_by_key(|e| e.order.unwrap_or(usize::MAX));
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    fn refuse(&self, entry: &mut Entry, phase: Phase, reason: String) {
        tracing::warn!(plugin = %entry.manifest.id, ?phase, error = %reason, "Plugin refused.");
        if phase == Phase::Discover {
            self.broker().emit(&events::PluginError {
                plugin: entry.manifest.id.clone(),
                version: Some(entry.manifest.version.to_string()),
                phase,
                error: reason.clone(),
            });
        }
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
    /// A plugin whose dependency failed to initialise is refused too.
    pub async fn init_all(&self) {
        let Some(supervisor) = self.supervisor() else {
            return;
        };
        let count = self.entries.read().unwrap_or_else(|e| e.into_inner()).len();
        for i in 0..count {
            let (spec, blocked) = {
                let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
                let entry = &entries[i];
                if entry.refused.is_some() {
                    continue;
                }
                let blocked = entry.manifest.dependencies.iter().find_map(|dep| {
                    entries
                        .iter()
                        .find(|e| e.manifest.id == dep.id && e.refused.is_some())
                        .map(|_| format!("depends on '{}', which failed to initialise", dep.id))
                });
                (self.spec(entry), blocked)
            };
            let outcome = match blocked {
                Some(reason) => {
                    self.broker().emit(&events::PluginError {
                        plugin: spec.id.clone(),
                        version: None,
                        phase: Phase::Init,
                        error: reason.clone(),
                    });
                    Err(reason)
                }
                None => supervisor
                    .send(AddChild {
                        spec,
                        phase: StartPhase::Boot,
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("plugins supervisor unreachable: {e}"))),
            };
            if let Err(reason) = outcome {
                let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
                let entry = &mut entries[i];
                entry.refused = Some(reason);
                // The supervisor keeps the failed child's health row; only blocked ones need one.
                if self
                    .health
                    .get(&format!("{PLUGINS_PATH}/{}", entry.manifest.id))
                    .is_none()
                {
                    let reason = entry.refused.clone().unwrap_or_default();
                    self.refuse(entry, Phase::Init, reason);
                }
            }
        }
    }

    /// Boot, step 2 (HTTP is listening): `start` every initialised plugin in start order. A
    /// plugin whose `start` fails is treated as crashed: the supervisor restarts it (init and
    /// start again) within its budget.
    pub async fn start_all(&self) {
        let ids: Vec<String> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.refused.is_none())
            .map(|e| e.manifest.id.clone())
            .collect();
        for id in ids {
            let Some((addr, gauge)) = self.runtime.addrs.get(&id) else {
                continue;
            };
            let version = self
                .manifest(&id)
                .map(|m| m.version.to_string())
                .unwrap_or_default();
            match call(
                &addr,
                &gauge,
                StartPlugin,
                "start",
                self.timings.start_timeout,
            )
            .await
            {
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

    pub fn manifest(&self, id: &str) -> Option<PluginManifest> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|e| e.manifest.id == id)
            .map(|e| e.manifest.clone())
    }

    /// Every discovered plugin, in start order (refused ones last), with its state.
    pub fn list(&self) -> Vec<PluginView> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.iter().map(|e| self.view(e)).collect()
    }

    pub fn get(&self, id: &str) -> Option<PluginView> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
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
        }
    }
}

/// Turns the plugins supervisor's decisions into `plugin.*` events.
pub struct PluginsObserver {
    pub broker: BrokerHandle,
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
                let specs: Vec<ChildSpec> = {
                    let entries = host.entries.read().unwrap_or_else(|e| e.into_inner());
                    entries.iter().filter(|e| e.refused.is_none()).map(|e| host.spec(e)).collect()
                };
                for spec in specs {
                    let id = spec.id.clone();
                    if let Ok(Err(error)) = addr.send(AddChild { spec, phase: StartPhase::Restart }).await {
                        tracing::warn!(plugin = %id, %error, "Plugin did not come back after a restart of its supervisor.");
                    }
                }
            }
            Ok(Box::new(RunningSupervisor(addr)) as Box<dyn RunningChild>)
        }
        .boxed_local()
    }
}

//! A plugin's life under supervision, and the boot sequence across plugins.
//!
//! Owns the child factory that (re)creates a plugin instance (a fresh plugin from its factory,
//! a fresh actor, `init`, its registrations installed with its address, and `start` after
//! boot), the boot sequence (`init` each plugin in dependency order under the plugins
//! supervisor, then `start` each once HTTP listens), refusals, and the observer that turns
//! supervision into `plugin.*` events. Does not own restart decisions (`supervisor`) nor what
//! an operator asks for (`ops`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::actor::{InitPlugin, KillPlugin, PluginActor, StartPlugin, StopPlugin};
use super::call::send;
use super::host::{Entry, PluginHost, PLUGINS_PATH};
use super::registry::AddrTable;
use super::source::Discovered;
use super::{deps, Extensions, Plugin, PluginContext, PluginError, PluginFactory, PluginManifest};
use crate::broker::events::{self, Phase};
use crate::broker::BrokerHandle;
use crate::health::{ActorRecord, ActorState, LastError, MailboxGauge};
use crate::supervisor::child::{
    ChildFactory, ChildSpec, Placement, RunningChild, StartArgs, StartError, StartPhase,
};
use crate::supervisor::policy::ExitReason;
use crate::supervisor::{
    AddChild, ChildError, RunningSupervisor, Strategy, Supervisor, SupervisorObserver,
};

impl Entry {
    /// The ids it holds (its own, then its connector plugins') and where it comes from.
    pub(super) fn claim(&self) -> deps::Claim {
        let mut ids = vec![self.manifest.id.clone()];
        for c in &self.connectors {
            if !ids.contains(&c.id) {
                ids.push(c.id.clone());
            }
        }
        let origin = match &self.status {
            Some(status) => status.origin(),
            None => format!("the native built-in '{}'", self.manifest.id),
        };
        deps::Claim {
            ids,
            origin,
            native: self.status.is_none(),
        }
    }

    /// A refused duplicate is listed under what its loader knows it by (its directory), so it
    /// never shadows the plugin that holds the id.
    /// `taken` says whether an id is held by another plugin; the name chosen never is.
    pub(super) fn rename_to_key(&mut self, taken: impl Fn(&str) -> bool) {
        if let Some(status) = &self.status {
            let key = status.key();
            let mut id = key.to_string();
            let mut n = 1;
            while taken(&id) || id == self.manifest.id {
                id = if n == 1 {
                    format!("{key}.duplicate")
                } else {
                    format!("{key}.duplicate{n}")
                };
                n += 1;
            }
            self.manifest.id = id;
        }
        self.connectors.clear();
    }

    /// A catalogue entry for a discovered plugin, described by one built instance.
    pub(super) fn new(d: Discovered, instance: &dyn Plugin, supervised: bool) -> Entry {
        Entry {
            manifest: instance.manifest(),
            connectors: instance
                .connector_plugins()
                .into_iter()
                .map(Arc::new)
                .collect(),
            source: d.source,
            factory: d.factory,
            placement: d.placement,
            status: d.status,
            refused: None,
            supervised,
        }
    }
}

/// What every plugin actor needs from the host.
#[derive(Clone)]
pub struct PluginRuntime {
    pub broker: BrokerHandle,
    pub server_addr: Arc<OnceLock<SocketAddr>>,
    pub init_timeout: Duration,
    pub start_timeout: Duration,
    pub mailbox_capacity: usize,
    /// Where the current address of each plugin's actor is kept (stable handles).
    pub addrs: Arc<AddrTable>,
    /// The routes, tools and agents plugins register.
    pub ext: Arc<Extensions>,
}

/// Starts instances of one plugin for the plugins supervisor: a fresh plugin from its factory,
/// a fresh actor, `init` (and `start` after boot), with their events.
pub struct PluginChildFactory {
    pub factory: PluginFactory,
    pub runtime: PluginRuntime,
}

/// The supervisor's grip on a running plugin actor.
pub struct RunningPlugin {
    addr: Addr<PluginActor>,
    gauge: Arc<MailboxGauge>,
    arbiter: Option<Arbiter>,
    start_timeout: Duration,
}

impl Drop for RunningPlugin {
    fn drop(&mut self) {
        // The instance is gone (stopped, crashed or replaced): its thread may go too.
        if let Some(arbiter) = &self.arbiter {
            arbiter.stop();
        }
    }
}

impl RunningChild for RunningPlugin {
    fn stop(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        let addr = self.addr.clone();
        let gauge = self.gauge.clone();
        async move {
            gauge.enqueued();
            match addr.send(StopPlugin).await {
                Ok(result) => result.map_err(|e| e.message),
                // Already gone: nothing left to stop.
                Err(_) => Ok(()),
            }
        }
        .boxed_local()
    }

    fn kill(&self) {
        self.gauge.enqueued();
        self.addr.do_send(KillPlugin {
            reason: ExitReason::Shutdown,
        });
        if let Some(arbiter) = &self.arbiter {
            // A plugin stuck in blocking code keeps its thread; the arbiter is told to finish.
            arbiter.stop();
        }
    }

    fn mailbox(&self) -> Option<Arc<MailboxGauge>> {
        Some(self.gauge.clone())
    }

    fn activate(&self) -> LocalBoxFuture<'static, Result<(), StartError>> {
        let (addr, gauge, timeout) = (self.addr.clone(), self.gauge.clone(), self.start_timeout);
        async move {
            send(&addr, &gauge, StartPlugin, timeout)
                .await
                .map_err(|e| StartError::new("start", e.into_plugin_error("start").message))
        }
        .boxed_local()
    }
}

impl ChildFactory for PluginChildFactory {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>> {
        let plugin = (self.factory)();
        let manifest = plugin.manifest();
        if manifest.id != args.id {
            // Its files now declare another id: `ops::reload` moves it; this is the race.
            let message = format!(
                "the module now declares the id '{}', not '{}'; reload it again to move it",
                manifest.id, args.id
            );
            return async move { Err(StartError::new("validate", message)) }.boxed_local();
        }
        let inline = plugin.hooks_inline().then(|| plugin.clone());
        let rt = self.runtime.clone();
        let gauge = MailboxGauge::new(rt.mailbox_capacity);
        let span =
            tracing::info_span!("plugin", plugin = %manifest.id, generation = args.generation);
        let pctx = PluginContext::new(
            &manifest.id,
            rt.broker.clone(),
            rt.server_addr.clone(),
            rt.ext.clone(),
        );
        let actor = PluginActor::new(
            plugin,
            manifest.clone(),
            pctx.clone(),
            rt.broker.clone(),
            args.guard,
            gauge.clone(),
            rt.mailbox_capacity,
            span,
        );
        let (addr, arbiter) = match args.placement {
            Placement::Shared => (actor.start(), None),
            Placement::Dedicated => {
                let arbiter = Arbiter::new();
                let addr = PluginActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
                (addr, Some(arbiter))
            }
        };
        let killer = addr.clone();
        pctx.on_crash(Box::new(move |reason| {
            killer.do_send(KillPlugin {
                reason: ExitReason::Error(reason),
            })
        }));
        let phase = args.phase;
        async move {
            let running = RunningPlugin {
                addr: addr.clone(),
                gauge: gauge.clone(),
                arbiter,
                start_timeout: rt.start_timeout,
            };
            let id = manifest.id.clone();
            let version = manifest.version.to_string();
            let fail = |phase: Phase, error: PluginError| {
                rt.broker.emit(&events::PluginError {
                    plugin: id.clone(),
                    version: Some(version.clone()),
                    phase,
                    error: error.message.clone(),
                });
                running.addr.do_send(KillPlugin {
                    reason: ExitReason::Error(error.message.clone()),
                });
                // The step, so a reload can say which one failed.
                StartError::new(error.step.unwrap_or(phase_name(phase)), error.message)
            };
            let init_phase = if phase == StartPhase::Reload {
                Phase::Reload
            } else {
                Phase::Init
            };
            if let Err(error) = send(&addr, &gauge, InitPlugin, rt.init_timeout).await {
                return Err(fail(init_phase, error.into_plugin_error("init")));
            }
            // Routes, tools and agents switch to this instance together with its address, so
            // a handler number always reaches the instance that registered it.
            if let Err(reason) = rt.ext.install(&id, pctx.take_staged()) {
                return Err(fail(init_phase, PluginError::new(reason).at_step("init")));
            }
            rt.addrs.set(&id, addr.clone(), gauge.clone());
            rt.addrs.set_inline(&id, inline);
            if phase == StartPhase::Reload {
                // Prepared; the supervisor activates it once the old version has stopped.
                return Ok(Box::new(running) as Box<dyn RunningChild>);
            }
            tracing::info!(plugin = %id, version = %version, "Plugin loaded.");
            rt.broker.emit(&events::PluginLoaded {
                plugin: id.clone(),
                version: version.clone(),
            });
            if phase == StartPhase::Restart {
                if let Err(error) = send(&addr, &gauge, StartPlugin, rt.start_timeout).await {
                    return Err(fail(Phase::Start, error.into_plugin_error("start")));
                }
                tracing::info!(plugin = %id, "Plugin started.");
                rt.broker.emit(&events::PluginStarted {
                    plugin: id,
                    version,
                });
            }
            Ok(Box::new(running) as Box<dyn RunningChild>)
        }
        .boxed_local()
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Discover => "discover",
        Phase::Init | Phase::Reload => "init",
        Phase::Start => "start",
        Phase::Stop => "stop",
        Phase::Run => "run",
    }
}

impl PluginHost {
    /// Registers the discovered plugins (in discovery order), refuses those whose ids clash
    /// with an earlier plugin's, resolves the dependencies of the rest and refuses, with a
    /// `plugin.error` each, those that cannot load.
    pub fn discover(&self, plugins: Vec<Discovered>) {
        let mut entries: Vec<Entry> = plugins
            .into_iter()
            .map(|d| {
                let instance = (d.factory)();
                Entry::new(d, instance.as_ref(), false)
            })
            .collect();
        let claims: Vec<deps::Claim> = entries.iter().map(Entry::claim).collect();
        for (i, reason) in deps::clashes(&claims) {
            let held: Vec<String> = claims
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, c)| c.ids.clone())
                .chain(entries.iter().map(|e| e.manifest.id.clone()))
                .collect();
            entries[i].rename_to_key(|id| held.iter().any(|h| h == id));
            self.refuse(&mut entries[i], Phase::Discover, reason);
        }
        let live: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].refused.is_none())
            .collect();
        let manifests: Vec<PluginManifest> =
            live.iter().map(|&i| entries[i].manifest.clone()).collect();
        let resolution = deps::resolve(&manifests);
        let mut order: Vec<Option<usize>> = vec![None; entries.len()];
        for (position, &i) in resolution.order.iter().enumerate() {
            order[live[i]] = Some(position);
        }
        for (i, reason) in resolution.refused {
            self.refuse(&mut entries[live[i]], Phase::Discover, reason);
        }
        let mut entries: Vec<(Entry, Option<usize>)> = entries.into_iter().zip(order).collect();
        entries.sort_by_key(|(_, order)| order.unwrap_or(usize::MAX));
        *self.write() = entries.into_iter().map(|(e, _)| e).collect();
    }

    pub(super) fn refuse(&self, entry: &mut Entry, phase: Phase, reason: String) {
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
                .unwrap_or(Err(ChildError::Gone));
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
}

/// Turns the plugins supervisor's decisions into `plugin.*` events.
pub struct PluginsObserver {
    pub broker: BrokerHandle,
    pub ext: Arc<Extensions>,
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
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>> {
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

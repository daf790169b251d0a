//! `PluginActor`: one plugin instance on its own actor, and the factory that (re)creates it.
//!
//! Owns running a plugin's hooks one actor at a time, turning a panic inside any hook into a
//! structured error for the caller *and* a crash report for the supervisor, delivering bus
//! events to `on_event`, and publishing the plugin's lifecycle events. Does not own ordering
//! across plugins (`host`) or restart decisions (`supervisor`).

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tracing::Instrument;

use super::{
    Extensions, Hook, HookContext, Plugin, PluginContext, PluginError, PluginFactory,
    PluginManifest,
};
use crate::broker::events::{self, Phase};
use crate::broker::{BrokerHandle, Event};
use crate::health::MailboxGauge;
use crate::route::{RouteRequest, RouteResponse};
use super::call::{crash_message, send};
use crate::supervisor::child::{
    ChildFactory, DownGuard, Placement, RunningChild, StartArgs, StartPhase,
};
use crate::supervisor::policy::ExitReason;
use serde_json::Value;

// ---- Messages -------------------------------------------------------------------------------

/// Run the plugin's `init(ctx)`, then subscribe it to the patterns it registered.
#[derive(Message)]
#[rtype(result = "Result<(), PluginError>")]
pub struct InitPlugin;

/// Run the plugin's `start()`.
#[derive(Message)]
#[rtype(result = "Result<(), PluginError>")]
pub struct StartPlugin;

/// Run the plugin's `stop()`, publish `plugin.stopped`, and end the actor.
#[derive(Message)]
#[rtype(result = "Result<(), PluginError>")]
pub struct StopPlugin;

/// End the actor at once, reporting `reason` to the supervisor (a start that failed, or a stop
/// that overran its timeout).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KillPlugin {
    pub reason: ExitReason,
}

// ---- The actor ------------------------------------------------------------------------------

pub struct PluginActor {
    plugin: Arc<dyn Plugin>,
    manifest: PluginManifest,
    ctx: PluginContext,
    broker: BrokerHandle,
    guard: DownGuard,
    gauge: Arc<MailboxGauge>,
    mailbox_capacity: usize,
    span: tracing::Span,
}

impl PluginActor {
    /// Runs one hook beside the mailbox. A panic in it becomes `Err` for the caller, and the
    /// actor stops with the panic as its exit reason, so the supervisor restarts it fresh.
    fn run_hook<F, T>(
        &mut self,
        hook: &'static str,
        fut: F,
    ) -> ResponseActFuture<Self, Result<T, PluginError>>
    where
        F: Future<Output = Result<T, PluginError>> + 'static,
        T: 'static,
    {
        let span = tracing::info_span!(parent: &self.span, "plugin_hook", hook);
        Box::pin(
            AssertUnwindSafe(fut)
                .catch_unwind()
                .instrument(span)
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Err(error)) if error.fatal => {
                        tracing::error!(parent: &act.span, hook, %error, "Plugin broke a limit; it counts as crashed.");
                        act.guard.set_reason(ExitReason::Error(format!("{hook}: {}", error.message)));
                        ctx.stop();
                        Err(error)
                    }
                    Ok(outcome) => outcome,
                    Err(payload) => {
                        let message = crash_message(&*payload);
                        tracing::error!(parent: &act.span, hook, panic = %message, "Plugin hook panicked.");
                        act.guard.set_reason(ExitReason::Panic(message.clone()));
                        ctx.stop();
                        Err(PluginError::new(format!("{hook} panicked: {message}")))
                    }
                }),
        )
    }

    fn version(&self) -> String {
        self.manifest.version.to_string()
    }
}

impl Actor for PluginActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        tracing::debug!(parent: &self.span, generation = self.guard.generation(), "Plugin actor started.");
    }
}

impl Handler<InitPlugin> for PluginActor {
    type Result = ResponseActFuture<Self, Result<(), PluginError>>;

    fn handle(&mut self, _msg: InitPlugin, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        let pctx = self.ctx.clone();
        let init = self.run_hook("init", async move { plugin.init(&pctx).await });
        Box::pin(init.map(|result, act, ctx| {
            result?;
            let patterns = act.ctx.take_subscriptions();
            if !patterns.is_empty() {
                let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
                let sub = act
                    .broker
                    .subscribe(&patterns)
                    .map_err(|e| PluginError::new(e.to_string()))?;
                ctx.add_stream(sub.into_stream());
            }
            Ok(())
        }))
    }
}

impl Handler<StartPlugin> for PluginActor {
    type Result = ResponseActFuture<Self, Result<(), PluginError>>;

    fn handle(&mut self, _msg: StartPlugin, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_hook("start", async move { plugin.start().await })
    }
}

impl Handler<StopPlugin> for PluginActor {
    type Result = ResponseActFuture<Self, Result<(), PluginError>>;

    fn handle(&mut self, _msg: StopPlugin, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        let began = Instant::now();
        let stop = self.run_hook("stop", async move { plugin.stop().await });
        Box::pin(stop.map(move |result, act, ctx| {
            let plugin = act.manifest.id.clone();
            match &result {
                Ok(()) => {
                    tracing::info!(parent: &act.span, "Plugin stopped.");
                    act.broker.emit(&events::PluginStopped {
                        plugin,
                        version: act.version(),
                        duration_ms: began.elapsed().as_millis() as u64,
                    });
                }
                Err(error) => {
                    tracing::warn!(parent: &act.span, %error, "Plugin stop failed.");
                    act.broker.emit(&events::PluginError {
                        plugin,
                        version: Some(act.version()),
                        phase: Phase::Stop,
                        error: error.message.clone(),
                    });
                }
            }
            // A clean stop takes this instance's routes, tools and agents with it (a newer
            // instance's, after a reload, stay).
            act.ctx
                .extensions()
                .remove(&act.manifest.id, Some(act.ctx.instance()));
            act.guard.set_reason(ExitReason::Shutdown);
            ctx.stop();
            result
        }))
    }
}

/// Run one connector hook for a session; the session's context for this plugin travels with
/// the call and comes back changed.
#[derive(Message)]
#[rtype(result = "Result<HookReply, PluginError>")]
pub struct CallHook {
    pub connector_plugin: String,
    pub hook: Hook,
    pub input: Value,
    pub ctx: HookContext,
}

/// What a connector hook gave back.
#[derive(Debug)]
pub struct HookReply {
    /// `None`: the plugin has no such hook; its input passes through.
    pub output: Option<Value>,
    pub ctx: HookContext,
}

/// Tell a plugin that one of its hooks failed (Krawall's `onError`). A failure inside the
/// plugin's handler is caught and logged; it never affects the session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotifyError {
    pub connector_plugin: String,
    pub error: String,
    pub hook: Hook,
    pub ctx: HookContext,
}

/// Answer an HTTP request to one of the plugin's routes.
#[derive(Message)]
#[rtype(result = "Result<RouteResponse, PluginError>")]
pub struct CallRoute {
    pub handler: u32,
    pub request: RouteRequest,
}

/// Run one of the plugin's tools (the parameters already passed its schema).
#[derive(Message)]
#[rtype(result = "Result<Value, PluginError>")]
pub struct CallTool {
    pub name: String,
    pub params: Value,
}

impl Handler<CallRoute> for PluginActor {
    type Result = ResponseActFuture<Self, Result<RouteResponse, PluginError>>;

    fn handle(&mut self, msg: CallRoute, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_hook("route", async move {
            plugin.route(msg.handler, msg.request).await
        })
    }
}

impl Handler<CallTool> for PluginActor {
    type Result = ResponseActFuture<Self, Result<Value, PluginError>>;

    fn handle(&mut self, msg: CallTool, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_hook(
            "tool",
            async move { plugin.tool(&msg.name, msg.params).await },
        )
    }
}

impl Handler<CallHook> for PluginActor {
    type Result = ResponseActFuture<Self, Result<HookReply, PluginError>>;

    fn handle(&mut self, msg: CallHook, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_hook(msg.hook.name(), async move {
            let mut ctx = msg.ctx;
            let output = plugin
                .connector_hook(&msg.connector_plugin, msg.hook, msg.input, &mut ctx)
                .await?;
            Ok(HookReply { output, ctx })
        })
    }
}

impl Handler<NotifyError> for PluginActor {
    type Result = ();

    fn handle(&mut self, msg: NotifyError, _ctx: &mut Context<Self>) {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
            plugin.on_error(&msg.connector_plugin, &msg.error, msg.hook, &msg.ctx)
        }));
        if let Err(payload) = call {
            tracing::warn!(parent: &self.span, hook = msg.hook.name(), panic = %crash_message(&*payload), "onError itself panicked; ignored.");
        }
    }
}

impl Handler<KillPlugin> for PluginActor {
    type Result = ();

    fn handle(&mut self, msg: KillPlugin, ctx: &mut Context<Self>) {
        self.gauge.dequeued();
        if msg.reason == ExitReason::Shutdown {
            // Abandoned at stop: its registrations go as with a clean stop.
            self.ctx
                .extensions()
                .remove(&self.manifest.id, Some(self.ctx.instance()));
        }
        self.guard.set_reason(msg.reason);
        ctx.stop();
    }
}

impl StreamHandler<Arc<Event>> for PluginActor {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        let plugin = self.plugin.clone();
        let name = event.event.clone();
        let hook = self.run_hook("on_event", async move { plugin.on_event(&event).await });
        // In order, one at a time, like a handler on an event loop.
        ctx.wait(hook.map(move |result, act, _| {
            if let Err(error) = result {
                tracing::warn!(parent: &act.span, event = %name, %error, "Plugin event handler failed.");
            }
        }));
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The subscription stream only ends when the bus is gone for good (shutdown).
    }
}

// ---- Supervision ----------------------------------------------------------------------------

/// What every plugin actor needs from the host.
#[derive(Clone)]
pub struct PluginRuntime {
    pub broker: BrokerHandle,
    pub server_addr: Arc<OnceLock<SocketAddr>>,
    pub init_timeout: Duration,
    pub start_timeout: Duration,
    pub mailbox_capacity: usize,
    /// Where the current address of each plugin's actor is kept (stable handles).
    pub addrs: Arc<crate::plugin::host::AddrTable>,
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

    fn activate(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        let (addr, gauge, timeout) = (self.addr.clone(), self.gauge.clone(), self.start_timeout);
        async move {
            send(&addr, &gauge, StartPlugin, timeout)
                .await
                .map_err(|e| format!("start: {}", e.into_plugin_error("start").message))
        }
        .boxed_local()
    }
}

impl ChildFactory for PluginChildFactory {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, String>> {
        let plugin = (self.factory)();
        let manifest = plugin.manifest();
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
        let actor = PluginActor {
            plugin,
            manifest: manifest.clone(),
            ctx: pctx.clone(),
            broker: rt.broker.clone(),
            guard: args.guard,
            gauge: gauge.clone(),
            mailbox_capacity: rt.mailbox_capacity,
            span,
        };
        let (addr, arbiter) = match args.placement {
            Placement::Shared => (actor.start(), None),
            Placement::Dedicated => {
                let arbiter = Arbiter::new();
                let addr = PluginActor::start_in_arbiter(&arbiter.handle(), move |_| actor);
                (addr, Some(arbiter))
            }
        };
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
                // "<step>: <message>", so a reload can say which step failed.
                format!(
                    "{}: {}",
                    error.step.unwrap_or(phase_name(phase)),
                    error.message
                )
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

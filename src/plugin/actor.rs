//! `PluginActor`: one plugin instance on its own actor, with the messages it answers.
//!
//! Owns running a plugin's hooks one at a time beside its mailbox, turning a panic inside any
//! hook into a structured error for the caller *and* a crash report for the supervisor,
//! delivering bus events to `on_event`, and publishing `plugin.stopped`. Does not own how an
//! instance is created (`lifecycle`), how callers reach it (`call`), ordering across plugins
//! (`host`) or restart decisions (`supervisor`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::Value;
use tracing::Instrument;

use super::call::{crash_message, guarded, CallError};
use super::{Hook, HookContext, Plugin, PluginContext, PluginError, PluginManifest};
use crate::broker::events::{self, Phase};
use crate::broker::{BrokerHandle, Event};
use crate::health::MailboxGauge;
use crate::route::{RouteRequest, RouteResponse};
use crate::supervisor::child::DownGuard;
use crate::supervisor::policy::ExitReason;

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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        plugin: Arc<dyn Plugin>,
        manifest: PluginManifest,
        ctx: PluginContext,
        broker: BrokerHandle,
        guard: DownGuard,
        gauge: Arc<MailboxGauge>,
        mailbox_capacity: usize,
        span: tracing::Span,
    ) -> Self {
        PluginActor {
            manifest,
            plugin,
            ctx,
            broker,
            guard,
            gauge,
            mailbox_capacity,
            span,
        }
    }

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
        self.run_in(span, hook, fut)
    }

    /// [`PluginActor::run_hook`] in a span the caller made.
    fn run_in<F, T>(
        &mut self,
        span: tracing::Span,
        hook: &'static str,
        fut: F,
    ) -> ResponseActFuture<Self, Result<T, PluginError>>
    where
        F: Future<Output = Result<T, PluginError>> + 'static,
        T: 'static,
    {
        let plugin = self.manifest.id.clone();
        let run = async move { guarded(&plugin, hook, fut).await }.instrument(span);
        Box::pin(
            run.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(value) => Ok(value),
                    Err(Ok(CallError::Failed(error))) => Err(error),
                    Err(Ok(other)) => Err(PluginError::new(other.to_string())),
                    Err(Err(crash)) => {
                        act.guard.set_reason(crash.reason);
                        ctx.stop();
                        Err(match crash.error {
                            CallError::Failed(error) => error,
                            CallError::Crashed(message) => PluginError::new(format!(
                                "{hook} panicked: {}",
                                message.unwrap_or_default()
                            )),
                            other => PluginError::new(other.to_string()),
                        })
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
    /// The caller's deadline: the call is dropped here too once it passes (see [`abandoned`]).
    pub timeout: Duration,
    /// The call's span (`plugin`, `hook`), a child of the caller's (the session, the request):
    /// the hook's log lines carry them although they are written on this actor's thread.
    pub span: tracing::Span,
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
    /// The caller's deadline (see [`abandoned`]).
    pub timeout: Duration,
}

/// Run one of the plugin's tools (the parameters already passed its schema).
#[derive(Message)]
#[rtype(result = "Result<Value, PluginError>")]
pub struct CallTool {
    pub name: String,
    pub params: Value,
    /// The caller's deadline (see [`abandoned`]).
    pub timeout: Duration,
}

/// A caller that gave up (its timeout) does not stop the call on the actor, which would go on
/// holding what it waits for (a script's pending promise, its host calls) for ever. So the
/// actor drops the call too, just after the caller's deadline: the caller still reports its
/// own timeout, and the plugin forgets the call.
fn abandoned<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, PluginError>>,
) -> impl Future<Output = Result<T, PluginError>> {
    const MARGIN: Duration = Duration::from_millis(100);
    async move {
        tokio::time::timeout(timeout + MARGIN, fut)
            .await
            .unwrap_or_else(|_| {
                Err(PluginError::new(format!(
                    "abandoned after {} ms: the caller stopped waiting",
                    timeout.as_millis()
                )))
            })
    }
}

impl Handler<CallRoute> for PluginActor {
    type Result = ResponseActFuture<Self, Result<RouteResponse, PluginError>>;

    fn handle(&mut self, msg: CallRoute, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_hook(
            "route",
            abandoned(msg.timeout, async move {
                plugin.route(msg.handler, msg.request).await
            }),
        )
    }
}

impl Handler<CallTool> for PluginActor {
    type Result = ResponseActFuture<Self, Result<Value, PluginError>>;

    fn handle(&mut self, msg: CallTool, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_hook(
            "tool",
            abandoned(msg.timeout, async move {
                plugin.tool(&msg.name, msg.params).await
            }),
        )
    }
}

impl Handler<CallHook> for PluginActor {
    type Result = ResponseActFuture<Self, Result<HookReply, PluginError>>;

    fn handle(&mut self, msg: CallHook, _ctx: &mut Context<Self>) -> Self::Result {
        self.gauge.dequeued();
        let plugin = self.plugin.clone();
        self.run_in(
            msg.span,
            msg.hook.name(),
            abandoned(msg.timeout, async move {
                let mut ctx = msg.ctx;
                let output = plugin
                    .connector_hook(&msg.connector_plugin, msg.hook, &msg.input, &mut ctx)
                    .await?;
                Ok(HookReply { output, ctx })
            }),
        )
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

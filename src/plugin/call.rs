//! The one way to call a plugin: a connector hook, a route handler, a tool, or a lifecycle
//! step, each under one deadline and with one meaning for a crash.
//!
//! Owns finding the plugin's current instance (it may have been restarted since the caller
//! last looked), running a connector hook inline on the caller's thread when the plugin allows
//! it ([`Plugin::hooks_inline`]) or through its actor's mailbox otherwise, the deadline (a
//! hook's budget is its own timeout cut by the message's deadline, [`hook_budget`]; an inline
//! hook that answers on its first poll arms no timer), lending the hook's input (an inline
//! plugin reads the caller's value; only the actor path copies it), and
//! what a panic or a fatal error means: the caller gets an error and the plugin's actor stops
//! with the reason, so its supervisor restarts it fresh. Also `onError` notifications and the
//! `tool.executed` event every tool call publishes. Does not own the plugin's code, the order
//! of a pipeline (`session`) nor restart decisions (`supervisor`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::FutureExt;
use serde_json::Value;
use tracing::Instrument;

use super::actor::{CallHook, CallRoute, CallTool, KillPlugin, NotifyError, PluginActor};
use super::host::PluginHost;
use super::{Hook, HookContext, Plugin, PluginError};
use crate::broker::events::ToolExecuted;
use crate::broker::BrokerHandle;
use crate::health::MailboxGauge;
use crate::metrics::HookResult;
use crate::route::{RouteRequest, RouteResponse};
use crate::supervisor::child::{panic_message, take_last_panic};
use crate::supervisor::policy::ExitReason;
use crate::tool::{Caller, Invocation, ToolError};

/// Why a call into a plugin did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No live instance: restarting, parked, disabled or stopped.
    #[error("plugin '{0}' is not running")]
    NotRunning(String),
    /// The plugin answered with an error.
    #[error("{}", .0.message)]
    Failed(PluginError),
    /// The plugin crashed while it had the call (its supervisor restarts it).
    #[error("the plugin crashed during the call{}", .0.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Crashed(Option<String>),
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
}

impl CallError {
    /// As a lifecycle step's error: the plugin's own error as it is (with its step), the
    /// others described with `what` (`init`, `start`, …).
    pub fn into_plugin_error(self, what: &str) -> PluginError {
        match self {
            CallError::Failed(error) => error,
            CallError::Timeout(limit) => PluginError::new(format!(
                "{what} did not finish within {} ms",
                limit.as_millis()
            )),
            CallError::Crashed(_) | CallError::NotRunning(_) => {
                PluginError::new(format!("{what} failed: the plugin actor is gone"))
            }
        }
    }
}

/// What a caught panic says; also clears the panic hook's copy of it, since the panic is
/// handled here rather than by a dying actor.
pub(crate) fn crash_message(payload: &(dyn std::any::Any + Send)) -> String {
    take_last_panic();
    panic_message(payload)
}

/// How a plugin's code ended when it did not simply answer: the error for the caller, and
/// the reason the instance must go when it crashed.
pub(crate) struct Crash {
    pub error: CallError,
    pub reason: ExitReason,
}

/// Runs a piece of a plugin's code (a hook, a route, a tool, a lifecycle step), catching a
/// panic. A panic or a fatal error (a broken resource limit) is a crash: the instance must
/// stop with the returned reason, so its supervisor restarts it fresh. The one place that
/// decides what counts as a plugin crash, for calls on the actor and inline alike.
pub(crate) async fn guarded<T>(
    plugin: &str,
    hook: &str,
    run: impl std::future::Future<Output = Result<T, PluginError>>,
) -> Result<T, Result<CallError, Crash>> {
    match AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) if error.fatal => {
            tracing::error!(plugin, hook, %error, "Plugin broke a limit; it counts as crashed.");
            let reason = ExitReason::Error(format!("{hook}: {}", error.message));
            Err(Err(Crash {
                error: CallError::Failed(error),
                reason,
            }))
        }
        Ok(Err(error)) => Err(Ok(CallError::Failed(error))),
        Err(payload) => {
            let message = crash_message(&*payload);
            tracing::error!(plugin, hook, panic = %message, "Plugin hook panicked.");
            Err(Err(Crash {
                error: CallError::Crashed(Some(message.clone())),
                reason: ExitReason::Panic(message),
            }))
        }
    }
}

/// Sends `msg` to a plugin actor and waits at most `timeout` for its answer.
pub(crate) async fn send<M, T>(
    addr: &Addr<PluginActor>,
    gauge: &MailboxGauge,
    msg: M,
    timeout: Duration,
) -> Result<T, CallError>
where
    M: Message<Result = Result<T, PluginError>> + Send + 'static,
    T: Send + 'static,
    PluginActor: Handler<M>,
{
    gauge.enqueued();
    match tokio::time::timeout(timeout, addr.send(msg)).await {
        Ok(Ok(result)) => result.map_err(CallError::Failed),
        Ok(Err(_)) => {
            gauge.dequeued();
            Err(CallError::Crashed(None))
        }
        Err(_) => Err(CallError::Timeout(timeout)),
    }
}

/// How long a hook may run: its own timeout, cut short by the message's deadline when the
/// message has one. Pure, so the walk's one clock reading per hook decides both; a deadline
/// already past leaves nothing (the hook then times out as if it ran over its own).
pub fn hook_budget(timeout: Duration, deadline: Option<Instant>, now: Instant) -> Duration {
    match deadline {
        Some(deadline) => timeout.min(deadline.saturating_duration_since(now)),
        None => timeout,
    }
}

/// Runs connector hook `hook` of `connector_plugin` (provided by plugin `module`) with the
/// session's context for it, which comes back changed on success. `Ok(None)`: the plugin has
/// no such hook, or changed nothing, and its input passes through. `input` is asked for only
/// when the hook is called, and lent: a plugin that does not have the hook costs a lookup, an
/// inline (native) plugin reads the caller's value in place, and only the actor path copies
/// it (the value crosses threads). `timeout` is the hook's budget (see [`hook_budget`]). Every
/// call is counted and timed here, on both paths (inline and through the actor), per plugin
/// and hook.
#[allow(clippy::too_many_arguments)]
pub async fn hook<'i>(
    host: &PluginHost,
    module: &str,
    connector_plugin: &str,
    hook: Hook,
    input: impl FnOnce() -> &'i Value,
    ctx: &mut HookContext,
    timeout: Duration,
) -> Result<Option<Value>, CallError> {
    let inline = host.inline_hooks(module);
    if let Some((plugin, _)) = &inline {
        if !plugin.has_hook(connector_plugin, hook) {
            return Ok(None);
        }
    }
    let began = Instant::now();
    // One span per call on both paths, under the caller's (session, request): every line the
    // hook logs says which plugin, hook, session and request it belongs to.
    let span = tracing::info_span!("plugin_hook", plugin = %module, hook = hook.name());
    let result = match inline {
        Some((plugin, addr)) => {
            let call = Inline {
                plugin,
                addr,
                module,
                connector_plugin,
                hook,
                timeout,
                began,
            };
            call.run(input(), ctx).instrument(span).await
        }
        None => {
            through_actor(
                host,
                module,
                connector_plugin,
                hook,
                input().clone(),
                ctx,
                timeout,
                span,
            )
            .await
        }
    };
    let counted = match result {
        Ok(_) => HookResult::Ok,
        Err(_) => HookResult::Failed,
    };
    host.metrics()
        .hook_called(module, hook.name(), began.elapsed(), counted);
    result
}

#[allow(clippy::too_many_arguments)]
async fn through_actor(
    host: &PluginHost,
    module: &str,
    connector_plugin: &str,
    hook: Hook,
    input: Value,
    ctx: &mut HookContext,
    timeout: Duration,
    span: tracing::Span,
) -> Result<Option<Value>, CallError> {
    let (addr, gauge) = host
        .running_addr(module)
        .ok_or_else(|| CallError::NotRunning(module.to_string()))?;
    let message = CallHook {
        connector_plugin: connector_plugin.to_string(),
        hook,
        input,
        ctx: ctx.clone(),
        timeout,
        span,
    };
    let reply = send(&addr, &gauge, message, timeout).await?;
    *ctx = reply.ctx;
    Ok(reply.output)
}

/// The fast path: the hook runs right here, on the caller's thread, which saves two thread
/// wake-ups. The crash semantics stay those of the plugin's actor: a panic or a fatal error
/// stops that actor with the reason, and its supervisor restarts it fresh.
struct Inline<'a> {
    plugin: Arc<dyn Plugin>,
    addr: Addr<PluginActor>,
    module: &'a str,
    connector_plugin: &'a str,
    hook: Hook,
    timeout: Duration,
    /// When the call began: its deadline counts from here.
    began: Instant,
}

impl Inline<'_> {
    async fn run(self, input: &Value, ctx: &mut HookContext) -> Result<Option<Value>, CallError> {
        // A failed hook leaves the session's state as it was. Only the state is kept aside
        // (usually empty, so free): the ids and the config are not the plugin's to change.
        let state = ctx.state.clone();
        let ended = {
            let run = self
                .plugin
                .connector_hook(self.connector_plugin, self.hook, input, ctx);
            let mut run = std::pin::pin!(guarded(self.module, self.hook.name(), run));
            // Most hooks answer without waiting: poll once before arming a timer, so those
            // never touch the timer wheel; one that waits gets a timer for what is left of
            // its budget.
            match futures::poll!(run.as_mut()) {
                std::task::Poll::Ready(ended) => Some(ended),
                std::task::Poll::Pending => {
                    let left = self.timeout.saturating_sub(self.began.elapsed());
                    tokio::time::timeout(left, run).await.ok()
                }
            }
        };
        let result = match ended {
            // A hook that ran past its timeout without yielding (blocking code cannot be
            // interrupted here) is bypassed all the same, as on the plugin's own thread.
            Some(Ok(_)) if self.began.elapsed() > self.timeout => {
                Err(CallError::Timeout(self.timeout))
            }
            Some(Ok(output)) => return Ok(output),
            Some(Err(Ok(error))) => Err(error),
            Some(Err(Err(crash))) => {
                self.addr.do_send(KillPlugin {
                    reason: crash.reason,
                });
                Err(crash.error)
            }
            None => Err(CallError::Timeout(self.timeout)),
        };
        ctx.state = state;
        result
    }
}

/// Tells plugin `module` that one of its hooks failed (Krawall's `onError`), without waiting
/// and without letting a failure there matter.
pub fn notify_error(
    host: &PluginHost,
    module: &str,
    connector_plugin: &str,
    hook: Hook,
    error: &str,
    ctx: &HookContext,
) {
    if let Some((addr, gauge)) = host.running_addr(module) {
        gauge.enqueued();
        let message = NotifyError {
            connector_plugin: connector_plugin.to_string(),
            error: error.to_string(),
            hook,
            ctx: ctx.clone(),
        };
        if addr.try_send(message).is_err() {
            gauge.dequeued();
        }
    }
}

/// Answers a request to route handler `handler` of `plugin`.
pub async fn route(
    host: &PluginHost,
    plugin: &str,
    handler: u32,
    request: RouteRequest,
    timeout: Duration,
) -> Result<RouteResponse, CallError> {
    let (addr, gauge) = host
        .running_addr(plugin)
        .ok_or_else(|| CallError::NotRunning(plugin.to_string()))?;
    let message = CallRoute {
        handler,
        request,
        timeout,
    };
    send(&addr, &gauge, message, timeout).await
}

/// Invokes tool `name`: checks `params` against its schema, runs it on its plugin (at most
/// `timeout`), and publishes `tool.executed` whatever the outcome.
pub async fn tool(
    host: &PluginHost,
    broker: &BrokerHandle,
    name: &str,
    params: Value,
    caller: &Caller,
    timeout: Duration,
) -> Result<Invocation, ToolError> {
    let tool = host
        .extensions()
        .tools
        .get(name)
        .ok_or_else(|| ToolError::NotFound(name.to_string()))?;
    let began = Instant::now();
    let span = tracing::info_span!("tool", tool = %name, plugin = %tool.plugin);
    let outcome = async {
        tool.validate(&params)?;
        let msg = CallTool {
            name: name.to_string(),
            params: params.clone(),
            timeout,
        };
        let (addr, gauge) =
            host.running_addr(&tool.plugin)
                .ok_or_else(|| ToolError::Unavailable {
                    tool: name.to_string(),
                    plugin: tool.plugin.clone(),
                })?;
        send(&addr, &gauge, msg, timeout)
            .await
            .map_err(|e| ToolError::Failed {
                tool: name.to_string(),
                plugin: tool.plugin.clone(),
                message: e.to_string(),
            })
    };
    let outcome = outcome.instrument(span).await;
    let duration_ms = began.elapsed().as_secs_f64() * 1000.0;
    broker.emit(&ToolExecuted {
        tool_name: name.to_string(),
        plugin: tool.plugin.clone(),
        agent_id: caller.agent_id.clone(),
        session_id: caller.session_id.clone(),
        params,
        result: outcome.as_ref().ok().cloned(),
        error: outcome.as_ref().err().map(ToString::to_string),
        duration_ms,
    });
    outcome.map(|result| Invocation {
        tool: name.to_string(),
        plugin: tool.plugin,
        result,
        duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_gets_its_own_timeout_or_what_is_left_of_the_message_deadline() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(hook_budget(ms(500), None, now), ms(500), "no deadline");
        assert_eq!(
            hook_budget(ms(500), Some(now + ms(2000)), now),
            ms(500),
            "the hook's own timeout comes first"
        );
        assert_eq!(
            hook_budget(ms(500), Some(now + ms(120)), now),
            ms(120),
            "the message's deadline comes first"
        );
        assert_eq!(
            hook_budget(ms(500), Some(now), now + ms(5)),
            Duration::ZERO,
            "a deadline already past leaves nothing"
        );
    }

    #[test]
    fn errors_read_as_the_caller_reports_them() {
        assert_eq!(
            CallError::Timeout(Duration::from_millis(100)).to_string(),
            "timed out after 100 ms"
        );
        assert_eq!(
            CallError::Crashed(Some("boom".into())).to_string(),
            "the plugin crashed during the call: boom"
        );
        assert_eq!(
            CallError::Failed(PluginError::new("nope")).to_string(),
            "nope"
        );
        let step = PluginError::new("bad syntax").at_step("compile");
        assert_eq!(
            CallError::Failed(step.clone()).into_plugin_error("init"),
            step
        );
        assert_eq!(
            CallError::Timeout(Duration::from_millis(5))
                .into_plugin_error("start")
                .message,
            "start did not finish within 5 ms"
        );
    }
}

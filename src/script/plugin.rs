//! One instance of a script plugin: a [`Plugin`] whose hooks run in a QuickJS engine of its own.
//!
//! Owns calling into the engine (each run of JS under the time budget), the host calls a script
//! starts that finish later (inference `chat`, `fetch`, timers: run as tasks on the thread that
//! ran the JS — the plugin's own, or a session's when hooks run there — their outcomes
//! delivered back between runs of JS, so waiting never spends the time budget), cancelling them (`clearTimeout`, an aborted fetch, and all of them when the instance
//! stops or is dropped: timers die with their plugin on reload), and the plugin's identity as
//! its module declares it. Does not own discovery (`script`), the engine itself (`engine`) nor
//! the fetch policy (`fetch`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use semver::Version;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::engine::{Bridge, Engine, HostOp, ModuleInfo, ScriptError, Sources, Step};
use super::fetch::{FetchRequest, Fetcher};
use super::{PluginPolicy, ScriptSource, ScriptStatus};
use crate::broker::Event;
use crate::plugin::{
    ConfigField, ConnectorPluginInfo, Hook, HookContext, Plugin, PluginContext, PluginError,
    PluginManifest,
};
use crate::route::{RouteRequest, RouteResponse};

/// How often a script plugin's engine memory is measured for the API.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A host call's outcome: `Ok` resolves the script's promise, `Err` rejects it.
type Settled = (u64, Result<Value, Value>);

/// One instance of a script plugin: its engine (or why it could not be loaded).
pub struct ScriptPlugin {
    core: Arc<Core>,
    manifest: PluginManifest,
    /// `plugins.script.hooks_on_session_thread`.
    hooks_inline: bool,
}

/// What the instance's calls and its background host calls share.
struct Core {
    engine: Mutex<Result<Engine, ScriptError>>,
    env: Arc<OpEnv>,
    status: Arc<ScriptStatus>,
    sampled_at: Mutex<Option<Instant>>,
    /// Host calls in flight, by id, until their outcome is delivered.
    tasks: Mutex<HashMap<u64, tokio::task::AbortHandle>>,
    settled_tx: mpsc::UnboundedSender<Settled>,
    /// Taken by the delivery task when the first host call starts.
    settled_rx: Mutex<Option<mpsc::UnboundedReceiver<Settled>>>,
    /// Bumped after each delivery: waiting calls look at their promise again.
    delivered: watch::Sender<u64>,
    /// Calls whose caller went away (a hook timeout): forgotten at the next run.
    abandoned: Mutex<Vec<u64>>,
    /// A limit breach outside any call (a timer callback): every later call reports it.
    broken: Mutex<Option<ScriptError>>,
    max_host_calls: usize,
}

/// What a host call needs to run: the plugin's context and its fetch policy.
struct OpEnv {
    bridge: Arc<Bridge>,
    fetcher: Fetcher,
    /// Streamed model calls (`client.chat(messages, { stream: true })`) by id: what arrived
    /// and was not taken yet.
    streams: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<ChatChunks>>>>,
    next_stream: std::sync::atomic::AtomicU64,
}

/// The chunks of one streamed model call: `{type: "delta", text}`, then `{type: "done",
/// result}` or an error.
type ChatChunks = mpsc::UnboundedReceiver<Result<Value, Value>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ScriptPlugin {
    /// Loads the module now (compile, evaluate, check contracts). A failure is kept and
    /// returned by `init`, so it surfaces as `plugin.error` with its file and line.
    pub fn load(
        source: &ScriptSource,
        policy: &(dyn Fn(&[&str]) -> PluginPolicy + Send + Sync),
        status: Arc<ScriptStatus>,
    ) -> ScriptPlugin {
        let mut chosen = policy(&[&source.id]);
        let bridge = Arc::new(Bridge::new(&source.id));
        // A restart after a failed reload starts the version that last initialised, not the
        // broken files; a reload (or the first start) reads the files.
        let sources = match status.start_from() {
            Some(snapshot) => Sources::Snapshot(snapshot),
            None => Sources::disk(),
        };
        let engine = Engine::load(
            &source.dir,
            &source.entry,
            chosen.limits,
            bridge.clone(),
            sources,
        );
        let (manifest, engine) = match engine {
            Ok(mut engine) => match manifest_of(&source.id, &engine.info) {
                Ok(manifest) => {
                    if manifest.id != source.id {
                        // Settings may name the plugin by its declared id.
                        chosen = policy(&[&manifest.id, &source.id]);
                        engine.set_limits(chosen.limits);
                    }
                    (manifest, Ok(engine))
                }
                Err(problem) => (
                    fallback_manifest(&source.id, &status),
                    Err(ScriptError::Contract(problem)),
                ),
            },
            Err(error) => (fallback_manifest(&source.id, &status), Err(error)),
        };
        bridge.rename(&manifest.id);
        let fetcher = Fetcher::new(&manifest.id, chosen.fetch, status.fetch.clone());
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        ScriptPlugin {
            core: Arc::new(Core {
                engine: Mutex::new(engine),
                env: Arc::new(OpEnv {
                    bridge,
                    fetcher,
                    streams: Mutex::new(HashMap::new()),
                    next_stream: std::sync::atomic::AtomicU64::new(1),
                }),
                status,
                sampled_at: Mutex::new(None),
                tasks: Mutex::new(HashMap::new()),
                settled_tx,
                settled_rx: Mutex::new(Some(settled_rx)),
                delivered: watch::Sender::new(0),
                abandoned: Mutex::new(Vec::new()),
                broken: Mutex::new(None),
                max_host_calls: chosen.limits.max_host_calls,
            }),
            manifest,
            hooks_inline: chosen.hooks_on_session_thread,
        }
    }

    /// Why the module could not be loaded, if it could not.
    pub fn load_error(&self) -> Option<ScriptError> {
        lock(&self.core.engine).as_ref().err().cloned()
    }

    /// Runs `method` without waiting for a promise it returns (its host calls still run).
    pub fn call(&self, method: &str, args: &[Value]) -> Result<Value, PluginError> {
        self.core.run(|e| e.call(method, args))
    }

    /// Runs `method` to the end: between runs of JS it waits for the host calls its promise
    /// waits on. Other calls may run meanwhile, as in any JavaScript event loop.
    async fn call_async(&self, method: &str, args: &[Value]) -> Result<Value, PluginError> {
        self.drive(method, |e| e.start(method, args)).await
    }

    /// Takes the first step with `first`, then waits out the promise it may leave (see
    /// [`Self::call_async`]); `method` names the call in errors.
    async fn drive(
        &self,
        method: &str,
        first: impl FnOnce(&Engine) -> Result<Step, ScriptError>,
    ) -> Result<Value, PluginError> {
        let core = &self.core;
        let mut delivered = core.delivered.subscribe();
        let call = match core.run(first)? {
            Step::Done(value) => return Ok(value),
            Step::Waiting(call) => call,
        };
        core.status.waiting_calls.fetch_add(1, Ordering::Relaxed);
        let mut pending = Pending {
            core,
            call: Some(call),
        };
        loop {
            if lock(&core.tasks).is_empty() {
                return Err(PluginError::new(format!(
                    "{method}: the promise it returned waits on nothing and will never settle"
                )));
            }
            if delivered.changed().await.is_err() {
                return Err(PluginError::new("the plugin's engine is gone"));
            }
            if let Step::Done(value) = core.run(|e| e.poll(call))? {
                pending.call = None;
                return Ok(value);
            }
        }
    }
}

/// A call somebody waits on; dropped early (the hook timed out), the engine forgets it.
struct Pending<'a> {
    core: &'a Core,
    call: Option<u64>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.core
            .status
            .waiting_calls
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(call) = self.call {
            lock(&self.core.abandoned).push(call);
        }
    }
}

impl Core {
    /// Runs `f` on the engine, then starts the host calls it asked for and cancels the ones it
    /// gave up. Limit breaches are fatal.
    fn run<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&Engine) -> Result<T, ScriptError>,
    ) -> Result<T, PluginError> {
        if let Some(error) = lock(&self.broken).clone() {
            return Err(plugin_error(error));
        }
        let result = {
            let engine = lock(&self.engine);
            let engine = engine.as_ref().map_err(load_error)?;
            let abandoned = std::mem::take(&mut *lock(&self.abandoned));
            if !abandoned.is_empty() {
                let _ = engine.abandon(&abandoned);
            }
            let result = f(engine);
            self.sample_memory(engine);
            result
        };
        self.start_ops();
        if let Err(error) = &result {
            if error.is_fatal() {
                *lock(&self.broken) = Some(error.clone());
                self.cancel_all();
            }
        }
        result.map_err(plugin_error)
    }

    /// Starts the host calls the script asked for, as tasks on this thread.
    fn start_ops(self: &Arc<Self>) {
        // Cancels first, so what the script gave up frees room for what it asked next; a call
        // cancelled in the run that started it is never started.
        let cancels = self.env.bridge.take_cancels();
        let mut tasks = lock(&self.tasks);
        for id in &cancels {
            if let Some(task) = tasks.remove(id) {
                task.abort();
            }
        }
        let ops = self.env.bridge.take_ops();
        if ops.is_empty() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // Only unit tests call an engine outside the actor system.
            tracing::warn!(plugin = %self.env.bridge.plugin_id(), "Host calls need the actor system; ignored.");
            return;
        }
        if let Some(rx) = lock(&self.settled_rx).take() {
            tokio::task::spawn_local(deliver(Arc::downgrade(self), rx));
        }
        let cap = self.max_host_calls;
        for op in ops.into_iter().filter(|op| !cancels.contains(&op.id)) {
            if tasks.len() >= cap {
                // Host calls live outside the engine's memory limit: cap them.
                let _ = self.settled_tx.send((op.id, Err(json!({
                    "code": "too_many_host_calls",
                    "message": format!("the plugin already has {cap} host calls (timers, fetches, model calls) in flight (plugins.script.max_host_calls)"),
                }))));
                continue;
            }
            let (env, tx, id) = (self.env.clone(), self.settled_tx.clone(), op.id);
            let task = tokio::task::spawn_local(async move {
                let outcome = env.perform(op).await;
                let _ = tx.send((id, outcome));
            });
            tasks.insert(id, task.abort_handle());
        }
    }

    /// Cancels every host call in flight: timers, fetches, inference.
    fn cancel_all(&self) {
        for (_, task) in lock(&self.tasks).drain() {
            task.abort();
        }
    }

    /// Measuring walks the whole engine heap: do it at most once a second, not per call.
    fn sample_memory(&self, engine: &Engine) {
        let mut sampled = lock(&self.sampled_at);
        if sampled.is_none_or(|at| at.elapsed() >= MEMORY_SAMPLE_EVERY) {
            *sampled = Some(Instant::now());
            self.status.record_memory(engine.memory_bytes());
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// Delivers host-call outcomes to the engine as they come, whether or not a call waits on
/// them (a timer set in `start()` fires long after it returned). Ends with the instance.
async fn deliver(core: Weak<Core>, mut rx: mpsc::UnboundedReceiver<Settled>) {
    while let Some(first) = rx.recv().await {
        let mut done = vec![first];
        while let Ok(more) = rx.try_recv() {
            done.push(more);
        }
        let Some(core) = core.upgrade() else { break };
        let ids: Vec<u64> = done.iter().map(|(id, _)| *id).collect();
        let outcome = core.run(|e| e.deliver(done));
        {
            let mut tasks = lock(&core.tasks);
            for id in ids {
                tasks.remove(&id);
            }
        }
        match outcome {
            // A broken limit (memory, time) in a callback: the instance is done for, and its
            // supervisor learns it now, not at the next call.
            Err(error) if error.fatal => {
                tracing::error!(plugin = %core.env.bridge.plugin_id(), %error, "A callback of a timer or host call broke a limit; the plugin counts as crashed.");
                if let Some(ctx) = core.env.bridge.ctx.get() {
                    ctx.crash(format!("a timer or host-call callback: {}", error.message));
                }
            }
            Err(error) => {
                tracing::warn!(plugin = %core.env.bridge.plugin_id(), %error, "A callback of a timer or host call failed.");
            }
            Ok(()) => {}
        }
        core.delivered.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl OpEnv {
    /// Runs one host call for the script; the outcome settles its promise.
    async fn perform(&self, op: HostOp) -> Result<Value, Value> {
        match op.kind.as_str() {
            "timer" => {
                let ms = op.payload["ms"].as_f64().unwrap_or(0.0).max(0.0);
                tokio::time::sleep(Duration::from_micros((ms * 1000.0) as u64)).await;
                Ok(Value::Null)
            }
            "fetch" => {
                let request = FetchRequest::from_json(&op.payload).map_err(|e| e.to_json())?;
                self.fetcher
                    .fetch(request)
                    .await
                    .map(|r| r.to_json())
                    .map_err(|e| e.to_json())
            }
            "chat" => self.chat(&op.payload).await,
            "chat_stream" => self.chat_stream(&op.payload),
            "chat_next" => self.chat_next(&op.payload).await,
            "chat_close" => {
                let id = op.payload["streamId"].as_u64().unwrap_or(0);
                lock(&self.streams).remove(&id);
                Ok(Value::Null)
            }
            other => Err(json!({ "message": format!("unknown host call '{other}'") })),
        }
    }

    /// The client and request of a `chat` or `chat_stream` call.
    fn chat_call(
        &self,
        payload: &Value,
    ) -> Result<(Arc<crate::inference::Client>, crate::inference::ChatRequest), Value> {
        let ctx = self.bridge.ctx.get().ok_or_else(|| {
            chat_failure(
                "unavailable",
                "resolveClient() needs init(ctx) first".into(),
            )
        })?;
        let client = ctx
            .resolve_client_json(&payload["config"])
            .map_err(|e| chat_failure("invalid_client_config", e.message))?;
        let request: crate::inference::ChatRequest =
            serde_json::from_value(payload["request"].clone()).map_err(|e| {
                chat_failure(
                    "invalid_chat_request",
                    format!("chat(messages, options): {e}"),
                )
            })?;
        Ok((client, request))
    }

    async fn chat(&self, payload: &Value) -> Result<Value, Value> {
        let (client, request) = self.chat_call(payload)?;
        match client.chat(request).await {
            Ok(response) => Ok(serde_json::to_value(response).unwrap_or(Value::Null)),
            Err(error) => Err(inference_failure(&error)),
        }
    }

    /// Starts a streamed model call; its chunks wait here until the script takes them
    /// (`chat_next`). The call runs to its end on this thread whether or not they are taken.
    fn chat_stream(&self, payload: &Value) -> Result<Value, Value> {
        let (client, request) = self.chat_call(payload)?;
        let id = self
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.streams).insert(id, Arc::new(tokio::sync::Mutex::new(rx)));
        tokio::task::spawn_local(async move {
            let mut on_delta = |text: &str| {
                let _ = tx.send(Ok(json!({ "type": "delta", "text": text })));
            };
            let last = match client.chat_stream(request, &mut on_delta).await {
                Ok(result) => Ok(json!({ "type": "done", "result": result })),
                Err(error) => Err(inference_failure(&error)),
            };
            let _ = tx.send(last);
        });
        Ok(json!({ "streamId": id }))
    }

    /// The next chunk of a streamed call, waiting for it; the last one (`done` or an error)
    /// forgets the stream.
    async fn chat_next(&self, payload: &Value) -> Result<Value, Value> {
        let id = payload["streamId"].as_u64().unwrap_or(0);
        let chunks = lock(&self.streams).get(&id).cloned().ok_or_else(|| {
            chat_failure("stream_closed", format!("no streamed chat #{id} is open"))
        })?;
        let next = chunks.lock().await.recv().await;
        let last = !matches!(&next, Some(Ok(chunk)) if chunk["type"] == "delta");
        if last {
            lock(&self.streams).remove(&id);
        }
        next.unwrap_or_else(|| {
            Err(chat_failure(
                "stream_closed",
                "the streamed chat ended without an answer".into(),
            ))
        })
    }
}

fn chat_failure(code: &str, message: String) -> Value {
    json!({ "code": code, "message": message })
}

/// A failed model call as the script sees it: `{code, message}`.
fn inference_failure(error: &crate::inference::InferenceError) -> Value {
    let code = match error {
        crate::inference::InferenceError::CircuitOpen { .. } => "circuit_open",
        crate::inference::InferenceError::Config(_) => "invalid_client_config",
        _ => "inference_failed",
    };
    chat_failure(code, error.to_string())
}

fn plugin_error(e: ScriptError) -> PluginError {
    if e.is_fatal() {
        PluginError::fatal(e.to_string())
    } else {
        PluginError::new(e.to_string())
    }
}

/// A load failure as a plugin error that says which step failed.
fn load_error(error: &ScriptError) -> PluginError {
    let step = match error {
        ScriptError::Contract(_) => "validate",
        _ => "compile",
    };
    PluginError::new(error.to_string()).at_step(step)
}

/// Before a module loads, the API still needs a name: the last good manifest, or the directory.
fn fallback_manifest(id: &str, status: &ScriptStatus) -> PluginManifest {
    status.manifest().unwrap_or_else(|| {
        PluginManifest::new(id, Version::new(0, 0, 0)).describe("not loaded: see lastError")
    })
}

/// The plugin's identity is what its module declares: the gateway plugin's `name`, else the
/// first connector plugin's `id`. The directory is only where it lives.
pub fn declared_id(info: &ModuleInfo) -> Option<String> {
    info.gateway.clone().or_else(|| {
        info.connector_plugins
            .first()
            .and_then(|c| c["id"].as_str().map(str::to_owned))
    })
}

/// Whether `id` can name a plugin everywhere it appears: routes (`/plugins/<id>/…`), health
/// paths, the REST API and settings keys.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn manifest_of(dir: &str, info: &ModuleInfo) -> Result<PluginManifest, String> {
    let version =
        Version::parse(&info.version).map_err(|e| format!("`version` '{}': {e}", info.version))?;
    let id = declared_id(info).unwrap_or_else(|| dir.to_string());
    let declared = std::iter::once(id.as_str()).chain(
        info.connector_plugins
            .iter()
            .filter_map(|c| c["id"].as_str()),
    );
    let invalid: Vec<String> = declared
        .filter(|i| !valid_id(i))
        .map(|i| format!("'{i}'"))
        .collect();
    if !invalid.is_empty() {
        return Err(format!(
            "plugin id {} is not valid: use 1 to 64 letters, digits, '-', '_' or '.' (not first)",
            invalid.join(", ")
        ));
    }
    let first = info.connector_plugins.first();
    let name = info
        .gateway
        .clone()
        .or_else(|| first.and_then(|c| c["name"].as_str().map(str::to_owned)))
        .unwrap_or_else(|| id.clone());
    let mut manifest = PluginManifest::new(&id, version)
        .named(&name)
        .describe(&info.description);
    if let Some(first) = first {
        manifest.priority = first["priority"]
            .as_f64()
            .map(|p| p.max(0.0) as u32)
            .unwrap_or(manifest.priority);
        manifest.compatible_connectors =
            serde_json::from_value(first["compatibleConnectors"].clone()).unwrap_or_default();
        manifest.config_schema = serde_json::from_value::<Vec<ConfigField>>(
            first["configSchema"].clone(),
        )
        .map_err(|e| {
            format!(
                "connector plugin '{}': invalid configSchema: {e}",
                first["id"].as_str().unwrap_or(&id)
            )
        })?;
    }
    Ok(manifest)
}

#[async_trait(?Send)]
impl Plugin for ScriptPlugin {
    fn manifest(&self) -> PluginManifest {
        self.manifest.clone()
    }

    async fn init(&self, ctx: &PluginContext) -> Result<(), PluginError> {
        let _ = self.core.env.bridge.ctx.set(ctx.clone());
        self.call_async("init", &[]).await.map_err(|e| {
            if e.step.is_some() {
                e
            } else {
                e.at_step("init")
            }
        })?;
        let engine = lock(&self.core.engine);
        if let Ok(engine) = engine.as_ref() {
            let status = &self.core.status;
            status.set_current(self.manifest.clone(), engine.info.clone());
            status.initialised(engine.snapshot(), engine.from_snapshot());
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        self.call_async("start", &[]).await.map(|_| ())
    }

    async fn stop(&self) -> Result<(), PluginError> {
        let stopped = self.call_async("stop", &[]).await.map(|_| ());
        // Timers and fetches die with the instance, whatever `stop()` did.
        self.core.cancel_all();
        stopped
    }

    async fn route(&self, handler: u32, req: RouteRequest) -> Result<RouteResponse, PluginError> {
        let reply = self
            .call_async("route", &[json!(handler), json!(req)])
            .await?;
        serde_json::from_value(reply).map_err(|e| {
            PluginError::new(format!("the route handler's response is malformed: {e}"))
        })
    }

    async fn tool(&self, name: &str, params: Value) -> Result<Value, PluginError> {
        self.call_async("tool", &[json!(name), params]).await
    }

    fn hooks_inline(&self) -> bool {
        // The engine is shared behind a lock and host calls run as tasks on whichever thread
        // started them, so a hook may run on any session's thread.
        self.hooks_inline
    }

    fn has_hook(&self, connector_plugin: &str, hook: Hook) -> bool {
        // Unknown here (no engine, or no such connector plugin): call, and let the prelude say.
        lock(&self.core.engine).as_ref().map_or(true, |e| {
            e.info
                .connector_plugins
                .iter()
                .find(|c| c["id"] == connector_plugin)
                .is_none_or(|c| super::hook_set(c).contains(hook))
        })
    }

    fn connector_plugins(&self) -> Vec<ConnectorPluginInfo> {
        lock(&self.core.engine)
            .as_ref()
            .map(|e| super::connector_infos(&e.info))
            .unwrap_or_default()
    }

    async fn connector_hook(
        &self,
        connector_plugin: &str,
        hook: Hook,
        input: &Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        // The engine moves what a hook may not read out of its own copy (see `keep_unread`).
        let input = input.clone();
        let reply = self
            .drive(hook.name(), |e| {
                e.connector(connector_plugin, hook.name(), input, ctx)
            })
            .await?;
        // `[skipped, result, state]`, read by position.
        let Value::Array(mut reply) = reply else {
            return Err(PluginError::new(format!(
                "{}: the host's connector() answered something other than [skipped, result, state]",
                hook.name()
            )));
        };
        if reply.len() != 3 {
            return Err(PluginError::new(format!(
                "{}: the host's connector() answered {} parts instead of [skipped, result, state]",
                hook.name(),
                reply.len()
            )));
        }
        let (state, result) = (reply.pop(), reply.pop());
        if let Some(Value::Object(state)) = state {
            ctx.state = state;
        }
        if reply[0].as_bool().unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(result.unwrap_or(Value::Null)))
    }

    fn on_error(&self, connector_plugin: &str, error: &str, hook: Hook, ctx: &HookContext) {
        let args = [
            json!(connector_plugin),
            json!(error),
            json!(hook.name()),
            json!(ctx),
        ];
        if let Err(e) = self.call("onError", &args) {
            tracing::warn!(plugin = %self.manifest.id, hook = hook.name(), error = %e, "onError failed; ignored.");
        }
    }

    async fn on_event(&self, event: &Event) -> Result<(), PluginError> {
        let event = json!({ "event": event.event, "timestamp": crate::util::rfc3339(event.timestamp), "data": event.data });
        self.call_async("dispatch", &[event]).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::engine::Limits;
    use crate::script::{source_for, PluginPolicy};

    fn load(after_receive: &str) -> (tempfile::TempDir, ScriptPlugin) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("p");
        std::fs::create_dir_all(&dir).unwrap();
        let source = format!(
            r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "p", name: "p", description: "d", version: "1.0.0", compatibleConnectors: ["HTTP_REST"],
  afterReceive{after_receive},
}});
"#
        );
        std::fs::write(dir.join("index.js"), source).unwrap();
        let source = source_for(root.path(), "p").unwrap();
        let policy = |_: &[&str]| PluginPolicy {
            limits: Limits {
                memory_limit_bytes: 16 << 20,
                call_timeout: Duration::from_millis(500),
                max_stack_bytes: 512 << 10,
                max_host_calls: 10,
            },
            fetch: Default::default(),
            hooks_on_session_thread: true,
        };
        let plugin = ScriptPlugin::load(&source, &policy, ScriptStatus::new(source.clone()));
        assert!(plugin.load_error().is_none(), "{:?}", plugin.load_error());
        (root, plugin)
    }

    fn after_receive(plugin: &ScriptPlugin) -> Value {
        let input = json!({ "response": { "content": "hi", "metadata": {
            "responseTimeMs": 3,
            "rawResponse": { "id": "c-1", "choices": [{ "message": { "content": "hi" } }] },
            "headers": { "x-request-id": "r-1" },
        } } });
        let mut ctx = HookContext {
            session_id: "s".into(),
            target_id: "t".into(),
            connector_type: "HTTP_REST".into(),
            state: Default::default(),
            plugin_config: Default::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let out = local.block_on(
            &runtime,
            plugin.connector_hook("p", Hook::AfterReceive, &input, &mut ctx),
        );
        let held = plugin.core.env.bridge.lazy.lock().unwrap().len();
        assert_eq!(held, 0, "the stash is empty once the call ends");
        out.unwrap().unwrap()
    }

    #[test]
    fn unread_raw_answers_come_back_unchanged_read_ones_are_the_real_value() {
        let (_dir, untouched) = load("(response) { return { response }; }");
        let out = after_receive(&untouched);
        assert_eq!(out["response"]["metadata"]["rawResponse"]["id"], "c-1");
        assert_eq!(
            out["response"]["metadata"]["headers"]["x-request-id"],
            "r-1"
        );
        assert_eq!(out["response"]["metadata"]["responseTimeMs"], 3);

        let (_dir, reader) = load(
            "(response) { const raw = response.metadata.rawResponse; \
             return { response: { content: raw.choices[0].message.content + '!', metadata: { ...response.metadata } } }; }",
        );
        let out = after_receive(&reader);
        assert_eq!(out["response"]["content"], "hi!");
        assert_eq!(out["response"]["metadata"]["rawResponse"]["id"], "c-1");
        assert_eq!(
            out["response"]["metadata"]["headers"]["x-request-id"],
            "r-1"
        );

        let (_dir, writer) = load(
            "(response) { response.metadata.rawResponse = { mine: true }; \
             delete response.metadata.headers; return { response }; }",
        );
        let out = after_receive(&writer);
        assert_eq!(
            out["response"]["metadata"]["rawResponse"],
            json!({ "mine": true })
        );
        assert!(out["response"]["metadata"].get("headers").is_none());
    }

    #[test]
    fn an_async_hook_keeps_its_unread_values_until_it_answers() {
        let (_dir, plugin) = load(
            "(response) { return Promise.resolve().then(() => ({ response, metadata: { both: response.metadata.headers } })); }",
        );
        let out = after_receive(&plugin);
        assert_eq!(out["response"]["metadata"]["rawResponse"]["id"], "c-1");
        assert_eq!(out["metadata"]["both"]["x-request-id"], "r-1");
    }
}

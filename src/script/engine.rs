//! One QuickJS engine: a runtime with limits, a context, one evaluated plugin module.
//!
//! Owns loading a plugin directory (sandboxed imports, TS stripping), the host bridge the
//! module sees (`console`, `PluginLoader`, the Open Astra `ctx`), checking the two module
//! contracts, and calling hooks under a time budget (interrupt handler) and a memory limit;
//! connector hooks take a direct path (`Engine::connector`: no JSON text, unread values kept).
//! Does not own threads or supervision: the plugin actor that holds the engine does.
//!
//! Sandbox: QuickJS has no file, network, process or environment access of its own. We add
//! no file, process or environment access; the network only through `fetch`, a host call under
//! the plugin's policy. Imports are limited to files really inside the plugin's directory
//! (symbolic links are resolved before the check) and the host modules.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rquickjs::function::Args;
use rquickjs::loader::{Loader, Resolver};
use rquickjs::{
    CatchResultExt, CaughtError, Context, Ctx, Function, Module, Object, Runtime, Value,
};
use serde_json::Value as Json;

use super::convert;
use super::lazy::Lazy;

use super::transpile::{remap_stack, strip_types};
use super::web;
use crate::plugin::{HookContext, PluginContext};

/// Per-plugin engine limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_limit_bytes: usize,
    pub call_timeout: Duration,
    pub max_stack_bytes: usize,
    /// Host calls in flight at once (timers, fetches, model calls); more are rejected.
    pub max_host_calls: usize,
}

/// Why a script call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The plugin's code threw (or a module failed to load); `location` is `file:line:col`.
    #[error("{message}{}", location.as_deref().map(|l| format!(" (at {l})")).unwrap_or_default())]
    Thrown {
        message: String,
        stack: Option<String>,
        location: Option<String>,
    },
    /// The call ran past its time budget and was interrupted.
    #[error("exceeded its time budget of {0} ms")]
    Timeout(u64),
    /// The engine ran out of its memory limit.
    #[error("exceeded its memory limit of {0} bytes")]
    OutOfMemory(usize),
    /// The module does not satisfy either plugin contract.
    #[error("{0}")]
    Contract(String),
    /// The plugin broke the engine's own machinery (say, by patching `Map.prototype` or
    /// `Object.prototype.toJSON`): it can no longer answer, so it counts as crashed.
    #[error("the plugin broke the host's calling protocol ({0}); it is restarted")]
    Protocol(String),
}

impl ScriptError {
    /// Limits exceeded: the engine may be in a bad state, so the plugin counts as crashed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ScriptError::Timeout(_) | ScriptError::OutOfMemory(_) | ScriptError::Protocol(_)
        )
    }
}

/// A host call a script started that finishes later (an inference `chat`, a `fetch`, a timer):
/// the plugin runs it outside the engine and settles the script's promise with the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOp {
    pub id: u64,
    pub kind: String,
    pub payload: Json,
}

/// Where a call into the engine stands.
#[derive(Debug)]
pub enum Step {
    Done(Json),
    /// The call's promise waits on host calls: `deliver` their outcomes, then `poll` it.
    Waiting(u64),
}

/// Shared between the engine's native functions and the plugin: set once `init` runs.
#[derive(Default)]
pub struct Bridge {
    /// The directory name until the module says who it is.
    plugin_id: std::sync::RwLock<String>,
    pub ctx: OnceLock<PluginContext>,
    ops: Mutex<Vec<HostOp>>,
    /// Host calls the script gave up on (`clearTimeout`, an aborted `fetch`).
    cancels: Mutex<Vec<u64>>,
    next_op: AtomicU64,
    /// Values hooks were given but have not read (see `lazy.rs`).
    pub lazy: Mutex<Lazy>,
}

impl Bridge {
    pub fn new(plugin_id: &str) -> Self {
        Bridge {
            plugin_id: std::sync::RwLock::new(plugin_id.to_string()),
            ..Bridge::default()
        }
    }

    /// The plugin's id, for the log.
    pub fn plugin_id(&self) -> String {
        self.plugin_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Logs name the plugin by its declared id once the module is loaded.
    pub fn rename(&self, id: &str) {
        *self.plugin_id.write().unwrap_or_else(|e| e.into_inner()) = id.to_string();
    }

    /// Host calls started since the last take.
    pub fn take_ops(&self) -> Vec<HostOp> {
        std::mem::take(&mut *self.ops.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Host calls cancelled since the last take.
    pub fn take_cancels(&self) -> Vec<u64> {
        std::mem::take(&mut *self.cancels.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Names of the host modules the seed files import (`./types`, `./loader`, `../base`, and the
/// `@/lib/connectors/…` forms).
const HOST_MODULES: &[(&str, &str)] = &[
    ("loader", include_str!("host/loader.js")),
    ("types", "export {};\n"),
    ("base", include_str!("host/base.js")),
];

const PRELUDE: &str = include_str!("host/prelude.js");
/// The web-platform globals (`fetch`, timers, `URL`, `TextEncoder`, `crypto`…), installed by
/// the prelude over the host calls and the natives of [`web`].
const WEB: &str = include_str!("host/web.js");

/// A loaded plugin module and the engine it lives in. Field order is drop order: the context
/// must go before the runtime. No `Persistent` handles are kept (they would have to be dropped
/// before both, or QuickJS aborts): the host state is re-read from a locked global per call.
pub struct Engine {
    context: Context,
    runtime: Runtime,
    clock: Arc<Clock>,
    naming: Naming,
    sources: Sources,
    limits: Limits,
    bridge: Arc<Bridge>,
    pub info: ModuleInfo,
}

/// What the module declared, read once after evaluation.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// Open Astra: the default export's `name`, if it is a gateway plugin.
    pub gateway: Option<String>,
    pub version: String,
    pub description: String,
    /// Krawall: metadata of every registered connector plugin.
    pub connector_plugins: Vec<Json>,
    pub has_start: bool,
    pub has_stop: bool,
}

/// Source maps of the module's stripped `.ts` files, by file name (shared with the loader).
type SourceMaps = Arc<Mutex<HashMap<String, oxc_sourcemap::SourceMap<'static>>>>;

/// A module's files by path, as they were read.
pub type Snapshot = Arc<HashMap<PathBuf, String>>;

/// Where a module's files are read from.
#[derive(Clone)]
pub enum Sources {
    /// From disk, recording each file read (the snapshot a later restart may reuse).
    Disk(Arc<Mutex<HashMap<PathBuf, String>>>),
    /// The files of a version that initialised, as they were then: a crash after a failed
    /// reload restarts what last worked, not the broken files.
    Snapshot(Snapshot),
}

impl Sources {
    pub fn disk() -> Self {
        Sources::Disk(Arc::default())
    }

    fn has(&self, path: &Path) -> bool {
        match self {
            Sources::Snapshot(files) => files.contains_key(path),
            Sources::Disk(_) => false,
        }
    }

    fn read(&self, path: &Path) -> Result<String, String> {
        if let Sources::Snapshot(files) = self {
            // Never mix the last good version with files written since.
            return files.get(path).cloned().ok_or_else(|| {
                format!(
                    "{} was not part of the version that last initialised; reload the plugin to use it",
                    path.display()
                )
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if let Sources::Disk(read) = self {
            read.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_path_buf(), text.clone());
        }
        Ok(text)
    }

    /// What was read, to start this version again later.
    fn snapshot(&self) -> Snapshot {
        match self {
            Sources::Snapshot(files) => files.clone(),
            Sources::Disk(read) => Arc::new(read.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        }
    }
}

/// How errors name files: relative to the plugins directory (`x/index.ts:3:9`), so they
/// neither leak the host's paths nor grow without bound.
struct Naming {
    /// The plugins directory with a trailing `/`, stripped from file names.
    prefix: String,
    maps: SourceMaps,
}

/// The longest error message passed on; the rest is cut, saying how much there was.
const MAX_MESSAGE_BYTES: usize = 4096;

impl Naming {
    fn new(root: &Path, maps: SourceMaps) -> Self {
        let prefix = root
            .parent()
            .map(|p| format!("{}/", p.display()))
            .unwrap_or_default();
        Naming { prefix, maps }
    }

    fn tidy(&self, text: &str) -> String {
        let text = if self.prefix.len() > 1 {
            text.replace(&self.prefix, "")
        } else {
            text.to_string()
        };
        cut(text, MAX_MESSAGE_BYTES)
    }
}

/// `text` cut at `max` bytes (on a character boundary), saying how long it was.
fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// The deadline the interrupt handler checks.
struct Clock {
    epoch: Instant,
    /// Nanoseconds since `epoch`; 0 means no call is running.
    deadline: AtomicU64,
    tripped: AtomicBool,
    /// The script ran out of memory where QuickJS swallows the error (a timer callback, a
    /// listener): the host JS reports it through `host.outOfMemory()`.
    out_of_memory: AtomicBool,
}

impl Clock {
    fn arm(&self, budget: Duration) {
        self.tripped.store(false, Ordering::Relaxed);
        self.out_of_memory.store(false, Ordering::Relaxed);
        let at = self.epoch.elapsed() + budget;
        self.deadline
            .store(at.as_nanos().max(1) as u64, Ordering::Relaxed);
    }

    fn disarm(&self) {
        self.deadline.store(0, Ordering::Relaxed);
    }

    fn expired(&self) -> bool {
        let deadline = self.deadline.load(Ordering::Relaxed);
        let over = deadline != 0 && self.epoch.elapsed().as_nanos() as u64 > deadline;
        if over {
            self.tripped.store(true, Ordering::Relaxed);
        }
        over
    }
}

impl Engine {
    /// Creates a runtime with `limits`, evaluates `entry` (inside `dir`) and checks the module
    /// against the two contracts. Module top-level code runs under the call time budget too.
    pub fn load(
        dir: &Path,
        entry: &Path,
        limits: Limits,
        bridge: Arc<Bridge>,
        sources: Sources,
    ) -> Result<Engine, ScriptError> {
        let runtime = Runtime::new().map_err(|e| internal(&e.to_string()))?;
        runtime.set_memory_limit(limits.memory_limit_bytes);
        runtime.set_max_stack_size(limits.max_stack_bytes);
        let clock = Arc::new(Clock {
            epoch: Instant::now(),
            deadline: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            out_of_memory: AtomicBool::new(false),
        });
        let check = clock.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || check.expired())));
        let root = dir
            .canonicalize()
            .map_err(|e| internal(&format!("{}: {e}", dir.display())))?;
        let maps = SourceMaps::default();
        runtime.set_loader(
            PluginResolver {
                root: root.clone(),
                sources: sources.clone(),
            },
            PluginLoader {
                maps: maps.clone(),
                sources: sources.clone(),
            },
        );
        let context = Context::full(&runtime).map_err(|e| internal(&e.to_string()))?;

        let naming = Naming::new(&root, maps.clone());
        let entry_path = root.join(entry.file_name().unwrap_or_default());
        if !sources.has(&entry_path) {
            inside(&root, &entry_path).map_err(|why| internal(&naming.tidy(&why)))?;
        }
        let entry_name = entry_path.to_string_lossy().into_owned();
        let source =
            read_module(&entry_path, &maps, &sources).map_err(|m| thrown_at(naming.tidy(&m)))?;

        clock.arm(limits.call_timeout);
        let loaded = context.with(|ctx| -> Result<ModuleInfo, ScriptError> {
            install_host(&ctx, &bridge, &clock).map_err(|e| internal(&e.to_string()))?;
            let module = Module::declare(ctx.clone(), entry_name.clone(), source)
                .catch(&ctx)
                .map_err(|e| caught(e, &clock, limits, &naming))?;
            let (module, promise) = module
                .eval()
                .catch(&ctx)
                .map_err(|e| caught(e, &clock, limits, &naming))?;
            promise
                .finish::<()>()
                .catch(&ctx)
                .map_err(|e| caught(e, &clock, limits, &naming))?;
            let default: Value = module
                .get("default")
                .unwrap_or_else(|_| Value::new_undefined(ctx.clone()));
            let state: Object = ctx
                .globals()
                .get("__switchyard")
                .map_err(|e| internal(&e.to_string()))?;
            state
                .set("plugin", default.clone())
                .map_err(|e| internal(&e.to_string()))?;
            let info = check_contracts(&ctx, &default, &state)?;
            let lock: Function = state.get("lock").map_err(|e| internal(&e.to_string()))?;
            lock.call::<_, ()>(())
                .map_err(|e| internal(&e.to_string()))?;
            Ok(info)
        });
        clock.disarm();
        let info = loaded?;
        Ok(Engine {
            context,
            runtime,
            clock,
            naming,
            sources,
            limits,
            bridge,
            info,
        })
    }

    /// Calls `__switchyard.<method>(json args…)` without waiting: a returned promise goes on
    /// in the background (its host calls are taken from the bridge as usual), its value unread.
    pub fn call(&self, method: &str, args: &[Json]) -> Result<Json, ScriptError> {
        match self.start(method, args)? {
            Step::Done(value) => Ok(value),
            Step::Waiting(call) => {
                self.abandon(&[call])?;
                Ok(Json::Null)
            }
        }
    }

    /// Starts `__switchyard.<method>(json args…)`, driving its promise as far as it goes
    /// without host calls. Each run of JS is under the time budget; waiting is not.
    pub fn start(&self, method: &str, args: &[Json]) -> Result<Step, ScriptError> {
        let begun = self.run(|ctx| {
            let state: Object = ctx.globals().get("__switchyard")?;
            let begin: Function = state.get("begin")?;
            let list = rquickjs::Array::new(ctx.clone())?;
            for (i, arg) in args.iter().enumerate() {
                list.set(i, convert::to_js(ctx, arg)?)?;
            }
            let value: Value = begin.call((method, list))?;
            // Read field by field, never through JSON, which the plugin can subvert.
            let Some(reply) = value.as_object() else {
                return Ok(Err("begin() answered a non-object".to_string()));
            };
            match (
                reply.get::<_, Option<bool>>("done")?,
                reply.get::<_, Option<f64>>("id")?,
            ) {
                (Some(true), _) => Ok(Ok(Step::Done(to_json(ctx, reply.get("value")?)?))),
                (Some(false), Some(id)) if id >= 1.0 => Ok(Ok(Step::Waiting(id as u64))),
                _ => Ok(Err("begin() answered without `done` and `id`".to_string())),
            }
        })?;
        match begun.map_err(ScriptError::Protocol)? {
            Step::Waiting(call) => self.poll(call),
            done => Ok(done),
        }
    }

    /// Runs connector hook `hook` of connector plugin `plugin` (the prelude's `connector`):
    /// the hook's context goes in as separate values, so nothing is serialised on the way.
    ///
    /// The upstream's raw answer and headers under `afterReceive`'s `response.metadata` stay
    /// here until the plugin reads them: unread, they go back into its answer as they came.
    pub fn connector(
        &self,
        plugin: &str,
        hook: &str,
        mut input: Json,
        ctx: &HookContext,
    ) -> Result<Step, ScriptError> {
        let kept = self.keep_unread(&mut input);
        let begun = self.run(|js| {
            let state: Object = js.globals().get("__switchyard")?;
            let connector: Function = state.get("connector")?;
            let mut args = Args::new(js.clone(), 8);
            args.push_arg(plugin)?;
            args.push_arg(hook)?;
            args.push_arg(convert::to_js(js, &input)?)?;
            args.push_arg(ctx.session_id.as_str())?;
            args.push_arg(ctx.target_id.as_str())?;
            args.push_arg(ctx.connector_type.as_str())?;
            args.push_arg(convert::map_to_js(js, &ctx.state)?)?;
            args.push_arg(convert::map_to_js(js, &ctx.plugin_config)?)?;
            args.push_arg(convert::to_js(js, &Json::Array(kept))?)?;
            let value: Value = connector.call_arg(args)?;
            // A number is a call to poll: the plugin's hook returned a promise.
            match value.as_number() {
                Some(call) if call >= 1.0 => Ok(Step::Waiting(call as u64)),
                _ => Ok(Step::Done(self.answer(js, value)?)),
            }
        });
        let mut lazy = self.lazy();
        match begun {
            Ok(Step::Waiting(call)) => {
                lazy.park(call);
                drop(lazy);
                self.poll(call)
            }
            other => {
                lazy.end_running();
                other
            }
        }
    }

    /// Moves what a hook may never read out of `input` into the stash: `[key, slot, …]` for
    /// the prelude's accessors on `input.response.metadata`.
    fn keep_unread(&self, input: &mut Json) -> Vec<Json> {
        let Some(meta) = input
            .get_mut("response")
            .and_then(|r| r.get_mut("metadata"))
            .and_then(Json::as_object_mut)
        else {
            return Vec::new();
        };
        let mut lazy = self.lazy();
        let mut kept = Vec::new();
        for key in ["rawResponse", "headers"] {
            if let Some(value) = meta.shift_remove(key) {
                kept.push(Json::from(key));
                kept.push(Json::from(lazy.stash(value)));
            }
        }
        kept
    }

    /// A hook's answer as JSON, the values it left unread put back.
    fn answer<'js>(&self, js: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Json> {
        self.lazy().exporting = true;
        let lazy = &self.bridge.lazy;
        let answer = convert::from_js_with(js, value, &|text| {
            lazy.lock().unwrap_or_else(|e| e.into_inner()).resolve(text)
        });
        self.lazy().exporting = false;
        answer
    }

    fn lazy(&self) -> std::sync::MutexGuard<'_, Lazy> {
        self.bridge.lazy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settles the host calls in `done` (`Ok` resolves, `Err` rejects) and runs the jobs that
    /// follow (promise reactions, timer callbacks).
    pub fn deliver(&self, done: Vec<(u64, Result<Json, Json>)>) -> Result<(), ScriptError> {
        self.run(|ctx| {
            let state: Object = ctx.globals().get("__switchyard")?;
            let complete: Function = state.get("complete")?;
            for (id, outcome) in done {
                let (ok, value) = match outcome {
                    Ok(v) => (true, v),
                    Err(e) => (false, e),
                };
                complete.call::<_, ()>((id, ok, convert::to_js(ctx, &value)?))?;
                // As in a browser: the jobs one completion queues run before the next one.
                while ctx.execute_pending_job() {}
            }
            Ok(Json::Null)
        })
        .map(|_| ())
    }

    /// Where call `call` stands after the jobs that are due have run.
    pub fn poll(&self, call: u64) -> Result<Step, ScriptError> {
        let polled = self.run(|ctx| {
            while ctx.execute_pending_job() {}
            let state: Object = ctx.globals().get("__switchyard")?;
            let poll: Function = state.get("poll")?;
            let value: Value = poll.call((call,))?;
            let Some(reply) = value.as_object() else {
                return Ok(Err("poll() answered a non-object".to_string()));
            };
            if let Some(broken) = reply.get::<_, Option<String>>("broken")? {
                return Ok(Err(broken));
            }
            match reply.get::<_, Option<bool>>("pending")? {
                Some(true) => Ok(Ok(Step::Waiting(call))),
                Some(false) => Ok(Ok(Step::Done(self.answer(ctx, reply.get("value")?)?))),
                None => Ok(Err("poll() answered without `pending`".to_string())),
            }
        });
        if !matches!(polled, Ok(Ok(Step::Waiting(_)))) {
            self.lazy().end(call);
        }
        polled?.map_err(ScriptError::Protocol)
    }

    /// Forgets calls nobody waits for any more (their promises may still settle).
    pub fn abandon(&self, calls: &[u64]) -> Result<(), ScriptError> {
        self.run(|ctx| {
            let state: Object = ctx.globals().get("__switchyard")?;
            let abandon: Function = state.get("abandon")?;
            for call in calls {
                self.lazy().end(*call);
                abandon.call::<_, ()>((*call,))?;
            }
            Ok(Json::Null)
        })
        .map(|_| ())
    }

    /// Runs `f` inside the context under the time budget, mapping JS errors.
    fn run<T>(&self, f: impl FnOnce(&Ctx<'_>) -> rquickjs::Result<T>) -> Result<T, ScriptError> {
        self.clock.arm(self.limits.call_timeout);
        let result = self.context.with(|ctx| {
            f(&ctx)
                .catch(&ctx)
                .map_err(|e| caught(e, &self.clock, self.limits, &self.naming))
        });
        // QuickJS swallows an exception thrown in a promise job (a timer callback): the clock
        // still knows the budget was broken.
        let tripped = self.clock.tripped.load(Ordering::Relaxed);
        let out_of_memory = self.clock.out_of_memory.load(Ordering::Relaxed);
        self.clock.disarm();
        match result {
            Ok(_) if tripped => Err(ScriptError::Timeout(
                self.limits.call_timeout.as_millis() as u64
            )),
            Ok(_) if out_of_memory => Err(ScriptError::OutOfMemory(self.limits.memory_limit_bytes)),
            other => other,
        }
    }

    /// The files this version was built from, as read.
    pub fn snapshot(&self) -> Snapshot {
        self.sources.snapshot()
    }

    /// Whether this version was built from a snapshot rather than the files on disk.
    pub fn from_snapshot(&self) -> bool {
        matches!(self.sources, Sources::Snapshot(_))
    }

    /// Applies other limits (settings keyed by the plugin's declared id).
    pub fn set_limits(&mut self, limits: Limits) {
        self.runtime.set_memory_limit(limits.memory_limit_bytes);
        self.runtime.set_max_stack_size(limits.max_stack_bytes);
        self.limits = limits;
    }

    /// Bytes QuickJS has allocated for this engine.
    pub fn memory_bytes(&self) -> u64 {
        self.runtime.memory_usage().malloc_size.max(0) as u64
    }
}

fn to_json<'js>(ctx: &Ctx<'js>, value: Value<'js>) -> rquickjs::Result<Json> {
    convert::from_js(ctx, value)
}

fn internal(message: &str) -> ScriptError {
    ScriptError::Thrown {
        message: message.to_string(),
        stack: None,
        location: None,
    }
}

/// A message that may end in ` at file:line:col`.
fn thrown_at(message: String) -> ScriptError {
    let location = message.rsplit_once(" at ").map(|(_, l)| l.to_string());
    ScriptError::Thrown {
        message,
        stack: None,
        location,
    }
}

/// Turns a caught JS error into a `ScriptError`, telling limits apart from plain throws.
fn caught(error: CaughtError<'_>, clock: &Clock, limits: Limits, naming: &Naming) -> ScriptError {
    if clock.tripped.load(Ordering::Relaxed) {
        return ScriptError::Timeout(limits.call_timeout.as_millis() as u64);
    }
    let (message, stack) = match &error {
        CaughtError::Exception(e) => {
            let name: Option<String> = e.get("name").ok();
            let message = e.message().unwrap_or_default();
            let message = match name {
                Some(name) if !name.is_empty() && name != "Error" => format!("{name}: {message}"),
                _ => message,
            };
            (message, e.stack())
        }
        CaughtError::Value(v) => (thrown_value(v), None),
        CaughtError::Error(e) => (e.to_string(), None),
    };
    if message.contains("out of memory") {
        return ScriptError::OutOfMemory(limits.memory_limit_bytes);
    }
    let stack = stack.map(|s| {
        let maps = naming.maps.lock().unwrap_or_else(|e| e.into_inner());
        naming.tidy(&remap_stack(&s, &maps))
    });
    let location = stack.as_deref().and_then(first_location);
    ScriptError::Thrown {
        message: naming.tidy(&message),
        stack,
        location,
    }
}

/// A thrown non-`Error` value as a script author would print it (`String(v)`, or JSON for
/// plain objects), never the engine's debug text.
fn thrown_value(value: &Value<'_>) -> String {
    let text = if value.is_object() && !value.is_function() {
        value
            .ctx()
            .json_stringify(value.clone())
            .ok()
            .flatten()
            .and_then(|s| s.to_string().ok())
    } else {
        None
    };
    let text = text.or_else(|| {
        value
            .clone()
            .get::<rquickjs::convert::Coerced<String>>()
            .ok()
            .map(|c| c.0)
    });
    format!(
        "uncaught {}",
        text.unwrap_or_else(|| value.type_name().to_string())
    )
}

/// The first `file:line:col` of a QuickJS stack (`    at fn (file:line:col)`).
fn first_location(stack: &str) -> Option<String> {
    stack.lines().find_map(|line| {
        let line = line.trim().strip_prefix("at ")?;
        let inner = match (line.rfind('('), line.rfind(')')) {
            (Some(a), Some(b)) if a < b => &line[a + 1..b],
            _ => line,
        };
        (inner.contains(':') && !inner.starts_with("<native>") && !inner.starts_with("switchyard:"))
            .then(|| inner.to_string())
    })
}

/// Installs `console`, the hidden host functions and the prelude (ctx, PluginLoader state).
fn install_host(ctx: &Ctx<'_>, bridge: &Arc<Bridge>, clock: &Arc<Clock>) -> rquickjs::Result<()> {
    let host = Object::new(ctx.clone())?;
    let c = clock.clone();
    host.set(
        "outOfMemory",
        Function::new(ctx.clone(), move || {
            c.out_of_memory.store(true, Ordering::Relaxed);
        })?,
    )?;
    let b = bridge.clone();
    host.set(
        "log",
        Function::new(ctx.clone(), move |level: String, message: String| {
            let plugin = b.plugin_id();
            let plugin = plugin.as_str();
            match level.as_str() {
                "error" => tracing::error!(plugin, "{message}"),
                "warn" => tracing::warn!(plugin, "{message}"),
                "debug" => tracing::debug!(plugin, "{message}"),
                _ => tracing::info!(plugin, "{message}"),
            }
        })?,
    )?;
    // A hook's unread value (see `lazy.rs`): its marker while the host reads the answer, else
    // its JSON text, once (the accessor then becomes a plain property). Reading one is rare,
    // so text is good enough here.
    let b = bridge.clone();
    host.set(
        "lazy",
        Function::new(ctx.clone(), move |slot: f64| -> Option<String> {
            let mut lazy = b.lazy.lock().unwrap_or_else(|e| e.into_inner());
            if lazy.exporting {
                return Some(Lazy::marker(slot as u64));
            }
            lazy.take(slot as u64).map(|value| value.to_string())
        })?,
    )?;
    let b = bridge.clone();
    host.set(
        "on",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>, pattern: String| -> rquickjs::Result<()> {
                let Some(pctx) = b.ctx.get() else {
                    return Err(rquickjs::Exception::throw_message(
                        &ctx,
                        "getEventBus().on() is only available from init(ctx) on",
                    ));
                };
                pctx.events()
                    .on(&pattern)
                    .map_err(|e| rquickjs::Exception::throw_message(&ctx, &e.message))
            },
        )?,
    )?;
    let b = bridge.clone();
    host.set(
        "emit",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>, name: String, data: String| -> rquickjs::Result<()> {
                let Some(pctx) = b.ctx.get() else {
                    return Err(rquickjs::Exception::throw_message(
                        &ctx,
                        "getEventBus().emit() is only available from init(ctx) on",
                    ));
                };
                let data = serde_json::from_str(&data).unwrap_or(Json::Null);
                pctx.events()
                    .emit(&name, data)
                    .map_err(|e| rquickjs::Exception::throw_message(&ctx, &e.message))
            },
        )?,
    )?;
    // Registrations go through the plugin's context, which checks them (collisions, schemas)
    // and stages them until `init` returns.
    let context_of =
        |b: &Arc<Bridge>, ctx: &Ctx<'_>, what: &str| -> rquickjs::Result<PluginContext> {
            b.ctx.get().cloned().ok_or_else(|| {
                rquickjs::Exception::throw_message(
                    ctx,
                    &format!("{what} is only available from init(ctx) on"),
                )
            })
        };
    let throw = |ctx: &Ctx<'_>, e: crate::plugin::PluginError| {
        rquickjs::Exception::throw_message(ctx, &e.message)
    };
    let b = bridge.clone();
    host.set(
        "route",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>,
                  method: String,
                  path: String,
                  absolute: bool,
                  public: bool|
                  -> rquickjs::Result<u32> {
                let pctx = context_of(&b, &ctx, "app.<method>()")?;
                let method = crate::route::Method::parse(&method)
                    .ok_or_else(|| rquickjs::Exception::throw_message(&ctx, "unknown method"))?;
                pctx.mount_with(
                    method,
                    &path,
                    crate::route::RouteOptions { absolute, public },
                )
                .map_err(|e| throw(&ctx, e))
            },
        )?,
    )?;
    let b = bridge.clone();
    host.set(
        "tool",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>, spec: String| -> rquickjs::Result<()> {
                let pctx = context_of(&b, &ctx, "registerTool()")?;
                let spec: Json = serde_json::from_str(&spec).unwrap_or(Json::Null);
                pctx.register_tool(crate::tool::ToolSpec {
                    name: spec["name"].as_str().unwrap_or_default().to_string(),
                    description: spec["description"].as_str().unwrap_or_default().to_string(),
                    parameters: spec["parameters"].clone(),
                })
                .map_err(|e| throw(&ctx, e))
            },
        )?,
    )?;
    let b = bridge.clone();
    host.set(
        "agent",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>, id: String, config: String| -> rquickjs::Result<()> {
                let pctx = context_of(&b, &ctx, "registerAgentConfig()")?;
                let config: Json = serde_json::from_str(&config).unwrap_or(Json::Null);
                pctx.register_agent_config(&id, &config)
                    .map_err(|e| throw(&ctx, e))
            },
        )?,
    )?;
    let b = bridge.clone();
    host.set(
        "client",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'_>, config: String| -> rquickjs::Result<()> {
                let pctx = context_of(&b, &ctx, "resolveClient()")?;
                let config: Json = serde_json::from_str(&config).unwrap_or(Json::Null);
                pctx.resolve_client_json(&config)
                    .map(|_| ())
                    .map_err(|e| throw(&ctx, e))
            },
        )?,
    )?;
    let b = bridge.clone();
    host.set(
        "request",
        Function::new(ctx.clone(), move |kind: String, payload: String| -> u64 {
            let id = b.next_op.fetch_add(1, Ordering::Relaxed) + 1;
            let payload = serde_json::from_str(&payload).unwrap_or(Json::Null);
            b.ops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(HostOp { id, kind, payload });
            id
        })?,
    )?;
    let b = bridge.clone();
    host.set(
        "cancel",
        Function::new(ctx.clone(), move |id: u64| {
            b.cancels.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        })?,
    )?;
    web::install_natives(ctx, &host)?;
    ctx.globals().set("__switchyard_host", host)?;
    // Named so stack locations skip them: errors point at the plugin's own line.
    let mut options = rquickjs::context::EvalOptions::default();
    options.filename = Some("switchyard:web".into());
    let install_web: Function = ctx.eval_with_options(WEB, options)?;
    ctx.globals().set("__switchyard_web", install_web)?;
    let mut options = rquickjs::context::EvalOptions::default();
    options.filename = Some("switchyard:prelude".into());
    ctx.eval_with_options::<(), _>(PRELUDE, options)?;
    Ok(())
}

/// Checks the module against the Open Astra and Krawall contracts; every problem is reported.
fn check_contracts<'js>(
    ctx: &Ctx<'js>,
    default: &Value<'js>,
    state: &Object<'js>,
) -> Result<ModuleInfo, ScriptError> {
    let describe: Function = state
        .get("describe")
        .map_err(|e| internal(&e.to_string()))?;
    let report: Value = describe
        .call(())
        .catch(ctx)
        .map_err(|e| internal(&e.to_string()))?;
    let report = to_json(ctx, report).map_err(|e| internal(&e.to_string()))?;
    let problems: Vec<String> = report["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let gateway = report["gateway"].as_str().map(str::to_owned);
    let connector_plugins = report["connectors"].as_array().cloned().unwrap_or_default();
    let mut problems = problems;
    if gateway.is_none() && connector_plugins.is_empty() && problems.is_empty() {
        let what = if default.is_undefined() {
            "has no default export"
        } else {
            "has a default export without `name` (string) and `init` (function)"
        };
        problems.push(format!(
            "the module {what} and registers no connector plugin with PluginLoader.register(); \
             it must do one or both"
        ));
    }
    let version = report["version"].as_str().unwrap_or_default().to_string();
    if problems.is_empty() && semver::Version::parse(&version).is_err() {
        problems.push(format!(
            "`version` must be a semver string such as 1.0.0, found '{version}'"
        ));
    }
    if !problems.is_empty() {
        return Err(ScriptError::Contract(problems.join("; ")));
    }
    Ok(ModuleInfo {
        gateway,
        version,
        description: report["description"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        connector_plugins,
        has_start: report["hasStart"].as_bool().unwrap_or(false),
        has_stop: report["hasStop"].as_bool().unwrap_or(false),
    })
}

/// Resolves imports: host modules by their seed names, files only inside the plugin directory.
struct PluginResolver {
    root: PathBuf,
    sources: Sources,
}

impl Resolver for PluginResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attrs: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let refuse = |why: &str| rquickjs::Error::new_resolving_message(base, name, why);
        if let Some(host) = name.strip_prefix("switchyard:") {
            return HOST_MODULES
                .iter()
                .any(|(n, _)| *n == host)
                .then(|| name.to_string())
                .ok_or_else(|| refuse("no such host module"));
        }
        let relative = name.starts_with("./") || name.starts_with("../");
        // The seeds' own modules: ./types, ./loader, ../base, @/lib/connectors/plugins/loader…
        let stem = name
            .rsplit('/')
            .next()
            .unwrap_or(name)
            .trim_end_matches(".ts")
            .trim_end_matches(".js");
        let host_module =
            (relative || name.starts_with("@/")) && HOST_MODULES.iter().any(|(n, _)| *n == stem);
        if relative {
            let from = Path::new(base).parent().unwrap_or(&self.root);
            let joined = normalize(&from.join(name));
            if joined.starts_with(&self.root) {
                let snapshot = matches!(self.sources, Sources::Snapshot(_));
                for candidate in candidates(&joined) {
                    if self.sources.has(&candidate) {
                        return Ok(candidate.to_string_lossy().into_owned());
                    }
                    if !snapshot && candidate.is_file() {
                        inside(&self.root, &candidate).map_err(|why| refuse(&why))?;
                        return Ok(candidate.to_string_lossy().into_owned());
                    }
                }
            } else if !host_module {
                return Err(refuse("imports may not leave the plugin's directory"));
            }
        }
        if host_module {
            return Ok(format!("switchyard:{stem}"));
        }
        if relative {
            return Err(refuse("no such file in the plugin's directory"));
        }
        Err(refuse("plugins may import only their own files and the host modules (./types, ./loader, ../base); there are no npm packages"))
    }
}

/// Refuses a file that is not really inside the plugin's directory: a symbolic link may point
/// anywhere, so the check is on the resolved path.
fn inside(root: &Path, file: &Path) -> Result<(), String> {
    let real = file
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if real.starts_with(root) {
        Ok(())
    } else {
        // Where the link leads is the host's business, not the API's.
        Err(format!(
            "imports may not leave the plugin's directory ({} is a link that leads outside it)",
            file.display()
        ))
    }
}

/// A module's source as QuickJS runs it: `.ts` is stripped, and its source map kept.
fn read_module(path: &Path, maps: &SourceMaps, sources: &Sources) -> Result<String, String> {
    let source = sources.read(path)?;
    if path.extension().is_none_or(|e| e != "ts") {
        return Ok(source);
    }
    let stripped = strip_types(path, &source)?;
    if let Some(map) = stripped.map {
        maps.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string_lossy().into_owned(), map);
    }
    Ok(stripped.code)
}

fn candidates(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for ext in ["ts", "js", "mjs"] {
        out.push(PathBuf::from(format!("{}.{ext}", path.display())));
    }
    for index in ["index.ts", "index.js"] {
        out.push(path.join(index));
    }
    out
}

/// Lexical normalisation; symbolic links are checked separately ([`inside`]).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

struct PluginLoader {
    maps: SourceMaps,
    sources: Sources,
}

impl Loader for PluginLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attrs: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
        if let Some(host) = name.strip_prefix("switchyard:") {
            let source = HOST_MODULES
                .iter()
                .find(|(n, _)| *n == host)
                .map(|(_, s)| *s)
                .unwrap_or("export {};");
            return Module::declare(ctx.clone(), name, source);
        }
        let source = read_module(Path::new(name), &self.maps, &self.sources)
            .map_err(|m| rquickjs::Error::new_loading_message(name, m))?;
        Module::declare(ctx.clone(), name, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_locations() {
        let stack =
            "    at boom (/p/core/x/index.js:4:11)\n    at <anonymous> (/p/core/x/index.js:9:3)\n";
        assert_eq!(
            first_location(stack).as_deref(),
            Some("/p/core/x/index.js:4:11")
        );
        assert_eq!(
            first_location("    at /p/x.js:1:1\n").as_deref(),
            Some("/p/x.js:1:1")
        );
        assert_eq!(first_location("    at <native>\n"), None);
    }
}

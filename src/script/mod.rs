//! Script plugins: JavaScript/TypeScript plugins from `plugins/core/<dir>/index.{ts,js}`.
//!
//! Owns discovery of plugin directories (`ScriptLoader`, which plugs into the plugin runtime as
//! a [`Loader`]), and `ScriptPlugin`: a [`Plugin`] whose hooks run in a QuickJS engine of its
//! own (`engine`), with TypeScript stripped in-process (`transpile`).
//! Script plugins run on a dedicated arbiter each and are supervised exactly like native ones:
//! a fresh engine per restart, and a limit breach (time, memory) counts as a crash. `watch`
//! turns file changes into debounced reloads. Does not own the reload swap itself (the plugins
//! supervisor does) nor the REST endpoints.
//!
//! A script plugin's id is its directory name. The module may export an Open Astra gateway
//! plugin (`export default {name, version, init, start?, stop?}`), register Krawall connector
//! plugins (`PluginLoader.register({...})`), or both.

pub mod engine;
pub mod transpile;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use semver::Version;
use serde::Serialize;
use serde_json::{json, Value};

use crate::broker::Event;
use crate::plugin::source::{Discovered, LoadedStatus, Loader, Source};
use crate::plugin::{
    ConfigField, ConnectorPluginInfo, Hook, HookContext, Plugin, PluginContext, PluginError,
    PluginFactory, PluginManifest,
};
use crate::route::{RouteRequest, RouteResponse};
use crate::supervisor::child::Placement;
use engine::{Bridge, Engine, HostOp, Limits, ModuleInfo, ScriptError, Step};

/// A discovered plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSource {
    /// The directory name, which is the plugin's id.
    pub id: String,
    pub dir: PathBuf,
    pub entry: PathBuf,
}

/// The entry file of a plugin directory: `index.ts` wins over `index.js`.
pub fn find_entry(dir: &Path) -> Option<PathBuf> {
    let ts = dir.join("index.ts");
    let js = dir.join("index.js");
    match (ts.is_file(), js.is_file()) {
        (true, true) => {
            tracing::warn!(dir = %dir.display(), "Both index.ts and index.js exist; using index.ts.");
            Some(ts)
        }
        (true, false) => Some(ts),
        (false, true) => Some(js),
        (false, false) => None,
    }
}

/// Every plugin directory under `root`, sorted by name (the discovery order). Dot-directories
/// are ignored; directories without an entry point are skipped with a debug log.
pub fn discover(root: &Path) -> Vec<ScriptSource> {
    let Ok(read) = std::fs::read_dir(root) else {
        tracing::debug!(dir = %root.display(), "No script plugin directory.");
        return Vec::new();
    };
    let mut found: Vec<ScriptSource> = read
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') {
                return None;
            }
            source_for(root, &id)
        })
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    found
}

/// The source of plugin `id` under `root`, if it has an entry point.
pub fn source_for(root: &Path, id: &str) -> Option<ScriptSource> {
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
        return None;
    }
    let dir = root.join(id);
    match find_entry(&dir) {
        Some(entry) => Some(ScriptSource {
            id: id.to_string(),
            dir,
            entry,
        }),
        None => {
            tracing::debug!(dir = %dir.display(), "Skipping a directory without index.ts or index.js.");
            None
        }
    }
}

/// Loads script plugins from `<plugins.dir>/core/<id>/index.{ts,js}`: the engine's side of
/// [`Loader`]. Each plugin gets its own engine on its own arbiter (an engine may block its
/// thread), with the limits `limits` gives for its id.
pub struct ScriptLoader {
    root: PathBuf,
    limits: Box<dyn Fn(&str) -> Limits + Send + Sync>,
}

impl ScriptLoader {
    pub fn new(root: PathBuf, limits: Box<dyn Fn(&str) -> Limits + Send + Sync>) -> Self {
        ScriptLoader { root, limits }
    }

    /// The `plugins/core` directory it loads from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn discovered(&self, source: ScriptSource) -> Discovered {
        let limits = (self.limits)(&source.id);
        let status = ScriptStatus::new(source.clone());
        Discovered {
            source: Source::Loaded(KIND),
            factory: factory(source, limits, status.clone()),
            placement: Placement::Dedicated,
            status: Some(status as Arc<dyn LoadedStatus>),
        }
    }
}

/// What `GET /api/plugins` calls a script plugin's source.
pub const KIND: &str = "script";

impl Loader for ScriptLoader {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn discover(&self) -> Vec<Discovered> {
        discover(&self.root)
            .into_iter()
            .map(|source| self.discovered(source))
            .collect()
    }

    fn load(&self, id: &str) -> Result<Discovered, String> {
        source_for(&self.root, id)
            .map(|source| self.discovered(source))
            .ok_or_else(|| {
                format!(
                    "no plugin directory '{id}' with an index.ts or index.js in {}",
                    self.root.display()
                )
            })
    }

    fn exists(&self, id: &str) -> bool {
        source_for(&self.root, id).is_some()
    }
}

impl LoadedStatus for ScriptStatus {
    fn manifest(&self) -> Option<PluginManifest> {
        ScriptStatus::manifest(self)
    }

    fn connectors(&self) -> Option<Vec<ConnectorPluginInfo>> {
        ScriptStatus::connectors(self)
    }

    fn view(&self) -> Value {
        serde_json::to_value(ScriptStatus::view(self)).unwrap_or(Value::Null)
    }
}

/// Live facts about one script plugin, shared by all its instances (they come and go with
/// restarts and reloads) and read by the API.
pub struct ScriptStatus {
    pub source: ScriptSource,
    memory_bytes: AtomicU64,
    current: Mutex<Option<(PluginManifest, ModuleInfo)>>,
}

/// What the API shows about a script plugin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptView {
    pub source_path: String,
    pub entry_file: String,
    pub engine_memory_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleInfo>,
}

impl ScriptStatus {
    pub fn new(source: ScriptSource) -> Arc<Self> {
        Arc::new(ScriptStatus {
            source,
            memory_bytes: AtomicU64::new(0),
            current: Mutex::new(None),
        })
    }

    /// The manifest of the instance that last initialised successfully.
    pub fn manifest(&self) -> Option<PluginManifest> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.0.clone())
    }

    pub fn view(&self) -> ScriptView {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ScriptView {
            source_path: self.source.dir.display().to_string(),
            entry_file: self
                .source
                .entry
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            engine_memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            module: current.map(|c| c.1),
        }
    }
}

/// A factory that builds a fresh script plugin (a new engine) each time it is called.
pub fn factory(source: ScriptSource, limits: Limits, status: Arc<ScriptStatus>) -> PluginFactory {
    Arc::new(move || {
        Arc::new(ScriptPlugin::load(&source, limits, status.clone())) as Arc<dyn Plugin>
    })
}

/// How often a script plugin's engine memory is measured for the API.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The connector plugins a module registered, as the pipeline sees them.
pub fn connector_infos(info: &ModuleInfo) -> Vec<ConnectorPluginInfo> {
    info.connector_plugins
        .iter()
        .map(|c| ConnectorPluginInfo {
            id: c["id"].as_str().unwrap_or_default().to_string(),
            name: c["name"].as_str().unwrap_or_default().to_string(),
            priority: c["priority"]
                .as_f64()
                .map(|p| p.max(0.0) as u32)
                .unwrap_or(crate::plugin::DEFAULT_PRIORITY),
            compatible_connectors: serde_json::from_value(c["compatibleConnectors"].clone())
                .unwrap_or_default(),
            config_schema: serde_json::from_value(c["configSchema"].clone()).unwrap_or_default(),
            on_chunk: c["hooks"]
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h == "onChunk")),
        })
        .collect()
}

impl ScriptStatus {
    /// Connector plugins of the newest good instance.
    pub fn connectors(&self) -> Option<Vec<ConnectorPluginInfo>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| connector_infos(&c.1))
    }
}

/// One instance of a script plugin: its engine, or why it could not be loaded.
pub struct ScriptPlugin {
    busy: tokio::sync::Mutex<()>,
    sampled_at: Mutex<Option<Instant>>,
    manifest: PluginManifest,
    engine: Mutex<Result<Engine, ScriptError>>,
    bridge: Arc<Bridge>,
    status: Arc<ScriptStatus>,
}

impl ScriptPlugin {
    /// Loads the module now (compile, evaluate, check contracts). A failure is kept and
    /// returned by `init`, so it surfaces as `plugin.error` with its file and line.
    pub fn load(source: &ScriptSource, limits: Limits, status: Arc<ScriptStatus>) -> ScriptPlugin {
        let bridge = Arc::new(Bridge::new(&source.id));
        let engine = Engine::load(&source.dir, &source.entry, limits, bridge.clone());
        let (manifest, engine) = match engine {
            Ok(engine) => match manifest_of(&source.id, &engine.info) {
                Ok(manifest) => (manifest, Ok(engine)),
                Err(problem) => (
                    fallback_manifest(&source.id, &status),
                    Err(ScriptError::Contract(problem)),
                ),
            },
            Err(error) => (fallback_manifest(&source.id, &status), Err(error)),
        };
        ScriptPlugin {
            busy: tokio::sync::Mutex::new(()),
            sampled_at: Mutex::new(None),
            manifest,
            engine: Mutex::new(engine),
            bridge,
            status,
        }
    }

    /// Runs `method` on the engine to the end (no host calls); limit breaches are fatal.
    fn call(&self, method: &str, args: &[Value]) -> Result<Value, PluginError> {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let engine = engine.as_ref().map_err(load_error)?;
        let result = engine.call(method, args);
        self.sample_memory(engine);
        result.map_err(plugin_error)
    }

    /// Runs `method` on the engine, performing the host calls it waits on (inference) between
    /// turns of JS. Calls into one plugin are serialised: JS never runs on two at once.
    async fn call_async(&self, method: &str, args: &[Value]) -> Result<Value, PluginError> {
        let _turn = self.busy.lock().await;
        let mut step = self.with_engine(|e| e.start(method, args))?;
        loop {
            match step {
                Step::Done(value) => return Ok(value),
                Step::Waiting { call, ops } => {
                    let done =
                        futures::future::join_all(ops.into_iter().map(|op| self.perform(op))).await;
                    step = self.with_engine(|e| e.resume(call, done))?;
                }
            }
        }
    }

    fn with_engine(
        &self,
        f: impl FnOnce(&Engine) -> Result<Step, ScriptError>,
    ) -> Result<Step, PluginError> {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let engine = engine.as_ref().map_err(load_error)?;
        let result = f(engine);
        self.sample_memory(engine);
        result.map_err(plugin_error)
    }

    /// Runs one host call for the script; the outcome settles its promise.
    async fn perform(&self, op: HostOp) -> (u64, Result<Value, Value>) {
        let outcome = match op.kind.as_str() {
            "chat" => self.chat(&op.payload).await,
            other => Err(json!({ "message": format!("unknown host call '{other}'") })),
        };
        (op.id, outcome)
    }

    async fn chat(&self, payload: &Value) -> Result<Value, Value> {
        let fail = |code: &str, message: String| json!({ "code": code, "message": message });
        let ctx = self.bridge.ctx.get().ok_or_else(|| {
            fail(
                "unavailable",
                "resolveClient() needs init(ctx) first".into(),
            )
        })?;
        let client = ctx
            .resolve_client_json(&payload["config"])
            .map_err(|e| fail("invalid_client_config", e.message))?;
        let request: crate::inference::ChatRequest =
            serde_json::from_value(payload["request"].clone()).map_err(|e| {
                fail(
                    "invalid_chat_request",
                    format!("chat(messages, options): {e}"),
                )
            })?;
        match client.chat(request).await {
            Ok(response) => Ok(serde_json::to_value(response).unwrap_or(Value::Null)),
            Err(error) => {
                let code = match &error {
                    crate::inference::InferenceError::CircuitOpen { .. } => "circuit_open",
                    crate::inference::InferenceError::Config(_) => "invalid_client_config",
                    _ => "inference_failed",
                };
                Err(fail(code, error.to_string()))
            }
        }
    }

    /// Measuring walks the whole engine heap: do it at most once a second, not per call.
    fn sample_memory(&self, engine: &Engine) {
        let mut sampled = self.sampled_at.lock().unwrap_or_else(|e| e.into_inner());
        if sampled.is_none_or(|at| at.elapsed() >= MEMORY_SAMPLE_EVERY) {
            *sampled = Some(Instant::now());
            self.status
                .memory_bytes
                .store(engine.memory_bytes(), Ordering::Relaxed);
        }
    }
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

fn manifest_of(id: &str, info: &ModuleInfo) -> Result<PluginManifest, String> {
    let version =
        Version::parse(&info.version).map_err(|e| format!("`version` '{}': {e}", info.version))?;
    let first = info.connector_plugins.first();
    let name = info
        .gateway
        .clone()
        .or_else(|| first.and_then(|c| c["name"].as_str().map(str::to_owned)))
        .unwrap_or_else(|| id.to_string());
    let mut manifest = PluginManifest::new(id, version)
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
                first["id"].as_str().unwrap_or(id)
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
        let _ = self.bridge.ctx.set(ctx.clone());
        self.call_async("init", &[]).await.map_err(|e| {
            if e.step.is_some() {
                e
            } else {
                e.at_step("init")
            }
        })?;
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(engine) = engine.as_ref() {
            *self
                .status
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner()) =
                Some((self.manifest.clone(), engine.info.clone()));
        }
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        self.call_async("start", &[]).await.map(|_| ())
    }

    async fn stop(&self) -> Result<(), PluginError> {
        self.call_async("stop", &[]).await.map(|_| ())
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
        false
    }

    fn connector_plugins(&self) -> Vec<ConnectorPluginInfo> {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        engine
            .as_ref()
            .map(|e| connector_infos(&e.info))
            .unwrap_or_default()
    }

    async fn connector_hook(
        &self,
        connector_plugin: &str,
        hook: Hook,
        input: Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        let args = [
            json!(connector_plugin),
            json!(hook.name()),
            input,
            json!(ctx),
        ];
        let reply = self.call_async("connector", &args).await?;
        if let Some(state) = reply.get("state").and_then(Value::as_object) {
            ctx.state = state.clone();
        }
        if reply["skipped"].as_bool().unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(reply.get("result").cloned().unwrap_or(Value::Null)))
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
    use std::time::Duration;

    pub fn limits() -> Limits {
        Limits {
            memory_limit_bytes: 16 << 20,
            call_timeout: Duration::from_millis(300),
            max_stack_bytes: 512 << 10,
        }
    }

    fn plugin_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, ScriptSource) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("demo");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let source = source_for(root.path(), "demo").unwrap();
        (root, source)
    }

    fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, ScriptPlugin) {
        let (root, source) = plugin_dir(files);
        let status = ScriptStatus::new(source.clone());
        (root, ScriptPlugin::load(&source, limits(), status))
    }

    fn error_of(plugin: &ScriptPlugin) -> String {
        plugin
            .engine
            .lock()
            .unwrap()
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn discovery_prefers_ts_skips_empty_and_dot_directories() {
        let root = tempfile::tempdir().unwrap();
        for (dir, file) in [
            ("b", "index.js"),
            ("a", "index.ts"),
            ("a", "index.js"),
            (".hidden", "index.js"),
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
            std::fs::write(root.path().join(dir).join(file), "").unwrap();
        }
        std::fs::create_dir_all(root.path().join("empty")).unwrap();
        let found = discover(root.path());
        let ids: Vec<&str> = found.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(found[0].entry.ends_with("index.ts"));
    }

    #[test]
    fn a_gateway_plugin_loads_and_reports_its_manifest() {
        let (_root, plugin) = load(&[(
            "index.js",
            "export default { name: 'demo-gw', version: '1.2.3', init(ctx) {} };",
        )]);
        assert_eq!(error_of(&plugin), "");
        let m = plugin.manifest();
        assert_eq!(
            (m.id.as_str(), m.name.as_str(), m.version.to_string()),
            ("demo", "demo-gw", "1.2.3".into())
        );
    }

    #[test]
    fn a_connector_plugin_registered_through_the_seed_loader_loads() {
        let (_root, plugin) = load(&[(
            "index.ts",
            r#"import type { ConnectorPlugin } from "./types";
import { PluginLoader } from "./loader";
const p: ConnectorPlugin = { id: "demo", name: "Demo", description: "d", version: "2.0.0", priority: 7,
  compatibleConnectors: ["HTTP_REST"], configSchema: [{ key: "k", label: "K", type: "string", required: true, description: "" }] };
PluginLoader.register(p);
export { p };"#,
        )]);
        assert_eq!(error_of(&plugin), "");
        let m = plugin.manifest();
        assert_eq!(m.priority, 7);
        assert_eq!(m.compatible_connectors, ["HTTP_REST"]);
        assert_eq!(m.config_schema[0].key, "k");
    }

    #[test]
    fn a_module_with_neither_contract_is_refused_saying_what_is_missing() {
        let (_root, plugin) = load(&[("index.js", "export const x = 1;")]);
        assert!(
            error_of(&plugin).contains("has no default export and registers no connector plugin"),
            "{}",
            error_of(&plugin)
        );
        let (_root, plugin) = load(&[(
            "index.js",
            "export default { name: 'x', version: '1.0.0' };",
        )]);
        assert!(
            error_of(&plugin).contains("missing `init` (a function)"),
            "{}",
            error_of(&plugin)
        );
        let (_root, plugin) = load(&[(
            "index.js",
            "export default { name: 'x', version: 'one', init() {} };",
        )]);
        assert!(
            error_of(&plugin).contains("semver"),
            "{}",
            error_of(&plugin)
        );
        let (_root, plugin) = load(&[("index.js", "import { PluginLoader } from './loader'; PluginLoader.register({ id: 'c', version: '1.0.0' });")]);
        let e = error_of(&plugin);
        assert!(
            e.contains("connector plugin #1 ('c') is missing `name`")
                && e.contains("`compatibleConnectors`"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_and_throws_carry_file_and_line() {
        let (_root, plugin) = load(&[(
            "index.js",
            "export default {\n  name: 'x',\n  version: '1.0.0'\n  init() {}\n};\n",
        )]);
        let e = error_of(&plugin);
        assert!(e.contains("index.js:4"), "{e}");
        let (_root, plugin) = load(&[("index.ts", "const a: number = 1;\nconst b = {;\n")]);
        assert!(
            error_of(&plugin).contains("index.ts:2:"),
            "{}",
            error_of(&plugin)
        );
        let (_root, plugin) = load(&[("index.js", "export default { name: 'x', version: '1.0.0',\n  init() {\n    throw new Error('boom');\n  } };\n")]);
        let e = plugin.call("init", &[]).unwrap_err();
        assert!(
            e.message.contains("boom") && e.message.contains("index.js:3"),
            "{}",
            e.message
        );
        assert!(!e.fatal);
    }

    #[test]
    fn runaway_loops_and_memory_bombs_are_stopped_as_fatal() {
        let (_root, plugin) = load(&[("index.js", "export default { name: 'x', version: '1.0.0', init() {}, start() { while (true) {} }, stop() { const a = []; for (;;) a.push(new Array(1e5).fill(1)); } };")]);
        let e = plugin.call("start", &[]).unwrap_err();
        assert!(e.fatal && e.message.contains("time budget"), "{e:?}");
        let e = plugin.call("stop", &[]).unwrap_err();
        assert!(e.fatal && e.message.contains("memory limit"), "{e:?}");
        // Top-level loops are bounded too.
        let (_root, plugin) = load(&[("index.js", "while (true) {}")]);
        assert!(
            error_of(&plugin).contains("time budget"),
            "{}",
            error_of(&plugin)
        );
    }

    #[test]
    fn async_hooks_and_relative_imports_work_and_the_sandbox_holds() {
        let (_root, plugin) = load(&[
            ("util.ts", "export const twice = (n: number): number => n * 2;"),
            ("index.js", "import { twice } from './util'; export default { name: 'x', version: '1.0.0', async init() { await Promise.resolve(); globalThis.v = twice(21); }, async start() { if (globalThis.v !== 42) throw new Error('bad ' + globalThis.v); if (typeof require !== 'undefined' || typeof process !== 'undefined' || typeof fetch !== 'undefined') throw new Error('escaped'); } };"),
        ]);
        assert_eq!(error_of(&plugin), "");
        plugin.call("init", &[]).unwrap();
        plugin.call("start", &[]).unwrap();
        let (_root, plugin) = load(&[(
            "index.js",
            "import x from '../../etc/passwd'; export default {};",
        )]);
        assert!(
            error_of(&plugin).contains("may not leave the plugin's directory"),
            "{}",
            error_of(&plugin)
        );
        let (_root, plugin) = load(&[("index.js", "import _ from 'lodash'; export default {};")]);
        assert!(
            error_of(&plugin).contains("no npm packages"),
            "{}",
            error_of(&plugin)
        );
    }
}

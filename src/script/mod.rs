//! Script plugins: JavaScript/TypeScript plugins from `plugins/core/<dir>/index.{ts,js}`.
//!
//! Owns discovery of plugin directories (`ScriptLoader`, which plugs into the plugin runtime as
//! a [`Loader`]) and what is known about each across its instances (`ScriptStatus`). Each
//! instance is a `ScriptPlugin` (`plugin`): a [`Plugin`] whose hooks run in a QuickJS engine of
//! its own (`engine`), with TypeScript stripped in-process (`transpile`), web-platform globals
//! (`web`, and `fetch` under a per-plugin policy) and host calls that finish later. Values
//! cross into the engine and back by direct conversion (`convert`), and what a hook may never
//! read stays on the host side until it does (`lazy`).
//! Script plugins run on a dedicated arbiter each and are supervised exactly like native ones:
//! a fresh engine per restart, and a limit breach (time, memory) counts as a crash. `watch`
//! turns file changes into debounced reloads. Does not own the reload swap itself (the plugins
//! supervisor does) nor the REST endpoints.
//!
//! A script plugin is identified by what its module declares (the gateway plugin's `name`, or
//! the `id` of the first connector plugin it registers); the directory is only where it lives.
//! The module may export an Open Astra gateway plugin (`export default {name, version, init,
//! start?, stop?}`), register Krawall connector plugins (`PluginLoader.register({...})`), or
//! both; every connector plugin it registers is usable in sessions by its own id.

mod convert;
pub mod engine;
pub mod fetch;
mod lazy;
pub mod plugin;
pub mod transpile;
pub mod watch;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;

use crate::plugin::source::{Discovered, LoadedStatus, Loader, Source};
use crate::plugin::{ConnectorPluginInfo, HookSet, Plugin, PluginFactory, PluginManifest};
use crate::supervisor::child::Placement;
use engine::{Limits, ModuleInfo, Snapshot};
use fetch::{FetchCounts, FetchPolicy, FetchStats};
pub use plugin::ScriptPlugin;

/// A discovered plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSource {
    /// The directory name: where the plugin lives, and its id until its module says otherwise.
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

/// What the settings say about one script plugin: its engine limits and its fetch policy.
#[derive(Debug, Clone)]
pub struct PluginPolicy {
    pub limits: Limits,
    pub fetch: FetchPolicy,
    /// Connector hooks run on the calling session's thread rather than the plugin's.
    pub hooks_on_session_thread: bool,
}

/// The policy of a plugin known by these names (declared id first, then its directory).
pub type PolicyFn = Arc<dyn Fn(&[&str]) -> PluginPolicy + Send + Sync>;

/// Loads script plugins from `<plugins.dir>/core/<dir>/index.{ts,js}`: the engine's side of
/// [`Loader`]. Each plugin gets its own engine on its own arbiter (an engine may block its
/// thread), under the policy `policy` gives for it.
pub struct ScriptLoader {
    root: PathBuf,
    policy: PolicyFn,
}

impl ScriptLoader {
    pub fn new(root: PathBuf, policy: PolicyFn) -> Self {
        warn_if_misplaced(&root);
        ScriptLoader { root, policy }
    }

    /// The `plugins/core` directory it loads from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn discovered(&self, source: ScriptSource) -> Discovered {
        let status = ScriptStatus::new(source.clone());
        Discovered {
            source: Source::Loaded(KIND),
            factory: factory(source, self.policy.clone(), status.clone()),
            placement: Placement::Dedicated,
            status: Some(status as Arc<dyn LoadedStatus>),
        }
    }
}

/// A plugins directory given one level too deep (`plugins/core`, or a folder of plugin
/// folders) loads nothing: say so, and name the directory that would work.
fn warn_if_misplaced(core: &Path) {
    if let Some(advice) = misplaced(core) {
        tracing::warn!(dir = %core.display(), "{advice}");
    }
}

/// Why `core` (the `core/` of the plugins directory) finds no plugins although the plugins
/// directory holds plugin folders, and the fix; `None` when it is fine.
pub fn misplaced(core: &Path) -> Option<String> {
    if core.is_dir() {
        return None;
    }
    let given = core.parent()?;
    let holds_plugins = std::fs::read_dir(given)
        .ok()?
        .filter_map(Result::ok)
        .any(|d| d.path().is_dir() && find_entry(&d.path()).is_some());
    if !holds_plugins {
        return None;
    }
    let fix = match given.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) if given.file_name().is_some_and(|n| n == "core") => {
            format!("use --plugins-dir {}", parent.display())
        }
        _ => format!(
            "move the plugin folders into {}, or point --plugins-dir at the directory that holds core/",
            core.display()
        ),
    };
    Some(format!(
        "{} holds plugin folders but has no core/ subdirectory, so no script plugin is loaded: {fix}",
        given.display()
    ))
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

    /// By directory name, or else by the id a module declares (each module is evaluated to
    /// find it: this is an operator's action, not a hot path).
    fn load(&self, key: &str) -> Result<Discovered, String> {
        if let Some(source) = source_for(&self.root, key) {
            return Ok(self.discovered(source));
        }
        for source in discover(&self.root) {
            let status = ScriptStatus::new(source.clone());
            let probe = ScriptPlugin::load(&source, self.policy.as_ref(), status);
            if probe.manifest().id == key {
                return Ok(self.discovered(source));
            }
        }
        // The host's own paths stay out of API answers.
        Err(format!(
            "no plugin directory '{key}' with an index.ts or index.js, and no module declaring the id '{key}', under core/ of the plugins directory"
        ))
    }

    fn exists(&self, key: &str) -> bool {
        source_for(&self.root, key).is_some()
    }
}

impl LoadedStatus for ScriptStatus {
    fn key(&self) -> &str {
        &self.source.id
    }

    fn origin(&self) -> String {
        let file = self
            .source
            .entry
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{file}", self.source.id)
    }

    fn read_files_next(&self) {
        self.read_files_next.store(true, Ordering::Release);
    }

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
    /// Its fetch calls, across instances.
    pub fetch: Arc<FetchStats>,
    /// The files of the version that last initialised.
    last_good: Mutex<Option<Snapshot>>,
    /// Set before a reload: the next instance reads the files, not `last_good`.
    read_files_next: AtomicBool,
    /// The running version was started from `last_good` while the files differ from it.
    behind_files: AtomicBool,
    /// Calls whose promise waits on host calls right now.
    pub waiting_calls: AtomicU64,
}

/// What the API shows about a script plugin.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScriptView {
    /// The directory it lives in (its id is what the module declares).
    pub directory: String,
    pub source_path: String,
    pub entry_file: String,
    pub engine_memory_bytes: u64,
    pub fetch: FetchCounts,
    /// It runs the last version that initialised, which differs from the files on disk (a
    /// reload failed, then it restarted).
    pub running_last_good_version: bool,
    /// Calls (hooks, routes, tools) whose promise waits on host calls right now.
    pub waiting_calls: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<ModuleInfo>,
}

impl ScriptStatus {
    pub fn new(source: ScriptSource) -> Arc<Self> {
        Arc::new(ScriptStatus {
            source,
            memory_bytes: AtomicU64::new(0),
            current: Mutex::new(None),
            fetch: Arc::new(FetchStats::default()),
            last_good: Mutex::new(None),
            read_files_next: AtomicBool::new(false),
            behind_files: AtomicBool::new(false),
            waiting_calls: AtomicU64::new(0),
        })
    }

    /// The snapshot the next instance starts from: the last version that initialised, unless
    /// a reload asked for the files. Says so when that version differs from the files.
    pub fn start_from(&self) -> Option<Snapshot> {
        if self.read_files_next.swap(false, Ordering::AcqRel) {
            return None;
        }
        let snapshot = self
            .last_good
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let differs = snapshot
            .iter()
            .any(|(path, text)| std::fs::read_to_string(path).ok().as_deref() != Some(text));
        if differs {
            tracing::warn!(
                dir = %self.source.id,
                "Restarting from the last version that initialised: the files changed since and have not reloaded."
            );
        }
        self.behind_files.store(differs, Ordering::Relaxed);
        Some(snapshot)
    }

    /// An instance initialised: its files are what a restart starts from.
    pub fn initialised(&self, snapshot: Snapshot, from_snapshot: bool) {
        *self.last_good.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
        if !from_snapshot {
            self.behind_files.store(false, Ordering::Relaxed);
        }
    }

    /// The manifest of the instance that last initialised successfully.
    pub fn manifest(&self) -> Option<PluginManifest> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.0.clone())
    }

    /// Records the instance that just initialised.
    pub fn set_current(&self, manifest: PluginManifest, info: ModuleInfo) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((manifest, info));
    }

    pub fn record_memory(&self, bytes: u64) {
        self.memory_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn view(&self) -> ScriptView {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ScriptView {
            directory: self.source.id.clone(),
            source_path: self.source.dir.display().to_string(),
            entry_file: self
                .source
                .entry
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            engine_memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            fetch: self.fetch.snapshot(),
            running_last_good_version: self.behind_files.load(Ordering::Relaxed),
            waiting_calls: self.waiting_calls.load(Ordering::Relaxed),
            module: current.map(|c| c.1),
        }
    }
}

/// A factory that builds a fresh script plugin (a new engine) each time it is called.
pub fn factory(source: ScriptSource, policy: PolicyFn, status: Arc<ScriptStatus>) -> PluginFactory {
    Arc::new(move || {
        Arc::new(ScriptPlugin::load(&source, policy.as_ref(), status.clone())) as Arc<dyn Plugin>
    })
}

/// The hooks a registered connector plugin defines (the prelude lists them under `hooks`).
pub fn hook_set(connector: &Value) -> HookSet {
    HookSet::from_names(
        connector["hooks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
}

/// The connector plugins a module registered, as the pipeline sees them.
pub fn connector_infos(info: &ModuleInfo) -> Vec<ConnectorPluginInfo> {
    info.connector_plugins
        .iter()
        .map(|c| ConnectorPluginInfo {
            id: c["id"].as_str().unwrap_or_default().to_string(),
            name: c["name"].as_str().unwrap_or_default().to_string(),
            description: c["description"].as_str().unwrap_or_default().to_string(),
            version: c["version"].as_str().unwrap_or_default().to_string(),
            priority: c["priority"]
                .as_f64()
                .map(|p| p.max(0.0) as u32)
                .unwrap_or(crate::plugin::DEFAULT_PRIORITY),
            compatible_connectors: serde_json::from_value(c["compatibleConnectors"].clone())
                .unwrap_or_default(),
            config_schema: serde_json::from_value(c["configSchema"].clone()).unwrap_or_default(),
            hooks: hook_set(c),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub fn limits() -> Limits {
        Limits {
            memory_limit_bytes: 16 << 20,
            call_timeout: Duration::from_millis(300),
            max_stack_bytes: 512 << 10,
            max_host_calls: 1000,
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

    pub fn policy(_: &[&str]) -> PluginPolicy {
        PluginPolicy {
            limits: limits(),
            fetch: FetchPolicy::default(),
            hooks_on_session_thread: true,
        }
    }

    fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, ScriptPlugin) {
        let (root, source) = plugin_dir(files);
        let status = ScriptStatus::new(source.clone());
        (root, ScriptPlugin::load(&source, &policy, status))
    }

    fn error_of(plugin: &ScriptPlugin) -> String {
        plugin
            .load_error()
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
    fn a_plugins_dir_one_level_too_deep_is_named_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let core = root.path().join("plugins").join("core");
        std::fs::create_dir_all(core.join("x")).unwrap();
        std::fs::write(core.join("x/index.js"), "").unwrap();
        // Pointed at plugins/core: its core/ does not exist, but it holds plugin folders.
        let advice = misplaced(&core.join("core")).unwrap();
        assert!(
            advice.contains(&format!(
                "use --plugins-dir {}",
                root.path().join("plugins").display()
            )),
            "{advice}"
        );
        // A folder of plugin folders that is not called core.
        let flat = root.path().join("mine");
        std::fs::create_dir_all(flat.join("y")).unwrap();
        std::fs::write(flat.join("y/index.ts"), "").unwrap();
        let advice = misplaced(&flat.join("core")).unwrap();
        assert!(advice.contains("move the plugin folders into"), "{advice}");
        // Right, or simply empty: nothing to say.
        assert_eq!(misplaced(&core), None);
        assert_eq!(misplaced(&root.path().join("empty").join("core")), None);
    }

    #[test]
    fn a_gateway_plugin_loads_and_reports_its_manifest() {
        let (_root, plugin) = load(&[(
            "index.js",
            "export default { name: 'demo-gw', version: '1.2.3', init(ctx) {} };",
        )]);
        assert_eq!(error_of(&plugin), "");
        let m = plugin.manifest();
        // The declared name is the id; the directory is only where it lives.
        assert_eq!(
            (m.id.as_str(), m.name.as_str(), m.version.to_string()),
            ("demo-gw", "demo-gw", "1.2.3".into())
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
    fn declared_ids_must_be_usable_in_routes_and_paths() {
        let (_root, plugin) = load(&[(
            "index.js",
            "export default { name: 'My Plugin', version: '1.0.0', init() {} };",
        )]);
        assert!(
            error_of(&plugin).contains("plugin id 'My Plugin' is not valid"),
            "{}",
            error_of(&plugin)
        );
        let (_root, plugin) = load(&[("index.js", "import { PluginLoader } from './loader'; PluginLoader.register({ id: 'a/b', name: 'A', description: '', version: '1.0.0', compatibleConnectors: ['SSE'] });")]);
        assert!(error_of(&plugin).contains("'a/b'"), "{}", error_of(&plugin));
        assert!(plugin::valid_id("multi-step-auth") && plugin::valid_id("v1.2_x"));
        assert!(
            !plugin::valid_id(".hidden")
                && !plugin::valid_id("")
                && !plugin::valid_id(&"x".repeat(65))
        );
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
        let module = "export default { name: 'x', version: '1.0.0', init() {}, start() { while (true) {} }, stop() { const a = []; for (;;) a.push(new Array(1e5).fill(1)); } };";
        let (_root, plugin) = load(&[("index.js", module)]);
        let e = plugin.call("start", &[]).unwrap_err();
        assert!(e.fatal && e.message.contains("time budget"), "{e:?}");
        // A broken engine stays broken: every later call reports the breach (it is restarted).
        assert_eq!(plugin.call("init", &[]).unwrap_err(), e);
        let (_root, plugin) = load(&[("index.js", module)]);
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
            ("index.js", "import { twice } from './util'; export default { name: 'x', version: '1.0.0', async init() { await Promise.resolve(); globalThis.v = twice(21); }, async start() { if (globalThis.v !== 42) throw new Error('bad ' + globalThis.v); if (typeof require !== 'undefined' || typeof process !== 'undefined' || typeof Deno !== 'undefined' || typeof fetch !== 'function') throw new Error('escaped'); } };"),
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
        // A symbolic link inside the directory that leads outside it is refused too, for an
        // import and for the entry file itself.
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.js");
        std::fs::write(&secret, "export const key = 'stolen';").unwrap();
        let (root, source) = plugin_dir(&[(
            "index.js",
            "import { key } from './link.js'; export default { name: 'x', version: '1.0.0', init() {} };",
        )]);
        std::os::unix::fs::symlink(&secret, source.dir.join("link.js")).unwrap();
        let plugin = ScriptPlugin::load(&source, &policy, ScriptStatus::new(source.clone()));
        assert!(
            error_of(&plugin).contains("imports may not leave the plugin's directory")
                && error_of(&plugin).contains("link.js is a link that leads outside it")
                && !error_of(&plugin).contains(&outside.path().display().to_string()),
            "{}",
            error_of(&plugin)
        );
        std::fs::remove_file(source.dir.join("index.js")).unwrap();
        std::os::unix::fs::symlink(&secret, source.dir.join("index.js")).unwrap();
        let plugin = ScriptPlugin::load(&source, &policy, ScriptStatus::new(source.clone()));
        assert!(
            error_of(&plugin).contains("leads outside it"),
            "{}",
            error_of(&plugin)
        );
        drop(root);
        let (_root, plugin) = load(&[("index.js", "import _ from 'lodash'; export default {};")]);
        assert!(
            error_of(&plugin).contains("no npm packages"),
            "{}",
            error_of(&plugin)
        );
    }
}

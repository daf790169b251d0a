//! Settings: the typed tree, where its values come from, and every check on them.
//!
//! Owns loading (embedded `config/default.toml` < `--config` file < `config/{profile}.toml` <
//! `SWITCHYARD__SECTION__KEY` environment < command-line flags), rejecting unknown keys, and
//! reporting *every* problem at once with its key path and where the value came from.
//! Does not own the command line itself (`cli`) nor anything that acts on the values.
//!
//! The embedded default file doubles as the schema: a key that is not in it is unknown, and a
//! value must have the type its default has. That keeps the documented defaults and the accepted
//! keys from drifting apart.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::supervisor::policy::{Backoff, Intensity, RestartPolicy};

/// The embedded defaults; also the schema every other source is checked against.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment prefix of settings: `SWITCHYARD__SERVER__BIND` sets `server.bind`.
pub const ENV_PREFIX: &str = "SWITCHYARD__";
/// Shorthand for `server.admin_token`, as operators expect for a secret.
pub const ENV_ADMIN_TOKEN: &str = "SWITCHYARD_ADMIN_TOKEN";
/// Shorthand for `store.secret_key`.
pub const ENV_SECRET_KEY: &str = "SWITCHYARD_SECRET_KEY";
/// Selects the profile file when `--profile` is not given.
pub const ENV_PROFILE: &str = "SWITCHYARD_PROFILE";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Targets declared inline (`[[targets]]`); checked by `connector::target`.
    pub targets: Vec<toml::Value>,
    /// Agents declared inline (`[[agents]]`); checked by `agent`.
    pub agents: Vec<toml::Value>,
    pub server: ServerSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
    pub plugins: PluginSettings,
    pub supervisor: SupervisorSettings,
    pub broker: BrokerSettings,
    pub sessions: SessionSettings,
    pub store: StoreSettings,
    pub hot_reload: HotReloadSettings,
    pub data: DataSettings,
    pub inference: InferenceSection,
    pub agent: AgentRunnerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSection {
    pub max_retries: u32,
    pub retry_base_delay_ms: u64,
    pub request_timeout_ms: u64,
    pub breaker_failure_threshold: u32,
    pub breaker_window_ms: u64,
    pub breaker_open_ms: u64,
    pub breaker_close_after: u32,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub endpoint: Option<String>,
    pub api_key_env: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRunnerSettings {
    pub max_tool_rounds: u32,
    pub history_messages: usize,
    pub max_sessions: usize,
    pub turn_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub targets_file: PathBuf,
    pub hook_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub queue_capacity: usize,
    pub after_receive_order: String,
    pub max_sessions: usize,
    /// Threads session actors run on; 0 means one per CPU core.
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub admin_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    pub deadline_ms: u64,
    pub readiness_delay_ms: u64,
    pub http_drain_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    pub dir: PathBuf,
    pub native: Vec<String>,
    pub init_timeout_ms: u64,
    pub start_timeout_ms: u64,
    pub stop_timeout_ms: u64,
    pub call_timeout_ms: u64,
    pub mailbox_capacity: usize,
    pub script: ScriptLimits,
    /// Per-plugin overrides of `script`.
    pub limits: BTreeMap<String, ScriptLimitOverrides>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    pub memory_limit_bytes: usize,
    pub call_timeout_ms: u64,
    pub max_stack_bytes: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimitOverrides {
    pub memory_limit_bytes: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub max_stack_bytes: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub enabled: bool,
    pub path: PathBuf,
    pub batch_window_ms: u64,
    pub batch_max_rows: usize,
    pub queue_capacity: usize,
    pub audit_retention_days: u64,
    pub audit_max_rows: u64,
    pub prune_interval_ms: u64,
    pub secret_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotReloadSettings {
    pub enabled: bool,
    pub debounce_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    pub restart_intensity: u32,
    pub restart_period_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_factor: f64,
    pub backoff_jitter: f64,
    pub backoff_reset_after_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    pub subscriber_capacity: usize,
    pub mailbox_capacity: usize,
    pub stream_capacity: usize,
    pub stream_keepalive_ms: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// The embedded defaults, as `cargo run` uses them.
    pub fn defaults() -> Settings {
        load(&Overrides::default(), std::iter::empty()).expect("embedded defaults are valid")
    }

    /// The address to bind (validated at load time).
    pub fn bind_addr(&self) -> SocketAddr {
        self.server.bind.parse().expect("validated at load")
    }

    pub fn log_format(&self) -> LogFormat {
        match self.log.format.as_str() {
            "json" => LogFormat::Json,
            _ => LogFormat::Pretty,
        }
    }

    /// The admin token, if one is required on `/api/*`.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.server.admin_token.as_str()).filter(|t| !t.is_empty())
    }

    /// The restart policy every plugin child gets.
    pub fn restart_policy(&self) -> RestartPolicy {
        let s = &self.supervisor;
        RestartPolicy {
            intensity: Intensity {
                max_restarts: s.restart_intensity,
                period: ms(s.restart_period_ms),
            },
            backoff: Backoff {
                min: ms(s.backoff_min_ms),
                max: ms(s.backoff_max_ms),
                factor: s.backoff_factor,
                jitter: s.backoff_jitter,
                reset_after: ms(s.backoff_reset_after_ms),
            },
        }
    }

    /// Engine limits of script plugin `id` (its overrides over the defaults).
    pub fn script_limits(&self, id: &str) -> crate::script::engine::Limits {
        let base = self.plugins.script;
        let o = self.plugins.limits.get(id).copied().unwrap_or_default();
        crate::script::engine::Limits {
            memory_limit_bytes: o.memory_limit_bytes.unwrap_or(base.memory_limit_bytes),
            call_timeout: ms(o.call_timeout_ms.unwrap_or(base.call_timeout_ms)),
            max_stack_bytes: o.max_stack_bytes.unwrap_or(base.max_stack_bytes),
        }
    }

    /// Retry, timeout and breaker settings of inference clients.
    pub fn inference_settings(&self) -> crate::inference::InferenceSettings {
        let i = &self.inference;
        crate::inference::InferenceSettings {
            max_retries: i.max_retries,
            retry_base_delay: ms(i.retry_base_delay_ms),
            request_timeout: ms(i.request_timeout_ms),
            breaker: crate::inference::breaker::BreakerPolicy {
                failure_threshold: i.breaker_failure_threshold,
                window: ms(i.breaker_window_ms),
                open_for: ms(i.breaker_open_ms),
                close_after: i.breaker_close_after,
            },
            providers: i
                .providers
                .iter()
                .map(|(name, p)| {
                    (
                        name.clone(),
                        crate::inference::ProviderOverride {
                            endpoint: p.endpoint.clone(),
                            api_key_env: p.api_key_env.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Directory scanned for script plugins (`<plugins.dir>/core`).
    pub fn script_plugins_dir(&self) -> PathBuf {
        self.plugins.dir.join("core")
    }

    /// Checks that span more than a value's type; every problem is returned.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                problems.push(Problem::new(key, message));
            }
        };
        check(
            self.server.bind.parse::<SocketAddr>().is_ok(),
            "server.bind",
            format!(
                "'{}' is not a socket address such as 127.0.0.1:8080",
                self.server.bind
            ),
        );
        check(
            self.server.max_body_bytes > 0,
            "server.max_body_bytes",
            "must be greater than 0".into(),
        );
        check(
            matches!(self.log.format.as_str(), "pretty" | "json"),
            "log.format",
            format!("'{}' is not one of: pretty, json", self.log.format),
        );
        check(
            self.shutdown.deadline_ms > 0,
            "shutdown.deadline_ms",
            "must be greater than 0".into(),
        );
        for (key, value) in [
            ("plugins.init_timeout_ms", self.plugins.init_timeout_ms),
            ("plugins.start_timeout_ms", self.plugins.start_timeout_ms),
            ("plugins.stop_timeout_ms", self.plugins.stop_timeout_ms),
            (
                "supervisor.restart_period_ms",
                self.supervisor.restart_period_ms,
            ),
        ] {
            check(value > 0, key, "must be greater than 0".into());
        }
        let known = crate::plugin::builtin::KNOWN_IDS;
        for id in &self.plugins.native {
            check(
                known.contains(&id.as_str()),
                "plugins.native",
                format!("unknown native plugin '{id}'; known: {}", known.join(", ")),
            );
        }
        check(
            self.plugins.mailbox_capacity > 0,
            "plugins.mailbox_capacity",
            "must be greater than 0".into(),
        );
        let s = &self.supervisor;
        check(
            s.backoff_min_ms <= s.backoff_max_ms,
            "supervisor.backoff_min_ms",
            format!(
                "{} is greater than supervisor.backoff_max_ms ({})",
                s.backoff_min_ms, s.backoff_max_ms
            ),
        );
        check(
            s.backoff_factor >= 1.0 && s.backoff_factor.is_finite(),
            "supervisor.backoff_factor",
            format!(
                "{} must be a finite number of at least 1.0",
                s.backoff_factor
            ),
        );
        check(
            (0.0..1.0).contains(&s.backoff_jitter),
            "supervisor.backoff_jitter",
            format!("{} must be at least 0.0 and below 1.0", s.backoff_jitter),
        );
        check(
            self.plugins.script.memory_limit_bytes >= 1 << 20,
            "plugins.script.memory_limit_bytes",
            "must be at least 1048576 (1 MiB)".into(),
        );
        check(
            self.plugins.script.call_timeout_ms > 0,
            "plugins.script.call_timeout_ms",
            "must be greater than 0".into(),
        );
        check(
            self.plugins.script.max_stack_bytes >= 64 << 10,
            "plugins.script.max_stack_bytes",
            "must be at least 65536 (64 KiB)".into(),
        );
        check(
            matches!(
                self.sessions.after_receive_order.as_str(),
                "same" | "reverse"
            ),
            "sessions.after_receive_order",
            format!(
                "'{}' is not one of: same, reverse",
                self.sessions.after_receive_order
            ),
        );
        for (key, value) in [
            ("sessions.hook_timeout_ms", self.sessions.hook_timeout_ms),
            ("sessions.idle_timeout_ms", self.sessions.idle_timeout_ms),
            (
                "sessions.queue_capacity",
                self.sessions.queue_capacity as u64,
            ),
            ("sessions.max_sessions", self.sessions.max_sessions as u64),
            ("store.batch_window_ms", self.store.batch_window_ms),
            ("store.batch_max_rows", self.store.batch_max_rows as u64),
            ("store.queue_capacity", self.store.queue_capacity as u64),
            ("store.prune_interval_ms", self.store.prune_interval_ms),
        ] {
            check(value > 0, key, "must be greater than 0".into());
        }
        check(
            self.hot_reload.debounce_ms > 0,
            "hot_reload.debounce_ms",
            "must be greater than 0".into(),
        );
        check(
            self.broker.subscriber_capacity > 0,
            "broker.subscriber_capacity",
            "must be greater than 0".into(),
        );
        check(
            self.broker.mailbox_capacity > 0,
            "broker.mailbox_capacity",
            "must be greater than 0".into(),
        );
        for (key, value) in [
            ("broker.stream_capacity", self.broker.stream_capacity as u64),
            (
                "broker.stream_keepalive_ms",
                self.broker.stream_keepalive_ms,
            ),
            ("plugins.call_timeout_ms", self.plugins.call_timeout_ms),
            (
                "inference.request_timeout_ms",
                self.inference.request_timeout_ms,
            ),
            (
                "inference.breaker_failure_threshold",
                self.inference.breaker_failure_threshold as u64,
            ),
            (
                "inference.breaker_window_ms",
                self.inference.breaker_window_ms,
            ),
            ("inference.breaker_open_ms", self.inference.breaker_open_ms),
            (
                "inference.breaker_close_after",
                self.inference.breaker_close_after as u64,
            ),
            ("agent.max_tool_rounds", self.agent.max_tool_rounds as u64),
            ("agent.history_messages", self.agent.history_messages as u64),
            ("agent.max_sessions", self.agent.max_sessions as u64),
            ("agent.turn_timeout_ms", self.agent.turn_timeout_ms),
        ] {
            check(value > 0, key, "must be greater than 0".into());
        }
        for name in self.inference.providers.keys() {
            check(
                crate::inference::provider(name).is_ok(),
                &format!("inference.providers.{name}"),
                crate::inference::provider(name).err().unwrap_or_default(),
            );
        }
        problems
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Values given on the command line; they win over every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub profile: Option<String>,
    pub bind: Option<String>,
    pub plugins_dir: Option<PathBuf>,
    pub log_format: Option<String>,
    /// `--watch`: turn hot reload on.
    pub watch: bool,
}

/// One thing wrong with the settings: which key, what is wrong, and where the value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub origin: Option<String>,
}

impl Problem {
    fn new(key: &str, message: String) -> Self {
        Problem {
            key: key.to_string(),
            message,
            origin: None,
        }
    }

    fn from(key: &str, message: String, origin: &str) -> Self {
        Problem {
            origin: Some(origin.to_string()),
            ..Problem::new(key, message)
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        Ok(())
    }
}

/// Every problem found while loading settings.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Loads settings from every source. `env` is passed in (not read here) so tests and callers
/// decide what the environment is; the process never writes its own environment.
pub fn load(
    overrides: &Overrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut problems = Vec::new();
    let merged = merge_sources(overrides, &env, &mut problems);
    // A value rejected while merging leaves its default in place, so this still succeeds and
    // the semantic checks below can report their problems in the same pass.
    match Settings::deserialize(Value::Table(merged)) {
        Ok(settings) => {
            problems.extend(settings.validate());
            if problems.is_empty() {
                return Ok(settings);
            }
        }
        Err(e) => problems.push(Problem::new("(settings)", e.to_string())),
    }
    Err(ConfigError { problems })
}

/// Layers every source over the embedded defaults, recording each rejected value.
fn merge_sources(
    overrides: &Overrides,
    env: &[(String, String)],
    problems: &mut Vec<Problem>,
) -> Table {
    let schema: Table = DEFAULT_TOML.parse().expect("embedded default.toml parses");
    let mut merged = schema.clone();

    let config_dir = match &overrides.config {
        Some(path) => {
            merge_file(&schema, &mut merged, path, problems);
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }
        None => PathBuf::from("config"),
    };
    let profile = overrides.profile.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == ENV_PROFILE)
            .map(|(_, v)| v.clone())
    });
    if let Some(profile) = profile.filter(|p| !p.is_empty()) {
        let path = config_dir.join(format!("{profile}.toml"));
        merge_file(&schema, &mut merged, &path, problems);
    }

    for (name, raw) in env {
        if name == ENV_ADMIN_TOKEN {
            set(
                &mut merged,
                &["server", "admin_token"],
                Value::String(raw.clone()),
            );
        } else if name == ENV_SECRET_KEY {
            set(
                &mut merged,
                &["store", "secret_key"],
                Value::String(raw.clone()),
            );
        } else if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            let key = path.join(".");
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match lookup(&schema, &path) {
                None => problems.push(Problem::from(&key, "unknown setting".into(), name)),
                Some(expected) => match parse_env_value(expected, raw) {
                    Ok(value) => set(&mut merged, &path, value),
                    Err(message) => problems.push(Problem::from(&key, message, name)),
                },
            }
        }
    }

    let flags = [
        (["server", "bind"], overrides.bind.clone()),
        (
            ["plugins", "dir"],
            overrides
                .plugins_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned()),
        ),
        (["log", "format"], overrides.log_format.clone()),
    ];
    if overrides.watch {
        set(
            &mut merged,
            &["hot_reload", "enabled"],
            Value::Boolean(true),
        );
    }
    for (path, value) in flags {
        if let Some(value) = value {
            set(&mut merged, &path, Value::String(value));
        }
    }
    merged
}

fn merge_file(schema: &Table, merged: &mut Table, path: &Path, problems: &mut Vec<Problem>) {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem::from(
                "(file)",
                format!("cannot read: {e}"),
                &origin,
            ));
            return;
        }
    };
    match text.parse::<Table>() {
        Ok(layer) => merge_table(schema, merged, &layer, &mut Vec::new(), &origin, problems),
        Err(e) => problems.push(Problem::from(
            "(file)",
            format!("not valid TOML: {}", e.to_string().trim_end()),
            &origin,
        )),
    }
}

/// Merges `layer` into `merged`, checking each key against the schema. A schema table that is
/// empty accepts any keys (free-form sections).
fn merge_table(
    schema: &Table,
    merged: &mut Table,
    layer: &Table,
    path: &mut Vec<String>,
    origin: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in layer {
        path.push(key.clone());
        let dotted = path.join(".");
        match schema.get(key) {
            None => problems.push(Problem::from(&dotted, "unknown setting".into(), origin)),
            Some(Value::Table(sub_schema)) if !sub_schema.is_empty() => match value {
                Value::Table(sub_layer) => {
                    let entry = merged
                        .entry(key.clone())
                        .or_insert_with(|| Value::Table(Table::new()));
                    if let Value::Table(sub_merged) = entry {
                        merge_table(sub_schema, sub_merged, sub_layer, path, origin, problems);
                    }
                }
                other => problems.push(Problem::from(
                    &dotted,
                    format!("expected a table, found {}", other.type_str()),
                    origin,
                )),
            },
            Some(expected) => match coerce(expected, value) {
                Ok(v) => {
                    merged.insert(key.clone(), v);
                }
                Err(message) => problems.push(Problem::from(&dotted, message, origin)),
            },
        }
        path.pop();
    }
}

/// Accepts `value` where `expected` is the schema's default, converting integers to floats.
fn coerce(expected: &Value, value: &Value) -> Result<Value, String> {
    match (expected, value) {
        (Value::Float(_), Value::Integer(i)) => Ok(Value::Float(*i as f64)),
        (Value::Integer(_), Value::Integer(i)) if *i < 0 => {
            Err(format!("expected a non-negative integer, found {i}"))
        }
        (Value::Array(schema_items), Value::Array(items)) => {
            if let Some(first) = schema_items.first() {
                for (i, item) in items.iter().enumerate() {
                    coerce(first, item).map_err(|m| format!("item {i}: {m}"))?;
                }
            }
            Ok(value.clone())
        }
        (Value::Table(_), Value::Table(_)) => Ok(value.clone()),
        (e, v) if std::mem::discriminant(e) == std::mem::discriminant(v) => Ok(value.clone()),
        (e, v) => Err(format!(
            "expected {}, found {}",
            article(e.type_str()),
            article(v.type_str())
        )),
    }
}

fn article(type_str: &str) -> String {
    match type_str {
        "integer" | "array" => format!("an {type_str}"),
        other => format!("a {other}"),
    }
}

/// Environment values are text: strings are taken as they are, everything else is read as a
/// TOML value (so `SWITCHYARD__PLUGINS__NATIVE='["hello"]'` works) and checked like a file value.
fn parse_env_value(expected: &Value, raw: &str) -> Result<Value, String> {
    if let Value::String(_) = expected {
        return Ok(Value::String(raw.to_string()));
    }
    let parsed = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .ok_or_else(|| format!("expected {}, got '{raw}'", article(expected.type_str())))?;
    coerce(expected, &parsed)
        .map_err(|_| format!("expected {}, got '{raw}'", article(expected.type_str())))
}

fn lookup<'a>(schema: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut table = schema;
    for p in parents {
        table = table.get(*p)?.as_table()?;
    }
    table
        .get(*last)
        .filter(|v| !matches!(v, Value::Table(t) if !t.is_empty()))
}

fn set(table: &mut Table, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut table = table;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => return,
        };
    }
    table.insert(last.to_string(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        path
    }

    #[test]
    fn embedded_defaults_load() {
        let s = Settings::defaults();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.shutdown.deadline_ms, 25_000);
        assert_eq!(s.server.max_body_bytes, 1 << 20);
        assert_eq!(s.supervisor.restart_intensity, 5);
        assert_eq!(s.admin_token(), None);
    }

    #[test]
    fn precedence_is_file_then_profile_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(
            &dir,
            "main.toml",
            "[server]\nbind = \"127.0.0.1:1\"\nworkers = 3\n[log]\nlevel = \"warn\"\n",
        );
        file(
            &dir,
            "staging.toml",
            "[server]\nbind = \"127.0.0.1:2\"\nworkers = 4\n",
        );
        let overrides = Overrides {
            config: Some(config),
            profile: Some("staging".into()),
            bind: Some("127.0.0.1:4".into()),
            ..Overrides::default()
        };
        let s = load(
            &overrides,
            env(&[
                ("SWITCHYARD__SERVER__WORKERS", "5"),
                ("SWITCHYARD__SERVER__BIND", "127.0.0.1:3"),
                ("SWITCHYARD_ADMIN_TOKEN", "secret"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:4", "flag wins");
        assert_eq!(s.server.workers, 5, "env beats profile");
        assert_eq!(s.log.level, "warn", "file beats defaults");
        assert_eq!(s.admin_token(), Some("secret"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(
            &dir,
            "bad.toml",
            "[server]\nbnd = \"x\"\nworkers = \"two\"\n[log]\nformat = \"xml\"\n[nope]\na = 1\n",
        );
        let overrides = Overrides {
            config: Some(config),
            ..Overrides::default()
        };
        let err = load(
            &overrides,
            env(&[
                ("SWITCHYARD__SHUTDOWN__DEADLINE_MS", "soon"),
                ("SWITCHYARD__SERVER__PORT", "1"),
            ]),
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for key in [
            "server.bnd",
            "server.workers",
            "nope",
            "shutdown.deadline_ms",
            "server.port",
        ] {
            assert!(keys.contains(&key), "missing {key} in {keys:?}");
        }
        let text = err.to_string();
        assert!(
            text.contains("server.workers: expected an integer, found a string"),
            "{text}"
        );
        assert!(
            text.contains("shutdown.deadline_ms: expected an integer, got 'soon' (from SWITCHYARD__SHUTDOWN__DEADLINE_MS)"),
            "{text}"
        );
    }

    #[test]
    fn semantic_checks_are_collected_too() {
        let err = load(
            &Overrides {
                bind: Some("not-an-address".into()),
                log_format: Some("xml".into()),
                ..Overrides::default()
            },
            env(&[("SWITCHYARD__SUPERVISOR__BACKOFF_JITTER", "1.5")]),
        )
        .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["server.bind", "log.format", "supervisor.backoff_jitter"]
        );
    }

    #[test]
    fn toml_syntax_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(&dir, "broken.toml", "[server]\nbind = \n");
        let err = load(
            &Overrides {
                config: Some(config.clone()),
                ..Overrides::default()
            },
            Vec::new(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not valid TOML"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains(&config.display().to_string()), "{text}");
    }

    #[test]
    fn missing_profile_file_is_an_error() {
        let err = load(
            &Overrides::default(),
            env(&[("SWITCHYARD_PROFILE", "no-such-profile")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no-such-profile.toml"));
    }

    #[test]
    fn script_limits_can_be_overridden_per_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let config = file(
            &dir,
            "limits.toml",
            "[plugins.script]\ncall_timeout_ms = 500\n[plugins.limits.slow-one]\ncall_timeout_ms = 5000\n",
        );
        let s = load(
            &Overrides {
                config: Some(config),
                ..Overrides::default()
            },
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            s.script_limits("slow-one").call_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(
            s.script_limits("other").call_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(s.script_limits("other").memory_limit_bytes, 64 << 20);
        let bad = file(&dir, "bad.toml", "[plugins.limits.x]\ncall_timeout = 1\n");
        assert!(load(
            &Overrides {
                config: Some(bad),
                ..Overrides::default()
            },
            Vec::new()
        )
        .is_err());
    }

    #[test]
    fn arrays_from_env_are_typed() {
        let s = load(
            &Overrides::default(),
            env(&[("SWITCHYARD__PLUGINS__NATIVE", "[\"hello\"]")]),
        )
        .unwrap();
        assert_eq!(s.plugins.native, ["hello"]);
        let err = load(
            &Overrides::default(),
            env(&[("SWITCHYARD__PLUGINS__NATIVE", "[1]")]),
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "plugins.native");
    }
}

//! Settings: the typed tree, where its values come from, and every check on them.
//!
//! Owns the tree as plain data (this file), loading it (`load`: embedded
//! `config/default.toml` < `--config` file < `config/{profile}.toml` <
//! `SWITCHYARD__SECTION__KEY` environment < command-line flags), rejecting unknown keys, and
//! reporting *every* problem at once with its key path and where the value came from
//! (`validate`). It sits at the bottom of the house and imports no subsystem: the app turns
//! these values into each subsystem's own config, and checks that need a subsystem (native
//! plugin ids, provider names, `[[targets]]`, `[[agents]]`) are passed in by the caller.
//! Does not own the command line itself (`cli`) nor anything that acts on the values.
//!
//! The embedded default file doubles as the schema: a key that is not in it is unknown, and a
//! value must have the type its default has. That keeps the documented defaults and the accepted
//! keys from drifting apart.

mod load;
mod validate;

pub use load::{load, load_checked, ConfigError, Overrides, Problem};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The embedded defaults; also the schema every other source is checked against.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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
    /// Targets declared inline (`[[targets]]`); checked by the app through `target`.
    pub targets: Vec<toml::Value>,
    /// Agents declared inline (`[[agents]]`); checked by `agent`.
    pub agents: Vec<toml::Value>,
    /// Model routes of the front doors (`[[models]]`); checked by `frontdoor::route`.
    pub models: Vec<toml::Value>,
    pub server: ServerSettings,
    pub shutdown: ShutdownSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub plugins: PluginSettings,
    pub supervisor: SupervisorSettings,
    pub broker: BrokerSettings,
    pub sessions: SessionSettings,
    pub store: StoreSettings,
    pub hot_reload: HotReloadSettings,
    pub data: DataSettings,
    pub inference: InferenceSection,
    pub agent: AgentRunnerSettings,
    pub frontdoor: FrontdoorSection,
    pub webhooks: WebhookSettings,
}

/// `[webhooks]`: delivering bus events to outbound webhooks (`webhook`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Tries in all before a delivery is `dead`.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, with jitter.
    pub backoff_base_ms: u64,
    /// The longest delay between two tries.
    pub backoff_max_ms: u64,
    /// One attempt's budget (connect, send, answer).
    pub timeout_ms: u64,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// How long shutdown waits for attempts in flight.
    pub drain_timeout_ms: u64,
}

/// `[frontdoor]`: the OpenAI- and Anthropic-compatible endpoints under `/v1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontdoorSection {
    /// Refuse `/v1` requests without a valid virtual API key.
    pub require_key: bool,
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
    /// Failed turns in a row that pause an agent; 0 never pauses.
    pub max_consecutive_failures: u32,
    /// Context window (estimated tokens) of agents whose model sets none.
    pub context_tokens: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    pub targets_file: PathBuf,
    pub hook_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub queue_capacity: usize,
    /// A session's ownership lease (shared stores): how long it lasts unrenewed.
    pub lease_ttl_ms: u64,
    /// An open session idle this long parks: its actor stops and a compact record stays until
    /// its next message; 0 never parks.
    pub park_after_ms: u64,
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
    pub request_head_timeout_ms: u64,
    pub request_body_timeout_ms: u64,
    pub admin_token: String,
    /// This instance's name (events' `origin`, the sessions it opened in the store); empty:
    /// the host's name ([`Settings::instance_id`]).
    pub instance_id: String,
    /// Where the other instances reach this one (forwarded session messages); empty: the
    /// bound address.
    pub advertise_url: String,
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

/// `[telemetry]`: trace export over OTLP (see config/default.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's base URL; empty means the OTEL_* environment decides (unset: off).
    pub otlp_endpoint: String,
    pub otlp_protocol: String,
    /// Empty means OTEL_SERVICE_NAME, else "switchyard".
    pub service_name: String,
    pub sample_ratio: f64,
    /// Sent with every export; secrets, never logged.
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    pub memory_limit_bytes: usize,
    pub call_timeout_ms: u64,
    pub max_stack_bytes: usize,
    /// Host calls (timers, fetches, model calls) in flight per plugin; they live outside the
    /// engine's memory limit.
    pub max_host_calls: usize,
    /// Hosts `fetch` may reach (globs: `*.example.com`, `127.0.0.1:8080`, `*`).
    pub fetch_allowed_hosts: Vec<String>,
    pub fetch_max_response_bytes: usize,
    pub fetch_timeout_ms: u64,
    pub fetch_max_concurrent: usize,
    /// Connector hooks run on the session's thread (see config/default.toml).
    pub hooks_on_session_thread: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimitOverrides {
    pub memory_limit_bytes: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub max_stack_bytes: Option<usize>,
    pub max_host_calls: Option<usize>,
    pub fetch_allowed_hosts: Option<Vec<String>>,
    pub fetch_max_response_bytes: Option<usize>,
    pub fetch_timeout_ms: Option<u64>,
    pub fetch_max_concurrent: Option<usize>,
    pub hooks_on_session_thread: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    pub enabled: bool,
    pub path: PathBuf,
    /// Empty: the SQLite file at `path`; `sqlite://<file>` or a path: SQLite there;
    /// `postgres://…` or `postgresql://…`: PostgreSQL ([`StoreSettings::location`]).
    pub url: String,
    /// PostgreSQL: the most connections the pool holds.
    pub pool_size: u32,
    /// PostgreSQL: how long start-up (and a query waiting for a connection) waits for one.
    pub connect_timeout_ms: u64,
    /// `batched` or `acknowledged` (see config/default.toml).
    pub durability: String,
    pub batch_window_ms: u64,
    pub batch_max_rows: usize,
    pub queue_capacity: usize,
    pub audit_retention_days: u64,
    pub audit_max_rows: u64,
    /// Agent conversations and finished webhook deliveries older than this go (0: kept).
    pub history_retention_days: u64,
    pub prune_interval_ms: u64,
    pub secret_key: String,
}

/// Where the store keeps its data (`store.url`, else `store.path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database, as its URL (with its password: show it with
    /// `util::masked_url` only).
    Postgres(String),
}

impl StoreSettings {
    /// Where the store is, or what is wrong with `store.url` (the URL's password masked).
    pub fn location(&self) -> Result<StoreLocation, String> {
        let url = self.url.trim();
        if url.is_empty() {
            return Ok(StoreLocation::Sqlite(self.path.clone()));
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(StoreLocation::Sqlite(PathBuf::from(url)));
        };
        match scheme {
            "sqlite" if rest.is_empty() || rest.contains('?') => Err(format!(
                "'{url}' names no SQLite file (sqlite://<path>, no options)"
            )),
            "sqlite" => Ok(StoreLocation::Sqlite(PathBuf::from(rest))),
            "postgres" | "postgresql" => match url::Url::parse(url) {
                Ok(_) => Ok(StoreLocation::Postgres(url.to_string())),
                Err(e) => Err(format!(
                    "'{}' is not a PostgreSQL URL such as postgres://user:password@host:5432/db ({e})",
                    crate::util::masked_url(url)
                )),
            },
            _ => Err(format!(
                "'{}' is not a store URL: use sqlite://<file>, a file path, or postgres://user:password@host:5432/db",
                crate::util::masked_url(url)
            )),
        }
    }
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
    /// The most JSON an event's `data` may take; a larger one is replaced by a marker.
    pub max_event_bytes: usize,
    /// `nats://host:port` (or `tls://`): events travel between instances through it. Empty:
    /// events stay on this instance.
    pub nats_url: String,
    /// The NATS subject events travel under, as `<nats_subject>.<event name>`.
    pub nats_subject: String,
    /// With `nats_url`: how often each instance tells the others its plugins' states; an
    /// instance unheard for three of these is shown as stale.
    pub cluster_heartbeat_ms: u64,
    /// With `nats_url`: how long a plugin action over REST waits for the other instances'
    /// answers (those later are listed as pending).
    pub cluster_answer_ms: u64,
    /// With `nats_url`: how often every instance reloads targets, API keys, model routes and
    /// webhooks from the store (besides on each change and each NATS reconnect); the bound
    /// on how long an instance that missed a change (NATS down) serves the old one. 0: never.
    pub config_reconcile_ms: u64,
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

    /// This instance's name: `server.instance_id`, else the host's name, else `default`.
    pub fn instance_id(&self) -> String {
        if !self.server.instance_id.is_empty() {
            return self.server.instance_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "default".into())
    }

    /// The admin token, if one is required on `/api/*`.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.server.admin_token.as_str()).filter(|t| !t.is_empty())
    }

    /// Engine limits of script plugin `id`: its `[plugins.limits.<id>]` overrides over the
    /// `[plugins.script]` defaults.
    /// The limits of the script plugin known by `names` (its declared id, then its
    /// directory): the first name with a `[plugins.limits.<name>]` table overrides the defaults.
    pub fn script_limits(&self, names: &[&str]) -> ScriptLimits {
        let base = self.plugins.script.clone();
        let o = names
            .iter()
            .find_map(|n| self.plugins.limits.get(*n))
            .cloned()
            .unwrap_or_default();
        ScriptLimits {
            memory_limit_bytes: o.memory_limit_bytes.unwrap_or(base.memory_limit_bytes),
            call_timeout_ms: o.call_timeout_ms.unwrap_or(base.call_timeout_ms),
            max_stack_bytes: o.max_stack_bytes.unwrap_or(base.max_stack_bytes),
            max_host_calls: o.max_host_calls.unwrap_or(base.max_host_calls),
            fetch_allowed_hosts: o.fetch_allowed_hosts.unwrap_or(base.fetch_allowed_hosts),
            fetch_max_response_bytes: o
                .fetch_max_response_bytes
                .unwrap_or(base.fetch_max_response_bytes),
            fetch_timeout_ms: o.fetch_timeout_ms.unwrap_or(base.fetch_timeout_ms),
            fetch_max_concurrent: o.fetch_max_concurrent.unwrap_or(base.fetch_max_concurrent),
            hooks_on_session_thread: o
                .hooks_on_session_thread
                .unwrap_or(base.hooks_on_session_thread),
        }
    }

    /// Directory scanned for script plugins (`<plugins.dir>/core`).
    pub fn script_plugins_dir(&self) -> PathBuf {
        self.plugins.dir.join("core")
    }
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
    fn cluster_settings_are_checked_and_a_nats_password_is_never_repeated() {
        let s = load(
            &Overrides::default(),
            env(&[
                ("SWITCHYARD__BROKER__NATS_URL", "nats://u:pw@127.0.0.1:4222"),
                ("SWITCHYARD__SERVER__INSTANCE_ID", "gw-1.eu"),
            ]),
        )
        .unwrap();
        assert_eq!(s.instance_id(), "gw-1.eu");
        assert_eq!(s.broker.nats_subject, "switchyard.events");
        for (key, value, says) in [
            (
                "NATS_URL",
                "http://u:pw@127.0.0.1:4222",
                "nats:// or tls://",
            ),
            ("NATS_URL", "nats://u:pw@", "host"),
            ("NATS_URL", "not a url", "not a URL"),
            ("NATS_SUBJECT", "events.>", "no wildcards"),
            ("NATS_SUBJECT", "a..b", "no wildcards"),
        ] {
            let var = format!("SWITCHYARD__BROKER__{key}");
            let err = load(&Overrides::default(), env(&[(var.as_str(), value)])).unwrap_err();
            let problem = &err.problems[0];
            assert_eq!(problem.key, format!("broker.{}", key.to_lowercase()));
            assert!(
                problem.message.contains(says),
                "{value}: {}",
                problem.message
            );
            assert!(!problem.message.contains("pw"), "{}", problem.message);
        }
    }

    #[test]
    fn the_store_url_picks_the_backend_and_a_bad_one_is_reported_without_its_password() {
        let location = |url: &str| {
            load(
                &Overrides::default(),
                env(&[("SWITCHYARD__STORE__URL", url)]),
            )
            .map(|s| s.store.location().unwrap())
        };
        assert_eq!(
            location("").unwrap(),
            StoreLocation::Sqlite("data/switchyard.db".into()),
            "empty: the file at store.path"
        );
        assert_eq!(
            location("sqlite:///var/lib/sy.db").unwrap(),
            StoreLocation::Sqlite("/var/lib/sy.db".into())
        );
        assert_eq!(
            location("other/sy.db").unwrap(),
            StoreLocation::Sqlite("other/sy.db".into())
        );
        for url in [
            "postgres://u:pw@db:5432/sy",
            "postgresql://u@db/sy?sslmode=require",
        ] {
            assert_eq!(location(url).unwrap(), StoreLocation::Postgres(url.into()));
        }
        for (url, says) in [
            ("mysql://u:hunter2@db/sy", "is not a store URL"),
            (
                "postgres://u:hunter2@db:notaport/sy",
                "is not a PostgreSQL URL",
            ),
            ("sqlite://", "names no SQLite file"),
        ] {
            let err = location(url).unwrap_err();
            let problem = &err.problems[0];
            assert_eq!(problem.key, "store.url", "{url}");
            assert!(problem.message.contains(says), "{url}: {}", problem.message);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = load(
            &Overrides::default(),
            env(&[("SWITCHYARD__STORE__POOL_SIZE", "0")]),
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "store.pool_size");
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
            "[plugins.script]\ncall_timeout_ms = 500\n[plugins.limits.slow-one]\ncall_timeout_ms = 5000\nhooks_on_session_thread = false\n",
        );
        let s = load(
            &Overrides {
                config: Some(config),
                ..Overrides::default()
            },
            Vec::new(),
        )
        .unwrap();
        assert_eq!(s.script_limits(&["slow-one"]).call_timeout_ms, 5000);
        assert_eq!(s.script_limits(&["other"]).call_timeout_ms, 500);
        assert_eq!(s.script_limits(&["other"]).memory_limit_bytes, 64 << 20);
        assert!(!s.script_limits(&["slow-one"]).hooks_on_session_thread);
        assert!(s.script_limits(&["other"]).hooks_on_session_thread);
        // The declared id's table wins over the directory's; fetch policy is per plugin too.
        let config = file(
            &dir,
            "fetch.toml",
            "[plugins.script]\nfetch_max_concurrent = 3\n[plugins.limits.dir-name]\ncall_timeout_ms = 7\n[plugins.limits.declared]\nfetch_allowed_hosts = [\"*.example.com\"]\nfetch_timeout_ms = 50\n",
        );
        let s = load(
            &Overrides {
                config: Some(config),
                ..Overrides::default()
            },
            Vec::new(),
        )
        .unwrap();
        let l = s.script_limits(&["declared", "dir-name"]);
        assert_eq!(l.fetch_allowed_hosts, ["*.example.com"]);
        assert_eq!(
            (
                l.fetch_timeout_ms,
                l.fetch_max_concurrent,
                l.call_timeout_ms
            ),
            (50, 3, 1000)
        );
        assert_eq!(s.script_limits(&["dir-name"]).call_timeout_ms, 7);
        assert_eq!(s.script_limits(&["other"]).fetch_allowed_hosts, ["*"]);
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
    fn telemetry_is_off_by_default_and_checked_with_its_key_path() {
        let s = Settings::defaults();
        assert_eq!(s.telemetry.otlp_endpoint, "");
        assert!(
            s.telemetry_problems(false).is_empty(),
            "no endpoint needs no feature"
        );
        let err = load(
            &Overrides::default(),
            env(&[
                (
                    "SWITCHYARD__TELEMETRY__OTLP_ENDPOINT",
                    "ftp://collector:4318",
                ),
                ("SWITCHYARD__TELEMETRY__OTLP_PROTOCOL", "grpc"),
                ("SWITCHYARD__TELEMETRY__SAMPLE_RATIO", "1.5"),
                (
                    "SWITCHYARD__TELEMETRY__OTLP_HEADERS",
                    "{ \"bad name\" = \"x\", authorization = \"Bearer s3cret\\n\" }",
                ),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        for expected in [
            "telemetry.otlp_endpoint: 'ftp://collector:4318/' is not an http(s) URL",
            "telemetry.otlp_protocol: 'grpc' is not supported",
            "telemetry.sample_ratio: 1.5 must be between 0.0 and 1.0",
            "telemetry.otlp_headers.bad name: is not a valid HTTP header name",
            "telemetry.otlp_headers.authorization: its value may hold only",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        assert!(!text.contains("s3cret"), "a header value was shown: {text}");
    }

    #[test]
    fn an_endpoint_needs_a_build_with_the_otlp_feature() {
        let mut s = Settings::defaults();
        s.telemetry.otlp_endpoint = "https://collector.example.com:4318".into();
        s.telemetry
            .otlp_headers
            .insert("authorization".into(), "Bearer t".into());
        assert!(s.telemetry_problems(true).is_empty());
        let problems = s.telemetry_problems(false);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "telemetry.otlp_endpoint");
        assert!(problems[0]
            .message
            .contains("lacks the `otlp` cargo feature"));
        s.telemetry.otlp_endpoint = "not a url".into();
        let problems = s.telemetry_problems(true);
        assert!(
            problems[0].message.contains("not an http(s) URL"),
            "{problems:?}"
        );
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

//! Settings into each subsystem's own config: the one place that knows both.
//!
//! Owns the conversions (restart policy, script limits, inference, sessions, the agent runner,
//! the store writer) and the checks that need a subsystem: native plugin ids, provider names,
//! `[[targets]]` and `[[agents]]`. `check-config` and `serve` run the same checks. Does not own
//! loading settings (`settings`) nor what any subsystem does with its config.

use std::time::Duration;

use crate::agent::AgentRegistry;
use crate::inference::breaker::BreakerPolicy;
use crate::inference::{InferenceSettings, ProviderOverride};
use crate::script::engine::Limits;
use crate::script::fetch::FetchPolicy;
use crate::script::PluginPolicy;
use crate::session::{AfterReceiveOrder, SessionConfig};
use crate::settings::{Problem, Settings};
use crate::store::writer::{Durability, WriterSettings};
use crate::supervisor::policy::{Backoff, Intensity, RestartPolicy};
use crate::target::Target;
use crate::turn::RunnerConfig;

use super::StartupError;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The checks on settings that need a subsystem, reported with the settings' own problems.
pub fn check_settings(settings: &Settings) -> Vec<Problem> {
    let mut problems = Vec::new();
    let known = crate::bundled::KNOWN_IDS;
    for id in &settings.plugins.native {
        if !known.contains(&id.as_str()) {
            problems.push(Problem::new(
                "plugins.native",
                format!("unknown native plugin '{id}'; known: {}", known.join(", ")),
            ));
        }
    }
    for name in settings.inference.providers.keys() {
        if let Err(message) = crate::inference::provider(name) {
            problems.push(Problem::new(
                &format!("inference.providers.{name}"),
                message,
            ));
        }
    }
    problems
}

/// The targets and agents the settings declare, every problem reported (exit 2).
pub fn declared(settings: &Settings) -> Result<(Vec<Target>, AgentRegistry), StartupError> {
    let inline: Vec<serde_json::Value> = settings
        .targets
        .iter()
        .map(|t| serde_json::to_value(t).unwrap_or(serde_json::Value::Null))
        .collect();
    let targets = crate::target::load(&inline, &settings.sessions.targets_file)
        .map_err(StartupError::Targets)?;
    let agents: Vec<serde_json::Value> = settings
        .agents
        .iter()
        .map(|a| serde_json::to_value(a).unwrap_or(serde_json::Value::Null))
        .collect();
    let agents = AgentRegistry::from_settings(&agents).map_err(StartupError::Agents)?;
    Ok((targets, agents))
}

/// The front doors' settings: `[frontdoor]` and `[[models]]` (as JSON, checked by
/// `frontdoor::route` once the targets are known).
pub fn frontdoor(settings: &Settings) -> crate::frontdoor::FrontdoorConfig {
    crate::frontdoor::FrontdoorConfig {
        require_key: settings.frontdoor.require_key,
        models: settings
            .models
            .iter()
            .map(|m| serde_json::to_value(m).unwrap_or(serde_json::Value::Null))
            .collect(),
    }
}

/// `[webhooks]` as the delivery actor takes it.
pub fn webhooks(settings: &Settings) -> crate::webhook::Config {
    let w = &settings.webhooks;
    crate::webhook::Config {
        retry: crate::webhook::RetryPolicy {
            max_attempts: w.max_attempts,
            base: ms(w.backoff_base_ms),
            cap: ms(w.backoff_max_ms.max(w.backoff_base_ms)),
        },
        timeout: ms(w.timeout_ms),
        concurrency: w.concurrency,
        drain_timeout: ms(w.drain_timeout_ms),
    }
}

/// The settings as `check-config` prints them: the admin token, the store key, the trace
/// export headers and the inline targets' credentials masked (the targets as `/api/targets` shows them).
pub fn shown(settings: &Settings, targets: &[Target]) -> Settings {
    let mut shown = settings.clone();
    for secret in [&mut shown.server.admin_token, &mut shown.store.secret_key] {
        if !secret.is_empty() {
            *secret = crate::util::MASK.into();
        }
    }
    // Export headers carry the collector's credentials.
    for value in shown.telemetry.otlp_headers.values_mut() {
        *value = crate::util::MASK.into();
    }
    // A database or NATS URL may carry its password.
    for url in [&mut shown.store.url, &mut shown.broker.nats_url] {
        if url.contains("://") {
            *url = crate::util::masked_url(url);
        }
    }
    for inline in shown.targets.iter_mut() {
        let id = inline.get("id").and_then(toml::Value::as_str);
        match targets.iter().find(|t| Some(t.id.as_str()) == id) {
            Some(target) => *inline = toml_of(&target.masked()),
            // Checked before this is called; never shown unmasked all the same.
            None => *inline = toml::Value::String(crate::util::MASK.into()),
        }
    }
    // Model routes' plugin configs may hold credentials too.
    for model in shown.models.iter_mut() {
        let mut json = serde_json::to_value(&*model).unwrap_or_default();
        crate::frontdoor::route::for_each_credential(&mut json, &mut |v| {
            *v = serde_json::Value::String(crate::util::MASK.into())
        });
        *model = toml_of(&json);
    }
    shown
}

/// `value` as TOML, which has no null: null members are left out.
fn toml_of(value: &serde_json::Value) -> toml::Value {
    use serde_json::Value as J;
    match value {
        J::Null => toml::Value::String(String::new()),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .unwrap_or_else(|| toml::Value::Float(n.as_f64().unwrap_or_default())),
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => toml::Value::Array(items.iter().map(toml_of).collect()),
        J::Object(map) => toml::Value::Table(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), toml_of(v)))
                .collect(),
        ),
    }
}

/// The restart policy every plugin child gets.
pub fn restart_policy(settings: &Settings) -> RestartPolicy {
    let s = &settings.supervisor;
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

/// Engine limits and fetch policy of the script plugin known by `names` (declared id first).
pub fn script_policy(settings: &Settings, names: &[&str]) -> PluginPolicy {
    let l = settings.script_limits(names);
    PluginPolicy {
        limits: Limits {
            memory_limit_bytes: l.memory_limit_bytes,
            call_timeout: ms(l.call_timeout_ms),
            max_stack_bytes: l.max_stack_bytes,
            max_host_calls: l.max_host_calls,
        },
        fetch: FetchPolicy {
            allowed_hosts: l.fetch_allowed_hosts,
            max_response_bytes: l.fetch_max_response_bytes,
            timeout: ms(l.fetch_timeout_ms),
            max_concurrent: l.fetch_max_concurrent,
        },
        hooks_on_session_thread: l.hooks_on_session_thread,
    }
}

/// Retry, timeout and breaker settings of inference clients.
pub fn inference(settings: &Settings) -> InferenceSettings {
    let i = &settings.inference;
    InferenceSettings {
        max_retries: i.max_retries,
        retry_base_delay: ms(i.retry_base_delay_ms),
        request_timeout: ms(i.request_timeout_ms),
        breaker: BreakerPolicy {
            failure_threshold: i.breaker_failure_threshold,
            window: ms(i.breaker_window_ms),
            open_for: ms(i.breaker_open_ms),
            close_after: i.breaker_close_after,
        },
        providers: i
            .providers
            .iter()
            .map(|(name, p)| {
                let o = ProviderOverride {
                    endpoint: p.endpoint.clone(),
                    api_key_env: p.api_key_env.clone(),
                };
                (name.clone(), o)
            })
            .collect(),
    }
}

/// The base URL other instances forward session messages to: `configured`, else `http://`
/// and the bound address (a wildcard address as the loopback one).
pub fn advertise_url(configured: &str, bound: std::net::SocketAddr) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// What sessions run with.
pub fn sessions(settings: &Settings) -> SessionConfig {
    let s = &settings.sessions;
    SessionConfig {
        hook_timeout: ms(s.hook_timeout_ms),
        idle_timeout: ms(s.idle_timeout_ms),
        queue_capacity: s.queue_capacity,
        // Validated by the settings: `same` or `reverse`.
        after_receive: if s.after_receive_order == "reverse" {
            AfterReceiveOrder::Reverse
        } else {
            AfterReceiveOrder::Same
        },
        max_sessions: s.max_sessions,
        threads: s.threads,
        lease_ttl: ms(s.lease_ttl_ms),
        park_after: ms(s.park_after_ms),
        // Validated by the settings: `batched` or `acknowledged`.
        durability: if settings.store.durability == "acknowledged" {
            Durability::Acknowledged
        } else {
            Durability::Batched
        },
    }
}

/// What the agent runner plays turns with.
pub fn runner(settings: &Settings) -> RunnerConfig {
    let a = &settings.agent;
    RunnerConfig {
        max_tool_rounds: a.max_tool_rounds,
        history_messages: a.history_messages,
        max_sessions: a.max_sessions,
        turn_timeout: ms(a.turn_timeout_ms),
        tool_timeout: ms(settings.plugins.call_timeout_ms),
        max_consecutive_failures: a.max_consecutive_failures,
        context_tokens: a.context_tokens,
    }
}

/// How the store writer batches and prunes.
pub fn writer(settings: &Settings) -> WriterSettings {
    let s = &settings.store;
    WriterSettings {
        batch_window: ms(s.batch_window_ms),
        batch_max_rows: s.batch_max_rows,
        queue_capacity: s.queue_capacity,
        audit_retention: (s.audit_retention_days > 0)
            .then(|| Duration::from_secs(s.audit_retention_days * 86_400)),
        audit_max_rows: (s.audit_max_rows > 0).then_some(s.audit_max_rows as i64),
        history_retention: (s.history_retention_days > 0)
            .then(|| Duration::from_secs(s.history_retention_days * 86_400)),
        prune_interval: ms(s.prune_interval_ms),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_advertised_url_is_the_setting_else_the_bound_address_with_a_wildcard_as_loopback() {
        let bound: std::net::SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(advertise_url("", bound), "http://127.0.0.1:8081");
        let bound: std::net::SocketAddr = "[::]:8081".parse().unwrap();
        assert_eq!(advertise_url("", bound), "http://[::1]:8081");
        let bound: std::net::SocketAddr = "10.0.0.7:80".parse().unwrap();
        assert_eq!(advertise_url("", bound), "http://10.0.0.7:80");
        assert_eq!(
            advertise_url("https://gw-1.internal", bound),
            "https://gw-1.internal"
        );
    }

    use super::*;
    use crate::settings::{load, Overrides};

    #[test]
    fn unknown_native_plugins_and_providers_are_named() {
        let s = load(
            &Overrides::default(),
            [(
                "SWITCHYARD__PLUGINS__NATIVE".to_string(),
                "[\"nope\"]".to_string(),
            )],
        )
        .unwrap();
        let problems = check_settings(&s);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "plugins.native");
        assert!(problems[0].message.contains("'nope'"));
        assert!(check_settings(&Settings::defaults()).is_empty());
    }

    #[test]
    fn per_plugin_script_limits_become_engine_limits() {
        let mut s = Settings::defaults();
        s.plugins.script.call_timeout_ms = 500;
        assert_eq!(
            script_policy(&s, &["x"]).limits.call_timeout,
            Duration::from_millis(500)
        );
    }
}

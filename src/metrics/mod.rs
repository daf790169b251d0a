//! Metrics: the registry behind `GET /metrics` (Prometheus text format, `prometheus-client`).
//!
//! Owns the metrics recorded as things happen (plugin hook calls, sessions, messages and
//! upstream calls, reloads), their label handles, and the text of a scrape: those plus what is
//! read at scrape time from tables others already keep (the health table's actors, the
//! broker's, store's and providers' counters, `/proc`), passed in as a [`Scrape`]. Labels are
//! bounded: plugin ids, hook names, target ids, connector types, actor paths of the
//! long-lived actors, providers; never a session id. Does not own the HTTP handler nor the
//! admin-token rule (`api::metrics`), nor any of the counters read at scrape time.
//!
//! Recording costs no allocation once a (plugin, hook) or (target, connector) pair has been
//! seen: its handles are resolved once and found again under a read lock by borrowed keys.

pub mod process;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::health::{ActorRecord, ActorState};

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every state an actor can be in, so each actor's `state` gauge lists all of them (one is 1).
const STATES: [ActorState; 7] = [
    ActorState::Starting,
    ActorState::Running,
    ActorState::Restarting,
    ActorState::Failed,
    ActorState::Stopping,
    ActorState::Stopped,
    ActorState::Disabled,
];

/// Buckets in seconds from 50 µs (an inline native hook) to 10 s (a slow upstream, a hook at
/// its deadline).
fn latency_buckets() -> Histogram {
    Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    plugin: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    target: String,
    connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    plugin: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActorLabels {
    actor: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    actor: String,
    role: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    provider: String,
    state: String,
}

/// The resolved series of one (plugin, hook).
struct HookSeries {
    calls: Counter,
    failures: Counter,
    bypassed: Counter,
    latency: Histogram,
}

/// The resolved series of one (target, connector type).
struct UpstreamSeries {
    messages: Counter,
    failures: Counter,
    latency: Histogram,
}

/// Handles by two string keys, found again without allocating: the outer map is searched by
/// a borrowed `&str`, the inner list (a handful of hooks or connector types) by scanning.
struct Cache<S> {
    by: RwLock<HashMap<String, Vec<(String, S)>>>,
}

impl<S> Cache<S> {
    fn new() -> Self {
        Cache {
            by: RwLock::new(HashMap::new()),
        }
    }

    fn with(&self, a: &str, b: &str, make: impl FnOnce() -> S, use_it: impl FnOnce(&S)) {
        {
            let by = self.by.read().unwrap_or_else(|e| e.into_inner());
            if let Some(series) = by.get(a).and_then(|list| list.iter().find(|(k, _)| k == b)) {
                use_it(&series.1);
                return;
            }
        }
        let mut by = self.by.write().unwrap_or_else(|e| e.into_inner());
        let list = by.entry(a.to_string()).or_default();
        let at = match list.iter().position(|(k, _)| k == b) {
            Some(at) => at,
            None => {
                list.push((b.to_string(), make()));
                list.len() - 1
            }
        };
        use_it(&list[at].1);
    }
}

/// What a call into a plugin's hook came to, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    Ok,
    Failed,
}

/// The metrics recorded as things happen. One per service (the plugin host holds it), so two
/// services in one process (tests) count apart.
pub struct Metrics {
    hook_calls: Family<HookLabels, Counter>,
    hook_failures: Family<HookLabels, Counter>,
    hook_bypassed: Family<HookLabels, Counter>,
    hook_latency: Family<HookLabels, Histogram, fn() -> Histogram>,
    hooks: Cache<HookSeries>,
    sessions_created: Counter,
    sessions_failed: Counter,
    messages: Family<UpstreamLabels, Counter>,
    upstream_failures: Family<UpstreamLabels, Counter>,
    upstream_latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstreams: Cache<UpstreamSeries>,
    reloads: Family<ReloadLabels, Counter>,
    reload_duration: Family<ReloadLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            hook_calls: Family::default(),
            hook_failures: Family::default(),
            hook_bypassed: Family::default(),
            hook_latency: Family::new_with_constructor(latency_buckets),
            hooks: Cache::new(),
            sessions_created: Counter::default(),
            sessions_failed: Counter::default(),
            messages: Family::default(),
            upstream_failures: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_buckets),
            upstreams: Cache::new(),
            reloads: Family::default(),
            reload_duration: Family::new_with_constructor(latency_buckets),
        }
    }

    fn hook_series(&self, plugin: &str, hook: &str, use_it: impl FnOnce(&HookSeries)) {
        let make = || {
            let labels = HookLabels {
                plugin: plugin.to_string(),
                hook: hook.to_string(),
            };
            HookSeries {
                calls: self.hook_calls.get_or_create_owned(&labels),
                failures: self.hook_failures.get_or_create_owned(&labels),
                bypassed: self.hook_bypassed.get_or_create_owned(&labels),
                latency: self.hook_latency.get_or_create_owned(&labels),
            }
        };
        self.hooks.with(plugin, hook, make, use_it);
    }

    /// One call of `hook` of `plugin` ended after `took`.
    pub fn hook_called(&self, plugin: &str, hook: &str, took: Duration, result: HookResult) {
        self.hook_series(plugin, hook, |s| {
            s.calls.inc();
            if result == HookResult::Failed {
                s.failures.inc();
            }
            s.latency.observe(took.as_secs_f64());
        });
    }

    /// A failed hook of a non-critical plugin was skipped and the message went on (fail-open).
    pub fn hook_bypassed(&self, plugin: &str, hook: &str) {
        self.hook_series(plugin, hook, |s| {
            s.bypassed.inc();
        });
    }

    /// A session was opened (`ok`) or could not be.
    pub fn session_opened(&self, ok: bool) {
        if ok {
            self.sessions_created.inc();
        } else {
            self.sessions_failed.inc();
        }
    }

    fn upstream_series(&self, target: &str, connector: &str, use_it: impl FnOnce(&UpstreamSeries)) {
        let make = || {
            let labels = UpstreamLabels {
                target: target.to_string(),
                connector: connector.to_string(),
            };
            UpstreamSeries {
                messages: self.messages.get_or_create_owned(&labels),
                failures: self.upstream_failures.get_or_create_owned(&labels),
                latency: self.upstream_latency.get_or_create_owned(&labels),
            }
        };
        self.upstreams.with(target, connector, make, use_it);
    }

    /// A message entered a session on `target` (connector type `connector`).
    pub fn message(&self, target: &str, connector: &str) {
        self.upstream_series(target, connector, |s| {
            s.messages.inc();
        });
    }

    /// The upstream answered (the whole answer, or the head of a stream) after `took`, or
    /// failed (`ok` false).
    pub fn upstream_called(&self, target: &str, connector: &str, took: Duration, ok: bool) {
        self.upstream_series(target, connector, |s| {
            if !ok {
                s.failures.inc();
            }
            s.latency.observe(took.as_secs_f64());
        });
    }

    /// A reload of `plugin` ended after `took`. Rare: no cache.
    pub fn reloaded(&self, plugin: &str, took: Duration, ok: bool) {
        let labels = ReloadLabels {
            plugin: plugin.to_string(),
            outcome: if ok { "ok" } else { "failed" }.to_string(),
        };
        self.reloads.get_or_create(&labels).inc();
        self.reload_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The text of a scrape: what was recorded, then `scrape`, then the process's own figures.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut registry = Registry::with_prefix("switchyard");
        let recorded = &mut registry;
        recorded.register(
            "plugin_hook_calls",
            "Calls of a plugin's connector hook (every outcome)",
            self.hook_calls.clone(),
        );
        recorded.register(
            "plugin_hook_failures",
            "Hook calls that failed: an error, a crash, a timeout, or the plugin not running",
            self.hook_failures.clone(),
        );
        recorded.register(
            "plugin_hook_bypassed",
            "Failed hook calls of non-critical plugins whose change was skipped (fail-open)",
            self.hook_bypassed.clone(),
        );
        recorded.register_with_unit(
            "plugin_hook_duration",
            "Time a hook call took, queueing on the plugin's actor included",
            Unit::Seconds,
            self.hook_latency.clone(),
        );
        recorded.register(
            "sessions_created",
            "Sessions opened",
            self.sessions_created.clone(),
        );
        recorded.register(
            "sessions_failed",
            "Sessions whose opening failed: initialize, onConnect or the connector",
            self.sessions_failed.clone(),
        );
        recorded.register(
            "messages",
            "Messages sent into sessions, per target and connector type",
            self.messages.clone(),
        );
        recorded.register(
            "upstream_failures",
            "Upstream calls that failed, per target and connector type",
            self.upstream_failures.clone(),
        );
        recorded.register_with_unit(
            "upstream_duration",
            "Time the upstream took to answer (the whole answer, or a stream's head)",
            Unit::Seconds,
            self.upstream_latency.clone(),
        );
        recorded.register(
            "plugin_reloads",
            "Reloads of a script plugin from its files, by outcome",
            self.reloads.clone(),
        );
        recorded.register_with_unit(
            "plugin_reload_duration",
            "Time a reload took, by outcome",
            Unit::Seconds,
            self.reload_duration.clone(),
        );
        scrape.register(&mut registry);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        let mut process = Registry::default();
        process::read().register(&mut process);
        let mut tail = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut tail, &process);
        out.push_str(&tail);
        out
    }
}

/// The broker's counters, as read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerCounts {
    pub published: u64,
    pub delivered: u64,
    pub publish_dropped: u64,
    pub delivery_dropped: u64,
    pub subscribers_evicted: u64,
    pub events_truncated: u64,
}

/// The store writer's counters, as read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCounts {
    pub batches: u64,
    pub rows: u64,
    pub failed_batches: u64,
    pub dropped: u64,
    pub retries: u64,
    pub queue_depth: u64,
}

/// One inference provider, as read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct ProviderCounts {
    pub provider: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    pub calls: u64,
    pub retries: u64,
    pub failures: u64,
    pub trips: u64,
}

/// The breaker states, so each provider's `breaker_state` gauge lists all of them.
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// What a scrape reads from the tables others keep.
#[derive(Default)]
pub struct Scrape {
    /// The health table; session actors are left out (one series each would be unbounded).
    pub actors: Vec<ActorRecord>,
    pub sessions_open: u64,
    /// Of those, parked (no actor while idle).
    pub sessions_parked: u64,
    pub broker: BrokerCounts,
    pub store: Option<StoreCounts>,
    pub providers: Vec<ProviderCounts>,
}

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: i64) -> Gauge {
    let g = Gauge::default();
    g.set(value);
    g
}

impl Scrape {
    fn register(&self, registry: &mut Registry) {
        let restarts = Family::<ActorLabels, Counter>::default();
        let depth = Family::<ActorLabels, Gauge>::default();
        let dropped = Family::<ActorLabels, Counter>::default();
        let state = Family::<StateLabels, Gauge>::default();
        for row in self.actors.iter().filter(|r| r.role != "session") {
            let labels = ActorLabels {
                actor: row.path.clone(),
                role: row.role.to_string(),
            };
            restarts
                .get_or_create(&labels)
                .inc_by(u64::from(row.restarts));
            if let Some(gauge) = &row.mailbox {
                let mailbox = gauge.snapshot();
                depth.get_or_create(&labels).set(mailbox.depth as i64);
                dropped.get_or_create(&labels).inc_by(mailbox.dropped);
            }
            for s in STATES {
                let labels = StateLabels {
                    actor: row.path.clone(),
                    role: row.role.to_string(),
                    state: s.as_str().to_string(),
                };
                state.get_or_create(&labels).set(i64::from(row.state == s));
            }
        }
        registry.register(
            "actor_restarts",
            "Starts of a supervised actor after its first",
            restarts,
        );
        registry.register(
            "actor_state",
            "1 for the state a supervised actor is in, 0 for the others",
            state,
        );
        registry.register(
            "actor_mailbox_depth",
            "Messages waiting in an actor's mailbox",
            depth,
        );
        registry.register(
            "actor_mailbox_dropped",
            "Messages an actor's full or closed mailbox refused",
            dropped,
        );
        registry.register(
            "sessions_open",
            "Sessions open now",
            gauge(self.sessions_open as i64),
        );
        registry.register(
            "sessions_parked",
            "Open sessions parked while idle (no actor until their next message)",
            gauge(self.sessions_parked as i64),
        );
        let b = self.broker;
        registry.register("broker_published", "Events published", counter(b.published));
        registry.register(
            "broker_delivered",
            "Events handed to subscribers",
            counter(b.delivered),
        );
        registry.register(
            "broker_publish_dropped",
            "Publishes refused: the broker's mailbox was full or it was restarting",
            counter(b.publish_dropped),
        );
        registry.register(
            "broker_delivery_dropped",
            "Deliveries dropped: a subscriber's queue was full",
            counter(b.delivery_dropped),
        );
        registry.register(
            "broker_subscribers_evicted",
            "Stream clients disconnected because they fell behind",
            counter(b.subscribers_evicted),
        );
        registry.register(
            "broker_events_truncated",
            "Events over broker.max_event_bytes, delivered as a marker",
            counter(b.events_truncated),
        );
        if let Some(s) = self.store {
            registry.register(
                "store_batches",
                "Transactions the store writer committed",
                counter(s.batches),
            );
            registry.register("store_rows", "Writes committed", counter(s.rows));
            registry.register(
                "store_batch_failures",
                "Batches that failed after retries (their writes are lost)",
                counter(s.failed_batches),
            );
            registry.register(
                "store_dropped",
                "Writes dropped because the queue was full",
                counter(s.dropped),
            );
            registry.register(
                "store_retries",
                "Batch retries after a failed commit",
                counter(s.retries),
            );
            registry.register(
                "store_queue_depth",
                "Writes queued, not yet taken by the writer",
                gauge(s.queue_depth as i64),
            );
        }
        let calls = Family::<ProviderLabels, Counter>::default();
        let retries = Family::<ProviderLabels, Counter>::default();
        let failures = Family::<ProviderLabels, Counter>::default();
        let trips = Family::<ProviderLabels, Counter>::default();
        let breaker = Family::<BreakerLabels, Gauge>::default();
        for p in &self.providers {
            let labels = ProviderLabels {
                provider: p.provider.clone(),
            };
            calls.get_or_create(&labels).inc_by(p.calls);
            retries.get_or_create(&labels).inc_by(p.retries);
            failures.get_or_create(&labels).inc_by(p.failures);
            trips.get_or_create(&labels).inc_by(p.trips);
            for s in BREAKER_STATES {
                let labels = BreakerLabels {
                    provider: p.provider.clone(),
                    state: s.to_string(),
                };
                breaker
                    .get_or_create(&labels)
                    .set(i64::from(p.breaker == s));
            }
        }
        registry.register(
            "inference_calls",
            "Model calls sent to a provider (each retry is one more)",
            calls,
        );
        registry.register(
            "inference_retries",
            "Model calls retried after a retryable failure",
            retries,
        );
        registry.register(
            "inference_failures",
            "Model calls that failed after their retries",
            failures,
        );
        registry.register(
            "inference_breaker_trips",
            "Times a provider's circuit breaker opened",
            trips,
        );
        registry.register(
            "inference_breaker_state",
            "1 for the state a provider's circuit breaker is in, 0 for the others",
            breaker,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn hook_calls_count_per_plugin_and_hook() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.hook_called("echo", "beforeSend", ms, HookResult::Ok);
        metrics.hook_called("echo", "beforeSend", ms, HookResult::Failed);
        metrics.hook_called("echo", "afterReceive", ms, HookResult::Ok);
        metrics.hook_bypassed("echo", "beforeSend");
        let text = metrics.render(&Scrape::default());
        let labels = r#"{plugin="echo",hook="beforeSend"}"#;
        assert_eq!(
            sample(
                &text,
                &format!("switchyard_plugin_hook_calls_total{labels}")
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("switchyard_plugin_hook_failures_total{labels}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("switchyard_plugin_hook_bypassed_total{labels}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"switchyard_plugin_hook_calls_total{plugin="echo",hook="afterReceive"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("switchyard_plugin_hook_duration_seconds_count{labels}")
            ),
            Some(2.0)
        );
    }

    #[test]
    fn session_actors_get_no_series_of_their_own() {
        let mut plugin = ActorRecord::new("root/plugins/echo".into(), "actor", "plugin");
        plugin.state = ActorState::Running;
        plugin.restarts = 3;
        let session = ActorRecord::new("root/sessions/abc123".into(), "actor", "session");
        let scrape = Scrape {
            actors: vec![plugin, session],
            sessions_open: 1,
            ..Scrape::default()
        };
        let text = Metrics::new().render(&scrape);
        assert!(!text.contains("abc123"), "{text}");
        let echo = r#"actor="root/plugins/echo",role="plugin""#;
        assert_eq!(
            sample(&text, &format!("switchyard_actor_restarts_total{{{echo}}}")),
            Some(3.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("switchyard_actor_state{{{echo},state=\"running\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("switchyard_actor_state{{{echo},state=\"failed\"}}")
            ),
            Some(0.0)
        );
        assert_eq!(sample(&text, "switchyard_sessions_open"), Some(1.0));
    }
}

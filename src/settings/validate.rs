//! The checks on settings that span more than one value's type: addresses, ranges, enums
//! spelled as text, and relations between keys. Every problem is returned, each with its key.

use std::net::SocketAddr;

use super::{Problem, Settings};

/// 1-`max` letters, digits, `.`, `_` or `-`.
fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `broker.nats_url`: empty, or a `nats://` or `tls://` URL with a host (user and password
/// allowed; never repeated in the message).
fn nats_url(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    let shown = crate::util::loggable_url(text);
    let url = url::Url::parse(text).map_err(|e| format!("'{shown}' is not a URL: {e}"))?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!(
            "'{shown}' must start with nats:// or tls:// (e.g. nats://127.0.0.1:4222)"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{shown}' names no host"));
    }
    Ok(())
}

impl Settings {
    /// Checks that span more than a value's type; every problem is returned.
    pub(super) fn validate(&self) -> Vec<Problem> {
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
        for (key, value) in [
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            (
                "server.request_head_timeout_ms",
                self.server.request_head_timeout_ms,
            ),
            (
                "server.request_body_timeout_ms",
                self.server.request_body_timeout_ms,
            ),
        ] {
            check(value > 0, key, "must be greater than 0".into());
        }
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
            self.plugins.script.max_host_calls > 0,
            "plugins.script.max_host_calls",
            "must be greater than 0".into(),
        );
        // Per-plugin tables are checked like the defaults, under their own key path.
        let mut fetch_tables = vec![("plugins.script".to_string(), self.plugins.script.clone())];
        for name in self.plugins.limits.keys() {
            fetch_tables.push((
                format!("plugins.limits.{name}"),
                self.script_limits(&[name]),
            ));
        }
        for (table, l) in fetch_tables {
            check(
                l.fetch_timeout_ms > 0,
                &format!("{table}.fetch_timeout_ms"),
                "must be greater than 0".into(),
            );
            check(
                l.fetch_max_concurrent > 0,
                &format!("{table}.fetch_max_concurrent"),
                "must be greater than 0".into(),
            );
            check(
                l.fetch_max_response_bytes > 0,
                &format!("{table}.fetch_max_response_bytes"),
                "must be greater than 0".into(),
            );
            for host in &l.fetch_allowed_hosts {
                check(
                    !host.is_empty() && !host.contains(['/', ' ']),
                    &format!("{table}.fetch_allowed_hosts"),
                    format!("'{host}' is not a host pattern (a host name or address, optionally with :port, and * wildcards)"),
                );
            }
        }
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
        check(
            matches!(self.store.durability.as_str(), "batched" | "acknowledged"),
            "store.durability",
            format!(
                "'{}' is not one of: batched, acknowledged",
                self.store.durability
            ),
        );
        if let Err(message) = self.store.location() {
            check(false, "store.url", message);
        }
        for (key, value) in [
            ("sessions.hook_timeout_ms", self.sessions.hook_timeout_ms),
            ("sessions.idle_timeout_ms", self.sessions.idle_timeout_ms),
            ("sessions.lease_ttl_ms", self.sessions.lease_ttl_ms),
            (
                "sessions.queue_capacity",
                self.sessions.queue_capacity as u64,
            ),
            ("sessions.max_sessions", self.sessions.max_sessions as u64),
            ("store.batch_window_ms", self.store.batch_window_ms),
            ("store.batch_max_rows", self.store.batch_max_rows as u64),
            ("store.queue_capacity", self.store.queue_capacity as u64),
            ("store.prune_interval_ms", self.store.prune_interval_ms),
            ("store.pool_size", self.store.pool_size as u64),
            ("store.connect_timeout_ms", self.store.connect_timeout_ms),
            (
                "broker.cluster_heartbeat_ms",
                self.broker.cluster_heartbeat_ms,
            ),
            ("broker.cluster_answer_ms", self.broker.cluster_answer_ms),
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
        if let Err(message) = nats_url(&self.broker.nats_url) {
            check(false, "broker.nats_url", message);
        }
        check(
            self.server.advertise_url.is_empty()
                || ((self.server.advertise_url.starts_with("http://")
                    || self.server.advertise_url.starts_with("https://"))
                    && !self.server.advertise_url.ends_with('/')),
            "server.advertise_url",
            format!(
                "'{}' must be empty or an http:// or https:// base URL without a trailing '/'",
                self.server.advertise_url
            ),
        );
        check(
            self.server.instance_id.is_empty() || is_name(&self.server.instance_id, 64),
            "server.instance_id",
            format!(
                "'{}' must be 1-64 letters, digits, '.', '_' or '-'",
                self.server.instance_id
            ),
        );
        check(
            !self.broker.nats_subject.is_empty()
                && self
                    .broker
                    .nats_subject
                    .split('.')
                    .all(|token| is_name(token, 64)),
            "broker.nats_subject",
            format!(
                "'{}' must be dot-separated tokens of letters, digits, '_' or '-' (no wildcards)",
                self.broker.nats_subject
            ),
        );
        // broker::bound::MIN_MAX_EVENT_BYTES: the truncation marker itself must fit.
        check(
            self.broker.max_event_bytes >= 1024,
            "broker.max_event_bytes",
            "must be at least 1024 (the truncation marker must fit)".into(),
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
            ("webhooks.max_attempts", self.webhooks.max_attempts as u64),
            ("webhooks.backoff_base_ms", self.webhooks.backoff_base_ms),
            ("webhooks.backoff_max_ms", self.webhooks.backoff_max_ms),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms),
            ("webhooks.concurrency", self.webhooks.concurrency as u64),
            ("agent.context_tokens", self.agent.context_tokens as u64),
        ] {
            check(value > 0, key, "must be greater than 0".into());
        }
        problems.extend(self.telemetry_problems(cfg!(feature = "otlp")));
        problems
    }

    /// `[telemetry]`: the endpoint is an http(s) URL and this build can export to it, the
    /// protocol is one that is built in, the ratio is a share, and header names and values
    /// can go on the wire (a value is never quoted: it is a credential).
    pub(super) fn telemetry_problems(&self, built_with_otlp: bool) -> Vec<Problem> {
        let t = &self.telemetry;
        let mut problems = Vec::new();
        if !t.otlp_endpoint.is_empty() {
            // The value is quoted only as logs may show a URL (it may carry a credential).
            let shown = match url::Url::parse(&t.otlp_endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => None,
                Ok(_) => Some(format!(
                    "'{}' is",
                    crate::util::loggable_url(&t.otlp_endpoint)
                )),
                Err(e) => Some(format!("the value ({e}) is")),
            };
            if let Some(shown) = shown {
                problems.push(Problem::new(
                    "telemetry.otlp_endpoint",
                    format!("{shown} not an http(s) URL such as http://127.0.0.1:4318"),
                ));
            }
            if !built_with_otlp {
                problems.push(Problem::new(
                    "telemetry.otlp_endpoint",
                    "this build cannot export traces: it lacks the `otlp` cargo feature \
                     (build with `cargo build --release --features otlp`, or leave the endpoint unset)"
                        .into(),
                ));
            }
        }
        if t.otlp_protocol != "http/protobuf" {
            problems.push(Problem::new(
                "telemetry.otlp_protocol",
                format!(
                    "'{}' is not supported: only http/protobuf (the collector's port 4318) is built in",
                    t.otlp_protocol
                ),
            ));
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            problems.push(Problem::new(
                "telemetry.sample_ratio",
                format!("{} must be between 0.0 and 1.0", t.sample_ratio),
            ));
        }
        for (name, value) in &t.otlp_headers {
            let key = format!("telemetry.otlp_headers.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                problems.push(Problem::new(&key, "is not a valid HTTP header name".into()));
            }
            if !value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                problems.push(Problem::new(
                    &key,
                    "its value may hold only visible ASCII, spaces and tabs".into(),
                ));
            }
        }
        problems
    }
}

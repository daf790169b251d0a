//! Telemetry: builds the tracing subscriber (pretty for humans, JSON for machines) and, when
//! an OTLP endpoint is configured, the trace exporter beside it.
//!
//! Owns where log lines go (stdout), whether they are coloured (only on a terminal, and never
//! with `NO_COLOR` set: escape codes in a file or a pipe are noise), and which span fields a
//! JSON line carries: every span it was logged in (`spans`: the request with its
//! `request_id`, the session with `session.id`, the hook call with `plugin` and `hook`), so
//! each line says where it came from without every event repeating it. Owns, too, whether
//! spans leave the process (`[telemetry]`, or the standard `OTEL_EXPORTER_OTLP_*`
//! variables; the exporter itself is `otlp`, feature `otlp`) and flushing them at exit
//! ([`Telemetry::shutdown`]). Does not own the spans themselves (`api`, `session`,
//! `plugin::call`) nor the `traceparent` headers (`trace_context`). Only `main` installs it;
//! the library never does, so tests and embedders choose their own.

#[cfg(feature = "otlp")]
mod otlp;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{LogFormat, TelemetrySettings};

/// The standard variables that name a collector when `telemetry.otlp_endpoint` does not.
pub const ENV_ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Whether log lines get colour: only when stdout is a terminal and `NO_COLOR` is unset or
/// empty (no-color.org).
pub fn colour(stdout_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Where spans are exported to, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    Off,
    /// `telemetry.otlp_endpoint`, as the full traces URL.
    To(String),
    /// The named `OTEL_EXPORTER_OTLP_*` variable decides (the exporter reads it).
    FromEnvironment(&'static str),
}

/// Where spans go: the setting wins; else a standard variable that is set and not empty.
pub fn export(settings: &TelemetrySettings, env: impl Fn(&str) -> Option<String>) -> Export {
    if !settings.otlp_endpoint.is_empty() {
        return Export::To(traces_url(&settings.otlp_endpoint));
    }
    ENV_ENDPOINTS
        .into_iter()
        .find(|name| env(name).is_some_and(|v| !v.is_empty()))
        .map_or(Export::Off, Export::FromEnvironment)
}

/// The traces URL of a collector's base URL: `/v1/traces` appended, unless it is there.
pub fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The `service.name` resource attribute: the setting, else `OTEL_SERVICE_NAME`, else
/// "switchyard".
pub fn service_name(setting: &str, env: Option<String>) -> String {
    Some(setting.to_string())
        .filter(|s| !s.is_empty())
        .or(env.filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "switchyard".to_string())
}

/// Exporting could not start (an endpoint the exporter refuses).
#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

/// What `main` holds until exit: the trace pipeline, to flush.
#[must_use = "spans still queued are lost unless `shutdown` is called at exit"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    pipeline: Option<otlp::Pipeline>,
}

impl Telemetry {
    /// Sends the spans still queued and stops the exporter (blocks up to 5 s).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(pipeline) = self.pipeline {
            pipeline.shutdown();
        }
    }
}

/// Installs the global subscriber, with the trace exporter when one is configured. `RUST_LOG`
/// wins over `level` when set (for log lines only: what is exported does not follow it).
pub fn init(
    format: LogFormat,
    level: &str,
    settings: &TelemetrySettings,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
    };
    let export = export(settings, |name| std::env::var(name).ok());
    #[cfg(feature = "otlp")]
    {
        let pipeline = match &export {
            Export::Off => None,
            to => Some(otlp::Pipeline::start(settings, to).map_err(TelemetryError)?),
        };
        let layer = pipeline.as_ref().map(otlp::Pipeline::layer);
        tracing_subscriber::registry().with(fmt).with(layer).init();
        if let Some(pipeline) = &pipeline {
            crate::trace_context::install();
            tracing::info!(endpoint = %pipeline.shown_endpoint(), "Exporting traces over OTLP.");
        }
        Ok(Telemetry { pipeline })
    }
    #[cfg(not(feature = "otlp"))]
    {
        tracing_subscriber::registry().with(fmt).init();
        // `telemetry.otlp_endpoint` is refused at load time; a standard variable in the
        // environment is the deployment's, so it is named, not fatal.
        if let Export::FromEnvironment(name) = export {
            tracing::warn!(
                variable = name,
                "Traces are not exported: this build lacks the `otlp` cargo feature."
            );
        }
        Ok(Telemetry {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(OsStr::new("1"))));
    }

    #[test]
    fn the_setting_wins_over_the_environment_and_nothing_means_off() {
        let mut settings = crate::settings::Settings::defaults().telemetry;
        let none = |_: &str| None;
        let both = |name: &str| Some(format!("http://{name}:4318"));
        let general = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://c:4318".to_string())
        };
        let empty = |_: &str| Some(String::new());
        assert_eq!(export(&settings, none), Export::Off);
        assert_eq!(export(&settings, empty), Export::Off);
        assert_eq!(
            export(&settings, both),
            Export::FromEnvironment("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        );
        assert_eq!(
            export(&settings, general),
            Export::FromEnvironment("OTEL_EXPORTER_OTLP_ENDPOINT")
        );
        settings.otlp_endpoint = "https://collector:4318/".into();
        assert_eq!(
            export(&settings, both),
            Export::To("https://collector:4318/v1/traces".into())
        );
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/otlp/"),
            "http://c:4318/otlp/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn service_name_falls_back_to_the_environment_then_the_default() {
        assert_eq!(service_name("gw", Some("env".into())), "gw");
        assert_eq!(service_name("", Some("env".into())), "env");
        assert_eq!(service_name("", Some(String::new())), "switchyard");
        assert_eq!(service_name("", None), "switchyard");
    }
}

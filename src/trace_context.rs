//! W3C trace context on the wire: a request's `traceparent` (and `tracestate`) makes its span
//! join the caller's trace, and an upstream HTTP request carries the current span's.
//!
//! Owns reading and writing those two headers, and whether they are read and written at all:
//! only once `telemetry` has installed the propagator (a build with the `otlp` feature that
//! exports traces). Until then, and in a build without the feature, both directions cost one
//! relaxed atomic load. Does not own the spans (`api`, `session`, `plugin::call`) nor where
//! they are exported (`telemetry`).

#[cfg(feature = "otlp")]
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the propagator is installed (export is on).
#[cfg(feature = "otlp")]
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Installs the W3C trace-context propagator for the process (`telemetry`, once export is on).
#[cfg(feature = "otlp")]
pub fn install() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    ACTIVE.store(true, Ordering::Relaxed);
}

/// The incoming trace-context headers of one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

/// Makes `span` (a request's root span, before it is entered) a child of the caller's span
/// when the request carries a valid `traceparent`; otherwise it starts a trace of its own.
#[cfg(feature = "otlp")]
pub fn adopt_parent(span: &tracing::Span, incoming: Incoming<'_>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !ACTIVE.load(Ordering::Relaxed) || incoming.traceparent.is_none() {
        return;
    }
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&incoming));
    let _ = span.set_parent(parent);
}

#[cfg(not(feature = "otlp"))]
#[inline]
pub fn adopt_parent(_span: &tracing::Span, _incoming: Incoming<'_>) {}

/// The headers an outgoing request carries so the upstream joins the current span's trace
/// (`traceparent`, and `tracestate` when there is one). Empty while export is off.
#[cfg(feature = "otlp")]
pub fn outgoing() -> Vec<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !ACTIVE.load(Ordering::Relaxed) {
        return Vec::new();
    }
    let context = tracing::Span::current().context();
    let mut headers = Outgoing(Vec::new());
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers)
    });
    headers.0
}

#[cfg(not(feature = "otlp"))]
#[inline]
pub fn outgoing() -> Vec<(String, String)> {
    Vec::new()
}

#[cfg(feature = "otlp")]
impl opentelemetry::propagation::Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|_| name))
        .collect()
    }
}

#[cfg(feature = "otlp")]
struct Outgoing(Vec<(String, String)>);

#[cfg(feature = "otlp")]
impl opentelemetry::propagation::Injector for Outgoing {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn a_traceparent_is_read_with_its_trace_id_and_sampled_flag() {
        let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let incoming = Incoming {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            tracestate: None,
        };
        let context = propagator.extract(&incoming);
        let span = context.span();
        let parent = span.span_context();
        assert!(parent.is_remote() && parent.is_sampled());
        assert_eq!(
            format!("{:032x}", parent.trace_id()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let garbage = Incoming {
            traceparent: Some("00-zz-yy-01"),
            tracestate: None,
        };
        assert!(!propagator
            .extract(&garbage)
            .span()
            .span_context()
            .is_valid());
    }
}

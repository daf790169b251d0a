//! `GET /metrics`: the Prometheus text format (version 0.0.4).
//!
//! Outside `/api`, where scrapers look by default, but behind the admin token when one is set:
//! the figures name every plugin and target and show the traffic, which is more than a probe
//! says, and Prometheus sends a bearer token with one line of its scrape config
//! (`authorization: {credentials_file: …}`). Reads the tables others keep (health, broker,
//! store, providers) at scrape time, never an actor's mailbox, so a stuck actor cannot stall
//! a scrape. Owns the reading and the rule; the metrics and their text are `metrics`'.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{ApiError, AppState};
use crate::inference::breaker::BreakerState;
use crate::metrics::{BrokerCounts, ProviderCounts, Scrape, StoreCounts, CONTENT_TYPE};

/// What the tables say now.
fn scrape(state: &AppState) -> Scrape {
    let b = state.broker.stats();
    let counts = state.ext.inference.call_counts();
    let providers = state
        .ext
        .inference
        .breakers()
        .into_iter()
        .map(|breaker| {
            let c = counts.get(&breaker.provider).copied().unwrap_or_default();
            ProviderCounts {
                breaker: match breaker.state {
                    BreakerState::Closed => "closed",
                    BreakerState::Open => "open",
                    BreakerState::HalfOpen => "half_open",
                },
                calls: c.calls,
                retries: c.retries,
                failures: c.failures,
                trips: breaker.trips,
                provider: breaker.provider,
            }
        })
        .collect();
    Scrape {
        actors: state.health.snapshot(),
        sessions_open: state.sessions.count() as u64,
        sessions_parked: state.sessions.parked() as u64,
        broker: BrokerCounts {
            published: b.published,
            delivered: b.delivered,
            publish_dropped: b.publish_dropped,
            delivery_dropped: b.delivery_dropped,
            subscribers_evicted: b.subscribers_evicted,
            events_truncated: b.events_truncated,
        },
        store: state.store.as_ref().map(|store| {
            let s = store.stats();
            StoreCounts {
                batches: s.batches,
                rows: s.written,
                failed_batches: s.failed_batches,
                dropped: s.dropped,
                retries: s.retries,
                queue_depth: store.queue_depth() as u64,
            }
        }),
        providers,
    }
}

/// Metrics for Prometheus.
///
/// Per plugin and hook: calls, failures, bypassed calls, latency; per long-lived actor:
/// restarts, state, mailbox; sessions, messages and upstream latency per target; broker,
/// store, inference providers, reloads, and the process (README, "Metrics", lists them).
/// Needs the admin token when one is set.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "The Prometheus text format, version 0.0.4.", content_type = "text/plain", body = String,
            example = json!("# HELP switchyard_sessions_open Sessions open now.\n# TYPE switchyard_sessions_open gauge\nswitchyard_sessions_open 0\n")),
    ),
    extensions(("x-error-codes" = json!([]))))]
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !super::admitted(req.headers(), state.admin_token.as_deref()) {
        return Err(ApiError::Unauthorized);
    }
    let text = state.plugins.metrics().render(&scrape(&state));
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .body(text))
}

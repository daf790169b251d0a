//! Health endpoints: `/livez`, `/readyz` and `/health` (application/health+json).
//!
//! Everything is read from the health snapshot table, the lifecycle latch and the shared
//! tables (targets, breakers, store counters), never from an actor's mailbox, so a stuck actor
//! cannot stall a probe.

use std::time::{Instant, SystemTime};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use serde::Serialize;

use super::AppState;
use crate::broker::nats::LinkState;
use crate::health::{ActorRecord, ActorState, Phase};

/// A check's status (draft-inadarei-api-health-check); the worst one is the service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Pass,
    Warn,
    Fail,
}

fn status_of(row: &ActorRecord) -> Status {
    match row.state {
        ActorState::Running | ActorState::Disabled => Status::Pass,
        ActorState::Failed if row.required => Status::Fail,
        _ => Status::Warn,
    }
}

fn no_store(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Liveness.
///
/// 200 while the process should keep running; 503 once a required actor gave up (the service
/// is shutting down with exit code 1).
#[utoipa::path(get, path = "/livez", tag = "health",
    responses(
        (status = 200, description = "Alive.", body = super::schemas::Probe, example = json!({"status": "pass"})),
        (status = 503, description = "A required actor gave up.", body = super::schemas::Probe),
    ),
    extensions(("x-error-codes" = json!([]))))]
pub async fn livez(state: web::Data<AppState>) -> HttpResponse {
    let response = match state.lifecycle.fatal() {
        None => HttpResponse::Ok().json(json!({ "status": "pass" })),
        Some(reason) => {
            HttpResponse::ServiceUnavailable().json(json!({ "status": "fail", "output": reason }))
        }
    };
    no_store(response)
}

/// Readiness.
///
/// 200 only while serving; 503 during start-up and shutdown (`output` says which).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Serving.", body = super::schemas::Probe, example = json!({"status": "pass"})),
        (status = 503, description = "Starting, draining, or a required actor gave up.", body = super::schemas::Probe,
            example = json!({"status": "fail", "output": "draining"})),
    ),
    extensions(("x-error-codes" = json!([]))))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let phase = state.lifecycle.phase();
    let response = match (phase, state.lifecycle.fatal()) {
        (Phase::Ready, None) => HttpResponse::Ok().json(json!({ "status": "pass" })),
        (phase, fatal) => {
            let output = fatal.unwrap_or_else(|| match phase {
                Phase::Starting => "starting".to_string(),
                _ => "draining".to_string(),
            });
            HttpResponse::ServiceUnavailable().json(json!({ "status": "fail", "output": output }))
        }
    };
    no_store(response)
}

/// One `checks` entry for an actor.
pub fn actor_check(row: &ActorRecord, now: Instant) -> Value {
    let mut check = json!({
        "componentId": format!("{}#gen{}", row.path, row.generation),
        "componentType": row.component_type,
        "role": row.role,
        "status": status_of(row),
        "state": row.state,
        "required": row.required,
        "generation": row.generation,
        "restarts": row.restarts,
        "reloads": row.reloads,
        "time": crate::util::rfc3339(SystemTime::now()),
    });
    if let Some((started, started_wall)) = row.started_at {
        check["startedAt"] = json!(crate::util::rfc3339(started_wall));
        check["uptimeS"] = json!(now.saturating_duration_since(started).as_secs_f64());
    }
    if let Some(error) = &row.last_error {
        check["lastError"] = json!(error);
    }
    if let Some(gauge) = &row.mailbox {
        check["mailbox"] = json!(gauge.snapshot());
    }
    check
}

/// Script plugins also show where they come from and the memory their engine uses.
fn add_script_details(state: &AppState, row: &ActorRecord, check: &mut Value) {
    if row.role != "plugin" {
        return;
    }
    if let Some(files) = state.plugins.get(row.id()).and_then(|p| p.files) {
        check["script"] = json!({
            "sourcePath": files["sourcePath"],
            "entryFile": files["entryFile"],
            "engineMemoryBytes": files["engineMemoryBytes"],
        });
    }
}

/// The health of every actor.
///
/// One check per actor (state, generation, restarts, reloads, last error, uptime, mailbox),
/// the broker's counters, the store, provider breakers, insecure targets, paused agents
/// (`agent:{id}`, a warning each) and the session count. The worst status wins; `fail` answers 503.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Passing, or warnings.", content_type = "application/health+json", body = super::schemas::HealthReport),
        (status = 503, description = "Failing.", content_type = "application/health+json", body = super::schemas::HealthReport),
    ),
    extensions(("x-error-codes" = json!([]))))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let now = Instant::now();
    let rows = state.health.snapshot();
    let mut checks = Map::new();
    let mut worst = Status::Pass;
    for row in &rows {
        let mut check = actor_check(row, now);
        add_script_details(&state, row, &mut check);
        worst = worst.max(status_of(row));
        checks.insert(format!("actor:{}", row.path), Value::Array(vec![check]));
    }
    let broker = state.broker.stats();
    checks.insert(
        "broker:events".into(),
        json!([{ "componentType": "component", "status": "pass", "observedValue": broker }]),
    );
    // Without NATS, events reach this instance's subscribers only: a warning, not a failure.
    if let Some(link) = &state.cluster {
        let link = link.snapshot();
        let (status, output) = match link.state {
            LinkState::Connected => (Status::Pass, None),
            LinkState::Connecting | LinkState::Disconnected => (
                Status::Warn,
                Some("NATS is unreachable: events reach this instance's subscribers only"),
            ),
        };
        worst = worst.max(status);
        let mut check =
            json!({ "componentType": "component", "status": status, "observedValue": link });
        if let Some(output) = output {
            check["output"] = json!(output);
        }
        checks.insert("broker:cluster".into(), json!([check]));
    }
    if let Some(store) = &state.store {
        let stats = store.stats();
        let status = if stats.degraded {
            Status::Warn
        } else {
            Status::Pass
        };
        worst = worst.max(status);
        checks.insert(
            "store:writes".into(),
            json!([{ "componentType": "datastore", "status": status, "observedValue": stats }]),
        );
        // Which database: "sqlite" or "postgres" (shared with every instance on it).
        checks.insert(
            "store:backend".into(),
            json!([{ "componentType": "datastore", "status": "pass", "observedValue": store.store().backend() }]),
        );
    }
    // One check per provider breaker: open is a warning (calls fail fast or use the fallback).
    for breaker in state.ext.inference.breakers() {
        use crate::inference::breaker::BreakerState;
        let status = match breaker.state {
            BreakerState::Closed => Status::Pass,
            BreakerState::HalfOpen | BreakerState::Open => Status::Warn,
        };
        worst = worst.max(status);
        checks.insert(
            format!("inference:{}", breaker.provider),
            json!([{ "componentType": "component", "status": status, "observedValue": breaker }]),
        );
    }
    // A paused agent answers no chat until an operator resumes it: a warning, one per agent.
    for (agent, status) in state.agents.paused() {
        worst = worst.max(Status::Warn);
        checks.insert(
            format!("agent:{agent}"),
            json!([{ "componentType": "component", "status": Status::Warn, "observedValue": status,
                     "output": format!("agent '{agent}' is paused after {} failed turns in a row; POST /api/agents/{agent}/resume resumes it", status.consecutive_failures) }]),
        );
    }
    // Targets that skip certificate checks are a standing risk an operator should see.
    let insecure = state.sessions.targets().insecure();
    if !insecure.is_empty() {
        worst = worst.max(Status::Warn);
        checks.insert(
            "tls:insecure".into(),
            json!([{ "componentType": "component", "status": Status::Warn, "observedValue": insecure,
                     "output": "these targets accept any server certificate (tls.insecureSkipVerify)" }]),
        );
    }
    checks.insert(
        "sessions:count".into(),
        json!([{ "componentType": "component", "status": "pass", "observedValue": state.sessions.count() }]),
    );
    let phase = state.lifecycle.phase();
    if phase != Phase::Ready {
        worst = worst.max(Status::Warn);
    }
    if state.lifecycle.fatal().is_some() {
        worst = Status::Fail;
    }
    let mut body = json!({
        "status": worst,
        "version": env!("CARGO_PKG_VERSION"),
        "serviceId": "switchyard",
        "description": "switchyard plugin gateway",
        "phase": match phase { Phase::Starting => "starting", Phase::Ready => "ready", Phase::Draining => "draining" },
        "checks": checks,
    });
    if worst != Status::Pass {
        let degraded: Vec<String> = rows
            .iter()
            .filter(|r| status_of(r) != Status::Pass)
            .map(|r| format!("{} is {}", r.path, r.state.as_str()))
            .chain(state.lifecycle.fatal())
            .collect();
        body["output"] = json!(degraded.join("; "));
    }
    let status = if worst == Status::Fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    no_store(
        HttpResponse::build(status)
            .content_type("application/health+json")
            .body(body.to_string()),
    )
}

/// The supervision tree.
///
/// `root` → `broker`, `plugins` → each plugin, `sessions` → each session, nested by path.
#[utoipa::path(get, path = "/api/actors", tag = "actors",
    responses((status = 200, description = "The tree from `root`.", body = super::schemas::ActorNode)),
    extensions(("x-error-codes" = json!([]))))]
pub async fn actors(state: web::Data<AppState>) -> HttpResponse {
    let now = Instant::now();
    let rows = state.health.snapshot();
    fn node(state: &AppState, rows: &[ActorRecord], path: &str, now: Instant) -> Value {
        let mut value = json!({});
        if let Some(row) = rows.iter().find(|r| r.path == path) {
            value = actor_check(row, now);
            add_script_details(state, row, &mut value);
        }
        value["id"] = json!(path.rsplit('/').next().unwrap_or(path));
        value["path"] = json!(path);
        let prefix = format!("{path}/");
        let children: Vec<Value> = rows
            .iter()
            .filter(|r| {
                r.path
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|r| node(state, rows, &r.path, now))
            .collect();
        value["children"] = Value::Array(children);
        value
    }
    HttpResponse::Ok().json(node(&state, &rows, "root", now))
}

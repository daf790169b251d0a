//! Targets and sessions over REST. Handlers only translate; `session::SessionManager` acts.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState, RequestId};
use crate::session::CreateSession;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/targets", web::get().to(list_targets))
        .route("/targets/{id}", web::get().to(get_target))
        .route("/sessions", web::post().to(create_session))
        .route("/sessions", web::get().to(list_sessions))
        .route("/sessions/{id}", web::get().to(get_session))
        .route("/sessions/{id}", web::delete().to(close_session))
        .route("/sessions/{id}/messages", web::post().to(send_message))
        .route("/sessions/{id}/audit", web::get().to(audit));
}

async fn list_targets(state: web::Data<AppState>) -> HttpResponse {
    let targets: Vec<Value> = state
        .sessions
        .targets()
        .iter()
        .map(|t| t.masked())
        .collect();
    HttpResponse::Ok().json(targets)
}

async fn get_target(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let target = state
        .sessions
        .target(&id)
        .ok_or(ApiError::TargetNotFound(id))?;
    Ok(HttpResponse::Ok().json(target.masked()))
}

async fn create_session(
    state: web::Data<AppState>,
    body: web::Json<CreateSession>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let info = state.sessions.create(body.into_inner()).await?;
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    tracing::info!(session = %info.id, target = %info.target_id, request_id = %request_id, "Session created.");
    Ok(HttpResponse::Created().json(info))
}

async fn list_sessions(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.sessions.list())
}

async fn get_session(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.sessions.describe(&id).await?))
}

async fn close_session(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.sessions.close(&id).await?))
}

/// Body of `POST /api/sessions/{id}/messages`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    message: String,
    #[serde(default)]
    metadata: Option<Value>,
}

async fn send_message(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<MessageBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(ApiError::InvalidJson("`metadata` must be an object".into()));
    }
    let reply = state
        .sessions
        .send(&id, body.message, body.metadata)
        .await?;
    Ok(HttpResponse::Ok().json(reply))
}

/// `GET /api/sessions/{id}/audit`: what the audit plugin recorded (also after the session closed).
async fn audit(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.audit.get(&id) {
        Some(entries) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "sessionId": id, "entries": entries })))
        }
        None => {
            // A live session without the audit plugin (or without messages yet) has no entries.
            state.sessions.describe(&id).await?;
            Ok(HttpResponse::Ok().json(serde_json::json!({ "sessionId": id, "entries": [] })))
        }
    }
}

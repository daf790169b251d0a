//! Targets and sessions over REST. Handlers only translate; `session::SessionManager` acts.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, AppState, RequestId};
use crate::session::{CreateSession, StreamEvent};

pub fn configure(api: &mut super::Mounter<'_>) {
    api.get("/targets", list_targets)
        .post("/targets", create_target)
        .get("/targets/{id}", get_target)
        .put("/targets/{id}", update_target)
        .delete("/targets/{id}", delete_target)
        .post("/targets/{id}/test", test_target)
        .post("/sessions", create_session)
        .get("/sessions", list_sessions)
        .get("/sessions/{id}", get_session)
        .delete("/sessions/{id}", close_session)
        .post("/sessions/{id}/messages", send_message)
        .get("/sessions/{id}/audit", audit)
        .get("/sessions/{id}/messages", transcript);
}

async fn list_targets(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.sessions.targets().views())
}

async fn get_target(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let view = state
        .sessions
        .targets()
        .view_of(&id)
        .ok_or(ApiError::TargetNotFound(id))?;
    Ok(HttpResponse::Ok().json(view))
}

async fn create_target(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let view = state.sessions.targets().create(body.into_inner()).await?;
    Ok(HttpResponse::Created().json(view))
}

async fn update_target(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .sessions
        .targets()
        .update(&id, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn delete_target(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state.sessions.targets().delete(&id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id, "deleted": true })))
}

/// Body of `POST /api/targets/{id}/test`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    #[serde(default)]
    message: Option<String>,
}

/// `POST /api/targets/{id}/test`: the body is optional, but one that is sent must be a
/// `{message?}` object.
async fn test_target(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = super::read_body(&req, payload, state.max_body_bytes).await?;
    let body: Option<TestBody> = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::from_serde(&e))?;
        Some(super::object_body(value)?)
    };
    let message = body
        .and_then(|b| b.message)
        .unwrap_or_else(|| "Hello from switchyard".into());
    let result = state.sessions.targets().test(&id, &message).await?;
    Ok(HttpResponse::Ok().json(result))
}

async fn create_session(
    state: web::Data<AppState>,
    body: super::JsonObject<CreateSession>,
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

/// Pagination: `limit` (1–500, default 50) and `offset` (default 0), and the filters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Page {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    target_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

impl Page {
    fn bounds(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(50);
        let offset = self.offset.unwrap_or(0);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and 500, got {limit}"
            )));
        }
        if offset < 0 {
            return Err(ApiError::InvalidQuery(format!(
                "offset must not be negative, got {offset}"
            )));
        }
        Ok((limit, offset))
    }
}

fn internal(error: crate::store::StoreError) -> ApiError {
    ApiError::Internal(error.to_string())
}

/// `GET /api/sessions?targetId=&state=&limit=&offset=` → `{items, total, limit, offset}`,
/// newest first. From the store when it is on (ended sessions included), else the live ones.
async fn list_sessions(
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner();
    let (limit, offset) = page.bounds()?;
    if let Some(wanted) = &page.state {
        const STATES: &[&str] = &["open", "closed", "failed", "interrupted"];
        if !STATES.contains(&wanted.as_str()) {
            return Err(ApiError::InvalidQuery(format!(
                "state '{wanted}' is not one of: {}",
                STATES.join(", ")
            )));
        }
    }
    let (items, total): (Vec<Value>, i64) = match state.sessions.store() {
        Some(store) => {
            let filter = crate::store::SessionFilter {
                target_id: page.target_id.clone(),
                state: page.state.clone(),
            };
            let (rows, total) = store
                .store()
                .sessions(&filter, limit, offset)
                .await
                .map_err(internal)?;
            (rows.into_iter().map(stored_view).collect(), total)
        }
        None => {
            let mut live: Vec<_> = state
                .sessions
                .list()
                .into_iter()
                .filter(|s| page.target_id.as_ref().is_none_or(|t| *t == s.target_id))
                .filter(|s| page.state.as_ref().is_none_or(|st| st == s.state.as_str()))
                .collect();
            live.reverse();
            let total = live.len() as i64;
            let items = live
                .into_iter()
                .skip(offset as usize)
                .take(limit as usize)
                .map(|s| serde_json::json!(s))
                .collect();
            (items, total)
        }
    };
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "total": total, "limit": limit, "offset": offset }),
    ))
}

/// A stored session as responses show it: its plugins' secrets (sealed in the row, or in clear
/// in a row written before they were) masked.
fn stored_view(mut row: crate::store::SessionRow) -> Value {
    crate::session::secrets::redact_stored(&mut row.plugins);
    serde_json::json!(row)
}

/// A live session's snapshot, or the stored row of an ended one.
async fn get_session(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.sessions.describe(&id).await {
        Ok(info) => Ok(HttpResponse::Ok().json(info)),
        Err(not_live) => {
            let stored = match state.sessions.store() {
                Some(store) => store.store().session(&id).await.map_err(internal)?,
                None => None,
            };
            stored
                .map(|row| HttpResponse::Ok().json(stored_view(row)))
                .ok_or(ApiError::Session(not_live))
        }
    }
}

/// `GET /api/sessions/{id}/messages?limit=&offset=`: the stored transcript, oldest first.
async fn transcript(
    state: web::Data<AppState>,
    id: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let (limit, offset) = page.bounds()?;
    let store = state.sessions.store().ok_or(ApiError::StoreDisabled)?;
    if store
        .store()
        .session(&id)
        .await
        .map_err(internal)?
        .is_none()
    {
        return Err(ApiError::Session(
            crate::session::SessionError::SessionNotFound(id),
        ));
    }
    let (items, total) = store
        .store()
        .messages(&id, limit, offset)
        .await
        .map_err(internal)?;
    Ok(HttpResponse::Ok().json(
        serde_json::json!({ "items": items, "total": total, "limit": limit, "offset": offset }),
    ))
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
    /// Stream the answer as Server-Sent Events (as `Accept: text/event-stream` does).
    #[serde(default)]
    stream: bool,
}

/// Whether the client asked for a streamed answer in its `Accept` header.
fn accepts_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|kind| kind.trim().starts_with("text/event-stream"))
        })
}

async fn send_message(
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: super::JsonObject<MessageBody>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(ApiError::InvalidJson("`metadata` must be an object".into()));
    }
    if body.stream || accepts_event_stream(&req) {
        return stream_message(&state, &id, body).await;
    }
    let reply = state
        .sessions
        .send(&id, body.message, body.metadata)
        .await?;
    Ok(HttpResponse::Ok().json(reply))
}

/// A streamed answer as Server-Sent Events: `chunk` events (`{index, content}`) as they
/// arrive, then one `done` (the reply, as the JSON answer has it) or one `error`
/// (`{code, message, details?}`). A failure before the first chunk is a plain JSON error with
/// its status instead, so clients can tell a refused message from a broken stream.
async fn stream_message(
    state: &AppState,
    id: &str,
    body: MessageBody,
) -> Result<HttpResponse, ApiError> {
    let mut events = state
        .sessions
        .send_streaming(id, body.message, body.metadata)?;
    let first = match events.recv().await {
        Some(StreamEvent::Failed(error)) => return Err(error.into()),
        Some(event) => event,
        None => return Err(ApiError::Internal("the session ended the stream".into())),
    };
    let frames = futures::stream::unfold(
        (Some(first), events, false),
        |(next, mut events, ended)| async move {
            if ended {
                return None;
            }
            let event = match next {
                Some(event) => event,
                None => events.recv().await?,
            };
            let (frame, last) = sse_frame(event);
            Some((
                Ok::<_, actix_web::Error>(web::Bytes::from(frame)),
                (None, events, last),
            ))
        },
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Proxies must pass chunks on as they come.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames))
}

/// One event's frame, and whether it ends the stream.
fn sse_frame(event: StreamEvent) -> (String, bool) {
    let (name, data, last) = match event {
        StreamEvent::Chunk { index, content } => (
            "chunk",
            serde_json::json!({ "index": index, "content": content }),
            false,
        ),
        StreamEvent::Done(reply) => ("done", reply, true),
        StreamEvent::Failed(error) => ("error", ApiError::from(error).body(), true),
    };
    (format!("event: {name}\ndata: {data}\n\n"), last)
}

/// `GET /api/sessions/{id}/audit`: what the audit plugin recorded (also after the session closed).
async fn audit(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.audit.entries(&id).await.map_err(internal)? {
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

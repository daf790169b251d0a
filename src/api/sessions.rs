//! Targets and sessions over REST. Handlers only translate; `session::SessionManager` acts.
//!
//! With instances sharing a store, a message (or a close) for a session another instance owns
//! is forwarded there over HTTP ([`forward`]): the caller's headers passed on, the hop marked
//! with [`FORWARDED_BY`] so a forwarded request is never forwarded again, and the owner's
//! answer (a streamed one too) passed back as it comes. An owner that cannot be reached is a
//! 503 `session_owner_unavailable` with `Retry-After` (its lease's remaining time).

use crate::broker::events::{ConfigKind, ConfigOp};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState, RequestId};
use crate::session::{CreateSession, Located, SessionError, StreamEvent};

/// Marks a request one instance forwarded to another (naming the first): never forwarded
/// again.
pub const FORWARDED_BY: &str = "x-switchyard-forwarded-by";
/// On a forwarded answer: the instance that served it.
pub const SERVED_BY: &str = "x-switchyard-served-by";

/// Time to reach an owner; one that does not answer by then counts as unreachable.
const FORWARD_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Time an owner may take to begin its answer (a slow upstream included).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

thread_local! {
    /// One client per worker thread (awc's client is not `Send`), keeping connections to the
    /// other instances open.
    static FORWARDER: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(FORWARD_CONNECT_TIMEOUT))
        .timeout(FORWARD_TIMEOUT)
        .disable_redirects()
        .finish();
}

/// Headers never passed on a hop (per connection, or recomputed).
fn hop_by_hop(name: &actix_web::http::header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "content-length"
    )
}

/// Sends `req` (its method, path and query, its headers but the hop-by-hop ones, and `body`)
/// to the owner at `url` and answers with what the owner answered, streamed as it comes.
/// An owner that cannot be reached answers 503 `session_owner_unavailable`.
/// Forwards `req` to session `id`'s owner when another instance runs it; `None` when it is
/// live here (perhaps just taken over). An owner found in the cache that cannot be reached is
/// forgotten and the session located again from the store, once: it may have handed the
/// session over at a graceful stop, and the next instance takes it over at once.
async fn forward_if_elsewhere(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    body: impl FnOnce() -> Result<Option<web::Bytes>, ApiError>,
) -> Result<Option<HttpResponse>, ApiError> {
    // Made only when the request goes elsewhere.
    let mut body = Some(body);
    let mut bytes = None;
    let mut retried = false;
    loop {
        let Located::There {
            owner,
            url,
            retry_after_ms,
            cached,
        } = state.sessions.locate(id, forwarded(req)).await?
        else {
            return Ok(None);
        };
        if let Some(make) = body.take() {
            bytes = make()?;
        }
        match forward(state, req, bytes.clone(), id, owner, &url, retry_after_ms).await {
            Ok(answer) => return Ok(Some(answer)),
            // Only a request that never reached the owner is sent again: one that may have
            // been received could be answered twice.
            Err(Unreachable { never_sent, error }) => {
                state.sessions.forget_owner(id);
                if cached && never_sent && !retried {
                    retried = true;
                    continue;
                }
                return Err(error);
            }
        }
    }
}

/// A forward that failed: the answer for the client, and whether the request certainly never
/// reached the owner (the connection could not be made).
struct Unreachable {
    never_sent: bool,
    error: ApiError,
}

async fn forward(
    state: &AppState,
    req: &HttpRequest,
    body: Option<web::Bytes>,
    id: &str,
    owner: String,
    url: &str,
    retry_after_ms: i64,
) -> Result<HttpResponse, Unreachable> {
    let me = state
        .sessions
        .store()
        .map(|s| s.store().instance().to_string())
        .unwrap_or_default();
    let target = format!(
        "{url}{}",
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let mut out = FORWARDER.with(|c| c.request(req.method().clone(), &target));
    for (name, value) in req.headers() {
        if !hop_by_hop(name) && name.as_str() != FORWARDED_BY {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    out = out.insert_header((FORWARDED_BY, me));
    let sent = match body {
        Some(body) => out.send_body(body).await,
        None => out.send().await,
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(session = id, %owner, %error, "The session's owner cannot be reached.");
            return Err(Unreachable {
                never_sent: matches!(error, awc::error::SendRequestError::Connect(_)),
                error: ApiError::Session(SessionError::OwnerUnavailable {
                    id: id.to_string(),
                    owner,
                    retry_after_ms,
                }),
            });
        }
    };
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response.append_header((name.clone(), value.clone()));
        }
    }
    response.insert_header((SERVED_BY, owner));
    Ok(response.streaming(answer))
}

/// Whether another instance forwarded `req`.
fn forwarded(req: &HttpRequest) -> bool {
    req.headers().contains_key(FORWARDED_BY)
}

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

/// Every target.
///
/// Credentials masked, with `source` (`config`: read-only; `api`) and `lastTest`.
#[utoipa::path(get, path = "/api/targets", tag = "targets",
    responses((status = 200, description = "The targets.", body = [super::schemas::TargetView])),
    extensions(("x-error-codes" = json!([]))))]
async fn list_targets(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.sessions.targets().views())
}

/// One target.
#[utoipa::path(get, path = "/api/targets/{id}", tag = "targets",
    params(("id" = String, Path, description = "The target's id.")),
    responses((status = 200, description = "The target, credentials masked.", body = super::schemas::TargetView)),
    extensions(("x-error-codes" = json!(["target_not_found"]))))]
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

/// Create a target.
///
/// Persisted with its credentials encrypted. Without an `id` it gets a fresh unique one.
/// Every problem is reported at once with its field path (`details.errors`).
#[utoipa::path(post, path = "/api/targets", tag = "targets",
    request_body = super::schemas::TargetBody,
    responses((status = 201, description = "Created: the target, credentials masked.", body = super::schemas::TargetView,
        links(
            ("GetTarget" = (operation_id = "get_target", parameters(("id" = "$response.body#/id")))),
            ("TestTarget" = (operation_id = "test_target", parameters(("id" = "$response.body#/id")))),
            ("UpdateTarget" = (operation_id = "update_target", parameters(("id" = "$response.body#/id")))),
            ("DeleteTarget" = (operation_id = "delete_target", parameters(("id" = "$response.body#/id")))),
        ))),
    extensions(("x-error-codes" = json!(["invalid_target", "target_conflict", "unsupported_media_type", "internal_error"]))))]
async fn create_target(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let view = state.sessions.targets().create(body.into_inner()).await?;
    if let Some(id) = view["id"].as_str() {
        super::config_changed(&state, ConfigKind::Target, id, ConfigOp::Upsert);
    }
    Ok(HttpResponse::Created().json(view))
}

/// Replace a target.
///
/// The id comes from the path. What GET showed may be sent back: masked credentials keep
/// their stored values, `source` and `lastTest` are ignored. Targets from the settings are
/// read-only (409).
#[utoipa::path(put, path = "/api/targets/{id}", tag = "targets",
    params(("id" = String, Path, description = "The target's id.")),
    request_body = super::schemas::TargetBody,
    responses((status = 200, description = "The target as it is now, credentials masked.", body = super::schemas::TargetView)),
    extensions(("x-error-codes" = json!(["target_not_found", "invalid_target", "target_conflict", "unsupported_media_type", "internal_error"]))))]
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
    super::config_changed(&state, ConfigKind::Target, &id, ConfigOp::Upsert);
    Ok(HttpResponse::Ok().json(view))
}

/// `{id, deleted: true}`.
#[derive(Serialize, ToSchema)]
struct Deleted {
    id: String,
    deleted: bool,
}

/// Delete a target.
///
/// Targets from the settings are read-only (409).
#[utoipa::path(delete, path = "/api/targets/{id}", tag = "targets",
    params(("id" = String, Path, description = "The target's id.")),
    responses((status = 200, description = "Deleted.", body = Deleted)),
    extensions(("x-error-codes" = json!(["target_not_found", "target_conflict", "internal_error"]))))]
async fn delete_target(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state.sessions.targets().delete(&id).await?;
    super::config_changed(&state, ConfigKind::Target, &id, ConfigOp::Delete);
    Ok(HttpResponse::Ok().json(Deleted { id, deleted: true }))
}

/// Body of `POST /api/targets/{id}/test`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Hello from switchyard"}))]
struct TestBody {
    /// The message to send (`Hello from switchyard` when absent).
    #[serde(default)]
    message: Option<String>,
}

/// Test a target.
///
/// Connects, checks health and sends one message; the result is kept as the target's
/// `lastTest`. A failed connection is a 200 with `ok: false`. The body is optional, but one
/// that is sent must be a `{message?}` object.
#[utoipa::path(post, path = "/api/targets/{id}/test", tag = "targets",
    params(("id" = String, Path, description = "The target's id.")),
    request_body(content = Option<TestBody>, content_type = "application/json"),
    responses((status = 200, description = "The result.", body = super::schemas::TargetTestResult)),
    extensions(("x-error-codes" = json!(["target_not_found", "internal_error"]))))]
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

/// Open a session.
///
/// Runs every plugin's `initialize`, then the `onConnect` chain, then connects. Every plugin
/// error is listed at once (400 `invalid_session_plugins`).
#[utoipa::path(post, path = "/api/sessions", tag = "sessions",
    request_body = super::schemas::CreateSessionBody,
    responses((status = 201, description = "Open: the live session.", body = super::schemas::LiveSession,
        links(
            ("GetSession" = (operation_id = "get_session", parameters(("id" = "$response.body#/id")))),
            ("SendMessage" = (operation_id = "send_message", parameters(("id" = "$response.body#/id")))),
            ("Transcript" = (operation_id = "transcript", parameters(("id" = "$response.body#/id")))),
            ("Audit" = (operation_id = "audit", parameters(("id" = "$response.body#/id")))),
            ("CloseSession" = (operation_id = "close_session", parameters(("id" = "$response.body#/id")))),
        ))),
    extensions(("x-error-codes" = json!(["target_not_found", "invalid_session_plugins", "too_many_sessions", "plugin_hook_failed", "plugin_unavailable", "plugin_state_conflict", "upstream_error", "tls_error", "unsupported_media_type"]))))]
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
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Page {
    /// Items per page.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// Items to skip.
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
    /// Only this target's sessions.
    #[serde(default)]
    target_id: Option<String>,
    /// Only sessions in this state.
    #[serde(default)]
    #[param(inline, value_type = Option<SessionStateFilter>)]
    state: Option<String>,
}

/// The states `GET /api/sessions?state=` filters by.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
enum SessionStateFilter {
    Open,
    Closed,
    Failed,
    Interrupted,
}

/// Pagination of a transcript: `limit` (1–500, default 50) and `offset` (default 0).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TranscriptPage {
    /// Messages per page.
    #[serde(default)]
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// Messages to skip.
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
}

/// `{items, total, limit, offset}` of `GET /api/sessions`.
#[derive(Serialize, ToSchema)]
struct SessionPage {
    /// Newest first.
    #[schema(value_type = Vec<super::schemas::SessionView>)]
    items: Vec<Value>,
    /// Matching sessions in all.
    total: i64,
    limit: i64,
    offset: i64,
}

/// `{items, total, limit, offset}` of `GET /api/sessions/{id}/messages`.
#[derive(Serialize, ToSchema)]
struct MessagePage {
    /// Oldest first.
    #[schema(value_type = Vec<super::schemas::TranscriptRow>)]
    items: Vec<crate::store::MessageRow>,
    /// Rows in all.
    total: i64,
    limit: i64,
    offset: i64,
}

/// `limit` and `offset`, checked.
fn bounds(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(50);
    let offset = offset.unwrap_or(0);
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

fn internal(error: crate::store::StoreError) -> ApiError {
    ApiError::Internal(error.to_string())
}

/// List sessions.
///
/// `{items, total, limit, offset}`, newest first. From the store when it is on (ended and
/// `interrupted` sessions too), else the live ones.
#[utoipa::path(get, path = "/api/sessions", tag = "sessions", params(Page),
    responses((status = 200, description = "A page of sessions.", body = SessionPage)),
    extensions(("x-error-codes" = json!(["internal_error"]))))]
async fn list_sessions(
    state: web::Data<AppState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let page = page.into_inner();
    let (limit, offset) = bounds(page.limit, page.offset)?;
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
    Ok(HttpResponse::Ok().json(SessionPage {
        items,
        total,
        limit,
        offset,
    }))
}

/// A stored session as responses show it: its plugins' secrets (sealed in the row, or in clear
/// in a row written before they were) masked.
fn stored_view(mut row: crate::store::SessionRow) -> Value {
    crate::session::secrets::redact_stored(&mut row.plugins);
    serde_json::json!(row)
}

/// One session.
///
/// A live session's snapshot (state, target, plugin order, counts), or the stored row of an
/// ended one (summary: messages, tokens counted once, average response time, errors).
#[utoipa::path(get, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "The session's id.")),
    responses((status = 200, description = "The session.", body = super::schemas::SessionView)),
    extensions(("x-error-codes" = json!(["session_not_found", "internal_error"]))))]
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

/// A session's transcript.
///
/// Every stored message and answer, oldest first, with metadata, response time, usage or
/// error. Needs the store (409 `store_disabled` without it).
#[utoipa::path(get, path = "/api/sessions/{id}/messages", tag = "sessions", operation_id = "transcript",
    params(("id" = String, Path, description = "The session's id."), TranscriptPage),
    responses((status = 200, description = "A page of the transcript.", body = MessagePage)),
    extensions(("x-error-codes" = json!(["store_disabled", "session_not_found", "internal_error"]))))]
async fn transcript(
    state: web::Data<AppState>,
    id: web::Path<String>,
    page: web::Query<TranscriptPage>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let (limit, offset) = bounds(page.limit, page.offset)?;
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
    Ok(HttpResponse::Ok().json(MessagePage {
        items,
        total,
        limit,
        offset,
    }))
}

/// Close a session.
///
/// Runs every plugin's `onDisconnect` (all of them, even if one fails) and closes.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "The session's id.")),
    responses((status = 200, description = "Closed: what each `onDisconnect` did.", body = super::schemas::Closed)),
    extensions(("x-error-codes" = json!(["session_not_found", "session_ended", "session_owner_unavailable"]))))]
async fn close_session(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(answer) = forward_if_elsewhere(&state, &req, &id, || Ok(None)).await? {
        return Ok(answer);
    }
    Ok(HttpResponse::Ok().json(state.sessions.close(&id).await?))
}

/// Body of `POST /api/sessions/{id}/messages`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"message": "Hello!", "metadata": {"channel": "ops"}}))]
struct MessageBody {
    /// What to send upstream (after every plugin's `beforeSend`).
    message: String,
    /// Handed to the plugins and the request template (`${name}`), merged into the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Stream the answer as Server-Sent Events (as `Accept: text/event-stream` does).
    #[serde(default)]
    stream: bool,
}

/// Whether the client asked for a streamed answer in its `Accept` header.
pub(super) fn accepts_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|kind| kind.trim().starts_with("text/event-stream"))
        })
}

/// Send a message.
///
/// Runs it through the pipeline (`beforeSend` in priority order, the connector,
/// `afterReceive`) one message at a time per session. With `stream` (or
/// `Accept: text/event-stream`) the answer comes as Server-Sent Events: `chunk` events
/// (`{index, content}`), then one `done` (the reply) or one `error` (`{code, message,
/// details?}`); a failure before the first chunk is a plain JSON error instead.
#[utoipa::path(post, path = "/api/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "The session's id.")),
    request_body = MessageBody,
    responses((status = 200, description = "The answer: content, merged metadata and each hook's outcome.",
        content(
            (super::schemas::Reply = "application/json"),
            (super::schemas::MessageStreamEvent = "text/event-stream"),
        ))),
    extensions(("x-error-codes" = json!(["session_not_found", "session_busy", "session_ended", "plugin_hook_failed", "upstream_error", "tls_error", "transcript_not_committed", "session_owner_unavailable", "unsupported_media_type"]))))]
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
    let bytes = || {
        serde_json::to_vec(&body)
            .map(|b| Some(b.into()))
            .map_err(|e| ApiError::Internal(e.to_string()))
    };
    if let Some(answer) = forward_if_elsewhere(&state, &req, &id, bytes).await? {
        return Ok(answer);
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

/// `{sessionId, entries}` of `GET /api/sessions/{id}/audit`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditLog {
    session_id: String,
    #[schema(value_type = Vec<super::schemas::AuditEntry>)]
    entries: Vec<crate::store::AuditEntry>,
}

/// A session's audit log.
///
/// What the `audit` plugin recorded, also after the session closed; empty for a live session
/// without it.
#[utoipa::path(get, path = "/api/sessions/{id}/audit", tag = "sessions", operation_id = "audit",
    params(("id" = String, Path, description = "The session's id.")),
    responses((status = 200, description = "The entries, oldest first.", body = AuditLog)),
    extensions(("x-error-codes" = json!(["session_not_found", "internal_error"]))))]
async fn audit(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.audit.entries(&id).await.map_err(internal)? {
        Some(entries) => Ok(HttpResponse::Ok().json(AuditLog {
            session_id: id,
            entries,
        })),
        None => {
            // A live session without the audit plugin (or without messages yet) has no entries.
            state.sessions.describe(&id).await?;
            Ok(HttpResponse::Ok().json(AuditLog {
                session_id: id,
                entries: Vec::new(),
            }))
        }
    }
}

//! The front doors over HTTP: `POST /v1/chat/completions` (OpenAI), `POST /v1/messages`
//! (Anthropic), `GET /v1/models` and `GET /v1/models/{model}`, and their admin endpoints
//! (`/api/keys`, `/api/models`).
//!
//! Owns reading a `/v1` request (the virtual key from `Authorization: Bearer` or `x-api-key`,
//! the conversation from `X-Session-ID` or the request's user, the body), writing the answer
//! whole or as the provider's own event stream, and answering every error in the client's own
//! error shape (status and code from the `ApiError` table). `/v1` is not in the OpenAPI
//! document: the providers document it. Handlers only translate; `frontdoor` acts.

use crate::broker::events::{ConfigKind, ConfigOp};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument;
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::frontdoor::keys::{KeyError, NewKey};
use crate::frontdoor::route::{ModelRoute, Source};
use crate::frontdoor::wire::{self, Dialect, Invalid, StreamEncoder};
use crate::frontdoor::{unix_now, Caller, FrontDoor, FrontdoorError, Streamed};
use crate::session::StreamEvent;

/// The header naming a conversation: requests with the same value share a session (and its
/// plugins' state).
pub const SESSION_HEADER: &str = "x-session-id";
/// The header of every `/v1` answer that ran through a session: its id, for
/// `GET /api/sessions/{id}/messages` and `/audit`.
pub const SESSION_ID_HEADER: &str = "x-switchyard-session";

/// Mounts `/v1` (outside `/api`: clients authenticate with virtual keys, not the admin token).
pub fn mount_v1(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .route("/chat/completions", web::post().to(chat_completions))
            .route("/messages", web::post().to(messages))
            .route("/models", web::get().to(list_v1_models))
            .route("/models/{model}", web::get().to(get_v1_model))
            .default_service(web::to(v1_not_found)),
    );
}

/// The admin endpoints, under `/api`.
pub fn configure(api: &mut super::Mounter<'_>) {
    api.get("/keys", list_keys)
        .post("/keys", create_key)
        .get("/keys/{id}", get_key)
        .delete("/keys/{id}", delete_key)
        .get("/models", list_models)
        .post("/models", create_model)
        .get("/models/{name}", get_model)
        .delete("/models/{name}", delete_model);
}

/// The dialect of a request that does not say by its path: Anthropic's clients send
/// `anthropic-version`.
fn dialect_of(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

/// An error in `dialect`'s shape, with the table's status and code (5xx without internals);
/// a rate limit says when to retry.
fn provider_error(dialect: Dialect, error: &ApiError) -> HttpResponse {
    let code = error.kind();
    if code == super::error::Code::Internal {
        tracing::error!(error = ?error, "Internal error.");
    }
    let body = error.body();
    let message = body["message"].as_str().unwrap_or_default();
    let param = body["details"]["field"].as_str();
    let mut response = HttpResponse::build(code.status());
    if let ApiError::Frontdoor(FrontdoorError::Key(KeyError::RateLimited {
        retry_after_ms, ..
    })) = error
    {
        response.insert_header((
            "Retry-After",
            retry_after_ms.div_ceil(1000).max(1).to_string(),
        ));
    }
    response.json(wire::error_body(
        dialect,
        code.status_u16(),
        code.as_str(),
        message,
        param,
    ))
}

/// The virtual key a request presents: `x-api-key` (Anthropic's clients), else
/// `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_string()).filter(|k| !k.is_empty());
    }
    headers
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_string())
        .filter(|k| !k.is_empty())
}

/// The id of the key the request presents; none when keys are not required and none came.
fn authenticate(frontdoor: &FrontDoor, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match presented_key(headers) {
        Some(key) => Ok(Some(
            frontdoor.keys.verify(&key).map_err(FrontdoorError::from)?,
        )),
        None if frontdoor.require_key => Err(FrontdoorError::Key(KeyError::Missing).into()),
        None => Ok(None),
    }
}

async fn chat_completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(Dialect::OpenAi, state, req, payload).await
}

async fn messages(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    serve(Dialect::Anthropic, state, req, payload).await
}

/// One `/v1` request, in a span with its dialect, model, route, key and session.
async fn serve(
    dialect: Dialect,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let span = tracing::info_span!(
        "frontdoor",
        dialect = dialect.as_str(),
        model = tracing::field::Empty,
        route = tracing::field::Empty,
        key = tracing::field::Empty,
        session = tracing::field::Empty,
        stream = tracing::field::Empty,
    );
    let began = Instant::now();
    async move {
        match answer(dialect, &state, &req, payload).await {
            Ok(response) => {
                tracing::info!(status = response.status().as_u16(), elapsed_ms = began.elapsed().as_millis() as u64, "Front-door request answered.");
                response
            }
            Err(error) => {
                tracing::info!(code = error.code(), %error, "Front-door request refused or failed.");
                provider_error(dialect, &error)
            }
        }
    }
    .instrument(span)
    .await
}

async fn answer(
    dialect: Dialect,
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let frontdoor = state.frontdoor.clone();
    let key = authenticate(&frontdoor, req.headers())?;
    let body = super::read_body(req, payload, state.max_body_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        FrontdoorError::Invalid(Invalid {
            param: None,
            message: format!("the body is not valid JSON: {e}"),
        })
    })?;
    let request = match dialect {
        Dialect::OpenAi => wire::openai_request(&value),
        Dialect::Anthropic => wire::anthropic_request(&value),
    }
    .map_err(FrontdoorError::from)?;
    let span = tracing::Span::current();
    span.record("model", request.model.as_str());
    span.record("stream", request.stream);
    let route = frontdoor.route_for(&request.model)?;
    span.record("route", route.name.as_str());
    if let Some(id) = &key {
        span.record("key", id.as_str());
        frontdoor
            .keys
            .admit(id, &route.name, Instant::now())
            .map_err(FrontdoorError::from)?;
    }
    let conversation = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_owned)
        .or_else(|| request.user.clone());
    let caller = Caller { key, conversation };
    if request.stream {
        let streamed = frontdoor.stream(&request, &route, dialect, &caller).await?;
        span.record("session", streamed.session.as_str());
        return Ok(stream_response(
            dialect, frontdoor, &request, caller, streamed,
        ));
    }
    let (answer, session) = frontdoor
        .complete(&request, &route, dialect, &caller)
        .await?;
    span.record("session", session.as_str());
    if let Some(id) = &caller.key {
        frontdoor.keys.charge(id, answer.usage.total_tokens).await;
    }
    Ok(HttpResponse::Ok()
        .insert_header((SESSION_ID_HEADER, session))
        .json(answer.render(dialect)))
}

/// What the stream writer carries from one event to the next.
struct Writer {
    encoder: StreamEncoder,
    frontdoor: Arc<FrontDoor>,
    key: Option<String>,
    session: String,
    ephemeral: bool,
    ended: bool,
}

impl Writer {
    /// One event's frames; the end charges the key and lets a one-request session go.
    async fn write(&mut self, event: StreamEvent) -> String {
        match event {
            StreamEvent::Chunk { content, .. } => self.encoder.chunk(&content),
            StreamEvent::Done(reply) => {
                let (tool_calls, usage) = wire::reply_parts(&reply["metadata"]);
                if let Some(id) = &self.key {
                    self.frontdoor.keys.charge(id, usage.total_tokens).await;
                }
                self.end();
                self.encoder.finish(&tool_calls, &usage)
            }
            StreamEvent::Failed(error) => {
                self.end();
                let error = ApiError::from(FrontdoorError::from(error));
                let body = error.body();
                self.encoder.error(
                    error.kind().status_u16(),
                    error.code(),
                    body["message"].as_str().unwrap_or_default(),
                )
            }
        }
    }

    fn end(&mut self) {
        self.ended = true;
        if self.ephemeral {
            self.frontdoor.release(self.session.clone());
        }
    }
}

impl Drop for Writer {
    /// A client that left mid-stream still lets its one-request session go.
    fn drop(&mut self) {
        if !self.ended {
            self.end();
        }
    }
}

/// The answer as the provider's own event stream.
fn stream_response(
    dialect: Dialect,
    frontdoor: Arc<FrontDoor>,
    request: &wire::Request,
    caller: Caller,
    streamed: Streamed,
) -> HttpResponse {
    let Streamed {
        session,
        first,
        events,
        ephemeral,
        ..
    } = streamed;
    let mut encoder = StreamEncoder::new(
        dialect,
        &session,
        &request.model,
        unix_now(),
        request.include_usage,
    );
    let head = encoder.start(0);
    let writer = Writer {
        encoder,
        frontdoor,
        key: caller.key,
        session: session.clone(),
        ephemeral,
        ended: false,
    };
    let frames = futures::stream::unfold(
        (Some(head), Some(first), events, writer),
        |(head, next, mut events, mut writer)| async move {
            if let Some(head) = head {
                return Some((
                    Ok::<_, actix_web::Error>(web::Bytes::from(head)),
                    (None, next, events, writer),
                ));
            }
            if writer.ended {
                return None;
            }
            let event = match next {
                Some(event) => event,
                None => match events.recv().await {
                    Some(event) => event,
                    None => {
                        // The session went away without a last event.
                        writer.end();
                        return None;
                    }
                },
            };
            let frame = writer.write(event).await;
            Some((Ok(web::Bytes::from(frame)), (None, None, events, writer)))
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header((SESSION_ID_HEADER, session))
        .streaming(frames)
}

/// The model names a key may use (every route's name when it is not limited).
fn visible_models(state: &AppState, key: Option<&str>) -> Vec<ModelRoute> {
    let allowed = key
        .and_then(|id| state.frontdoor.keys.get(id))
        .map(|k| k.models);
    state
        .frontdoor
        .routes
        .snapshot()
        .into_iter()
        .filter(|r| {
            allowed
                .as_ref()
                .is_none_or(|models| models.is_empty() || models.contains(&r.name))
        })
        .collect()
}

fn model_entry(dialect: Dialect, route: &ModelRoute) -> Value {
    match dialect {
        Dialect::OpenAi => {
            json!({ "id": route.name, "object": "model", "created": 0, "owned_by": "switchyard" })
        }
        Dialect::Anthropic => {
            json!({ "type": "model", "id": route.name, "display_name": route.name,
                                      "created_at": "1970-01-01T00:00:00Z" })
        }
    }
}

/// `GET /v1/models`: the routes the key may use, in the client's dialect.
async fn list_v1_models(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let dialect = dialect_of(req.headers());
    let key = match authenticate(&state.frontdoor, req.headers()) {
        Ok(key) => key,
        Err(error) => return provider_error(dialect, &error),
    };
    let models = visible_models(&state, key.as_deref());
    let data: Vec<Value> = models.iter().map(|r| model_entry(dialect, r)).collect();
    HttpResponse::Ok().json(match dialect {
        Dialect::OpenAi => json!({ "object": "list", "data": data }),
        Dialect::Anthropic => json!({ "data": data, "has_more": false,
            "first_id": models.first().map(|r| r.name.clone()),
            "last_id": models.last().map(|r| r.name.clone()) }),
    })
}

/// `GET /v1/models/{model}`: one route the key may use.
async fn get_v1_model(
    state: web::Data<AppState>,
    req: HttpRequest,
    model: web::Path<String>,
) -> HttpResponse {
    let dialect = dialect_of(req.headers());
    let key = match authenticate(&state.frontdoor, req.headers()) {
        Ok(key) => key,
        Err(error) => return provider_error(dialect, &error),
    };
    let model = model.into_inner();
    match visible_models(&state, key.as_deref())
        .iter()
        .find(|r| r.name == model)
    {
        Some(route) => HttpResponse::Ok().json(model_entry(dialect, route)),
        None => provider_error(dialect, &FrontdoorError::ModelNotFound(model).into()),
    }
}

/// Any other `/v1` path, in the client's error shape.
async fn v1_not_found(req: HttpRequest) -> HttpResponse {
    let error = ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.path().to_string(),
    };
    provider_error(dialect_of(req.headers()), &error)
}

// ---- Admin: virtual keys ----------------------------------------------------------------------

/// A virtual API key: never its text or digest.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // A mirror of `frontdoor::keys::KeyView` for the document.
struct ApiKey {
    id: String,
    name: String,
    /// The key's first characters.
    prefix: String,
    /// Models it may use; empty: every model.
    models: Vec<String>,
    requests_per_minute: Option<u32>,
    token_budget: Option<u64>,
    tokens_used: u64,
    created_at: String,
}

/// A key just made: its text, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedKey {
    #[serde(flatten)]
    #[schema(inline, value_type = ApiKey)]
    view: crate::frontdoor::keys::KeyView,
    /// The key (`sk-sy-…`): send it as `Authorization: Bearer` or `x-api-key`. Not shown again.
    key: String,
}

/// Body of `POST /api/keys`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "ci", "models": ["gpt-4o"], "requestsPerMinute": 60, "tokenBudget": 100000}))]
#[allow(dead_code)] // A mirror of `frontdoor::keys::NewKey` for the document.
struct KeyBody {
    /// 1-128 characters.
    name: String,
    /// Model route names it may use; empty or absent: every model.
    #[serde(default)]
    models: Vec<String>,
    /// Requests per minute (a sliding minute); absent: no limit.
    #[serde(default)]
    #[schema(minimum = 1)]
    requests_per_minute: Option<u32>,
    /// Tokens it may spend in all; absent: no budget.
    #[serde(default)]
    #[schema(minimum = 1)]
    token_budget: Option<u64>,
}

/// `{id, deleted: true}`.
#[derive(Serialize, ToSchema)]
struct Removed {
    id: String,
    deleted: bool,
}

/// Every virtual API key.
#[utoipa::path(get, path = "/api/keys", tag = "frontdoor",
    responses((status = 200, description = "The keys, oldest first (never their text).", body = [ApiKey])),
    extensions(("x-error-codes" = json!([]))))]
async fn list_keys(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.frontdoor.keys.list())
}

/// Create a virtual API key.
///
/// Only its SHA-256 digest is kept; the answer carries its text this once.
#[utoipa::path(post, path = "/api/keys", tag = "frontdoor", request_body = KeyBody,
    responses((status = 201, description = "Created: the key with its text.", body = CreatedKey,
        links(
            ("GetKey" = (operation_id = "get_key", parameters(("id" = "$response.body#/id")))),
            ("DeleteKey" = (operation_id = "delete_key", parameters(("id" = "$response.body#/id")))),
        ))),
    extensions(("x-error-codes" = json!(["invalid_api_key_request", "unsupported_media_type", "internal_error"]))))]
async fn create_key(
    state: web::Data<AppState>,
    body: super::JsonObject<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let (view, key) = state
        .frontdoor
        .keys
        .create(body.into_inner())
        .await
        .map_err(FrontdoorError::from)?;
    tracing::info!(key = %view.id, name = %view.name, "Virtual API key created.");
    super::config_changed(&state, ConfigKind::ApiKey, &view.id, ConfigOp::Upsert);
    Ok(HttpResponse::Created().json(CreatedKey { view, key }))
}

/// One virtual API key.
#[utoipa::path(get, path = "/api/keys/{id}", tag = "frontdoor",
    params(("id" = String, Path, description = "The key's id.")),
    responses((status = 200, description = "The key (never its text).", body = ApiKey)),
    extensions(("x-error-codes" = json!(["api_key_not_found"]))))]
async fn get_key(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let view = state
        .frontdoor
        .keys
        .get(&id)
        .ok_or(FrontdoorError::Key(KeyError::NotFound(id)))?;
    Ok(HttpResponse::Ok().json(view))
}

/// Revoke a virtual API key.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "frontdoor",
    params(("id" = String, Path, description = "The key's id.")),
    responses((status = 200, description = "Revoked.", body = Removed)),
    extensions(("x-error-codes" = json!(["api_key_not_found", "internal_error"]))))]
async fn delete_key(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state
        .frontdoor
        .keys
        .delete(&id)
        .await
        .map_err(FrontdoorError::from)?;
    tracing::info!(key = %id, "Virtual API key revoked.");
    super::config_changed(&state, ConfigKind::ApiKey, &id, ConfigOp::Delete);
    Ok(HttpResponse::Ok().json(Removed { id, deleted: true }))
}

// ---- Admin: model routes ----------------------------------------------------------------------

/// A model route, as `[[models]]` and `POST /api/models` take it.
#[derive(Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "gpt-4o", "aliases": ["gpt"], "inference": {"provider": "openai", "modelId": "gpt-4o"}, "plugins": [{"id": "audit"}], "timeoutMs": 60000}))]
#[allow(dead_code)] // A mirror of `frontdoor::route::ModelRoute` for the document.
struct ModelRouteBody {
    /// The model name clients ask for.
    name: String,
    /// Other names that reach it.
    #[serde(default)]
    aliases: Option<Vec<String>>,
    /// Answers names no route has (one route at most).
    #[serde(default)]
    default: Option<bool>,
    /// A target's id (any connector). Exactly one of `target` and `inference`.
    #[serde(default)]
    target: Option<String>,
    /// A model provider: `{provider, modelId, endpoint?, temperature?, maxOutputTokens?, fallback?}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    inference: Option<Value>,
    /// The plugins its conversations run through: `[{id, config?, priority?, critical?, timeoutMs?}]`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    plugins: Option<Vec<Value>>,
    /// Routes tried in order when it fails before answering.
    #[serde(default)]
    fallbacks: Option<Vec<String>>,
    /// Milliseconds the answer may take (a stream: until its first chunk).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// A model route with where it came from (credentials in its plugins' configs masked).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelRouteView {
    #[serde(flatten)]
    route: ModelRoute,
    source: Source,
}

/// A model route with where it came from (credentials in its plugins' configs masked).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // The document's mirror of `ModelRouteView`.
struct ShownModelRoute {
    name: String,
    aliases: Option<Vec<String>>,
    default: Option<bool>,
    target: Option<String>,
    #[schema(value_type = Option<Object>)]
    inference: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    plugins: Option<Vec<Value>>,
    fallbacks: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    /// `config` (from the settings, read-only) or `api`.
    source: String,
}

/// `{name, deleted: true}`.
#[derive(Serialize, ToSchema)]
struct RouteRemoved {
    name: String,
    deleted: bool,
}

/// Every model route.
#[utoipa::path(get, path = "/api/models", tag = "frontdoor",
    responses((status = 200, description = "The routes: the settings' first, then those made over REST.", body = [ShownModelRoute])),
    extensions(("x-error-codes" = json!([]))))]
async fn list_models(state: web::Data<AppState>) -> HttpResponse {
    let views: Vec<ModelRouteView> = state
        .frontdoor
        .routes
        .views()
        .into_iter()
        .map(|(route, source)| ModelRouteView {
            route: route.masked(),
            source,
        })
        .collect();
    HttpResponse::Ok().json(views)
}

/// Create a model route.
///
/// Checked against every other route (names and aliases unique, fallbacks that exist, one
/// default) and the targets; every problem at once. Persisted with the store on.
#[utoipa::path(post, path = "/api/models", tag = "frontdoor", request_body = ModelRouteBody,
    responses((status = 201, description = "Created.", body = ShownModelRoute,
        links(
            ("GetModel" = (operation_id = "get_model", parameters(("name" = "$response.body#/name")))),
            ("DeleteModel" = (operation_id = "delete_model", parameters(("name" = "$response.body#/name")))),
        ))),
    extensions(("x-error-codes" = json!(["invalid_model_route", "model_route_conflict", "invalid_json", "unsupported_media_type", "internal_error"]))))]
async fn create_model(
    state: web::Data<AppState>,
    body: super::JsonObject<Value>,
) -> Result<HttpResponse, ApiError> {
    let route = state.frontdoor.add_route(body.into_inner()).await?;
    tracing::info!(route = %route.name, "Model route created.");
    super::config_changed(
        &state,
        ConfigKind::ModelRoute,
        &route.name,
        ConfigOp::Upsert,
    );
    Ok(HttpResponse::Created().json(ModelRouteView {
        route: route.masked(),
        source: Source::Api,
    }))
}

/// One model route.
#[utoipa::path(get, path = "/api/models/{name}", tag = "frontdoor",
    params(("name" = String, Path, description = "The route's name.")),
    responses((status = 200, description = "The route.", body = ShownModelRoute)),
    extensions(("x-error-codes" = json!(["model_not_found"]))))]
async fn get_model(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let (route, source) = state
        .frontdoor
        .routes
        .get(&name)
        .ok_or(FrontdoorError::ModelNotFound(name))?;
    Ok(HttpResponse::Ok().json(ModelRouteView {
        route: route.masked(),
        source,
    }))
}

/// Delete a model route.
///
/// Routes from the settings are read-only, and a route another falls back to stays (409).
#[utoipa::path(delete, path = "/api/models/{name}", tag = "frontdoor",
    params(("name" = String, Path, description = "The route's name.")),
    responses((status = 200, description = "Deleted.", body = RouteRemoved)),
    extensions(("x-error-codes" = json!(["model_not_found", "model_route_conflict"]))))]
async fn delete_model(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    state.frontdoor.remove_route(&name).await?;
    tracing::info!(route = %name, "Model route deleted.");
    super::config_changed(&state, ConfigKind::ModelRoute, &name, ConfigOp::Delete);
    Ok(HttpResponse::Ok().json(RouteRemoved {
        name,
        deleted: true,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn keys_come_from_x_api_key_or_a_bearer_token() {
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "sk-a")])).as_deref(),
            Some("sk-a")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer sk-b")])).as_deref(),
            Some("sk-b")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic x")])),
            None
        );
        assert_eq!(
            dialect_of(&headers(&[("anthropic-version", "2023-06-01")])),
            Dialect::Anthropic
        );
    }

    #[test]
    fn errors_answer_in_the_clients_shape_without_internals() {
        let limited: ApiError = FrontdoorError::Key(KeyError::RateLimited {
            limit: 1,
            retry_after_ms: 1500,
        })
        .into();
        let response = provider_error(Dialect::OpenAi, &limited);
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers().get("retry-after").unwrap(), "2");
        let body: Value =
            serde_json::from_slice(&response.into_body().try_into_bytes().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        let internal = ApiError::Internal("db password wrong".into());
        let response = provider_error(Dialect::Anthropic, &internal);
        let body: Value =
            serde_json::from_slice(&response.into_body().try_into_bytes().unwrap()).unwrap();
        assert_eq!(body["error"]["type"], "api_error");
        assert!(!body.to_string().contains("password"));
    }
}

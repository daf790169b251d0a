//! The HTTP API (actix-web). Endpoints, one line each:
//!
//! - `GET /livez` — the process should keep running.
//! - `GET /readyz` — 200 while serving; 503 during start-up and shutdown.
//! - `GET /health` — every actor's state (application/health+json); 503 when failing.
//! - `GET /api/plugins` — every plugin with metadata and state.
//! - `GET /api/plugins/{id}` — one plugin, with its config schema.
//! - `GET /api/plugins/{id}/config-schema` — `{pluginId, pluginName, configSchema}`.
//! - `POST /api/plugins/{id}/validate-config` — `{valid, errors}` for the config in the body.
//! - `GET /api/plugins/order?connector=HTTP_REST` — the pipeline order for a connector type.
//! - `POST /api/plugins/{id}/reload` — reload a script plugin from its files (rollback on failure).
//! - `POST /api/plugins/{id}/restart` — a supervised restart; answers once it runs again.
//! - `POST /api/plugins/{id}/disable`, `/enable` — stop and keep stopped (remembered), or start.
//! - `DELETE /api/plugins/{id}` — unload a script plugin; `POST /api/plugins/{id}/load` — load it.
//! - `GET /api/actors` — the supervision tree.
//! - `GET /api/events/catalogue` — every event the broker carries and who publishes it.
//! - `POST /api/events` — publish a custom event `{event, data}` (host namespaces refused).
//! - `GET /api/events?pattern=plugin.*` — the broker's events as Server-Sent Events;
//!   `GET /api/events/ws?pattern=…` — the same over a WebSocket (an actor per connection).
//! - `GET /api/routes` — plugin routes with their owner; the routes themselves are served under
//!   `/plugins/{id}/…` (or the absolute paths plugins declared) by the dynamic router.
//! - `GET /api/tools`, `GET /api/tools/{name}`, `POST /api/tools/{name}/invoke {params}`.
//! - `GET /api/agents`, `GET /api/agents/{id}`, `POST /api/agents/{id}/chat {message,
//!   sessionId?}` — an agent turn: `{content, sessionId, toolsUsed, usage}`.
//! - `GET /api/targets`, `GET /api/targets/{id}` — upstream targets (credentials masked);
//!   `POST /api/targets`, `PUT /api/targets/{id}`, `DELETE /api/targets/{id}` — manage the
//!   targets created over REST (configured ones are read-only); `POST /api/targets/{id}/test
//!   {message?}` — connect, health-check and send one message.
//! - `POST /api/sessions {targetId, plugins?}`, `GET /api/sessions` (filters, pages),
//!   `GET /api/sessions/{id}`, `DELETE /api/sessions/{id}` — sessions;
//!   `POST /api/sessions/{id}/messages {message, metadata?, stream?}` runs a message through
//!   the pipeline (streamed as Server-Sent Events with `stream` or
//!   `Accept: text/event-stream`); `GET /api/sessions/{id}/messages` — its stored transcript;
//!   `GET /api/sessions/{id}/audit` — what the audit plugin recorded.
//!
//! `/api/*` requires `Authorization: Bearer <admin token>` when one is set. Every response
//! carries `X-Request-ID` (echoed, or generated). Owns routing, middleware and the mapping of
//! extractor errors; does not own the state it shows.

pub mod error;
pub mod events;
pub mod extensions;
pub mod health;
pub mod plugin_routes;
pub mod sessions;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::json;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};

pub use error::ApiError;

use crate::broker::events::CATALOGUE;
use crate::broker::BrokerHandle;
use crate::health::{HealthRegistry, Lifecycle};
use crate::plugin::host::PluginHost;

/// Shared, read-mostly state of the handlers.
pub struct AppState {
    pub health: HealthRegistry,
    pub lifecycle: Arc<Lifecycle>,
    pub broker: BrokerHandle,
    pub plugins: Arc<PluginHost>,
    pub sessions: Arc<crate::session::SessionManager>,
    pub audit: Arc<crate::store::audit::AuditLog>,
    pub store: Option<crate::store::writer::StoreHandle>,
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub ext: Arc<crate::plugin::Extensions>,
    pub agents: Arc<crate::turn::AgentRunner>,
    /// Time a plugin route handler or tool call may take.
    pub call_timeout: std::time::Duration,
    pub streams: events::StreamSettings,
}

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, as set by the request-id middleware.
#[derive(Clone)]
pub struct RequestId(pub String);

/// Mounts every route and the extractor error handlers.
pub fn configure(cfg: &mut web::ServiceConfig, state: web::Data<AppState>) {
    let limit = state.max_body_bytes;
    cfg.app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(error::json_error(limit)),
        )
        .app_data(web::PayloadConfig::default().limit(limit))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .route("/livez", web::get().to(health::livez))
        .route("/readyz", web::get().to(health::readyz))
        .route("/health", web::get().to(health::health))
        .service(
            web::scope("/api")
                .wrap(from_fn(require_admin))
                .route("/plugins", web::get().to(list_plugins))
                .route("/plugins/order", web::get().to(plugin_order))
                .route("/plugins/{id}", web::get().to(get_plugin))
                .route("/plugins/{id}/config-schema", web::get().to(config_schema))
                .route(
                    "/plugins/{id}/validate-config",
                    web::post().to(validate_config),
                )
                .route("/plugins/{id}", web::delete().to(unload_plugin))
                .route("/plugins/{id}/{action}", web::post().to(plugin_action))
                .route("/actors", web::get().to(health::actors))
                .configure(sessions::configure)
                .route("/events/catalogue", web::get().to(event_catalogue))
                .route("/events", web::post().to(publish_event))
                .route("/events", web::get().to(events::sse))
                .route("/events/ws", web::get().to(events::websocket))
                .configure(extensions::configure),
        )
        .default_service(web::to(plugin_routes::dispatch));
}

/// Echoes a well-formed `X-Request-ID` or generates one, and stores it for the span and logs.
pub async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(crate::util::random_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// The root span of each request, carrying its request id.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tracing_actix_web::root_span!(request, request_id = %id)
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Checks the admin bearer token on `/api/*` (constant-time comparison).
async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.admin_token.clone());
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            let response = actix_web::ResponseError::error_response(&ApiError::Unauthorized);
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Metadata of every plugin (as Krawall's list, without config schemas) plus its state.
async fn list_plugins(state: web::Data<AppState>) -> HttpResponse {
    let plugins: Vec<serde_json::Value> = state
        .plugins
        .list()
        .into_iter()
        .map(|view| {
            let mut value = json!(view);
            if let Some(map) = value.as_object_mut() {
                map.remove("configSchema");
            }
            value
        })
        .collect();
    HttpResponse::Ok().json(plugins)
}

/// Plugin `id`'s manifest, or `plugin_not_found`.
fn manifest_or_404(
    state: &AppState,
    id: String,
) -> Result<crate::plugin::PluginManifest, ApiError> {
    state
        .plugins
        .manifest(&id)
        .ok_or(ApiError::PluginNotFound(id))
}

/// `GET /api/plugins/{id}/config-schema`.
async fn config_schema(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let manifest = manifest_or_404(&state, id.into_inner())?;
    Ok(HttpResponse::Ok().json(json!({
        "pluginId": manifest.id,
        "pluginName": manifest.name,
        "configSchema": manifest.config_schema,
    })))
}

/// `POST /api/plugins/{id}/validate-config`: the body is the raw config. Always 200 with
/// `{valid, errors}` for a known plugin, as in Krawall.
async fn validate_config(
    state: web::Data<AppState>,
    id: web::Path<String>,
    config: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let manifest = manifest_or_404(&state, id.into_inner())?;
    let errors = crate::plugin::config::validate(&manifest.config_schema, &config);
    Ok(HttpResponse::Ok().json(json!({ "valid": errors.is_empty(), "errors": errors })))
}

/// Query of `GET /api/plugins/order`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderQuery {
    connector: String,
}

/// `GET /api/plugins/order?connector=HTTP_REST`: the compatible plugins in pipeline order
/// (ascending priority, ties in registration order).
async fn plugin_order(
    state: web::Data<AppState>,
    query: web::Query<OrderQuery>,
) -> Result<HttpResponse, ApiError> {
    let connector = query.into_inner().connector;
    if !crate::plugin::CONNECTOR_TYPES.contains(&connector.as_str()) {
        return Err(ApiError::InvalidQuery(format!(
            "connector '{connector}' is not one of: {}",
            crate::plugin::CONNECTOR_TYPES.join(", ")
        )));
    }
    let order: Vec<serde_json::Value> = state
        .plugins
        .pipeline_order(&connector)
        .into_iter()
        .map(|view| {
            json!({
                "id": view.manifest["id"],
                "name": view.manifest["name"],
                "priority": view.manifest["priority"],
                "state": view.state,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "connector": connector, "plugins": order })))
}

async fn get_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    state
        .plugins
        .get(&id)
        .map(|view| HttpResponse::Ok().json(view))
        .ok_or(ApiError::PluginNotFound(id))
}

async fn event_catalogue() -> HttpResponse {
    let events: Vec<_> = CATALOGUE
        .iter()
        .map(|(name, publisher)| json!({ "event": name, "publishedBy": publisher }))
        .collect();
    HttpResponse::Ok().json(events)
}

/// Body of `POST /api/events`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

async fn publish_event(
    state: web::Data<AppState>,
    body: web::Json<PublishBody>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let event = crate::broker::Event::custom(&body.event, body.data).map_err(|message| {
        ApiError::InvalidEvent {
            event: body.event.clone(),
            message,
        }
    })?;
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    tracing::info!(event = %event.event, request_id = %request_id, "Event published over REST.");
    state.broker.publish(event.clone());
    Ok(HttpResponse::Accepted().json(event))
}

/// `POST /api/plugins/{id}/{reload|restart|disable|enable|load}`.
async fn plugin_action(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let host = &state.plugins;
    let outcome = match action.as_str() {
        "reload" => host.reload(&id).await.map(|(view, old_version)| {
            let new_version = view.manifest["version"].clone();
            json!({ "plugin": view, "reload": { "oldVersion": old_version, "newVersion": new_version } })
        }),
        "restart" => host.restart(&id).await.map(|v| json!({ "plugin": v })),
        "disable" => host.disable(&id).await.map(|v| json!({ "plugin": v })),
        "enable" => host.enable(&id).await.map(|v| json!({ "plugin": v })),
        "load" => host.load(&id).await.map(|v| json!({ "plugin": v })),
        _ => {
            return Err(ApiError::RouteNotFound {
                method: "POST".into(),
                path: req.path().to_string(),
            })
        }
    };
    match outcome {
        Ok(body) => {
            tracing::info!(plugin = %id, action = %action, request_id = %request_id, state = %body["plugin"]["state"], "Plugin action done.");
            Ok(HttpResponse::Ok().json(body))
        }
        Err(error) => {
            tracing::info!(plugin = %id, action = %action, request_id = %request_id, %error, "Plugin action refused or failed.");
            Err(ApiError::from_manage(&id, error))
        }
    }
}

/// `DELETE /api/plugins/{id}`: unload a script plugin (its files stay).
async fn unload_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    state
        .plugins
        .unload(&id)
        .await
        .map_err(|e| ApiError::from_manage(&id, e))?;
    tracing::info!(plugin = %id, request_id = %request_id, "Plugin unloaded over REST.");
    Ok(HttpResponse::Ok().json(json!({ "plugin": { "id": id, "state": "unloaded" } })))
}

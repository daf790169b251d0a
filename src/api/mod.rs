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
//! `/api/*` requires `Authorization: Bearer <admin token>` when one is set, and so do plugin
//! routes unless their plugin marked them public. Every GET route answers HEAD (no body); a
//! core path asked with a method it does not have answers 405 with `Allow`. Every response
//! carries `X-Request-ID` (echoed, or generated). Owns routing, middleware and the mapping of
//! extractor errors; does not own the state it shows.

pub mod error;
pub mod events;
pub mod extensions;
pub mod health;
pub mod plugin_routes;
pub mod sessions;

use std::sync::Arc;

use actix_web::body::{BodySize, BodyStream, EitherBody, MessageBody};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::{
    guard, web, FromRequest, Handler, HttpMessage, HttpRequest, HttpResponse, Responder,
};
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
        .app_data(web::QueryConfig::default().error_handler(error::query_error));
    let mut core = Mounter::new(cfg, "");
    core.get("/livez", health::livez)
        .get("/readyz", health::readyz)
        .get("/health", health::health);
    let mut table = core.finish();
    cfg.service(
        web::scope("/api")
            .wrap(from_fn(require_admin))
            .configure(|cfg| {
                let mut api = Mounter::new(cfg, "/api");
                api.get("/plugins", list_plugins)
                    .get("/plugins/order", plugin_order)
                    .get("/plugins/{id}", get_plugin)
                    .get("/plugins/{id}/config-schema", config_schema)
                    .post("/plugins/{id}/validate-config", validate_config)
                    .delete("/plugins/{id}", unload_plugin)
                    .post("/plugins/{id}/{action}", plugin_action)
                    .get("/actors", health::actors);
                sessions::configure(&mut api);
                api.get("/events/catalogue", event_catalogue)
                    .post("/events", publish_event)
                    .get("/events", events::sse)
                    .get("/events/ws", events::websocket);
                extensions::configure(&mut api);
                table.extend(api.finish());
            }),
    )
    .app_data(web::Data::new(CoreRoutes::new(table)))
    .default_service(web::to(plugin_routes::dispatch));
}

/// A JSON body that must be an object and read as `T`: derived structs would otherwise also
/// take arrays (`["x"]` as `{event: "x"}`). Size, content type and syntax are checked as for
/// `web::Json` (with the same error answers).
pub struct JsonObject<T>(pub T);

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = json.await?.into_inner();
            Ok(JsonObject(object_body(value)?))
        })
    }
}

/// Reads `value` as `T` when it is a JSON object.
pub(crate) fn object_body<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ApiError> {
    use serde_json::Value as V;
    let kind = match &value {
        V::Object(_) => return serde_json::from_value(value).map_err(|e| ApiError::from_serde(&e)),
        V::Array(_) => "an array",
        V::String(_) => "a string",
        V::Number(_) => "a number",
        V::Bool(_) => "a boolean",
        V::Null => "null",
    };
    Err(ApiError::InvalidJson(format!(
        "invalid JSON body: it must be a JSON object, got {kind}"
    )))
}

/// Mounts core routes and records each `(method, pattern)` for [`CoreRoutes`]. A GET route
/// answers HEAD too, as GET would but without a body.
pub struct Mounter<'a> {
    cfg: &'a mut web::ServiceConfig,
    prefix: &'static str,
    routes: Vec<(Method, String)>,
    /// HEAD twins of the GET routes, mounted last so they never slow the other routes down.
    heads: Vec<Mount>,
}

/// Mounts something on a `ServiceConfig`, later.
type Mount = Box<dyn FnOnce(&mut web::ServiceConfig)>;

impl<'a> Mounter<'a> {
    pub fn new(cfg: &'a mut web::ServiceConfig, prefix: &'static str) -> Self {
        Mounter {
            cfg,
            prefix,
            routes: Vec::new(),
            heads: Vec::new(),
        }
    }

    fn add<F, Args>(&mut self, method: Method, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        if method == Method::GET {
            let (at, twin) = (path.to_string(), handler.clone());
            self.heads
                .push(Box::new(move |cfg: &mut web::ServiceConfig| {
                    cfg.service(
                        web::resource(at)
                            .guard(guard::Head())
                            .to(twin)
                            .wrap(from_fn(without_streamed_body)),
                    );
                }));
            self.routes
                .push((Method::HEAD, format!("{}{path}", self.prefix)));
        }
        self.routes
            .push((method.clone(), format!("{}{path}", self.prefix)));
        self.cfg
            .route(path, web::route().method(method).to(handler));
        self
    }

    pub fn get<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::GET, path, handler)
    }

    pub fn post<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::POST, path, handler)
    }

    pub fn put<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::PUT, path, handler)
    }

    pub fn delete<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add(Method::DELETE, path, handler)
    }

    /// Mounts the HEAD twins and returns what was mounted, as `(method, full pattern)`.
    pub fn finish(self) -> Vec<(Method, String)> {
        for head in self.heads {
            head(self.cfg);
        }
        self.routes
    }
}

/// A HEAD answer carries GET's status and headers but no body; a streamed body (the event
/// stream) would never end, so it is dropped here instead of being read and thrown away.
async fn without_streamed_body(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let response = next.call(req).await?;
    if matches!(response.response().body().size(), BodySize::Stream) {
        let empty = futures::stream::empty::<Result<web::Bytes, std::convert::Infallible>>();
        return Ok(response.map_body(|_, _| EitherBody::right(BodyStream::new(empty))));
    }
    Ok(response.map_body(|_, body| EitherBody::left(body)))
}

/// Every core route, by pattern: a request no route answered learns here whether its path
/// exists for other methods (405 with `Allow`) or not at all (404).
pub struct CoreRoutes(Vec<(ResourceDef, Method)>);

impl CoreRoutes {
    pub fn new(routes: Vec<(Method, String)>) -> Self {
        CoreRoutes(
            routes
                .into_iter()
                .map(|(method, path)| (ResourceDef::new(path), method))
                .collect(),
        )
    }

    /// The methods `path` is mounted for (empty when it is no core route), in a fixed order.
    pub fn allowed(&self, path: &str) -> Vec<String> {
        const ORDER: [Method; 6] = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        let found: Vec<&Method> = self
            .0
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .map(|(_, m)| m)
            .collect();
        ORDER
            .iter()
            .filter(|m| found.contains(m))
            .map(|m| m.as_str().to_string())
            .collect()
    }
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

/// Whether `headers` carry `Authorization: Bearer <token>` for the admin token, when one is
/// set (constant-time comparison; the scheme's case does not matter).
pub(crate) fn admitted(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(expected) = token else {
        return true;
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// Checks the admin bearer token on `/api/*`.
async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.admin_token.clone());
    if !admitted(req.headers(), expected.as_deref()) {
        let response = actix_web::ResponseError::error_response(&ApiError::Unauthorized);
        return Ok(req.into_response(response).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The request body, up to `limit` bytes: a larger one (by its `Content-Length`, or as it
/// arrives) is `payload_too_large`, a broken one `invalid_body`.
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut payload = payload;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = futures::StreamExt::next(&mut payload).await {
        let chunk = chunk.map_err(|e| ApiError::from_payload(&e, limit))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
                map.shift_remove("configSchema");
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
    body: JsonObject<PublishBody>,
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

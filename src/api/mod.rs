//! The HTTP API (actix-web). Endpoints, one line each:
//!
//! - `GET /livez` — the process should keep running.
//! - `GET /readyz` — 200 while serving; 503 during start-up and shutdown.
//! - `GET /health` — every actor's state (application/health+json); 503 when failing.
//! - `GET /metrics` — Prometheus text format; behind the admin token when one is set.
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
//!   sessionId?}` — an agent turn: `{content, sessionId, toolsUsed, usage}`;
//!   `POST /api/agents/{id}/resume {resumedBy?}` — resume a paused agent.
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
//! - `GET /api/keys`, `POST /api/keys`, `GET|DELETE /api/keys/{id}` — the front doors' virtual
//!   API keys (the text shown once, a digest kept); `GET /api/models`, `POST /api/models`,
//!   `GET|DELETE /api/models/{name}` — their model routes.
//! - `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic), `GET /v1/models`,
//!   `GET /v1/models/{model}` — the front doors, behind virtual keys, answering in each
//!   provider's own shapes and event streams (`frontdoor`; not in the OpenAPI document).
//! - `GET /api/webhooks`, `POST /api/webhooks {url, events, secret?, description?}` (the
//!   secret shown once), `GET|DELETE /api/webhooks/{id}`, `GET /api/webhooks/{id}/deliveries
//!   ?limit=` (newest first), `POST /api/webhooks/{id}/test` — outbound webhooks (`webhook`).
//! - `GET /api/openapi.json` — the OpenAPI 3.1 document of all of the above, generated from the
//!   handlers (`openapi`); `GET /api/docs` — its reference page (embedded, works offline).
//! - `GET /ui` — the operator dashboard (supervision tree, plugins, targets, sessions, events,
//!   latency), and `GET /ui/{asset}` its files (`ui`): embedded, public, strict CSP; the page
//!   asks for the admin token itself.
//!
//! `/api/*` requires `Authorization: Bearer <admin token>` when one is set (except the two
//! documentation routes, which hold no secrets), and so do plugin routes unless their plugin
//! marked them public. Every GET route answers HEAD (no body); a
//! core path asked with a method it does not have answers 405 with `Allow`. Every response
//! carries `X-Request-ID` (echoed, or generated). Owns routing, middleware and the mapping of
//! extractor errors; does not own the state it shows.

pub mod deadline;
pub mod error;
pub mod events;
pub mod extensions;
pub mod frontdoor;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod plugin_routes;
pub mod schemas;
pub mod sessions;
pub mod ui;
pub mod webhooks;

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
use utoipa::{IntoParams, ToSchema};

pub use error::ApiError;

use crate::broker::events::{ClusterConfigChanged, ConfigKind, ConfigOp, PluginOp, CATALOGUE};
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
    /// Time a request body may take to arrive whole, from its head.
    pub body_timeout: std::time::Duration,
    pub ext: Arc<crate::plugin::Extensions>,
    pub agents: Arc<crate::turn::AgentRunner>,
    /// Time a plugin route handler or tool call may take.
    pub call_timeout: std::time::Duration,
    pub streams: events::StreamSettings,
    /// The OpenAI- and Anthropic-compatible front doors (`/v1`): routes, keys, conversations.
    pub frontdoor: Arc<crate::frontdoor::FrontDoor>,
    /// The event bus across instances (`broker.nats_url`), for `/health`.
    pub cluster: Option<Arc<crate::broker::nats::Link>>,
    /// Outbound webhooks; none with the store off.
    pub webhooks: Option<Arc<crate::webhook::Webhooks>>,
    /// The other instances' plugins (`broker.nats_url`): plugin actions apply on all, and
    /// `GET /api/plugins` shows each instance's state. `None`: a lone instance.
    pub view: Option<ClusterPlugins>,
}

/// The cluster side of the plugin endpoints.
pub struct ClusterPlugins {
    pub view: actix::Addr<crate::plugin::cluster::ClusterView>,
    /// `broker.cluster_answer_ms`.
    pub answer_wait: std::time::Duration,
}

impl ClusterPlugins {
    /// Asks every other instance to do `op` on `plugin_id` too, and waits (bounded) for their
    /// answers. Called once this instance did it: the others follow what succeeded here.
    async fn propagate(
        &self,
        broker: &BrokerHandle,
        op: crate::broker::events::PluginOp,
        plugin_id: &str,
    ) -> Vec<crate::plugin::cluster::InstanceAnswer> {
        use crate::plugin::cluster::{request_id, Expect};
        let instance = broker.instance();
        let request_id = request_id(&instance);
        let Ok(answers) = self
            .view
            .send(Expect {
                request_id: request_id.clone(),
                wait: self.answer_wait,
            })
            .await
        else {
            return Vec::new();
        };
        broker.emit(&crate::broker::events::ClusterPluginCommand {
            op,
            plugin_id: plugin_id.to_string(),
            request_id,
            by: instance.to_string(),
        });
        answers.await.unwrap_or_default()
    }

    /// Adds `instances` (plugin `id` on every instance) to a plugin's JSON.
    fn annotate(
        plugin: &mut serde_json::Value,
        view: &crate::plugin::host::PluginView,
        instance: &str,
        peers: &[crate::plugin::cluster::PeerView],
    ) {
        use crate::plugin::cluster::{brief_of, instances_of};
        let id = view.manifest["id"].as_str().unwrap_or("");
        let instances = instances_of(
            id,
            (instance, &brief_of(view)),
            peers,
            std::time::SystemTime::now(),
        );
        if let Some(map) = plugin.as_object_mut() {
            map.insert("instances".into(), json!(instances));
        }
    }

    async fn peers(&self) -> Vec<crate::plugin::cluster::PeerView> {
        self.view
            .send(crate::plugin::cluster::Peers)
            .await
            .unwrap_or_default()
    }
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
    let statics: Arc<std::collections::HashSet<String>> = Arc::new(
        routes()
            .into_iter()
            .map(|(_, path)| path)
            .filter(|path| !path.contains('{'))
            .collect(),
    );
    let mut core = Mounter::new(cfg, "", statics.clone());
    core_routes(&mut core);
    let mut table = core.finish();
    frontdoor::mount_v1(cfg);
    ui::mount(cfg);
    cfg.service(
        web::scope("/api")
            .wrap(from_fn(require_admin))
            .configure(|cfg| {
                let mut api = Mounter::new(cfg, "/api", statics);
                api_routes(&mut api);
                table.extend(api.finish());
            }),
    )
    .app_data(web::Data::new(CoreRoutes::new(table)))
    .default_service(web::to(plugin_routes::dispatch));
}

/// The routes outside `/api`: the health probes and the metrics.
fn core_routes(core: &mut Mounter<'_>) {
    core.get("/livez", health::livez)
        .get("/readyz", health::readyz)
        .get("/health", health::health)
        .get("/metrics", metrics::metrics);
}

/// The routes under `/api` (paths relative to it).
fn api_routes(api: &mut Mounter<'_>) {
    api.get("/plugins", list_plugins)
        .get("/plugins/order", plugin_order)
        .get("/plugins/{id}", get_plugin)
        .get("/plugins/{id}/config-schema", config_schema)
        .post("/plugins/{id}/validate-config", validate_config)
        .delete("/plugins/{id}", unload_plugin)
        .post("/plugins/{id}/reload", reload_plugin)
        .post("/plugins/{id}/restart", restart_plugin)
        .post("/plugins/{id}/disable", disable_plugin)
        .post("/plugins/{id}/enable", enable_plugin)
        .post("/plugins/{id}/load", load_plugin)
        .get("/actors", health::actors);
    sessions::configure(api);
    api.get("/events/catalogue", event_catalogue)
        .post("/events", publish_event)
        .get("/events", events::sse)
        .get("/events/ws", events::websocket);
    extensions::configure(api);
    frontdoor::configure(api);
    webhooks::configure(api);
    openapi::configure(api);
}

/// Every core route as [`configure`] mounts it, as `(method, full pattern)`, HEAD twins
/// included: the table `CoreRoutes` holds, recorded by the same functions without a server
/// (the OpenAPI document is checked against it).
pub fn routes() -> Vec<(Method, String)> {
    let mut core = Mounter::recording("");
    core_routes(&mut core);
    let mut api = Mounter::recording("/api");
    api_routes(&mut api);
    let mut all = core.finish();
    all.extend(api.finish());
    all
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
/// answers HEAD too, as GET would but without a body. A path without parameters belongs to
/// its own routes only: a route with parameters never answers it (`DELETE
/// /api/plugins/order` is a 405, not the unloading of a plugin called `order`), as in the
/// OpenAPI document, where a concrete path wins over a templated one. A recording mounter
/// ([`routes`]) only records.
pub struct Mounter<'a> {
    cfg: Option<&'a mut web::ServiceConfig>,
    prefix: &'static str,
    /// Every core path without parameters, in full.
    statics: Arc<std::collections::HashSet<String>>,
    routes: Vec<(Method, String)>,
    /// HEAD twins of the GET routes, mounted last so they never slow the other routes down.
    heads: Vec<Mount>,
}

/// Matches requests whose path is none of the static core paths.
#[derive(Clone)]
struct OffStatics(Arc<std::collections::HashSet<String>>);

impl guard::Guard for OffStatics {
    fn check(&self, ctx: &guard::GuardContext<'_>) -> bool {
        !self.0.contains(ctx.head().uri.path())
    }
}

/// Mounts something on a `ServiceConfig`, later.
type Mount = Box<dyn FnOnce(&mut web::ServiceConfig)>;

impl<'a> Mounter<'a> {
    /// Mounts on `cfg`, under `prefix`; `statics` are the core paths without parameters.
    pub fn new(
        cfg: &'a mut web::ServiceConfig,
        prefix: &'static str,
        statics: Arc<std::collections::HashSet<String>>,
    ) -> Self {
        Mounter {
            cfg: Some(cfg),
            prefix,
            statics,
            routes: Vec::new(),
            heads: Vec::new(),
        }
    }

    /// A mounter that records what would be mounted, and mounts nothing.
    fn recording(prefix: &'static str) -> Mounter<'static> {
        Mounter {
            cfg: None,
            prefix,
            statics: Arc::default(),
            routes: Vec::new(),
            heads: Vec::new(),
        }
    }

    /// For a path with parameters: a guard that keeps it off the static core paths.
    fn off_statics(&self, path: &str) -> Option<OffStatics> {
        path.contains('{').then(|| OffStatics(self.statics.clone()))
    }

    fn add<F, Args>(&mut self, method: Method, path: &str, handler: F) -> &mut Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        if method == Method::GET {
            self.routes
                .push((Method::HEAD, format!("{}{path}", self.prefix)));
        }
        self.routes
            .push((method.clone(), format!("{}{path}", self.prefix)));
        let off_statics = self.off_statics(path);
        let Some(cfg) = self.cfg.as_deref_mut() else {
            return self;
        };
        if method == Method::GET {
            let (at, twin, off) = (path.to_string(), handler.clone(), off_statics.clone());
            self.heads
                .push(Box::new(move |cfg: &mut web::ServiceConfig| {
                    let mut head = web::resource(at).guard(guard::Head());
                    if let Some(off) = off {
                        head = head.guard(off);
                    }
                    cfg.service(head.to(twin).wrap(from_fn(without_streamed_body)));
                }));
        }
        let mut route = web::route().method(method);
        if let Some(off) = off_statics {
            route = route.guard(off);
        }
        cfg.route(path, route.to(handler));
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
        if let Some(cfg) = self.cfg {
            for head in self.heads {
                head(cfg);
            }
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
/// exists for other methods (405 with `Allow`) or not at all (404). A path without parameters
/// is only its own routes' (see [`Mounter`]).
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
        let is_static = |def: &ResourceDef| def.pattern().is_some_and(|p| !p.contains('{'));
        let exact = self
            .0
            .iter()
            .any(|(def, _)| is_static(def) && def.is_match(path));
        let found: Vec<&Method> = self
            .0
            .iter()
            .filter(|(def, _)| def.is_match(path) && (!exact || is_static(def)))
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

/// The root span of each request, carrying its request id, in its caller's trace when the
/// request says so.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        // The root span's fields are computed before the span asks whether anyone listens:
        // the route match (a regex per request), the connection info, a `format!`. With no
        // subscriber taking INFO spans here (the same target and level as the span below),
        // none of it is worth building.
        if !tracing::span_enabled!(tracing::Level::INFO) {
            return tracing::Span::none();
        }
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let span = tracing_actix_web::root_span!(request, request_id = %id);
        // A caller's `traceparent` makes this request part of its trace (export on only).
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
        crate::trace_context::adopt_parent(
            &span,
            crate::trace_context::Incoming {
                traceparent: header("traceparent"),
                tracestate: header("tracestate"),
            },
        );
        span
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
/// Tells the other instances of a cluster that a target, API key, model route or webhook
/// changed in the store (they reload it). Only with the store on: without it nothing is
/// shared. Without NATS the event stays here, where nothing listens for it.
pub(crate) fn config_changed(state: &AppState, kind: ConfigKind, id: &str, op: ConfigOp) {
    if state.store.is_some() {
        state.broker.emit(&ClusterConfigChanged {
            kind,
            id: id.to_string(),
            op,
        });
    }
}

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

/// Checks the admin bearer token on `/api/*`, except on the documentation routes
/// ([`openapi::PUBLIC`]): they describe the API and hold no secrets.
async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expected = req
        .app_data::<web::Data<AppState>>()
        .and_then(|s| s.admin_token.clone());
    let public = openapi::PUBLIC.contains(&req.path());
    if !public && !admitted(req.headers(), expected.as_deref()) {
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

/// List every plugin.
///
/// Metadata (as Krawall's list, without config schemas) plus state, generation, restarts,
/// reloads and last error, in registration order. With several instances
/// (`broker.nats_url`), `instances` shows each plugin on every instance as last heard.
#[utoipa::path(get, path = "/api/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin.", body = [schemas::PluginSummary])),
    extensions(("x-error-codes" = json!([]))))]
async fn list_plugins(state: web::Data<AppState>) -> HttpResponse {
    let peers = match &state.view {
        Some(cluster) => Some(cluster.peers().await),
        None => None,
    };
    let instance = state.broker.instance();
    let plugins: Vec<serde_json::Value> = state
        .plugins
        .list()
        .into_iter()
        .map(|view| {
            let mut value = json!(view);
            if let Some(map) = value.as_object_mut() {
                map.shift_remove("configSchema");
            }
            if let Some(peers) = &peers {
                ClusterPlugins::annotate(&mut value, &view, &instance, peers);
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

/// `{pluginId, pluginName, configSchema}`: a plugin's configuration fields, as Krawall's UI
/// renders them.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ConfigSchemaView {
    plugin_id: String,
    plugin_name: String,
    #[schema(value_type = Vec<schemas::ConfigField>)]
    config_schema: Vec<crate::plugin::ConfigField>,
}

/// A plugin's config schema.
#[utoipa::path(get, path = "/api/plugins/{id}/config-schema", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "The plugin's configuration fields.", body = ConfigSchemaView)),
    extensions(("x-error-codes" = json!(["plugin_not_found"]))))]
async fn config_schema(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let manifest = manifest_or_404(&state, id.into_inner())?;
    Ok(HttpResponse::Ok().json(ConfigSchemaView {
        plugin_id: manifest.id,
        plugin_name: manifest.name,
        config_schema: manifest.config_schema,
    }))
}

/// `{valid, errors}`: a config checked against a plugin's config schema.
#[derive(serde::Serialize, ToSchema)]
struct ConfigValidation {
    valid: bool,
    /// Krawall's messages, e.g. `Field 'model' is required`.
    errors: Vec<String>,
}

/// Validate a config for a plugin.
///
/// The body is the raw config, checked with Krawall's exact rules. Always 200 with
/// `{valid, errors}` for a known plugin, as in Krawall (a config that is not an object is
/// reported in `errors`).
#[utoipa::path(post, path = "/api/plugins/{id}/validate-config", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    request_body(content = serde_json::Value, description = "The config to check.",
        example = json!({"model": "gpt-4o", "temperature": 0.2})),
    responses((status = 200, description = "The verdict.", body = ConfigValidation)),
    extensions(("x-error-codes" = json!(["plugin_not_found", "unsupported_media_type"]))))]
async fn validate_config(
    state: web::Data<AppState>,
    id: web::Path<String>,
    config: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let manifest = manifest_or_404(&state, id.into_inner())?;
    let errors = crate::plugin::config::validate(&manifest.config_schema, &config);
    Ok(HttpResponse::Ok().json(ConfigValidation {
        valid: errors.is_empty(),
        errors,
    }))
}

/// Query of `GET /api/plugins/order`.
#[derive(serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OrderQuery {
    /// The connector type.
    #[param(inline, value_type = schemas::ConnectorType)]
    connector: String,
}

/// The pipeline order for a connector type.
#[derive(serde::Serialize, ToSchema)]
struct PipelineOrder {
    connector: String,
    /// Compatible plugins in pipeline order: ascending priority, ties in registration order.
    plugins: Vec<PipelineEntry>,
}

#[derive(serde::Serialize, ToSchema)]
struct PipelineEntry {
    #[schema(value_type = String)]
    id: serde_json::Value,
    #[schema(value_type = String)]
    name: serde_json::Value,
    #[schema(value_type = u32)]
    priority: serde_json::Value,
    #[schema(value_type = schemas::ActorState)]
    state: crate::health::ActorState,
}

/// The pipeline order for a connector type.
///
/// The plugins compatible with the connector, in the order their hooks run.
#[utoipa::path(get, path = "/api/plugins/order", tag = "plugins", params(OrderQuery),
    responses((status = 200, description = "The order.", body = PipelineOrder)),
    extensions(("x-error-codes" = json!([]))))]
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
    let plugins = state
        .plugins
        .pipeline_order(&connector)
        .into_iter()
        .map(|view| PipelineEntry {
            id: view.manifest["id"].clone(),
            name: view.manifest["name"].clone(),
            priority: view.manifest["priority"].clone(),
            state: view.state,
        })
        .collect();
    Ok(HttpResponse::Ok().json(PipelineOrder { connector, plugins }))
}

/// One plugin.
///
/// With its config schema, dependencies and (script plugins) source path, entry file, engine
/// memory and what it registered.
#[utoipa::path(get, path = "/api/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "The plugin.", body = schemas::PluginDetail)),
    extensions(("x-error-codes" = json!(["plugin_not_found"]))))]
async fn get_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let view = state.plugins.get(&id).ok_or(ApiError::PluginNotFound(id))?;
    let mut value = json!(view);
    if let Some(cluster) = &state.view {
        let peers = cluster.peers().await;
        ClusterPlugins::annotate(&mut value, &view, &state.broker.instance(), &peers);
    }
    Ok(HttpResponse::Ok().json(value))
}

/// An event the broker carries, and who publishes it.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CatalogueEntry {
    event: &'static str,
    published_by: &'static str,
}

/// Every event the broker carries.
#[utoipa::path(get, path = "/api/events/catalogue", tag = "events",
    responses((status = 200, description = "The catalogue.", body = [CatalogueEntry])),
    extensions(("x-error-codes" = json!([]))))]
async fn event_catalogue() -> HttpResponse {
    let events: Vec<CatalogueEntry> = CATALOGUE
        .iter()
        .map(|&(event, published_by)| CatalogueEntry {
            event,
            published_by,
        })
        .collect();
    HttpResponse::Ok().json(events)
}

/// Body of `POST /api/events`.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"event": "ops.note", "data": {"text": "deploy started"}}))]
struct PublishBody {
    /// 1-128 letters, digits, `.`, `_` or `-`, not starting or ending with `.`, outside the
    /// host's namespaces (`plugin.`, `agent.`, `tool.`, `session.`), e.g. `ops.note`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    event: String,
    /// The payload (any JSON; null when absent).
    #[serde(default)]
    data: serde_json::Value,
    /// For this instance's subscribers only: not sent to the other instances of a cluster
    /// (`broker.nats_url`).
    #[serde(default)]
    local: bool,
}

/// Publish a custom event.
///
/// Subscribers (plugins, `GET /api/events` streams) receive it in publish order.
#[utoipa::path(post, path = "/api/events", tag = "events", request_body = PublishBody,
    responses((status = 202, description = "Published: the event as it travels.", body = schemas::Event)),
    extensions(("x-error-codes" = json!(["invalid_event", "unsupported_media_type"]))))]
async fn publish_event(
    state: web::Data<AppState>,
    body: JsonObject<PublishBody>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut event = crate::broker::Event::custom(&body.event, body.data).map_err(|message| {
        ApiError::InvalidEvent {
            event: body.event.clone(),
            message,
        }
    })?;
    if body.local {
        event = event.local();
    }
    // Stamped here, so the answer shows the event exactly as subscribers get it.
    event.origin = Some(state.broker.instance());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    tracing::info!(event = %event.event, request_id = %request_id, "Event published over REST.");
    state.broker.publish(event.clone());
    Ok(HttpResponse::Accepted().json(event))
}

/// What an operator action answers: the plugin as it is now on this instance (and, for a
/// reload, the versions); with several instances, what the others answered.
#[derive(serde::Serialize, ToSchema)]
struct ActionOutcome {
    #[schema(value_type = schemas::PluginDetail)]
    plugin: crate::plugin::host::PluginView,
    #[serde(skip_serializing_if = "Option::is_none")]
    reload: Option<ReloadVersions>,
    /// With several instances (`broker.nats_url`): each other instance's answer, in instance
    /// order; those silent for `broker.cluster_answer_ms` are `pending`. Absent on a lone
    /// instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<schemas::InstanceAnswer>>)]
    cluster: Option<Vec<crate::plugin::cluster::InstanceAnswer>>,
}

/// The versions a reload went from and to.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ReloadVersions {
    old_version: String,
    #[schema(value_type = String)]
    new_version: serde_json::Value,
}

/// Runs operator action `op` on plugin `id` and answers with its outcome; once it succeeded
/// here, the other instances of a cluster are asked to do it too.
async fn act(
    state: &AppState,
    id: &str,
    op: crate::broker::events::PluginOp,
    req: &HttpRequest,
    outcome: impl std::future::Future<Output = Result<ActionOutcome, crate::plugin::host::ManageError>>,
) -> Result<HttpResponse, ApiError> {
    let action = op.as_str();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    match outcome.await {
        Ok(mut body) => {
            tracing::info!(plugin = %id, action = %action, request_id = %request_id, state = %body.plugin.state.as_str(), "Plugin action done.");
            if let Some(cluster) = &state.view {
                // The id the plugin has now (a load may name its directory).
                let plugin_id = body.plugin.manifest["id"]
                    .as_str()
                    .unwrap_or(id)
                    .to_string();
                body.cluster = Some(cluster.propagate(&state.broker, op, &plugin_id).await);
            }
            Ok(HttpResponse::Ok().json(body))
        }
        Err(error) => {
            tracing::info!(plugin = %id, action = %action, request_id = %request_id, %error, "Plugin action refused or failed.");
            Err(ApiError::from_manage(id, error))
        }
    }
}

fn plugin_only(view: crate::plugin::host::PluginView) -> ActionOutcome {
    ActionOutcome {
        plugin: view,
        reload: None,
        cluster: None,
    }
}

/// Reload a script plugin from its files.
///
/// The old version keeps serving unless the new one initialises; `reload_failed` says which
/// step failed (`compile`, `validate`, `init`, `start`).
#[utoipa::path(post, path = "/api/plugins/{id}/reload", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "The new version serves.", body = ActionOutcome)),
    extensions(("x-error-codes" = json!(["plugin_not_found", "plugin_state_conflict", "plugin_source_not_found", "reload_failed", "plugin_start_failed", "internal_error"]))))]
async fn reload_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let outcome = async {
        let (view, old_version) = state.plugins.reload(&id).await?;
        let new_version = view.manifest["version"].clone();
        Ok(ActionOutcome {
            plugin: view,
            reload: Some(ReloadVersions {
                old_version,
                new_version,
            }),
            cluster: None,
        })
    };
    act(&state, &id, PluginOp::Reload, &req, outcome).await
}

/// Restart a plugin under supervision.
///
/// Answers once it runs again (a fresh instance: no state survives).
#[utoipa::path(post, path = "/api/plugins/{id}/restart", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "It runs again.", body = ActionOutcome)),
    extensions(("x-error-codes" = json!(["plugin_not_found", "plugin_state_conflict", "plugin_start_failed", "internal_error"]))))]
async fn restart_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let outcome = async { state.plugins.restart(&id).await.map(plugin_only) };
    act(&state, &id, PluginOp::Restart, &req, outcome).await
}

/// Disable a plugin.
///
/// Stops it and keeps it stopped, across restarts of the service too (`data/plugins.json`).
#[utoipa::path(post, path = "/api/plugins/{id}/disable", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "It is disabled.", body = ActionOutcome)),
    extensions(("x-error-codes" = json!(["plugin_not_found", "plugin_state_conflict", "plugin_start_failed", "internal_error"]))))]
async fn disable_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let outcome = async { state.plugins.disable(&id).await.map(plugin_only) };
    act(&state, &id, PluginOp::Disable, &req, outcome).await
}

/// Enable a disabled plugin.
#[utoipa::path(post, path = "/api/plugins/{id}/enable", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "It runs again.", body = ActionOutcome)),
    extensions(("x-error-codes" = json!(["plugin_not_found", "plugin_state_conflict", "plugin_start_failed", "internal_error"]))))]
async fn enable_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let outcome = async { state.plugins.enable(&id).await.map(plugin_only) };
    act(&state, &id, PluginOp::Enable, &req, outcome).await
}

/// Load a script plugin from its files.
///
/// `id` is the plugin's directory under `plugins/core` or the id it declares; the plugin is
/// added and started.
#[utoipa::path(post, path = "/api/plugins/{id}/load", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's directory or declared id.")),
    responses((status = 200, description = "It is loaded and runs.", body = ActionOutcome)),
    extensions(("x-error-codes" = json!(["plugin_state_conflict", "plugin_source_not_found", "plugin_start_failed", "internal_error"]))))]
async fn load_plugin(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let outcome = async { state.plugins.load(&id).await.map(plugin_only) };
    act(&state, &id, PluginOp::Load, &req, outcome).await
}

/// `{plugin: {id, state: "unloaded"}}`.
#[derive(serde::Serialize, ToSchema)]
struct Unloaded {
    plugin: UnloadedPlugin,
    /// With several instances (`broker.nats_url`): each other instance's answer, as for the
    /// other plugin actions. Absent on a lone instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<schemas::InstanceAnswer>>)]
    cluster: Option<Vec<crate::plugin::cluster::InstanceAnswer>>,
}

#[derive(serde::Serialize, ToSchema)]
struct UnloadedPlugin {
    id: String,
    /// Always `unloaded`.
    #[schema(inline)]
    state: UnloadedState,
}

#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum UnloadedState {
    Unloaded,
}

/// Unload a script plugin.
///
/// Its files stay; `POST /api/plugins/{id}/load` loads it again. Native plugins cannot be
/// unloaded (409).
#[utoipa::path(delete, path = "/api/plugins/{id}", tag = "plugins",
    params(("id" = String, Path, description = "The plugin's id.")),
    responses((status = 200, description = "It is unloaded.", body = Unloaded)),
    extensions(("x-error-codes" = json!(["plugin_not_found", "plugin_state_conflict", "internal_error"]))))]
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
    let cluster = match &state.view {
        Some(cluster) => Some(
            cluster
                .propagate(&state.broker, PluginOp::Unload, &id)
                .await,
        ),
        None => None,
    };
    Ok(HttpResponse::Ok().json(Unloaded {
        plugin: UnloadedPlugin {
            id,
            state: UnloadedState::Unloaded,
        },
        cluster,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a request through the tracing middleware ran in a real (enabled) span.
    async fn in_a_span() -> bool {
        let app = actix_web::test::init_service(
            actix_web::App::new()
                .wrap(tracing_actix_web::TracingLogger::<RequestSpan>::new())
                .route(
                    "/s/{id}",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .body((!tracing::Span::current().is_disabled()).to_string())
                    }),
                ),
        )
        .await;
        let request = actix_web::test::TestRequest::get().uri("/s/1").to_request();
        actix_web::test::call_and_read_body(&app, request).await == "true"
    }

    #[actix_web::test]
    async fn the_root_span_is_built_only_for_a_listening_subscriber() {
        let unheard = tracing::subscriber::NoSubscriber::new();
        let guard = tracing::subscriber::set_default(unheard);
        assert!(!in_a_span().await);
        drop(guard);
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        assert!(in_a_span().await);
        drop(guard);
    }
}

//! The dynamic router's HTTP side: every request no core route matched comes here.
//!
//! Owns turning an actix request into the JSON request a plugin handler sees (params, query,
//! lower-case headers, JSON or text body), sending it to the owning plugin's actor under the
//! call timeout, and turning the handler's answer back into HTTP. A handler that throws gets a
//! JSON 500 naming the plugin; a plugin that is restarting gets 503. With `server.admin_token`
//! set, a route the plugin did not mark `public` needs `Authorization: Bearer <token>` (401
//! otherwise). Also answers, in the JSON error shape, whatever reaches no route: 405 with
//! `Allow` for a core path asked with another method, 404 for the rest. Does not own the route
//! table (`route`) nor the handlers (the plugins).

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::{ApiError, AppState, RequestId};
use crate::plugin::call::{self, CallError};
use crate::route::{Lookup, RouteBody, RouteRequest};

/// Headers a plugin may not set: the gateway owns framing and the request id.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "x-request-id",
];

/// Answers every request no core route took: a plugin route, or the JSON error saying why
/// not (404, 405 with `Allow` for core and plugin paths alike, 401 for a protected plugin
/// route without the admin token). Nothing of the body is read before the request is known
/// to go to a handler, so an unknown method (`CONNECT`) or a refused request is answered at
/// once, and a body over `server.max_body_bytes` is refused with 413 as it arrives.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let admitted = || super::admitted(req.headers(), state.admin_token.as_deref());
    let (route, params) = match state.ext.routes.lookup(req.method().as_str(), req.path()) {
        Lookup::Found { route, params } => (route, params),
        Lookup::MethodNotAllowed { allowed, public } => {
            if !public && !admitted() {
                return Err(ApiError::Unauthorized);
            }
            return Err(ApiError::MethodNotAllowed {
                method: req.method().to_string(),
                path: req.path().to_string(),
                allowed: allowed.iter().map(|m| m.as_str().to_string()).collect(),
            });
        }
        Lookup::NotFound => return Err(not_routed(&req, &state)),
    };
    if !route.public && !admitted() {
        return Err(ApiError::Unauthorized);
    }
    let body = super::read_body(&req, payload, state.max_body_bytes).await?;
    let plugin = route.plugin.clone();
    let is_json = req.content_type().split(';').next().is_some_and(|t| {
        t.trim().eq_ignore_ascii_case("application/json") || t.trim().ends_with("+json")
    });
    let body = if body.is_empty() {
        serde_json::Value::Null
    } else if is_json {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: {e}")))?
    } else {
        serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
    };
    let request = RouteRequest {
        method: req.method().to_string(),
        path: req.path().to_string(),
        mount_path: mount_path(&route, req.path()),
        route_path: route.declared.clone(),
        params,
        query: web::Query::<std::collections::BTreeMap<String, String>>::from_query(
            req.query_string(),
        )
        .map(|q| q.into_inner())
        .unwrap_or_default(),
        headers: req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
    };
    let answer = call::route(
        &state.plugins,
        &plugin,
        route.handler,
        request,
        state.call_timeout,
    )
    .await
    .map_err(|e| match e {
        CallError::NotRunning(_) => ApiError::PluginUnavailable(plugin.clone()),
        e => {
            tracing::warn!(plugin = %plugin, route = %route.path, error = %e, "Plugin route handler failed.");
            ApiError::PluginRouteFailed {
                plugin: plugin.clone(),
                message: e.to_string(),
            }
        }
    })?;
    let status = StatusCode::from_u16(answer.status).map_err(|_| ApiError::PluginRouteFailed {
        plugin: plugin.clone(),
        message: format!("status {} is not an HTTP status", answer.status),
    })?;
    let mut response = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.insert_header((name, value));
        }
    }
    let has_type = answer.headers.contains_key("content-type");
    Ok(match answer.body {
        RouteBody::Empty => response.finish(),
        RouteBody::Json(value) => {
            if !has_type {
                response.insert_header((CONTENT_TYPE, "application/json"));
            }
            response.body(value.to_string())
        }
        RouteBody::Text(text) => {
            if !has_type {
                response.insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"));
            }
            response.body(text)
        }
    })
}

/// Why a request that matched no route at all is refused: its path is a core route's, for
/// other methods (405); or it is under `/plugins/` and, with an admin token set, the caller
/// has none (401: without it, nobody learns which plugin routes exist); or it is unknown (404).
fn not_routed(req: &HttpRequest, state: &AppState) -> ApiError {
    let allowed = req
        .app_data::<web::Data<super::CoreRoutes>>()
        .map(|core| core.allowed(req.path()))
        .unwrap_or_default();
    if !allowed.is_empty() {
        return ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: req.path().to_string(),
            allowed,
        };
    }
    let under_plugins = req
        .path()
        .strip_prefix(crate::route::PLUGIN_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if under_plugins && !super::admitted(req.headers(), state.admin_token.as_deref()) {
        return ApiError::Unauthorized;
    }
    ApiError::RouteNotFound {
        method: req.method().to_string(),
        path: req.path().to_string(),
    }
}

/// The path below the plugin's mount point (`/plugins/<id>`), which `app.use(prefix)` matches.
fn mount_path(route: &crate::route::Route, path: &str) -> String {
    if route.absolute {
        return path.trim_end_matches('/').to_string();
    }
    let mount = format!("{}/{}", crate::route::PLUGIN_PREFIX, route.plugin);
    path.strip_prefix(&mount)
        .unwrap_or(path)
        .trim_end_matches('/')
        .to_string()
}

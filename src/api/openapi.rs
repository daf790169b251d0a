//! The OpenAPI 3.1 document of the HTTP API, generated from the code, and its reference page.
//!
//! Owns `GET /api/openapi.json` and `GET /api/docs`. The document is built once, from the
//! handlers' `#[utoipa::path]` attributes (path, parameters, request body, success responses,
//! and the error codes each operation can answer, listed in its `x-error-codes` extension)
//! and the types' `ToSchema`/`IntoParams` derives, then completed here: the `Error` schema,
//! whose `code` enumerates [`Code::ALL`] (the error table in `error`); every operation's error
//! responses, one per status, from its codes plus the ones implied by its shape (`unauthorized`
//! behind the admin token, `invalid_path` with path parameters, `invalid_query` with a query,
//! the body errors with a body); the bearer scheme; and `X-Request-ID` on every response. The
//! reference page is one HTML file embedded in the binary (`docs.html`, vanilla JS, no assets
//! from anywhere else) that renders the document. Both routes are public, even with an admin
//! token set: they describe the API and hold no secrets. Does not own the handlers, the
//! response types of other modules (`schemas` mirrors them) nor the error table.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::error::Code;
use super::Mounter;

/// The routes under `/api` that need no admin token.
pub const PUBLIC: &[&str] = &["/api/openapi.json", "/api/docs"];

/// The routes outside `/api` that need the admin token all the same (`api::metrics` says why).
pub const GUARDED: &[&str] = &["/metrics"];

/// The reference page: one self-contained HTML file.
const PAGE: &str = include_str!("docs.html");

/// The keys of a path item that are operations.
pub const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The security scheme's name in the document.
const SCHEME: &str = "adminToken";

/// Codes every operation with a request body can answer (size, syntax, a body that breaks or
/// stalls on the way).
const BODY_CODES: &[Code] = &[
    Code::InvalidJson,
    Code::InvalidBody,
    Code::PayloadTooLarge,
    Code::RequestBodyTimeout,
];

pub fn configure(api: &mut Mounter<'_>) {
    api.get("/openapi.json", openapi_json)
        .get("/docs", reference_page);
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard",
        description = include_str!("openapi.md"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::health::livez,
        super::health::readyz,
        super::health::health,
        super::metrics::metrics,
        super::list_plugins,
        super::plugin_order,
        super::get_plugin,
        super::config_schema,
        super::validate_config,
        super::reload_plugin,
        super::restart_plugin,
        super::disable_plugin,
        super::enable_plugin,
        super::load_plugin,
        super::unload_plugin,
        super::health::actors,
        super::sessions::list_targets,
        super::sessions::create_target,
        super::sessions::get_target,
        super::sessions::update_target,
        super::sessions::delete_target,
        super::sessions::test_target,
        super::sessions::create_session,
        super::sessions::list_sessions,
        super::sessions::get_session,
        super::sessions::close_session,
        super::sessions::send_message,
        super::sessions::transcript,
        super::sessions::audit,
        super::event_catalogue,
        super::publish_event,
        super::events::sse,
        super::events::websocket,
        super::extensions::list_routes,
        super::extensions::list_tools,
        super::extensions::get_tool,
        super::extensions::invoke_tool,
        super::extensions::list_agents,
        super::extensions::get_agent,
        super::extensions::chat,
        super::extensions::chat_stream,
        super::extensions::resume,
        super::frontdoor::list_keys,
        super::frontdoor::create_key,
        super::frontdoor::get_key,
        super::frontdoor::delete_key,
        super::frontdoor::list_models,
        super::frontdoor::create_model,
        super::frontdoor::get_model,
        super::frontdoor::delete_model,
        super::webhooks::list_webhooks,
        super::webhooks::create_webhook,
        super::webhooks::get_webhook,
        super::webhooks::delete_webhook,
        super::webhooks::deliveries,
        super::webhooks::test_webhook,
        openapi_json,
        reference_page,
    ),
    tags(
        (name = "health", description = "Probes and the health of every actor. Never behind the admin token."),
        (name = "plugins", description = "Plugins: metadata, state, config schemas, pipeline order, and operator actions (reload, restart, disable, enable, unload, load)."),
        (name = "actors", description = "The supervision tree."),
        (name = "targets", description = "Upstream endpoints sessions talk to (credentials masked in every answer)."),
        (name = "sessions", description = "Sessions: a target and a pipeline of connector plugins; messages, transcripts, audit."),
        (name = "events", description = "The broker's events: the catalogue, publishing, and the streams (SSE, WebSocket)."),
        (name = "extensions", description = "What plugins register: routes, tools and agents."),
        (name = "frontdoor", description = "The OpenAI- and Anthropic-compatible front doors (`/v1`, documented by the providers): their virtual API keys and model routes."),
        (name = "webhooks", description = "Outbound webhooks: bus events POSTed to receivers, signed with HMAC-SHA256, retried with backoff; their delivery history."),
        (name = "docs", description = "This document and its reference page. Never behind the admin token."),
    ),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document as served, built once.
fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_json::to_string(document()).unwrap_or_default())
}

/// What utoipa generated, completed: version, security, the `Error` schema and every
/// operation's error responses.
fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    doc["security"] = json!([{ SCHEME: [] }]);
    doc["x-error-codes"] = Value::Array(
        Code::ALL
            .iter()
            .map(|c| json!({ "code": c.as_str(), "status": c.status_u16(), "description": c.meaning() }))
            .collect(),
    );
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut);
    if let Some(components) = components {
        components.insert(
            "securitySchemes".into(),
            json!({ SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "The admin token (`server.admin_token` or `SWITCHYARD_ADMIN_TOKEN`). Only needed when one is set.",
            } }),
        );
        components.insert(
            "headers".into(),
            json!({ "X-Request-ID": {
                "description": "The request's id: the one sent (1-128 visible ASCII characters), echoed, or a generated one.",
                "required": true,
                "schema": { "type": "string", "minLength": 1, "maxLength": 128 },
            } }),
        );
        let schemas = components
            .entry("schemas")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(schemas) = schemas {
            schemas.insert("Error".into(), error_schema());
        }
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if METHODS.contains(&method.as_str()) {
                    complete_operation(path, operation);
                }
            }
        }
    }
    fix_link_keys(&mut doc);
    tidy(&mut doc);
    doc
}

/// Two things utoipa 5.5 writes that readers trip on, straightened everywhere: unsigned formats
/// in kebab case (`u-int64` for `uint64`), and an inlined enum with a description or default
/// wrapped in a `oneOf` of one schema (merged into its holder).
fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(format)) = map.get_mut("format") {
                if let Some(bits) = format.strip_prefix("u-int") {
                    *format = format!("uint{bits}");
                }
            }
            let single = map
                .get("oneOf")
                .and_then(Value::as_array)
                .filter(|variants| variants.len() == 1 && !map.contains_key("type"))
                .and_then(|variants| variants[0].as_object().cloned());
            if let Some(inner) = single.filter(|inner| !inner.contains_key("$ref")) {
                map.shift_remove("oneOf");
                for (key, v) in inner {
                    map.entry(key).or_insert(v);
                }
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// utoipa 5.5 writes a link's fields in snake case (`operation_id`); OpenAPI spells them in
/// camel case (`operationId`, `operationRef`, `requestBody`).
fn fix_link_keys(doc: &mut Value) {
    let operations = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.iter_mut())
        .filter(|(method, _)| METHODS.contains(&method.as_str()))
        .map(|(_, operation)| operation);
    for operation in operations {
        let links = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|responses| responses.values_mut())
            .filter_map(|response| response.get_mut("links"))
            .filter_map(Value::as_object_mut)
            .flat_map(|links| links.values_mut())
            .filter_map(Value::as_object_mut);
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.shift_remove(from) {
                    link.insert(to.into(), value);
                }
            }
        }
    }
}

/// `{code, message, details?}`, the body of every error.
fn error_schema() -> Value {
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "description": "Every error answers this shape, with a stable snake_case `code` (the table is `x-error-codes` at the top of this document).",
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string", "enum": codes, "description": "Stable; see `x-error-codes`." },
            "message": { "type": "string", "description": "For people; may change." },
            "details": { "type": "object", "description": "What the error concerns: the plugin, target, session, field, allowed methods, limits… (the code's description names them)." },
        },
        "additionalProperties": false,
        "example": { "code": "plugin_not_found", "message": "plugin 'ghost' is not registered", "details": { "plugin": "ghost" } },
    })
}

/// Whether the operation at `path` is answered without the admin token.
fn is_public(path: &str) -> bool {
    (!path.starts_with("/api/") && !GUARDED.contains(&path)) || PUBLIC.contains(&path)
}

/// The codes an operation can answer: those it lists and those its shape implies.
pub fn error_codes(path: &str, operation: &Value) -> Vec<Code> {
    let mut codes: Vec<Code> = Vec::new();
    let mut add = |code: Code| {
        if !codes.contains(&code) {
            codes.push(code);
        }
    };
    if !is_public(path) {
        add(Code::Unauthorized);
    }
    let params = operation["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if params.iter().any(|p| p["in"] == "path") {
        add(Code::InvalidPath);
    }
    if params.iter().any(|p| p["in"] == "query") {
        add(Code::InvalidQuery);
    }
    if operation.get("requestBody").is_some() {
        BODY_CODES.iter().copied().for_each(&mut add);
    }
    for listed in operation["x-error-codes"].as_array().into_iter().flatten() {
        if let Some(code) = Code::ALL
            .iter()
            .find(|c| Some(c.as_str()) == listed.as_str())
        {
            add(*code);
        }
    }
    codes
}

/// An optional body (`request_body = Option<T>`) is one that may be left out, not one that may
/// be `null` (which is refused like any body that is not an object): utoipa writes it as
/// `oneOf: [null, T]`; this makes it `T`, not required.
fn optional_body(operation: &mut Value) {
    let Some(body) = operation.get_mut("requestBody") else {
        return;
    };
    let mut optional = false;
    for media in body["content"].as_object_mut().into_iter().flatten() {
        let schema = &mut media.1["schema"];
        let variants = schema["oneOf"].as_array().cloned().unwrap_or_default();
        if let [first, second] = variants.as_slice() {
            if first == &json!({ "type": "null" }) {
                *schema = second.clone();
                optional = true;
            }
        }
    }
    if optional {
        body["required"] = json!(false);
    }
}

/// Adds an operation's security, error responses and the request id header.
fn complete_operation(path: &str, operation: &mut Value) {
    optional_body(operation);
    let codes = error_codes(path, operation);
    if is_public(path) {
        operation["security"] = json!([]);
    }
    operation["x-error-codes"] = json!(codes.iter().map(|c| c.as_str()).collect::<Vec<_>>());
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in codes {
        by_status.entry(code.status_u16()).or_default().push(code);
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, codes) in by_status {
        let key = status.to_string();
        // A status the handler documents itself (a probe's 503) keeps its own description.
        if responses.contains_key(&key) {
            continue;
        }
        responses.insert(key, error_response(status, &codes));
    }
    for response in responses.values_mut() {
        if let Some(response) = response.as_object_mut() {
            let headers = response
                .entry("headers")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(headers) = headers {
                headers.insert(
                    "X-Request-ID".into(),
                    json!({ "$ref": "#/components/headers/X-Request-ID" }),
                );
            }
        }
    }
}

/// The response of one error status: the `Error` shape with `code` narrowed to `codes`, one
/// example per code.
fn error_response(status: u16, codes: &[Code]) -> Value {
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), c.meaning()))
        .collect::<Vec<_>>()
        .join("\n\n");
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let examples: Map<String, Value> = codes
        .iter()
        .map(|c| {
            (
                c.as_str().to_string(),
                json!({ "summary": c.meaning(), "value": { "code": c.as_str(), "message": c.meaning() } }),
            )
        })
        .collect();
    let mut response = json!({
        "description": description,
        "content": { "application/json": {
            "schema": {
                "allOf": [{ "$ref": "#/components/schemas/Error" }],
                "properties": { "code": { "enum": names } },
            },
            "examples": examples,
        } },
    });
    if status == 401 {
        response["headers"] = json!({ "WWW-Authenticate": {
            "description": "`Bearer`.",
            "required": true,
            "schema": { "type": "string" },
        } });
    }
    response
}

/// The schema of a target's connector type: one of `connector::SUPPORTED_CONNECTORS`.
pub fn supported_connectors() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(crate::connector::SUPPORTED_CONNECTORS.iter().copied()))
        .build()
}

/// This document.
///
/// The OpenAPI 3.1 description of the whole HTTP API, generated from the code. Public.
#[utoipa::path(get, path = "/api/openapi.json", tag = "docs",
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object)),
    extensions(("x-error-codes" = json!([]))))]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache"))
        .body(document_text())
}

/// The reference page.
///
/// Renders this document (operations by tag, parameters, bodies, responses, the error codes),
/// with a filter. Embedded in the binary; works offline. Public.
#[utoipa::path(get, path = "/api/docs", tag = "docs",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    extensions(("x-error-codes" = json!([]))))]
async fn reference_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        // The page runs its own inline script and fetches only this origin.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ))
        .body(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_every_code_is_in_the_error_schema() {
        let doc = document();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        let codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap();
        assert_eq!(codes.len(), Code::ALL.len());
        for code in Code::ALL {
            assert!(codes.contains(&json!(code.as_str())), "{code:?}");
        }
    }

    /// What utoipa 5.5 writes wrongly is straightened: link fields in camel case, unsigned
    /// formats spelled `uint64`, optional bodies absent rather than `null`.
    #[test]
    fn utoipa_quirks_are_straightened() {
        let text = serde_json::to_string(document()).unwrap();
        for wrong in ["\"operation_id\"", "\"u-int", "\"request_body\""] {
            assert!(!text.contains(wrong), "{wrong} is still in the document");
        }
        let link =
            &document()["paths"]["/api/targets"]["post"]["responses"]["201"]["links"]["GetTarget"];
        assert_eq!(link["operationId"], "get_target");
        let test = &document()["paths"]["/api/targets/{id}/test"]["post"]["requestBody"];
        assert_eq!(test["required"], false);
        assert_eq!(
            test["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/TestBody"
        );
    }

    /// The connector types the document offers are the code's.
    #[test]
    fn connector_types_are_the_codes() {
        let order = &document()["paths"]["/api/plugins/order"]["get"]["parameters"][0];
        assert_eq!(order["name"], "connector");
        assert_eq!(order["required"], true);
        let mut offered: Vec<&str> = order["schema"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let mut known = crate::plugin::CONNECTOR_TYPES.to_vec();
        let mut supported = crate::connector::SUPPORTED_CONNECTORS.to_vec();
        offered.sort_unstable();
        known.sort_unstable();
        supported.sort_unstable();
        assert_eq!(offered, known);
        assert_eq!(offered, supported);
    }

    /// Each operation lists its codes (`x-error-codes`, even when empty), each a known code,
    /// and answers a documented response for each of their statuses.
    #[test]
    fn every_operation_lists_known_codes_and_documents_their_statuses() {
        let generated = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, item) in generated["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let listed = operation["x-error-codes"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path} lists no x-error-codes"));
                for code in listed {
                    assert!(
                        Code::ALL.iter().any(|c| Some(c.as_str()) == code.as_str()),
                        "{method} {path}: unknown code {code}"
                    );
                }
            }
        }
        for (path, item) in document()["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for code in error_codes(path, operation) {
                    let status = code.status_u16().to_string();
                    assert!(
                        operation["responses"].get(&status).is_some(),
                        "{method} {path}: {} has no {status} response",
                        code.as_str()
                    );
                }
            }
        }
    }
}

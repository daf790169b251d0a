//! What an adversarial client found: bodies of the wrong JSON type, targets created without an
//! id, error answers off the documented shape (plugin routes, the WebSocket endpoint, wrong
//! and unknown methods, HEAD), and plugin routes that ignored the admin token.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use switchyard::plugin::{Plugin, PluginContext, PluginError, PluginFactory, PluginManifest};
use switchyard::route::{Method, RouteBody, RouteOptions, RouteRequest, RouteResponse};
use switchyard::test_util::Recorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Dirs, TestApp};

/// A plugin with a protected route (`GET /plugins/gate/admin`), a public absolute webhook
/// (`POST /hooks/gate`) and a public relative upload (`POST /plugins/gate/upload`).
struct Gate;

#[async_trait(?Send)]
impl Plugin for Gate {
    fn manifest(&self) -> PluginManifest {
        PluginManifest::new("gate", semver::Version::new(1, 0, 0))
    }

    async fn init(&self, ctx: &PluginContext) -> Result<(), PluginError> {
        ctx.mount(Method::Get, "/admin", false)?;
        let webhook = RouteOptions {
            absolute: true,
            public: true,
        };
        ctx.mount_with(Method::Post, "/hooks/gate", webhook)?;
        let upload = RouteOptions {
            absolute: false,
            public: true,
        };
        ctx.mount_with(Method::Post, "/upload", upload)?;
        Ok(())
    }

    async fn route(&self, handler: u32, req: RouteRequest) -> Result<RouteResponse, PluginError> {
        let size = match &req.body {
            Value::String(text) => text.len(),
            Value::Null => 0,
            other => other.to_string().len(),
        };
        Ok(RouteResponse {
            status: 200,
            headers: Default::default(),
            body: RouteBody::Json(json!({ "handler": handler, "bodyBytes": size })),
        })
    }
}

fn gate() -> PluginFactory {
    Arc::new(|| Arc::new(Gate) as Arc<dyn Plugin>)
}

/// Sends `method path` with an optional bearer token and raw body; status, headers, bytes.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client().request(method, app.url(path));
    if let Some(token) = token {
        req = req.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut resp = match body {
        Some((content_type, bytes)) => req
            .insert_header(("content-type", content_type))
            .send_body(bytes)
            .await
            .unwrap_or_else(|e| panic!("{path}: the connection failed: {e}")),
        None => req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: the connection failed: {e}")),
    };
    let bytes = resp.body().limit(1 << 22).await.expect("body");
    (
        resp.status().as_u16(),
        resp.headers().clone(),
        bytes.to_vec(),
    )
}

/// The JSON error shape: `{code, message, details?}`, served as `application/json`.
fn assert_error_shape(what: &str, headers: &awc::http::header::HeaderMap, bytes: &[u8]) -> Value {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}, body {:?}",
        String::from_utf8_lossy(bytes)
    );
    let body: Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(bytes)
        )
    });
    assert!(
        body["code"].as_str().is_some_and(
            |c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        ),
        "{what}: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    body
}

/// Writes `request` on a fresh connection and reads the answer's head and body (by its
/// `Content-Length`); panics when nothing complete comes within 5 s.
async fn raw(app: &TestApp, request: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return (head, text[end + 4..end + 4 + length].to_string());
                }
            }
            if n == 0 {
                panic!("the connection closed before a whole answer: {text:?}");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("no answer within 5 s to {request:?}"))
}

fn target(id: Option<&str>) -> Value {
    let mut t = json!({
        "name": "Echo", "connectorType": "HTTP_REST", "endpoint": "http://127.0.0.1:9/chat",
        "requestTemplate": { "messagePath": "message" },
        "responseTemplate": { "responsePath": "reply" }
    });
    if let Some(id) = id {
        t["id"] = json!(id);
    }
    t
}

#[actix_web::test]
async fn bodies_of_the_wrong_json_type_get_an_error_not_a_dropped_connection() {
    let app = TestApp::spawn(&[], vec![], Recorder::new()).await;
    let (status, created) = app.post_json("/api/targets", target(Some("t1"))).await;
    assert_eq!(status, 201, "{created}");

    for body in ["[]", "\"x\"", "123", "true", "[1, 2]"] {
        for (method, path) in [("PUT", "/api/targets/t1"), ("POST", "/api/targets")] {
            let what = format!("{method} {path} with {body}");
            let (status, headers, bytes) = send(
                &app,
                method,
                path,
                None,
                Some(("application/json", body.into())),
            )
            .await;
            assert_eq!(status, 400, "{what}: {:?}", String::from_utf8_lossy(&bytes));
            let error = assert_error_shape(&what, &headers, &bytes);
            assert_eq!(error["code"], "invalid_target", "{what}");
            let problems = error["details"]["errors"].to_string();
            assert!(
                problems.contains("must be a JSON object"),
                "{what}: {problems}"
            );
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("must be a JSON object"),
                "{what}: the message names the problem: {error}"
            );
        }
    }
    // The target is untouched and the server still answers.
    let (status, kept) = app.get("/api/targets/t1").await;
    assert_eq!((status, kept["name"].as_str()), (200, Some("Echo")));

    // Every endpoint that reads a JSON body answers such bodies with the error shape.
    let posts = [
        ("PUT", "/api/targets/t1"),
        ("POST", "/api/targets/t1/test"),
        ("POST", "/api/sessions"),
        ("POST", "/api/sessions/nope/messages"),
        ("POST", "/api/events"),
        ("POST", "/api/plugins/nope/validate-config"),
        ("POST", "/api/tools/nope/invoke"),
        ("POST", "/api/agents/nope/chat"),
    ];
    for body in [
        "[]",
        "\"x\"",
        "123",
        "true",
        "null",
        "[{}]",
        "{\"plugins\": [[]]}",
    ] {
        for (method, path) in posts {
            let what = format!("{method} {path} with {body}");
            let (status, headers, bytes) = send(
                &app,
                method,
                path,
                None,
                Some(("application/json", body.into())),
            )
            .await;
            assert!(
                (400..500).contains(&status),
                "{what}: {status} {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_error_shape(&what, &headers, &bytes);
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_target_created_without_an_id_gets_one_and_every_problem_is_listed_at_once() {
    let app = TestApp::spawn(&[], vec![], Recorder::new()).await;
    let (status, first) = app.post_json("/api/targets", target(None)).await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().expect("a generated id").to_string();
    assert!(!id.is_empty());
    let (status, second) = app.post_json("/api/targets", target(None)).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["id"], first["id"], "each create gets a fresh id");
    let (status, read) = app.get(&format!("/api/targets/{id}")).await;
    assert_eq!((status, read["name"].as_str()), (200, Some("Echo")));
    // `null` counts as absent.
    let mut with_null = target(None);
    with_null["id"] = Value::Null;
    let (status, third) = app.post_json("/api/targets", with_null).await;
    assert_eq!(status, 201, "{third}");
    assert!(third["id"].as_str().is_some_and(|i| !i.is_empty()));

    // Mistyped, missing, unknown and invalid fields: every one named with its path, in our
    // words (never serde's `missing field`/`invalid type`), in one answer.
    let (status, body) = app
        .post_json(
            "/api/targets",
            json!({
                "name": 5, "connectorType": "FAX", "endpoint": "nope", "timeoutMs": "soon",
                "authType": "SECRET", "requestTemplate": { "messagePath": 1 },
                "plugins": [{ "config": {} }], "colour": "red"
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_target");
    let errors: Vec<String> = body["details"]["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    for expected in [
        "target.name: must be a string",
        "target.connectorType: 'FAX' is not supported",
        "target.endpoint: 'nope' is not an http(s) URL",
        "target.timeoutMs: must be a whole number",
        "target.authType: must be one of NONE, BEARER_TOKEN, API_KEY, BASIC_AUTH, CUSTOM_HEADER",
        "target.requestTemplate.messagePath: must be a string",
        "target.responseTemplate: is required",
        "target.plugins[0].id: is required",
        "target.colour: unknown field",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected:?} in {errors:#?}"
        );
    }
    assert!(
        !errors.iter().any(|e| e.starts_with("target.id")),
        "the id is generated: {errors:#?}"
    );
    for serde_words in ["missing field", "invalid type", "unknown variant"] {
        assert!(
            !errors.iter().any(|e| e.contains(serde_words)),
            "{serde_words}: {errors:#?}"
        );
    }

    // A PUT names the target by its path; another id in the body is one problem among all.
    let (status, headers, bytes) = send(
        &app,
        "PUT",
        &format!("/api/targets/{id}"),
        None,
        Some((
            "application/json",
            json!({ "id": "other", "name": "", "connectorType": "HTTP_REST", "endpoint": "http://x",
                    "requestTemplate": { "messagePath": "m" }, "responseTemplate": { "responsePath": 2 } })
            .to_string()
            .into_bytes(),
        )),
    )
    .await;
    assert_eq!(status, 400);
    let body = assert_error_shape("PUT with problems", &headers, &bytes);
    let errors = body["details"]["errors"].to_string();
    for expected in [
        "target.id: 'other' does not match the path's",
        "target.name: must not be empty",
        "target.responseTemplate.responsePath: must be a string",
    ] {
        assert!(errors.contains(expected), "{expected} in {errors}");
    }
    app.stop().await;
}

/// The service with the `gate` plugin and a 1 KiB body limit.
async fn gated() -> TestApp {
    TestApp::spawn(
        &[("SWITCHYARD__SERVER__MAX_BODY_BYTES", "1024")],
        vec![gate()],
        Recorder::new(),
    )
    .await
}

#[actix_web::test]
async fn plugin_route_body_errors_have_the_json_error_shape() {
    let app = gated().await;

    // A plugin route's body over the limit: by Content-Length, and streamed without one.
    let (status, headers, bytes) = send(
        &app,
        "POST",
        "/plugins/gate/upload",
        None,
        Some(("text/plain", vec![b'a'; 4096])),
    )
    .await;
    assert_eq!(status, 413);
    let error = assert_error_shape("oversized plugin body", &headers, &bytes);
    assert_eq!(error["code"], "payload_too_large");
    assert_eq!(error["details"]["limitBytes"], 1024);
    let chunks = futures::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(actix_web::web::Bytes::from(vec![b'b'; 512]))),
    );
    let mut resp = app
        .client()
        .post(app.url("/plugins/gate/upload"))
        .insert_header(("content-type", "text/plain"))
        .send_stream(chunks)
        .await
        .expect("an answer, not a dropped connection");
    let bytes = resp.body().await.unwrap_or_default();
    assert_eq!(resp.status().as_u16(), 413);
    assert_error_shape("oversized streamed plugin body", resp.headers(), &bytes);
    // Within the limit it reaches the handler.
    let (status, _, bytes) = send(
        &app,
        "POST",
        "/plugins/gate/upload",
        None,
        Some(("text/plain", vec![b'a'; 100])),
    )
    .await;
    assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&bytes));

    // A body that breaks on the way (a chunk size that is no number).
    let (head, body) = raw(
        &app,
        "POST /plugins/gate/upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}\n\n{body}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_websocket_endpoint_without_an_upgrade_says_so_in_json() {
    let app = gated().await;
    let (status, headers, bytes) = send(&app, "GET", "/api/events/ws", None, None).await;
    assert_eq!(status, 400);
    let error = assert_error_shape("/api/events/ws without upgrade", &headers, &bytes);
    assert_eq!(error["code"], "websocket_upgrade_required");
    assert!(
        error["message"].as_str().unwrap().contains("WebSocket"),
        "{error}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_wrong_method_gets_405_with_allow_on_core_and_plugin_routes() {
    let app = gated().await;
    for (method, path, allow) in [
        ("PUT", "/livez", "GET, HEAD"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/api/tools", "GET, HEAD"),
        ("PATCH", "/api/targets/x", "GET, HEAD, PUT, DELETE"),
        ("GET", "/api/sessions/x/audit/", "x"),
        ("PUT", "/api/events", "GET, HEAD, POST"),
        ("GET", "/api/plugins/x/validate-config", "POST"),
    ] {
        let what = format!("{method} {path}");
        let (status, headers, bytes) = send(&app, method, path, None, None).await;
        if allow == "x" {
            assert_eq!(status, 404, "{what}");
            continue;
        }
        assert_eq!(status, 405, "{what}: {:?}", String::from_utf8_lossy(&bytes));
        assert_eq!(
            headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{what}"
        );
        let error = assert_error_shape(&what, &headers, &bytes);
        assert_eq!(error["code"], "method_not_allowed", "{what}");
    }
    // A wrong method on a plugin route, too.
    let (status, headers, _) = send(&app, "GET", "/hooks/gate", None, None).await;
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").unwrap(), "POST");
    app.stop().await;
}

#[actix_web::test]
async fn head_answers_like_get_without_a_body_on_every_get_core_route() {
    let app = gated().await;
    for path in [
        "/livez",
        "/readyz",
        "/health",
        "/api/plugins",
        "/api/plugins/gate",
        "/api/plugins/order?connector=HTTP_REST",
        "/api/plugins/gate/config-schema",
        "/api/actors",
        "/api/targets",
        "/api/sessions",
        "/api/events/catalogue",
        "/api/routes",
        "/api/tools",
        "/api/agents",
        "/api/targets/ghost",
    ] {
        let (get_status, get_headers, get_body) = send(&app, "GET", path, None, None).await;
        let (status, headers, body) = send(&app, "HEAD", path, None, None).await;
        assert_eq!(status, get_status, "HEAD {path}");
        assert!(body.is_empty(), "HEAD {path} has no body");
        assert_eq!(
            headers.get("content-type"),
            get_headers.get("content-type"),
            "HEAD {path}"
        );
        // Bodies that do not change between two calls (no uptimes in them).
        let stable = [
            "/livez",
            "/api/events/catalogue",
            "/api/routes",
            "/api/tools",
        ];
        if let (true, Some(length)) = (stable.contains(&path), headers.get("content-length")) {
            assert_eq!(
                length.to_str().unwrap(),
                get_body.len().to_string(),
                "HEAD {path}"
            );
        }
    }
    for path in ["/api/events", "/api/events/ws"] {
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            app.client().head(app.url(path)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("HEAD {path} answers at once"))
        .unwrap();
        let expected = if path == "/api/events" { 200 } else { 400 };
        assert_eq!(resp.status().as_u16(), expected, "HEAD {path}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn unknown_methods_get_a_prompt_json_answer() {
    let app = gated().await;
    // A CONNECT never hangs waiting for its tunnel's end.
    let (head, body) = raw(&app, "CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "route_not_found"
    );
    let (head, body) = raw(&app, "CONNECT /livez HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "method_not_allowed"
    );
    let (head, body) = raw(
        &app,
        "PURGE /plugins/gate/admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "method_not_allowed"
    );
    app.stop().await;
}

#[actix_web::test]
async fn plugin_routes_need_the_admin_token_unless_marked_public() {
    let dirs = Dirs::new();
    dirs.write(
        "scripted",
        "index.js",
        r#"export default {
  name: "scripted", version: "1.0.0",
  init(ctx) {
    ctx.app.get("/secret", (req, res) => res.json({ secret: true }));
    ctx.app.post("/hooks/scripted", (req, res) => res.json({ ok: true }), { absolute: true });
    ctx.app.post("/webhooks/scripted", (req, res) => res.json({ hook: true }), { absolute: true, public: true });
  },
};
"#,
    );
    let app = TestApp::spawn_in(dirs, &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")], vec![gate()]).await;
    let token = Some("s3cret");

    // Protected (the default): 401 with `WWW-Authenticate: Bearer` and the JSON shape.
    for (method, path) in [
        ("GET", "/plugins/gate/admin"),
        ("GET", "/plugins/scripted/secret"),
        ("POST", "/hooks/scripted"),
        // Nobody without the token learns which routes exist or what they allow.
        ("GET", "/plugins/gate/nothing-here"),
        ("DELETE", "/plugins/gate/admin"),
    ] {
        let what = format!("{method} {path} without the token");
        for bad in [None, Some("wrong")] {
            let (status, headers, bytes) = send(&app, method, path, bad, None).await;
            assert_eq!(status, 401, "{what} ({bad:?})");
            assert_eq!(
                headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{what}"
            );
            let error = assert_error_shape(&what, &headers, &bytes);
            assert_eq!(error["code"], "unauthorized");
        }
    }
    let (status, _, bytes) = send(&app, "GET", "/plugins/gate/admin", token, None).await;
    assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&bytes));
    let (status, _, _) = send(&app, "GET", "/plugins/scripted/secret", token, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(&app, "POST", "/hooks/scripted", token, None).await;
    assert_eq!(status, 200);
    // A script's webhook marked public answers without the token.
    let (status, _, bytes) = send(&app, "POST", "/webhooks/scripted", None, None).await;
    assert_eq!(status, 200, "{:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        send(&app, "GET", "/plugins/gate/nothing-here", token, None)
            .await
            .0,
        404
    );
    assert_eq!(
        send(&app, "DELETE", "/plugins/gate/admin", token, None)
            .await
            .0,
        405
    );

    // Public: answered with or without the token.
    for bad in [None, Some("wrong"), token] {
        let (status, _, bytes) = send(
            &app,
            "POST",
            "/hooks/gate",
            bad,
            Some(("application/json", b"{\"event\":\"paid\"}".to_vec())),
        )
        .await;
        assert_eq!(
            status,
            200,
            "{bad:?}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(answer["handler"], 1);
    }
    // A public path still tells its methods without the token.
    let (status, headers, _) = send(&app, "GET", "/hooks/gate", None, None).await;
    assert_eq!(
        (status, headers.get("allow").unwrap().to_str().unwrap()),
        (405, "POST")
    );

    // `GET /api/routes` shows which routes are public.
    let (status, _, bytes) = send(&app, "GET", "/api/routes", token, None).await;
    assert_eq!(status, 200);
    let routes: Value = serde_json::from_slice(&bytes).unwrap();
    let public_of = |path: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .map(|r| r["public"].clone())
            .unwrap_or_else(|| panic!("{path} in {routes}"))
    };
    assert_eq!(public_of("/plugins/gate/admin"), json!(false));
    assert_eq!(public_of("/hooks/gate"), json!(true));
    assert_eq!(public_of("/plugins/gate/upload"), json!(true));
    assert_eq!(public_of("/plugins/scripted/secret"), json!(false));
    assert_eq!(public_of("/hooks/scripted"), json!(false));
    app.stop().await;
}

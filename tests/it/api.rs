//! The HTTP surface: error shape, request ids, admin token, body limit, the actor tree.

use serde_json::{json, Value};
use switchyard::test_util::{fault_plugin, Fault, Recorder};

use crate::common::TestApp;

async fn post(app: &TestApp, path: &str, body: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = app
        .client()
        .post(app.url(path))
        .insert_header(("content-type", "application/json"));
    if let Some(token) = auth {
        req = req.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut resp = req.send_body(body.to_string()).await.expect("request");
    let bytes = resp.body().limit(1 << 22).await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[actix_web::test]
async fn errors_share_one_json_shape_and_request_ids_are_echoed() {
    let rec = Recorder::new();
    let app = TestApp::spawn(
        &[("SWITCHYARD__SERVER__MAX_BODY_BYTES", "256")],
        vec![],
        rec,
    )
    .await;

    let (status, body) = app.get("/no/such/route").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"code": "route_not_found", "message": "no route for GET /no/such/route"})
    );

    let (status, body) = app.get("/api/plugins/ghost").await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "plugin_not_found");
    assert_eq!(body["details"], json!({"plugin": "ghost"}));

    let (status, body) = post(&app, "/api/events", "{not json", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_json");
    let (status, body) = post(&app, "/api/events", r#"{"event": "x", "extra": 1}"#, None).await;
    assert_eq!(status, 400, "unknown fields are refused: {body}");
    assert!(body["message"].as_str().unwrap().contains("extra"));

    let big = format!(r#"{{"event": "x", "data": "{}"}}"#, "a".repeat(1000));
    let (status, body) = post(&app, "/api/events", &big, None).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(body["details"]["limitBytes"], 256);

    let (status, body) = post(&app, "/api/events", r#"{"event": "plugin.loaded"}"#, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_event");
    assert_eq!(body["details"]["field"], "event");

    // X-Request-ID: echoed when given, generated otherwise.
    let resp = app
        .client()
        .get(app.url("/livez"))
        .insert_header(("x-request-id", "req-42"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "req-42");
    let resp = app.client().get(app.url("/livez")).send().await.unwrap();
    let generated = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(generated.len(), 32);
    app.stop().await;
}

#[actix_web::test]
async fn published_events_reach_subscribers() {
    let rec = Recorder::new();
    let mut app = TestApp::spawn(&[], vec![], rec).await;
    let (status, body) = post(
        &app,
        "/api/events",
        r#"{"event": "ops.note", "data": {"n": 1}}"#,
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["event"], "ops.note");
    let event = app.next_event("ops.note").await;
    assert_eq!(event.data, json!({"n": 1}));
    app.stop().await;
}

#[actix_web::test]
async fn the_admin_token_guards_api_but_not_health() {
    let rec = Recorder::new();
    let app = TestApp::spawn(&[("SWITCHYARD_ADMIN_TOKEN", "s3cret")], vec![], rec).await;
    let (status, body) = app.get("/api/plugins").await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
    let resp = app
        .client()
        .get(app.url("/api/plugins"))
        .insert_header(("authorization", "Bearer wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = app
        .client()
        .get(app.url("/api/plugins"))
        .insert_header(("authorization", "Bearer s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _) = post(&app, "/api/events", r#"{"event": "a.b"}"#, Some("s3cret")).await;
    assert_eq!(status, 202);
    for open in ["/livez", "/readyz", "/health"] {
        assert_eq!(app.get(open).await.0, 200, "{open}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn health_and_actors_show_the_supervision_tree() {
    let rec = Recorder::new();
    let plugins = vec![fault_plugin("alpha", Fault::Ok, rec.clone())];
    let app = TestApp::spawn(&[], plugins, rec).await;
    let resp = app.client().get(app.url("/health")).send().await.unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/health+json"
    );
    assert_eq!(resp.headers().get("cache-control").unwrap(), "no-store");
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "pass");
    for path in [
        "root",
        "root/broker",
        "root/plugins",
        "root/plugins/alpha",
        "root/sessions",
    ] {
        let check = &health["checks"][format!("actor:{path}")][0];
        assert_eq!(check["state"], "running", "{path}");
        assert!(check["uptimeS"].as_f64().is_some(), "{path}");
    }
    let alpha = &health["checks"]["actor:root/plugins/alpha"][0];
    assert_eq!(alpha["mailbox"]["capacity"], 256);
    assert!(alpha["mailbox"]["highWater"].as_u64().unwrap() >= 1);
    assert_eq!(alpha["generation"], 1);
    assert_eq!(
        health["checks"]["broker:events"][0]["observedValue"]["publishDropped"],
        0
    );

    let (_, tree) = app.get("/api/actors").await;
    assert_eq!(tree["id"], "root");
    let children: Vec<&str> = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(children, ["broker", "plugins", "sessions", "store"]);
    let plugins = &tree["children"][1]["children"];
    assert_eq!(plugins[0]["id"], "alpha");
    assert_eq!(plugins[0]["state"], "running");

    let (_, catalogue) = app.get("/api/events/catalogue").await;
    let names: Vec<&str> = catalogue
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"plugin.failed"));
    app.stop().await;
}

//! `GET /metrics` against the real service: the figures move as a user would see them move
//! (per plugin and hook, sessions, messages per target), no session id ever becomes a label,
//! the admin token guards it, and Prometheus's own `promtool check metrics` accepts the text.
//! Without `promtool` (Debian's `prometheus` package, installed by `.ci/run`) the test fails.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;
use crate::sessions::{open, say, start, target};

/// A script connector plugin with `hooks` (JavaScript members of its definition).
fn plugin(id: &str, hooks: &str) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "{id}", name: "{id}", description: "", version: "1.0.0",
  compatibleConnectors: ["HTTP_REST"],
  {hooks}
}});
"#
    )
}

/// The text of a scrape (asserting it is one).
pub(crate) async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut req = app.client().get(app.url("/metrics"));
    if let Some(token) = token {
        req = req.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut resp = req.send().await.expect("request");
    let body = resp.body().await.expect("body");
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    if resp.status() == 200 {
        let kind = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(kind, "text/plain; version=0.0.4; charset=utf-8");
    }
    (resp.status().as_u16(), text)
}

/// The value of `series` (name and labels exactly as exposed), 0 when it is absent.
pub(crate) fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Pipes `text` through `promtool check metrics`; fails loudly when promtool is missing.
fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required (Debian's `prometheus` package; .ci/run installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_web::test]
async fn a_scrape_counts_hooks_sessions_and_messages_and_promtool_accepts_it() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write(
        "counted",
        "index.js",
        &plugin(
            "counted",
            "async beforeSend(message, metadata, ctx) { return { message, metadata: {} }; },",
        ),
    );
    dirs.write(
        "flaky",
        "index.js",
        &plugin(
            "flaky",
            "async beforeSend(message, metadata, ctx) { throw new Error('flaky broke'); },",
        ),
    );
    dirs.write(
        "broken",
        "index.js",
        &plugin(
            "broken",
            "async initialize(ctx) { throw new Error('no start'); },",
        ),
    );
    let app = start(dirs, json!([target("chat", &mock, "/chat")]), &[], "[]").await;
    let (status, before) = scrape(&app, None).await;
    assert_eq!(status, 200, "{before}");
    let calls = r#"switchyard_plugin_hook_calls_total{plugin="counted",hook="beforeSend"}"#;
    assert_eq!(value(&before, calls), 0.0);

    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "counted" }, { "id": "flaky" }] }),
    )
    .await;
    for n in 0..3 {
        let (status, reply) = say(&app, &id, &format!("hello {n}")).await;
        assert_eq!(status, 200, "{reply}");
    }
    // A session whose plugin cannot initialise fails to open.
    let (status, body) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "chat", "plugins": [{ "id": "broken" }] }),
        )
        .await;
    assert_eq!(status, 502, "{body}");

    let (_, text) = scrape(&app, None).await;
    let flaky = r#"{plugin="flaky",hook="beforeSend"}"#;
    // Exactly one call per message, whichever path (inline or actor) the hook took.
    assert_eq!(value(&text, calls), 3.0, "{text}");
    assert_eq!(
        value(
            &text,
            r#"switchyard_plugin_hook_duration_seconds_count{plugin="counted",hook="beforeSend"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            r#"switchyard_plugin_hook_failures_total{plugin="counted",hook="beforeSend"}"#
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            &format!("switchyard_plugin_hook_failures_total{flaky}")
        ),
        3.0
    );
    // Not critical: each failure was skipped and the message went on.
    assert_eq!(
        value(
            &text,
            &format!("switchyard_plugin_hook_bypassed_total{flaky}")
        ),
        3.0
    );
    // `counted` has no afterReceive: it is not called for one, so no such series exists.
    assert!(
        !text.contains(r#"{plugin="counted",hook="afterReceive"}"#),
        "{text}"
    );
    assert_eq!(value(&text, "switchyard_sessions_created_total"), 1.0);
    assert_eq!(value(&text, "switchyard_sessions_failed_total"), 1.0);
    assert_eq!(value(&text, "switchyard_sessions_open"), 1.0);
    let chat = r#"{target="chat",connector="HTTP_REST"}"#;
    assert_eq!(
        value(&text, &format!("switchyard_messages_total{chat}")),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &format!("switchyard_upstream_duration_seconds_count{chat}")
        ),
        3.0
    );
    assert_eq!(mock.requests("/chat").len(), 3);
    // Scrape-time figures: the plugin actors and the broker, the process.
    assert_eq!(
        value(
            &text,
            r#"switchyard_actor_state{actor="root/plugins/counted",role="plugin",state="running"}"#
        ),
        1.0,
        "{text}"
    );
    assert!(value(&text, "switchyard_broker_published_total") > 0.0);
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    assert!(value(&text, "process_open_fds") > 0.0);
    // No session gets a series of its own.
    assert!(!text.contains(&id), "a session id in the scrape:\n{text}");

    promtool_accepts(&text);
    app.stop().await;
}

#[actix_web::test]
async fn the_admin_token_guards_the_metrics_when_one_is_set() {
    let app = TestApp::spawn_in(Dirs::new(), &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")], vec![]).await;
    let (status, body) = scrape(&app, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = scrape(&app, Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, text) = scrape(&app, Some("s3cret")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE switchyard_sessions_open gauge"),
        "{text}"
    );
    // The probes stay open: an orchestrator has no token.
    assert_eq!(app.get("/livez").await.0, 200);
    app.stop().await;
}

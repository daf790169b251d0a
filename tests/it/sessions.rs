//! Sessions against a real mock upstream: the pipeline's order and chaining, the built-in
//! plugins, validation, the failure policy, timeouts, expiry, and the REST surface.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;

/// A target on the mock at `path` reading `reply`.
pub(crate) fn target(id: &str, mock: &MockUpstream, path: &str) -> Value {
    json!({
        "id": id, "name": id, "connectorType": "HTTP_REST", "endpoint": mock.url(path),
        "requestTemplate": { "messagePath": "message" },
        "responseTemplate": { "responsePath": "reply", "errorPath": "error.message" },
        "timeoutMs": 2000
    })
}

/// Writes `targets.toml` and returns the env that points the service at it.
fn targets_env(dirs: &Dirs, targets: Value) -> (&'static str, String) {
    let path = dirs.root.path().join("targets.toml");
    std::fs::write(
        &path,
        toml::to_string(&json!({ "targets": targets })).unwrap(),
    )
    .unwrap();
    (
        "SWITCHYARD__SESSIONS__TARGETS_FILE",
        path.display().to_string(),
    )
}

/// A script connector plugin that tags messages and answers and counts in its state.
fn tagger(id: &str, priority: u32, extra: &str) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "{id}", name: "{id}", description: "tags", version: "1.0.0", priority: {priority},
  compatibleConnectors: ["HTTP_REST"],
  async initialize(ctx) {{ ctx.state.count = 0; }},
  async beforeSend(message, metadata, ctx) {{
    ctx.state.count += 1;
    return {{ message: message + " [{id}]", metadata: {{ "{id}": ctx.state.count, seen: Object.keys(metadata).filter(k => k.length === 2 && k.startsWith("t")).sort().join(",") }} }};
  }},
  async afterReceive(response, ctx) {{ return {{ response: {{ ...response, content: response.content + " <{id}>" }} }}; }},
  {extra}
}});
"#
    )
}

pub(crate) async fn start(
    dirs: Arc<Dirs>,
    mock_targets: Value,
    env: &[(&str, &str)],
    natives: &str,
) -> TestApp {
    let (key, file) = targets_env(&dirs, mock_targets);
    let mut all: Vec<(&str, &str)> = vec![
        (key, file.as_str()),
        ("SWITCHYARD__PLUGINS__NATIVE", natives),
    ];
    all.extend_from_slice(env);
    TestApp::spawn_in(dirs, &all, vec![]).await
}

pub(crate) async fn open(app: &TestApp, body: Value) -> String {
    let (status, session) = app.post_json("/api/sessions", body).await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_string()
}

pub(crate) async fn say(app: &TestApp, id: &str, message: &str) -> (u16, Value) {
    app.post_json(
        &format!("/api/sessions/{id}/messages"),
        json!({ "message": message }),
    )
    .await
}

/// A message to session `id` is refused as `session_not_found`: the session is gone.
pub(crate) async fn assert_gone(app: &TestApp, id: &str) {
    let (status, body) = say(app, id, "late").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("session_not_found")),
        "session {id}: {body}"
    );
}

#[actix_web::test]
async fn messages_pass_the_plugins_in_priority_order_with_ties_in_registration_order() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("a-first", "index.js", &tagger("ta", 100, ""));
    dirs.write("b-second", "index.js", &tagger("tb", 100, ""));
    dirs.write("c-early", "index.js", &tagger("tc", 10, ""));
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &[], "[]").await;

    let (_, order) = app.get("/api/plugins/order?connector=HTTP_REST").await;
    let ids: Vec<&str> = order["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    // Each is known by the id it registers; ties keep discovery order (a-first, b-second).
    assert_eq!(ids, ["tc", "ta", "tb"]);

    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "tb" }, { "id": "ta" }, { "id": "tc" }] }),
    )
    .await;
    let created = app.next_event("session.created").await;
    assert_eq!(created.data["sessionId"], id.as_str());
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    // beforeSend: tc (10), then ta and tb (100, in registration order: ta's module first).
    assert_eq!(
        mock.requests("/chat")[0].body["message"],
        "hi [tc] [ta] [tb]"
    );
    // afterReceive runs in the same order (Krawall's documented diagram).
    assert_eq!(reply["content"], "echo: hi [tc] [ta] [tb] <tc> <ta> <tb>");
    // Metadata returned by earlier plugins is merged and seen by later ones.
    assert_eq!(reply["metadata"]["tc"], 1);
    assert_eq!(
        reply["metadata"]["seen"], "ta,tc",
        "tb saw what tc and ta returned"
    );
    assert!(reply["metadata"]["responseTimeMs"].as_u64().is_some());
    let hooks: Vec<String> = reply["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}:{}:{}",
                h["plugin"].as_str().unwrap(),
                h["hook"].as_str().unwrap(),
                h["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        hooks[..3],
        ["tc:beforeSend:ok", "ta:beforeSend:ok", "tb:beforeSend:ok"]
    );

    // State persists across messages of a session and starts fresh in a new one.
    let (_, reply) = say(&app, &id, "again").await;
    assert_eq!(reply["metadata"]["tc"], 2);
    let other = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "tc" }] }),
    )
    .await;
    let (_, reply) = say(&app, &other, "x").await;
    assert_eq!(reply["metadata"]["tc"], 1);

    let (_, info) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(info["state"], "open");
    assert_eq!(info["messageCount"], 2);
    let order: Vec<&str> = info["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["tc", "ta", "tb"]);
    let (_, list) = app.get("/api/sessions").await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn the_built_in_plugins_do_what_krawall_documents_and_more() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut openai = target("openai", &mock, "/openai");
    openai["requestTemplate"] = json!({
        "messagePath": "input",
        "structure": { "model": "${model}", "messages": "${messages}", "temperature": "${temperature}", "max_tokens": "${max_tokens}" }
    });
    openai["responseTemplate"] =
        json!({ "responsePath": "$.choices[0].message.content", "tokenUsagePath": "$.usage" });
    let mut anthropic = target("anthropic", &mock, "/anthropic");
    anthropic["requestTemplate"] = json!({ "messagePath": "input", "structure": { "model": "${model}", "system": "${system}", "messages": "${messages}" } });
    anthropic["responseTemplate"] = json!({ "responsePath": "$.content[1].text" });
    let mut secure = target("secure", &mock, "/secure");
    secure["authType"] = json!("API_KEY");
    secure["authConfig"] = json!({ "apiKey": "k-123", "headerName": "X-Api-Key" });
    let targets = json!([openai, anthropic, secure]);
    let app = start(
        dirs,
        targets,
        &[],
        r#"["multi-step-auth", "openai", "anthropic", "audit"]"#,
    )
    .await;

    // openai: history, system prompt and model parameters reach the upstream; usage normalised.
    let id = open(&app, json!({ "targetId": "openai", "plugins": [
        { "id": "openai", "config": { "model": "gpt-4o", "temperature": 0.3, "systemPrompt": "Be brief." } },
        { "id": "audit" }
    ] })).await;
    let (status, first) = say(&app, &id, "hello").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["content"], "openai says: hello");
    assert_eq!(
        first["metadata"]["tokenUsage"],
        json!({ "promptTokens": 5, "completionTokens": 7, "totalTokens": 12 })
    );
    let (_, _) = say(&app, &id, "and again").await;
    let sent = &mock.requests("/openai")[1].body;
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(
        sent["max_tokens"], 1024,
        "defaults are applied when the session binds the config"
    );
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent["messages"][2]["content"], "openai says: hello");

    // audit: every message and answer, readable after the session closed.
    let (status, closed) = app.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!((status, closed["state"].as_str()), (200, Some("closed")));
    let (status, audit) = app.get(&format!("/api/sessions/{id}/audit")).await;
    assert_eq!(status, 200);
    let directions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["sent", "received", "sent", "received"]);
    assert_eq!(audit["entries"][0]["message"], "hello");
    assert_eq!(audit["entries"][1]["tokenUsage"]["totalTokens"], 12);
    assert!(audit["entries"][1]["responseTimeMs"].as_u64().is_some());

    // anthropic: system prompt as `system`, the first text block, usage.
    let id = open(&app, json!({ "targetId": "anthropic", "plugins": [{ "id": "anthropic", "config": { "model": "claude-haiku-4-5-20251001", "systemPrompt": "Be kind." } }] })).await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "claude says: hi");
    assert_eq!(
        reply["metadata"]["tokenUsage"],
        json!({ "promptTokens": 3, "completionTokens": 4, "totalTokens": 7 })
    );
    let sent = &mock.requests("/anthropic")[0].body;
    assert_eq!(sent["system"], "Be kind.");
    assert_eq!(
        sent["messages"],
        json!([{ "role": "user", "content": "hi" }])
    );

    // multi-step-auth: token fetched on connect, the target's own API key kept, refreshed when
    // it expires (the mock's tokens live 1 s, inside the refresh margin).
    let id = open(&app, json!({ "targetId": "secure", "plugins": [{ "id": "multi-step-auth", "config": {
        "authEndpoint": mock.url("/auth/token"), "authBody": "{\"user\":\"u\"}", "tokenPath": "data.token", "expiresInPath": "expires_in"
    } }] })).await;
    assert_eq!(
        mock.requests("/auth/token")[0].body,
        json!({ "user": "u" }),
        "a JSON string config is sent once-parsed"
    );
    let (status, reply) = say(&app, &id, "open sesame").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("secret ok")),
        "{reply}"
    );
    let seen = mock.requests("/secure");
    assert_eq!(seen[0].header("x-api-key"), Some("k-123"));
    assert!(seen[0]
        .header("authorization")
        .unwrap()
        .starts_with("Bearer tok-"));
    assert!(
        mock.tokens_issued() >= 2,
        "the expiring token was refreshed before the send"
    );
    // The refreshed token went upstream in `$headers`, and nowhere else: not in the reply, not
    // in the stored transcript.
    assert!(reply["metadata"].get("$headers").is_none(), "{reply}");
    assert!(!reply.to_string().contains("tok-"), "{reply}");
    crate::common::eventually("the transcript", || async {
        let (_, t) = app.get(&format!("/api/sessions/{id}/messages")).await;
        t["total"].as_u64() == Some(2) && !t.to_string().contains("tok-")
    })
    .await;

    // Without an expiry, a 401 makes the session re-authenticate once and send again.
    let id = open(
        &app,
        json!({ "targetId": "secure", "plugins": [{ "id": "multi-step-auth", "config": {
            "authEndpoint": mock.url("/auth/token"), "tokenPath": "data.token"
        } }] }),
    )
    .await;
    mock.rotate_token();
    let before = mock.requests("/secure").len();
    let (status, reply) = say(&app, &id, "again").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("secret ok")),
        "{reply}"
    );
    assert_eq!(
        mock.requests("/secure").len(),
        before + 2,
        "one 401, then one retry"
    );
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn bad_plugin_lists_are_refused_with_every_error() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("ws-only", "index.js", "import { PluginLoader } from './loader'; PluginLoader.register({ id: 'ws-only', name: 'W', description: '', version: '1.0.0', compatibleConnectors: ['WEBSOCKET'] });");
    let app = start(
        dirs,
        json!([target("chat", &mock, "/chat")]),
        &[],
        r#"["openai"]"#,
    )
    .await;
    let (status, body) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "chat", "plugins": [
        { "id": "ghost" },
        { "id": "ws-only" },
        { "id": "openai", "config": { "model": "gpt-5", "temperature": "hot" } }
    ] }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_session_plugins")),
        "{body}"
    );
    assert_eq!(
        body["details"]["errors"],
        json!([
        "Plugin 'ghost' is not registered",
        "Plugin 'ws-only' is not compatible with connector type HTTP_REST (it supports: WEBSOCKET)",
        "Plugin 'openai': Field 'model' must be one of: gpt-4, gpt-4-turbo, gpt-4o, gpt-3.5-turbo",
        "Plugin 'openai': Field 'temperature' must be a number"
    ])
    );
    let (status, body) = app
        .post_json("/api/sessions", json!({ "targetId": "nope" }))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("target_not_found"))
    );
    let (status, body) = app
        .post_json("/api/sessions", json!({ "target": "chat" }))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")));
    assert_eq!(say(&app, "missing", "x").await.0, 404);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn failing_plugins_are_bypassed_unless_critical_and_crashes_restart_the_plugin() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let flaky = r#"onError(error, hook, ctx) { console.error("flaky failed in " + hook + ": " + error.message); },"#;
    dirs.write(
        "flaky",
        "index.js",
        &tagger("flaky", 50, flaky).replace(
            "ctx.state.count += 1;",
            "ctx.state.count += 1; if (message.includes('boom')) throw new Error('flaky broke');",
        ),
    );
    dirs.write(
        "spinner",
        "index.js",
        &tagger("spinner", 60, "").replace(
            "ctx.state.count += 1;",
            "ctx.state.count += 1; if (message.includes('spin')) { while (true) {} }",
        ),
    );
    let env = [("SWITCHYARD__PLUGINS__SCRIPT__CALL_TIMEOUT_MS", "300")];
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;

    // Not critical: the failed change is skipped, the message goes on, the failure is counted.
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "flaky" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "boom").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["content"], "echo: boom <flaky>",
        "beforeSend skipped, afterReceive ran"
    );
    assert_eq!(reply["plugins"][0]["outcome"], "failed");
    assert!(reply["plugins"][0]["error"]
        .as_str()
        .unwrap()
        .contains("flaky broke"));
    let failed = app.next_event("plugin.hook_failed").await;
    assert_eq!(
        (
            failed.data["plugin"].as_str(),
            failed.data["hook"].as_str(),
            failed.data["critical"].as_bool()
        ),
        (Some("flaky"), Some("beforeSend"), Some(false))
    );
    let (_, info) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(info["hookFailures"], 1);

    // Critical: the message fails, naming plugin and hook, and nothing is sent upstream.
    let sent_before = mock.requests("/chat").len();
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "flaky", "critical": true }] }),
    )
    .await;
    let (status, body) = say(&app, &id, "boom").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("plugin_hook_failed")),
        "{body}"
    );
    assert_eq!(
        body["details"],
        json!({ "plugin": "flaky", "hook": "beforeSend" })
    );
    assert_eq!(mock.requests("/chat").len(), sent_before);

    // A plugin that runs away mid-message is stopped and restarted; the session goes on.
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "spinner" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "spin").await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["plugins"][0]["error"]
            .as_str()
            .unwrap()
            .contains("time budget"),
        "{reply}"
    );
    assert_eq!(
        app.next_event("plugin.restarted").await.data["plugin"],
        "spinner"
    );
    let (status, reply) = say(&app, &id, "calm").await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["content"], "echo: calm [spinner] <spinner>",
        "the restarted plugin serves the session"
    );
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn upstream_failures_timeouts_and_hook_timeouts_are_reported() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("sleepy", "index.js", &tagger("sleepy", 50, "").replace("ctx.state.count += 1;", "ctx.state.count += 1; if (message.includes('nap')) { const end = Date.now() + 400; while (Date.now() < end) {} }"));
    let mut slow = target("slow", &mock, "/slow/1000");
    slow["timeoutMs"] = json!(200);
    let targets = json!([target("fail", &mock, "/fail/503"), target("bad", &mock, "/malformed"), slow,
        { "id": "gone", "name": "gone", "connectorType": "HTTP_REST", "endpoint": "http://127.0.0.1:9/x",
          "requestTemplate": { "messagePath": "m" }, "responseTemplate": { "responsePath": "r" } },
        target("chat", &mock, "/chat")]);
    let app = start(dirs, targets, &[], "[]").await;
    for (target_id, expected) in [
        ("fail", "quota exceeded"),
        ("bad", "the response is not JSON"),
        ("slow", "Request timeout"),
        ("gone", "Cannot reach endpoint"),
    ] {
        let id = open(&app, json!({ "targetId": target_id })).await;
        let (status, body) = say(&app, &id, "x").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (502, Some("upstream_error")),
            "{target_id}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{target_id}: {body}"
        );
        if target_id == "fail" {
            assert_eq!(body["details"]["status"], 503);
        }
    }
    // A hook slower than its timeout is bypassed (not critical).
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "sleepy", "timeoutMs": 100 }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "nap").await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["plugins"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 100 ms"),
        "{reply}"
    );
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn disconnect_runs_every_plugin_and_idle_sessions_expire() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write(
        "bad-bye",
        "index.js",
        &tagger(
            "bad-bye",
            10,
            "async onDisconnect(ctx) { throw new Error('cannot say goodbye'); },",
        ),
    );
    dirs.write(
        "good-bye",
        "index.js",
        &tagger(
            "good-bye",
            20,
            "async onDisconnect(ctx) { ctx.state.count = 0; },",
        ),
    );
    dirs.copy_example("response-logger");
    let env = [("SWITCHYARD__SESSIONS__IDLE_TIMEOUT_MS", "300")];
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;

    // The seed's response-logger takes part in a session like any plugin.
    let id = open(&app, json!({ "targetId": "chat", "plugins": [{ "id": "bad-bye" }, { "id": "good-bye" }, { "id": "response-logger", "config": { "logLevel": "debug" } }] })).await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    let logger: Vec<&str> = reply["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["plugin"] == "response-logger")
        .map(|p| p["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(logger, ["ok", "ok"], "{reply}");
    let (status, report) = app.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    let outcomes: Vec<String> = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["plugin"].as_str().unwrap(),
                p["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        ["bad-bye:failed", "good-bye:ok", "response-logger:ok"]
    );
    let (status, ended) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(
        (status, ended["state"].as_str()),
        (200, Some("closed")),
        "{ended}"
    );

    // Idle sessions close themselves.
    let idle = open(&app, json!({ "targetId": "chat" })).await;
    let closed = loop {
        let event = app.next_event("session.closed").await;
        if event.data["sessionId"] == idle.as_str() {
            break event;
        }
    };
    assert_eq!(closed.data["reason"], "idle timeout");
    // Ended sessions stay readable from the store (within one batch window of the close).
    crate::common::eventually("the idle session is stored as closed", || async {
        let (status, ended) = app.get(&format!("/api/sessions/{idle}")).await;
        status == 200 && ended["state"] == "closed" && ended["endReason"] == "idle timeout"
    })
    .await;
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn one_message_at_a_time_and_a_full_queue_answers_429() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let env = [("SWITCHYARD__SESSIONS__QUEUE_CAPACITY", "1")];
    let app = start(
        dirs,
        json!([target("slow", &mock, "/slow/300")]),
        &env,
        "[]",
    )
    .await;
    let id = open(&app, json!({ "targetId": "slow" })).await;
    // The first message is in flight upstream (300 ms) before the others arrive.
    let first = say(&app, &id, "first");
    let later = async {
        crate::common::eventually("the first message is upstream", || async {
            !mock.requests("/slow/300").is_empty()
        })
        .await;
        futures::future::join_all((0..3).map(|_| say(&app, &id, "later"))).await
    };
    let ((first_status, _), results) = futures::future::join(first, later).await;
    assert_eq!(first_status, 200);
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    // One waits in the queue (capacity 1) and is served next; the other two are refused.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let busy = results.iter().find(|(s, _)| *s == 429).unwrap();
    assert_eq!(busy.1["code"], "session_busy");
    let seen: Vec<String> = mock
        .requests("/slow/300")
        .iter()
        .map(|r| r.body["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ["first", "later"], "one at a time, in order");
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn connect_failures_secrets_reverse_order_and_health_checks() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("no-connect", "index.js", "import { PluginLoader } from './loader'; PluginLoader.register({ id: 'no-connect', name: 'N', description: '', version: '1.0.0', compatibleConnectors: ['HTTP_REST'], async onConnect(config, ctx) { throw new Error('handshake refused'); } });");
    dirs.write("keyed", "index.js", "import { PluginLoader } from './loader'; PluginLoader.register({ id: 'keyed', name: 'K', description: '', version: '1.0.0', compatibleConnectors: ['HTTP_REST'], configSchema: [{ key: 'apiKey', label: 'Key', type: 'string', required: true, description: '', secret: true }] });");
    dirs.write("ta", "index.js", &tagger("ta", 10, ""));
    dirs.write("tb", "index.js", &tagger("tb", 20, ""));
    let env = [("SWITCHYARD__SESSIONS__AFTER_RECEIVE_ORDER", "reverse")];
    let app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;

    // initialize/onConnect failures fail the session, naming plugin and hook.
    let (status, body) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "chat", "plugins": [{ "id": "no-connect" }] }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("plugin_hook_failed")),
        "{body}"
    );
    assert_eq!(
        body["details"],
        json!({ "plugin": "no-connect", "hook": "onConnect" })
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("handshake refused"));
    let (_, list) = app.get("/api/sessions").await;
    assert_eq!(
        list["total"], 0,
        "a session that failed to open was never recorded: {list}"
    );

    // Secret config values never come back.
    let id = open(&app, json!({ "targetId": "chat", "plugins": [{ "id": "keyed", "config": { "apiKey": "sk-live-123" } }, { "id": "ta" }, { "id": "tb" }] })).await;
    let (_, info) = app.get(&format!("/api/sessions/{id}")).await;
    let keyed = info["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "keyed")
        .unwrap();
    assert_eq!(keyed["config"]["apiKey"], "********");
    assert!(!info.to_string().contains("sk-live-123"));

    // afterReceive in reverse (onion) order when configured.
    let (_, reply) = say(&app, &id, "x").await;
    assert_eq!(reply["content"], "echo: x [ta] [tb] <tb> <ta>");

    // The connector's health check.
    let config = |endpoint: String| switchyard::connector::ConnectorConfig {
        endpoint,
        auth_type: Default::default(),
        auth_config: Default::default(),
        request_template: Default::default(),
        response_template: Default::default(),
        protocol_config: Default::default(),
        timeout: 1000,
        tls: Default::default(),
    };
    let up = switchyard::connector::connect("HTTP_REST", config(mock.url("/chat")))
        .await
        .unwrap();
    assert!(up.health_check().await.healthy);
    let down = switchyard::connector::connect("HTTP_REST", config("http://127.0.0.1:9/x".into()))
        .await
        .unwrap();
    let status = down.health_check().await;
    assert!(!status.healthy);
    assert_eq!(status.error.as_deref(), Some("Cannot reach endpoint"));
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn a_crashed_session_is_not_restarted_and_an_event_says_why() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &[], "[]").await;
    let id = open(&app, json!({ "targetId": "chat" })).await;
    assert_eq!(say(&app, &id, "hi").await.0, 200);
    app.sessions.crash(&id).unwrap();
    let failed = app.next_event("session.failed").await;
    assert_eq!(failed.data["sessionId"], id.as_str());
    assert!(
        failed.data["reason"]
            .as_str()
            .unwrap()
            .contains("session crash requested"),
        "{}",
        failed.data
    );
    assert_gone(&app, &id).await;
    // Other sessions and the service carry on.
    let other = open(&app, json!({ "targetId": "chat" })).await;
    assert_eq!(say(&app, &other, "fine").await.0, 200);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn a_native_hook_runs_on_the_session_and_a_panic_there_restarts_only_its_plugin() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let (key, file) = targets_env(&dirs, json!([target("chat", &mock, "/chat")]));
    let mut app = TestApp::spawn_in(
        dirs,
        &[(key, file.as_str())],
        vec![switchyard::test_util::panic_connector("fragile")],
    )
    .await;
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "fragile" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("echo: hi <fragile>"))
    );

    // The panic fails that hook (non-critical: the message goes on without the change), and the
    // plugin's supervisor restarts it as for any crash.
    let (status, reply) = say(&app, &id, "panic now").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: panic now");
    assert_eq!(reply["plugins"][0]["outcome"], "failed");
    assert!(
        reply["plugins"][0]["error"]
            .as_str()
            .unwrap()
            .contains("was told to panic"),
        "{reply}"
    );
    let restarted = app.next_event("plugin.restarted").await;
    assert_eq!(restarted.data["plugin"], "fragile");
    let (_, plugin) = app.get("/api/plugins/fragile").await;
    assert!(
        plugin["lastError"]["message"]
            .as_str()
            .unwrap()
            .contains("was told to panic"),
        "{plugin}"
    );
    assert_eq!(plugin["restarts"], 1);
    // The session goes on through the new instance.
    let (_, reply) = say(&app, &id, "again").await;
    assert_eq!(reply["content"], "echo: again <fragile>");
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn native_plugins_that_change_nothing_leave_the_message_byte_identical() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let (key, file) = targets_env(&dirs, json!([target("chat", &mock, "/chat")]));
    let natives = (1..=3)
        .map(|i| switchyard::test_util::noop_connector(&format!("noop-{i}")))
        .collect();
    let app = TestApp::spawn_in(dirs, &[(key, file.as_str())], natives).await;
    let bare = open(&app, json!({ "targetId": "chat" })).await;
    let plugins: Vec<Value> = (1..=3)
        .map(|i| json!({ "id": format!("noop-{i}") }))
        .collect();
    let through = open(&app, json!({ "targetId": "chat", "plugins": plugins })).await;
    let message = "héllo \"world\" {\"k\": [1, 2]}";
    let (status, alone) = say(&app, &bare, message).await;
    assert_eq!(status, 200, "{alone}");
    let (status, passed) = say(&app, &through, message).await;
    assert_eq!(status, 200, "{passed}");

    // Upstream sees the same bytes with or without the plugins that lent their input back.
    let sent = mock.requests("/chat");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].body.to_string(), sent[1].body.to_string());
    assert_eq!(sent[1].body["message"], message);
    // And so does the caller: the same content, the same metadata but for its timing.
    assert_eq!(alone["content"].to_string(), passed["content"].to_string());
    let without_timing = |reply: &Value| {
        let mut m = reply["metadata"].as_object().cloned().unwrap();
        m.shift_remove("responseTimeMs");
        Value::Object(m).to_string()
    };
    assert_eq!(without_timing(&alone), without_timing(&passed));
    // The REST reply still reports every hook (asked for by this API): each passed through.
    let outcomes = passed["plugins"].as_array().unwrap();
    assert_eq!(outcomes.len(), 6, "{passed}");
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "passthrough"),
        "{passed}"
    );
    assert_eq!(alone["plugins"], json!([]));
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn script_hooks_run_on_the_session_thread_unless_set_apart() {
    let mock = MockUpstream::start().await;
    let nap = "if (message.includes('nap')) { const end = Date.now() + 400; while (Date.now() < end) {} }";
    for on_session_thread in [true, false] {
        let dirs = Dirs::new();
        dirs.write("first", "index.js", &tagger("first", 50, ""));
        dirs.write("second", "index.js", &tagger("second", 60, ""));
        dirs.write(
            "sleepy",
            "index.js",
            &tagger("sleepy", 70, "").replace(
                "ctx.state.count += 1;",
                &format!("ctx.state.count += 1; {nap}"),
            ),
        );
        let flag = on_session_thread.to_string();
        let env = [(
            "SWITCHYARD__PLUGINS__SCRIPT__HOOKS_ON_SESSION_THREAD",
            flag.as_str(),
        )];
        let app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;
        let id = open(
            &app,
            json!({ "targetId": "chat", "plugins": [{ "id": "first" }, { "id": "second" }, { "id": "sleepy", "timeoutMs": 100 }] }),
        )
        .await;
        for n in 0..3 {
            let (status, reply) = say(&app, &id, &format!("m{n}")).await;
            assert_eq!(status, 200, "{reply}");
            // Same order, same answers and per-session state on either thread.
            assert_eq!(
                reply["content"],
                format!("echo: m{n} [first] [second] [sleepy] <first> <second> <sleepy>")
            );
            assert_eq!(reply["metadata"]["first"], n + 1, "{reply}");
            assert_eq!(reply["metadata"]["second"], n + 1, "{reply}");
        }
        // A hook that blocks for 400 ms past its 100 ms timeout is bypassed either way. On the
        // session's thread the session waits for the JavaScript to finish (nothing can
        // interrupt it there short of the engine's own budget); set apart, only the plugin's
        // thread is held and the session goes on at the deadline.
        let began = std::time::Instant::now();
        let (status, reply) = say(&app, &id, "nap").await;
        let took = began.elapsed();
        assert_eq!(status, 200, "{reply}");
        assert!(
            reply["plugins"][2]["error"]
                .as_str()
                .is_some_and(|e| e.contains("timed out after 100 ms")),
            "{reply}"
        );
        // (Set apart, sleepy's afterReceive then waits behind its own nap and is bypassed too.)
        assert!(
            reply["content"]
                .as_str()
                .unwrap()
                .starts_with("echo: nap [first] [second] <first> <second>"),
            "{reply}"
        );
        if on_session_thread {
            assert!(took >= std::time::Duration::from_millis(400), "{took:?}");
        } else {
            assert!(took < std::time::Duration::from_millis(390), "{took:?}");
        }
        app.stop().await;
    }
    mock.stop().await;
}

#[actix_web::test]
async fn a_session_with_a_disabled_plugin_is_refused_naming_it() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("tag", "index.js", &tagger("tag", 10, ""));
    let app = start(dirs, json!([target("chat", &mock, "/chat")]), &[], "[]").await;
    let (status, _) = app.post("/api/plugins/tag/disable").await;
    assert_eq!(status, 200);
    let (status, body) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "chat", "plugins": [{ "id": "tag" }] }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "plugin_state_conflict", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("enable it first"),
        "{body}"
    );
    assert_eq!(body["details"]["plugin"], "tag", "{body}");
    // Enabled again, it opens.
    assert_eq!(app.post("/api/plugins/tag/enable").await.0, 200);
    open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "tag" }] }),
    )
    .await;
    app.stop().await;
    mock.stop().await;
}

/// A plugin without a hook is passed by (`passthrough`, never called); a reload that gives it
/// the hook reaches sessions already open, since the running instance is asked on each call.
#[actix_web::test]
async fn a_reload_that_adds_a_hook_reaches_open_sessions() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let plugin = |hooks: &str| {
        format!(
            r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "late", name: "late", description: "", version: "1.0.0",
  compatibleConnectors: ["HTTP_REST"],
  {hooks}
}});
"#
        )
    };
    dirs.write(
        "late",
        "index.js",
        &plugin(
            "beforeSend(message, metadata) { return { message: message + ' [b]', metadata }; },",
        ),
    );
    let app = start(
        dirs.clone(),
        json!([target("echo", &mock, "/chat")]),
        &[],
        "[]",
    )
    .await;
    let id = open(
        &app,
        json!({ "targetId": "echo", "plugins": [{ "id": "late" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "one").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: one [b]", "{reply}");
    let after: Vec<&Value> = reply["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["hook"] == "afterReceive")
        .collect();
    assert_eq!(after.len(), 1, "{reply}");
    assert_eq!(after[0]["outcome"], "passthrough", "{reply}");

    dirs.write(
        "late",
        "index.js",
        &plugin(
            "beforeSend(message, metadata) { return { message: message + ' [b]', metadata }; },
  afterReceive(response) { return { response: { ...response, content: response.content + ' [a]' } }; },",
        ),
    );
    let (status, body) = app.post_json("/api/plugins/late/reload", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, reply) = say(&app, &id, "two").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: two [b] [a]", "{reply}");
    app.stop().await;
}

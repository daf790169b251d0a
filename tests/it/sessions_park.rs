//! Parked sessions (`sessions.park_after_ms`): an idle session's actor stops and a compact
//! record stays; its next message, a close, its idle timeout or shutdown wakes it, with its
//! plugins' state intact and without `initialize` or `onConnect` running again.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{eventually, Dirs, TestApp};
use crate::metrics::{scrape, value};
use crate::mock::MockUpstream;
use crate::sessions::{assert_gone, open, say, start, target};

/// A script connector plugin that counts its `initialize`, `onConnect` and messages in its
/// session state, shows the counts in each reply's metadata, and says goodbye to the mock
/// (`POST /chat {message: "bye <id> <count>"}`) in `onDisconnect`.
fn counter(mock: &MockUpstream) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "counter", name: "counter", description: "counts", version: "1.0.0", priority: 10,
  compatibleConnectors: ["HTTP_REST"],
  async initialize(ctx) {{ ctx.state.count = 0; ctx.state.inits = (ctx.state.inits || 0) + 1; }},
  async onConnect(config, ctx) {{ ctx.state.connects = (ctx.state.connects || 0) + 1; return config; }},
  async beforeSend(message, metadata, ctx) {{
    ctx.state.count += 1;
    return {{ message, metadata: {{ count: ctx.state.count, inits: ctx.state.inits, connects: ctx.state.connects }} }};
  }},
  async onDisconnect(ctx) {{
    await fetch("{bye}", {{ method: "POST", headers: {{ "content-type": "application/json" }},
      body: JSON.stringify({{ message: "bye " + ctx.sessionId + " " + ctx.state.count }}) }});
  }},
}});
"#,
        bye = mock.url("/chat")
    )
}

/// The counts a reply carries: (messages, initializes, connects).
fn counts(reply: &Value) -> (u64, u64, u64) {
    let m = &reply["metadata"];
    (
        m["count"].as_u64().unwrap_or(0),
        m["inits"].as_u64().unwrap_or(0),
        m["connects"].as_u64().unwrap_or(0),
    )
}

/// The goodbyes session `id`'s `onDisconnect` sent, with its count then.
fn goodbyes(mock: &MockUpstream, id: &str) -> Vec<String> {
    let prefix = format!("bye {id} ");
    mock.requests("/chat")
        .iter()
        .filter_map(|r| {
            r.body["message"]
                .as_str()?
                .strip_prefix(&prefix)
                .map(String::from)
        })
        .collect()
}

async fn parked(app: &TestApp, n: usize) {
    eventually(&format!("{n} sessions are parked"), || async {
        app.sessions.parked() == n
    })
    .await;
}

#[actix_web::test]
async fn an_idle_session_parks_and_wakes_with_its_plugin_state_in_order_and_closes() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("counter", "index.js", &counter(&mock));
    let env = [("SWITCHYARD__SESSIONS__PARK_AFTER_MS", "150")];
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "counter" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "one").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(counts(&reply), (1, 1, 1));
    let (_, live) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(app.sessions.parked(), 0, "just used: live");

    // Parked: the API shows the same session, the metric counts it.
    parked(&app, 1).await;
    let (status, shown) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown, live, "a parked session reads as it did live");
    assert_eq!(shown["state"], "open");
    let (_, text) = scrape(&app, None).await;
    assert_eq!(value(&text, "switchyard_sessions_parked"), 1.0, "{text}");
    assert_eq!(value(&text, "switchyard_sessions_open"), 1.0, "{text}");

    // The next message wakes it: its state goes on, no initialize or onConnect again.
    let (status, reply) = say(&app, &id, "two").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: two");
    assert_eq!(counts(&reply), (2, 1, 1), "{reply}");
    assert_eq!(app.sessions.parked(), 0, "woken");
    let (_, shown) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(shown["messageCount"], 2, "{shown}");

    // Messages that arrive together at a parked session are all answered, one at a time.
    parked(&app, 1).await;
    let replies = futures::future::join_all(["a", "b", "c"].map(|m| {
        let (app, id) = (&app, id.clone());
        async move { say(app, &id, m).await }
    }))
    .await;
    let mut seen: Vec<u64> = replies
        .iter()
        .map(|(status, reply)| {
            assert_eq!(*status, 200, "{reply}");
            assert_eq!(counts(reply).1, 1, "{reply}");
            counts(reply).0
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [3, 4, 5]);
    // The upstream got them in the order their counts say (one at a time, in order).
    let sent: Vec<String> = mock
        .requests("/chat")
        .iter()
        .filter_map(|r| r.body["message"].as_str().map(String::from))
        .filter(|m| ["a", "b", "c"].contains(&m.as_str()))
        .collect();
    let by_count: Vec<String> = {
        let mut pairs: Vec<(u64, String)> = replies
            .iter()
            .map(|(_, r)| {
                (
                    counts(r).0,
                    r["content"].as_str().unwrap().replace("echo: ", ""),
                )
            })
            .collect();
        pairs.sort();
        pairs.into_iter().map(|(_, m)| m).collect()
    };
    assert_eq!(sent, by_count);

    // Closing a parked session wakes it: onDisconnect runs with its state.
    parked(&app, 1).await;
    let (status, report) = app.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["plugins"][0]["outcome"], "ok", "{report}");
    assert_eq!(goodbyes(&mock, &id), ["5"]);
    let closed = app.next_event("session.closed").await;
    assert_eq!(
        (
            closed.data["sessionId"].as_str(),
            closed.data["reason"].as_str()
        ),
        (Some(id.as_str()), Some("closed"))
    );
    assert_eq!((app.sessions.count(), app.sessions.parked()), (0, 0));
    let (_, shown) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(shown["state"], "closed", "{shown}");
    let (status, _) = say(&app, &id, "late").await;
    assert_eq!(status, 404);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn a_parked_session_still_times_out_at_its_idle_timeout_with_on_disconnect() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("counter", "index.js", &counter(&mock));
    let env = [
        ("SWITCHYARD__SESSIONS__PARK_AFTER_MS", "100"),
        ("SWITCHYARD__SESSIONS__IDLE_TIMEOUT_MS", "1500"),
    ];
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "counter" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "one").await;
    let last = Instant::now();
    assert_eq!((status, counts(&reply)), (200, (1, 1, 1)), "{reply}");
    parked(&app, 1).await;
    let closed = loop {
        let event = app.next_event("session.closed").await;
        if event.data["sessionId"] == id.as_str() {
            break event;
        }
    };
    let waited = last.elapsed();
    assert_eq!(closed.data["reason"], "idle timeout");
    assert_eq!(closed.data["messageCount"], 1);
    assert!(
        waited >= Duration::from_millis(1_450) && waited < Duration::from_millis(3_000),
        "closed {waited:?} after its last message; the idle timeout is 1.5 s"
    );
    assert_eq!(
        goodbyes(&mock, &id),
        ["1"],
        "onDisconnect ran, with its state"
    );
    assert_eq!((app.sessions.count(), app.sessions.parked()), (0, 0));
    eventually("the idle session is stored as closed", || async {
        let (status, ended) = app.get(&format!("/api/sessions/{id}")).await;
        status == 200 && ended["state"] == "closed" && ended["endReason"] == "idle timeout"
    })
    .await;

    // Shutdown closes a parked session like a live one (its onDisconnect runs).
    let other = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "counter" }] }),
    )
    .await;
    assert_eq!(say(&app, &other, "x").await.0, 200);
    parked(&app, 1).await;
    app.stop().await;
    assert_eq!(
        goodbyes(&mock, &other),
        ["1"],
        "onDisconnect ran at shutdown"
    );
    mock.stop().await;
}

#[actix_web::test]
async fn a_parked_session_keeps_its_connection_settings_and_a_crash_still_ends_it() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let secure = {
        let mut t = target("secure", &mock, "/secure");
        t["authType"] = json!("API_KEY");
        t["authConfig"] = json!({ "apiKey": "k-123", "headerName": "X-Api-Key" });
        t
    };
    let env = [("SWITCHYARD__SESSIONS__PARK_AFTER_MS", "100")];
    let mut app = start(
        dirs,
        json!([secure, target("chat", &mock, "/chat")]),
        &env,
        r#"["multi-step-auth"]"#,
    )
    .await;
    // multi-step-auth logs in on connect; parking keeps the token it set (no second login).
    let id = open(
        &app,
        json!({ "targetId": "secure", "plugins": [{ "id": "multi-step-auth", "config": {
        "authEndpoint": mock.url("/auth/token"), "tokenPath": "data.token"
    } }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "open sesame").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("secret ok")),
        "{reply}"
    );
    let logins = mock.requests("/auth/token").len();
    parked(&app, 1).await;
    let (status, reply) = say(&app, &id, "again").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("secret ok")),
        "{reply}"
    );
    assert_eq!(
        mock.requests("/auth/token").len(),
        logins,
        "no login on wake"
    );
    let secure = mock.requests("/secure");
    assert_eq!(secure.last().unwrap().header("x-api-key"), Some("k-123"));

    // A parked session that crashes once woken is not restarted, as a live one.
    parked(&app, 1).await;
    app.sessions.crash(&id).unwrap();
    let failed = app.next_event("session.failed").await;
    assert_eq!(failed.data["sessionId"], id.as_str());
    assert_gone(&app, &id).await;
    // Other sessions carry on.
    let other = open(&app, json!({ "targetId": "chat" })).await;
    assert_eq!(say(&app, &other, "fine").await.0, 200);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn with_parking_off_an_idle_session_keeps_its_actor() {
    let mock = MockUpstream::start().await;
    let env = [
        ("SWITCHYARD__SESSIONS__PARK_AFTER_MS", "0"),
        ("SWITCHYARD__SESSIONS__IDLE_TIMEOUT_MS", "60000"),
    ];
    let app: TestApp = start(
        Dirs::new(),
        json!([target("chat", &mock, "/chat")]),
        &env,
        "[]",
    )
    .await;
    let id = open(&app, json!({ "targetId": "chat" })).await;
    assert_eq!(say(&app, &id, "hi").await.0, 200);
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((app.sessions.count(), app.sessions.parked()), (1, 0));
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn a_restarted_sessions_supervisor_closes_its_sessions_live_or_parked_and_starts_empty() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("counter", "index.js", &counter(&mock));
    let env = [("SWITCHYARD__SESSIONS__PARK_AFTER_MS", "100")];
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), &env, "[]").await;
    let plugins = json!({ "targetId": "chat", "plugins": [{ "id": "counter" }] });
    let parked_one = open(&app, plugins.clone()).await;
    assert_eq!(say(&app, &parked_one, "one").await.0, 200);
    parked(&app, 1).await;
    let live_one = open(&app, plugins.clone()).await;
    assert_eq!(app.sessions.count(), 2);

    // rest_for_one at the root: the broker's crash stops the sessions supervisor (started
    // after it), which stops every session, and starts it again, empty.
    app.broker.crash();
    eventually("the sessions supervisor runs again (generation 2)", || {
        let health = app.health.clone();
        async move {
            health
                .get("root/sessions")
                .is_some_and(|r| r.generation == 2 && r.state.as_str() == "running")
        }
    })
    .await;
    assert_eq!(
        goodbyes(&mock, &parked_one),
        ["1"],
        "the parked session woke to close"
    );
    assert_eq!(goodbyes(&mock, &live_one), ["0"], "the live one closed");
    assert_eq!((app.sessions.count(), app.sessions.parked()), (0, 0));
    for id in [&parked_one, &live_one] {
        assert_gone(&app, id).await;
    }
    // New sessions open, park and wake under the new supervisor, and a crash is reported by it.
    let fresh = open(&app, plugins).await;
    assert_eq!(say(&app, &fresh, "x").await.0, 200);
    parked(&app, 1).await;
    let (status, reply) = say(&app, &fresh, "y").await;
    assert_eq!((status, counts(&reply)), (200, (2, 1, 1)), "{reply}");
    app.sessions.crash(&fresh).unwrap();
    let failed = loop {
        let event = app.next_event("session.failed").await;
        if event.data["sessionId"] == fresh.as_str() {
            break event;
        }
    };
    assert!(
        failed.data["reason"]
            .as_str()
            .unwrap()
            .contains("session crash requested"),
        "{}",
        failed.data
    );
    eventually("the crashed session is forgotten", || async {
        app.sessions.count() == 0
    })
    .await;
    app.stop().await;
    mock.stop().await;
}

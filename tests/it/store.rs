//! The store: sessions and transcripts in SQLite survive restarts; failures degrade, never crash.

use serde_json::{json, Value};

use crate::common::{eventually, Dirs, TestApp};
use crate::mock::MockUpstream;

fn openai_target(mock: &MockUpstream, id: &str) -> Value {
    json!({
        "id": id, "name": id, "connectorType": "HTTP_REST", "endpoint": mock.url("/openai"),
        "requestTemplate": { "messagePath": "input", "structure": { "messages": "${messages}" } },
        "responseTemplate": { "responsePath": "$.choices[0].message.content", "tokenUsagePath": "$.usage" }
    })
}

fn env(dirs: &Dirs, targets: Value) -> Vec<(&'static str, String)> {
    let path = dirs.root.path().join("targets.toml");
    std::fs::write(
        &path,
        toml::to_string(&json!({ "targets": targets })).unwrap(),
    )
    .unwrap();
    vec![
        (
            "SWITCHYARD__SESSIONS__TARGETS_FILE",
            path.display().to_string(),
        ),
        ("SWITCHYARD__PLUGINS__NATIVE", r#"["openai"]"#.to_string()),
    ]
}

async fn spawn(dirs: std::sync::Arc<Dirs>, env: &[(&'static str, String)]) -> TestApp {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_in(dirs, &env, vec![]).await
}

async fn open(app: &TestApp, target: &str) -> String {
    let (status, body) = app.post_json("/api/sessions", json!({ "targetId": target, "plugins": [{ "id": "openai", "config": { "model": "gpt-4o" } }] })).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn transcripts_survive_a_graceful_restart() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut broken = openai_target(&mock, "broken");
    broken["endpoint"] = json!(mock.url("/fail/500"));
    let env = env(&dirs, json!([openai_target(&mock, "gpt"), broken]));
    let app = spawn(dirs.clone(), &env).await;
    let id = open(&app, "gpt").await;
    for text in ["one", "two"] {
        let (status, _) = app
            .post_json(
                &format!("/api/sessions/{id}/messages"),
                json!({ "message": text }),
            )
            .await;
        assert_eq!(status, 200);
    }
    // A failed exchange counts as a message and an error.
    let failing = open(&app, "broken").await;
    let (status, _) = app
        .post_json(
            &format!("/api/sessions/{failing}/messages"),
            json!({ "message": "x" }),
        )
        .await;
    assert_eq!(status, 502);
    // Graceful stop: sessions close, then the writer flushes before it stops.
    app.stop().await;

    let app = spawn(dirs, &env).await;
    let (status, session) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["state"], "closed");
    assert_eq!(session["endReason"], "shutdown");
    assert_eq!(session["summary"]["messageCount"], 2);
    assert_eq!(
        session["summary"]["totalTokens"], 24,
        "12 per exchange, counted once"
    );
    assert_eq!(session["summary"]["errorCount"], 0);
    assert_eq!(session["plugins"][0]["id"], "openai");
    let (_, failed) = app.get(&format!("/api/sessions/{failing}")).await;
    assert_eq!(
        (
            &failed["summary"]["messageCount"],
            &failed["summary"]["errorCount"]
        ),
        (&json!(1), &json!(1)),
        "{failed}"
    );
    let (_, transcript) = app.get(&format!("/api/sessions/{id}/messages")).await;
    assert_eq!(transcript["total"], 4);
    let rows = transcript_rows(&transcript);
    assert_eq!(
        rows,
        [
            "sent:one",
            "received:openai says: one",
            "sent:two",
            "received:openai says: two"
        ]
    );
    assert_eq!(transcript["items"][1]["tokenUsage"]["totalTokens"], 12);
    let (_, page) = app
        .get(&format!("/api/sessions/{id}/messages?limit=1&offset=3"))
        .await;
    assert_eq!(page["items"][0]["content"], "openai says: two");
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn sessions_open_when_the_process_died_are_marked_interrupted() {
    let dirs = Dirs::new();
    let db = dirs.data().join("switchyard.db");
    // A row left `open` by a process that was killed.
    let store = switchyard::store::Store::open(&db).await.unwrap();
    sqlx::query("INSERT INTO sessions (id, target_id, state, plugins, created_at) VALUES ('lost', 't', 'open', '[]', '2026-01-01T00:00:00Z')")
        .execute(store.pool().sqlite().unwrap())
        .await
        .unwrap();
    store.pool().close().await;

    let app = TestApp::spawn_in(dirs, &[], vec![]).await;
    let (_, list) = app.get("/api/sessions?state=interrupted").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], "lost");
    assert_eq!(list["items"][0]["endReason"], "the service stopped");
    app.stop().await;
}

#[actix_web::test]
async fn sessions_are_listed_with_filters_and_pagination() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let env = env(
        &dirs,
        json!([openai_target(&mock, "a"), openai_target(&mock, "b")]),
    );
    let app = spawn(dirs, &env).await;
    let mut on_a = Vec::new();
    for _ in 0..5 {
        on_a.push(open(&app, "a").await);
    }
    let on_b = open(&app, "b").await;
    for id in &on_a[..2] {
        assert_eq!(app.delete(&format!("/api/sessions/{id}")).await.0, 200);
    }

    let (_, page) = app.get("/api/sessions?targetId=a&limit=2&offset=1").await;
    assert_eq!(
        (
            page["total"].as_i64(),
            page["limit"].as_i64(),
            page["offset"].as_i64()
        ),
        (Some(5), Some(2), Some(1))
    );
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [on_a[3].as_str(), on_a[2].as_str()], "newest first");
    let (_, closed) = app.get("/api/sessions?state=closed").await;
    assert_eq!(closed["total"], 2);
    let (_, open_b) = app.get("/api/sessions?targetId=b&state=open").await;
    assert_eq!(open_b["items"][0]["id"], on_b.as_str());
    for bad in [
        "limit=0",
        "limit=501",
        "offset=-1",
        "state=sleeping",
        "page=2",
    ] {
        let (status, body) = app.get(&format!("/api/sessions?{bad}")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }
    assert_eq!(app.get("/api/sessions/nope/messages").await.0, 404);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn write_failures_degrade_health_but_messages_still_flow() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let env = env(&dirs, json!([openai_target(&mock, "gpt")]));
    let app = spawn(dirs.clone(), &env).await;
    let id = open(&app, "gpt").await;
    // Break the database under the running service (a root test cannot make a file
    // read-only for itself, so the table the writer needs goes away instead).
    let other = switchyard::store::Store::open(&dirs.data().join("switchyard.db"))
        .await
        .unwrap();
    sqlx::query("DROP TABLE messages")
        .execute(other.pool().sqlite().unwrap())
        .await
        .unwrap();

    let (status, reply) = app
        .post_json(
            &format!("/api/sessions/{id}/messages"),
            json!({ "message": "still here?" }),
        )
        .await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("openai says: still here?"))
    );
    eventually("the store is reported degraded", || async {
        let (_, health) = app.get("/health").await;
        health["checks"]["store:writes"][0]["status"] == "warn"
    })
    .await;
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "degraded, not failed");
    assert_eq!(health["status"], "warn");
    let writes = &health["checks"]["store:writes"][0]["observedValue"];
    assert!(writes["failedBatches"].as_u64().unwrap() >= 1, "{writes}");
    assert!(
        writes["retries"].as_u64().unwrap() >= 2,
        "retried before giving up: {writes}"
    );
    assert!(
        writes["lastError"]
            .as_str()
            .unwrap()
            .contains("no such table"),
        "{writes}"
    );
    // The session itself keeps working.
    let (status, _) = app
        .post_json(
            &format!("/api/sessions/{id}/messages"),
            json!({ "message": "and now?" }),
        )
        .await;
    assert_eq!(status, 200);
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn audit_entries_persist_across_restarts_and_retention_prunes_them() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut env = env(&dirs, json!([openai_target(&mock, "gpt")]));
    env.push((
        "SWITCHYARD__PLUGINS__NATIVE",
        r#"["openai", "audit"]"#.to_string(),
    ));
    let app = spawn(dirs.clone(), &env).await;
    let (status, body) = app.post_json("/api/sessions", json!({ "targetId": "gpt", "plugins": [{ "id": "openai", "config": { "model": "gpt-4o" } }, { "id": "audit" }] })).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    for text in ["a", "b", "c"] {
        assert_eq!(
            app.post_json(
                &format!("/api/sessions/{id}/messages"),
                json!({ "message": text })
            )
            .await
            .0,
            200
        );
    }
    app.stop().await;

    // After a restart the entries are read back from the database.
    let app = spawn(dirs.clone(), &env).await;
    let (status, audit) = app.get(&format!("/api/sessions/{id}/audit")).await;
    assert_eq!(status, 200, "{audit}");
    let entries: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["direction"].as_str().unwrap(),
                e["message"]
                    .as_str()
                    .or(e["responseContent"].as_str())
                    .unwrap()
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            "sent:a",
            "received:openai says: a",
            "sent:b",
            "received:openai says: b",
            "sent:c",
            "received:openai says: c"
        ]
    );
    assert_eq!(audit["entries"][1]["tokenUsage"]["totalTokens"], 12);
    app.stop().await;

    // Retention keeps the newest `audit_max_rows`.
    env.push(("SWITCHYARD__STORE__AUDIT_MAX_ROWS", "2".to_string()));
    env.push(("SWITCHYARD__STORE__PRUNE_INTERVAL_MS", "20".to_string()));
    let app = spawn(dirs, &env).await;
    eventually("old audit entries are pruned", || async {
        let (_, audit) = app.get(&format!("/api/sessions/{id}/audit")).await;
        audit["entries"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let (_, audit) = app.get(&format!("/api/sessions/{id}/audit")).await;
    assert_eq!(audit["entries"][0]["message"], "c", "the newest stay");
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn targets_over_rest_persist_with_credentials_encrypted() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut env = env(&dirs, json!([openai_target(&mock, "configured")]));
    env.push(("SWITCHYARD__PLUGINS__NATIVE", "[]".to_string()));
    let app = spawn(dirs.clone(), &env).await;
    let target = json!({
        "id": "api-chat", "name": "API chat", "connectorType": "HTTP_REST", "endpoint": mock.url("/chat"),
        "authType": "BEARER_TOKEN", "authConfig": { "token": "sk-live-9" },
        "requestTemplate": { "messagePath": "message" }, "responseTemplate": { "responsePath": "reply" }
    });
    let (status, created) = app.post_json("/api/targets", target.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["authConfig"]["token"], "********");
    assert_eq!(created["source"], "api");
    assert_eq!(app.post_json("/api/targets", target.clone()).await.0, 409);

    // Every problem at once.
    let (status, body) = app.post_json("/api/targets", json!({ "id": "x", "name": "", "connectorType": "FAX", "endpoint": "nope", "requestTemplate": { "messagePath": "m" }, "responseTemplate": { "responsePath": "r" } })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    assert_eq!(
        body["details"]["errors"].as_array().unwrap().len(),
        3,
        "{body}"
    );

    // Configured targets are read-only.
    let mut resp = app
        .client()
        .put(app.url("/api/targets/configured"))
        .send_json(&json!({}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let bytes = resp.body().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["code"],
        "target_conflict"
    );
    assert_eq!(app.delete("/api/targets/configured").await.0, 409);

    // The test endpoint: connect, health, one message; kept as lastTest.
    let (status, result) = app
        .post_json("/api/targets/api-chat/test", json!({ "message": "ping" }))
        .await;
    assert_eq!(
        (status, result["ok"].as_bool()),
        (200, Some(true)),
        "{result}"
    );
    assert_eq!(result["message"]["content"], "echo: ping");
    assert_eq!(
        mock.requests("/chat")
            .last()
            .unwrap()
            .header("authorization"),
        Some("Bearer sk-live-9")
    );
    app.stop().await;

    // Stored encrypted: the raw row never holds the token in clear.
    let store = switchyard::store::Store::open(&dirs.data().join("switchyard.db"))
        .await
        .unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM targets WHERE id = 'api-chat'")
        .fetch_one(store.pool().sqlite().unwrap())
        .await
        .unwrap();
    assert!(!body.contains("sk-live-9"), "{body}");
    assert!(body.contains("enc:v1:"), "{body}");
    store.pool().close().await;

    // After a restart the target is back (masked), with its last test, and it still works.
    let app = spawn(dirs, &env).await;
    let (status, again) = app.get("/api/targets/api-chat").await;
    assert_eq!(status, 200);
    assert_eq!(again["authConfig"]["token"], "********");
    assert_eq!(again["lastTest"]["ok"], true);
    // A PUT may send the mask back: the stored secret is kept.
    let mut update = again.clone();
    update["name"] = json!("Renamed");
    for key in ["source", "lastTest"] {
        update.as_object_mut().unwrap().remove(key);
    }
    let mut resp = app
        .client()
        .put(app.url("/api/targets/api-chat"))
        .send_json(&update)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.body().await);
    let (status, result) = app.post_json("/api/targets/api-chat/test", json!({})).await;
    assert_eq!(
        (status, result["ok"].as_bool()),
        (200, Some(true)),
        "{result}"
    );
    assert_eq!(
        mock.requests("/chat")
            .last()
            .unwrap()
            .header("authorization"),
        Some("Bearer sk-live-9")
    );
    assert_eq!(app.delete("/api/targets/api-chat").await.0, 200);
    assert_eq!(app.get("/api/targets/api-chat").await.0, 404);
    app.stop().await;
    mock.stop().await;
}

/// A transcript page as `direction:content` lines, in order.
pub(crate) fn transcript_rows(transcript: &Value) -> Vec<String> {
    transcript["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["direction"].as_str().unwrap(),
                m["content"].as_str().unwrap()
            )
        })
        .collect()
}

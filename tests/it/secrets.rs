//! Secrets and transcript size: plugin config secrets are masked in every response and sealed
//! at rest, target credentials of any shape are never stored in clear, and a long conversation
//! stores each message once.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;
use crate::sessions::{open, say, start, target};

const MASK: &str = "********";

/// Every byte the service keeps in its data directory (the database, its WAL and shared
/// memory, plugin state), except the key itself.
fn data_bytes(dirs: &Dirs) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dirs.data())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.file_name().unwrap() != "secret.key")
        .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
        .collect()
}

/// Asserts that none of `secrets` is anywhere in the data directory's files.
fn assert_not_at_rest(dirs: &Dirs, secrets: &[&str]) {
    let files = data_bytes(dirs);
    assert!(
        files
            .iter()
            .any(|(name, _)| name.ends_with("switchyard.db")),
        "{:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        for secret in secrets {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "'{secret}' is in clear in {name}");
        }
    }
}

async fn open_store(dirs: &Dirs) -> switchyard::store::Store {
    switchyard::store::Store::open(&dirs.data().join("switchyard.db"))
        .await
        .unwrap()
}

fn assert_hidden(what: &str, body: &Value, secrets: &[&str]) {
    let text = body.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows '{secret}': {text}");
    }
}

#[actix_web::test]
async fn plugin_config_secrets_are_masked_in_every_response_and_sealed_at_rest() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let mut secure = target("secure", &mock, "/secure");
    secure["authType"] = json!("API_KEY");
    secure["authConfig"] = json!({ "apiKey": "k-123", "headerName": "X-Api-Key" });
    let app = start(
        dirs.clone(),
        json!([secure]),
        &[],
        r#"["multi-step-auth", "audit"]"#,
    )
    .await;

    // `authBody` is marked secret by the plugin; `clientSecret` (not in the schema) and the
    // nested, numeric `apiKey` are secret by their names.
    let auth_body = json!({ "user": "u", "password": "pw-hunter2-77" });
    let config = json!({
        "authEndpoint": mock.url("/auth/token"), "tokenPath": "data.token",
        "authBody": auth_body, "clientSecret": "cs-4242-sec",
        "extra": { "deep": { "apiKey": 99887766 } },
    });
    let secrets = ["pw-hunter2-77", "cs-4242-sec", "99887766"];
    let (status, created) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "secure", "plugins": [{ "id": "multi-step-auth", "config": config }, { "id": "audit" }] }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_hidden("POST /api/sessions", &created, &secrets);
    let shown = &created["plugins"][0]["config"];
    assert_eq!(shown["authBody"], MASK);
    assert_eq!(shown["clientSecret"], MASK);
    assert_eq!(shown["extra"], json!({ "deep": { "apiKey": MASK } }));
    assert_eq!(shown["tokenPath"], "data.token", "only secrets are masked");
    assert_eq!(shown["authEndpoint"], mock.url("/auth/token"));
    let id = created["id"].as_str().unwrap().to_string();

    // The session itself uses the real values.
    assert_eq!(mock.requests("/auth/token")[0].body, auth_body);
    let (status, reply) = say(&app, &id, "open sesame").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("secret ok"))
    );
    assert_hidden("the reply", &reply, &secrets);

    let (_, live) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(live["plugins"][0]["config"]["authBody"], MASK, "{live}");
    assert_hidden("GET /api/sessions/{id} (live)", &live, &secrets);
    let (_, list) = app.get("/api/sessions").await;
    assert_eq!(list["items"][0]["plugins"][0]["config"]["authBody"], MASK);
    assert_hidden("GET /api/sessions", &list, &secrets);
    let (status, closed) = app.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{closed}");
    let (_, stored) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(stored["state"], "closed", "{stored}");
    assert_eq!(stored["plugins"][0]["config"]["authBody"], MASK, "{stored}");
    assert_eq!(stored["plugins"][0]["config"]["tokenPath"], "data.token");
    assert_hidden("GET /api/sessions/{id} (stored)", &stored, &secrets);
    for path in [
        format!("/api/sessions/{id}/messages"),
        format!("/api/sessions/{id}/audit"),
    ] {
        let (_, body) = app.get(&path).await;
        assert_hidden(&path, &body, &secrets);
    }
    // The plugin marks its own credential field.
    let (_, schema) = app.get("/api/plugins/multi-step-auth/config-schema").await;
    let marked: Vec<&str> = schema["configSchema"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["secret"] == true)
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(marked, ["authBody"], "{schema}");

    app.stop().await;

    // At rest: sealed with the store's key (so they can be read back with it), never in clear.
    assert_not_at_rest(&dirs, &secrets);
    let store = open_store(&dirs).await;
    let plugins: String = sqlx::query_scalar("SELECT plugins FROM sessions WHERE id = ?")
        .bind(&id)
        .fetch_one(store.pool().sqlite().unwrap())
        .await
        .unwrap();
    store.pool().close().await;
    let plugins: Value = serde_json::from_str(&plugins).unwrap();
    let sealed = &plugins[0]["config"];
    assert!(
        sealed["authBody"].as_str().unwrap().starts_with("enc:v1:"),
        "{plugins}"
    );
    let key = switchyard::store::secrets::Secrets::load(None, &dirs.data()).unwrap();
    assert_eq!(key.open(sealed).unwrap(), config);
    mock.stop().await;
}

#[actix_web::test]
async fn nested_and_non_string_target_credentials_are_never_stored_in_clear() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    let app = start(dirs.clone(), json!([]), &[], r#"["multi-step-auth"]"#).await;
    let body = json!({
        "id": "deep", "name": "Deep", "connectorType": "HTTP_REST", "endpoint": mock.url("/chat"),
        "authType": "CUSTOM_HEADER",
        "authConfig": {
            "headers": { "X-Api-Key": "hdr-secret-5150", "X-Pin": 4815162342u64 },
            "extra": { "deep": "deep-secret-8675309" }
        },
        "protocolConfig": { "headers": { "Authorization": "Bearer pc-secret-1618", "X-Trace": "visible-trace" } },
        "plugins": [{ "id": "multi-step-auth", "config": {
            "authEndpoint": mock.url("/auth/token"), "tokenPath": "data.token",
            "authBody": { "password": "tp-pass-2718" }
        } }],
        "requestTemplate": { "messagePath": "message" }, "responseTemplate": { "responsePath": "reply" }
    });
    let secrets = [
        "hdr-secret-5150",
        "4815162342",
        "deep-secret-8675309",
        "pc-secret-1618",
        "tp-pass-2718",
    ];
    let (status, created) = app.post_json("/api/targets", body.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["authConfig"]["headers"]["X-Pin"], MASK, "{created}");
    assert_eq!(created["authConfig"]["extra"], MASK, "{created}");
    // Credential headers and plugin-config secrets are masked in answers too.
    assert_eq!(
        created["protocolConfig"]["headers"]["Authorization"], MASK,
        "{created}"
    );
    assert_eq!(
        created["protocolConfig"]["headers"]["X-Trace"],
        "visible-trace"
    );
    assert_eq!(
        created["plugins"][0]["config"]["authBody"], MASK,
        "{created}"
    );
    for secret in [
        "hdr-secret-5150",
        "pc-secret-1618",
        "tp-pass-2718",
        "deep-secret-8675309",
    ] {
        assert!(
            !created.to_string().contains(secret),
            "{secret} in {created}"
        );
    }
    // Sending the shown target back keeps every stored secret.
    let status = app
        .client()
        .put(app.url("/api/targets/deep"))
        .send_json(&created)
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);

    let check_upstream = |mock: &MockUpstream| {
        let sent = mock.requests("/chat").last().cloned().unwrap();
        assert_eq!(sent.header("x-api-key"), Some("hdr-secret-5150"));
        assert_eq!(sent.header("x-pin"), Some("4815162342"));
        assert_eq!(sent.header("x-trace"), Some("visible-trace"));
    };
    let id = open(&app, json!({ "targetId": "deep" })).await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    check_upstream(&mock);
    app.stop().await;

    // Read the database's files directly: no credential of any shape, at any depth.
    assert_not_at_rest(&dirs, &secrets);
    let store = open_store(&dirs).await;
    let row: String = sqlx::query_scalar("SELECT body FROM targets WHERE id = 'deep'")
        .fetch_one(store.pool().sqlite().unwrap())
        .await
        .unwrap();
    store.pool().close().await;
    assert!(row.contains("enc:v1:"), "{row}");
    assert!(
        row.contains("visible-trace"),
        "what is not a credential stays readable: {row}"
    );

    // After a restart the target is read back whole and still authenticates.
    let app = start(dirs.clone(), json!([]), &[], r#"["multi-step-auth"]"#).await;
    let (_, again) = app.get("/api/targets/deep").await;
    assert_eq!(again["authConfig"]["headers"]["X-Api-Key"], MASK, "{again}");
    let id = open(&app, json!({ "targetId": "deep" })).await;
    let (status, reply) = say(&app, &id, "again").await;
    assert_eq!(status, 200, "{reply}");
    check_upstream(&mock);
    let tokens = mock.requests("/auth/token");
    assert_eq!(
        tokens.last().unwrap().body,
        json!({ "password": "tp-pass-2718" })
    );
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn a_long_conversation_stores_each_message_once() {
    let mock = MockUpstream::start().await;
    let dirs: Arc<Dirs> = Dirs::new();
    let mut openai = target("gpt", &mock, "/openai");
    openai["requestTemplate"] = json!({
        "messagePath": "input",
        "structure": { "model": "${model}", "messages": "${messages}" }
    });
    openai["responseTemplate"] =
        json!({ "responsePath": "$.choices[0].message.content", "tokenUsagePath": "$.usage" });
    let app: TestApp = start(dirs.clone(), json!([openai]), &[], r#"["openai"]"#).await;
    let id = open(&app, json!({ "targetId": "gpt", "plugins": [{ "id": "openai", "config": { "model": "gpt-4o", "systemPrompt": "Be brief." } }] })).await;

    const MESSAGES: usize = 50;
    let filler = "x".repeat(120);
    let mut last = Value::Null;
    for i in 0..MESSAGES {
        let (status, reply) = say(&app, &id, &format!("message {i} {filler}")).await;
        assert_eq!(status, 200, "{reply}");
        last = reply;
    }
    // The upstream still gets the whole conversation, the client what it needs.
    let sent = &mock.requests("/openai")[MESSAGES - 1].body;
    assert_eq!(sent["messages"].as_array().unwrap().len(), 2 * MESSAGES);
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(
        last["content"],
        format!("openai says: message {} {filler}", MESSAGES - 1)
    );
    assert_eq!(last["metadata"]["tokenUsage"]["totalTokens"], 12, "{last}");
    assert!(last["metadata"]["responseTimeMs"].as_u64().is_some());
    assert_eq!(last["metadata"]["model"], "gpt-4o");
    assert!(last["metadata"].get("messages").is_none(), "{last}");
    let size = last.to_string().len();
    assert!(size < 4096, "the last reply is {size} bytes: {last}");

    // Every message is in the transcript, once.
    let (_, closed) = app.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(closed["state"], "closed", "{closed}");
    let (status, transcript) = app
        .get(&format!("/api/sessions/{id}/messages?limit=500"))
        .await;
    assert_eq!(status, 200, "{transcript}");
    assert_eq!(transcript["total"], 2 * MESSAGES);
    let items = transcript["items"].as_array().unwrap();
    assert_eq!(items.len(), 2 * MESSAGES);
    for (i, pair) in items.chunks(2).enumerate() {
        assert_eq!(pair[0]["direction"], "sent");
        assert_eq!(pair[0]["content"], format!("message {i} {filler}"));
        assert_eq!(pair[1]["direction"], "received");
        assert_eq!(
            pair[1]["content"],
            format!("openai says: message {i} {filler}")
        );
        assert_eq!(pair[1]["tokenUsage"]["totalTokens"], 12);
    }
    let biggest = items.iter().map(|m| m.to_string().len()).max().unwrap();
    assert!(biggest < 4096, "a transcript item is {biggest} bytes");
    app.stop().await;

    // The largest stored row is bounded too (before: the whole history in every row).
    let store = open_store(&dirs).await;
    let (largest, rows): (i64, i64) = sqlx::query_as(
        "SELECT MAX(LENGTH(COALESCE(content, '')) + LENGTH(COALESCE(metadata, '')) + LENGTH(COALESCE(token_usage, '')) + LENGTH(COALESCE(error, ''))), COUNT(*) FROM messages WHERE session_id = ?",
    )
    .bind(&id)
    .fetch_one(store.pool().sqlite().unwrap())
    .await
    .unwrap();
    store.pool().close().await;
    assert_eq!(rows, 2 * MESSAGES as i64);
    assert!(largest < 4096, "the largest row is {largest} bytes");
    mock.stop().await;
}

#[actix_web::test]
async fn a_password_in_a_target_endpoint_is_never_shown() {
    let mock = MockUpstream::start().await;
    let app = start(Dirs::new(), json!([]), &[], "[]").await;
    let endpoint = mock
        .url("/chat")
        .replace("http://", "http://bob:ep-pass-1234@");
    let body = json!({ "id": "userinfo", "name": "U", "connectorType": "HTTP_REST", "endpoint": endpoint,
        "requestTemplate": { "messagePath": "message" }, "responseTemplate": { "responsePath": "reply" } });
    let (status, created) = app.post_json("/api/targets", body).await;
    assert_eq!(status, 201, "{created}");
    let (_, list) = app.get("/api/targets").await;
    let (_, one) = app.get("/api/targets/userinfo").await;
    for shown in [created.to_string(), list.to_string(), one.to_string()] {
        assert!(!shown.contains("ep-pass-1234"), "{shown}");
        assert!(shown.contains("bob:********@"), "{shown}");
    }
    // Sending the target back as shown keeps it usable (the masked password is not stored).
    let mut edited = one.clone();
    edited["name"] = json!("U2");
    let mut response = app
        .client()
        .put(app.url("/api/targets/userinfo"))
        .send_json(&edited)
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(response.status().as_u16(), 200, "{answer} for {edited}");
    let id = open(&app, json!({ "targetId": "userinfo" })).await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn credentials_an_older_version_kept_in_clear_are_sealed_at_the_next_start() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    std::fs::create_dir_all(dirs.data()).unwrap();
    // Rows as an older version wrote them: no key, credentials in clear.
    let store = open_store(&dirs).await;
    let mut old_target = target("legacy", &mock, "/chat");
    old_target["authType"] = json!("BEARER_TOKEN");
    old_target["authConfig"] = json!({ "token": "old-target-token", "extra": { "pin": 4242 } });
    let statements = [
        (
            "INSERT INTO targets (id, body, created_at, updated_at) VALUES ('legacy', ?, 't', 't')",
            old_target.to_string(),
        ),
        (
            "INSERT INTO sessions (id, target_id, state, plugins, created_at) VALUES ('s-old', 'legacy', 'closed', ?, 't')",
            json!([{ "id": "multi-step-auth", "config": { "authBody": { "password": "old-plain-pw" }, "tokenPath": "data.token" } }]).to_string(),
        ),
        (
            "INSERT INTO messages (session_id, message_index, direction, content, metadata, created_at) VALUES ('s-old', 0, 'received', 'hi', ?, 't')",
            json!({ "$headers": { "Authorization": "Bearer old-plain-bearer" }, "latency": 3 }).to_string(),
        ),
    ];
    for (sql, value) in statements {
        sqlx::query(sql)
            .bind(value)
            .execute(store.pool().sqlite().unwrap())
            .await
            .unwrap();
    }
    store.pool().close().await;
    let old = [
        "old-target-token",
        "4242",
        "old-plain-pw",
        "old-plain-bearer",
    ];

    let app = start(dirs.clone(), json!([]), &[], "[]").await;
    // Still usable and masked in responses.
    let (_, session) = app.get("/api/sessions/s-old").await;
    assert_eq!(
        session["plugins"][0]["config"]["authBody"], MASK,
        "{session}"
    );
    assert_eq!(session["plugins"][0]["config"]["tokenPath"], "data.token");
    let (_, shown) = app.get("/api/targets/legacy").await;
    assert_eq!(shown["authConfig"]["token"], MASK, "{shown}");
    let (_, transcript) = app.get("/api/sessions/s-old/messages").await;
    let metadata = &transcript["items"][0]["metadata"];
    assert_eq!(metadata["latency"], 3, "{transcript}");
    assert_eq!(metadata["$headers"]["Authorization"], MASK, "{transcript}");
    for text in [
        session.to_string(),
        shown.to_string(),
        transcript.to_string(),
    ] {
        for secret in old {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
    }
    // The target's credentials still reach the upstream.
    let id = open(&app, json!({ "targetId": "legacy" })).await;
    let (status, reply) = say(&app, &id, "hello").await;
    assert_eq!(status, 200, "{reply}");
    let sent = mock.requests("/chat");
    assert_eq!(
        sent.last().unwrap().header("authorization"),
        Some("Bearer old-target-token")
    );
    app.stop().await;
    mock.stop().await;
    // Nothing of it is left in clear on disk, not even in freed pages or the WAL.
    assert_not_at_rest(&dirs, &old);
}

//! Connectors against real protocol servers: HTTPS (trusted, untrusted, wrong name, expired,
//! mutual TLS, insecure), SSE and streamed HTTP_REST answers end to end (chunks to the client,
//! `onChunk`, transcripts, a broken upstream, a client that leaves, `Last-Event-ID`), and
//! WebSocket sessions (ids, order, streaming, a dropped connection).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use switchyard::connector::event_stream::{SseEvent, SseParser};

use crate::common::{eventually, Dirs, TestApp};
use crate::upstreams::{self, Pki, Upstream};

/// A target on `base` + `path`: `{message}` out, `reply` back.
fn target(id: &str, kind: &str, url: String, extra: Value) -> Value {
    let mut t = json!({
        "id": id, "name": id, "connectorType": kind, "endpoint": url,
        "requestTemplate": { "messagePath": "message" },
        "responseTemplate": { "responsePath": "reply" },
        "timeoutMs": 3000
    });
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t
}

/// An OpenAI-shaped streaming target on an SSE path of `up`.
fn openai_stream(id: &str, kind: &str, up: &Upstream, path: &str) -> Value {
    target(
        id,
        kind,
        up.url(path),
        json!({
            "responseTemplate": { "responsePath": "choices[0].delta.content", "tokenUsagePath": "usage" },
            "protocolConfig": { "stream": true },
        }),
    )
}

pub(crate) async fn app_with(dirs: Arc<Dirs>, targets: Value, env: &[(&str, &str)]) -> TestApp {
    let path = dirs.root.path().join("targets.toml");
    std::fs::write(
        &path,
        toml::to_string(&json!({ "targets": targets })).unwrap(),
    )
    .unwrap();
    let file = path.display().to_string();
    let mut all = vec![("SWITCHYARD__SESSIONS__TARGETS_FILE", file.as_str())];
    all.extend_from_slice(env);
    TestApp::spawn_in(dirs, &all, vec![]).await
}

async fn open(app: &TestApp, target: &str, plugins: Value) -> (u16, Value) {
    app.post_json(
        "/api/sessions",
        json!({ "targetId": target, "plugins": plugins }),
    )
    .await
}

async fn session(app: &TestApp, target: &str) -> String {
    let (status, body) = open(app, target, json!([])).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn say(app: &TestApp, id: &str, message: &str) -> (u16, Value) {
    app.post_json(
        &format!("/api/sessions/{id}/messages"),
        json!({ "message": message }),
    )
    .await
}

/// Sends a message asking for a streamed answer; returns the status and the events read
/// (all of them, or only the first `keep` before the connection is dropped).
async fn stream(
    app: &TestApp,
    id: &str,
    message: &str,
    keep: Option<usize>,
) -> (u16, Vec<SseEvent>) {
    let mut response = app
        .client()
        .post(app.url(&format!("/api/sessions/{id}/messages")))
        .insert_header(("Accept", "text/event-stream"))
        .timeout(Duration::from_secs(20))
        .send_json(&json!({ "message": message }))
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    while let Some(bytes) = response.next().await {
        events.extend(parser.feed(&bytes.unwrap()).unwrap());
        if keep.is_some_and(|n| events.len() >= n) {
            return (status, events);
        }
    }
    (status, events)
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

// ---- TLS ---------------------------------------------------------------------------------------

#[actix_web::test]
async fn https_targets_are_reached_and_tls_failures_say_what_is_wrong() {
    let pki = Pki::new();
    let good = upstreams::start_https(&pki.issue("good", &["127.0.0.1", "localhost"], false), None);
    let expired = upstreams::start_https(&pki.issue("expired", &["127.0.0.1"], true), None);
    let other = upstreams::start_https(&pki.issue("other", &["other.example"], false), None);
    let ca = pki.ca_file().display().to_string();
    let tls = json!({ "tls": { "caFile": ca } });
    let targets = json!([
        target("trusted", "HTTP_REST", good.url("/chat"), tls.clone()),
        target("untrusted", "HTTP_REST", good.url("/chat"), json!({})),
        target("expired", "HTTP_REST", expired.url("/chat"), tls.clone()),
        target("wrong-name", "HTTP_REST", other.url("/chat"), tls.clone()),
        target(
            "insecure",
            "HTTP_REST",
            other.url("/chat"),
            json!({ "tls": { "insecureSkipVerify": true } })
        ),
    ]);
    let app = app_with(Dirs::new(), targets, &[]).await;

    let id = session(&app, "trusted").await;
    let (status, reply) = say(&app, &id, "over tls").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: over tls");
    let seen = good.log.seen("/chat");
    assert_eq!(seen[0].body["message"], "over tls");
    // HTTP/2 when the server offers it (ALPN).
    assert_eq!(seen[0].version, "HTTP/2.0");

    for (target, reason) in [
        ("untrusted", "untrusted_certificate"),
        ("expired", "expired_certificate"),
        ("wrong-name", "name_mismatch"),
    ] {
        let id = session(&app, target).await;
        let (status, body) = say(&app, &id, "hi").await;
        assert_eq!(status, 502, "{target}: {body}");
        assert_eq!(body["code"], "tls_error", "{target}: {body}");
        assert_eq!(body["details"]["reason"], reason, "{target}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains("Cannot reach endpoint"), "{message}");
        assert!(message.contains("TLS error"), "{message}");
        // The connection test says the same.
        let (status, test) = app
            .post_json(&format!("/api/targets/{target}/test"), json!({}))
            .await;
        assert_eq!(status, 200, "{test}");
        assert_eq!(test["message"]["code"], "tls_error", "{test}");
        assert_eq!(test["message"]["reason"], reason, "{test}");
    }

    // insecureSkipVerify connects anyway, and /health warns about it.
    let id = session(&app, "insecure").await;
    assert_eq!(say(&app, &id, "anyway").await.1["content"], "echo: anyway");
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["tls:insecure"][0]["status"], "warn",
        "{health}"
    );
    assert_eq!(
        health["checks"]["tls:insecure"][0]["observedValue"],
        json!(["insecure"])
    );

    app.stop().await;
    for up in [good, expired, other] {
        up.stop().await;
    }
}

#[actix_web::test]
async fn mutual_tls_presents_the_target_s_client_certificate() {
    let pki = Pki::new();
    let server = pki.issue("server", &["127.0.0.1"], false);
    let client = pki.issue("client", &["switchyard-client"], false);
    let up = upstreams::start_https(&server, Some(&pki.ca_file()));
    let ca = pki.ca_file().display().to_string();
    let targets = json!([
        target(
            "mtls",
            "HTTP_REST",
            up.url("/chat"),
            json!({ "tls": {
            "caFile": ca, "certFile": client.cert.display().to_string(), "keyFile": client.key.display().to_string()
        } })
        ),
        target(
            "no-cert",
            "HTTP_REST",
            up.url("/chat"),
            json!({ "tls": { "caFile": ca } })
        ),
    ]);
    let app = app_with(Dirs::new(), targets, &[]).await;
    let id = session(&app, "mtls").await;
    let (status, reply) = say(&app, &id, "mutual").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: mutual");

    // Without the certificate the server refuses the connection. Under TLS 1.3 it says so
    // after the handshake, so the refusal can arrive as the alert (a `tls_error`) or, when the
    // request was already being written, as the connection closing (an upstream error).
    let id = session(&app, "no-cert").await;
    let (status, body) = say(&app, &id, "hi").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["code"] == "tls_error" || body["code"] == "upstream_error",
        "{body}"
    );
    assert!(
        up.log.seen("/chat").len() == 1,
        "only the certified client got through"
    );
    app.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn bad_targets_are_refused_with_every_problem_named() {
    let app = app_with(Dirs::new(), json!([]), &[]).await;
    let (status, body) = app
        .post_json(
            "/api/targets",
            json!({
                "id": "ws", "name": "ws", "connectorType": "WEBSOCKET", "endpoint": "http://x",
                "responseTemplate": { "responsePath": "reply" },
                "tls": { "certFile": "/nonexistent.pem", "caFile": "/nonexistent-ca.pem" },
                "colour": "red"
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_target");
    let errors: Vec<&str> = body["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("target.requestTemplate: is required")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("target.colour: unknown field")),
        "{errors:?}"
    );

    let (status, body) = app
        .post_json(
            "/api/targets",
            json!({
                "id": "ws", "name": "ws", "connectorType": "WEBSOCKET", "endpoint": "http://x",
                "requestTemplate": { "messagePath": "message" },
                "responseTemplate": { "responsePath": "reply" },
                "tls": { "certFile": "/nonexistent.pem", "caFile": "/nonexistent-ca.pem" },
                "protocolConfig": { "pingIntervalMs": "often" }
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let errors = body["details"]["errors"].to_string();
    for expected in [
        "target.endpoint: 'http://x' is not a ws:// or wss:// URL",
        "target.tls.keyFile",
        "target.tls.caFile",
        "target.protocolConfig.pingIntervalMs",
    ] {
        assert!(errors.contains(expected), "{expected} in {errors}");
    }
    let (status, body) = app
        .post_json(
            "/api/targets",
            json!({
                "id": "fax", "name": "fax", "connectorType": "FAX", "endpoint": "http://x",
                "requestTemplate": { "messagePath": "message" },
                "responseTemplate": { "responsePath": "reply" }
            }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["details"]["errors"][0]
        .as_str()
        .unwrap()
        .starts_with("target.connectorType: 'FAX' is not supported"));
    app.stop().await;
}

#[actix_web::test]
async fn a_plugin_cannot_slip_an_invalid_connector_config_past_the_checks() {
    let up = upstreams::start(None);
    let dirs = Dirs::new();
    // onConnect hands back options no operator could have configured.
    dirs.write(
        "sneaky",
        "index.js",
        r#"import { PluginLoader } from "./loader";
PluginLoader.register({
  id: "sneaky", name: "sneaky", description: "", version: "1.0.0",
  compatibleConnectors: ["HTTP_REST"],
  async onConnect(config, ctx) {
    return { ...config, tls: { caFile: "/nonexistent/ca.pem" }, protocolConfig: { maxReconnects: 1000 } };
  },
});
"#,
    );
    let app = app_with(
        dirs,
        json!([target("t", "HTTP_REST", up.url("/chat"), json!({}))]),
        &[],
    )
    .await;
    let (status, body) = open(&app, "t", json!([{ "id": "sneaky" }])).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "plugin_hook_failed", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("tls.caFile"), "{message}");
    assert!(
        message.contains("protocolConfig.maxReconnects"),
        "{message}"
    );
    app.stop().await;
    up.stop().await;
}

// ---- Streaming ---------------------------------------------------------------------------------

/// Uppercases every chunk, and records what `afterReceive` saw.
const SHOUTER: &str = r#"import { PluginLoader } from "./loader";
PluginLoader.register({
  id: "shouter", name: "shouter", description: "", version: "1.0.0", priority: 10,
  compatibleConnectors: ["HTTP_REST", "SSE", "WEBSOCKET"],
  async onChunk(chunk, ctx) { ctx.state.chunks = (ctx.state.chunks || 0) + 1; return chunk.toUpperCase(); },
  async afterReceive(response, ctx) {
    return { response, metadata: { assembled: response.content, chunksSeen: ctx.state.chunks } };
  },
});
"#;

#[actix_web::test]
async fn sse_answers_stream_to_the_client_through_on_chunk_and_are_stored_whole() {
    let up = upstreams::start(None);
    let dirs = Dirs::new();
    dirs.write("shouter", "index.js", SHOUTER);
    let targets = json!([
        openai_stream("sse", "SSE", &up, "/sse/openai"),
        target(
            "claude",
            "SSE",
            up.url("/sse/anthropic"),
            json!({
                "responseTemplate": { "responsePath": "delta.text", "tokenUsagePath": "usage" },
                "protocolConfig": { "doneEvent": "message_stop", "events": ["content_block_delta", "message_delta"] }
            })
        ),
        openai_stream("rest", "HTTP_REST", &up, "/sse/openai"),
        target(
            "ndjson",
            "HTTP_REST",
            up.url("/sse/ndjson"),
            json!({
                "responseTemplate": { "responsePath": "token" }, "protocolConfig": { "stream": true }
            })
        ),
    ]);
    let app = app_with(dirs, targets, &[]).await;

    // Streamed: each chunk as an event, rewritten by onChunk; then the whole reply.
    let (status, body) = open(&app, "sse", json!([{ "id": "shouter" }])).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, events) = stream(&app, &id, "to be streamed", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(SseEvent::kind).collect();
    assert_eq!(kinds, ["chunk", "chunk", "chunk", "done"], "{events:?}");
    let chunks: Vec<String> = events[..3]
        .iter()
        .map(|e| data(e)["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chunks, ["TO ", "BE ", "STREAMED "]);
    let done = data(&events[3]);
    assert_eq!(done["content"], "TO BE STREAMED ");
    assert_eq!(done["metadata"]["assembled"], "TO BE STREAMED ");
    assert_eq!(done["metadata"]["chunksSeen"], 3);
    assert_eq!(done["metadata"]["chunks"], 3);
    assert!(
        done["metadata"]["firstChunkMs"].as_u64().is_some(),
        "{done}"
    );
    assert_eq!(done["metadata"]["tokenUsage"]["total_tokens"], 6, "{done}");
    // The upstream was asked for an event stream, with the templated body.
    let seen = up.log.seen("/sse/openai");
    assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
    assert_eq!(seen[0].body["message"], "to be streamed");
    // The transcript keeps the assembled answer.
    eventually("the transcript", || async {
        let (_, t) = app.get(&format!("/api/sessions/{id}/messages")).await;
        t["items"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["content"] == "TO BE STREAMED "))
    })
    .await;

    // The same target without streaming: the answer comes back whole.
    let (status, reply) = say(&app, &id, "all at once").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "ALL AT ONCE ");

    // Anthropic's event types; `"stream": true` in the body works like the Accept header.
    let id = session(&app, "claude").await;
    let (status, reply) = app
        .post_json(
            &format!("/api/sessions/{id}/messages"),
            json!({ "message": "hi claude" }),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "hi claude ");
    assert_eq!(
        reply["metadata"]["tokenUsage"]["output_tokens"], 2,
        "{reply}"
    );

    // HTTP_REST with `stream: true`, SSE and newline-delimited JSON.
    for (target, expected) in [("rest", "rest streamed "), ("ndjson", "rest streamed ")] {
        let id = session(&app, target).await;
        let (status, events) = stream(&app, &id, "rest streamed", None).await;
        assert_eq!(status, 200);
        let text: String = events
            .iter()
            .filter(|e| e.kind() == "chunk")
            .map(|e| data(e)["content"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(text, expected, "{target}: {events:?}");
        assert_eq!(events.last().unwrap().kind(), "done");
    }
    app.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn a_broken_stream_ends_with_an_error_and_a_client_that_leaves_cancels_the_upstream() {
    let up = upstreams::start(None);
    let dying = upstreams::start_dying();
    let targets = json!([
        target(
            "broken",
            "SSE",
            dying,
            json!({
                "responseTemplate": { "responsePath": "choices[0].delta.content" },
            })
        ),
        openai_stream("endless", "SSE", &up, "/sse/endless"),
        openai_stream("resumable", "SSE", &up, "/sse/resumable"),
    ]);
    let app = app_with(Dirs::new(), targets, &[]).await;

    let id = session(&app, "broken").await;
    let (status, events) = stream(&app, &id, "x", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(SseEvent::kind).collect();
    assert_eq!(kinds, ["chunk", "chunk", "error"], "{events:?}");
    let error = data(&events[2]);
    assert_eq!(error["code"], "upstream_error", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("after 2 chunks"),
        "{error}"
    );
    eventually("the transcript says the stream broke", || async {
        let (_, t) = app.get(&format!("/api/sessions/{id}/messages")).await;
        t["items"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("after 2 chunks"))
            })
        })
    })
    .await;

    // The client reads one chunk and goes away: the upstream call is cancelled.
    let id = session(&app, "endless").await;
    let (_, events) = stream(&app, &id, "x", Some(1)).await;
    assert_eq!(events[0].kind(), "chunk");
    eventually("the upstream stream is dropped", || async {
        up.log.abandoned.load(Ordering::SeqCst)
    })
    .await;
    // The session is free again for the next message.
    let (status, events) = stream(&app, &id, "x", Some(2)).await;
    assert_eq!(status, 200);
    assert_eq!(events.len(), 2);

    // A stream with ids that breaks is resumed with Last-Event-ID.
    let id = session(&app, "resumable").await;
    let (status, reply) = say(&app, &id, "x").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "one two three ");
    let seen = up.log.seen("/sse/resumable");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("last-event-id"), Some("2"));
    app.stop().await;
    up.stop().await;
}

// ---- gRPC --------------------------------------------------------------------------------------

#[actix_web::test]
async fn grpc_sessions_call_unary_and_streaming_methods_from_the_proto() {
    let (base, log) = upstreams::start_grpc();
    let proto = upstreams::chat_proto().display().to_string();
    let targets = json!([
        target(
            "grpc",
            "GRPC",
            base.clone(),
            json!({
                "requestTemplate": { "messagePath": "message", "structure": { "session_id": "s-1" } },
                "responseTemplate": { "responsePath": "reply", "tokenUsagePath": "usage" },
                "authType": "BEARER_TOKEN", "authConfig": { "token": "grpc-token" },
                "protocolConfig": { "protoPath": proto.clone() }
            })
        ),
        target(
            "grpc-stream",
            "GRPC",
            base.clone(),
            json!({
                "responseTemplate": { "responsePath": "delta" },
                "protocolConfig": { "protoPath": proto.clone(), "methodName": "StreamMessage" }
            })
        ),
        target(
            "grpc-missing",
            "GRPC",
            base.clone(),
            json!({
                "protocolConfig": { "protoPath": proto.clone(), "serviceName": "NoSuchService" }
            })
        ),
    ]);
    let dirs = Dirs::new();
    // Hands a fresh token for one call, as multi-step-auth does when it refreshes.
    dirs.write(
        "rekey",
        "index.js",
        r#"import { PluginLoader } from "./loader";
PluginLoader.register({ id: "rekey", name: "rekey", description: "", version: "1.0.0",
  compatibleConnectors: ["GRPC"],
  async beforeSend(message) { return { message, metadata: { "$headers": { Authorization: "Bearer fresh" } } }; } });
"#,
    );
    let app = app_with(dirs, targets, &[]).await;

    // Unary: the message built from the template, auth as metadata, the answer's fields.
    let id = session(&app, "grpc").await;
    let (status, reply) = say(&app, &id, "over grpc").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: over grpc");
    assert_eq!(
        reply["metadata"]["tokenUsage"],
        json!({ "total_tokens": 7 })
    );
    let seen = log.seen("/chat.ChatService/SendMessage");
    assert_eq!(seen[0].body["message"], "over grpc");
    assert_eq!(seen[0].header("authorization"), Some("Bearer grpc-token"));
    assert_eq!(seen[0].header("content-type"), Some("application/grpc"));

    // A fresh token for one call replaces the target's, it is not sent beside it.
    let (status, body) = open(&app, "grpc", json!([{ "id": "rekey" }])).await;
    assert_eq!(status, 201, "{body}");
    let rekeyed = body["id"].as_str().unwrap().to_string();
    assert_eq!(say(&app, &rekeyed, "fresh").await.0, 200);
    let seen = log.seen("/chat.ChatService/SendMessage");
    let auth: Vec<&str> = seen[1]
        .headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(auth, ["Bearer fresh"]);

    // A gRPC status is an error in Krawall's words.
    let (status, body) = say(&app, &id, "denied").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("gRPC error (7): not for you"),
        "{body}"
    );

    // Server-streaming: each message is a chunk.
    let id = session(&app, "grpc-stream").await;
    let (status, events) = stream(&app, &id, "streamed over grpc", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(SseEvent::kind).collect();
    assert_eq!(kinds, ["chunk", "chunk", "chunk", "done"], "{events:?}");
    assert_eq!(data(&events[3])["content"], "streamed over grpc ");
    let (status, reply) = say(&app, &id, "whole please").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "whole please ");

    // Over TLS, with the test CA.
    let pki = Pki::new();
    let (tls_base, tls_log) = upstreams::start_grpc_tls(&pki.issue("grpc", &["127.0.0.1"], false));
    let (status, body) = app
        .post_json(
            "/api/targets",
            target(
                "grpc-tls",
                "GRPC",
                tls_base,
                json!({
                    "protocolConfig": { "protoPath": proto.clone() },
                    "tls": { "caFile": pki.ca_file().display().to_string() }
                }),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = session(&app, "grpc-tls").await;
    let (status, reply) = say(&app, &id, "secure grpc").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: secure grpc");
    assert_eq!(tls_log.seen("/chat.ChatService/SendMessage").len(), 1);

    // A service the .proto does not have fails the opening, naming it.
    let (status, body) = open(&app, "grpc-missing", json!([])).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("chat.NoSuchService"),
        "{body}"
    );
    app.stop().await;
}

// ---- WebSocket ---------------------------------------------------------------------------------

#[actix_web::test]
async fn websocket_sessions_match_answers_stream_and_survive_a_dropped_connection() {
    let up = upstreams::start(None);
    let ws = up.base.replacen("http://", "ws://", 1) + "/ws";
    let targets = json!([
        target(
            "ws",
            "WEBSOCKET",
            ws.clone(),
            json!({
                "requestTemplate": { "messagePath": "message" },
                "authType": "BEARER_TOKEN", "authConfig": { "token": "secret-token" },
                "protocolConfig": { "idPath": "id", "subprotocols": ["chat.v1"], "reconnectDelayMs": 50 }
            })
        ),
        target(
            "ws-stream",
            "WEBSOCKET",
            ws.clone(),
            json!({
                "responseTemplate": { "responsePath": "reply", "tokenUsagePath": "usage" },
                "protocolConfig": { "idPath": "id", "stream": true, "eventPath": "delta", "donePath": "done" }
            })
        ),
        target(
            "ws-down",
            "WEBSOCKET",
            "ws://127.0.0.1:9/ws".into(),
            json!({})
        ),
    ]);
    let app = app_with(Dirs::new(), targets, &[]).await;

    let id = session(&app, "ws").await;
    let handshake = &up.log.seen("/ws")[0];
    assert_eq!(
        handshake.header("authorization"),
        Some("Bearer secret-token")
    );
    assert_eq!(handshake.header("sec-websocket-protocol"), Some("chat.v1"));
    let (status, reply) = say(&app, &id, "hello").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: hello");

    // Answers are matched by id: a slow one is overtaken and still reaches its own caller.
    let (slow, fast) = futures::join!(say(&app, &id, "slow"), async {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        // The session takes one message at a time, so send the second through a second
        // session on the same target.
        let other = session(&app, "ws").await;
        say(&app, &other, "fast").await
    });
    assert_eq!(slow.1["content"], "slow done", "{slow:?}");
    assert_eq!(fast.1["content"], "echo: fast", "{fast:?}");

    // The server drops the connection: that message fails, the connector reconnects, and the
    // next message goes through on a new connection.
    let (status, body) = say(&app, &id, "drop").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket disconnected"),
        "{body}"
    );
    eventually("a new connection", || async {
        up.log.seen("/ws").len() >= 3
    })
    .await;
    let (status, reply) = say(&app, &id, "again").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "echo: again");

    // Streamed frames become chunks.
    let id = session(&app, "ws-stream").await;
    let (status, events) = stream(&app, &id, "stream of words", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = events.iter().map(SseEvent::kind).collect();
    assert_eq!(kinds, ["chunk", "chunk", "chunk", "done"], "{events:?}");
    assert_eq!(data(&events[3])["content"], "stream of words ");

    // A WebSocket that cannot be opened fails the session's opening.
    let (status, body) = open(&app, "ws-down", json!([])).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], "upstream_error", "{body}");

    // Closing the session closes the socket.
    let (status, _) = app.delete(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200);
    app.stop().await;
    up.stop().await;
}

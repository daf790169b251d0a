//! The front doors (`/v1`) against a real service: OpenAI and Anthropic shapes, whole and
//! streamed, tool calls and tool results, the plugins on that traffic (transcripts, audit),
//! virtual keys (401, 403, 429 in each provider's shape), fallbacks, conversations, and model
//! routes over REST. `sdk.rs` drives the same service with the providers' official SDKs.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::upstreams;

/// Every request body the mock provider got, with its path.
type Bodies = Arc<Mutex<Vec<(String, Value)>>>;

/// A model provider speaking OpenAI's `chat/completions` and Anthropic's `messages` under
/// `/v1` (and failing with 503 under `/down/v1`): with tools and a user turn last it asks for
/// `get_weather` in Oslo; after a tool result it answers with that result; otherwise it
/// echoes the last user message. Every request body is recorded.
pub struct MockProvider {
    pub base: String,
    bodies: Bodies,
    handle: actix_web::dev::ServerHandle,
}

impl MockProvider {
    pub fn start() -> MockProvider {
        let bodies: Bodies = Arc::default();
        let data = web::Data::new(bodies.clone());
        let (base, handle) = crate::mock::serve(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(provider))
        });
        MockProvider {
            base,
            bodies,
            handle,
        }
    }

    /// The endpoint an `inference` config names (`…/v1`).
    pub fn endpoint(&self) -> String {
        format!("{}/v1", self.base)
    }

    /// An endpoint that always answers 503.
    pub fn down(&self) -> String {
        format!("{}/down/v1", self.base)
    }

    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str().or_else(|| b["content"].as_str()))
            .collect(),
        _ => String::new(),
    }
}

async fn provider(bodies: web::Data<Bodies>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = req.path().to_string();
    bodies.lock().unwrap().push((path.clone(), body.clone()));
    if path.starts_with("/down/") {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "error": { "message": "the provider is down" } }));
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    if path.ends_with("/chat/completions") {
        let usage = json!({ "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 });
        let message = if last["role"] == "tool" {
            json!({ "role": "assistant", "content": format!("It is {} in Oslo.", text_of(&last["content"])) })
        } else if has_tools {
            json!({ "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function",
                "function": { "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}" } }] })
        } else {
            json!({ "role": "assistant", "content": format!("echo: {}", text_of(&last["content"])) })
        };
        return HttpResponse::Ok().json(json!({ "id": "x", "model": body["model"],
            "choices": [{ "index": 0, "message": message }], "usage": usage }));
    }
    if path.ends_with("/messages") {
        let blocks = last["content"].as_array().cloned().unwrap_or_default();
        let result = blocks.iter().find(|b| b["type"] == "tool_result");
        let content = if let Some(result) = result {
            json!([{ "type": "text", "text": format!("It is {} in Oslo.", text_of(&result["content"])) }])
        } else if has_tools {
            json!([{ "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Oslo" } }])
        } else {
            json!([{ "type": "text", "text": format!("echo: {}", text_of(&last["content"])) }])
        };
        return HttpResponse::Ok().json(json!({ "id": "m", "type": "message", "role": "assistant",
            "model": body["model"], "content": content, "usage": { "input_tokens": 8, "output_tokens": 4 } }));
    }
    HttpResponse::NotFound().finish()
}

/// Counts the conversation's messages in its state, sees the whole conversation in its
/// metadata, tags what goes upstream and what comes back, and uppercases streamed chunks.
pub const TAGGER: &str = r#"import { PluginLoader } from "./loader";
PluginLoader.register({
  id: "tagger", name: "tagger", description: "tags front-door traffic", version: "1.0.0", priority: 10,
  compatibleConnectors: ["HTTP_REST", "SSE"],
  async beforeSend(message, metadata, ctx) {
    ctx.state.turns = (ctx.state.turns || 0) + 1;
    return { message: message + " [tagged]",
             metadata: { tagger: { turn: ctx.state.turns, seenMessages: (metadata.messages || []).length, frontdoor: metadata.frontdoor } } };
  },
  async onChunk(chunk, ctx) { return chunk.toUpperCase(); },
  async afterReceive(response, ctx) { return { response: { ...response, content: response.content + " (checked)" } }; },
});
"#;

/// The service with the tagger and audit plugins, and routes: `gpt-test` (OpenAI provider,
/// alias `gpt`), `claude-test` (Anthropic provider), `flaky` (a provider that is down,
/// falling back to `gpt-test`) and `streamer` (an SSE target that streams the message back
/// word by word).
pub async fn start(
    provider: &MockProvider,
    upstream: &upstreams::Upstream,
    env: &[(&str, &str)],
) -> TestApp {
    let dirs = Dirs::new();
    dirs.write("tagger", "index.js", TAGGER);
    let config = dirs.root.path().join("frontdoor.toml");
    let plugins = json!([{ "id": "tagger" }, { "id": "audit" }]);
    let file = json!({
        "targets": [{
            "id": "words", "name": "words", "connectorType": "HTTP_REST",
            "endpoint": upstream.url("/sse/openai"),
            "requestTemplate": { "messagePath": "message" },
            "responseTemplate": { "responsePath": "choices[0].delta.content", "tokenUsagePath": "usage" },
            "protocolConfig": { "stream": true }, "timeoutMs": 5000
        }],
        "models": [
            { "name": "gpt-test", "aliases": ["gpt"], "plugins": plugins,
              "inference": { "provider": "openai", "modelId": "gpt-upstream", "endpoint": provider.endpoint() } },
            { "name": "claude-test", "plugins": plugins,
              "inference": { "provider": "anthropic", "modelId": "claude-upstream", "endpoint": provider.endpoint() } },
            { "name": "flaky", "fallbacks": ["gpt-test"], "plugins": plugins,
              "inference": { "provider": "openai", "modelId": "down", "endpoint": provider.down() } },
            { "name": "streamer", "target": "words", "plugins": plugins, "timeoutMs": 5000 }
        ]
    });
    std::fs::write(
        &config,
        toml::to_string(&json!({ "targets": file["targets"] })).unwrap(),
    )
    .unwrap();
    let config = config.display().to_string();
    // `[[models]]` as an operator's environment gives it: a TOML array.
    let models = toml_array(&file["models"]);
    let mut all = vec![
        ("SWITCHYARD__SESSIONS__TARGETS_FILE", config.as_str()),
        ("SWITCHYARD__PLUGINS__NATIVE", r#"["audit"]"#),
        ("SWITCHYARD__INFERENCE__MAX_RETRIES", "0"),
        ("SWITCHYARD__MODELS", models.as_str()),
    ];
    all.extend_from_slice(env);
    TestApp::spawn_in(dirs, &all, vec![]).await
}

/// A JSON array of tables as a TOML inline array (what `SWITCHYARD__MODELS` takes).
fn toml_array(value: &Value) -> String {
    let wrapped = toml::to_string(&json!({ "v": value })).unwrap();
    let parsed: toml::Value = toml::from_str(&wrapped).unwrap();
    let items: Vec<String> = parsed["v"].as_array().unwrap().iter().map(inline).collect();
    format!("[{}]", items.join(", "))
}

fn inline(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        toml::Value::Array(a) => {
            format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

/// Makes a virtual key over the admin API; answers its text and id.
pub async fn key(app: &TestApp, body: Value) -> (String, String) {
    let (status, created) = app.post_json("/api/keys", body).await;
    assert_eq!(status, 201, "{created}");
    (
        created["key"].as_str().unwrap().to_string(),
        created["id"].as_str().unwrap().to_string(),
    )
}

/// POSTs to `/v1/…` with a key header; answers status, headers and body text.
async fn v1(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, awc::http::header::HeaderMap, String) {
    let mut req = app.client().post(app.url(path));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send_json(&body).await.expect("request");
    let bytes = resp.body().limit(1 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        resp.headers().clone(),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The stored transcript of `session` once it holds `rows` rows (the store writes in
/// batches).
pub async fn transcript(app: &TestApp, session: &str, rows: usize) -> Value {
    for _ in 0..100 {
        let (status, body) = app.get(&format!("/api/sessions/{session}/messages")).await;
        if status == 200 && body["items"].as_array().is_some_and(|i| i.len() >= rows) {
            return body;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the transcript of {session} never held {rows} rows");
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[actix_web::test]
async fn an_openai_request_runs_through_the_plugins_and_lands_in_the_transcript_and_audit() {
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(&provider, &upstream, &[]).await;
    let (text, id) = key(&app, json!({ "name": "t" })).await;
    let auth = bearer(&text);
    let (status, headers, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        json!({ "model": "gpt", "messages": [
            { "role": "system", "content": "be brief" }, { "role": "user", "content": "hello" } ] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gpt");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hello [tagged] (checked)"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["total_tokens"], 15);
    // The provider got the whole conversation, the last user message as beforeSend left it.
    let sent = provider.bodies("/v1/chat/completions");
    assert_eq!(sent[0]["model"], "gpt-upstream");
    assert_eq!(sent[0]["messages"][0]["content"], "be brief");
    assert_eq!(sent[0]["messages"][1]["content"], "hello [tagged]");

    let session = headers
        .get("x-switchyard-session")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let transcript = transcript(&app, &session, 2).await;
    let items = transcript["items"].as_array().unwrap();
    assert_eq!(items[0]["content"], "hello");
    assert_eq!(items[1]["content"], "echo: hello [tagged] (checked)");
    let metadata = &items[1]["metadata"];
    assert_eq!(metadata["tagger"]["seenMessages"], 2, "{metadata}");
    assert_eq!(metadata["tagger"]["frontdoor"], "openai");
    assert_eq!(
        (metadata["route"].as_str(), metadata["apiKey"].as_str()),
        (Some("gpt-test"), Some(id.as_str()))
    );
    assert!(
        metadata.get("messages").is_none(),
        "the history stays private: {metadata}"
    );
    let (_, audit) = app.get(&format!("/api/sessions/{session}/audit")).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["message"], "hello [tagged]");
    // The key's budget counts the answer's tokens.
    let (_, shown) = app.get(&format!("/api/keys/{id}")).await;
    assert_eq!(shown["tokensUsed"], 15);
    assert!(shown.get("key").is_none() && !shown.to_string().contains(&text));
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

fn data_lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[actix_web::test]
async fn streams_come_in_each_providers_event_format_through_on_chunk() {
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(
        &provider,
        &upstream,
        &[("SWITCHYARD__FRONTDOOR__REQUIRE_KEY", "false")],
    )
    .await;
    let (status, headers, body) = v1(
        &app,
        "/v1/chat/completions",
        &[],
        json!({ "model": "streamer", "stream": true, "stream_options": { "include_usage": true },
                "messages": [{ "role": "user", "content": "one two" }] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let chunks = data_lines(&body);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    // Each upstream chunk passed onChunk (uppercased); the upstream saw beforeSend's message.
    assert_eq!(text, "ONE TWO [TAGGED] ");
    assert!(
        chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"].is_string())
            .count()
            >= 3
    );
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);

    let (status, _, body) = v1(
        &app,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        json!({ "model": "streamer", "max_tokens": 50, "stream": true,
                "messages": [{ "role": "user", "content": "hi there" }] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(
        &events[events.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let text: String = data_lines(&body)
        .iter()
        .filter_map(|d| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "HI THERE [TAGGED] ");
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn tool_calls_and_tool_results_pass_through_both_dialects() {
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(&provider, &upstream, &[]).await;
    let (text, _) = key(&app, json!({ "name": "tools" })).await;
    let auth = bearer(&text);
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "description": "Weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }]);
    let ask = json!({ "role": "user", "content": "weather?" });
    let (status, _, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        json!({ "model": "gpt-test", "messages": [ask], "tools": tools }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        (call["id"].as_str(), call["function"]["name"].as_str()),
        (Some("call_1"), Some("get_weather"))
    );
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(
        provider.bodies("/v1/chat/completions")[0]["tools"][0]["function"]["name"],
        "get_weather"
    );

    let (status, _, body) = v1(&app, "/v1/chat/completions", &[("authorization", &auth)],
        json!({ "model": "gpt-test", "tools": tools, "messages": [ask,
            answer["choices"][0]["message"], { "role": "tool", "tool_call_id": "call_1", "content": "3 degrees" }] })).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "It is 3 degrees in Oslo. (checked)"
    );
    let sent = provider.bodies("/v1/chat/completions");
    assert_eq!(sent[1]["messages"][2]["tool_call_id"], "call_1");

    // Anthropic: tool_use out, tool_result back, streamed this time.
    let (status, _, body) = v1(
        &app,
        "/v1/messages",
        &[("x-api-key", &text)],
        json!({ "model": "claude-test", "max_tokens": 100, "stream": true,
                "tools": [{ "name": "get_weather", "input_schema": { "type": "object" } }],
                "messages": [{ "role": "user", "content": "weather?" }] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = data_lines(&body);
    let start = data
        .iter()
        .find(|d| d["content_block"]["type"] == "tool_use")
        .expect(&body);
    assert_eq!(start["content_block"]["id"], "toolu_1");
    let json_delta = data
        .iter()
        .find(|d| d["delta"]["type"] == "input_json_delta")
        .unwrap();
    assert_eq!(json_delta["delta"]["partial_json"], "{\"city\":\"Oslo\"}");
    assert!(data.iter().any(|d| d["delta"]["stop_reason"] == "tool_use"));
    let (status, _, body) = v1(&app, "/v1/messages", &[("x-api-key", &text)],
        json!({ "model": "claude-test", "max_tokens": 100,
                "messages": [{ "role": "user", "content": "weather?" },
                    { "role": "assistant", "content": [{ "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "city": "Oslo" } }] },
                    { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "toolu_1", "content": "4 degrees" }] }] })).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["content"][0]["text"],
        "It is 4 degrees in Oslo. (checked)"
    );
    assert_eq!(answer["stop_reason"], "end_turn");
    let sent = provider.bodies("/v1/messages");
    assert_eq!(sent[1]["messages"][2]["content"][0]["type"], "tool_result");
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn keys_refuse_in_each_providers_own_error_shape() {
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(&provider, &upstream, &[]).await;
    let hi = json!({ "model": "gpt-test", "messages": [{ "role": "user", "content": "hi" }] });
    let (status, _, body) = v1(&app, "/v1/chat/completions", &[], hi.clone()).await;
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, _, body) = v1(&app, "/v1/messages", &[("x-api-key", "sk-sy-forged")],
        json!({ "model": "claude-test", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] })).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "type": "error", "error": { "type": "authentication_error", "message": "the API key is not valid" } })
    );

    let (text, _) = key(&app, json!({ "name": "small", "models": ["gpt-test"], "requestsPerMinute": 2, "tokenBudget": 20 })).await;
    let auth = bearer(&text);
    let (status, _, body) = v1(&app, "/v1/messages", &[("x-api-key", &text)],
        json!({ "model": "claude-test", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] })).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_error"), "{body}");
    for _ in 0..2 {
        let (status, _, body) = v1(
            &app,
            "/v1/chat/completions",
            &[("authorization", &auth)],
            hi.clone(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // The budget (20) is spent by two answers of 15 tokens: refused before the rate is.
    let (status, _, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        hi.clone(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("token_budget_exhausted"), "{body}");
    let (text, _) = key(&app, json!({ "name": "slow", "requestsPerMinute": 1 })).await;
    let auth = bearer(&text);
    let (status, _, _) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        hi.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, headers, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        hi.clone(),
    )
    .await;
    assert_eq!(status, 429);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            body["error"]["type"].as_str(),
            body["error"]["code"].as_str()
        ),
        (Some("rate_limit_error"), Some("rate_limited"))
    );
    assert!(headers.get("retry-after").is_some());

    // Unknown models and unreadable requests, also in the provider's shape.
    let (status, _, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        json!({ "model": "nope", "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("model_not_found"));
    let (status, _, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &auth)],
        json!({ "model": "gpt-test", "messages": "hi" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["param"],
        "messages"
    );
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn a_failing_route_falls_back_and_a_conversation_keeps_its_session() {
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(
        &provider,
        &upstream,
        &[("SWITCHYARD__FRONTDOOR__REQUIRE_KEY", "false")],
    )
    .await;
    let hi = json!({ "model": "flaky", "messages": [{ "role": "user", "content": "hi" }] });
    let (status, first, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("x-session-id", "conv-1")],
        hi.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("echo: hi [tagged]"), "{body}");
    assert_eq!(
        provider.bodies("/down/v1/chat/completions").len(),
        1,
        "the route was tried first"
    );
    let (_, second, body) = v1(
        &app,
        "/v1/chat/completions",
        &[("x-session-id", "conv-1")],
        hi.clone(),
    )
    .await;
    assert!(body.contains("echo: hi"), "{body}");
    assert_eq!(
        first.get("x-switchyard-session"),
        second.get("x-switchyard-session")
    );
    let session = second
        .get("x-switchyard-session")
        .unwrap()
        .to_str()
        .unwrap();
    let transcript = transcript(&app, session, 4).await;
    // The plugin's state lives with the conversation: its second turn.
    assert_eq!(
        transcript["items"][3]["metadata"]["tagger"]["turn"], 2,
        "{transcript}"
    );
    let (_, other, _) = v1(
        &app,
        "/v1/chat/completions",
        &[("x-session-id", "conv-2")],
        hi,
    )
    .await;
    assert_ne!(
        other.get("x-switchyard-session"),
        second.get("x-switchyard-session")
    );
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn model_routes_and_keys_are_managed_over_rest() {
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(
        &provider,
        &upstream,
        &[("SWITCHYARD__FRONTDOOR__REQUIRE_KEY", "false")],
    )
    .await;
    let (status, created) = app
        .post_json("/api/models", json!({ "name": "extra", "inference": { "provider": "openai", "modelId": "m", "endpoint": provider.endpoint() }, "fallbacks": ["gpt-test"] }))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["source"], "api");
    let (status, bad) = app
        .post_json("/api/models", json!({ "name": "gpt", "target": "missing" }))
        .await;
    assert_eq!(status, 400, "{bad}");
    let errors = bad["details"]["errors"].to_string();
    assert!(
        errors.contains("the name 'gpt' is taken")
            && errors.contains("no target has the id 'missing'"),
        "{errors}"
    );
    let (status, _) = app
        .post_json("/api/models", json!({ "name": "extra", "target": "words" }))
        .await;
    assert_eq!(status, 409);
    let (status, _, body) = v1(
        &app,
        "/v1/chat/completions",
        &[],
        json!({ "model": "extra", "messages": [{ "role": "user", "content": "yo" }] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = app.get("/v1/models").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["gpt-test", "claude-test", "flaky", "streamer", "extra"]
    );
    let (status, body) = app.delete("/api/models/gpt-test").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("model_route_conflict"))
    );
    let (status, _) = app.delete("/api/models/extra").await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/api/models/extra").await;
    assert_eq!(status, 404);
    // Keys: the text once, a digest kept, revocation.
    let (text, id) = key(&app, json!({ "name": "k" })).await;
    let (_, keys) = app.get("/api/keys").await;
    assert!(!keys.to_string().contains(&text));
    let (status, _) = app.delete(&format!("/api/keys/{id}")).await;
    assert_eq!(status, 200);
    let (status, _, _) = v1(
        &app,
        "/v1/chat/completions",
        &[("authorization", &bearer(&text))],
        json!({ "model": "gpt", "messages": [{ "role": "user", "content": "x" }] }),
    )
    .await;
    assert_eq!(
        status, 401,
        "a revoked key is refused even when keys are optional"
    );
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

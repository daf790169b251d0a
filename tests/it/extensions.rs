//! The extension surface (issue 6): plugin routes on the dynamic router, tools, agents and the
//! agent runner against a mock model over real HTTP, the circuit breaker, and the event stream
//! over SSE and WebSocket.

use std::time::Duration;

use awc::ws;
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};

use crate::common::{eventually, Dirs, TestApp};
use crate::model::{MockModel, Reply};

/// A script plugin using every part of `ctx`; `tag` shows which version answers.
fn kit(tag: &str, endpoint: &str) -> String {
    format!(
        r#"const TAG = "{tag}";
export default {{
  name: "kit", version: "1.0.0",
  init(ctx) {{
    ctx.app.use((req, res, next) => {{
      if (req.get("x-block")) return res.status(403).json({{ blocked: true }});
      next();
    }});
    ctx.app.get("/items/:id", (req, res) => res.set("x-kit", TAG).json({{ id: req.params.id, q: req.query.q, tag: TAG }}));
    ctx.app.post("/echo", (req, res) => res.status(201).json({{ got: req.body, type: req.get("content-type") }}));
    ctx.app.get("/text", (req, res) => res.send("plain " + TAG));
    ctx.app.get("/boom", () => {{ throw new Error("kaboom"); }});
    ctx.app.post("/hooks/kit", (req, res) => res.json({{ ok: true }}), {{ absolute: true }});
    ctx.registerTool({{
      name: "add", description: "Adds two numbers",
      parameters: {{ type: "object", required: ["a", "b"], additionalProperties: false,
                    properties: {{ a: {{ type: "number" }}, b: {{ type: "number" }} }} }},
      execute: async ({{ a, b }}) => ({{ sum: a + b, tag: TAG }}),
    }});
    ctx.registerTool({{ name: "fail", description: "Always fails", parameters: {{}}, execute: () => {{ throw new Error("tool broke"); }} }});
    ctx.registerTool({{
      name: "ask_model", description: "Asks the model",
      parameters: {{ type: "object", properties: {{ question: {{ type: "string" }} }} }},
      execute: async ({{ question }}) => {{
        const client = ctx.resolveClient({{ provider: "openai", modelId: "mini", endpoint: "{endpoint}" }});
        const answer = await client.chat([{{ role: "user", content: question }}]);
        return {{ answer: answer.content, tokens: answer.usage.totalTokens }};
      }},
    }});
  }},
}};
"#
    )
}

fn agents_env(endpoint: &str) -> String {
    // TOML inline tables are one line each.
    let entries = [
        format!(
            r#"{{ id = "helper", displayName = "Helper", systemPromptTemplate = "You help. Today is {{{{date}}}}.", model = {{ provider = "openai", modelId = "gpt-test", endpoint = "{endpoint}", temperature = 0.2 }}, tools = {{ allow = ["add", "ask_model"], deny = ["fail"] }} }}"#
        ),
        format!(
            r#"{{ id = "claude-helper", systemPromptTemplate = "Be brief.", model = {{ provider = "anthropic", modelId = "claude-test", endpoint = "{endpoint}" }} }}"#
        ),
        format!(
            r#"{{ id = "with-fallback", model = {{ provider = "openai", modelId = "gpt-test", endpoint = "{endpoint}", fallback = {{ provider = "anthropic", modelId = "claude-backup", endpoint = "{endpoint}" }} }} }}"#
        ),
    ];
    format!("[\n{}\n]", entries.join(",\n"))
}

/// A reader of one Server-Sent Events response.
struct Sse<S> {
    body: S,
    buf: String,
}

impl<S> Sse<S>
where
    S: Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    /// The next `(event, data)` frame, skipping comments; `None` when the stream ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).ok();
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return Some((name, data));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.body.next())
                .await
                .expect("an SSE frame within 5 s")?;
            self.buf
                .push_str(&String::from_utf8_lossy(&chunk.expect("SSE body")));
        }
    }

    /// The next frame whose event is not `test.*` noise, by name.
    async fn expect(&mut self, name: &str) -> Value {
        let (got, envelope) = self.next().await.expect("stream open");
        assert_eq!(got, name, "{envelope}");
        envelope
    }
}

async fn open_sse(
    app: &TestApp,
    pattern: &str,
) -> Sse<impl Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin> {
    let resp = awc::Client::new()
        .get(app.url(&format!("/api/events?pattern={pattern}")))
        .send()
        .await
        .expect("SSE request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut sse = Sse {
        body: resp,
        buf: String::new(),
    };
    // The hello frame says the subscription is live.
    loop {
        if sse.buf.contains(": subscribed") {
            break;
        }
        let chunk = sse.body.next().await.unwrap().unwrap();
        sse.buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    sse.buf.clear();
    sse
}

#[actix_web::test]
async fn a_script_plugins_routes_answer_are_swapped_on_reload_and_removed_on_unload() {
    let dirs = Dirs::new();
    dirs.write("kit", "index.js", &kit("v1", "http://127.0.0.1:9/v1"));
    let mut app = TestApp::spawn_in(dirs.clone(), &[], vec![]).await;
    let client = app.client().clone();

    let mut resp = client
        .get(app.url("/plugins/kit/items/a%20b?q=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers().get("x-kit").unwrap(), "v1");
    assert!(resp.headers().get("x-request-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({ "id": "a b", "q": "x", "tag": "v1" }));

    let (status, echoed) = app
        .post_json("/plugins/kit/echo", json!({ "n": [1, 2] }))
        .await;
    assert_eq!(status, 201);
    assert_eq!(echoed["got"], json!({ "n": [1, 2] }));
    assert_eq!(echoed["type"], "application/json");
    let mut text = client
        .get(app.url("/plugins/kit/text"))
        .send()
        .await
        .unwrap();
    assert!(text
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(text.body().await.unwrap(), "plain v1");
    // Middleware from app.use runs first and may answer.
    let blocked = client
        .get(app.url("/plugins/kit/items/1"))
        .insert_header(("x-block", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status().as_u16(), 403);
    // The absolute route the plugin declared.
    let (status, _) = app.post_json("/hooks/kit", json!({})).await;
    assert_eq!(status, 200);

    // A throwing handler answers a JSON 500 naming the plugin; nothing else is affected.
    let (status, boom) = app.get("/plugins/kit/boom").await;
    assert_eq!(status, 500);
    assert_eq!(boom["code"], "plugin_route_failed");
    assert_eq!(boom["details"]["plugin"], "kit");
    assert!(
        boom["message"].as_str().unwrap().contains("kaboom"),
        "{boom}"
    );
    assert_eq!(app.get("/livez").await.0, 200);
    assert_eq!(app.get("/plugins/kit/items/2").await.0, 200);
    // Wrong method: 405 with Allow; unknown path: 404.
    let wrong = client
        .delete(app.url("/plugins/kit/items/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 405);
    assert_eq!(wrong.headers().get("allow").unwrap(), "GET");
    assert_eq!(
        app.get("/plugins/kit/nope").await.1["code"],
        "route_not_found"
    );

    let (_, routes) = app.get("/api/routes").await;
    let listed: Vec<(String, String, String)> = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().into(),
                r["path"].as_str().unwrap().into(),
                r["plugin"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 5, "{routes}");
    assert!(listed.contains(&("POST".into(), "/hooks/kit".into(), "kit".into())));
    assert!(listed.contains(&("GET".into(), "/plugins/kit/items/:id".into(), "kit".into())));

    // Reload swaps the routes: the new version answers at once.
    dirs.write("kit", "index.js", &kit("v2", "http://127.0.0.1:9/v1"));
    let (status, _) = app.post("/api/plugins/kit/reload").await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/plugins/kit/items/1").await.1["tag"], "v2");
    // A broken edit leaves v2 serving.
    dirs.write("kit", "index.js", "export default {");
    assert_eq!(app.post("/api/plugins/kit/reload").await.0, 422);
    assert_eq!(app.get("/plugins/kit/items/1").await.1["tag"], "v2");
    let (_, tools) = app.get("/api/tools").await;
    assert_eq!(tools["tools"].as_array().unwrap().len(), 3);

    // Unload removes routes and tools.
    let (status, _) = app.delete("/api/plugins/kit").await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/plugins/kit/items/1").await.0, 404);
    assert_eq!(app.post_json("/hooks/kit", json!({})).await.0, 404);
    assert_eq!(app.get("/api/routes").await.1["routes"], json!([]));
    assert_eq!(app.get("/api/tools").await.1["tools"], json!([]));
    let _ = app.drain_events();
    app.stop().await;
}

#[actix_web::test]
async fn colliding_routes_and_tools_are_refused_with_plugin_error() {
    let dirs = Dirs::new();
    let plugin = |name: &str, body: &str| {
        format!("export default {{ name: '{name}', version: '1.0.0', init(ctx) {{ {body} }} }};")
    };
    dirs.write("a", "index.js", &plugin("a", "ctx.app.post('/hooks/x', (q, r) => r.send('a'), { absolute: true }); ctx.registerTool({ name: 'shared', execute: () => 1 });"));
    dirs.write(
        "b",
        "index.js",
        &plugin(
            "b",
            "ctx.app.post('/hooks/:name', (q, r) => r.send('b'), { absolute: true });",
        ),
    );
    dirs.write(
        "c",
        "index.js",
        &plugin(
            "c",
            "ctx.app.get('/api/mine', (q, r) => r.send('c'), { absolute: true });",
        ),
    );
    dirs.write(
        "d",
        "index.js",
        &plugin(
            "d",
            "ctx.registerTool({ name: 'shared', execute: () => 2 });",
        ),
    );
    dirs.write(
        "e",
        "index.js",
        &plugin(
            "e",
            "ctx.registerTool({ name: 'bad schema', execute: () => 2 });",
        ),
    );
    let mut app = TestApp::spawn_in(dirs, &[], vec![]).await;
    let mut errors = std::collections::BTreeMap::new();
    while errors.len() < 4 {
        let e = app.next_event("plugin.error").await;
        errors.insert(
            e.data["plugin"].as_str().unwrap().to_string(),
            e.data["error"].as_str().unwrap().to_string(),
        );
    }
    assert!(
        errors["b"].contains("POST /hooks/:name is already mounted by plugin 'a'"),
        "{errors:?}"
    );
    assert!(
        errors["c"].contains("collides with the gateway's own routes"),
        "{errors:?}"
    );
    assert!(
        errors["d"].contains("tool 'shared' is already registered by plugin 'a'"),
        "{errors:?}"
    );
    assert!(
        errors["e"].contains("tool name 'bad schema' is invalid"),
        "{errors:?}"
    );
    // The location is the plugin's own line, not the host's glue.
    assert!(errors["d"].contains("(at d/index.js:1:"), "{errors:?}");
    // The first owner keeps serving.
    let mut resp = app.client().post(app.url("/hooks/x")).send().await.unwrap();
    assert_eq!(resp.body().await.unwrap(), "a");
    app.stop().await;
}

#[actix_web::test]
async fn tools_are_invoked_over_rest_with_schema_errors_and_tool_executed_events() {
    let model = MockModel::start().await;
    let dirs = Dirs::new();
    dirs.write("kit", "index.js", &kit("v1", &model.endpoint));
    let mut app = TestApp::spawn_in(dirs, &[], vec![]).await;

    let (_, listed) = app.get("/api/tools").await;
    let add = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "add")
        .unwrap()
        .clone();
    assert_eq!(add["plugin"], "kit");
    assert_eq!(add["parameters"]["required"], json!(["a", "b"]));

    let (status, done) = app
        .post_json(
            "/api/tools/add/invoke",
            json!({ "params": { "a": 2, "b": 3 } }),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["result"], json!({ "sum": 5, "tag": "v1" }));
    assert!(done["durationMs"].as_f64().unwrap() >= 0.0);
    let event = app.next_event("tool.executed").await;
    assert_eq!(event.data["toolName"], "add");
    assert_eq!(event.data["plugin"], "kit");
    assert_eq!(event.data["params"], json!({ "a": 2, "b": 3 }));
    assert_eq!(event.data["result"]["sum"], 5);

    // Every schema problem is reported with its path; execute never runs.
    let (status, bad) = app
        .post_json(
            "/api/tools/add/invoke",
            json!({ "params": { "a": "two", "c": 1 } }),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["code"], "invalid_tool_params");
    assert_eq!(bad["details"]["tool"], "add");
    let paths: Vec<&str> = bad["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/a") && paths.contains(&""), "{bad}");
    let event = app.next_event("tool.executed").await;
    assert!(event.data["error"]
        .as_str()
        .unwrap()
        .contains("do not match its schema"));

    let (status, failed) = app.post_json("/api/tools/fail/invoke", json!({})).await;
    assert_eq!(
        (status, failed["code"].as_str()),
        (502, Some("tool_failed"))
    );
    assert!(
        failed["message"].as_str().unwrap().contains("tool broke"),
        "{failed}"
    );
    assert_eq!(
        app.post_json("/api/tools/nope/invoke", json!({})).await.1["code"],
        "tool_not_found"
    );
    let (status, unknown_field) = app
        .post_json("/api/tools/add/invoke", json!({ "parms": {} }))
        .await;
    assert_eq!(
        (status, unknown_field["code"].as_str()),
        (400, Some("invalid_json"))
    );

    // A script tool that awaits the model (an async host call from inside the engine).
    let (status, asked) = app
        .post_json(
            "/api/tools/ask_model/invoke",
            json!({ "params": { "question": "hello?" } }),
        )
        .await;
    assert_eq!(status, 200, "{asked}");
    assert_eq!(
        asked["result"],
        json!({ "answer": "model says: hello?", "tokens": 15 })
    );
    assert_eq!(model.requests()[0].1["model"], "mini");
    app.stop().await;
    model.stop().await;
}

#[actix_web::test]
async fn the_agent_runner_calls_tools_keeps_history_and_streams_events_over_sse_and_websocket() {
    let model = MockModel::start().await;
    let dirs = Dirs::new();
    dirs.write("kit", "index.js", &kit("v1", &model.endpoint));
    let agents = agents_env(&model.endpoint);
    let app = TestApp::spawn_in(dirs, &[("SWITCHYARD__AGENTS", &agents)], vec![]).await;

    let (_, listed) = app.get("/api/agents").await;
    let ids: Vec<&str> = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude-helper", "helper", "with-fallback"]);
    let (_, helper) = app.get("/api/agents/helper").await;
    assert_eq!(helper["model"]["temperature"], 0.2);
    assert_eq!(helper["model"]["maxOutputTokens"], 4096);
    assert_eq!(helper["source"], json!({ "kind": "config" }));
    assert_eq!(
        app.get("/api/agents/nobody").await.1["code"],
        "agent_not_found"
    );

    let mut sse = open_sse(&app, "agent.*,tool.*").await;
    let (_, mut socket) = awc::Client::new()
        .ws(app.url("/api/events/ws?pattern=agent.*,tool.*"))
        .connect()
        .await
        .expect("websocket");

    model.script([
        Reply::Tools(vec![
            ("c1".into(), "add".into(), json!({ "a": 1, "b": 2 })),
            ("c2".into(), "fail".into(), json!({})),
        ]),
        Reply::Text("the sum is 3".into()),
    ]);
    let (status, turn) = app
        .post_json(
            "/api/agents/helper/chat",
            json!({ "message": "add 1 and 2", "sessionId": "s-1" }),
        )
        .await;
    assert_eq!(status, 200, "{turn}");
    assert_eq!(turn["content"], "the sum is 3");
    assert_eq!(turn["sessionId"], "s-1");
    assert_eq!(turn["toolsUsed"], json!(["add"]));
    assert_eq!(
        turn["usage"],
        json!({ "promptTokens": 20, "completionTokens": 10, "totalTokens": 30 })
    );

    let requests = model.requests();
    let first = &requests[0].1;
    assert_eq!(first["model"], "gpt-test");
    assert_eq!(first["temperature"], 0.2);
    assert!(first["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("You help. Today is 20"));
    let offered: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["add", "ask_model"], "deny and allow respected");
    let second = &requests[1].1["messages"];
    let tool_results: Vec<&Value> = second
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_results[0]["tool_call_id"], "c1");
    assert_eq!(
        serde_json::from_str::<Value>(tool_results[0]["content"].as_str().unwrap()).unwrap()["sum"],
        3
    );
    assert!(tool_results[1]["content"]
        .as_str()
        .unwrap()
        .contains("not available to this agent"));

    // The conversation continues with its history.
    let (_, again) = app
        .post_json(
            "/api/agents/helper/chat",
            json!({ "message": "and now?", "sessionId": "s-1" }),
        )
        .await;
    assert_eq!(again["content"], "model says: and now?");
    let third = &model.requests()[2].1["messages"];
    let roles: Vec<&str> = third
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "user"
        ]
    );

    // The same events, in order, over SSE and WebSocket.
    let order = [
        "agent.started",
        "tool.executed",
        "agent.completed",
        "agent.started",
        "agent.completed",
    ];
    for name in order {
        let envelope = sse.expect(name).await;
        assert_eq!(envelope["event"], name);
        if name == "tool.executed" {
            assert_eq!(envelope["data"]["toolName"], "add");
            assert_eq!(envelope["data"]["agentId"], "helper");
        }
        if name == "agent.completed" && envelope["data"]["toolCallCount"] == 2 {
            assert_eq!(envelope["data"]["usage"]["totalTokens"], 30);
        }
    }
    for name in order {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a websocket frame")
            .unwrap()
            .unwrap();
        let ws::Frame::Text(text) = frame else {
            panic!("expected text, got {frame:?}")
        };
        let envelope: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(envelope["event"], name);
    }
    socket.send(ws::Message::Close(None)).await.unwrap();

    // Anthropic's protocol: system moved out, tool results as tool_result blocks.
    model.script([
        Reply::Tools(vec![("u1".into(), "add".into(), json!({ "a": 5, "b": 5 }))]),
        Reply::Text("ten".into()),
    ]);
    let (status, claude) = app
        .post_json(
            "/api/agents/claude-helper/chat",
            json!({ "message": "5+5" }),
        )
        .await;
    assert_eq!(
        (status, claude["content"].as_str()),
        (200, Some("ten")),
        "{claude}"
    );
    assert_eq!(claude["usage"]["totalTokens"], 24);
    let requests = model.requests();
    let (path, last) = requests.last().unwrap();
    assert!(path.ends_with("/v1/messages"));
    assert_eq!(last["system"], "Be brief.");
    assert_eq!(last["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(last["messages"][2]["content"][0]["tool_use_id"], "u1");

    let (status, bad) = app
        .post_json("/api/agents/helper/chat", json!({ "message": " " }))
        .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (400, Some("invalid_chat_request"))
    );
    app.stop().await;
    model.stop().await;
}

async fn chat(app: &TestApp, agent: &str) -> (u16, Value) {
    app.post_json(
        &format!("/api/agents/{agent}/chat"),
        json!({ "message": "hi" }),
    )
    .await
}

#[actix_web::test]
async fn retries_then_the_breaker_opens_fails_fast_uses_the_fallback_and_closes_again() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    let mut app = TestApp::spawn(
        &[
            ("SWITCHYARD__AGENTS", &agents),
            ("SWITCHYARD__INFERENCE__RETRY_BASE_DELAY_MS", "1"),
            ("SWITCHYARD__INFERENCE__BREAKER_OPEN_MS", "400"),
            // The agent fails more turns in a row than would pause it (agents::).
            ("SWITCHYARD__AGENT__MAX_CONSECUTIVE_FAILURES", "0"),
        ],
        vec![],
        Default::default(),
    )
    .await;
    // 429 and 5xx are retried (twice); the third try answers.
    model.script([
        Reply::Status(429),
        Reply::Status(503),
        Reply::Text("third time".into()),
    ]);
    assert_eq!(chat(&app, "helper").await.1["content"], "third time");
    assert_eq!(model.count(), 3);
    // A 401 is the caller's problem: no retry, and it does not count against the provider.
    model.script([Reply::Status(401)]);
    let (status, unauthorized) = chat(&app, "helper").await;
    assert_eq!(
        (status, unauthorized["code"].as_str()),
        (502, Some("inference_failed"))
    );
    assert_eq!(unauthorized["details"]["status"], 401);
    assert_eq!(model.count(), 4);

    // Five failed calls (each after its two retries) open the breaker.
    model.fail_all(Some(503));
    for _ in 0..5 {
        assert_eq!(chat(&app, "helper").await.0, 502);
    }
    assert_eq!(model.count(), 4 + 15);
    let (status, open) = chat(&app, "helper").await;
    assert_eq!(
        (status, open["code"].as_str()),
        (503, Some("circuit_open")),
        "{open}"
    );
    assert_eq!(model.count(), 19, "an open breaker fails fast");
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["inference:openai"][0]["observedValue"]["state"],
        "open"
    );
    assert_eq!(health["checks"]["inference:openai"][0]["status"], "warn");
    let failed = app.next_event("agent.failed").await;
    assert_eq!(failed.data["agentId"], "helper");

    // While it is open, an agent with a fallback is answered by the fallback's provider.
    model.fail_all(None);
    let (status, fallback) = chat(&app, "with-fallback").await;
    assert_eq!(
        (status, fallback["provider"].as_str()),
        (200, Some("anthropic")),
        "{fallback}"
    );
    assert!(model.requests().last().unwrap().0.ends_with("/v1/messages"));

    // After the open period it lets calls through (half-open); two successes close it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(chat(&app, "helper").await.0, 200);
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["inference:openai"][0]["observedValue"]["state"],
        "half_open"
    );
    assert_eq!(chat(&app, "helper").await.0, 200);
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["inference:openai"][0]["observedValue"]["state"],
        "closed"
    );
    assert_eq!(
        health["checks"]["inference:openai"][0]["observedValue"]["trips"],
        1
    );
    app.stop().await;
    model.stop().await;
}

#[actix_web::test]
async fn a_client_that_never_reads_is_dropped_without_slowing_the_others() {
    let app = TestApp::spawn(
        &[("SWITCHYARD__BROKER__STREAM_CAPACITY", "16")],
        vec![],
        Default::default(),
    )
    .await;
    // The slow client: a small receive buffer, a request, and never a read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(app.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    slow.write_all(b"GET /api/events?pattern=test.* HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut good = open_sse(&app, "test.*").await;
    eventually("both subscribed", || async {
        app.broker.stats().subscribers_evicted == 0
            && app.get("/health").await.1["checks"]["broker:events"].is_array()
    })
    .await;

    // 64 KiB events, published in batches the good client keeps up with.
    let payload = "x".repeat(64 << 10);
    let mut seen = 0u64;
    let mut sent = 0u64;
    while app.broker.stats().subscribers_evicted == 0 {
        assert!(sent < 2_000, "the slow client was never dropped");
        for _ in 0..8 {
            sent += 1;
            app.publish("test.big", json!({ "n": sent, "pad": payload }));
        }
        while seen < sent {
            let data = good.expect("test.big").await;
            seen += 1;
            assert_eq!(data["data"]["n"], seen, "in order, none missed");
        }
    }
    // The good client goes on receiving.
    app.publish("test.big", json!({ "n": sent + 1, "pad": "" }));
    assert_eq!(good.expect("test.big").await["data"]["n"], sent + 1);
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["broker:events"][0]["observedValue"]["subscribersEvicted"],
        1
    );
    drop(slow);
    app.stop().await;
}

#[actix_web::test]
async fn native_plugins_mount_routes_and_register_tools_through_the_same_context() {
    let app = TestApp::spawn(
        &[(
            "SWITCHYARD__PLUGINS__NATIVE",
            r#"["event-logger", "hello"]"#,
        )],
        vec![],
        Default::default(),
    )
    .await;
    let (status, greeting) = app.get("/plugins/hello/greet/Ada").await;
    assert_eq!(
        (status, greeting),
        (200, json!({ "greeting": "Hello, Ada!" }))
    );
    let (status, done) = app
        .post_json(
            "/api/tools/hello/invoke",
            json!({ "params": { "name": "Grace" } }),
        )
        .await;
    assert_eq!(
        (status, &done["result"]),
        (200, &json!({ "greeting": "Hello, Grace!" }))
    );
    assert_eq!(done["plugin"], "hello");
    let (status, bad) = app
        .post_json(
            "/api/tools/hello/invoke",
            json!({ "params": { "name": "" } }),
        )
        .await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (422, Some("invalid_tool_params"))
    );
    // Disabling the plugin takes its route and tool away; enabling brings them back.
    assert_eq!(app.post("/api/plugins/hello/disable").await.0, 200);
    assert_eq!(app.get("/plugins/hello/greet/Ada").await.0, 404);
    assert_eq!(
        app.post_json("/api/tools/hello/invoke", json!({})).await.0,
        404
    );
    assert_eq!(app.post("/api/plugins/hello/enable").await.0, 200);
    assert_eq!(app.get("/plugins/hello/greet/Ada").await.0, 200);
    app.stop().await;
}

#[actix_web::test]
async fn a_route_that_breaks_its_time_budget_restarts_the_plugin_and_the_route_comes_back() {
    let dirs = Dirs::new();
    dirs.write(
        "spin",
        "index.js",
        "let calls = 0;\nexport default { name: 'spin', version: '1.0.0', init(ctx) {\n  ctx.app.get('/loop', () => { while (true) {} });\n  ctx.app.get('/count', (req, res) => res.json({ calls: ++calls }));\n} };\n",
    );
    let mut app = TestApp::spawn_in(
        dirs,
        &[("SWITCHYARD__PLUGINS__SCRIPT__CALL_TIMEOUT_MS", "200")],
        vec![],
    )
    .await;
    assert_eq!(app.get("/plugins/spin/count").await.1["calls"], 1);
    let (status, body) = app.get("/plugins/spin/loop").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("plugin_route_failed"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("time budget"),
        "{body}"
    );
    let restarted = app.next_event("plugin.restarted").await;
    assert_eq!(restarted.data["plugin"], "spin");
    // A fresh engine answers: its state starts over.
    eventually("the route answers again", || async {
        app.get("/plugins/spin/count").await.0 == 200
    })
    .await;
    assert_eq!(app.get("/livez").await.0, 200);
    app.stop().await;
}

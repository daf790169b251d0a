//! Open Astra's agent surface (issue 19): agents paused after failed turns in a row and
//! resumed by an operator, durable conversations (a restart keeps them) and their compaction
//! into a summary, against a mock model over real HTTP.

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::model::{MockModel, Reply};

/// `[[agents]]`: `helper` (OpenAI) and `claude-helper` (Anthropic), both on the mock model.
fn agents_env(endpoint: &str) -> String {
    format!(
        r#"[
{{ id = "helper", systemPromptTemplate = "You help.", model = {{ provider = "openai", modelId = "gpt-test", endpoint = "{endpoint}" }} }},
{{ id = "claude-helper", systemPromptTemplate = "Be brief.", model = {{ provider = "anthropic", modelId = "claude-test", endpoint = "{endpoint}" }} }}
]"#
    )
}

async fn chat(app: &TestApp, agent: &str, message: &str, session: Option<&str>) -> (u16, Value) {
    let mut body = json!({ "message": message });
    if let Some(session) = session {
        body["sessionId"] = json!(session);
    }
    app.post_json(&format!("/api/agents/{agent}/chat"), body)
        .await
}

#[actix_web::test]
async fn an_agent_failing_turns_in_a_row_is_paused_until_an_operator_resumes_it() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    let mut app = TestApp::spawn(
        &[
            ("SWITCHYARD__AGENTS", &agents),
            ("SWITCHYARD__AGENT__MAX_CONSECUTIVE_FAILURES", "3"),
        ],
        vec![],
        Default::default(),
    )
    .await;
    // A 401 is not retried and does not count against the provider's breaker.
    model.fail_all(Some(401));
    assert_eq!(chat(&app, "helper", "one", None).await.0, 502);
    assert_eq!(chat(&app, "helper", "two", None).await.0, 502);
    let (_, helper) = app.get("/api/agents/helper").await;
    assert_eq!(
        (
            helper["state"].as_str(),
            helper["consecutiveFailures"].as_u64()
        ),
        (Some("active"), Some(2)),
        "{helper}"
    );
    // A success resets the count.
    model.fail_all(None);
    assert_eq!(chat(&app, "helper", "fine", None).await.0, 200);
    assert_eq!(
        app.get("/api/agents/helper").await.1["consecutiveFailures"],
        0
    );
    model.fail_all(Some(401));
    for _ in 0..3 {
        assert_eq!(chat(&app, "helper", "again", None).await.0, 502);
    }
    let paused = app.next_event("agent.paused").await;
    assert_eq!(paused.data["agentId"], "helper");
    assert_eq!(paused.data["failures"], 3);
    assert!(
        paused.data["lastError"].as_str().unwrap().contains("401"),
        "{}",
        paused.data
    );

    // Paused: the chat answers 409 without calling the model, and says how to resume.
    let calls = model.count();
    let (status, refused) = chat(&app, "helper", "hello?", None).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("agent_paused")),
        "{refused}"
    );
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("'helper'") && message.contains("POST /api/agents/helper/resume"),
        "{message}"
    );
    assert_eq!(refused["details"]["failures"], 3);
    assert_eq!(model.count(), calls, "a paused agent calls no model");
    // Other agents are not affected.
    model.fail_all(None);
    assert_eq!(chat(&app, "claude-helper", "hi", None).await.0, 200);

    // The standing shows in the listing, the agent and /health (a warning).
    let (_, listed) = app.get("/api/agents").await;
    let row = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "helper")
        .unwrap()
        .clone();
    assert_eq!(
        (row["state"].as_str(), row["consecutiveFailures"].as_u64()),
        (Some("paused"), Some(3)),
        "{row}"
    );
    assert!(row["pausedAt"].as_str().unwrap().ends_with('Z'));
    let (_, claude) = app.get("/api/agents/claude-helper").await;
    assert_eq!(claude["state"], "active");
    let (status, health) = app.get("/health").await;
    assert_eq!(
        status, 200,
        "a paused agent warns, it does not fail the service"
    );
    assert_eq!(health["status"], "warn");
    let check = &health["checks"]["agent:helper"][0];
    assert_eq!(check["status"], "warn", "{check}");
    assert_eq!(check["observedValue"]["state"], "paused");
    assert!(check["output"]
        .as_str()
        .unwrap()
        .contains("/api/agents/helper/resume"));
    assert!(health["checks"]["agent:claude-helper"].is_null());

    // Resuming: 404 for no such agent, 409 for one that is not paused.
    let (status, missing) = app.post_json("/api/agents/nobody/resume", json!({})).await;
    assert_eq!(
        (status, missing["code"].as_str()),
        (404, Some("agent_not_found"))
    );
    let (status, not_paused) = app.post("/api/agents/claude-helper/resume").await;
    assert_eq!(
        (status, not_paused["code"].as_str()),
        (409, Some("agent_not_paused"))
    );
    let (status, bad) = app
        .post_json("/api/agents/helper/resume", json!({ "who": "x" }))
        .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_json")));
    let (status, long) = app
        .post_json(
            "/api/agents/helper/resume",
            json!({ "resumedBy": "x".repeat(201) }),
        )
        .await;
    assert_eq!((status, long["code"].as_str()), (400, Some("invalid_json")));
    assert!(long["message"].as_str().unwrap().contains("resumedBy"));
    let (status, resumed) = app
        .post_json("/api/agents/helper/resume", json!({ "resumedBy": "ops" }))
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(
        (
            resumed["state"].as_str(),
            resumed["consecutiveFailures"].as_u64()
        ),
        (Some("active"), Some(0))
    );
    let event = app.next_event("agent.resumed").await;
    assert_eq!(
        event.data,
        json!({ "agentId": "helper", "resumedBy": "ops" })
    );
    let (status, _) = app.post("/api/agents/helper/resume").await;
    assert_eq!(status, 409, "resumed already");
    assert_eq!(chat(&app, "helper", "back", None).await.0, 200);
    let (_, health) = app.get("/health").await;
    assert!(health["checks"]["agent:helper"].is_null());

    // Without a body, `resumedBy` is `api`.
    model.fail_all(Some(401));
    for _ in 0..3 {
        chat(&app, "helper", "down", None).await;
    }
    app.next_event("agent.paused").await;
    assert_eq!(app.post("/api/agents/helper/resume").await.0, 200);
    assert_eq!(
        app.next_event("agent.resumed").await.data["resumedBy"],
        "api"
    );
    app.stop().await;
    model.stop().await;
}

#[actix_web::test]
async fn zero_never_pauses() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    let app = TestApp::spawn(
        &[
            ("SWITCHYARD__AGENTS", &agents),
            ("SWITCHYARD__AGENT__MAX_CONSECUTIVE_FAILURES", "0"),
        ],
        vec![],
        Default::default(),
    )
    .await;
    model.script((0..8).map(|_| Reply::Status(401)));
    for _ in 0..8 {
        assert_eq!(chat(&app, "helper", "x", None).await.0, 502);
    }
    let (_, helper) = app.get("/api/agents/helper").await;
    assert_eq!(
        (
            helper["state"].as_str(),
            helper["consecutiveFailures"].as_u64()
        ),
        (Some("active"), Some(8))
    );
    assert_eq!(chat(&app, "helper", "x", None).await.0, 200);
    app.stop().await;
    model.stop().await;
}

/// The `messages` of the mock's `n`th request (OpenAI shape).
fn sent(model: &MockModel, n: usize) -> Vec<Value> {
    model.requests()[n].1["messages"]
        .as_array()
        .unwrap()
        .clone()
}

fn has(messages: &[Value], role: &str, needle: &str) -> bool {
    messages
        .iter()
        .any(|m| m["role"] == role && m["content"].as_str().unwrap_or("").contains(needle))
}

#[actix_web::test]
async fn a_conversation_survives_a_restart_on_both_providers() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    let env = [("SWITCHYARD__AGENTS", agents.as_str())];
    let dirs = Dirs::new();
    let app = TestApp::spawn_in(dirs.clone(), &env, vec![]).await;
    assert_eq!(
        chat(&app, "helper", "my name is Ada", Some("s1")).await.0,
        200
    );
    assert_eq!(
        chat(&app, "claude-helper", "my number is 42", Some("s1"))
            .await
            .0,
        200
    );
    app.stop().await;

    let app = TestApp::spawn_in(dirs.clone(), &env, vec![]).await;
    let before = model.count();
    let (status, answer) = chat(&app, "helper", "what is my name?", Some("s1")).await;
    assert_eq!(status, 200, "{answer}");
    let messages = sent(&model, before);
    assert!(has(&messages, "user", "my name is Ada"), "{messages:?}");
    assert!(
        has(&messages, "assistant", "model says: my name is Ada"),
        "{messages:?}"
    );
    // Anthropic's conversation too, in its own shape.
    chat(&app, "claude-helper", "and my number?", Some("s1")).await;
    let body = &model.requests()[before + 1].1;
    assert!(model.requests()[before + 1].0.ends_with("/v1/messages"));
    let texts = body["messages"].to_string();
    assert!(
        texts.contains("my number is 42") && texts.contains("model says: my number is 42"),
        "{texts}"
    );
    assert!(
        !texts.contains("Ada"),
        "conversations are per agent: {texts}"
    );
    // Another session starts empty.
    chat(&app, "helper", "who am I?", Some("s2")).await;
    let fresh = sent(&model, before + 2);
    assert!(!has(&fresh, "user", "Ada"), "{fresh:?}");
    app.stop().await;
    model.stop().await;
}

#[actix_web::test]
async fn a_conversation_past_its_budget_is_compacted_into_a_summary_the_model_then_sees() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    // About 100 tokens: two long turns do not fit.
    let env = [
        ("SWITCHYARD__AGENTS", agents.as_str()),
        ("SWITCHYARD__AGENT__CONTEXT_TOKENS", "100"),
    ];
    let dirs = Dirs::new();
    let mut app = TestApp::spawn_in(dirs.clone(), &env, vec![]).await;
    let first = format!("I like trains {}", "and more trains ".repeat(6));
    let second = format!("Now tell me about boats {}", "and ships ".repeat(8));
    assert_eq!(chat(&app, "helper", &first, Some("c1")).await.0, 200);
    assert_eq!(model.count(), 1);
    let (status, answer) = chat(&app, "helper", &second, Some("c1")).await;
    assert_eq!(status, 200, "{answer}");
    let compacted = app.next_event("agent.compacted").await;
    assert_eq!(
        compacted.data,
        json!({ "agentId": "helper", "sessionId": "c1", "messagesCompacted": 2, "summarizedByModel": true })
    );
    // The model was asked to summarise the oldest messages…
    assert_eq!(model.count(), 3);
    let ask = sent(&model, 1);
    assert!(has(&ask, "system", "Summarise the conversation"), "{ask:?}");
    // (The transcript is clipped to about half the budget, its newest part kept.)
    assert!(
        has(&ask, "user", "assistant: model says: I like trains"),
        "{ask:?}"
    );
    assert!(model.requests()[1].1["tools"].is_null());
    // …and the turn sent its summary instead of them.
    let turn = sent(&model, 2);
    assert!(
        has(
            &turn,
            "system",
            "Summary of the earlier conversation: model says:"
        ),
        "{turn:?}"
    );
    assert!(!has(&turn, "user", "I like trains"), "{turn:?}");
    assert!(has(&turn, "user", "Now tell me about boats"));
    // The summary's tokens count in the turn's usage (two calls of 15).
    assert_eq!(answer["usage"]["totalTokens"], 30);

    // The summary is kept across a restart.
    app.stop().await;
    let mut app = TestApp::spawn_in(dirs, &env, vec![]).await;
    // The model fails to summarise this time: a plain digest stands in.
    model.script([Reply::Status(401)]);
    let (status, _) = chat(&app, "helper", "and planes?", Some("c1")).await;
    assert_eq!(status, 200);
    let compacted = app.next_event("agent.compacted").await;
    assert_eq!(compacted.data["summarizedByModel"], false);
    let turn = sent(&model, model.count() - 1);
    assert!(
        has(
            &turn,
            "system",
            "Earlier messages (compacted without a model summary)"
        ),
        "{turn:?}"
    );
    assert!(
        has(&turn, "system", "ships"),
        "the digest keeps the newest text: {turn:?}"
    );
    app.stop().await;
    model.stop().await;
}

/// A script plugin with the tools `add` and `fail`.
const TOOLS: &str = r#"export default {
  name: "tools", version: "1.0.0",
  init(ctx) {
    ctx.registerTool({
      name: "add", description: "Adds two numbers",
      parameters: { type: "object", required: ["a", "b"], properties: { a: { type: "number" }, b: { type: "number" } } },
      execute: async ({ a, b }) => ({ sum: a + b }),
    });
    ctx.registerTool({ name: "fail", description: "Always fails", parameters: {}, execute: () => { throw new Error("tool broke"); } });
  },
};
"#;

/// `helper` may use `add` only; `claude-helper` every tool.
fn tool_agents_env(endpoint: &str) -> String {
    format!(
        r#"[
{{ id = "helper", systemPromptTemplate = "You help.", model = {{ provider = "openai", modelId = "gpt-test", endpoint = "{endpoint}" }}, tools = {{ allow = ["add"] }} }},
{{ id = "claude-helper", model = {{ provider = "anthropic", modelId = "claude-test", endpoint = "{endpoint}" }} }}
]"#
    )
}

/// Splits Server-Sent Events text into `(event, data)` frames.
fn frames(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|f| !f.trim().is_empty())
        .map(|frame| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).expect("JSON data");
                }
            }
            (name, data)
        })
        .collect()
}

/// A streamed turn at `path` (with `Accept: text/event-stream`): status and frames.
async fn stream_chat(app: &TestApp, path: &str, body: Value) -> (u16, Vec<(String, Value)>) {
    let mut resp = app
        .client()
        .post(app.url(path))
        .insert_header(("accept", "text/event-stream"))
        .send_json(&body)
        .await
        .expect("request");
    let bytes = resp.body().limit(1 << 22).await.expect("body");
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    if resp.status().as_u16() != 200 {
        return (
            resp.status().as_u16(),
            vec![(
                "json".into(),
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )],
        );
    }
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    (200, frames(&text))
}

/// The agent and tool events from now until `last` (included), in order, with their data.
async fn events_until(app: &mut TestApp, last: &str) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let wait = async {
        loop {
            let event = app.events.recv().await.expect("event stream open");
            if event.event.starts_with("agent.") || event.event.starts_with("tool.") {
                seen.push((event.event.clone(), event.data.clone()));
            }
            if event.event == last {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {last} within 5 s"));
    seen
}

#[actix_web::test]
async fn a_streamed_turn_sends_deltas_tool_calls_and_results_then_its_usage_on_both_providers() {
    let model = MockModel::start().await;
    let dirs = Dirs::new();
    dirs.write("tools", "index.js", TOOLS);
    let agents = tool_agents_env(&model.endpoint);
    let mut app = TestApp::spawn_in(dirs, &[("SWITCHYARD__AGENTS", &agents)], vec![]).await;
    crate::common::eventually("the tools are registered", || async {
        app.get("/api/tools/add").await.0 == 200
    })
    .await;
    app.drain_events();

    // OpenAI: a tool call it may make and one it may not, streamed in fragments, then text.
    model.script([
        Reply::Tools(vec![
            ("c1".into(), "add".into(), json!({ "a": 1, "b": 2 })),
            ("c2".into(), "fail".into(), json!({})),
        ]),
        Reply::Text("the sum is 3".into()),
    ]);
    let (status, got) = stream_chat(
        &app,
        "/api/agents/helper/chat",
        json!({ "message": "add 1 and 2", "sessionId": "st" }),
    )
    .await;
    assert_eq!(status, 200, "{got:?}");
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "tool_call",
            "tool_result",
            "tool_call",
            "tool_result",
            "delta",
            "delta",
            "delta",
            "complete"
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0].1,
        json!({ "type": "tool_call", "id": "c1", "name": "add", "arguments": { "a": 1, "b": 2 } })
    );
    assert_eq!(got[1].1["result"], json!({ "sum": 3 }));
    assert_eq!(got[2].1["name"], "fail");
    assert!(
        got[3].1["result"]["error"]
            .as_str()
            .unwrap()
            .contains("not available to this agent"),
        "the deny list holds in a streamed turn: {:?}",
        got[3]
    );
    let text: String = got[4..7]
        .iter()
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "the sum is 3");
    let complete = &got[7].1;
    assert_eq!(complete["type"], "complete");
    assert_eq!(complete["content"], "the sum is 3");
    assert_eq!(complete["sessionId"], "st");
    assert_eq!(complete["toolsUsed"], json!(["add"]));
    assert_eq!(complete["toolCallCount"], 2);
    assert_eq!(
        complete["usage"],
        json!({ "promptTokens": 20, "completionTokens": 10, "totalTokens": 30 }),
        "both calls' usage chunks"
    );
    let requests = model.requests();
    assert!(requests.iter().all(|(_, body)| body["stream"] == true));
    assert_eq!(requests[0].1["stream_options"]["include_usage"], true);
    // The tools offered were the allowed one only.
    assert_eq!(requests[0].1["tools"].as_array().unwrap().len(), 1);

    // The bus saw every step, in order.
    let seen = events_until(&mut app, "agent.completed").await;
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "agent.started",
            "agent.stream.tool_call",
            "tool.executed",
            "agent.stream.tool_result",
            "agent.stream.tool_call",
            "agent.stream.tool_result",
            "agent.stream.delta",
            "agent.stream.delta",
            "agent.stream.delta",
            "agent.stream.complete",
            "agent.completed"
        ],
        "{seen:?}"
    );
    assert_eq!(
        seen[1].1,
        json!({ "agentId": "helper", "sessionId": "st", "toolCallId": "c1", "toolName": "add", "arguments": { "a": 1, "b": 2 } })
    );
    assert_eq!(seen[2].1["agentId"], "helper");
    assert_eq!(seen[3].1["result"], json!({ "sum": 3 }));
    assert_eq!(
        seen[6].1,
        json!({ "agentId": "helper", "sessionId": "st", "delta": "the " })
    );
    assert_eq!(seen[9].1["usage"]["totalTokens"], 30);
    assert_eq!(seen[9].1["toolCallCount"], 2);

    // The streamed turn is in the conversation: a plain turn after it sends it back.
    let before = model.count();
    assert_eq!(chat(&app, "helper", "and now?", Some("st")).await.0, 200);
    let messages = sent(&model, before);
    assert!(has(&messages, "assistant", "the sum is 3"), "{messages:?}");
    assert!(has(&messages, "tool", "\"sum\":3"), "{messages:?}");

    // Anthropic, at the alias: tool_use with its input in pieces, text deltas, usage.
    model.script([
        Reply::Tools(vec![("t1".into(), "add".into(), json!({ "a": 2, "b": 2 }))]),
        Reply::Text("four".into()),
    ]);
    let (status, got) = stream_chat(
        &app,
        "/api/agents/claude-helper/chat/stream",
        json!({ "message": "add 2 and 2" }),
    )
    .await;
    assert_eq!(status, 200, "{got:?}");
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["tool_call", "tool_result", "delta", "complete"],
        "{got:?}"
    );
    assert_eq!(got[0].1["arguments"], json!({ "a": 2, "b": 2 }));
    assert_eq!(got[1].1["result"], json!({ "sum": 4 }));
    assert_eq!(got[2].1["text"], "four");
    assert_eq!(got[3].1["content"], "four");
    assert_eq!(got[3].1["provider"], "anthropic");
    // message_start's input tokens and message_delta's output tokens, twice.
    assert_eq!(
        got[3].1["usage"],
        json!({ "promptTokens": 16, "completionTokens": 8, "totalTokens": 24 })
    );
    assert!(model.requests().last().unwrap().0.ends_with("/v1/messages"));
    assert_eq!(model.requests().last().unwrap().1["stream"], true);
    app.stop().await;
    model.stop().await;
}

#[actix_web::test]
async fn a_stream_broken_mid_way_ends_with_an_error_frame_and_counts_as_a_failed_turn() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    let mut app = TestApp::spawn(
        &[
            ("SWITCHYARD__AGENTS", &agents),
            ("SWITCHYARD__AGENT__MAX_CONSECUTIVE_FAILURES", "2"),
            ("SWITCHYARD__INFERENCE__RETRY_BASE_DELAY_MS", "1"),
        ],
        vec![],
        Default::default(),
    )
    .await;
    for agent in ["helper", "claude-helper"] {
        model.script([Reply::CutOff(vec!["par".into(), "tial".into()], 0)]);
        let before = model.count();
        let (status, got) = stream_chat(
            &app,
            &format!("/api/agents/{agent}/chat"),
            json!({ "message": "hi", "sessionId": "broken" }),
        )
        .await;
        assert_eq!(status, 200);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["delta", "delta", "error"], "{got:?}");
        let error = &got[2].1;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("inference_failed")),
            "{error}"
        );
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("before the answer was complete"));
        assert_eq!(model.count(), before + 1, "text was sent: no retry");
        let failed = app.next_event("agent.failed").await;
        assert_eq!(failed.data["agentId"], agent);
    }
    // A failed streamed turn counts like any other.
    assert_eq!(
        app.get("/api/agents/helper").await.1["consecutiveFailures"],
        1
    );
    // A failure before any text is retried (a 503 then the answer).
    model.script([Reply::Status(503), Reply::Text("fine".into())]);
    let (_, got) = stream_chat(
        &app,
        "/api/agents/helper/chat",
        json!({ "message": "again", "sessionId": "broken" }),
    )
    .await;
    assert_eq!(got.last().unwrap().0, "complete", "{got:?}");
    assert_eq!(got.last().unwrap().1["content"], "fine");
    // The failed turn kept nothing: the history has this turn only.
    let history = sent(&model, model.count() - 1);
    assert!(!has(&history, "assistant", "partial"), "{history:?}");
    // A turn refused before it starts is a plain JSON error with its status.
    let (status, refused) =
        stream_chat(&app, "/api/agents/nobody/chat", json!({ "message": "x" })).await;
    assert_eq!(status, 404);
    assert_eq!(refused[0].1["code"], "agent_not_found");
    model.fail_all(Some(401));
    for _ in 0..2 {
        stream_chat(
            &app,
            "/api/agents/helper/chat/stream",
            json!({ "message": "x" }),
        )
        .await;
    }
    app.next_event("agent.paused").await;
    let (status, refused) = stream_chat(
        &app,
        "/api/agents/helper/chat/stream",
        json!({ "message": "x" }),
    )
    .await;
    assert_eq!(
        (status, refused[0].1["code"].as_str()),
        (409, Some("agent_paused"))
    );
    app.stop().await;
    model.stop().await;
}

#[actix_web::test]
async fn a_client_that_leaves_mid_stream_does_not_cut_the_turn_short() {
    let model = MockModel::start().await;
    let agents = agents_env(&model.endpoint);
    let mut app = TestApp::spawn(
        &[("SWITCHYARD__AGENTS", &agents)],
        vec![],
        Default::default(),
    )
    .await;
    let answer = "a slow answer that comes in many small pieces";
    model.script([Reply::Slow(answer.into(), 30)]);
    {
        let mut resp = app
            .client()
            .post(app.url("/api/agents/helper/chat/stream"))
            .send_json(&json!({ "message": "talk slowly", "sessionId": "gone" }))
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        use futures::StreamExt;
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), resp.next())
            .await
            .expect("a first frame")
            .expect("a chunk")
            .expect("bytes");
        assert!(String::from_utf8_lossy(&first).starts_with("event: delta"));
        // The response (and its connection) is dropped here, mid-stream.
    }
    let done = app.next_event("agent.completed").await;
    assert_eq!(done.data["sessionId"], "gone");
    // The whole answer is in the conversation, and the service serves on.
    let before = model.count();
    let (status, frames) = stream_chat(
        &app,
        "/api/agents/helper/chat",
        json!({ "message": "and then?", "sessionId": "gone" }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(frames.last().unwrap().0, "complete");
    let messages = sent(&model, before);
    assert!(has(&messages, "assistant", answer), "{messages:?}");
    let (_, health) = app.get("/health").await;
    assert_eq!(health["status"], "pass", "{health}");
    app.stop().await;
    model.stop().await;
}

/// A script plugin whose tool streams a model call and reports the chunks it got.
fn streaming_plugin(endpoint: &str) -> String {
    format!(
        r#"export default {{
  name: "streamer", version: "1.0.0",
  init(ctx) {{
    const client = ctx.resolveClient({{ provider: "anthropic", modelId: "claude-test", endpoint: "{endpoint}" }});
    ctx.registerTool({{
      name: "ask_stream", description: "Streams a model call", parameters: {{}},
      execute: async ({{ question, stopEarly }}) => {{
        const deltas = [];
        let result = null;
        try {{
          for await (const chunk of client.chat([{{ role: "user", content: question }}], {{ stream: true }})) {{
            if (chunk.type === "delta") deltas.push(chunk.text);
            else result = chunk.result;
            if (stopEarly && deltas.length === 1) break;
          }}
        }} catch (error) {{
          return {{ deltas, error: error.message, code: error.code }};
        }}
        return {{ deltas, content: result && result.content, tokens: result && result.usage.totalTokens }};
      }},
    }});
  }},
}};
"#
    )
}

#[actix_web::test]
async fn a_script_plugin_streams_a_model_call_with_an_async_iterator() {
    let model = MockModel::start().await;
    let dirs = Dirs::new();
    dirs.write("streamer", "index.js", &streaming_plugin(&model.endpoint));
    let app = TestApp::spawn_in(dirs, &[], vec![]).await;
    crate::common::eventually("the tool is registered", || async {
        app.get("/api/tools/ask_stream").await.0 == 200
    })
    .await;
    let invoke = |params: Value| {
        let app = &app;
        async move {
            let (status, body) = app
                .post_json("/api/tools/ask_stream/invoke", json!({ "params": params }))
                .await;
            assert_eq!(status, 200, "{body}");
            body["result"].clone()
        }
    };
    model.script([Reply::Text("streamed to the plugin".into())]);
    let got = invoke(json!({ "question": "hi" })).await;
    assert_eq!(
        got["deltas"],
        json!(["stre", "amed", " to ", "the ", "plug", "in"])
    );
    assert_eq!(got["content"], "streamed to the plugin");
    assert_eq!(got["tokens"], 12);
    assert_eq!(model.requests().last().unwrap().1["stream"], true);
    // A stream broken mid-way rejects the iteration with a code, after what arrived.
    model.script([Reply::CutOff(vec!["half".into()], 0)]);
    let got = invoke(json!({ "question": "hi" })).await;
    assert_eq!(got["deltas"], json!(["half"]));
    assert_eq!(got["code"], "inference_failed");
    assert!(got["error"]
        .as_str()
        .unwrap()
        .contains("before the answer was complete"));
    // Leaving the loop early is fine, and the plugin serves on.
    model.script([Reply::Slow("a long streamed answer".into(), 10)]);
    let got = invoke(json!({ "question": "hi", "stopEarly": true })).await;
    assert_eq!(got["deltas"], json!(["a lo"]));
    model.script([Reply::Text("again".into())]);
    assert_eq!(
        invoke(json!({ "question": "hi" })).await["content"],
        "again"
    );
    app.stop().await;
    model.stop().await;
}

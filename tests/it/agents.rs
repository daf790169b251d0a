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

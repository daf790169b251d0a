//! A mock inference provider: real HTTP on a free port, speaking OpenAI chat completions
//! (`POST /v1/chat/completions`) and Anthropic messages (`POST /v1/messages`). Replies are
//! scripted (text, tool calls, HTTP errors); with nothing scripted it answers with a text that
//! names the last user message. Every request is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    Text(String),
    /// The model asks for these tool calls: `(id, name, arguments)`.
    Tools(Vec<(String, String, Value)>),
    Status(u16),
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Reply>>,
    /// When set, every request answers this status.
    failing: Mutex<Option<u16>>,
    requests: Mutex<Vec<(String, Value)>>,
}

pub struct MockModel {
    /// `http://127.0.0.1:port/v1`, the endpoint to configure.
    pub endpoint: String,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
}

impl MockModel {
    pub async fn start() -> MockModel {
        let state = Arc::new(State::default());
        let data = web::Data::from(state.clone());
        let (base, handle) = crate::mock::serve(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::default().limit(16 << 20))
                .default_service(web::to(answer))
        });
        MockModel {
            endpoint: format!("{base}/v1"),
            state,
            server: handle,
        }
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Every request answers `status` (None: back to normal).
    pub fn fail_all(&self, status: Option<u16>) {
        *self.state.failing.lock().unwrap() = status;
    }

    /// Bodies received so far, with their paths.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

fn last_user_text(body: &Value) -> String {
    let Some(messages) = body["messages"].as_array() else {
        return String::new();
    };
    let last = messages.iter().rev().find(|m| m["role"] == "user");
    match last.map(|m| &m["content"]) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

async fn answer(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = req.path().to_string();
    state
        .requests
        .lock()
        .unwrap()
        .push((path.clone(), body.clone()));
    let anthropic = path.ends_with("/messages");
    if !anthropic && !path.ends_with("/chat/completions") {
        return HttpResponse::NotFound().finish();
    }
    if let Some(status) = *state.failing.lock().unwrap() {
        return error(status);
    }
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| Reply::Text(format!("model says: {}", last_user_text(&body))));
    match (reply, anthropic) {
        (Reply::Status(status), _) => error(status),
        (Reply::Text(text), false) => HttpResponse::Ok().json(json!({
            "id": "chatcmpl-1", "model": body["model"],
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 }
        })),
        (Reply::Tools(calls), false) => HttpResponse::Ok().json(json!({
            "id": "chatcmpl-2", "model": body["model"],
            "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
                "tool_calls": calls.iter().map(|(id, name, args)| json!({
                    "id": id, "type": "function", "function": { "name": name, "arguments": args.to_string() } })).collect::<Vec<_>>() } }],
            "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 }
        })),
        (Reply::Text(text), true) => HttpResponse::Ok().json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{ "type": "text", "text": text }], "stop_reason": "end_turn",
            "usage": { "input_tokens": 8, "output_tokens": 4 }
        })),
        (Reply::Tools(calls), true) => HttpResponse::Ok().json(json!({
            "id": "msg_2", "type": "message", "role": "assistant", "model": body["model"],
            "content": calls.iter().map(|(id, name, args)| json!({ "type": "tool_use", "id": id, "name": name, "input": args })).collect::<Vec<_>>(),
            "stop_reason": "tool_use",
            "usage": { "input_tokens": 8, "output_tokens": 4 }
        })),
    }
}

fn error(status: u16) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({ "error": { "message": format!("mock failure {status}") } }))
}

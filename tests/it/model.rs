//! A mock inference provider: real HTTP on a free port, speaking OpenAI chat completions
//! (`POST /v1/chat/completions`) and Anthropic messages (`POST /v1/messages`). Replies are
//! scripted (text, tool calls, HTTP errors); with nothing scripted it answers with a text that
//! names the last user message. Every request is recorded. A request with `"stream": true` is
//! answered as a stream (OpenAI `chat.completion.chunk` events or Anthropic's message events):
//! text in pieces of a few characters, tool-call arguments in two fragments.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    Text(String),
    /// The model asks for these tool calls: `(id, name, arguments)`.
    Tools(Vec<(String, String, Value)>),
    Status(u16),
    /// Streamed only: these text pieces, each after `ms`, then the stream stops without saying
    /// it is complete (cut off).
    CutOff(Vec<String>, u64),
    /// Streamed: this text in pieces, each after `ms` (not streamed: the text).
    Slow(String, u64),
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
    if body["stream"] == true {
        return stream(reply, anthropic, &body);
    }
    match (reply, anthropic) {
        (Reply::Status(status), _) => error(status),
        (Reply::CutOff(..), _) => error(500),
        (Reply::Slow(text, _), anthropic) => answer_text(text, anthropic, body).await,
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

async fn answer_text(text: String, anthropic: bool, body: Value) -> HttpResponse {
    if anthropic {
        HttpResponse::Ok().json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{ "type": "text", "text": text }], "stop_reason": "end_turn",
            "usage": { "input_tokens": 8, "output_tokens": 4 }
        }))
    } else {
        HttpResponse::Ok().json(json!({
            "id": "chatcmpl-1", "model": body["model"],
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 }
        }))
    }
}

/// Pieces of `text` of at most 4 characters.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

fn sse(event: Option<&str>, data: Value) -> String {
    match event {
        Some(e) => format!("event: {e}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

/// A streamed answer: its frames, sent `delay_ms` apart.
fn stream(reply: Reply, anthropic: bool, body: &Value) -> HttpResponse {
    let model = body["model"].clone();
    let (frames, delay_ms): (Vec<String>, u64) = match (reply, anthropic) {
        (Reply::Status(status), _) => return error(status),
        (Reply::Text(text), false) => (openai_text(&model, pieces(&text), true), 0),
        (Reply::Slow(text, ms), false) => (openai_text(&model, pieces(&text), true), ms),
        (Reply::CutOff(parts, ms), false) => (openai_text(&model, parts, false), ms),
        (Reply::Text(text), true) => (anthropic_text(&model, pieces(&text), true), 0),
        (Reply::Slow(text, ms), true) => (anthropic_text(&model, pieces(&text), true), ms),
        (Reply::CutOff(parts, ms), true) => (anthropic_text(&model, parts, false), ms),
        (Reply::Tools(calls), false) => {
            let mut frames = Vec::new();
            for (i, (id, name, args)) in calls.iter().enumerate() {
                let args = args.to_string();
                let (a, b) = args.split_at(args.len() / 2);
                frames.push(sse(None, json!({ "object": "chat.completion.chunk", "model": model, "choices": [{ "index": 0,
                    "delta": { "tool_calls": [{ "index": i, "id": id, "type": "function", "function": { "name": name, "arguments": "" } }] } }] })));
                for part in [a, b] {
                    frames.push(sse(None, json!({ "object": "chat.completion.chunk", "choices": [{ "index": 0,
                        "delta": { "tool_calls": [{ "index": i, "function": { "arguments": part } }] } }] })));
                }
            }
            frames.push(sse(None, json!({ "object": "chat.completion.chunk", "choices": [{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }] })));
            frames.push(sse(
                None,
                json!({ "object": "chat.completion.chunk", "choices": [],
                "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 } }),
            ));
            frames.push("data: [DONE]\n\n".into());
            (frames, 0)
        }
        (Reply::Tools(calls), true) => {
            let mut frames = vec![sse(
                Some("message_start"),
                json!({ "type": "message_start",
                "message": { "id": "msg_s", "model": model, "usage": { "input_tokens": 8, "output_tokens": 1 } } }),
            )];
            for (i, (id, name, args)) in calls.iter().enumerate() {
                let args = args.to_string();
                let (a, b) = args.split_at(args.len() / 2);
                frames.push(sse(
                    Some("content_block_start"),
                    json!({ "type": "content_block_start", "index": i,
                    "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } }),
                ));
                for part in [a, b] {
                    frames.push(sse(
                        Some("content_block_delta"),
                        json!({ "type": "content_block_delta", "index": i,
                        "delta": { "type": "input_json_delta", "partial_json": part } }),
                    ));
                }
                frames.push(sse(
                    Some("content_block_stop"),
                    json!({ "type": "content_block_stop", "index": i }),
                ));
            }
            frames.push(sse(Some("message_delta"), json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 4 } })));
            frames.push(sse(Some("message_stop"), json!({ "type": "message_stop" })));
            (frames, 0)
        }
    };
    let body = futures::stream::iter(frames).then(move |frame| async move {
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        Ok::<_, actix_web::Error>(web::Bytes::from(frame))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(Box::pin(body))
}

fn openai_text(model: &Value, parts: Vec<String>, complete: bool) -> Vec<String> {
    let mut frames: Vec<String> = parts
        .iter()
        .map(|p| sse(None, json!({ "object": "chat.completion.chunk", "model": model, "choices": [{ "index": 0, "delta": { "content": p } }] })))
        .collect();
    if complete {
        frames.push(sse(None, json!({ "object": "chat.completion.chunk", "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] })));
        frames.push(sse(
            None,
            json!({ "object": "chat.completion.chunk", "choices": [],
            "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 } }),
        ));
        frames.push("data: [DONE]\n\n".into());
    }
    frames
}

fn anthropic_text(model: &Value, parts: Vec<String>, complete: bool) -> Vec<String> {
    let mut frames = vec![
        sse(
            Some("message_start"),
            json!({ "type": "message_start",
            "message": { "id": "msg_s", "model": model, "usage": { "input_tokens": 8, "output_tokens": 1 } } }),
        ),
        sse(
            Some("content_block_start"),
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
    ];
    for p in parts {
        frames.push(sse(Some("content_block_delta"), json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": p } })));
    }
    if complete {
        frames.push(sse(
            Some("content_block_stop"),
            json!({ "type": "content_block_stop", "index": 0 }),
        ));
        frames.push(sse(Some("message_delta"), json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 4 } })));
        frames.push(sse(Some("message_stop"), json!({ "type": "message_stop" })));
    }
    frames
}

fn error(status: u16) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({ "error": { "message": format!("mock failure {status}") } }))
}

//! A mock upstream for session tests: real HTTP on a free port, OpenAI- and Anthropic-shaped
//! JSON, failures on demand (status codes, delays, malformed JSON) and a token endpoint.
//! Every request is recorded (path, headers, JSON body) for assertions.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    tokens: AtomicU64,
}

pub struct MockUpstream {
    pub base: String,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
}

/// Serves `app` on a free loopback port with one worker; returns `http://addr` and the handle.
pub fn serve<F, A>(app: F) -> (String, actix_web::dev::ServerHandle)
where
    F: Fn() -> App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(app)
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (base, handle)
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let state = Arc::new(State::default());
        let data = web::Data::from(state.clone());
        let (base, handle) = serve(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/",
                    web::get().to(|| async { HttpResponse::Ok().json(json!({"ok": true})) }),
                )
                .route(
                    "/health",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
                .route("/auth/token", web::post().to(token))
                .default_service(web::to(answer))
        });
        MockUpstream {
            base,
            state,
            server: handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Requests so far to `path`.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Issues a token out of band, making every earlier one invalid.
    pub fn rotate_token(&self) {
        self.state.tokens.fetch_add(1, Ordering::SeqCst);
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state.tokens.load(Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

fn record(state: &State, req: &HttpRequest, body: &[u8]) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    state.requests.lock().unwrap().push(Recorded {
        path: req.path().to_string(),
        headers,
        body: body.clone(),
    });
    body
}

/// `POST /auth/token`: `{data: {token: "tok-N"}, expires_in: 1}`.
async fn token(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    record(&state, &req, &body);
    let n = state.tokens.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Ok().json(json!({ "data": { "token": format!("tok-{n}") }, "expires_in": 1 }))
}

/// The last user message of an OpenAI-style body, or the `message` field.
fn user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .or_else(|| body["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn answer(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body = record(&state, &req, &body);
    let path = req.path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["chat"] => HttpResponse::Ok().json(json!({ "reply": format!("echo: {}", user_text(&body)) })),
        ["openai"] => HttpResponse::Ok().json(json!({
            "id": "chatcmpl-1",
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("openai says: {}", user_text(&body)) } }],
            "usage": { "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12 }
        })),
        ["anthropic"] => HttpResponse::Ok().json(json!({
            "content": [
                { "type": "tool_use", "id": "t1", "name": "x", "input": {} },
                { "type": "text", "text": format!("claude says: {}", user_text(&body)) }
            ],
            "usage": { "input_tokens": 3, "output_tokens": 4 }
        })),
        ["secure"] => {
            // Only the newest token is valid.
            let newest = format!("Bearer tok-{}", state.tokens.load(Ordering::SeqCst));
            let ok = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(newest.as_str());
            if ok {
                HttpResponse::Ok().json(json!({ "reply": "secret ok" }))
            } else {
                HttpResponse::Unauthorized().json(json!({ "error": { "message": "no token" } }))
            }
        }
        ["fail", status] => {
            let code = status.parse::<u16>().unwrap_or(500);
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                .json(json!({ "error": { "message": "quota exceeded" } }))
        }
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
            HttpResponse::Ok().json(json!({ "reply": format!("slow: {}", user_text(&body)) }))
        }
        ["malformed"] => HttpResponse::Ok().content_type("application/json").body("{not json"),
        _ => HttpResponse::NotFound().finish(),
    }
}

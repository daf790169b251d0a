//! Real protocol servers on loopback for the connector tests: HTTPS with certificates from a
//! CA made here (trusted, expired, for another name, and one that asks for a client
//! certificate), Server-Sent Events (OpenAI- and Anthropic-shaped, slow, broken mid-stream,
//! resumable with `Last-Event-ID`, and one that notices when its reader goes away), and a
//! WebSocket chat (ids, out-of-order answers, streamed answers, a connection dropped on
//! request). Every request is recorded for assertions.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, StreamHandler};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct Log {
    seen: Mutex<Vec<Seen>>,
    /// A streaming body was dropped before it finished (its reader went away).
    pub abandoned: AtomicBool,
    /// Requests to the resumable stream, to tell the first from the resumption.
    resumes: AtomicU32,
}

impl Log {
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    fn record(&self, req: &HttpRequest, body: &[u8]) -> Value {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.seen.lock().unwrap().push(Seen {
            path: req.path().to_string(),
            version: format!("{:?}", req.version()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect(),
            body: body.clone(),
        });
        body
    }
}

/// A running upstream: its base URL and what it saw.
pub struct Upstream {
    pub base: String,
    pub log: Arc<Log>,
    handle: actix_web::dev::ServerHandle,
}

impl Upstream {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

// ---- Certificates ------------------------------------------------------------------------------

/// A CA made for one test, the files of the certificates it signs, and their directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    /// The CA certificate (what a target's `tls.caFile` names).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names`, valid now unless `expired`.
    pub fn issue(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration presenting `issued`; with `clients_of`, it demands a client
/// certificate signed by that CA (mutual TLS).
fn server_config(issued: &Issued, clients_of: Option<&Path>) -> rustls::ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&issued.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients_of {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).unwrap()
}

// ---- The servers -------------------------------------------------------------------------------

/// Starts the upstream app on a free loopback port, over TLS when `tls` is given.
pub fn start(tls: Option<rustls::ServerConfig>) -> Upstream {
    let log = Arc::new(Log::default());
    let data = web::Data::from(log.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/health",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            )
            .route("/ws", web::get().to(websocket))
            .route("/sse/{kind}", web::to(event_stream))
            .default_service(web::to(answer))
    })
    .workers(1)
    .disable_signals();
    let (scheme, server) = match tls {
        Some(config) => (
            "https",
            server.listen_rustls_0_23(listener, config).unwrap(),
        ),
        None => ("http", server.listen(listener).unwrap()),
    };
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Upstream {
        base: format!("{scheme}://{addr}"),
        log,
        handle,
    }
}

/// An HTTPS upstream presenting `issued` (demanding client certificates of `clients_of`).
pub fn start_https(issued: &Issued, clients_of: Option<&Path>) -> Upstream {
    start(Some(server_config(issued, clients_of)))
}

/// `POST /chat`: `{reply: "echo: <message>"}`.
async fn answer(log: web::Data<Log>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let body = log.record(&req, &body);
    let message = body["message"].as_str().unwrap_or_default();
    HttpResponse::Ok().json(json!({ "reply": format!("echo: {message}") }))
}

/// Marks the log when a response body is dropped before its end.
struct Watch {
    log: Arc<Log>,
    finished: bool,
}

impl Watch {
    /// The body ended on its own terms (finished, or failed on purpose).
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.finished {
            self.log.abandoned.store(true, Ordering::SeqCst);
        }
    }
}

/// One piece of a scripted body: wait, then send (or fail the connection).
enum Step {
    Send(Duration, String),
    Fail(Duration),
}

fn scripted(log: Arc<Log>, steps: Vec<Step>, content_type: &str) -> HttpResponse {
    let watch = Watch {
        log,
        finished: false,
    };
    let body = futures::stream::unfold(
        (steps.into_iter(), watch),
        |(mut steps, mut watch)| async move {
            match steps.next() {
                Some(Step::Send(delay, text)) => {
                    tokio::time::sleep(delay).await;
                    Some((Ok(web::Bytes::from(text)), (steps, watch)))
                }
                Some(Step::Fail(delay)) => {
                    tokio::time::sleep(delay).await;
                    watch.finish();
                    let error = actix_web::error::ErrorInternalServerError("the upstream died");
                    Some((Err(error), (steps, watch)))
                }
                None => {
                    watch.finish();
                    None
                }
            }
        },
    );
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(body)
}

fn openai_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({ "id": "c1", "object": "chat.completion.chunk", "choices": [{ "index": 0, "delta": { "content": text } }] })
    )
}

/// The streams, by `kind`:
/// - `openai`: the user's message back in three chunks (20 ms apart), a usage chunk, `[DONE]`;
/// - `anthropic`: Anthropic's event types, text in `content_block_delta`, `message_stop`;
/// - `broken`: two chunks, then the connection dies;
/// - `endless`: a chunk every 50 ms for a minute (to notice a reader that leaves);
/// - `resumable`: event ids; the first request dies after id 2, a request with
///   `Last-Event-ID: 2` gets the rest;
/// - `ndjson`: newline-delimited JSON instead of SSE;
/// - `plain`: not an event stream at all (JSON).
async fn event_stream(
    log: web::Data<Log>,
    req: HttpRequest,
    kind: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let body = log.record(&req, &body);
    let log = log.into_inner();
    let message = body["message"]
        .as_str()
        .or_else(|| {
            body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
        })
        .unwrap_or("hello world")
        .to_string();
    let words: Vec<String> = message.split(' ').map(|w| format!("{w} ")).collect();
    let ms = Duration::from_millis;
    let sse = "text/event-stream";
    match kind.as_str() {
        "openai" => {
            let mut steps: Vec<Step> = words
                .iter()
                .map(|w| Step::Send(ms(20), openai_chunk(w)))
                .collect();
            steps.push(Step::Send(
                ms(0),
                format!(
                    "data: {}\n\n",
                    json!({ "choices": [], "usage": { "prompt_tokens": 3, "completion_tokens": words.len(), "total_tokens": 3 + words.len() } })
                ),
            ));
            steps.push(Step::Send(ms(0), "data: [DONE]\n\n".into()));
            scripted(log, steps, sse)
        }
        "anthropic" => {
            let mut steps = vec![
                Step::Send(
                    ms(0),
                    format!(
                        "event: message_start\ndata: {}\n\n",
                        json!({ "type": "message_start", "message": { "usage": { "input_tokens": 4 } } })
                    ),
                ),
                Step::Send(ms(0), ": ping\n\n".into()),
            ];
            for w in &words {
                steps.push(Step::Send(ms(10), format!("event: content_block_delta\ndata: {}\n\n", json!({ "type": "content_block_delta", "delta": { "type": "text_delta", "text": w } }))));
            }
            steps.push(Step::Send(
                ms(0),
                format!(
                    "event: message_delta\ndata: {}\n\n",
                    json!({ "type": "message_delta", "usage": { "output_tokens": words.len() } })
                ),
            ));
            steps.push(Step::Send(
                ms(0),
                format!(
                    "event: message_stop\ndata: {}\n\n",
                    json!({ "type": "message_stop" })
                ),
            ));
            scripted(log, steps, sse)
        }
        "broken" => scripted(
            log,
            vec![
                Step::Send(ms(0), openai_chunk("one ")),
                Step::Send(ms(10), openai_chunk("two ")),
                Step::Fail(ms(30)),
            ],
            sse,
        ),
        "endless" => {
            let steps = (0..1200)
                .map(|i| Step::Send(ms(50), openai_chunk(&format!("{i} "))))
                .collect();
            scripted(log, steps, sse)
        }
        "resumable" => {
            let resumed = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                == Some("2");
            let n = log.resumes.fetch_add(1, Ordering::SeqCst);
            let event =
                |id: u32, text: &str| format!("id: {id}\nretry: 50\n{}", openai_chunk(text));
            if resumed && n > 0 {
                scripted(
                    log,
                    vec![
                        Step::Send(ms(0), event(3, "three ")),
                        Step::Send(ms(0), "data: [DONE]\n\n".into()),
                    ],
                    sse,
                )
            } else {
                scripted(
                    log,
                    vec![
                        Step::Send(ms(0), event(1, "one ")),
                        Step::Send(ms(0), event(2, "two ")),
                        Step::Fail(ms(20)),
                    ],
                    sse,
                )
            }
        }
        "ndjson" => {
            let steps = words
                .iter()
                .map(|w| Step::Send(ms(5), format!("{}\n", json!({ "token": w }))))
                .collect();
            scripted(log, steps, "application/x-ndjson")
        }
        _ => HttpResponse::Ok().json(json!({ "reply": "not a stream" })),
    }
}

/// An SSE upstream that dies for real: after two events its TCP connection is shut down in the
/// middle of a chunked body (no final chunk), as a crashed or cut-off server leaves it.
/// Answers `http://addr/sse`.
pub fn start_dying() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let mut out = stream;
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
                for text in ["one ", "two "] {
                    let event = openai_chunk(text);
                    let _ = write!(out, "{:x}\r\n{event}\r\n", event.len());
                    let _ = out.flush();
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(Duration::from_millis(30));
                let _ = out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{addr}/sse")
}

// ---- gRPC --------------------------------------------------------------------------------------

/// The `.proto` of the test service.
pub fn chat_proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat.proto")
}

/// A gRPC server for `tests/fixtures/chat.proto` over plaintext HTTP/2, built from the `.proto`
/// at run time: `SendMessage` answers `{reply: "echo: <message>", usage}` (the message
/// `denied` gets PERMISSION_DENIED, `expired` UNAUTHENTICATED), `StreamMessage` answers word by
/// word. Every call's path and metadata are recorded. Answers `http://addr`.
pub fn start_grpc() -> (String, Arc<Log>) {
    serve_grpc(None)
}

/// The same gRPC server over TLS, presenting `issued` (ALPN `h2`). Answers `https://addr`.
pub fn start_grpc_tls(issued: &Issued) -> (String, Arc<Log>) {
    let mut config = server_config(issued, None);
    config.alpn_protocols = vec![b"h2".to_vec()];
    serve_grpc(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

fn serve_grpc(tls: Option<tokio_rustls::TlsAcceptor>) -> (String, Arc<Log>) {
    let log = Arc::new(Log::default());
    let files = protox::compile([chat_proto()], [chat_proto().parent().unwrap()]).unwrap();
    let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(files).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let served = log.clone();
    actix_web::rt::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (pool, log, tls) = (pool.clone(), served.clone(), tls.clone());
            actix_web::rt::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            serve_h2(stream, pool, log).await;
                        }
                    }
                    None => serve_h2(socket, pool, log).await,
                }
            });
        }
    });
    (format!("{scheme}://{addr}"), log)
}

async fn serve_h2<T>(io: T, pool: prost_reflect::DescriptorPool, log: Arc<Log>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, respond))) = conn.accept().await {
        actix_web::rt::spawn(grpc_call(pool.clone(), log.clone(), request, respond));
    }
}

fn grpc_frame(message: &prost_reflect::DynamicMessage) -> bytes::Bytes {
    use prost::Message;
    let body = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

async fn grpc_call(
    pool: prost_reflect::DescriptorPool,
    log: Arc<Log>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
) {
    let (parts, mut body) = request.into_parts();
    let mut bytes = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let input = pool.get_message_by_name("chat.ChatRequest").unwrap();
    let request = prost_reflect::DynamicMessage::decode(input, &bytes[5..]).unwrap();
    let message = request
        .get_field_by_name("message")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    log.seen.lock().unwrap().push(Seen {
        path: parts.uri.path().to_string(),
        version: "HTTP/2.0".into(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: json!({ "message": message }),
    });
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let mut send = respond.send_response(head, false).unwrap();
    let mut trailers = http::HeaderMap::new();
    let json = |name: &str, value: Value| {
        let desc = pool.get_message_by_name(name).unwrap();
        prost_reflect::DynamicMessage::deserialize(desc, value).unwrap()
    };
    match (parts.uri.path(), message.as_str()) {
        (_, "denied") => {
            trailers.insert("grpc-status", "7".parse().unwrap());
            trailers.insert("grpc-message", "not%20for%20you".parse().unwrap());
        }
        ("/chat.ChatService/StreamMessage", _) => {
            for word in message.split(' ') {
                let chunk = json("chat.ChatChunk", json!({ "delta": format!("{word} ") }));
                let _ = send.send_data(grpc_frame(&chunk), false);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            trailers.insert("grpc-status", "0".parse().unwrap());
        }
        _ => {
            let reply = json(
                "chat.ChatReply",
                json!({ "reply": format!("echo: {message}"), "usage": { "total_tokens": 7 } }),
            );
            let _ = send.send_data(grpc_frame(&reply), false);
            trailers.insert("grpc-status", "0".parse().unwrap());
        }
    }
    let _ = send.send_trailers(trailers);
}

// ---- WebSocket ---------------------------------------------------------------------------------

/// A chat over WebSocket. A text frame `{id, message}` is answered `{id, reply}`; a message
/// `slow` is answered after 300 ms (later ones overtake it); `stream` answers word by word
/// (`{id, delta}` frames, then `{id, done: true}`); `drop` closes the connection without an
/// answer. Frames that are not JSON get `{"type": "error"}`. It sends a protocol frame
/// (`{"type": "hello"}`) first, which answers nothing.
struct Chat;

impl Actor for Chat {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.text(json!({ "type": "hello" }).to_string());
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Chat {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let Ok(msg) = msg else {
            ctx.stop();
            return;
        };
        match msg {
            ws::Message::Ping(data) => ctx.pong(&data),
            ws::Message::Text(text) => {
                let Ok(body) = serde_json::from_str::<Value>(&text) else {
                    ctx.text(json!({ "type": "error" }).to_string());
                    return;
                };
                let id = body["id"].clone();
                let message = body["message"].as_str().unwrap_or_default().to_string();
                match message.as_str() {
                    "drop" => {
                        ctx.close(Some(ws::CloseReason::from(ws::CloseCode::Away)));
                        ctx.stop();
                    }
                    "slow" => {
                        ctx.run_later(Duration::from_millis(300), move |_, ctx| {
                            ctx.text(json!({ "id": id, "reply": "slow done" }).to_string());
                        });
                    }
                    m if m.starts_with("stream") => {
                        for word in m.split(' ') {
                            ctx.text(json!({ "id": id, "delta": format!("{word} ") }).to_string());
                        }
                        ctx.text(
                            json!({ "id": id, "done": true, "usage": { "total": 2 } }).to_string(),
                        );
                    }
                    m => ctx.text(json!({ "id": id, "reply": format!("echo: {m}") }).to_string()),
                }
            }
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            _ => {}
        }
    }
}

async fn websocket(
    log: web::Data<Log>,
    req: HttpRequest,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    log.record(&req, &[]);
    ws::WsResponseBuilder::new(Chat, &req, stream)
        .protocols(&["chat.v1"])
        .start()
}

//! The load generator: keep-alive HTTP clients on one thread, closed-loop (c connections, each
//! sending its next request when the last one answered) and open-loop (a constant rate, latency
//! measured from each request's intended send time, so a stall is not hidden by the generator
//! waiting: no coordinated omission). Latencies go into HDR histograms in microseconds.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

/// One request a connection sends, again and again.
#[derive(Clone)]
pub struct Call {
    pub method: awc::http::Method,
    pub url: String,
    pub body: Bytes,
    /// Extra request headers (a peer's provider or auth headers), besides `content-type`.
    pub headers: Vec<(String, String)>,
}

impl Call {
    pub fn post(url: String, body: &str) -> Call {
        Call {
            method: awc::http::Method::POST,
            url,
            body: Bytes::from(body.to_string()),
            headers: Vec::new(),
        }
    }

    /// The same call with one more request header.
    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn get(url: String) -> Call {
        Call {
            method: awc::http::Method::GET,
            url,
            body: Bytes::new(),
            headers: Vec::new(),
        }
    }
}

/// What a run measured.
pub struct Run {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
}

/// The figures kept from a run (JSON output).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Run {
    fn new() -> Run {
        Run {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    fn record(&mut self, outcome: Result<Bytes, String>, latency: Duration) {
        match outcome {
            Ok(_) => {
                self.ok += 1;
                let _ = self.hist.record((latency.as_micros() as u64).max(1));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let h = &self.hist;
        Summary {
            requests: self.ok + self.errors,
            errors: self.errors,
            seconds: self.elapsed.as_secs_f64(),
            rps: self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// A client with room for `connections` keep-alive connections.
pub fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections.max(1)))
        .timeout(Duration::from_secs(30))
        .max_http_version(awc::http::Version::HTTP_11)
        .finish()
}

/// Sends `call` once; `Ok` only for a 2xx answer whose body was read.
pub async fn send(client: &awc::Client, call: &Call) -> Result<Bytes, String> {
    let mut request = client
        .request(call.method.clone(), &call.url)
        .insert_header(("content-type", "application/json"));
    for (name, value) in &call.headers {
        request = request.insert_header((name.as_str(), value.as_str()));
    }
    let mut resp = request
        .send_body(call.body.clone())
        .await
        .map_err(|e| e.to_string())?;
    let body = resp
        .body()
        .limit(16 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(body)
    } else {
        Err(format!(
            "HTTP {}: {}",
            resp.status().as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    }
}

/// One streamed answer: microseconds to the first chunk and to the end of the stream.
pub struct Streamed {
    pub first_us: u64,
    pub total_us: u64,
}

/// A keep-alive HTTP/1.1 connection that reads streamed answers byte by byte as they arrive.
/// awc's client reads a chunked body one chunk per wake-up, which added milliseconds per chunk
/// to a stream of many small chunks and would have measured the load generator instead of the
/// gateway; this reads whatever the socket has.
pub struct RawStream {
    addr: String,
    conn: Option<tokio::net::TcpStream>,
}

impl RawStream {
    pub fn new(addr: &str) -> RawStream {
        RawStream {
            addr: addr.to_string(),
            conn: None,
        }
    }

    /// POSTs `body` to `path` asking for an event stream; the first chunk is the first time
    /// `first` shows up in the body, the end is the chunked body's last chunk.
    pub async fn send(&mut self, path: &str, body: &str, first: &[u8]) -> Result<Streamed, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = std::time::Instant::now();
        if self.conn.is_none() {
            let conn = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| e.to_string())?;
            conn.set_nodelay(true).map_err(|e| e.to_string())?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if let Err(e) = conn.write_all(request.as_bytes()).await {
            self.conn = None;
            return Err(e.to_string());
        }
        let mut seen = Vec::new();
        let mut first_us = None;
        let mut buf = [0u8; 16384];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf));
            let n = match read.await {
                Err(_) => {
                    self.conn = None;
                    return Err("no answer within 30 s".into());
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.conn = None;
                    return Err("the connection closed mid-answer".into());
                }
                Ok(Ok(n)) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            if first_us.is_none() && seen.windows(first.len()).any(|w| w == first) {
                first_us = Some(started.elapsed().as_micros() as u64);
            }
            // The chunked body's last chunk ends the answer.
            if seen.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        if !seen.starts_with(b"HTTP/1.1 200") {
            return Err(String::from_utf8_lossy(&seen[..seen.len().min(120)]).into_owned());
        }
        let total_us = started.elapsed().as_micros() as u64;
        let first_us = first_us.ok_or("the stream had no chunk")?;
        Ok(Streamed { first_us, total_us })
    }
}

/// How long a closed-loop run lasts.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Every connection sends this many requests.
    Each(u64),
    For(Duration),
}

/// Closed loop: one connection per call in `calls`, each sending back to back.
pub async fn closed_loop(client: &awc::Client, calls: &[Call], stop: Stop) -> Run {
    let shared = Rc::new(RefCell::new(Run::new()));
    let began = Instant::now();
    let tasks = calls.iter().cloned().map(|call| {
        let client = client.clone();
        let shared = shared.clone();
        async move {
            let mut sent = 0u64;
            loop {
                match stop {
                    Stop::Each(n) if sent >= n => break,
                    Stop::For(d) if began.elapsed() >= d => break,
                    _ => {}
                }
                sent += 1;
                let at = Instant::now();
                let outcome = send(&client, &call).await;
                shared.borrow_mut().record(outcome, at.elapsed());
            }
        }
    });
    futures::future::join_all(tasks).await;
    let mut run = Rc::try_unwrap(shared)
        .ok()
        .expect("all tasks finished")
        .into_inner();
    run.elapsed = began.elapsed();
    run
}

/// Open loop: requests at `rate` per second for `duration`, spread round-robin over `calls`
/// (one session each), at most `max_in_flight` at once (more count as errors). Latency runs
/// from the intended send time.
pub async fn open_loop(
    client: &awc::Client,
    calls: &[Call],
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
) -> Run {
    let shared = Rc::new(RefCell::new(Run::new()));
    // A call (session) may have one request in flight at a time; a busy one is skipped for
    // the next free one, so the schedule holds.
    let busy: Rc<RefCell<Vec<bool>>> = Rc::new(RefCell::new(vec![false; calls.len()]));
    let in_flight = Rc::new(RefCell::new(0usize));
    let began = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (duration.as_secs_f64() * rate) as u64;
    let mut next_call = 0usize;
    let mut handles = Vec::new();
    for i in 0..total {
        let intended = began + interval.mul_f64(i as f64);
        let now = Instant::now();
        if intended > now {
            actix_web::rt::time::sleep(intended - now).await;
        }
        let slot = {
            let busy = busy.borrow();
            (0..calls.len())
                .map(|k| (next_call + k) % calls.len())
                .find(|&k| !busy[k])
        };
        let Some(slot) = slot.filter(|_| *in_flight.borrow() < max_in_flight) else {
            let mut run = shared.borrow_mut();
            run.errors += 1;
            run.first_error
                .get_or_insert_with(|| "the generator had no free session (overloaded)".into());
            continue;
        };
        next_call = slot + 1;
        busy.borrow_mut()[slot] = true;
        *in_flight.borrow_mut() += 1;
        let (client, call) = (client.clone(), calls[slot].clone());
        let (shared, busy, in_flight) = (shared.clone(), busy.clone(), in_flight.clone());
        handles.push(actix_web::rt::spawn(async move {
            let outcome = send(&client, &call).await;
            let latency = intended.elapsed();
            busy.borrow_mut()[slot] = false;
            *in_flight.borrow_mut() -= 1;
            shared.borrow_mut().record(outcome, latency);
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let mut run = Rc::try_unwrap(shared)
        .ok()
        .expect("all requests finished")
        .into_inner();
    run.elapsed = began.elapsed();
    run
}

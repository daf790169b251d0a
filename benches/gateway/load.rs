//! The load generator: keep-alive HTTP clients on one thread, closed-loop (c connections, each
//! sending its next request when the last one answered) and open-loop (a constant rate, latency
//! measured from each request's intended send time, so a stall is not hidden by the generator
//! waiting: no coordinated omission). Latencies go into HDR histograms in microseconds.
//!
//! An open-loop request the generator could not send (every session it holds had one in
//! flight) is counted as `unsent`, apart from the errors: that is the generator saturating, not
//! the server failing, and it is reported as such, never as an error.

use std::cell::RefCell;
use std::collections::VecDeque;
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
    /// Requests sent that failed: a non-2xx answer, a connection error, a timeout.
    pub errors: u64,
    /// Open loop: requests due that the generator could not send (no free session).
    pub unsent: u64,
    pub elapsed: Duration,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
}

/// The figures kept from a run (JSON output).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests sent (answered or failed).
    pub requests: u64,
    pub errors: u64,
    /// Open loop: requests due but not sent, the generator having no free session.
    pub unsent: u64,
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
            unsent: 0,
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

    /// A request due that the generator could not send: neither an answer nor an error.
    fn not_sent(&mut self) {
        self.unsent += 1;
    }

    pub fn summary(&self) -> Summary {
        let h = &self.hist;
        Summary {
            requests: self.ok + self.errors,
            errors: self.errors,
            unsent: self.unsent,
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

/// A client with room for `connections` keep-alive connections. A connection idle for 2 s is
/// not reused: the servers measured close theirs after 5 s (actix-web's and uvicorn's default),
/// and a request sent on one they closed fails ("connector has been disconnected") although
/// the server did nothing wrong. awc's own default is 15 s.
pub fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .limit(connections.max(1))
                .conn_keep_alive(Duration::from_secs(2)),
        )
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

/// What to say about an open loop at `rate` over `sessions` whose generator could not send
/// every request due (through the server measured, `through`, or straight to the upstream,
/// `direct`): it was saturated, so the rate was not held and the latencies leave those requests
/// out. `None` when it sent them all.
pub fn saturation(
    rate: f64,
    sessions: usize,
    through: &Summary,
    direct: &Summary,
) -> Option<String> {
    let side = |s: &Summary, what: &str| {
        (s.unsent > 0).then(|| format!("{} of {} not sent {what}", s.unsent, s.requests + s.unsent))
    };
    let sides: Vec<String> = [side(through, "through it"), side(direct, "to the mock")]
        .into_iter()
        .flatten()
        .collect();
    (!sides.is_empty()).then(|| {
        format!(
            "open loop at {rate:.0} req/s: generator saturated ({sessions} sessions all busy), {}",
            sides.join(", ")
        )
    })
}

/// The sessions an open loop at `rate` gets: one request in flight each, so enough for every
/// request due while the server takes [`OPEN_LOOP_HOLD_P99`] × `p99` (the closed loop's p99 at
/// that load), and never less than [`OPEN_LOOP_MIN_HOLD`]: the generator saturates only when
/// the server holds that much at once (a stall), which is then reported. At least
/// [`OPEN_LOOP_MIN_SESSIONS`], at most `cap`.
pub fn open_loop_sessions(rate: f64, p99: Duration, cap: usize) -> usize {
    let hold = (p99 * OPEN_LOOP_HOLD_P99).max(OPEN_LOOP_MIN_HOLD);
    let needed = (rate.max(0.0) * hold.as_secs_f64()).ceil() as usize;
    needed.clamp(OPEN_LOOP_MIN_SESSIONS, cap.max(OPEN_LOOP_MIN_SESSIONS))
}

/// How many times the closed loop's p99 an open loop's sessions cover.
pub const OPEN_LOOP_HOLD_P99: u32 = 8;
/// The least time an open loop's sessions cover at its rate.
pub const OPEN_LOOP_MIN_HOLD: Duration = Duration::from_millis(100);
pub const OPEN_LOOP_MIN_SESSIONS: usize = 32;
/// The most sessions an open loop opens (and connections it may use).
pub const OPEN_LOOP_MAX_SESSIONS: usize = 1024;

/// An open loop's sessions, one request in flight each: the free ones in the order they were
/// freed, so requests go round-robin over the idle sessions and a busy one is never waited for.
pub struct Slots {
    free: VecDeque<usize>,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: (0..n).collect(),
        }
    }

    /// The session the next request goes to; `None` when every one has a request in flight
    /// (the generator is saturated: that request is not sent).
    pub fn take(&mut self) -> Option<usize> {
        self.free.pop_front()
    }

    /// `slot`'s request ended.
    pub fn give(&mut self, slot: usize) {
        self.free.push_back(slot);
    }
}

/// Open loop: requests at `rate` per second for `duration`, each on a free one of `calls` (a
/// session each, one request in flight per session); a request due when none is free is
/// counted as unsent, not as an error. Latency runs from the intended send time.
pub async fn open_loop(client: &awc::Client, calls: &[Call], rate: f64, duration: Duration) -> Run {
    let shared = Rc::new(RefCell::new(Run::new()));
    let slots = Rc::new(RefCell::new(Slots::new(calls.len())));
    let began = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (duration.as_secs_f64() * rate) as u64;
    let mut handles = Vec::new();
    for i in 0..total {
        let intended = began + interval.mul_f64(i as f64);
        let now = Instant::now();
        if intended > now {
            actix_web::rt::time::sleep(intended - now).await;
        }
        let Some(slot) = slots.borrow_mut().take() else {
            shared.borrow_mut().not_sent();
            continue;
        };
        let (client, call) = (client.clone(), calls[slot].clone());
        let (shared, slots) = (shared.clone(), slots.clone());
        handles.push(actix_web::rt::spawn(async move {
            let outcome = send(&client, &call).await;
            let latency = intended.elapsed();
            slots.borrow_mut().give(slot);
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

/// Run from the integration test binary (`cargo test --test it bench_load::`, see
/// `tests/it/main.rs`): this bench target has no test harness.
#[cfg(test)]
mod tests {
    // The bench target is built with cfg(test) too, without the #[test] functions.
    #[allow(unused_imports)]
    use super::*;

    #[test]
    fn a_request_the_generator_could_not_send_is_unsent_not_an_error() {
        let mut run = Run::new();
        run.record(Ok(Bytes::new()), Duration::from_millis(2));
        run.record(Err("HTTP 503: busy".into()), Duration::from_millis(1));
        run.not_sent();
        run.not_sent();
        let s = run.summary();
        assert_eq!((s.requests, s.errors, s.unsent), (2, 1, 2));
        assert_eq!(run.first_error.as_deref(), Some("HTTP 503: busy"));
        // Only answers have a latency.
        assert_eq!(run.hist.len(), 1);

        let mut saturated = Run::new();
        saturated.not_sent();
        assert_eq!(saturated.summary().errors, 0);
        assert_eq!(saturated.first_error, None);
    }

    #[test]
    fn a_saturated_generator_is_said_so_with_the_requests_it_did_not_send() {
        let summary = |sent: u64, unsent: u64| {
            let mut run = Run::new();
            for _ in 0..sent {
                run.record(Ok(Bytes::new()), Duration::from_millis(1));
            }
            for _ in 0..unsent {
                run.not_sent();
            }
            run.summary()
        };
        assert_eq!(
            saturation(2587.0, 128, &summary(3, 0), &summary(3, 0)),
            None
        );
        assert_eq!(
            saturation(2587.4, 128, &summary(3, 2), &summary(4, 0)).as_deref(),
            Some(
                "open loop at 2587 req/s: generator saturated (128 sessions all busy), \
                 2 of 5 not sent through it"
            )
        );
        assert_eq!(
            saturation(50.0, 32, &summary(1, 1), &summary(2, 3)).as_deref(),
            Some(
                "open loop at 50 req/s: generator saturated (32 sessions all busy), \
                 1 of 2 not sent through it, 3 of 5 not sent to the mock"
            )
        );
    }

    #[test]
    fn slots_go_round_robin_over_the_free_sessions_and_run_dry_when_all_are_busy() {
        let mut slots = Slots::new(3);
        assert_eq!(slots.take(), Some(0));
        assert_eq!(slots.take(), Some(1));
        slots.give(0);
        // 2 was idle longer than 0.
        assert_eq!(slots.take(), Some(2));
        assert_eq!(slots.take(), Some(0));
        assert_eq!(slots.take(), None, "every session has a request in flight");
        slots.give(1);
        assert_eq!(slots.take(), Some(1));
        assert_eq!(Slots::new(0).take(), None);
    }

    #[test]
    fn open_loop_sessions_cover_the_rate_for_a_stall_within_bounds() {
        let ms = Duration::from_millis;
        // 2,587 req/s with an 8.6 ms p99 (the acknowledged series that ran dry with 128
        // sessions): 8 × 8.6 ms is under the 100 ms floor, so 100 ms of requests.
        assert_eq!(
            open_loop_sessions(2587.0, ms(8) + Duration::from_micros(615), 1024),
            259
        );
        // A slow server: 8 × its p99.
        assert_eq!(open_loop_sessions(500.0, ms(50), 1024), 200);
        // A slow rate still gets the floor; a fast one the cap.
        assert_eq!(
            open_loop_sessions(50.0, ms(1), 1024),
            OPEN_LOOP_MIN_SESSIONS
        );
        assert_eq!(open_loop_sessions(10_461.0, ms(3), 1024), 1024);
        assert_eq!(
            open_loop_sessions(0.0, Duration::ZERO, 0),
            OPEN_LOOP_MIN_SESSIONS
        );
    }
}

//! Sessions across instances: three real gateway processes on one PostgreSQL and one NATS.
//! A session created on one is continued on another (forwarded to its owner, the same answer
//! and one transcript in order), its events are seen on all three, and after its owner is
//! killed with `kill -9` mid-conversation the others first answer 503
//! `session_owner_unavailable` with `Retry-After` while the dead owner's lease runs, then take
//! its sessions over, with every acknowledged message in the transcript.
//! Needs `nats-server` and PostgreSQL (Debian's `nats-server` and `postgresql`; `.ci/run`
//! installs both).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::cluster::Nats;
use crate::mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// A script connector plugin that counts a session's messages in its per-session state and
/// shows the count in each reply's metadata: a takeover must go on counting.
const COUNTER: &str = r#"import { PluginLoader } from "./loader";
PluginLoader.register({
  id: "counter", name: "counter", description: "counts", version: "1.0.0", priority: 10,
  compatibleConnectors: ["HTTP_REST"],
  async initialize(ctx) { ctx.state.count = 0; },
  async beforeSend(message, metadata, ctx) {
    ctx.state.count += 1;
    return { message, metadata: { count: ctx.state.count } };
  },
});
"#;

/// Short, so the test waits little for a dead owner's lease to run out.
const LEASE_TTL_MS: u64 = 3000;

/// One gateway process, killed on drop.
struct Gateway {
    name: &'static str,
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// The real executable as instance `name` on database `url` and NATS `nats`, with the
    /// target `echo` on `mock`.
    fn spawn(name: &'static str, url: &str, nats: &str, mock: &MockUpstream) -> Gateway {
        Gateway::spawn_with(name, url, nats, mock, LEASE_TTL_MS, &[])
    }

    /// [`Gateway::spawn`] with leases of `lease_ttl_ms` and more settings (`extra`).
    fn spawn_with(
        name: &'static str,
        url: &str,
        nats: &str,
        mock: &MockUpstream,
        lease_ttl_ms: u64,
        extra: &[(&str, &str)],
    ) -> Gateway {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path();
        std::fs::create_dir_all(dir.join("plugins/core/counter")).unwrap();
        std::fs::write(dir.join("plugins/core/counter/index.js"), COUNTER).unwrap();
        std::fs::write(
            dir.join("targets.toml"),
            toml::to_string(
                &json!({ "targets": [crate::sessions::target("echo", mock, "/chat")] }),
            )
            .unwrap(),
        )
        .unwrap();
        let mut command = Command::new(BIN);
        command
            .current_dir(dir)
            .env("SWITCHYARD__SERVER__INSTANCE_ID", name)
            .env("SWITCHYARD__STORE__URL", url)
            .env("SWITCHYARD__BROKER__NATS_URL", nats)
            .env("SWITCHYARD_SECRET_KEY", "ab".repeat(32))
            .env("SWITCHYARD__DATA__DIR", dir)
            .env("SWITCHYARD__STORE__DURABILITY", "acknowledged")
            .env(
                "SWITCHYARD__SESSIONS__LEASE_TTL_MS",
                lease_ttl_ms.to_string(),
            )
            .env(
                "SWITCHYARD__SESSIONS__TARGETS_FILE",
                dir.join("targets.toml"),
            )
            .env("SWITCHYARD__PLUGINS__DIR", dir.join("plugins"))
            .envs(extra.iter().copied());
        let (child, base) = crate::durability::start(&mut command, name);
        Gateway {
            name,
            child,
            base,
            _data: data,
        }
    }

    fn kill9(&mut self) {
        crate::durability::kill9(&mut self.child);
    }

    /// SIGTERM, then waits (at most 20 s) for the process to exit; answers its exit code.
    fn terminate(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn client() -> awc::Client {
    awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish()
}

/// `POST /api/sessions/{id}/messages` on `gw`: status, the instance that served it (when
/// forwarded), the `Retry-After` header and the body.
async fn send(
    gw: &Gateway,
    id: &str,
    message: &str,
) -> (u16, Option<String>, Option<String>, Value) {
    let mut res = client()
        .post(format!("{}/api/sessions/{id}/messages", gw.base))
        .send_json(&json!({ "message": message }))
        .await
        .unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (served, retry) = (header("x-switchyard-served-by"), header("retry-after"));
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (res.status().as_u16(), served, retry, body)
}

async fn create(gw: &Gateway) -> String {
    let mut res = client()
        .post(format!("{}/api/sessions", gw.base))
        .send_json(&json!({ "targetId": "echo", "plugins": [{ "id": "counter" }] }))
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "create on {}", gw.name);
    let body: Value = res.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

/// The stored transcript of `id` as read on `gw`: `(index, direction, content)`, oldest first.
async fn transcript(gw: &Gateway, id: &str) -> Vec<(i64, String, String)> {
    let mut res = client()
        .get(format!("{}/api/sessions/{id}/messages?limit=500", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "transcript of {id} on {}", gw.name);
    let page: Value = res.json().limit(64 << 20).await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["messageIndex"].as_i64().unwrap(),
                row["direction"].as_str().unwrap().to_string(),
                row["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every `session.*` event `gw` streams, as `(name, envelope)`, collected in the background.
fn watch(gw: &Gateway) -> Rc<RefCell<Vec<(String, Value)>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (into, url) = (
        seen.clone(),
        format!("{}/api/events?pattern=session.*", gw.base),
    );
    actix_web::rt::spawn(async move {
        let client = awc::Client::builder().disable_timeout().finish();
        let Ok(mut res) = client.get(url).send().await else {
            return;
        };
        let mut text = String::new();
        while let Some(Ok(chunk)) = res.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let frame: String = text.drain(..end + 2).collect();
                let mut name = None;
                let mut data = Value::Null;
                for line in frame.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).unwrap_or(Value::Null);
                    }
                }
                if let Some(name) = name {
                    into.borrow_mut().push((name, data));
                }
            }
        }
    });
    seen
}

/// Waits until `seen` holds an event `name` about session `id`; answers it.
async fn event(seen: &Rc<RefCell<Vec<(String, Value)>>>, name: &str, id: &str, on: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = seen
            .borrow()
            .iter()
            .find(|(n, e)| n == name && e["data"]["sessionId"] == id)
            .map(|(_, e)| e.clone());
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{on} never saw {name} for {id}; it saw {:?}",
            seen.borrow()
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Timing one session's messages.
struct Session;

impl Session {
    const ROUNDS: u32 = 50;

    /// The mean time of a message sent to `id` through `gw`.
    async fn timed(gw: &Gateway, id: &str) -> Duration {
        let began = Instant::now();
        for n in 0..Self::ROUNDS {
            let (status, _, _, body) = send(gw, id, &format!("t{n}")).await;
            assert_eq!(status, 200, "{body}");
        }
        began.elapsed() / Self::ROUNDS
    }
}

#[actix_web::test]
async fn sessions_are_served_by_any_of_three_gateways_and_survive_their_owner_killed_9() {
    let mock = MockUpstream::start().await;
    let nats = Nats::start();
    let url = crate::pg::database().await;
    let mut a = Gateway::spawn("gw-a", &url, &nats.url(), &mock);
    let b = Gateway::spawn("gw-b", &url, &nats.url(), &mock);
    let c = Gateway::spawn("gw-c", &url, &nats.url(), &mock);
    let seen: Vec<_> = [&a, &b, &c].iter().map(|gw| (gw.name, watch(gw))).collect();
    // The streams are subscribed (and NATS linked) once each sees an event published on A.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = client()
            .post(format!("{}/api/events", a.base))
            .send_json(&json!({ "event": "test.probe", "data": {} }))
            .await;
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        let probe = create(&a).await;
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        if seen.iter().all(|(_, s)| {
            s.borrow()
                .iter()
                .any(|(n, e)| n == "session.created" && e["data"]["sessionId"] == probe)
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "the event streams never linked");
    }

    // Created on A, continued on B and C: forwarded to A, answered as A answers.
    let first = create(&a).await;
    for (name, s) in &seen {
        let created = event(s, "session.created", &first, name).await;
        assert_eq!(created["origin"], "gw-a", "{created}");
    }
    let (status, served, _, on_a) = send(&a, &first, "m0").await;
    assert_eq!((status, served), (200, None), "{on_a}");
    assert_eq!(on_a["content"], "echo: m0");
    assert_eq!(on_a["metadata"]["count"], 1, "{on_a}");
    let (status, served, _, on_b) = send(&b, &first, "m1").await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(served.as_deref(), Some("gw-a"), "B forwards to the owner");
    assert_eq!(on_b["content"], "echo: m1");
    assert_eq!(
        on_b["metadata"]["count"], 2,
        "the owner's plugin state: {on_b}"
    );
    // The same reply as A gives (but for the count and the times it took).
    let shape = |reply: &Value| {
        let mut reply = reply.clone();
        let metadata = reply["metadata"].as_object_mut().unwrap();
        metadata.shift_remove("responseTimeMs");
        metadata.shift_remove("count");
        for outcome in reply["plugins"].as_array_mut().unwrap() {
            outcome.as_object_mut().unwrap().shift_remove("durationMs");
        }
        reply["content"] = Value::Null;
        reply
    };
    assert_eq!(shape(&on_b), shape(&on_a), "the same reply as A gives");
    let (status, served, _, on_c) = send(&c, &first, "m2").await;
    assert_eq!((status, served.as_deref()), (200, Some("gw-a")), "{on_c}");
    assert_eq!(on_c["content"], "echo: m2");
    // A streamed answer is forwarded as it comes.
    let mut res = client()
        .post(format!("{}/api/sessions/{first}/messages", b.base))
        .send_json(&json!({ "message": "m3", "stream": true }))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream")));
    let streamed = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        streamed.contains("event: done") && streamed.contains("echo: m3"),
        "{streamed}"
    );
    let rows = transcript(&c, &first).await;
    let answers: Vec<(i64, String)> = rows
        .iter()
        .filter(|r| r.1 == "received")
        .map(|r| (r.0, r.2.clone()))
        .collect();
    assert_eq!(
        answers,
        (0..4)
            .map(|n| (n, format!("echo: m{n}")))
            .collect::<Vec<_>>(),
        "one transcript, in order, whoever received the messages"
    );

    // The hop's cost, for the record (printed with --nocapture): one message at a time.
    let timed = Session::timed;
    let (direct, hop) = (timed(&a, &first).await, timed(&b, &first).await);
    eprintln!(
        "one message, mean of {ROUNDS}: on its owner {direct:?}, forwarded {hop:?}",
        ROUNDS = Session::ROUNDS
    );

    // Mid-conversation: clients talk to A's sessions through all three gateways, then A dies.
    let mut sessions = vec![first.clone()];
    for _ in 0..5 {
        sessions.push(create(&a).await);
    }
    let acked: Rc<RefCell<HashSet<(String, String)>>> = Rc::default();
    let bases = [a.base.clone(), b.base.clone(), c.base.clone()];
    for (i, id) in sessions.iter().enumerate() {
        let (acked, id, base) = (acked.clone(), id.clone(), bases[i % 3].clone());
        actix_web::rt::spawn(async move {
            let client = client();
            for n in 0.. {
                let message = format!("load-{n}");
                let Ok(mut res) = client
                    .post(format!("{base}/api/sessions/{id}/messages"))
                    .send_json(&json!({ "message": message }))
                    .await
                else {
                    break;
                };
                if res.status() != 200 {
                    break;
                }
                let Ok(body) = res.json::<Value>().await else {
                    break;
                };
                assert_eq!(body["content"], format!("echo: {message}"));
                acked.borrow_mut().insert((id.clone(), message));
            }
        });
    }
    actix_web::rt::time::sleep(Duration::from_millis(1000)).await;
    let killed_at = Instant::now();
    a.kill9();
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let acked = acked.borrow().clone();
    assert!(
        acked.len() >= 20,
        "the load reached only {} answers",
        acked.len()
    );

    // While A's lease runs, B cannot reach it: 503 with the lease's remaining time.
    let (status, _, retry, body) = send(&b, &first, "during").await;
    assert!(
        killed_at.elapsed() < Duration::from_millis(LEASE_TTL_MS * 2 / 3),
        "the check came too late to see the lease running"
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "session_owner_unavailable", "{body}");
    assert_eq!(body["details"]["owner"], "gw-a", "{body}");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!(
        (1..=LEASE_TTL_MS / 1000).contains(&retry),
        "Retry-After {retry}"
    );

    // Once it ran out, B and C take A's sessions over and go on where they stopped.
    let deadline = Instant::now() + Duration::from_millis(LEASE_TTL_MS * 4);
    let mut taken_by: HashMap<String, &str> = HashMap::new();
    let mut counted: HashMap<String, i64> = HashMap::new();
    for (i, id) in sessions.iter().enumerate() {
        let gw = if i % 2 == 0 { &b } else { &c };
        loop {
            let (status, served, retry, body) = send(gw, id, "after").await;
            if status == 200 {
                assert_eq!(served, None, "served by {} itself", gw.name);
                assert_eq!(body["content"], "echo: after");
                taken_by.insert(id.clone(), gw.name);
                counted.insert(id.clone(), body["metadata"]["count"].as_i64().unwrap());
                break;
            }
            assert_eq!(body["code"], "session_owner_unavailable", "{body}");
            assert!(retry.is_some(), "a 503 says when to retry");
            assert!(Instant::now() < deadline, "{id} was never taken over");
            actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        }
        // Whoever asks next is forwarded to the new owner.
        let other = if i % 2 == 0 { &c } else { &b };
        let (status, served, _, body) = send(other, id, "again").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(served.as_deref(), Some(gw.name));
        assert_eq!(body["content"], "echo: again");
        assert_eq!(body["metadata"]["count"].as_i64(), Some(counted[id] + 1));
    }
    for (name, s) in &seen[1..] {
        let taken = event(s, "session.taken_over", &first, name).await;
        assert_eq!(taken["data"]["from"], "gw-a", "{taken}");
        assert_eq!(taken["data"]["to"], "gw-b", "{taken}");
    }

    // No acknowledged message lost; each transcript in order and continued after it.
    let mut kept = HashSet::new();
    for id in &sessions {
        let rows = transcript(&c, id).await;
        let indexes: Vec<i64> = rows.iter().filter(|r| r.1 != "sent").map(|r| r.0).collect();
        let mut sorted = indexes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(indexes, sorted, "{id}: answers in order, no index twice");
        // Taken over: the transcript goes on one past its last stored message.
        let at = |text: &str| {
            let found: Vec<i64> = rows.iter().filter(|r| r.2 == text).map(|r| r.0).collect();
            assert_eq!(found.len(), 1, "{id}: one '{text}' answer in {rows:?}");
            found[0]
        };
        let (after, again) = (at("echo: after"), at("echo: again"));
        let before = rows
            .iter()
            .filter(|r| !r.2.ends_with("after") && !r.2.ends_with("again"))
            .map(|r| r.0)
            .max()
            .unwrap_or(-1);
        assert_eq!(
            (after, again),
            (before + 1, before + 2),
            "{id} (taken over by {}): the transcript goes on where it stopped",
            taken_by[id]
        );
        // The plugin's state was restored as of the last committed message: it counts on from
        // the stored messages (one more when the killed owner committed a message's state but
        // not yet the message, the instant it died).
        let stored = before + 1;
        assert!(
            (stored + 1..=stored + 2).contains(&counted[id]),
            "{id}: the counter went on at {} after {stored} stored messages",
            counted[id]
        );
        for row in rows.iter().filter(|r| r.1 == "received") {
            if let Some(sent) = row.2.strip_prefix("echo: ") {
                kept.insert((id.clone(), sent.to_string()));
            }
        }
    }
    let lost: Vec<_> = acked.difference(&kept).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged answers were lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    drop((b, c));
    mock.stop().await;
}

/// Leases long enough that a takeover within the test can only come from a released lease.
const LONG_LEASE_MS: u64 = 60_000;

#[actix_web::test]
async fn a_gracefully_stopped_gateway_hands_its_sessions_over_with_their_plugin_state() {
    let mock = MockUpstream::start().await;
    let nats = Nats::start();
    let url = crate::pg::database().await;
    let beat = [("SWITCHYARD__BROKER__CLUSTER_HEARTBEAT_MS", "200")];
    let spawn = |name| Gateway::spawn_with(name, &url, &nats.url(), &mock, LONG_LEASE_MS, &beat);
    let mut a = spawn("gw-a");
    let b = spawn("gw-b");
    let c = spawn("gw-c");
    let seen = watch(&b);
    // A hears B and C (its hand-over needs live peers), seen in its own plugin list.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut res = client()
            .get(format!("{}/api/plugins/counter", a.base))
            .send()
            .await
            .unwrap();
        let plugin: Value = res.json().await.unwrap_or(Value::Null);
        if ["gw-b", "gw-c"]
            .iter()
            .all(|n| plugin["instances"][n]["stale"] == false)
        {
            break;
        }
        assert!(Instant::now() < deadline, "A never heard B and C: {plugin}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }

    let sessions = [create(&a).await, create(&a).await];
    for id in &sessions {
        for n in 0..3 {
            let (status, served, _, body) = send(&a, id, &format!("m{n}")).await;
            assert_eq!((status, served), (200, None), "{body}");
            assert_eq!(body["metadata"]["count"], n + 1, "{body}");
        }
    }
    // One through B: forwarded to A, its owner.
    let (status, served, _, body) = send(&b, &sessions[1], "m3").await;
    assert_eq!((status, served.as_deref()), (200, Some("gw-a")), "{body}");
    assert_eq!(body["metadata"]["count"], 4);

    let stopped_at = Instant::now();
    assert_eq!(a.terminate(), Some(0), "a clean stop");
    let stop_took = stopped_at.elapsed();

    // The next message through B is answered at once by B itself (no wait for A's 60 s
    // lease), the plugin's count going on.
    let began = Instant::now();
    let (status, served, _, body) = send(&b, &sessions[0], "after").await;
    let took = began.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(served, None, "B took the session over: {body}");
    assert_eq!(body["content"], "echo: after");
    assert_eq!(
        body["metadata"]["count"], 4,
        "the plugin state went on: {body}"
    );
    assert!(took < Duration::from_secs(5), "the takeover took {took:?}");
    // Through C: forwarded to B, or taken over by C (the other session), state intact.
    let (status, served, _, body) = send(&c, &sessions[1], "after").await;
    assert_eq!((status, served), (200, None), "{body}");
    assert_eq!(body["metadata"]["count"], 5, "{body}");
    let (status, served, _, body) = send(&c, &sessions[0], "again").await;
    assert_eq!((status, served.as_deref()), (200, Some("gw-b")), "{body}");
    assert_eq!(body["metadata"]["count"], 5, "{body}");
    eprintln!("SIGTERM to exit: {stop_took:?}; first message after, taken over: {took:?}");

    // Handed over, not closed: no session.closed, a takeover from A instead.
    let taken = event(&seen, "session.taken_over", &sessions[0], "gw-b").await;
    assert_eq!(
        taken["data"]["from"],
        Value::Null,
        "a released lease: {taken}"
    );
    assert!(
        !seen
            .borrow()
            .iter()
            .any(|(n, e)| n == "session.closed"
                && sessions.iter().any(|s| e["data"]["sessionId"] == *s)),
        "a handed-over session is not closed"
    );
    // One transcript, going on where A stopped.
    let rows = transcript(&b, &sessions[0]).await;
    let answers: Vec<(i64, String)> = rows
        .iter()
        .filter(|r| r.1 == "received")
        .map(|r| (r.0, r.2.clone()))
        .collect();
    assert_eq!(
        answers,
        vec![
            (0, "echo: m0".to_string()),
            (1, "echo: m1".to_string()),
            (2, "echo: m2".to_string()),
            (3, "echo: after".to_string()),
            (4, "echo: again".to_string()),
        ]
    );
    drop((b, c));
    mock.stop().await;
}

//! Outbound webhooks against a real receiver: an actix-web server on port 0 in the test that
//! verifies every signature with the secret the create answer showed (HMAC-SHA256 computed
//! here, independently of the service), fails on purpose when told to, and counts what it got.
//! Retries until delivered, dead after the last attempt, the test endpoint, the history,
//! the secret shown once, deletion, resuming after a restart, validation, and a slow receiver
//! that must not hold back the event bus.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::serve;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    event: String,
    delivery: String,
    /// The signature matched the secret (false when no secret was set yet).
    verified: bool,
    content_type: String,
    body: Value,
}

#[derive(Default)]
struct ReceiverState {
    secret: Mutex<Option<String>>,
    /// Requests still to answer 503; `usize::MAX`: every one.
    failures_left: AtomicUsize,
    /// How long each answer takes.
    delay_ms: AtomicU64,
    hits: Mutex<Vec<Hit>>,
}

struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
    handle: actix_web::dev::ServerHandle,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn receive(
    state: web::Data<ReceiverState>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let timestamp = header("x-switchyard-timestamp");
    let signature = header("x-switchyard-signature");
    let verified = state
        .secret
        .lock()
        .unwrap()
        .as_deref()
        .is_some_and(|secret| {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
            let mut signed = timestamp.clone().into_bytes();
            signed.push(b'.');
            signed.extend_from_slice(&body);
            signature == format!("sha256={}", hex(ring::hmac::sign(&key, &signed).as_ref()))
        });
    state.hits.lock().unwrap().push(Hit {
        event: header("x-switchyard-event"),
        delivery: header("x-switchyard-delivery"),
        verified,
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    if fail {
        HttpResponse::ServiceUnavailable().body("not now")
    } else {
        HttpResponse::Ok().json(json!({"ok": true}))
    }
}

impl Receiver {
    /// A receiver that answers 503 to its first `failures` requests (`usize::MAX`: always).
    async fn start(failures: usize) -> Receiver {
        let state = Arc::new(ReceiverState::default());
        state.failures_left.store(failures, Ordering::SeqCst);
        let data = web::Data::from(state.clone());
        let (base, handle) = serve(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(receive))
        });
        Receiver {
            base,
            state,
            handle,
        }
    }

    fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    fn set_secret(&self, secret: &str) {
        *self.state.secret.lock().unwrap() = Some(secret.to_string());
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Quick retries for the tests: 50 ms doubling to at most 200 ms.
const QUICK: &[(&str, &str)] = &[
    ("SWITCHYARD__WEBHOOKS__BACKOFF_BASE_MS", "50"),
    ("SWITCHYARD__WEBHOOKS__BACKOFF_MAX_MS", "200"),
    ("SWITCHYARD__WEBHOOKS__TIMEOUT_MS", "3000"),
];

async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    spawn_in(Dirs::new(), extra).await
}

async fn spawn_in(dirs: Arc<Dirs>, extra: &[(&str, &str)]) -> TestApp {
    let mut env: Vec<(&str, &str)> = QUICK.to_vec();
    env.extend_from_slice(extra);
    TestApp::spawn_in(dirs, &env, vec![]).await
}

/// Creates a webhook for `events` to `receiver`, tells the receiver its secret; the create
/// answer.
async fn create(app: &TestApp, receiver: &Receiver, events: &[&str]) -> Value {
    let (status, body) = app
        .post_json(
            "/api/webhooks",
            json!({"url": receiver.url(), "events": events, "description": "test"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    receiver.set_secret(body["secret"].as_str().expect("the secret, shown once"));
    body
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/webhooks/{id}/deliveries")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Waits (up to `within`) until the webhook's newest delivery is in `state`; returns it.
async fn settled(app: &TestApp, id: &str, state: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let list = deliveries(app, id).await;
        if let Some(d) = list.first().filter(|d| d["state"] == state) {
            return d.clone();
        }
        assert!(
            Instant::now() < until,
            "no delivery reached {state} within {within:?}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_delivery_is_signed_and_retried_until_delivered() {
    let receiver = Receiver::start(2).await;
    let app = spawn(&[]).await;
    let created = create(&app, &receiver, &["custom.*"]).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["secret"].as_str().unwrap().len(), 64);
    assert_eq!(created["hasSecret"], true);

    app.publish("other.thing", json!({"n": 0}));
    app.publish("custom.ping", json!({"n": 1}));
    let delivery = settled(&app, id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(delivery["lastStatus"], 200);
    assert_eq!(delivery["lastError"], Value::Null);
    assert_eq!(delivery["event"], "custom.ping");
    assert!(delivery["latencyMs"].as_u64().is_some(), "{delivery}");
    assert_eq!(delivery["nextAttemptAt"], Value::Null);

    // Three requests, every one signed with the secret the create answer showed, the same
    // delivery each time; the event that matched no pattern never came.
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    for hit in &hits {
        assert!(hit.verified, "a signature did not verify: {hit:?}");
        assert_eq!(hit.event, "custom.ping");
        assert_eq!(hit.delivery, delivery["id"].as_str().unwrap());
        assert_eq!(hit.content_type, "application/json");
        assert_eq!(hit.body["id"], delivery["id"]);
        assert_eq!(hit.body["event"], "custom.ping");
        assert_eq!(hit.body["data"], json!({"n": 1}));
        let timestamp = hit.body["timestamp"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(timestamp).is_ok(),
            "the envelope's timestamp is RFC 3339: {timestamp}"
        );
    }
    assert_eq!(deliveries(&app, id).await.len(), 1);

    // The secret was shown once: never again.
    let (_, one) = app.get(&format!("/api/webhooks/{id}")).await;
    let (_, all) = app.get("/api/webhooks").await;
    for shown in [&one, &all[0]] {
        assert_eq!(shown["id"], id);
        assert_eq!(shown["hasSecret"], true);
        assert!(shown.get("secret").is_none(), "{shown}");
    }
    let secret = created["secret"].as_str().unwrap();
    assert!(!one.to_string().contains(secret) && !all.to_string().contains(secret));
    app.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn a_receiver_that_always_fails_leaves_the_delivery_dead_after_max_attempts() {
    let receiver = Receiver::start(usize::MAX).await;
    let app = spawn(&[("SWITCHYARD__WEBHOOKS__MAX_ATTEMPTS", "3")]).await;
    let id = create(&app, &receiver, &["custom.fail"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.publish("custom.fail", json!({}));
    let dead = settled(&app, &id, "dead", Duration::from_secs(20)).await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    assert_eq!(dead["lastStatus"], 503);
    assert_eq!(dead["lastError"], "HTTP 503");
    assert_eq!(dead["nextAttemptAt"], Value::Null);
    // Dead means no more tries.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert!(hits.iter().all(|h| h.verified));
    app.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn the_test_endpoint_answers_with_the_first_attempts_outcome() {
    let good = Receiver::start(0).await;
    let bad = Receiver::start(usize::MAX).await;
    let app = spawn(&[("SWITCHYARD__WEBHOOKS__BACKOFF_BASE_MS", "5000")]).await;
    let good_id = create(&app, &good, &["never.published"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bad_id = create(&app, &bad, &["never.published"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, delivered) = app.post(&format!("/api/webhooks/{good_id}/test")).await;
    assert_eq!(status, 200, "{delivered}");
    assert_eq!(delivered["state"], "delivered");
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["lastStatus"], 200);
    assert_eq!(delivered["event"], "webhook.test");
    let hits = good.hits();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].verified);
    assert_eq!(hits[0].event, "webhook.test");
    assert_eq!(hits[0].body["data"]["webhookId"], good_id.as_str());
    assert!(bad.hits().is_empty(), "a test goes to its own webhook only");

    let (status, failed) = app.post(&format!("/api/webhooks/{bad_id}/test")).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["state"], "retrying");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["lastStatus"], 503);
    assert!(failed["nextAttemptAt"].is_string(), "{failed}");
    // The history shows it as the answer did.
    assert_eq!(deliveries(&app, &bad_id).await[0]["id"], failed["id"]);

    let (status, body) = app.post("/api/webhooks/wh_nope/test").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("webhook_not_found"))
    );
    app.stop().await;
    good.stop().await;
    bad.stop().await;
}

#[actix_web::test]
async fn the_history_lists_deliveries_newest_first_within_its_limit() {
    let receiver = Receiver::start(0).await;
    let app = spawn(&[]).await;
    let id = create(&app, &receiver, &["custom.*"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["custom.a", "custom.b", "custom.c"] {
        app.publish(name, json!({}));
        crate::common::eventually("the delivery is recorded", || async {
            deliveries(&app, &id)
                .await
                .first()
                .is_some_and(|d| d["event"] == name && d["state"] == "delivered")
        })
        .await;
    }
    let all = deliveries(&app, &id).await;
    let events: Vec<&str> = all.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["custom.c", "custom.b", "custom.a"]);
    let (status, two) = app
        .get(&format!("/api/webhooks/{id}/deliveries?limit=2"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert_eq!(two[0]["event"], "custom.c");
    for bad in ["limit=0", "limit=501", "limit=x", "other=1"] {
        let (status, body) = app
            .get(&format!("/api/webhooks/{id}/deliveries?{bad}"))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }
    let (status, body) = app.get("/api/webhooks/wh_nope/deliveries").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("webhook_not_found"))
    );
    app.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn invalid_webhooks_are_refused_naming_their_field() {
    let app = spawn(&[]).await;
    let cases = [
        (json!({"events": ["*"]}), "url"),
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (
            json!({"url": "https://user:pw@example.com/x", "events": ["*"]}),
            "url",
        ),
        (json!({"url": "https://example.com/x"}), "events"),
        (
            json!({"url": "https://example.com/x", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["ok.*", "bad*"]}),
            "events[1]",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["*"], "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/x", "events": ["*"], "description": "x".repeat(501)}),
            "description",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post_json("/api/webhooks", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_webhook", "{body}: {answer}");
        assert_eq!(answer["details"]["field"], field, "{body}: {answer}");
        assert!(answer["message"].as_str().unwrap().starts_with(field));
    }
    for body in [
        json!(["x"]),
        json!({"url": "https://example.com", "events": ["*"], "extra": 1}),
    ] {
        let (status, answer) = app.post_json("/api/webhooks", body).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("invalid_json"))
        );
    }
    let (_, list) = app.get("/api/webhooks").await;
    assert_eq!(list, json!([]), "nothing was created");
    // A secret of one's own is kept (and still shown only once).
    let (status, made) = app
        .post_json(
            "/api/webhooks",
            json!({"url": "https://example.com/x", "events": ["*"], "secret": "my-own-secret-0123456789"}),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["secret"], "my-own-secret-0123456789");
    for path in ["/api/webhooks/wh_nope"] {
        let (status, body) = app.get(path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("webhook_not_found"))
        );
        let (status, body) = app.delete(path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("webhook_not_found"))
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn webhooks_are_behind_the_admin_token() {
    let app = spawn(&[("SWITCHYARD_ADMIN_TOKEN", "s3cret")]).await;
    let (status, body) = app.get("/api/webhooks").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = app
        .post_json(
            "/api/webhooks",
            json!({"url": "https://example.com", "events": ["*"]}),
        )
        .await;
    assert_eq!(status, 401);
    let mut resp = app
        .client()
        .get(app.url("/api/webhooks"))
        .insert_header(("authorization", "Bearer s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!([]));
    app.stop().await;
}

#[actix_web::test]
async fn a_deleted_webhook_gets_no_more_deliveries() {
    let receiver = Receiver::start(usize::MAX).await;
    let app = spawn(&[
        ("SWITCHYARD__WEBHOOKS__BACKOFF_BASE_MS", "300"),
        ("SWITCHYARD__WEBHOOKS__BACKOFF_MAX_MS", "300"),
    ])
    .await;
    let id = create(&app, &receiver, &["custom.*"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.publish("custom.one", json!({}));
    crate::common::eventually("the first attempt", || async {
        !receiver.hits().is_empty()
    })
    .await;
    let (status, body) = app.delete(&format!("/api/webhooks/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": id, "deleted": true}));
    let (status, _) = app.get(&format!("/api/webhooks/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/api/webhooks/{id}/deliveries")).await;
    assert_eq!(status, 404);
    app.publish("custom.two", json!({}));
    // Its retry was due within 300 ms; nothing more comes.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    app.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn a_waiting_delivery_resumes_after_a_restart() {
    let receiver = Receiver::start(1).await;
    let dirs = Dirs::new();
    // The retry is due 1-2 s after the first attempt: after the service has stopped.
    let slow_retry = [
        ("SWITCHYARD__WEBHOOKS__BACKOFF_BASE_MS", "2000"),
        ("SWITCHYARD__WEBHOOKS__BACKOFF_MAX_MS", "2000"),
    ];
    let app = spawn_in(dirs.clone(), &slow_retry).await;
    let id = create(&app, &receiver, &["custom.*"]).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.publish("custom.survivor", json!({"keep": true}));
    let first = settled(&app, &id, "retrying", Duration::from_secs(20)).await;
    assert_eq!(first["attempts"], 1);
    app.stop().await;
    assert_eq!(receiver.hits().len(), 1);

    let app = spawn_in(dirs, &slow_retry).await;
    let done = settled(&app, &id, "delivered", Duration::from_secs(20)).await;
    assert_eq!(done["id"], first["id"]);
    assert_eq!(done["attempts"], 2, "{done}");
    let hits = receiver.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    // The secret came back from the store (sealed there) and still signs.
    assert!(hits[1].verified, "{hits:?}");
    assert_eq!(hits[1].delivery, first["id"].as_str().unwrap());
    assert_eq!(hits[1].body["data"], json!({"keep": true}));
    app.stop().await;
    receiver.stop().await;
}

#[actix_web::test]
async fn a_slow_receiver_never_holds_back_the_event_bus() {
    let receiver = Receiver::start(0).await;
    receiver.state.delay_ms.store(3000, Ordering::Relaxed);
    let mut app = spawn(&[
        ("SWITCHYARD__WEBHOOKS__CONCURRENCY", "2"),
        ("SWITCHYARD__WEBHOOKS__TIMEOUT_MS", "10000"),
        ("SWITCHYARD__WEBHOOKS__DRAIN_TIMEOUT_MS", "500"),
    ])
    .await;
    create(&app, &receiver, &["custom.*"]).await;
    app.drain_events();
    let started = Instant::now();
    for n in 0..50 {
        app.publish("custom.burst", json!({"n": n}));
    }
    // Every event reaches the bus's other subscribers at once, in order.
    for n in 0..50 {
        let event = app.next_event("custom.burst").await;
        assert_eq!(event.data["n"], n);
    }
    // (Far less than one answer of the receiver takes: nothing waited for it.)
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the events took {:?} to arrive",
        started.elapsed()
    );
    assert_eq!(app.broker.stats().publish_dropped, 0);
    // The receiver holds two requests (the concurrency), the rest wait their turn.
    crate::common::eventually("two attempts in flight", || async {
        receiver.hits().len() == 2
    })
    .await;
    let asked = Instant::now();
    let (status, _) = app.get("/api/webhooks").await;
    assert_eq!(status, 200);
    assert!(asked.elapsed() < Duration::from_secs(2));
    assert_eq!(receiver.hits().len(), 2);
    // Shutdown waits for the attempts in flight at most webhooks.drain_timeout_ms (500 ms),
    // not for the receiver's 3 s answers.
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_millis(2900),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    receiver.stop().await;
}

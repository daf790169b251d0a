//! The event bus's two bounds: the size of an event's payload (`broker.max_event_bytes`) and
//! the broker's mailbox (`broker.mailbox_capacity`).

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::common::{eventually, Dirs, TestApp};

/// A script plugin listening to everything, reporting what it saw of each `tool.executed`.
const LISTENER: &str = r#"export default {
  name: "listener", version: "1.0.0",
  init(ctx) {
    const bus = ctx.getEventBus();
    bus.on("*", (data, event) => {
      if (event.event !== "tool.executed") return;
      bus.emit("test.seen", {
        toolName: data.toolName,
        truncated: data.truncated === true,
        originalBytes: data.originalBytes ?? null,
        greeting: data.result ? data.result.greeting.length : null,
      });
    });
  },
};
"#;

/// The payload's size on the wire, as `serde_json` writes it.
fn json_len(value: &Value) -> usize {
    serde_json::to_string(value).unwrap().len()
}

/// The next `(event, envelope)` frame of an SSE body, skipping comments.
async fn next_sse<S>(body: &mut S, buf: &mut Vec<u8>) -> (String, Value)
where
    S: Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    // Where the search for the end of a frame goes on (a frame may be megabytes long).
    let mut from = 0;
    loop {
        if let Some(end) = buf[from..]
            .windows(2)
            .position(|w| w == b"\n\n")
            .map(|at| from + at)
        {
            from = 0;
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let frame = String::from_utf8(frame).unwrap();
            let name = frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .map(str::to_string);
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(name), Some(data)) = (name, data) {
                return (name, serde_json::from_str(data).unwrap());
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE frame within 10 s")
            .expect("stream open")
            .expect("SSE body");
        from = buf.len().saturating_sub(1);
        buf.extend_from_slice(&chunk);
    }
}

/// The incident: one plugin's huge tool result went in `tool.executed` to every subscriber and
/// killed a script plugin on its memory limit. Now every subscriber gets a bounded marker.
#[actix_web::test]
async fn an_oversized_tool_result_reaches_every_subscriber_as_a_bounded_marker() {
    let dirs = Dirs::new();
    dirs.write("listener", "index.js", LISTENER);
    // The native `hello` tool greets by name: a 4 MiB name makes a 4 MiB result, and an 8 MiB
    // `tool.executed` (params and result). The script listener has a 4 MiB engine.
    let env = [
        (
            "SWITCHYARD__PLUGINS__NATIVE",
            r#"["event-logger", "hello"]"#,
        ),
        ("SWITCHYARD__SERVER__MAX_BODY_BYTES", "16777216"),
        ("SWITCHYARD__PLUGINS__SCRIPT__MEMORY_LIMIT_BYTES", "4194304"),
        // The server notices the SSE client left at its next keep-alive: stop does not wait.
        ("SWITCHYARD__BROKER__STREAM_KEEPALIVE_MS", "100"),
    ];
    let mut app = TestApp::spawn_in(dirs, &env, vec![]).await;
    let max = 256 << 10;

    // A remote subscriber, over SSE.
    let mut sse = awc::Client::new()
        .get(app.url("/api/events?pattern=tool.executed"))
        .send()
        .await
        .expect("SSE request");
    assert_eq!(sse.status().as_u16(), 200);
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains(": subscribed") {
        buf.extend_from_slice(&sse.next().await.unwrap().unwrap());
    }
    buf.clear();

    // A small result travels untouched.
    let (status, small) = app
        .post_json(
            "/api/tools/hello/invoke",
            json!({ "params": { "name": "Ada" } }),
        )
        .await;
    assert_eq!(status, 200, "{small}");
    let (_, envelope) = next_sse(&mut sse, &mut buf).await;
    assert_eq!(
        envelope["data"]["result"],
        json!({ "greeting": "Hello, Ada!" })
    );
    assert!(envelope["data"].get("truncated").is_none());
    let seen = app.next_event("test.seen").await;
    assert_eq!(seen.data["greeting"], 11);
    assert_eq!(seen.data["truncated"], false);

    // 4 MiB: the caller gets it all, subscribers get the marker.
    let name = "x".repeat(4 << 20);
    let mut resp = app
        .client()
        .post(app.url("/api/tools/hello/invoke"))
        .send_json(&json!({ "params": { "name": name } }))
        .await
        .unwrap();
    let body = resp.body().limit(16 << 20).await.unwrap();
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&body[..body.len().min(500)])));
    assert_eq!(body["result"]["greeting"], format!("Hello, {name}!"));

    let (event, envelope) = next_sse(&mut sse, &mut buf).await;
    assert_eq!(event, "tool.executed");
    let data = &envelope["data"];
    assert_eq!(data["truncated"], true, "{}", &envelope.to_string()[..200]);
    let original = data["originalBytes"].as_u64().unwrap() as usize;
    assert!(original > 2 * name.len(), "{data}");
    assert_eq!(data["maxBytes"], max);
    assert!(json_len(data) <= max, "{}", json_len(data));
    // The small top-level fields survive, and the preview is the start of the original JSON.
    assert_eq!(data["toolName"], "hello");
    assert_eq!(data["plugin"], "hello");
    assert!(data["durationMs"].is_number());
    assert!(data.get("result").is_none() && data.get("params").is_none());
    let preview = data["preview"].as_str().unwrap();
    assert!(
        preview.starts_with(r#"{"toolName":"hello","plugin":"hello","params":{"name":"xxx"#),
        "{preview}"
    );
    assert!(preview.len() <= 1024, "{}", preview.len());

    // The script plugin under its 4 MiB limit saw the marker and lives on.
    let seen = app.next_event("test.seen").await;
    assert_eq!(seen.data["truncated"], true, "{}", seen.data);
    assert_eq!(seen.data["originalBytes"], original);
    assert_eq!(seen.data["toolName"], "hello");
    let (_, health) = app.get("/health").await;
    let listener = &health["checks"]["actor:root/plugins/listener"][0];
    assert_eq!(listener["state"], "running", "{listener}");
    assert_eq!(listener["restarts"], 0, "{listener}");
    assert_eq!(
        health["checks"]["broker:events"][0]["observedValue"]["eventsTruncated"],
        1
    );
    assert!(!app
        .drain_events()
        .iter()
        .any(|(name, data)| name == "plugin.error" && data["plugin"] == "listener"));
    drop(sse);
    app.stop().await;
}

/// `broker.max_event_bytes` bounds custom events too, by their exact size on the wire
/// (escapes and floats included): at the bound an event passes, one byte over it does not.
#[actix_web::test]
async fn max_event_bytes_is_exact_and_applies_to_every_event() {
    let max = 4096;
    let mut app = TestApp::spawn(
        &[("SWITCHYARD__BROKER__MAX_EVENT_BYTES", "4096")],
        vec![],
        Default::default(),
    )
    .await;
    // Quotes and control characters are escaped on the wire; floats are written in full.
    let payload = |n: u64, pad: usize| json!({ "n": n, "q": "\"\u{1}\u{e9}\n".repeat(100), "f": [0.1, 1e300, -2.5e-7, 3], "pad": "p".repeat(pad) });
    let pad = (0..max)
        .find(|&pad| json_len(&payload(1, pad)) == max)
        .unwrap();
    let huge = json!({ "n": 3, "blob": "y".repeat(1 << 20) });
    app.publish("test.sized", payload(1, pad));
    app.publish("test.sized", payload(2, pad + 1));
    app.publish("test.sized", huge.clone());

    let at_bound = app.next_event("test.sized").await;
    assert_eq!(at_bound.data, payload(1, pad));
    let over = app.next_event("test.sized").await;
    assert_eq!(over.data["truncated"], true, "{}", over.data);
    assert_eq!(over.data["n"], 2);
    assert_eq!(over.data["originalBytes"], max + 1);
    assert_eq!(over.data["maxBytes"], max);
    assert!(json_len(&over.data) <= max);
    let over = app.next_event("test.sized").await;
    assert_eq!(over.data["n"], 3);
    assert_eq!(over.data["originalBytes"], json_len(&huge));
    assert!(json_len(&over.data) <= max);
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["broker:events"][0]["observedValue"]["eventsTruncated"],
        2
    );

    // A bound too small for the marker itself is refused at load, naming the key.
    let dirs = Dirs::new();
    let error = switchyard::settings::load(
        &switchyard::settings::Overrides::default(),
        vec![
            (
                "SWITCHYARD__DATA__DIR".to_string(),
                dirs.data().display().to_string(),
            ),
            (
                "SWITCHYARD__BROKER__MAX_EVENT_BYTES".to_string(),
                "100".to_string(),
            ),
        ],
    )
    .expect_err("a 100-byte bound is refused");
    assert!(
        error.to_string().contains("broker.max_event_bytes"),
        "{error}"
    );
    app.stop().await;
}

/// The mailbox bound is real: while the broker is stuck, publishes beyond its capacity are
/// dropped and counted instead of queued, the high-water mark never passes the capacity, and
/// the service stays healthy and delivers again, in each publisher's order, once it resumes.
#[actix_web::test]
async fn a_stuck_broker_drops_and_counts_publishes_beyond_its_mailbox_capacity() {
    let capacity = 64;
    let mut app = TestApp::spawn(
        &[("SWITCHYARD__BROKER__MAILBOX_CAPACITY", "64")],
        vec![],
        Default::default(),
    )
    .await;
    let _ = app.drain_events();
    let before = app.broker.stats();
    let paused = app.broker.pause().await;

    // 8 threads and 8 tasks publish 1,000 events each, as fast as they can.
    let (threads, tasks, each) = (8u64, 8u64, 1_000u64);
    let flood = move |p: u64, broker: switchyard::broker::BrokerHandle| {
        for n in 0..each {
            broker.publish(
                switchyard::broker::Event::custom("test.flood", json!({ "p": p, "n": n })).unwrap(),
            );
        }
    };
    let handles: Vec<_> = (0..threads)
        .map(|p| {
            let broker = app.broker.clone();
            std::thread::spawn(move || flood(p, broker))
        })
        .collect();
    let mut spawned = Vec::new();
    for p in threads..threads + tasks {
        let broker = app.broker.clone();
        spawned.push(actix_web::rt::spawn(async move {
            tokio::task::yield_now().await;
            flood(p, broker)
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    for t in spawned {
        t.await.unwrap();
    }
    let total = (threads + tasks) * each;

    // The service answers while its broker is stuck, and /health tells the truth.
    assert_eq!(app.get("/livez").await.0, 200);
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let mailbox = &health["checks"]["actor:root/broker"][0]["mailbox"];
    assert_eq!(mailbox["capacity"], capacity, "{mailbox}");
    assert!(
        mailbox["highWater"].as_u64().unwrap() <= capacity,
        "{mailbox}"
    );
    assert_eq!(mailbox["depth"], capacity, "{mailbox}");
    let stats = app.broker.stats();
    let dropped = stats.publish_dropped - before.publish_dropped;
    assert!(dropped > 0, "{stats:?}");
    assert_eq!(dropped, total - capacity, "{stats:?}");
    assert_eq!(
        health["checks"]["broker:events"][0]["observedValue"]["publishDropped"],
        stats.publish_dropped
    );

    // Resumed: what was accepted is delivered in each publisher's order, then new events.
    drop(paused);
    let mut last: HashMap<u64, u64> = HashMap::new();
    for _ in 0..capacity {
        let event = app.next_event("test.flood").await;
        let (p, n) = (
            event.data["p"].as_u64().unwrap(),
            event.data["n"].as_u64().unwrap(),
        );
        if let Some(prev) = last.insert(p, n) {
            assert!(n > prev, "publisher {p}: {n} after {prev}");
        }
    }
    app.publish("test.after", json!({}));
    app.next_event("test.after").await;
    eventually("the broker's mailbox drains", || async {
        app.get("/health").await.1["checks"]["actor:root/broker"][0]["mailbox"]["depth"] == 0
    })
    .await;
    let (status, health) = app.get("/health").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("pass")),
        "{health}"
    );
    let mailbox = &health["checks"]["actor:root/broker"][0]["mailbox"];
    assert!(
        mailbox["highWater"].as_u64().unwrap() <= capacity,
        "{mailbox}"
    );
    app.stop().await;
}

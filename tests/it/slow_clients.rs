//! Clients that hold connections: bodies that stall or trickle get 408 at the body deadline,
//! and open event streams (SSE and WebSocket) end at once with a last frame when the service
//! shuts down instead of holding its HTTP drain.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use switchyard::test_util::Recorder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::TestApp;

/// Sends `head` and then `body` a byte every `gap`, and reads until the server answers and
/// closes; returns the answer and how long after the head it came.
async fn trickle(app: &TestApp, head: &str, body: &[u8], gap: Duration) -> (String, Duration) {
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let began = Instant::now();
    let body = body.to_vec();
    let writer = actix_web::rt::spawn(async move {
        for byte in body {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
        // Then stall, holding the connection open.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let mut answer = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the server answers and closes the connection within 10 s");
    writer.abort();
    (
        String::from_utf8_lossy(&answer).to_string(),
        began.elapsed(),
    )
}

fn json_body(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[actix_web::test]
async fn a_stalled_or_trickling_body_gets_408_at_the_deadline_and_the_connection_closes() {
    let env = [("SWITCHYARD__SERVER__REQUEST_BODY_TIMEOUT_MS", "400")];
    let app = TestApp::spawn(&env, Vec::new(), Recorder::new()).await;
    let json = "{\"targetId\":\"nope\",\"padding\":\"..........................................\"}";
    let head = format!(
        "POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    // Stalled: a few bytes, then nothing.
    let (answer, after) = trickle(&app, &head, &json.as_bytes()[..5], Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = json_body(&answer);
    assert_eq!(body["code"], "request_body_timeout", "{body}");
    assert_eq!(body["details"]["timeoutMs"], 400, "{body}");
    assert!(after >= Duration::from_millis(350), "{after:?}");

    // Trickling: a byte every 50 ms never finishes the 70-byte body within 400 ms.
    let (answer, after) = trickle(&app, &head, json.as_bytes(), Duration::from_millis(50)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(json_body(&answer)["code"], "request_body_timeout");
    assert!(after < Duration::from_secs(3), "{after:?}");

    // A plugin-route-style raw body read (sessions' message endpoint reads bytes itself).
    let head = "POST /api/sessions/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n";
    let (answer, _) = trickle(&app, head, b"{\"mess", Duration::ZERO).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body that arrives in time is unaffected.
    let (status, body) = app
        .post_json("/api/sessions", serde_json::json!({ "targetId": "nope" }))
        .await;
    assert_eq!(status, 404, "{body}");
    app.stop().await;
}

#[actix_web::test]
async fn open_event_streams_end_with_a_last_frame_and_do_not_hold_the_shutdown() {
    let app = TestApp::spawn(&[], Vec::new(), Recorder::new()).await;
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let mut sse = client.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(sse.status(), 200);
    let first = sse.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("subscribed"));
    let (_, mut socket) = client
        .ws(app.url("/api/events/ws"))
        .connect()
        .await
        .unwrap();

    let began = Instant::now();
    app.shutdown.trigger();
    let mut text = String::new();
    while let Some(chunk) = sse.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(text.contains("event: stream.closed"), "{text}");
    assert!(text.contains("the service is shutting down"), "{text}");

    let mut frames = Vec::new();
    while let Some(Ok(frame)) = socket.next().await {
        frames.push(frame);
    }
    assert!(
        frames.iter().any(|f| matches!(f, awc::ws::Frame::Text(t) if String::from_utf8_lossy(t).contains("stream.closed"))),
        "{frames:?}"
    );
    assert!(
        frames.iter().any(
            |f| matches!(f, awc::ws::Frame::Close(Some(r)) if r.code == awc::ws::CloseCode::Away)
        ),
        "{frames:?}"
    );
    let report = app.stop().await;
    assert_eq!(report.code, 0);
    // The HTTP drain allows 10 s; open streams no longer use it up.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

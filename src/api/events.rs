//! The broker's events, outside the process: Server-Sent Events and a WebSocket.
//!
//! Owns `GET /api/events?pattern=a.*,b` (SSE: one `event:`/`data:` frame per event, in
//! publish order, a keep-alive comment when idle) and `GET /api/events/ws?pattern=…` (each
//! connection is an `EventSocket` actor, subscribed to the broker, that writes one JSON text
//! frame per event and answers pings). Both subscribe with a bounded queue: a client that falls
//! `broker.stream_capacity` events behind is disconnected and counted in the broker's
//! `subscribersEvicted`, so it never slows the broker or other clients. Does not own
//! subscriptions or fan-out (`broker`).
//!
//! The WebSocket side uses `actix-web-actors`, as the project's design asks, though upstream
//! has deprecated it in favour of `actix-ws`; moving is a contained change to this file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::broker::{Event, Subscription};

/// Limits of event streams (`[broker] stream_capacity`, `stream_keepalive_ms`).
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub capacity: usize,
    pub keep_alive: Duration,
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated patterns (`plugin.*,tool.executed`); all events when absent.
    pattern: Option<String>,
}

fn subscribe(state: &AppState, query: &StreamQuery) -> Result<Subscription, ApiError> {
    let text = query.pattern.as_deref().unwrap_or("*");
    let patterns: Vec<&str> = text.split(',').map(str::trim).collect();
    state
        .broker
        .subscribe_stream(&patterns, state.streams.capacity)
        .map_err(|e| ApiError::InvalidQuery(format!("pattern: {e}")))
}

/// The notice a client gets when it was disconnected for falling behind.
fn dropped_notice(missed: u64) -> serde_json::Value {
    json!({ "event": "stream.dropped", "data": {
        "reason": "the client fell behind the event stream and was disconnected",
        "missed": missed,
    } })
}

/// `GET /api/events`: Server-Sent Events.
pub async fn sse(
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sub = subscribe(&state, &query)?;
    let keep_alive = state.streams.keep_alive;
    struct Feed {
        sub: Subscription,
        seq: u64,
        ended: bool,
        tick: tokio::time::Interval,
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        sub,
        seq: 0,
        ended: false,
        tick,
    };
    // The first frame tells the client the subscription is live.
    let hello = futures::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(b"retry: 3000\n: subscribed\n\n"))
    });
    let events = futures::stream::unfold(feed, |mut feed| async move {
        if feed.ended {
            return None;
        }
        let frame = tokio::select! {
            event = feed.sub.recv() => match event {
                Some(event) => {
                    feed.seq += 1;
                    sse_frame(feed.seq, &event.event, &serde_json::to_string(&*event).unwrap_or_default())
                }
                None => {
                    feed.ended = true;
                    let missed = feed.sub.dropped();
                    if missed == 0 {
                        return None;
                    }
                    let notice = dropped_notice(missed);
                    sse_frame(feed.seq + 1, "stream.dropped", &notice.to_string())
                }
            },
            _ = feed.tick.tick() => ": keep-alive\n\n".to_string(),
        };
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(frame)), feed))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(hello.chain(events)))
}

fn sse_frame(id: u64, name: &str, data: &str) -> String {
    // JSON has no raw newlines, so one `data:` line carries it.
    format!("id: {id}\nevent: {name}\ndata: {data}\n\n")
}

/// `GET /api/events/ws`: the same events over a WebSocket. A request that is no WebSocket
/// handshake gets the JSON error saying what is missing (and subscribes to nothing).
pub async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    ws::handshake(&req).map_err(|e| ApiError::from_handshake(&e))?;
    let sub = subscribe(&state, &query)?;
    ws::start(
        EventSocket {
            sub: Some(sub),
            missed: None,
            keep_alive: state.streams.keep_alive,
            last_heard: Instant::now(),
        },
        &req,
        payload,
    )
}

/// One WebSocket client: an actor subscribed to the broker.
pub struct EventSocket {
    /// Moved into the actor's stream when it starts.
    sub: Option<Subscription>,
    /// Shared with the subscription: what the client missed, read when the stream ends.
    missed: Option<Arc<AtomicU64>>,
    keep_alive: Duration,
    last_heard: Instant,
}

impl Actor for EventSocket {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(sub) = self.sub.take() {
            self.missed = Some(sub.dropped_counter());
            ctx.add_stream(sub.into_stream());
        }
        // Ping when idle; a client silent for three periods is gone.
        ctx.run_interval(self.keep_alive, |act, ctx| {
            if act.last_heard.elapsed() > act.keep_alive * 3 {
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }
}

impl StreamHandler<Arc<Event>> for EventSocket {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Self::Context) {
        ctx.text(serde_json::to_string(&*event).unwrap_or_default());
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The broker ended the subscription: the client fell behind (or the service stops).
        let missed = self
            .missed
            .as_ref()
            .map(|m| m.load(Ordering::Relaxed))
            .unwrap_or(0);
        if missed > 0 {
            ctx.text(dropped_notice(missed).to_string());
        }
        ctx.close(Some(ws::CloseReason {
            code: if missed > 0 {
                ws::CloseCode::Policy
            } else {
                ws::CloseCode::Away
            },
            description: Some(if missed > 0 {
                "client fell behind".into()
            } else {
                "event stream ended".into()
            }),
        }));
        ctx.stop();
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for EventSocket {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "Event socket protocol error; closing.");
                ctx.stop();
            }
        }
    }
}

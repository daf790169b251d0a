//! The broker's events, outside the process: Server-Sent Events and a WebSocket.
//!
//! Owns `GET /api/events?pattern=a.*,b` (SSE: one `event:`/`data:` frame per event, in
//! publish order, a keep-alive comment when idle) and `GET /api/events/ws?pattern=…` (each
//! connection is an `EventSocket` actor, subscribed to the broker, that writes one JSON text
//! frame per event and answers pings). Both subscribe with a bounded queue: a client that falls
//! `broker.stream_capacity` events behind is disconnected and counted in the broker's
//! `subscribersEvicted`, so it never slows the broker or other clients. When the service
//! starts draining, every stream ends at once with a `stream.closed` frame (the WebSocket with
//! close code 1001), so an open client never holds the shutdown's HTTP drain. Does not own
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
use crate::health::Lifecycle;

/// Limits of event streams (`[broker] stream_capacity`, `stream_keepalive_ms`).
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub capacity: usize,
    pub keep_alive: Duration,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

/// The broker's events as Server-Sent Events.
///
/// One frame per event (`id:`, `event:` its name, `data:` the JSON envelope), in publish order;
/// `: keep-alive` comments when idle. A client that falls `broker.stream_capacity` events
/// behind gets a `stream.dropped` frame and the end of the stream; at shutdown every stream
/// ends with a `stream.closed` frame. The stream does not end otherwise.
#[utoipa::path(get, path = "/api/events", tag = "events", operation_id = "event_stream", params(StreamQuery),
    responses((status = 200, description = "The stream: one event per broker event.", content_type = "text/event-stream",
        body = super::schemas::BrokerStreamEvent)),
    extensions(("x-error-codes" = json!([]))))]
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
        lifecycle: Arc<Lifecycle>,
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        sub,
        seq: 0,
        ended: false,
        tick,
        lifecycle: state.lifecycle.clone(),
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
            // The last frame, so a client knows the end is deliberate (and reconnects later).
            _ = feed.lifecycle.draining() => {
                feed.ended = true;
                sse_frame(feed.seq + 1, "stream.closed", &shutdown_notice().to_string())
            }
        };
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(frame)), feed))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(hello.chain(events)))
}

/// The last frame of every stream when the service shuts down.
fn shutdown_notice() -> serde_json::Value {
    json!({ "event": "stream.closed", "data": {
        "reason": "the service is shutting down",
    } })
}

fn sse_frame(id: u64, name: &str, data: &str) -> String {
    // JSON has no raw newlines, so one `data:` line carries it.
    format!("id: {id}\nevent: {name}\ndata: {data}\n\n")
}

/// The broker's events over a WebSocket.
///
/// The same events as `GET /api/events`, one JSON text frame each. A request that is no
/// WebSocket handshake gets `websocket_upgrade_required` saying what is missing (and subscribes
/// to nothing).
#[utoipa::path(get, path = "/api/events/ws", tag = "events", operation_id = "event_socket",
    params(
        StreamQuery,
        ("Connection" = String, Header, description = "`Upgrade`.", example = "Upgrade"),
        ("Upgrade" = String, Header, description = "`websocket`.", example = "websocket"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`.", example = "13"),
        ("Sec-WebSocket-Key" = String, Header, description = "16 random bytes, base64.", example = "dGhlIHNhbXBsZSBub25jZQ=="),
    ),
    responses((status = 101, description = "Switching protocols: the socket is open.")),
    extensions(("x-error-codes" = json!(["websocket_upgrade_required"]))))]
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
            lifecycle: state.lifecycle.clone(),
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
    lifecycle: Arc<Lifecycle>,
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
        let lifecycle = self.lifecycle.clone();
        let draining = async move { lifecycle.draining().await };
        ctx.spawn(draining.into_actor(self).map(|_, _, ctx| {
            ctx.text(shutdown_notice().to_string());
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Away,
                description: Some("the service is shutting down".into()),
            }));
            ctx.stop();
        }));
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

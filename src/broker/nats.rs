//! The event bus across instances: this instance's events out to NATS, the others' in.
//!
//! Owns the NATS connection (async-nats, which reconnects by itself; here with a capped,
//! jittered backoff), the subjects (`<broker.nats_subject>.<event name>`), the envelope on the
//! wire (the event's own JSON, `origin` included) and the link's counters for `/health`.
//!
//! An event published on this instance with [`Scope::Cluster`] goes out once; one arriving
//! with another instance's `origin` is published on the local broker, so every subscriber
//! (event streams, plugins) sees each event once, wherever it was published. Our own events
//! coming back are ignored, and an arriving event is never sent out again (it does not carry
//! this instance's origin). While NATS is unreachable, events reach this instance's
//! subscribers only: they are counted as not forwarded, never queued to arrive late, and
//! `/health` warns. The bridge reads the broker like any subscriber, so a slow or lost NATS
//! never slows a publisher. Does not own local delivery (`Broker`) nor the catalogue
//! (`events`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_nats::connection::State;
use futures::StreamExt;
use serde::Serialize;

use super::events::{Event, Scope};
use super::{bound::WarnLimiter, BrokerHandle};

/// Why the bridge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot subscribe to '{subject}' on NATS: {message}")]
    Subscribe { subject: String, message: String },
}

/// What the bridge needs from the settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `broker.nats_url` (may hold a user and password: only [`crate::util::loggable_url`]
    /// of it is ever shown).
    pub url: String,
    /// `broker.nats_subject`.
    pub subject: String,
    /// Events waiting to go out; more are dropped (and counted by the broker).
    pub capacity: usize,
}

/// The link as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkSnapshot {
    /// The server, without credentials.
    pub url: String,
    pub state: LinkState,
    /// This instance's events sent to the others.
    pub forwarded: u64,
    /// Other instances' events published here.
    pub received: u64,
    /// This instance's events that reached local subscribers only (NATS was unreachable).
    pub not_forwarded: u64,
    /// Messages on the subject that were no event envelope.
    pub refused: u64,
}

/// The connection to NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Not yet connected since start.
    Connecting,
    Connected,
    /// Lost; reconnecting.
    Disconnected,
}

/// The link's counters and connection, shared with `/health`.
pub struct Link {
    client: async_nats::Client,
    url: String,
    forwarded: AtomicU64,
    received: AtomicU64,
    not_forwarded: AtomicU64,
    refused: AtomicU64,
}

impl Link {
    pub fn state(&self) -> LinkState {
        match self.client.connection_state() {
            State::Connected => LinkState::Connected,
            State::Pending => LinkState::Connecting,
            State::Disconnected => LinkState::Disconnected,
        }
    }

    pub fn snapshot(&self) -> LinkSnapshot {
        LinkSnapshot {
            url: self.url.clone(),
            state: self.state(),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            not_forwarded: self.not_forwarded.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// The wait before reconnect attempt `attempt` (from 1): doubling from 100 ms up to 5 s, with
/// ±20 % jitter (`jitter` in 0..1) so a cluster that lost its server does not reconnect in step.
pub fn reconnect_delay(attempt: usize, jitter: f64) -> Duration {
    let base = 100u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(6))
        .min(5_000) as f64;
    Duration::from_millis((base * (0.8 + 0.4 * jitter.clamp(0.0, 1.0))) as u64)
}

/// Stop: flush what was sent and close the connection (part of shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopBridge;

/// The bridge between this instance's broker and NATS.
pub struct NatsBridge {
    link: Arc<Link>,
    subject: String,
    broker: BrokerHandle,
    /// This instance's events, as the broker delivers them to the bridge.
    outgoing: Option<super::Subscription>,
    incoming: Option<async_nats::Subscriber>,
}

impl NatsBridge {
    /// Connects (in the background when the server is not reachable yet: the service starts
    /// anyway, with local delivery and a `/health` warning), subscribes to the other
    /// instances' events and starts the bridge.
    pub async fn start(
        config: NatsConfig,
        broker: BrokerHandle,
    ) -> Result<(Addr<NatsBridge>, Arc<Link>), NatsError> {
        let url = crate::util::loggable_url(&config.url);
        let shown = url.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("switchyard {}", broker.instance()))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| reconnect_delay(attempt, fastrand::f64()))
            .event_callback(move |event| {
                let url = shown.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(%url, "Connected to NATS: events travel between instances.")
                        }
                        async_nats::Event::Disconnected => tracing::warn!(
                            %url,
                            "Lost NATS: events reach this instance only until it reconnects."
                        ),
                        other => tracing::debug!(%url, event = %other, "NATS client event."),
                    }
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| NatsError::Connect {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let wildcard = format!("{}.>", config.subject);
        let incoming =
            client
                .subscribe(wildcard.clone())
                .await
                .map_err(|e| NatsError::Subscribe {
                    subject: wildcard,
                    message: e.to_string(),
                })?;
        let outgoing = broker
            .subscribe_with(&["*"], config.capacity, false)
            .expect("'*' is a valid pattern");
        let link = Arc::new(Link {
            client,
            url,
            forwarded: AtomicU64::new(0),
            received: AtomicU64::new(0),
            not_forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let bridge = NatsBridge {
            link: link.clone(),
            subject: config.subject,
            broker,
            outgoing: Some(outgoing),
            incoming: Some(incoming),
        };
        Ok((bridge.start(), link))
    }
}

impl Actor for NatsBridge {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let instance = self.broker.instance();
        if let Some(mut outgoing) = self.outgoing.take() {
            let link = self.link.clone();
            let prefix = self.subject.clone();
            let out = async move {
                while let Some(event) = outgoing.recv().await {
                    if event.scope == Scope::Local || event.origin.as_deref() != Some(&*instance) {
                        continue;
                    }
                    // Not connected: local delivery only. Queued events would arrive late and
                    // out of step with what the other instances did meanwhile.
                    if link.client.connection_state() != State::Connected {
                        link.not_forwarded.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let sent = match serde_json::to_vec(&*event) {
                        Ok(body) => link
                            .client
                            .publish(format!("{prefix}.{}", event.event), body.into())
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match sent {
                        Ok(()) => link.forwarded.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            tracing::debug!(event = %event.event, %error, "Event not sent to NATS.");
                            link.not_forwarded.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            };
            ctx.spawn(out.into_actor(self));
        }
        if let Some(mut incoming) = self.incoming.take() {
            let link = self.link.clone();
            let broker = self.broker.clone();
            let instance = broker.instance();
            let warnings = WarnLimiter::new(Duration::from_secs(60));
            let ins = async move {
                while let Some(message) = incoming.next().await {
                    match Event::from_wire(&message.payload) {
                        Ok(event) if event.origin.as_deref() == Some(&*instance) => {}
                        Ok(event) => {
                            link.received.fetch_add(1, Ordering::Relaxed);
                            broker.publish(event);
                        }
                        Err(error) => {
                            link.refused.fetch_add(1, Ordering::Relaxed);
                            if let Some(held_back) = warnings.allow(message.subject.as_str()) {
                                tracing::warn!(
                                    subject = %message.subject,
                                    %error,
                                    refused_since_last_warning = held_back,
                                    "A message on the events subject was no event; ignored."
                                );
                            }
                        }
                    }
                }
            };
            ctx.spawn(ins.into_actor(self));
        }
    }
}

impl Handler<StopBridge> for NatsBridge {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: StopBridge, _ctx: &mut Context<Self>) -> Self::Result {
        let client = self.link.client.clone();
        Box::pin(
            async move {
                // What was published reaches the server before the connection closes.
                let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
                let _ = client.drain().await;
            }
            .into_actor(self)
            .map(|(), _act, ctx| ctx.stop()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_from_100_ms_to_5_s_with_jitter() {
        assert_eq!(reconnect_delay(1, 0.5), Duration::from_millis(100));
        assert_eq!(reconnect_delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(reconnect_delay(6, 0.5), Duration::from_millis(3200));
        assert_eq!(reconnect_delay(7, 0.5), Duration::from_millis(5000));
        assert_eq!(reconnect_delay(1000, 0.5), Duration::from_millis(5000));
        assert_eq!(reconnect_delay(0, 0.5), Duration::from_millis(100));
        for attempt in 1..50 {
            let low = reconnect_delay(attempt, 0.0);
            let high = reconnect_delay(attempt, 1.0);
            assert!(
                low < high && high <= Duration::from_millis(6000),
                "{attempt}"
            );
            assert!(low >= Duration::from_millis(80));
        }
    }
}

//! The delivery actor: events from the broker to the webhooks they match, over HTTP.
//!
//! Owns the broker subscription (`*`, held only while a webhook exists), turning a matching
//! event into one delivery per webhook (recorded `pending` before its first attempt), the
//! attempts themselves (signed POSTs through the shared awc client, at most
//! `webhooks.concurrency` at once, each within `webhooks.timeout_ms`), their retries as the
//! [`policy`](super::policy) decides, resuming unfinished deliveries at start, and draining at
//! shutdown. Each delivery runs as its own future on this actor, so the actor's mailbox never
//! waits on a receiver, and the broker only ever `try_send`s into the subscription's queue: a
//! slow receiver can never hold back publishers or other subscribers. No order is kept between
//! deliveries. Does not own the webhook table (`Registry`) nor the rows' SQL (`store`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};

use super::policy::{Attempt, DeliveryState, Next};
use super::{now_ms, sign, Config, Registry, Webhook};
use crate::broker::{BrokerHandle, Event};
use crate::store::webhooks::DeliveryRow;

// ---- Messages -------------------------------------------------------------------------------

/// The set of webhooks changed: subscribe to the broker if one exists now, let go if none.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

/// Send a `webhook.test` event to one webhook. Answers with a receiver of the delivery as it
/// stands after its first attempt.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<DeliveryRow>")]
pub struct SendTest {
    pub hook: Arc<Webhook>,
}

/// Shutdown: take no more events, wait up to `drain_timeout` for attempts in flight, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

// ---- The actor ------------------------------------------------------------------------------

/// What the actor and its delivery futures share (all on the actor's thread).
struct Shared {
    registry: Arc<Registry>,
    config: Config,
    permits: Arc<Semaphore>,
    /// Deliveries recorded at once: one of the store's pooled connections at most, so a burst
    /// of deliveries (many webhooks on `*`) never starves sessions, transcripts and the API
    /// of connections. A contract run without it timed the pool out for every other caller.
    recording: Semaphore,
    /// Attempts between taking a permit and recording their outcome.
    in_flight: Cell<usize>,
    stopping: Cell<bool>,
}

/// Counts an attempt in flight while it lives.
struct InFlight(Rc<Shared>);

impl InFlight {
    fn new(shared: &Rc<Shared>) -> InFlight {
        shared.in_flight.set(shared.in_flight.get() + 1);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// The one delivery actor (see the module's header).
pub struct Dispatcher {
    shared: Rc<Shared>,
    broker: BrokerHandle,
    subscription: Option<SpawnHandle>,
}

impl Dispatcher {
    pub fn new(registry: Arc<Registry>, broker: BrokerHandle, config: Config) -> Dispatcher {
        Dispatcher {
            shared: Rc::new(Shared {
                registry,
                config,
                permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
                recording: Semaphore::new(1),
                in_flight: Cell::new(0),
                stopping: Cell::new(false),
            }),
            broker,
            subscription: None,
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let wanted = !self.shared.registry.is_empty() && !self.shared.stopping.get();
        match (wanted, self.subscription.take()) {
            (true, None) => match self.broker.subscribe(&["*"]) {
                Ok(sub) => self.subscription = Some(ctx.add_stream(sub.into_stream())),
                Err(e) => {
                    tracing::error!(error = %e, "Webhooks could not subscribe to the broker.")
                }
            },
            (false, Some(handle)) => {
                // Dropping the stream drops the subscription: the broker forgets it.
                ctx.cancel_future(handle);
            }
            (_, kept) => self.subscription = kept,
        }
    }

    /// Starts delivering `row` to `hook`; `fresh` rows are recorded first.
    fn spawn(
        &self,
        ctx: &mut Context<Self>,
        hook: Arc<Webhook>,
        row: DeliveryRow,
        fresh: bool,
        first: Option<oneshot::Sender<DeliveryRow>>,
    ) {
        ctx.spawn(deliver(self.shared.clone(), hook, row, fresh, first).into_actor(self));
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.refresh(ctx);
        // Deliveries a previous run left pending or retrying are taken up where they were.
        // Only those: one this run makes while the query is under way has its own runner
        // already, and a second one would send every attempt twice.
        let began = now_ms();
        let store = self.shared.registry.store().clone();
        ctx.spawn(
            async move { store.unfinished_deliveries().await }
                .into_actor(self)
                .map(move |rows, act, ctx| match rows {
                    Ok(rows) => {
                        let mut resumed = 0;
                        for row in rows.into_iter().filter(|r| r.created_at < began) {
                            // A webhook deleted meanwhile took its deliveries with it.
                            if let Some(hook) = act.shared.registry.get(&row.webhook_id) {
                                act.spawn(ctx, hook, row, false, None);
                                resumed += 1;
                            }
                        }
                        if resumed > 0 {
                            tracing::info!(resumed, "Unfinished webhook deliveries resumed.");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Unfinished webhook deliveries could not be read.")
                    }
                }),
        );
    }
}

impl StreamHandler<Arc<Event>> for Dispatcher {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        if self.shared.stopping.get() {
            return;
        }
        // Another instance's event is delivered by that instance.
        if event
            .origin
            .as_deref()
            .is_some_and(|origin| *origin != *self.broker.instance())
        {
            return;
        }
        for hook in self.shared.registry.matching(&event.event) {
            let row = new_delivery(&hook, &event);
            self.spawn(ctx, hook, row, true, None);
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The subscription's stream never ends on its own; a cancelled one is no reason to stop.
    }
}

impl Handler<Refresh> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _msg: Refresh, ctx: &mut Context<Self>) {
        self.refresh(ctx);
    }
}

impl Handler<SendTest> for Dispatcher {
    type Result = MessageResult<SendTest>;

    fn handle(&mut self, msg: SendTest, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let event = Event {
            event: "webhook.test".into(),
            timestamp: std::time::SystemTime::now(),
            data: json!({
                "webhookId": msg.hook.id,
                "message": "A test delivery from switchyard.",
            }),
            origin: Some(self.broker.instance()),
            scope: crate::broker::Scope::Local,
        };
        let row = new_delivery(&msg.hook, &event);
        self.spawn(ctx, msg.hook, row, true, Some(tx));
        MessageResult(rx)
    }
}

impl Handler<Drain> for Dispatcher {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        self.shared.stopping.set(true);
        self.refresh(ctx);
        let shared = self.shared.clone();
        let until = Instant::now() + shared.config.drain_timeout;
        Box::pin(
            async move {
                while shared.in_flight.get() > 0 && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if shared.in_flight.get() > 0 {
                    tracing::warn!(
                        in_flight = shared.in_flight.get(),
                        "Webhook attempts still in flight at shutdown; they are retried at the next start."
                    );
                }
            }
            .into_actor(self)
            .map(|(), _act, ctx| ctx.stop()),
        )
    }
}

// ---- Deliveries -----------------------------------------------------------------------------

/// A process-wide sequence in delivery ids, so ids made in the same millisecond still sort in
/// the order they were made.
static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A new `pending` delivery of `event` to `hook`, its envelope made once: every attempt sends
/// the same bytes (only the timestamp header and signature are per attempt).
fn new_delivery(hook: &Webhook, event: &Event) -> DeliveryRow {
    let now = now_ms();
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("whd_{now:012x}{seq:08x}{}", &crate::util::random_id()[..8]);
    let body = json!({
        "id": id,
        "event": event.event,
        "timestamp": crate::util::rfc3339(event.timestamp),
        "data": event.data,
    })
    .to_string();
    DeliveryRow {
        id,
        webhook_id: hook.id.clone(),
        event: event.event.clone(),
        body,
        state: DeliveryState::Pending.as_str().into(),
        attempts: 0,
        last_status: None,
        last_error: None,
        latency_ms: None,
        next_attempt_at: Some(now),
        created_at: now,
        updated_at: now,
    }
}

/// Records `row`, one delivery at a time (see [`Shared::recording`]); a test delivery
/// (`urgent`: an operator waits for it) does not queue behind the others.
async fn record(
    shared: &Shared,
    store: &crate::store::Store,
    row: &DeliveryRow,
    urgent: bool,
) -> Result<(), crate::store::StoreError> {
    // The semaphore is never closed, so acquiring only waits.
    let _turn = if urgent {
        None
    } else {
        shared.recording.acquire().await.ok()
    };
    store.save_delivery(row).await
}

/// One delivery from its first attempt to `delivered` or `dead`, or until the service stops
/// or the webhook is deleted (the row then stays as it is, to be resumed or dropped).
async fn deliver(
    shared: Rc<Shared>,
    hook: Arc<Webhook>,
    mut row: DeliveryRow,
    fresh: bool,
    mut first: Option<oneshot::Sender<DeliveryRow>>,
) {
    let store = shared.registry.store().clone();
    if fresh {
        if let Err(e) = record(&shared, &store, &row, first.is_some()).await {
            tracing::error!(webhook = %hook.id, error = %e, "A webhook delivery could not be recorded; it is sent all the same.");
        }
    }
    loop {
        let wait = row.next_attempt_at.unwrap_or_default() - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        if shared.stopping.get() || !shared.registry.contains(&hook.id) {
            return;
        }
        // A test's first attempt does not queue behind the other deliveries: an operator
        // waits for its answer (it is one request, within its timeout).
        let _permit = if first.is_some() {
            None
        } else {
            match shared.permits.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            }
        };
        if shared.stopping.get() {
            return;
        }
        let _in_flight = InFlight::new(&shared);
        let started = Instant::now();
        let outcome = attempt(&hook, &row.id, &row.event, &row.body, shared.config.timeout).await;
        row.latency_ms = Some(started.elapsed().as_millis() as i64);
        row.attempts += 1;
        let next = shared.config.retry.after(
            row.attempts.clamp(0, u32::MAX as i64) as u32,
            &outcome,
            fastrand::f64(),
        );
        let now = now_ms();
        (row.last_status, row.last_error) = match &outcome {
            Attempt::Answered(status) if outcome.delivered() => (Some(i64::from(*status)), None),
            Attempt::Answered(status) => (Some(i64::from(*status)), Some(format!("HTTP {status}"))),
            Attempt::Failed(reason) => (None, Some(reason.clone())),
        };
        let state = match next {
            Next::Delivered => DeliveryState::Delivered,
            Next::Retry(_) => DeliveryState::Retrying,
            Next::Dead => DeliveryState::Dead,
        };
        row.state = state.as_str().into();
        row.next_attempt_at = match next {
            Next::Retry(delay) => Some(now + delay.as_millis() as i64),
            _ => None,
        };
        row.updated_at = now;
        match state {
            DeliveryState::Dead => {
                tracing::warn!(webhook = %hook.id, delivery = %row.id, attempts = row.attempts, error = row.last_error.as_deref().unwrap_or(""), "A webhook delivery failed for good (dead).")
            }
            DeliveryState::Retrying => {
                tracing::debug!(webhook = %hook.id, delivery = %row.id, attempts = row.attempts, "A webhook delivery failed; retrying.")
            }
            _ => {}
        }
        // A webhook deleted during the attempt keeps no history.
        if shared.registry.contains(&hook.id) {
            if let Err(e) = record(&shared, &store, &row, first.is_some()).await {
                tracing::error!(webhook = %hook.id, error = %e, "A webhook delivery's outcome could not be recorded.");
            }
        }
        if let Some(tx) = first.take() {
            let _ = tx.send(row.clone());
        }
        if state != DeliveryState::Retrying {
            return;
        }
    }
}

/// The longest answer body read (and thrown away) so the connection can be reused.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// One signed POST of `body`.
async fn attempt(hook: &Webhook, id: &str, event: &str, body: &str, timeout: Duration) -> Attempt {
    let timestamp = now_ms().to_string();
    let signature = sign::signature(hook.secret(), &timestamp, body.as_bytes());
    let request = crate::connector::http::client()
        .post(&hook.url)
        .timeout(timeout)
        .insert_header(("content-type", "application/json"))
        .insert_header((
            "user-agent",
            concat!("switchyard/", env!("CARGO_PKG_VERSION")),
        ))
        .insert_header(("x-switchyard-signature", signature))
        .insert_header(("x-switchyard-timestamp", timestamp))
        .insert_header(("x-switchyard-delivery", id))
        .insert_header(("x-switchyard-event", event));
    let exchange = async {
        let mut response = request
            .send_body(body.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        // The answer's body means nothing to us; reading it lets the connection be reused.
        let _ = response.body().limit(MAX_ANSWER_BYTES).await;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Attempt::Answered(status),
        Ok(Err(reason)) => Attempt::Failed(reason),
        Err(_) => Attempt::Failed(format!(
            "no answer within {} ms (webhooks.timeout_ms)",
            timeout.as_millis()
        )),
    }
}

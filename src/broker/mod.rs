//! The broker: the event bus, as a supervised actor.
//!
//! Owns subscriptions (exact names or prefix patterns like `plugin.*`), fan-out of published
//! events, its two bounds and the counters of what was dropped or cut. Delivery to each
//! subscriber goes through a bounded queue with `try_send`: a full subscriber loses that event
//! (counted), and a publisher is never blocked and never excluded by its type. Does not own the
//! meaning of events (`events`) nor who publishes them.
//!
//! The bounds are enforced by the publisher, before anything is queued:
//! - the mailbox: a publish takes a slot of `broker.mailbox_capacity` from the mailbox gauge
//!   and gives it back when the broker takes the message out. With no slot left the event is
//!   dropped and counted (`publishDropped`). actix's own mailbox capacity is no bound: it parks
//!   each *sender* after one message too many, and every clone of an `Addr` is a new sender,
//!   while `do_send` ignores it altogether. The actix mailbox is therefore left unbounded and
//!   the slots are the bound.
//! - the payload: a `data` over `broker.max_event_bytes` as JSON is replaced by a marker
//!   (`bound::marker`), counted (`eventsTruncated`) and warned about once a minute per name.
//!
//! Callers never hold the broker's `Addr`; they hold a [`BrokerHandle`], which always points at
//! the current instance. Subscriptions belong to their subscribers: the handle keeps the list,
//! and each new broker instance is seeded from it, so after a broker restart every subscriber
//! is re-subscribed without doing anything (events published while it was down are lost and
//! counted as `publishDropped`).

pub mod bound;
pub mod events;
pub mod nats;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::health::MailboxGauge;
use crate::supervisor::child::{ChildFactory, DownGuard, RunningChild, StartArgs, StartError};
use crate::supervisor::policy::ExitReason;
pub use events::{Event, Scope, Topic};

/// Errors of the broker API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BrokerError {
    #[error(
        "invalid subscription pattern '{0}': use an exact name, a prefix like 'plugin.*', or '*'"
    )]
    InvalidPattern(String),
}

/// What a subscription matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    All,
    Exact(String),
    /// `plugin.*` matches names starting with `plugin.`.
    Prefix(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, BrokerError> {
        let bad = || BrokerError::InvalidPattern(text.to_string());
        if text == "*" {
            return Ok(Pattern::All);
        }
        if text.is_empty() || text.contains(char::is_whitespace) {
            return Err(bad());
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('.') && !prefix[..prefix.len() - 1].contains('*') => {
                Ok(Pattern::Prefix(prefix.to_string()))
            }
            Some(_) => Err(bad()),
            None if text.contains('*') => Err(bad()),
            None => Ok(Pattern::Exact(text.to_string())),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

// ---- Messages -------------------------------------------------------------------------------

/// Publish one event to every matching subscriber. Made by [`BrokerHandle::publish`] only: it
/// holds the event's mailbox slot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    event: Arc<Event>,
    slot: MailboxSlot,
}

/// One place in the broker's mailbox, taken before the send and given back when the broker
/// takes the message out, or when the message is dropped unhandled (a failed send, or the
/// mailbox of a dead instance being drained): the gauge's depth is exactly what waits.
struct MailboxSlot(Arc<MailboxGauge>);

impl MailboxSlot {
    fn take(gauge: &Arc<MailboxGauge>) -> Option<MailboxSlot> {
        gauge.try_enqueue().then(|| MailboxSlot(gauge.clone()))
    }
}

impl Drop for MailboxSlot {
    fn drop(&mut self) {
        self.0.dequeued();
    }
}

/// Register a subscriber's queue (the handle chose its id).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Subscriber);

/// Remove a subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub id: u64,
}

/// Stop the broker cleanly (part of shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopBroker;

/// Test hook: make the broker panic, to exercise its supervision.
#[cfg(any(test, feature = "test-util"))]
#[derive(Message)]
#[rtype(result = "()")]
pub struct CrashBroker;

/// Test hook: the broker handles nothing more until the sender side is dropped (its mailbox
/// fills up as if it were slow).
#[cfg(any(test, feature = "test-util"))]
#[derive(Message)]
#[rtype(result = "()")]
pub struct PauseBroker(tokio::sync::oneshot::Receiver<()>);

// ---- The actor ------------------------------------------------------------------------------

/// One subscriber: its patterns and its bounded queue.
#[derive(Clone)]
pub struct Subscriber {
    id: u64,
    patterns: Vec<Pattern>,
    queue: mpsc::Sender<Arc<Event>>,
    /// Shared with the `Subscription`, so the subscriber can see what it missed.
    dropped: Arc<AtomicU64>,
    /// Remove the subscriber the first time its queue is full (remote streams: a client that
    /// cannot keep up is disconnected rather than silently missing events).
    evict_when_full: bool,
}

/// The event-bus actor. Started by its [`BrokerFactory`] under the root supervisor.
pub struct Broker {
    subscribers: Vec<Subscriber>,
    shared: Arc<Shared>,
    guard: DownGuard,
}

impl Actor for Broker {
    type Context = Context<Self>;
}

impl Handler<Publish> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Context<Self>) {
        let Publish { event, slot } = msg;
        drop(slot);
        let mut evicted = Vec::new();
        self.subscribers.retain(|sub| {
            if !sub.patterns.iter().any(|p| p.matches(&event.event)) {
                return true;
            }
            match sub.queue.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.dropped.fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .stats
                        .delivery_dropped
                        .fetch_add(1, Ordering::Relaxed);
                    if sub.evict_when_full {
                        evicted.push(sub.id);
                        return false;
                    }
                    true
                }
                // The subscriber is gone.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
        if !evicted.is_empty() {
            // Dropping the handle's copy too closes the queue: the stream ends after what it
            // already holds.
            self.shared
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|s| !evicted.contains(&s.id));
            self.shared
                .stats
                .subscribers_evicted
                .fetch_add(evicted.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                count = evicted.len(),
                "Event stream clients fell behind and were disconnected."
            );
        }
    }
}

impl Handler<Subscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        self.subscribers.push(msg.0);
    }
}

impl Handler<Unsubscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        self.subscribers.retain(|s| s.id != msg.id);
    }
}

impl Handler<StopBroker> for Broker {
    type Result = ();

    fn handle(&mut self, _msg: StopBroker, ctx: &mut Context<Self>) {
        // Set here, not in `stopped()`: actix runs `stopped()` after a panic too.
        self.guard.set_reason(ExitReason::Shutdown);
        ctx.stop();
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Handler<CrashBroker> for Broker {
    type Result = ();

    fn handle(&mut self, _msg: CrashBroker, _ctx: &mut Context<Self>) {
        panic!("broker crash requested by a test");
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Handler<PauseBroker> for Broker {
    type Result = ();

    fn handle(&mut self, msg: PauseBroker, ctx: &mut Context<Self>) {
        // `wait` holds back the mailbox (not the thread) until the guard is dropped.
        ctx.wait(
            async move {
                let _ = msg.0.await;
            }
            .into_actor(self),
        );
    }
}

// ---- Handle and subscriptions ---------------------------------------------------------------

#[derive(Default)]
struct Stats {
    published: AtomicU64,
    delivered: AtomicU64,
    publish_dropped: AtomicU64,
    delivery_dropped: AtomicU64,
    subscribers_evicted: AtomicU64,
    events_truncated: AtomicU64,
}

/// The instance name of a handle made without one (a broker used on its own, as in tests; the
/// service always names its instance with `server.instance_id`).
fn generated_instance_id() -> String {
    format!("sw-{:08x}", fastrand::u32(..))
}

/// How often the broker repeats a warning about one event name.
const WARN_EVERY: Duration = Duration::from_secs(60);

struct Shared {
    current: RwLock<Option<Addr<Broker>>>,
    /// This instance's name in every event's `origin` (`server.instance_id`).
    instance: RwLock<Arc<str>>,
    /// Every live subscription; a new broker instance starts with this list. Also serialises
    /// subscribing against a broker (re)start, so no subscription is missed or doubled.
    registry: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    subscriber_capacity: usize,
    /// `broker.max_event_bytes`.
    max_event_bytes: AtomicUsize,
    /// The mailbox bound: its slots (`MailboxGauge::try_enqueue`).
    gauge: Arc<MailboxGauge>,
    stats: Stats,
    truncated_warnings: bound::WarnLimiter,
    dropped_warnings: bound::WarnLimiter,
}

/// Counters for `/health`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStats {
    pub published: u64,
    pub delivered: u64,
    /// Publishes refused because the broker's mailbox was full or it was restarting.
    pub publish_dropped: u64,
    /// Deliveries dropped because a subscriber's queue was full.
    pub delivery_dropped: u64,
    /// Stream clients disconnected because they fell behind.
    pub subscribers_evicted: u64,
    /// Events whose payload was over `broker.max_event_bytes`: subscribers got the marker.
    pub events_truncated: u64,
}

/// The stable way to reach the bus. Cheap to clone; survives broker restarts.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl BrokerHandle {
    /// A handle whose events may carry [`bound::DEFAULT_MAX_EVENT_BYTES`] of payload (see
    /// [`BrokerHandle::set_max_event_bytes`]).
    pub fn new(subscriber_capacity: usize, mailbox_capacity: usize) -> Self {
        BrokerHandle {
            shared: Arc::new(Shared {
                current: RwLock::new(None),
                instance: RwLock::new(generated_instance_id().into()),
                registry: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                subscriber_capacity,
                max_event_bytes: AtomicUsize::new(bound::DEFAULT_MAX_EVENT_BYTES),
                gauge: MailboxGauge::new(mailbox_capacity),
                stats: Stats::default(),
                truncated_warnings: bound::WarnLimiter::new(WARN_EVERY),
                dropped_warnings: bound::WarnLimiter::new(WARN_EVERY),
            }),
        }
    }

    /// Names this instance in the `origin` of the events it publishes from now on.
    pub fn set_instance(&self, id: &str) {
        *self
            .shared
            .instance
            .write()
            .unwrap_or_else(|e| e.into_inner()) = id.into();
    }

    /// This instance's name (`server.instance_id`).
    pub fn instance(&self) -> Arc<str> {
        self.shared
            .instance
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets `broker.max_event_bytes`: the most JSON a published event's `data` may take (at
    /// least [`bound::MIN_MAX_EVENT_BYTES`]; settings validation refuses less).
    pub fn set_max_event_bytes(&self, bytes: usize) {
        self.shared
            .max_event_bytes
            .store(bytes.max(bound::MIN_MAX_EVENT_BYTES), Ordering::Relaxed);
    }

    fn current(&self) -> Option<Addr<Broker>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(Addr::connected)
    }

    /// Publishes without ever waiting: if the broker's mailbox is full or the broker is
    /// restarting, the event is dropped and counted. A payload over `broker.max_event_bytes`
    /// is replaced by its marker first.
    pub fn publish(&self, mut event: Event) {
        self.shared.stats.published.fetch_add(1, Ordering::Relaxed);
        if event.origin.is_none() {
            event.origin = Some(self.instance());
        }
        // The slot first: a publish that will be dropped costs no measuring.
        let Some(slot) = MailboxSlot::take(&self.shared.gauge) else {
            return self.dropped(&event.event, "the broker's mailbox is full");
        };
        self.bound(&mut event);
        let name = event.event.clone();
        let msg = Publish {
            event: Arc::new(event),
            slot,
        };
        // The shared `Addr`, not a clone: a send through it is one queue push.
        let sent = {
            let current = self
                .shared
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner());
            current
                .as_ref()
                .filter(|addr| addr.connected())
                .map(|addr| addr.try_send(msg).is_ok())
        };
        // A failed send dropped the message, and its slot with it.
        if sent != Some(true) {
            self.dropped(&name, "the broker is restarting");
        }
    }

    /// Replaces an oversized payload by its marker (counted, warned about once a minute per
    /// event name).
    fn bound(&self, event: &mut Event) {
        let max = self.shared.max_event_bytes.load(Ordering::Relaxed);
        if bound::fits(&event.data, max) {
            return;
        }
        let original = bound::json_len(&event.data);
        event.data = bound::marker(&event.data, original, max);
        self.shared
            .stats
            .events_truncated
            .fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.shared.truncated_warnings.allow(&event.event) {
            tracing::warn!(
                event = %event.event,
                original_bytes = original,
                max_bytes = max,
                truncated_since_last_warning = held_back,
                "Event payload over broker.max_event_bytes: subscribers get a truncated marker."
            );
        }
    }

    fn dropped(&self, name: &str, why: &str) {
        self.shared.gauge.dropped();
        self.shared
            .stats
            .publish_dropped
            .fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.shared.dropped_warnings.allow(name) {
            tracing::warn!(
                event = %name,
                dropped_since_last_warning = held_back,
                "Event dropped: {why}."
            );
        }
    }

    /// Publishes a catalogue event.
    pub fn emit<T: Topic>(&self, payload: &T) {
        self.publish(Event::new(payload));
    }

    /// Subscribes to events matching any of `patterns`. Works before the broker runs and
    /// across its restarts.
    pub fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, BrokerError> {
        self.subscribe_with(patterns, self.shared.subscriber_capacity, false)
    }

    /// A subscription for a remote client: a queue of `capacity`, and the first event that
    /// finds it full ends the subscription (the stream then ends after what it holds).
    pub fn subscribe_stream(
        &self,
        patterns: &[&str],
        capacity: usize,
    ) -> Result<Subscription, BrokerError> {
        self.subscribe_with(patterns, capacity, true)
    }

    fn subscribe_with(
        &self,
        patterns: &[&str],
        capacity: usize,
        evict_when_full: bool,
    ) -> Result<Subscription, BrokerError> {
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let subscriber = Subscriber {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            patterns,
            queue: tx,
            dropped: Arc::new(AtomicU64::new(0)),
            evict_when_full,
        };
        let id = subscriber.id;
        let dropped = subscriber.dropped.clone();
        let mut registry = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = self.current() {
            // Control message: do_send keeps it ahead of any publish queued after it.
            addr.do_send(Subscribe(subscriber.clone()));
        }
        registry.push(subscriber);
        Ok(Subscription {
            handle: self.clone(),
            id,
            queue: rx,
            dropped,
        })
    }

    pub fn stats(&self) -> BrokerStats {
        let s = &self.shared.stats;
        BrokerStats {
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            publish_dropped: s.publish_dropped.load(Ordering::Relaxed),
            delivery_dropped: s.delivery_dropped.load(Ordering::Relaxed),
            subscribers_evicted: s.subscribers_evicted.load(Ordering::Relaxed),
            events_truncated: s.events_truncated.load(Ordering::Relaxed),
        }
    }

    pub fn gauge(&self) -> Arc<MailboxGauge> {
        self.shared.gauge.clone()
    }

    /// Test hook: crash the current broker instance.
    #[cfg(any(test, feature = "test-util"))]
    pub fn crash(&self) {
        if let Some(addr) = self.current() {
            addr.do_send(CrashBroker);
        }
    }

    /// Test hook: the current broker instance stops handling messages (publishes pile up in
    /// its mailbox) until the returned guard is dropped. Returns once the broker is paused.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn pause(&self) -> PauseGuard {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Some(addr) = self.current() {
            let _ = addr.send(PauseBroker(rx)).await;
        }
        PauseGuard { _resume: tx }
    }
}

/// Keeps the broker paused while it lives ([`BrokerHandle::pause`]).
#[cfg(any(test, feature = "test-util"))]
pub struct PauseGuard {
    _resume: tokio::sync::oneshot::Sender<()>,
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    handle: BrokerHandle,
    id: u64,
    queue: mpsc::Receiver<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next matching event. Never ends while the subscription lives (the handle keeps its
    /// queue open across broker restarts).
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.queue.recv().await
    }

    /// An event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.queue.try_recv().ok()
    }

    /// Events this subscriber lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The counter behind [`Subscription::dropped`], readable after the stream is consumed.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    /// Turns the subscription into a stream (for `ctx.add_stream` in actors).
    pub fn into_stream(self) -> impl futures::Stream<Item = Arc<Event>> {
        futures::stream::unfold(self, |mut sub| async move {
            sub.recv().await.map(|event| (event, sub))
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut registry = self
            .handle
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        registry.retain(|s| s.id != self.id);
        if let Some(addr) = self.handle.current() {
            addr.do_send(Unsubscribe { id: self.id });
        }
    }
}

// ---- Supervision ----------------------------------------------------------------------------

/// Starts broker instances for the root supervisor and points the handle at each new one.
pub struct BrokerFactory {
    pub handle: BrokerHandle,
}

struct RunningBroker {
    addr: Addr<Broker>,
    gauge: Arc<MailboxGauge>,
}

impl RunningChild for RunningBroker {
    fn stop(&self) -> LocalBoxFuture<'static, Result<(), String>> {
        let addr = self.addr.clone();
        async move {
            addr.send(StopBroker)
                .await
                .map_err(|e| format!("broker unreachable: {e}"))
        }
        .boxed_local()
    }

    fn kill(&self) {
        self.addr.do_send(StopBroker);
    }

    fn mailbox(&self) -> Option<Arc<MailboxGauge>> {
        Some(self.gauge.clone())
    }
}

impl ChildFactory for BrokerFactory {
    fn start(
        &self,
        args: StartArgs,
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, StartError>> {
        let shared = self.handle.shared.clone();
        let registry = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
        let addr = Broker::create(|ctx| {
            // Unbounded before the address exists: the mailbox slots are the bound (see the
            // module's notes), so actix must never park the shared sender on its own count.
            ctx.set_mailbox_capacity(0);
            Broker {
                subscribers: registry.clone(),
                shared: shared.clone(),
                guard: args.guard,
            }
        });
        *shared.current.write().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
        drop(registry);
        let gauge = shared.gauge.clone();
        async move { Ok(Box::new(RunningBroker { addr, gauge }) as Box<dyn RunningChild>) }
            .boxed_local()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(Pattern::parse("*").unwrap(), Pattern::All);
        assert!(Pattern::parse("plugin.*").unwrap().matches("plugin.loaded"));
        assert!(!Pattern::parse("plugin.*")
            .unwrap()
            .matches("pluginx.loaded"));
        assert!(Pattern::parse("plugin.loaded")
            .unwrap()
            .matches("plugin.loaded"));
        assert!(!Pattern::parse("plugin.loaded")
            .unwrap()
            .matches("plugin.loaded2"));
        for bad in ["", "plug*", "*.x", "a.*.b", "a b", "a.**"] {
            assert!(Pattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::*;
    use crate::supervisor::child::{DownGuard, StartArgs, StartPhase};

    #[actix_web::test]
    async fn a_full_subscriber_drops_and_counts_without_slowing_others() {
        let handle = BrokerHandle::new(2, 1024);
        let mut slow = handle.subscribe(&["x.*"]).unwrap();
        let mut other = handle.subscribe(&["*"]).unwrap();
        let _running = BrokerFactory {
            handle: handle.clone(),
        }
        .start(StartArgs {
            id: "broker".into(),
            path: "root/broker".into(),
            generation: 1,
            phase: StartPhase::Boot,
            placement: crate::supervisor::child::Placement::Shared,
            guard: DownGuard::detached("broker"),
        })
        .await
        .unwrap();
        for i in 0..10 {
            handle.publish(Event::custom("x.tick", serde_json::json!(i)).unwrap());
            // The other subscriber keeps up: it reads every event.
            let got = other.recv().await.unwrap();
            assert_eq!(got.data, serde_json::json!(i));
        }
        // The slow one, which never read, kept the first two and lost the rest, counted.
        assert_eq!(slow.try_recv().unwrap().data, serde_json::json!(0));
        assert_eq!(slow.try_recv().unwrap().data, serde_json::json!(1));
        assert!(slow.try_recv().is_none());
        assert_eq!(slow.dropped(), 8);
        assert_eq!(handle.stats().delivery_dropped, 8);
        assert_eq!(other.dropped(), 0);
    }
}

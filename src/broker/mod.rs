//! The broker: the event bus, as a supervised actor.
//!
//! Owns subscriptions (exact names or prefix patterns like `plugin.*`), fan-out of published
//! events, and the counters of what was dropped. Delivery to each subscriber goes through a
//! bounded queue with `try_send`: a full subscriber loses that event (counted), and a publisher
//! is never blocked and never excluded by its type. Does not own the meaning of events
//! (`events`) nor who publishes them.
//!
//! Callers never hold the broker's `Addr`; they hold a [`BrokerHandle`], which always points at
//! the current instance. After the broker restarts (fresh, with no subscribers), every
//! [`Subscription`] re-subscribes by itself on its next `recv`.

pub mod events;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::health::MailboxGauge;
use crate::supervisor::child::{ChildFactory, DownGuard, RunningChild, StartArgs};
use crate::supervisor::policy::ExitReason;
pub use events::{Event, Topic};

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

/// Publish one event to every matching subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Arc<Event>);

/// Register a subscriber's queue under an id chosen by the handle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub id: u64,
    pub patterns: Vec<Pattern>,
    pub queue: mpsc::Sender<Arc<Event>>,
    /// Shared with the `Subscription`, so the subscriber can see what it missed.
    pub dropped: Arc<AtomicU64>,
}

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

// ---- The actor ------------------------------------------------------------------------------

struct Subscriber {
    id: u64,
    patterns: Vec<Pattern>,
    queue: mpsc::Sender<Arc<Event>>,
    dropped: Arc<AtomicU64>,
}

/// The event-bus actor. Started by its [`BrokerFactory`] under the root supervisor.
pub struct Broker {
    subscribers: Vec<Subscriber>,
    shared: Arc<Shared>,
    guard: DownGuard,
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.shared.mailbox_capacity);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.guard.set_reason(ExitReason::Shutdown);
    }
}

impl Handler<Publish> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Publish, _ctx: &mut Context<Self>) {
        self.shared.gauge.dequeued();
        let event = msg.0;
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
                    true
                }
                // The subscriber is gone.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

impl Handler<Subscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) {
        self.subscribers.push(Subscriber {
            id: msg.id,
            patterns: msg.patterns,
            queue: msg.queue,
            dropped: msg.dropped,
        });
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

// ---- Handle and subscriptions ---------------------------------------------------------------

#[derive(Default)]
struct Stats {
    published: AtomicU64,
    delivered: AtomicU64,
    publish_dropped: AtomicU64,
    delivery_dropped: AtomicU64,
}

struct Shared {
    current: RwLock<Option<Addr<Broker>>>,
    /// Bumped each time a broker instance starts; subscriptions watch it to re-subscribe.
    generation: watch::Sender<u64>,
    next_id: AtomicU64,
    subscriber_capacity: usize,
    mailbox_capacity: usize,
    gauge: Arc<MailboxGauge>,
    stats: Stats,
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
}

/// The stable way to reach the bus. Cheap to clone; survives broker restarts.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Arc<Shared>,
}

impl BrokerHandle {
    pub fn new(subscriber_capacity: usize, mailbox_capacity: usize) -> Self {
        BrokerHandle {
            shared: Arc::new(Shared {
                current: RwLock::new(None),
                generation: watch::channel(0).0,
                next_id: AtomicU64::new(1),
                subscriber_capacity,
                mailbox_capacity,
                gauge: MailboxGauge::new(mailbox_capacity),
                stats: Stats::default(),
            }),
        }
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
    /// restarting, the event is dropped and counted.
    pub fn publish(&self, event: Event) {
        self.shared.stats.published.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .current()
            .map(|addr| addr.try_send(Publish(Arc::new(event))).is_ok())
            .unwrap_or(false);
        if sent {
            self.shared.gauge.enqueued();
        } else {
            self.shared.gauge.dropped();
            self.shared
                .stats
                .publish_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Event dropped: the broker is full or restarting.");
        }
    }

    /// Publishes a catalogue event.
    pub fn emit<T: Topic>(&self, payload: &T) {
        self.publish(Event::new(payload));
    }

    /// Subscribes to events matching any of `patterns`.
    pub fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, BrokerError> {
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut generation = self.shared.generation.subscribe();
        generation.mark_unchanged();
        let mut sub = Subscription {
            handle: self.clone(),
            id: 0,
            patterns,
            queue: None,
            generation,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        sub.register();
        Ok(sub)
    }

    pub fn stats(&self) -> BrokerStats {
        let s = &self.shared.stats;
        BrokerStats {
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            publish_dropped: s.publish_dropped.load(Ordering::Relaxed),
            delivery_dropped: s.delivery_dropped.load(Ordering::Relaxed),
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
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    handle: BrokerHandle,
    id: u64,
    patterns: Vec<Pattern>,
    queue: Option<mpsc::Receiver<Arc<Event>>>,
    generation: watch::Receiver<u64>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// (Re)registers with the current broker instance under a fresh id.
    fn register(&mut self) {
        let (tx, rx) = mpsc::channel(self.handle.shared.subscriber_capacity);
        self.id = self.handle.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(addr) = self.handle.current() {
            // Control message: do_send keeps it ahead of any publish queued after it.
            addr.do_send(Subscribe {
                id: self.id,
                patterns: self.patterns.clone(),
                queue: tx,
                dropped: self.dropped.clone(),
            });
        }
        // Without a broker, `tx` is dropped here and the next recv waits for a new instance.
        self.queue = Some(rx);
    }

    /// The next matching event. If the broker restarted, subscribes again to the new instance
    /// (events published while it was down are lost). Returns `None` only when the handle's
    /// broker will never come back (the service is shutting down and the handle is gone).
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(queue) = self.queue.as_mut() {
                if let Some(event) = queue.recv().await {
                    return Some(event);
                }
            }
            // The broker dropped our queue: it died. Wait for the next instance.
            self.queue = None;
            if self.generation.changed().await.is_err() {
                return None;
            }
            self.register();
        }
    }

    /// Events this subscriber lost because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
    ) -> LocalBoxFuture<'static, Result<Box<dyn RunningChild>, String>> {
        let shared = self.handle.shared.clone();
        let addr = Broker {
            subscribers: Vec::new(),
            shared: shared.clone(),
            guard: args.guard,
        }
        .start();
        *shared.current.write().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
        shared.generation.send_modify(|g| *g += 1);
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

//! The shared configuration across a cluster (`broker.nats_url`): one actor, the config sync.
//!
//! Owns keeping this instance's targets, API keys, model routes and webhooks as the shared
//! store holds them after another instance changed them over REST: on another instance's
//! `cluster.config.changed` it reloads that kind from the store (the whole kind, not the one
//! row: the tables are small, and a reload cannot apply two changes in the wrong order); on
//! every NATS reconnect and every `broker.config_reconcile_ms` it reloads every kind, so an
//! instance that missed events while NATS was down converges within that bound. Changes that
//! come while a reload runs are coalesced into one more. It also tells the key ring how many
//! instances are live (the cluster view's non-stale peers and this one), so a key's rate is
//! shared between them.
//!
//! Does not own the registries (`target`, `frontdoor`, `webhook`), publishing the change (the
//! API does, once the store committed it) nor the transport (`broker::nats`). Started only
//! with NATS and the store on; a lone instance has nothing to converge with.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::broker::events::{ClusterConfigChanged, ConfigKind, Topic};
use crate::broker::nats::{Link, LinkState};
use crate::broker::{BrokerHandle, Event};

/// How often the link's state and the live instances are looked at.
const TICK: Duration = Duration::from_secs(1);

/// What a reload reaches.
#[derive(Clone)]
pub struct Registries {
    pub sessions: Arc<crate::session::SessionManager>,
    pub frontdoor: Arc<crate::frontdoor::FrontDoor>,
    pub webhooks: Option<Arc<crate::webhook::Webhooks>>,
}

impl Registries {
    /// Reloads `kind` from the store; how many rows it holds now, or why not.
    pub async fn reload(&self, kind: ConfigKind) -> Result<usize, String> {
        match kind {
            ConfigKind::Target => self
                .sessions
                .targets()
                .sync()
                .await
                .map_err(|e| e.to_string()),
            ConfigKind::ApiKey => self.frontdoor.keys.sync().await.map_err(|e| e.to_string()),
            ConfigKind::ModelRoute => self
                .frontdoor
                .sync_routes()
                .await
                .map_err(|e| e.to_string()),
            ConfigKind::Webhook => match &self.webhooks {
                Some(webhooks) => webhooks.sync().await.map_err(|e| e.to_string()),
                None => Ok(0),
            },
        }
    }
}

/// Whether a link seen `before` and `now` just came (back) up: everything published while
/// it was down was missed.
pub fn reconnected(before: LinkState, now: LinkState) -> bool {
    before != LinkState::Connected && now == LinkState::Connected
}

/// The kind another instance's event asks to reload; none for this instance's own events
/// (already applied), events without an origin, or unreadable ones.
pub fn kind_to_reload(event: &Event, me: &str) -> Option<ConfigKind> {
    let origin = event.origin.as_deref()?;
    if origin == me || origin.is_empty() || event.event != ClusterConfigChanged::NAME {
        return None;
    }
    serde_json::from_value::<ClusterConfigChanged>(event.data.clone())
        .ok()
        .map(|c| c.kind)
}

/// The config sync of this instance.
pub struct ConfigSync {
    instance: Arc<str>,
    registries: Registries,
    link: Arc<Link>,
    view: Option<Addr<crate::plugin::cluster::ClusterView>>,
    reconcile: Option<Duration>,
    /// The link as last seen.
    link_state: LinkState,
    /// Kinds to reload once the running reload ends.
    dirty: BTreeSet<ConfigKind>,
    running: bool,
}

impl ConfigSync {
    pub fn start(
        broker: &BrokerHandle,
        registries: Registries,
        link: Arc<Link>,
        view: Option<Addr<crate::plugin::cluster::ClusterView>>,
        reconcile: Duration,
    ) -> Addr<Self> {
        let events = broker
            .subscribe(&[ClusterConfigChanged::NAME])
            .expect("a valid pattern");
        let link_state = link.state();
        let instance = broker.instance();
        ConfigSync::create(move |ctx| {
            ctx.add_stream(events.into_stream());
            ConfigSync {
                instance,
                registries,
                link,
                view,
                reconcile: (!reconcile.is_zero()).then_some(reconcile),
                link_state,
                dirty: BTreeSet::new(),
                running: false,
            }
        })
    }

    fn mark(&mut self, kinds: impl IntoIterator<Item = ConfigKind>, ctx: &mut Context<Self>) {
        self.dirty.extend(kinds);
        self.run(ctx);
    }

    /// Reloads every dirty kind, one at a time, then again while more came meanwhile.
    fn run(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.dirty.is_empty() {
            return;
        }
        self.running = true;
        let kinds = std::mem::take(&mut self.dirty);
        let registries = self.registries.clone();
        let work = async move {
            for kind in kinds {
                match registries.reload(kind).await {
                    Ok(count) => {
                        tracing::debug!(kind = kind.as_str(), count, "Reloaded from the store.")
                    }
                    // Kept for the next change, reconnect or reconcile.
                    Err(error) => {
                        tracing::warn!(kind = kind.as_str(), %error, "Could not reload the shared configuration from the store; kept as it was.")
                    }
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(|(), act, ctx| {
            act.running = false;
            act.run(ctx);
        }));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.link.state();
        if reconnected(self.link_state, now) {
            tracing::info!(
                "NATS is back: reloading targets, API keys, model routes and webhooks from the store."
            );
            self.mark(ConfigKind::ALL, ctx);
        }
        self.link_state = now;
        if let Some(view) = &self.view {
            let view = view.clone();
            let keys = self.registries.frontdoor.clone();
            let count = async move {
                if let Ok(peers) = view.send(crate::plugin::cluster::Peers).await {
                    let live = 1 + peers.iter().filter(|p| !p.stale).count() as u32;
                    keys.keys.set_instances(live);
                }
            };
            ctx.spawn(count.into_actor(self));
        }
    }
}

impl Actor for ConfigSync {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        if let Some(every) = self.reconcile {
            ctx.run_interval(every, |act, ctx| act.mark(ConfigKind::ALL, ctx));
        }
    }
}

impl StreamHandler<Arc<Event>> for ConfigSync {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        if let Some(kind) = kind_to_reload(&event, &self.instance) {
            self.mark([kind], ctx);
        }
    }

    /// The subscription never ends while the broker lives; without it only the reconciles
    /// would be left, so the actor stops rather than pretend.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::events::ConfigOp;

    fn changed(origin: Option<&str>, kind: ConfigKind) -> Event {
        let mut event = Event::new(&ClusterConfigChanged {
            kind,
            id: "x".into(),
            op: ConfigOp::Delete,
        });
        event.origin = origin.map(Into::into);
        event
    }

    #[test]
    fn only_other_instances_changes_are_reloaded() {
        let event = changed(Some("b"), ConfigKind::ApiKey);
        assert_eq!(kind_to_reload(&event, "a"), Some(ConfigKind::ApiKey));
        assert_eq!(kind_to_reload(&event, "b"), None);
        assert_eq!(
            kind_to_reload(&changed(None, ConfigKind::Target), "a"),
            None
        );
        assert_eq!(
            kind_to_reload(&changed(Some(""), ConfigKind::Target), "a"),
            None
        );
        let mut other = changed(Some("b"), ConfigKind::Webhook);
        other.data = serde_json::json!({"kind": "nonsense"});
        assert_eq!(kind_to_reload(&other, "a"), None);
    }

    #[test]
    fn the_wire_names_are_snake_case() {
        let event = changed(Some("b"), ConfigKind::ModelRoute);
        assert_eq!(
            event.data,
            serde_json::json!({"kind": "model_route", "id": "x", "op": "delete"})
        );
    }

    #[test]
    fn a_link_that_comes_up_means_everything_is_reloaded() {
        use LinkState::*;
        assert!(reconnected(Disconnected, Connected));
        assert!(reconnected(Connecting, Connected));
        assert!(!reconnected(Connected, Connected));
        assert!(!reconnected(Connected, Disconnected));
        assert!(!reconnected(Disconnected, Disconnected));
    }
}

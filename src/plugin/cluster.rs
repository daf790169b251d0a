//! The plugins across a cluster (`broker.nats_url`): one actor, the cluster view.
//!
//! Owns three things, all carried as broker events in the host-reserved `cluster.` namespace
//! (so the NATS bridge moves them and neither a plugin nor `POST /api/events` can forge them):
//! - the other instances' plugin states: each instance publishes its own
//!   (`cluster.plugin.states`) on every plugin change of its own and every
//!   `broker.cluster_heartbeat_ms`; the view keeps the last one per instance with when it came,
//!   so `GET /api/plugins` answers from memory (no round trip per request) and an instance
//!   unheard for [`STALE_AFTER_BEATS`] beats shows as stale with its last-seen time;
//! - applying the other instances' operator actions (`cluster.plugin.command`) here, through
//!   the same `PluginHost` operations as REST, and answering each (`cluster.plugin.result`).
//!   A command is applied only when its `origin` is another instance and is never published
//!   again: that is the loop guard;
//! - collecting the answers to this instance's own commands for a bounded wait.
//!
//! Does not own the operations themselves (`ops`), the transport (`broker::nats`) nor the
//! REST shapes (`api`). Without NATS the view is not started at all, so a lone instance
//! answers exactly as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use super::host::{PluginHost, PluginView};
use crate::broker::events::{
    ClusterPluginCommand, ClusterPluginResult, ClusterPluginStates, PluginBrief, PluginOp, Topic,
};
use crate::broker::{BrokerHandle, Event};

/// Beats an instance may miss before it is shown as stale.
pub const STALE_AFTER_BEATS: u32 = 3;

/// Own plugin events within this long are answered with one states message.
const CHANGE_DEBOUNCE: Duration = Duration::from_millis(50);

// ---- Messages -------------------------------------------------------------------------------

/// Start collecting the answers to command `request_id` (sent before the command is
/// published, so no answer can come first). Answers, once every live instance answered or
/// after `wait`, each instance's answer, the silent ones as pending.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<Vec<InstanceAnswer>>")]
pub struct Expect {
    pub request_id: String,
    pub wait: Duration,
}

/// The other instances as last heard, for `GET /api/plugins`.
#[derive(Message)]
#[rtype(result = "Vec<PeerView>")]
pub struct Peers;

/// Stop the view (part of shutdown): no more beats.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopView;

// ---- Shapes ---------------------------------------------------------------------------------

/// One instance's answer to a command, as the REST answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceAnswer {
    pub instance: String,
    /// It applied the command.
    pub ok: bool,
    /// The plugin's state there afterwards; null when unknown (no answer, or no such plugin).
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// No answer within `broker.cluster_answer_ms` (it may still apply the command).
    pub pending: bool,
}

/// Another instance as last heard.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub instance: String,
    pub last_seen: SystemTime,
    /// Unheard for [`STALE_AFTER_BEATS`] beats.
    pub stale: bool,
    pub plugins: BTreeMap<String, PluginBrief>,
}

/// One instance's view of one plugin in `GET /api/plugins` (`instances`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePlugin {
    /// The plugin's state there, or `absent` when that instance has no such plugin.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When that instance last told its states (RFC 3339).
    pub last_seen: String,
    /// Unheard for three heartbeats: what it shows may be out of date, or it is down.
    pub stale: bool,
}

// ---- Pure decisions -------------------------------------------------------------------------

/// A plugin as the other instances see it.
pub fn brief_of(view: &PluginView) -> PluginBrief {
    PluginBrief {
        state: view.state.as_str().to_string(),
        restarts: view.restarts,
        version: view.manifest["version"].as_str().unwrap_or("").to_string(),
    }
}

/// Whether an instance last heard `age` ago is stale, with beats every `heartbeat`.
pub fn is_stale(age: Duration, heartbeat: Duration) -> bool {
    age > heartbeat * STALE_AFTER_BEATS
}

/// Plugin `id` on every instance: this one (`local`, heard now) and the peers.
pub fn instances_of(
    id: &str,
    local: (&str, &PluginBrief),
    peers: &[PeerView],
    now: SystemTime,
) -> BTreeMap<String, InstancePlugin> {
    let mut out = BTreeMap::new();
    let entry = |brief: Option<&PluginBrief>, seen: SystemTime, stale: bool| InstancePlugin {
        state: brief.map_or("absent".to_string(), |b| b.state.clone()),
        restarts: brief.map(|b| b.restarts),
        version: brief.map(|b| b.version.clone()),
        last_seen: humantime::format_rfc3339_millis(seen).to_string(),
        stale,
    };
    out.insert(local.0.to_string(), entry(Some(local.1), now, false));
    for peer in peers {
        out.insert(
            peer.instance.clone(),
            entry(peer.plugins.get(id), peer.last_seen, peer.stale),
        );
    }
    out
}

/// The answers to a command, in instance order: every one that answered, and every expected
/// one that did not as pending.
pub fn answers_with_pending(
    expected: &BTreeSet<String>,
    answered: &BTreeMap<String, InstanceAnswer>,
    waited: Duration,
) -> Vec<InstanceAnswer> {
    let mut out: BTreeMap<String, InstanceAnswer> = answered.clone();
    for instance in expected {
        out.entry(instance.clone())
            .or_insert_with(|| InstanceAnswer {
                instance: instance.clone(),
                ok: false,
                state: None,
                error: Some(format!("no answer within {} ms", waited.as_millis())),
                pending: true,
            });
    }
    out.into_values().collect()
}

/// A new command id, unique across the cluster (the instance's name makes it so).
pub fn request_id(instance: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{instance}-{}-{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

// ---- The actor ------------------------------------------------------------------------------

struct Peer {
    heard: Instant,
    heard_at: SystemTime,
    plugins: BTreeMap<String, PluginBrief>,
}

struct Waiting {
    expected: BTreeSet<String>,
    answered: BTreeMap<String, InstanceAnswer>,
    wait: Duration,
    reply: Option<oneshot::Sender<Vec<InstanceAnswer>>>,
}

/// The cluster view of this instance.
pub struct ClusterView {
    instance: Arc<str>,
    host: Arc<PluginHost>,
    broker: BrokerHandle,
    heartbeat: Duration,
    peers: HashMap<String, Peer>,
    waiting: HashMap<String, Waiting>,
    /// A states message is scheduled (own plugin changes are debounced).
    beat_due: bool,
}

impl ClusterView {
    /// Starts the view on `broker` (already named after this instance) for `host`'s plugins.
    pub fn start(host: Arc<PluginHost>, broker: BrokerHandle, heartbeat: Duration) -> Addr<Self> {
        let events = broker
            .subscribe(&["cluster.*", "plugin.*"])
            .expect("valid patterns");
        ClusterView::create(move |ctx| {
            ctx.add_stream(events.into_stream());
            ClusterView {
                instance: broker.instance(),
                host,
                broker,
                heartbeat,
                peers: HashMap::new(),
                waiting: HashMap::new(),
                beat_due: false,
            }
        })
    }

    fn beat(&self) {
        let plugins = self
            .host
            .list()
            .iter()
            .map(|view| {
                (
                    view.manifest["id"].as_str().unwrap_or("").to_string(),
                    brief_of(view),
                )
            })
            .collect();
        self.broker.emit(&ClusterPluginStates {
            instance: self.instance.to_string(),
            plugins,
        });
    }

    fn live_peers(&self) -> BTreeSet<String> {
        self.peers
            .iter()
            .filter(|(_, p)| !is_stale(p.heard.elapsed(), self.heartbeat))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn heard(&mut self, instance: &str) -> &mut Peer {
        let peer = self.peers.entry(instance.to_string()).or_insert(Peer {
            heard: Instant::now(),
            heard_at: SystemTime::now(),
            plugins: BTreeMap::new(),
        });
        peer.heard = Instant::now();
        peer.heard_at = SystemTime::now();
        peer
    }

    fn finish(&mut self, request_id: &str) {
        if let Some(mut waiting) = self.waiting.remove(request_id) {
            let answers = answers_with_pending(&waiting.expected, &waiting.answered, waiting.wait);
            if let Some(reply) = waiting.reply.take() {
                let _ = reply.send(answers);
            }
        }
    }

    /// Applies another instance's command here and answers it.
    fn apply(&mut self, command: ClusterPluginCommand, ctx: &mut Context<Self>) {
        let host = self.host.clone();
        let broker = self.broker.clone();
        let instance = self.instance.to_string();
        tracing::info!(plugin = %command.plugin_id, op = command.op.as_str(), by = %command.by, request_id = %command.request_id, "Applying another instance's plugin action.");
        let run = async move {
            let id = command.plugin_id.as_str();
            let outcome = match command.op {
                PluginOp::Restart => host.restart(id).await.map(|v| brief_of(&v).state),
                PluginOp::Disable => host.disable(id).await.map(|v| brief_of(&v).state),
                PluginOp::Enable => host.enable(id).await.map(|v| brief_of(&v).state),
                PluginOp::Reload => host.reload(id).await.map(|(v, _)| brief_of(&v).state),
                PluginOp::Unload => host.unload(id).await.map(|()| "unloaded".to_string()),
                PluginOp::Load => host.load(id).await.map(|v| brief_of(&v).state),
            };
            let result = match outcome {
                Ok(state) => ClusterPluginResult {
                    request_id: command.request_id,
                    instance,
                    ok: true,
                    state: Some(state),
                    error: None,
                },
                Err(error) => {
                    tracing::warn!(plugin = %id, op = command.op.as_str(), %error, "Another instance's plugin action failed here.");
                    ClusterPluginResult {
                        state: host.get(id).map(|v| brief_of(&v).state),
                        request_id: command.request_id,
                        instance,
                        ok: false,
                        error: Some(error.to_string()),
                    }
                }
            };
            broker.emit(&result);
        };
        ctx.spawn(run.into_actor(self));
    }
}

impl Actor for ClusterView {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.beat();
        ctx.run_interval(self.heartbeat, |act, _| act.beat());
    }
}

impl StreamHandler<Arc<Event>> for ClusterView {
    fn handle(&mut self, event: Arc<Event>, ctx: &mut Context<Self>) {
        let origin = event.origin.as_deref().unwrap_or("");
        let own = origin == &*self.instance;
        let name = event.event.as_str();
        if own {
            // Our own plugin changed: tell the others soon (one message for a burst).
            if name.starts_with("plugin.") && !self.beat_due {
                self.beat_due = true;
                ctx.run_later(CHANGE_DEBOUNCE, |act, _| {
                    act.beat_due = false;
                    act.beat();
                });
            }
            return;
        }
        if origin.is_empty() {
            return;
        }
        match name {
            ClusterPluginStates::NAME => {
                if let Ok(states) =
                    serde_json::from_value::<ClusterPluginStates>(event.data.clone())
                {
                    self.heard(origin).plugins = states.plugins;
                }
            }
            ClusterPluginCommand::NAME => {
                self.heard(origin);
                match serde_json::from_value::<ClusterPluginCommand>(event.data.clone()) {
                    Ok(command) => self.apply(command, ctx),
                    Err(error) => {
                        tracing::warn!(%origin, %error, "An unreadable cluster plugin command; ignored.")
                    }
                }
            }
            ClusterPluginResult::NAME => {
                self.heard(origin);
                let Ok(result) = serde_json::from_value::<ClusterPluginResult>(event.data.clone())
                else {
                    return;
                };
                let request_id = result.request_id.clone();
                let done = match self.waiting.get_mut(&request_id) {
                    Some(waiting) => {
                        waiting.answered.insert(
                            result.instance.clone(),
                            InstanceAnswer {
                                instance: result.instance,
                                ok: result.ok,
                                state: result.state,
                                error: result.error,
                                pending: false,
                            },
                        );
                        waiting
                            .expected
                            .iter()
                            .all(|e| waiting.answered.contains_key(e))
                    }
                    None => false,
                };
                if done {
                    self.finish(&request_id);
                }
            }
            _ => {}
        }
    }

    /// The subscription never ends while the view lives; if it did, the view would be
    /// deaf, so it stops rather than show ever older states.
    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Expect> for ClusterView {
    type Result = MessageResult<Expect>;

    fn handle(&mut self, msg: Expect, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answers) = oneshot::channel();
        let expected = self.live_peers();
        if expected.is_empty() {
            let _ = reply.send(Vec::new());
            return MessageResult(answers);
        }
        let request_id = msg.request_id.clone();
        self.waiting.insert(
            msg.request_id,
            Waiting {
                expected,
                answered: BTreeMap::new(),
                wait: msg.wait,
                reply: Some(reply),
            },
        );
        ctx.run_later(msg.wait, move |act, _| act.finish(&request_id));
        MessageResult(answers)
    }
}

impl Handler<Peers> for ClusterView {
    type Result = MessageResult<Peers>;

    fn handle(&mut self, _msg: Peers, _ctx: &mut Context<Self>) -> Self::Result {
        let mut peers: Vec<PeerView> = self
            .peers
            .iter()
            .map(|(name, peer)| PeerView {
                instance: name.clone(),
                last_seen: peer.heard_at,
                stale: is_stale(peer.heard.elapsed(), self.heartbeat),
                plugins: peer.plugins.clone(),
            })
            .collect();
        peers.sort_by(|a, b| a.instance.cmp(&b.instance));
        MessageResult(peers)
    }
}

impl Handler<StopView> for ClusterView {
    type Result = ();

    fn handle(&mut self, _msg: StopView, ctx: &mut Context<Self>) {
        for (_, mut waiting) in self.waiting.drain() {
            if let Some(reply) = waiting.reply.take() {
                let _ = reply.send(answers_with_pending(
                    &waiting.expected,
                    &waiting.answered,
                    waiting.wait,
                ));
            }
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(state: &str) -> PluginBrief {
        PluginBrief {
            state: state.into(),
            restarts: 1,
            version: "1.0.0".into(),
        }
    }

    #[test]
    fn an_instance_is_stale_after_three_missed_beats() {
        let beat = Duration::from_millis(200);
        assert!(!is_stale(Duration::from_millis(0), beat));
        assert!(!is_stale(Duration::from_millis(600), beat));
        assert!(is_stale(Duration::from_millis(601), beat));
    }

    #[test]
    fn instances_show_this_one_the_peers_and_an_absent_plugin() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let peers = vec![
            PeerView {
                instance: "gw-b".into(),
                last_seen: now,
                stale: false,
                plugins: BTreeMap::from([("p".to_string(), brief("disabled"))]),
            },
            PeerView {
                instance: "gw-c".into(),
                last_seen: now - Duration::from_secs(9),
                stale: true,
                plugins: BTreeMap::new(),
            },
        ];
        let view = instances_of("p", ("gw-a", &brief("running")), &peers, now);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["gw-a"]["state"], "running");
        assert_eq!(json["gw-a"]["stale"], false);
        assert_eq!(json["gw-b"]["state"], "disabled");
        assert_eq!(json["gw-b"]["restarts"], 1);
        assert_eq!(json["gw-b"]["version"], "1.0.0");
        assert_eq!(json["gw-c"]["state"], "absent");
        assert_eq!(json["gw-c"]["stale"], true);
        assert!(json["gw-c"].get("version").is_none());
        assert_eq!(json["gw-c"]["lastSeen"], "1970-01-12T13:46:31.000Z");
    }

    #[test]
    fn silent_instances_are_listed_as_pending() {
        let expected = BTreeSet::from(["gw-b".to_string(), "gw-c".to_string()]);
        let answered = BTreeMap::from([(
            "gw-b".to_string(),
            InstanceAnswer {
                instance: "gw-b".into(),
                ok: true,
                state: Some("disabled".into()),
                error: None,
                pending: false,
            },
        )]);
        let all = answers_with_pending(&expected, &answered, Duration::from_millis(3000));
        assert_eq!(all.len(), 2);
        assert!(all[0].ok && !all[0].pending);
        assert_eq!(all[1].instance, "gw-c");
        assert!(all[1].pending && !all[1].ok);
        assert_eq!(all[1].error.as_deref(), Some("no answer within 3000 ms"));
    }

    #[test]
    fn request_ids_are_unique_and_name_the_instance() {
        let a = request_id("gw-a");
        let b = request_id("gw-a");
        assert_ne!(a, b);
        assert!(a.starts_with("gw-a-"));
    }
}

//! The one place everything is wired together, in boot order, and taken apart again.
//!
//! Boot reads as `start_store → start_tree → start_plugins → start_http`, then `start` for each
//! plugin and ready; the settings become each subsystem's own config in `plan`. Shutdown (signal, [`ShutdownHandle`], or a required actor giving up): readiness turns
//! 503, HTTP stops accepting and drains, the root supervisor stops its children in reverse
//! (plugins in LIFO order, then the broker), all within a global deadline. Does not own any
//! actor's behaviour.

pub mod plan;
pub mod sync;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use tokio::sync::Notify;
use tracing_actix_web::TracingLogger;

use crate::api::{self, AppState};
use crate::broker::{BrokerFactory, BrokerHandle};
use crate::health::{ActorRecord, ActorState, HealthRegistry, Lifecycle, Phase};
use crate::plugin::host::{PluginHost, PluginTimings};
use crate::plugin::lifecycle::PluginsSupervisorFactory;
use crate::plugin::source::Discovered;
use crate::plugin::PluginFactory;
use crate::session::{SessionManager, SessionsSupervisorFactory};
use crate::settings::Settings;
use crate::store::writer::{StoreHandle, StoreWriterFactory};
use crate::store::Store;
use crate::supervisor::child::{
    install_panic_hook, ChildKind, ChildSpec, OnExhausted, Placement, StartPhase,
};
use crate::supervisor::policy::{ExitReason, Intensity, RestartPolicy, RestartType};
use crate::supervisor::{AddChild, StopAll, Strategy, Supervisor, SupervisorObserver};

/// Audit entries kept per session, and sessions kept in the audit log.
const AUDIT_ENTRIES_PER_SESSION: usize = 1_000;
const AUDIT_SESSIONS: usize = 10_000;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not start {what}: {reason}")]
    Tree { what: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Secrets(#[from] crate::store::secrets::SecretError),
    #[error("cannot load the stored targets: {0}")]
    StoredTargets(String),
    #[error(transparent)]
    Settings(#[from] crate::settings::ConfigError),
    #[error("invalid targets ({} problems):{}", .0.len(), .0.iter().map(|(p, m)| format!("\n  - {p}: {m}")).collect::<String>())]
    Targets(Vec<(String, String)>),
    #[error("invalid agents ({} problems):{}", .0.len(), .0.iter().map(|(p, m)| format!("\n  - {p}: {m}")).collect::<String>())]
    Agents(Vec<(String, String)>),
    #[error("invalid model routes ({} problems):{}", .0.len(), .0.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Models(Vec<String>),
    #[error(transparent)]
    Nats(#[from] crate::broker::nats::NatsError),
}

impl StartupError {
    /// Process exit code: 2 for problems the operator must fix in the setup, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartupError::Bind { .. }
            | StartupError::Settings(_)
            | StartupError::Targets(_)
            | StartupError::Agents(_)
            | StartupError::Models(_)
            | StartupError::Store(_)
            | StartupError::Secrets(_)
            | StartupError::StoredTargets(_)
            | StartupError::Nats(_) => 2,
            StartupError::Tree { .. } => 1,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// 0 for a clean shutdown, 1 when a required actor gave up.
    pub code: i32,
    /// The global deadline passed and whatever still ran was abandoned. (A single child that
    /// overruns its own stop timeout is abandoned and logged by its supervisor.)
    pub deadline_exceeded: bool,
}

/// Triggers a graceful shutdown, like SIGTERM does. Cheap to clone.
#[derive(Clone, Default)]
pub struct ShutdownHandle {
    notify: Arc<Notify>,
}

impl ShutdownHandle {
    pub fn trigger(&self) {
        self.notify.notify_one();
    }

    async fn triggered(&self) {
        self.notify.notified().await;
    }
}

/// The root supervisor's observer: a required child giving up ends the service.
struct RootObserver {
    lifecycle: Arc<Lifecycle>,
    shutdown: ShutdownHandle,
}

impl SupervisorObserver for RootObserver {
    fn escalate(&self, id: &str, reason: &ExitReason) {
        tracing::error!(child = id, reason = %reason.describe(), "A required actor gave up; stopping the service.");
        self.lifecycle.set_fatal(format!(
            "{id} spent its restart budget: {}",
            reason.describe()
        ));
        self.shutdown.trigger();
    }
}

/// What a caller adds to the settings when building the service.
#[derive(Default)]
pub struct Options {
    /// Native plugins discovered after those `plugins.native` selects (tests pass fault
    /// plugins; embedders pass their own).
    pub plugins: Vec<PluginFactory>,
    /// A broker handle made beforehand, so the caller can subscribe before boot and see every
    /// boot event. Its capacities win over the `broker` settings.
    pub broker: Option<BrokerHandle>,
}

/// A built, serving service.
pub struct App {
    settings: Settings,
    addr: SocketAddr,
    server: ServerHandle,
    root: Addr<Supervisor>,
    shutdown: ShutdownHandle,
    lifecycle: Arc<Lifecycle>,
    health: HealthRegistry,
    broker: BrokerHandle,
    plugins: Arc<PluginHost>,
    sessions: Arc<SessionManager>,
    /// The event bus across instances, with `broker.nats_url` set.
    bridge: Option<Addr<crate::broker::nats::NatsBridge>>,
    /// Outbound webhooks, with the store on.
    webhooks: Option<Arc<crate::webhook::Webhooks>>,
    /// The other instances' plugins, with `broker.nats_url` set.
    view: Option<Addr<crate::plugin::cluster::ClusterView>>,
    /// Keeps the hot-reload watcher alive while the app runs.
    _watcher: Option<crate::script::watch::WatchGuard>,
    signals: Option<Signals>,
}

/// What every step of the boot shares.
struct Core {
    health: HealthRegistry,
    lifecycle: Arc<Lifecycle>,
    shutdown: ShutdownHandle,
    broker: BrokerHandle,
    /// Set once HTTP listens; plugins read it through their context.
    server_addr: Arc<OnceLock<SocketAddr>>,
}

/// The running supervision tree and the subsystems under it.
struct Tree {
    root: Addr<Supervisor>,
    plugins: Arc<PluginHost>,
    sessions: Arc<SessionManager>,
}

impl App {
    /// Boots the service: `start_store → start_tree → start_plugins → start_http`, then each
    /// plugin's `start` and readiness. Must run inside an actix system (`#[actix_web::main]` /
    /// `#[actix_web::test]`).
    pub async fn build(settings: Settings, options: Options) -> Result<App, StartupError> {
        install_panic_hook();
        let problems = plan::check_settings(&settings);
        if !problems.is_empty() {
            let problems = crate::settings::ConfigError { problems };
            return Err(StartupError::Settings(problems));
        }
        let core = Core {
            health: HealthRegistry::default(),
            lifecycle: Arc::new(Lifecycle::default()),
            shutdown: ShutdownHandle::default(),
            broker: options.broker.unwrap_or_else(|| {
                BrokerHandle::new(
                    settings.broker.subscriber_capacity,
                    settings.broker.mailbox_capacity,
                )
            }),
            server_addr: Arc::new(OnceLock::new()),
        };
        core.broker
            .set_max_event_bytes(settings.broker.max_event_bytes);
        core.broker.set_instance(&settings.instance_id());
        // Before anything publishes, so boot events reach the other instances too.
        let (bridge, cluster) = start_bridge(&settings, &core.broker).await?;
        // Targets and agents first: a bad one is a setup problem (exit 2), reported before
        // anything starts.
        let (targets, agents) = plan::declared(&settings)?;
        let ext = crate::plugin::Extensions::new(
            agents,
            crate::inference::Inference::new(plan::inference(&settings)),
        );
        let store = start_store(&settings).await?;
        let tree = start_tree(&settings, &core, store.as_ref(), targets, ext.clone()).await?;
        // After the broker runs; deliveries left unfinished resume now.
        let webhooks = match &store {
            Some(handle) => Some(Arc::new(
                crate::webhook::Webhooks::start(
                    handle.store().clone(),
                    core.broker.clone(),
                    plan::webhooks(&settings),
                )
                .await?,
            )),
            None => None,
        };
        let audit = crate::store::audit::AuditLog::new(
            AUDIT_ENTRIES_PER_SESSION,
            AUDIT_SESSIONS,
            store.clone(),
        );
        start_plugins(&settings, &tree.plugins, audit.clone(), options.plugins).await;
        // With NATS only: a lone instance answers plugin requests exactly as before.
        let view = bridge.as_ref().map(|_| {
            crate::plugin::cluster::ClusterView::start(
                tree.plugins.clone(),
                core.broker.clone(),
                Duration::from_millis(settings.broker.cluster_heartbeat_ms),
            )
        });
        // After the targets are known: a route names one.
        let frontdoor = crate::frontdoor::FrontDoor::build(
            plan::frontdoor(&settings),
            tree.sessions.clone(),
            ext.inference.clone(),
            store.as_ref().map(|s| s.store().clone()),
        )
        .await
        .map_err(StartupError::Models)?;
        // Conversations are kept in the store, when there is one.
        let agents = crate::turn::AgentRunner::new(
            tree.plugins.clone(),
            core.broker.clone(),
            store.clone(),
            plan::runner(&settings),
        );
        let store_for_leases = store.as_ref().map(|s| s.store().clone());
        let frontdoor = Arc::new(frontdoor);
        // With NATS and the store: what another instance changes over REST applies here.
        if let (Some(link), Some(_)) = (&cluster, &store) {
            sync::ConfigSync::start(
                &core.broker,
                sync::Registries {
                    sessions: tree.sessions.clone(),
                    frontdoor: frontdoor.clone(),
                    webhooks: webhooks.clone(),
                },
                link.clone(),
                view.clone(),
                Duration::from_millis(settings.broker.config_reconcile_ms),
            );
        }
        let state = AppState {
            health: core.health.clone(),
            lifecycle: core.lifecycle.clone(),
            broker: core.broker.clone(),
            plugins: tree.plugins.clone(),
            sessions: tree.sessions.clone(),
            audit,
            store,
            admin_token: settings.admin_token().map(str::to_owned),
            max_body_bytes: settings.server.max_body_bytes,
            body_timeout: Duration::from_millis(settings.server.request_body_timeout_ms),
            ext,
            agents,
            call_timeout: Duration::from_millis(settings.plugins.call_timeout_ms),
            streams: api::events::StreamSettings {
                capacity: settings.broker.stream_capacity,
                keep_alive: Duration::from_millis(settings.broker.stream_keepalive_ms),
            },
            frontdoor,
            cluster,
            webhooks: webhooks.clone(),
            view: view.clone().map(|addr| api::ClusterPlugins {
                view: addr,
                answer_wait: Duration::from_millis(settings.broker.cluster_answer_ms),
            }),
        };
        let (addr, server) = start_http(&settings, state)?;
        let _ = core.server_addr.set(addr);
        tracing::info!(%addr, "Listening.");
        if let Some(store) = store_for_leases.filter(|_| tree.sessions.leased()) {
            advertise(&settings, &store, addr).await?;
            tree.sessions.renew_leases();
        }

        tree.plugins.start_all().await;
        let watcher = watch_plugins(&settings, &tree.plugins);
        let signals = Some(Signals::install());
        core.lifecycle.set_phase(Phase::Ready);
        tracing::info!("Ready.");

        Ok(App {
            settings,
            addr,
            server,
            root: tree.root,
            shutdown: core.shutdown,
            lifecycle: core.lifecycle,
            health: core.health,
            broker: core.broker,
            plugins: tree.plugins,
            sessions: tree.sessions,
            bridge,
            webhooks,
            view,
            _watcher: watcher,
            signals,
        })
    }

    /// The address HTTP listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    pub fn broker(&self) -> BrokerHandle {
        self.broker.clone()
    }

    pub fn health(&self) -> HealthRegistry {
        self.health.clone()
    }

    pub fn plugins(&self) -> Arc<PluginHost> {
        self.plugins.clone()
    }

    pub fn sessions(&self) -> Arc<SessionManager> {
        self.sessions.clone()
    }

    /// Serves until SIGINT/SIGTERM, a [`ShutdownHandle`] trigger, or a fatal escalation, then
    /// shuts down gracefully.
    pub async fn run_until_stopped(mut self) -> ExitReport {
        let mut signals = self.signals.take().unwrap_or_else(Signals::install);
        tokio::select! {
            _ = signals.recv() => tracing::info!("Signal received."),
            _ = self.shutdown.triggered() => {},
        }
        self.shutdown().await
    }

    /// The graceful shutdown sequence, bounded by `shutdown.deadline_ms`.
    pub async fn shutdown(self) -> ExitReport {
        let deadline = Duration::from_millis(self.settings.shutdown.deadline_ms);
        tracing::info!(deadline_ms = deadline.as_millis() as u64, "Shutting down.");
        self.lifecycle.set_phase(Phase::Draining);
        let readiness_delay = Duration::from_millis(self.settings.shutdown.readiness_delay_ms);
        let root = self.root.clone();
        let server = self.server.clone();
        let bridge = self.bridge.clone();
        let webhooks = self.webhooks.clone();
        let view = self.view.clone();
        let sessions = self.sessions.clone();
        let sequence = async move {
            // Other live instances on the shared store take this one's sessions over: they are
            // handed over (left open, leases released) instead of closed. Asked before the
            // view stops.
            if let Some(view) = &view {
                let peers = view
                    .send(crate::plugin::cluster::Peers)
                    .await
                    .unwrap_or_default();
                if sessions.leased() && peers.iter().any(|p| !p.stale) {
                    tracing::info!(
                        sessions = sessions.count(),
                        "Other instances are live: sessions are handed over, not closed."
                    );
                    sessions.hand_over_on_stop();
                }
            }
            if let Some(view) = view {
                let _ = view.send(crate::plugin::cluster::StopView).await;
            }
            tokio::time::sleep(readiness_delay).await;
            server.stop(true).await;
            tracing::info!("HTTP stopped.");
            // Attempts in flight finish (bounded by webhooks.drain_timeout_ms); waiting
            // deliveries stay in the store for the next start.
            if let Some(webhooks) = webhooks {
                webhooks.stop().await;
            }
            let _ = root.send(StopAll { then_exit: true }).await;
            // Last: the plugins' `plugin.stopped` events still reach the other instances.
            if let Some(bridge) = bridge {
                let _ = bridge.send(crate::broker::nats::StopBridge).await;
            }
        };
        let deadline_exceeded = tokio::time::timeout(deadline, sequence).await.is_err();
        if deadline_exceeded {
            let still: Vec<String> = self
                .health
                .snapshot()
                .into_iter()
                .filter(|r| {
                    matches!(r.state, ActorState::Stopping | ActorState::Running)
                        && r.path != "root"
                })
                .map(|r| r.path)
                .collect();
            tracing::error!(still_running = ?still, "Shutdown deadline passed; abandoning what is left.");
        }
        self.health
            .update("root", |row| row.state = ActorState::Stopped);
        let code = if self.lifecycle.fatal().is_some() {
            1
        } else {
            0
        };
        tracing::info!(code, "Stopped.");
        ExitReport {
            code,
            deadline_exceeded,
        }
    }
}

/// Bridges the broker to NATS when `broker.nats_url` is set. An unreachable server is no
/// setup problem: the service starts with local delivery (and a `/health` warning) and the
/// client keeps trying; the boot waits a moment for it so boot events travel too.
async fn start_bridge(
    settings: &Settings,
    broker: &BrokerHandle,
) -> Result<
    (
        Option<Addr<crate::broker::nats::NatsBridge>>,
        Option<Arc<crate::broker::nats::Link>>,
    ),
    StartupError,
> {
    use crate::broker::nats::{LinkState, NatsBridge, NatsConfig};
    if settings.broker.nats_url.is_empty() {
        return Ok((None, None));
    }
    let config = NatsConfig {
        url: settings.broker.nats_url.clone(),
        subject: settings.broker.nats_subject.clone(),
        capacity: settings.broker.subscriber_capacity,
    };
    let (bridge, link) = NatsBridge::start(config, broker.clone()).await?;
    let waited = std::time::Instant::now();
    while link.state() != LinkState::Connected && waited.elapsed() < NATS_BOOT_WAIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if link.state() != LinkState::Connected {
        tracing::warn!(url = %link.snapshot().url, "NATS is not reachable yet: events stay on this instance until it is.");
    }
    Ok((Some(bridge), Some(link)))
}

/// How long the boot waits for NATS before going on without it.
const NATS_BOOT_WAIT: Duration = Duration::from_secs(2);

/// Opens the store (a database that cannot be opened is a setup problem: exit 2) and marks
/// the sessions the last run left open as interrupted.
async fn start_store(settings: &Settings) -> Result<Option<StoreHandle>, StartupError> {
    if !settings.store.enabled {
        return Ok(None);
    }
    // The key for credentials at rest goes with the store: target rows and sessions' plugin
    // secrets are sealed with it.
    let key = Some(settings.store.secret_key.as_str()).filter(|k| !k.is_empty());
    let connect = crate::store::Connect {
        location: settings
            .store
            .location()
            .expect("store.url is checked when settings load"),
        pool_size: settings.store.pool_size,
        connect_timeout: Duration::from_millis(settings.store.connect_timeout_ms),
        instance: settings.instance_id(),
    };
    let store = Store::connect(&connect)
        .await?
        .with_secrets(crate::store::secrets::Secrets::load(
            key,
            &settings.data.dir,
        )?);
    if let crate::settings::StoreLocation::Postgres(url) = &connect.location {
        store
            .check_shared_key(&crate::util::masked_url(url))
            .await?;
    }
    let interrupted = store
        .mark_interrupted(&crate::util::rfc3339(std::time::SystemTime::now()))
        .await?;
    if interrupted > 0 {
        tracing::info!(
            sessions = interrupted,
            "Sessions left open by the last run are marked interrupted."
        );
    }
    if let Some(sealed) = store.seal_plaintext_once().await? {
        tracing::info!(
            targets = sealed.targets,
            sessions = sealed.sessions,
            messages = sealed.messages,
            "Credentials kept in clear by an older version are now sealed."
        );
    }
    Ok(Some(StoreHandle::new(store, plan::writer(settings))))
}

/// The supervision tree: root (rest_for_one) → broker, store writer, plugins supervisor,
/// sessions supervisor, each started before the next.
async fn start_tree(
    settings: &Settings,
    core: &Core,
    store: Option<&StoreHandle>,
    targets: Vec<crate::target::Target>,
    ext: Arc<crate::plugin::Extensions>,
) -> Result<Tree, StartupError> {
    let policy = plan::restart_policy(settings);
    let loader = crate::script::ScriptLoader::new(settings.script_plugins_dir(), {
        let settings = settings.clone();
        std::sync::Arc::new(move |names: &[&str]| plan::script_policy(&settings, names))
    });
    let plugins = PluginHost::new(
        core.broker.clone(),
        core.health.clone(),
        core.server_addr.clone(),
        PluginTimings {
            init_timeout: Duration::from_millis(settings.plugins.init_timeout_ms),
            start_timeout: Duration::from_millis(settings.plugins.start_timeout_ms),
            stop_timeout: Duration::from_millis(settings.plugins.stop_timeout_ms),
            mailbox_capacity: settings.plugins.mailbox_capacity,
            policy,
        },
        vec![Arc::new(loader)],
        &settings.data.dir,
        ext,
    );
    let persistence = store.and_then(|handle| {
        Some(crate::target::catalogue::Persistence {
            store: handle.store().clone(),
            secrets: handle.store().secrets()?.clone(),
        })
    });
    let targets = Arc::new(
        crate::target::catalogue::TargetRegistry::load(targets, persistence)
            .await
            .map_err(StartupError::StoredTargets)?,
    );
    targets.warn_insecure();
    let sessions = SessionManager::new(
        targets,
        plugins.clone(),
        core.broker.clone(),
        plan::sessions(settings),
        store.cloned(),
    );

    core.health.upsert(
        "root",
        || ActorRecord::new("root".into(), "supervisor", "supervisor"),
        |row| {
            row.state = ActorState::Running;
            row.generation = 1;
            row.started_at = Some((std::time::Instant::now(), std::time::SystemTime::now()));
        },
    );
    let root = Supervisor::new(
        "root",
        Strategy::RestForOne,
        core.health.clone(),
        Arc::new(RootObserver {
            lifecycle: core.lifecycle.clone(),
            shutdown: core.shutdown.clone(),
        }),
        None,
    )
    .start();
    // Infrastructure gets a small budget: a broker that keeps dying ends the process
    // (the product of nested intensities must stay small, see docs/ARCHITECTURE.md).
    let infra_policy = RestartPolicy {
        intensity: Intensity {
            max_restarts: 3,
            period: Duration::from_secs(60),
        },
        backoff: policy.backoff,
    };
    let infra = |id: &str, kind, role, factory| ChildSpec {
        id: id.to_string(),
        kind,
        role,
        restart: RestartType::Permanent,
        shutdown_timeout: Duration::from_millis(settings.shutdown.deadline_ms),
        placement: Placement::Shared,
        on_exhausted: OnExhausted::Escalate,
        policy: infra_policy,
        factory,
        in_health: true,
    };
    let broker = Arc::new(BrokerFactory {
        handle: core.broker.clone(),
    });
    let mut children = vec![(
        "the broker",
        infra("broker", ChildKind::Worker, "broker", broker as _),
    )];
    if let Some(handle) = store {
        // After the broker, before plugins and sessions: it stops after them and flushes what
        // they wrote.
        let writer = Arc::new(StoreWriterFactory {
            handle: handle.clone(),
        });
        children.push((
            "the store writer",
            infra("store", ChildKind::Worker, "store", writer as _),
        ));
    }
    let host = Arc::new(PluginsSupervisorFactory {
        host: plugins.clone(),
    });
    children.push((
        "the plugins supervisor",
        infra("plugins", ChildKind::Supervisor, "supervisor", host as _),
    ));
    let manager = Arc::new(SessionsSupervisorFactory {
        manager: sessions.clone(),
    });
    children.push((
        "the sessions supervisor",
        infra(
            "sessions",
            ChildKind::Supervisor,
            "supervisor",
            manager as _,
        ),
    ));
    for (what, spec) in children {
        let add = AddChild {
            spec,
            phase: StartPhase::Boot,
            disabled: false,
        };
        let fail = |reason: String| StartupError::Tree { what, reason };
        root.send(add)
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(Tree {
        root,
        plugins,
        sessions,
    })
}

/// Discovers every plugin (the bundled ones `plugins.native` selects, then the caller's, then
/// what the loaders find) and runs `init` in dependency order.
async fn start_plugins(
    settings: &Settings,
    plugins: &PluginHost,
    audit: Arc<crate::store::audit::AuditLog>,
    extra: Vec<PluginFactory>,
) {
    let selected = crate::bundled::catalogue(audit)
        .into_iter()
        .filter(|(id, _)| settings.plugins.native.iter().any(|n| n == id))
        .map(|(_, factory)| Discovered::native(factory));
    let extra = extra.into_iter().map(Discovered::native);
    let loaded = plugins.discover_loaded();
    plugins.discover(selected.chain(extra).chain(loaded).collect());
    plugins.init_all().await;
}

/// Records where the other instances sharing the database reach this one (forwarded session
/// messages): `server.advertise_url`, else `http://` and the bound address.
async fn advertise(
    settings: &Settings,
    store: &crate::store::Store,
    addr: SocketAddr,
) -> Result<(), StartupError> {
    let url = plan::advertise_url(&settings.server.advertise_url, addr);
    if settings.server.advertise_url.is_empty() && settings.bind_addr().ip().is_unspecified() {
        tracing::warn!(%url, "server.advertise_url is empty and the bind address is a wildcard: other instances will forward this one's session messages to the loopback address; set server.advertise_url when instances run on several hosts.");
    }
    let at = crate::util::rfc3339(std::time::SystemTime::now());
    store.register_instance(&url, &at).await?;
    tracing::info!(%url, "Advertised to the other instances.");
    Ok(())
}

/// Binds first (so port 0 works and the address is known), then serves.
fn start_http(
    settings: &Settings,
    state: AppState,
) -> Result<(SocketAddr, ServerHandle), StartupError> {
    let addr = settings.bind_addr();
    let listener = TcpListener::bind(addr).map_err(|source| StartupError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { addr, source })?;
    let state = web::Data::new(state);
    let mut server = HttpServer::new(move || {
        let state = state.clone();
        // Outermost last: the request id exists before the tracing span is opened.
        actix_web::App::new()
            .wrap(actix_web::middleware::from_fn(api::deadline::body_deadline))
            .wrap(TracingLogger::<api::RequestSpan>::new())
            .wrap(actix_web::middleware::from_fn(api::request_id))
            .configure(move |cfg| api::configure(cfg, state))
    })
    // Streamed answers are many small writes: with Nagle's algorithm each one after the first
    // waits for the client's delayed ACK (40 ms on Linux) on a kept-alive connection.
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "Cannot turn Nagle's algorithm off for a connection.");
            }
        }
    })
    .client_request_timeout(Duration::from_millis(
        settings.server.request_head_timeout_ms,
    ))
    .disable_signals()
    .shutdown_timeout(settings.shutdown.http_drain_timeout_ms.div_ceil(1000))
    .listen(listener)
    .map_err(|source| StartupError::Bind { addr, source })?;
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((addr, handle))
}

/// With `--watch`, reloads script plugins when their files change.
fn watch_plugins(
    settings: &Settings,
    plugins: &Arc<PluginHost>,
) -> Option<crate::script::watch::WatchGuard> {
    if !settings.hot_reload.enabled {
        return None;
    }
    let debounce = Duration::from_millis(settings.hot_reload.debounce_ms);
    match crate::script::watch::start(&settings.script_plugins_dir(), debounce, plugins.clone()) {
        Ok(guard) => Some(guard),
        Err(error) => {
            tracing::error!(%error, "Cannot watch the plugin directory; hot reload is off.");
            None
        }
    }
}

/// SIGINT and SIGTERM listeners. They are registered during boot, before the service says it
/// is ready, so a signal sent as soon as it is ready is handled, not fatal.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::error!(%error, signal = name, "Cannot listen for a signal.");
                    None
                }
            };
            Signals {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on the first SIGINT or SIGTERM.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => futures::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {},
                _ = next(&mut self.int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

//! Fault plugins for supervision tests: ok, init-error, init-panic, panic-on-demand, slow-stop,
//! hang-on-stop. Compiled only for tests or with the `test-util` feature.
//!
//! Every fault plugin writes what happens to it into a shared [`Recorder`], so tests can check
//! order (boot, LIFO stop) and freshness of state across restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use semver::Version;
use serde_json::json;

use crate::broker::Event;
use crate::plugin::{Plugin, PluginContext, PluginError, PluginFactory, PluginManifest};

/// Event that makes a `PanicOnDemand` plugin panic: data `{"plugin": "<id>"}`.
pub const PANIC_EVENT: &str = "test.panic";
/// Event that makes every fault plugin answer with `test.pong {plugin, instance, count}`.
pub const PING_EVENT: &str = "test.ping";
pub const PONG_EVENT: &str = "test.pong";

/// The fault a plugin carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Ok,
    InitError,
    InitPanic,
    /// Panics when it receives `test.panic` naming it.
    PanicOnDemand,
    /// `stop()` takes this long.
    SlowStop(Duration),
    /// `stop()` never finishes.
    HangOnStop,
    /// `start()` fails.
    StartError,
}

/// What happened to fault plugins, in order: `init:<id>`, `start:<id>`, `stop:<id>`, …
#[derive(Default)]
pub struct Recorder {
    lines: Mutex<Vec<String>>,
    instances: AtomicU64,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    pub fn record(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lines starting with `prefix` (e.g. `stop:`), without the prefix.
    pub fn with_prefix(&self, prefix: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }
}

pub struct FaultPlugin {
    manifest: PluginManifest,
    fault: Fault,
    recorder: Arc<Recorder>,
    /// Distinguishes instances: a restart builds a new one from the factory.
    instance: u64,
    /// Per-instance state that must start at zero after a restart.
    count: AtomicU64,
    ctx: std::sync::OnceLock<PluginContext>,
}

/// A factory for a fault plugin named `id`.
pub fn fault_plugin(id: &str, fault: Fault, recorder: Arc<Recorder>) -> PluginFactory {
    fault_plugin_with(
        PluginManifest::new(id, Version::new(1, 0, 0)),
        fault,
        recorder,
    )
}

/// A factory for a fault plugin with a custom manifest (dependencies, versions).
pub fn fault_plugin_with(
    manifest: PluginManifest,
    fault: Fault,
    recorder: Arc<Recorder>,
) -> PluginFactory {
    Arc::new(move || {
        let instance = recorder.instances.fetch_add(1, Ordering::Relaxed) + 1;
        Arc::new(FaultPlugin {
            manifest: manifest.clone(),
            fault,
            recorder: recorder.clone(),
            instance,
            count: AtomicU64::new(0),
            ctx: std::sync::OnceLock::new(),
        }) as Arc<dyn Plugin>
    })
}

#[async_trait(?Send)]
impl Plugin for FaultPlugin {
    fn manifest(&self) -> PluginManifest {
        self.manifest.clone()
    }

    async fn init(&self, ctx: &PluginContext) -> Result<(), PluginError> {
        let id = &self.manifest.id;
        self.recorder.record(format!("init:{id}"));
        match self.fault {
            Fault::InitError => return Err(PluginError::new("init failed on purpose")),
            Fault::InitPanic => panic!("init panicked on purpose"),
            _ => {}
        }
        ctx.events().on(PANIC_EVENT)?;
        ctx.events().on(PING_EVENT)?;
        let _ = self.ctx.set(ctx.clone());
        Ok(())
    }

    async fn start(&self) -> Result<(), PluginError> {
        let id = &self.manifest.id;
        // Proves HTTP accepts connections before any plugin starts.
        let reachable = match self.ctx.get().and_then(|c| c.server_addr()) {
            Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
            None => false,
        };
        self.recorder.record(format!("start:{id}:http={reachable}"));
        if self.fault == Fault::StartError {
            return Err(PluginError::new("start failed on purpose"));
        }
        Ok(())
    }

    async fn stop(&self) -> Result<(), PluginError> {
        let id = &self.manifest.id;
        self.recorder.record(format!("stop:{id}"));
        match self.fault {
            Fault::SlowStop(d) => tokio::time::sleep(d).await,
            Fault::HangOnStop => futures::future::pending::<()>().await,
            _ => {}
        }
        self.recorder.record(format!("stopped:{id}"));
        Ok(())
    }

    async fn on_event(&self, event: &Event) -> Result<(), PluginError> {
        let id = &self.manifest.id;
        match event.event.as_str() {
            PANIC_EVENT
                if event.str_field("plugin") == Some(id) && self.fault == Fault::PanicOnDemand =>
            {
                panic!("panic on demand in {id}");
            }
            PING_EVENT => {
                let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(ctx) = self.ctx.get() {
                    ctx.events().emit(
                        PONG_EVENT,
                        json!({ "plugin": id, "instance": self.instance, "count": count }),
                    )?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A connector plugin with no hooks: every call passes through (pipeline-overhead fixture).
pub struct NoopConnector {
    id: String,
}

/// A factory for a no-op connector plugin named `id`, compatible with HTTP_REST.
pub fn noop_connector(id: &str) -> PluginFactory {
    let id = id.to_string();
    Arc::new(move || Arc::new(NoopConnector { id: id.clone() }) as Arc<dyn Plugin>)
}

#[async_trait(?Send)]
impl Plugin for NoopConnector {
    fn manifest(&self) -> PluginManifest {
        let mut m = PluginManifest::new(&self.id, Version::new(1, 0, 0));
        m.compatible_connectors = vec!["HTTP_REST".into()];
        m
    }
}

/// A native connector plugin whose `beforeSend` tags the message with its id, and panics when
/// the message contains `panic` (the inline hook path's crash fixture).
pub struct PanicConnector {
    id: String,
}

pub fn panic_connector(id: &str) -> PluginFactory {
    let id = id.to_string();
    Arc::new(move || Arc::new(PanicConnector { id: id.clone() }) as Arc<dyn Plugin>)
}

#[async_trait(?Send)]
impl Plugin for PanicConnector {
    fn manifest(&self) -> PluginManifest {
        let mut m = PluginManifest::new(&self.id, Version::new(1, 0, 0));
        m.compatible_connectors = vec!["HTTP_REST".into()];
        m
    }

    fn connector_hooks(&self) -> crate::plugin::HookSet {
        crate::plugin::HookSet::EMPTY.with(crate::plugin::Hook::BeforeSend)
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: crate::plugin::Hook,
        input: &serde_json::Value,
        _ctx: &mut crate::plugin::HookContext,
    ) -> Result<Option<serde_json::Value>, PluginError> {
        if hook != crate::plugin::Hook::BeforeSend {
            return Ok(None);
        }
        let message = input["message"].as_str().unwrap_or_default();
        if message.contains("panic") {
            panic!("{} was told to panic", self.id);
        }
        Ok(Some(
            json!({ "message": format!("{message} <{}>", self.id), "metadata": input["metadata"] }),
        ))
    }
}

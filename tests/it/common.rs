//! Shared helpers: start the service with fault plugins, watch its events, call its API.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard::broker::{BrokerHandle, Event, Subscription};
use switchyard::plugin::PluginFactory;
use switchyard::settings::{self, Overrides};
use switchyard::test_util::Recorder;
use switchyard::{App, ExitReport, Options, Settings, ShutdownHandle};

/// A private plugin root and data directory per test, so tests never see the shipped
/// examples nor each other's remembered state.
pub struct Dirs {
    pub root: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Arc<Dirs> {
        let dirs = Dirs {
            root: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::create_dir_all(dirs.core()).unwrap();
        Arc::new(dirs)
    }

    pub fn plugins(&self) -> PathBuf {
        self.root.path().join("plugins")
    }

    /// `plugins/core`, where script plugins live.
    pub fn core(&self) -> PathBuf {
        self.plugins().join("core")
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Writes `plugins/core/<plugin>/<file>`.
    pub fn write(&self, plugin: &str, file: &str, text: &str) {
        let dir = self.core().join(plugin);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    /// Copies a shipped example plugin from the repository's `plugins/core`.
    pub fn copy_example(&self, plugin: &str) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("plugins/core")
            .join(plugin);
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            self.write(plugin, &entry.file_name().to_string_lossy(), &text);
        }
    }
}

/// Settings for tests: a free port, no example plugins, quick backoff, private directories.
/// `env` adds or overrides `SWITCHYARD__…` values, as an operator would.
pub fn settings(dirs: &Dirs, env: &[(&str, &str)]) -> Settings {
    let mut vars: Vec<(String, String)> = vec![
        (
            "SWITCHYARD__PLUGINS__DIR".into(),
            dirs.plugins().display().to_string(),
        ),
        (
            "SWITCHYARD__DATA__DIR".into(),
            dirs.data().display().to_string(),
        ),
        (
            "SWITCHYARD__STORE__PATH".into(),
            dirs.data().join("switchyard.db").display().to_string(),
        ),
        ("SWITCHYARD__PLUGINS__NATIVE".into(), "[]".into()),
        ("SWITCHYARD__SUPERVISOR__BACKOFF_MIN_MS".into(), "10".into()),
        ("SWITCHYARD__SUPERVISOR__BACKOFF_MAX_MS".into(), "50".into()),
        ("SWITCHYARD__PLUGINS__STOP_TIMEOUT_MS".into(), "1000".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let overrides = Overrides {
        bind: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    settings::load(&overrides, vars).expect("test settings are valid")
}

pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber_init();
    }
}

fn tracing_subscriber_init() -> Result<(), ()> {
    switchyard::telemetry::init(switchyard::settings::LogFormat::Pretty, "debug");
    Ok(())
}

pub struct TestApp {
    /// Keeps the temporary directories alive as long as the service runs.
    _dirs: Arc<Dirs>,
    pub addr: SocketAddr,
    pub broker: BrokerHandle,
    /// Every event since before boot.
    pub events: Subscription,
    pub shutdown: ShutdownHandle,
    pub health: switchyard::health::HealthRegistry,
    pub sessions: Arc<switchyard::session::SessionManager>,
    run: actix_web::rt::task::JoinHandle<ExitReport>,
    client: awc::Client,
}

impl TestApp {
    pub async fn spawn(
        env: &[(&str, &str)],
        plugins: Vec<PluginFactory>,
        _recorder: Arc<Recorder>,
    ) -> TestApp {
        TestApp::spawn_in(Dirs::new(), env, plugins).await
    }

    /// Starts the service on `dirs` (script plugins written there beforehand are discovered).
    pub async fn spawn_in(
        dirs: Arc<Dirs>,
        env: &[(&str, &str)],
        plugins: Vec<PluginFactory>,
    ) -> TestApp {
        init_test_log();
        let settings = settings(&dirs, env);
        let broker = BrokerHandle::new(4096, settings.broker.mailbox_capacity);
        let events = broker.subscribe(&["*"]).unwrap();
        let app = App::build(
            settings,
            Options {
                plugins,
                broker: Some(broker.clone()),
            },
        )
        .await
        .expect("service starts");
        let addr = app.addr();
        let shutdown = app.shutdown_handle();
        let health = app.health();
        let sessions = app.sessions();
        let run = actix_web::rt::spawn(app.run_until_stopped());
        TestApp {
            _dirs: dirs,
            addr,
            broker,
            events,
            shutdown,
            health,
            sessions,
            run,
            // Idle connections are dropped before the server's 5 s keep-alive closes them: a
            // test busy computing for longer (under load) would otherwise reuse a closed one.
            client: awc::Client::builder()
                .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(2)))
                .timeout(Duration::from_secs(10))
                .finish(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request without a body and returns status and JSON (`Null` if not JSON).
    async fn call(&self, method: awc::http::Method, path: &str) -> (u16, Value) {
        let mut resp = self
            .client
            .request(method, self.url(path))
            .send()
            .await
            .expect("request");
        let body = resp.body().await.expect("body");
        (
            resp.status().as_u16(),
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(awc::http::Method::GET, path).await
    }

    /// POSTs an empty body.
    pub async fn post(&self, path: &str) -> (u16, Value) {
        self.call(awc::http::Method::POST, path).await
    }

    /// POSTs `body` as JSON and returns status and JSON.
    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        let mut resp = self
            .client
            .post(self.url(path))
            .send_json(&body)
            .await
            .expect("request");
        let bytes = resp.body().limit(1 << 22).await.expect("body");
        (
            resp.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(awc::http::Method::DELETE, path).await
    }

    pub fn client(&self) -> &awc::Client {
        &self.client
    }

    /// Waits for the next event called `name`, skipping others; panics after 5 s.
    pub async fn next_event(&mut self, name: &str) -> Arc<Event> {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("event stream open");
                if event.event == name {
                    return event;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("no {name} event within 5 s"))
    }

    /// Every event received so far (without waiting), as (name, data).
    pub fn drain_events(&mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(event) = self.events.try_recv() {
            out.push((event.event.clone(), event.data.clone()));
        }
        out
    }

    /// Publishes a custom event, as a plugin or operator would.
    pub fn publish(&self, name: &str, data: Value) {
        self.broker.publish(Event::custom(name, data).unwrap());
    }

    /// Triggers a graceful shutdown and waits for it.
    pub async fn stop(self) -> ExitReport {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("shutdown finishes")
            .expect("run task")
    }
}

/// Polls `check` every 10 ms until it returns true; panics after 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

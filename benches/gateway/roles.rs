//! What the harness's child processes run: the mock upstream and the gateway under test, each
//! started by re-running this executable with `--role`. Keeping them in their own processes
//! lets the harness read each one's CPU time and memory from the kernel.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse, HttpServer};
use async_trait::async_trait;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard::plugin::{Hook, HookContext, Plugin, PluginError, PluginFactory, PluginManifest};

/// The mock's answer: an OpenAI chat completion, the same bytes every time.
pub const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}"#;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MockSpec {
    pub delay_ms: u64,
    pub workers: usize,
}

/// Serves `ANSWER` to any request after `delay_ms`.
pub fn mock(spec: MockSpec) {
    actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mock");
        println!("LISTEN {}", listener.local_addr().expect("mock address"));
        let delay = Duration::from_millis(spec.delay_ms);
        HttpServer::new(move || {
            actix_web::App::new()
                .app_data(web::PayloadConfig::default().limit(1 << 20))
                .route("/v1/stream", web::post().to(stream))
                .default_service(web::to(move |_body: web::Bytes| async move {
                    if !delay.is_zero() {
                        actix_web::rt::time::sleep(delay).await;
                    }
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(ANSWER)
                }))
        })
        .workers(spec.workers.max(1))
        .backlog(8192)
        .disable_signals()
        .listen(listener)
        .expect("mock listens")
        .run()
        .await
        .expect("mock runs");
    });
}

/// Chunks in every streamed answer of the mock.
pub const STREAM_CHUNKS: usize = 20;

/// `POST /v1/stream`: an OpenAI-style event stream of [`STREAM_CHUNKS`] chunks, each written
/// on its own, then `[DONE]`. The body is read so the connection can be kept alive.
async fn stream(_body: web::Bytes) -> HttpResponse {
    let chunks = (0..STREAM_CHUNKS)
        .map(|i| {
            let event =
                json!({ "choices": [{ "index": 0, "delta": { "content": format!("w{i} ") } }] });
            format!("data: {event}\n\n")
        })
        .chain(std::iter::once("data: [DONE]\n\n".to_string()))
        .map(|text| Ok::<_, actix_web::Error>(web::Bytes::from(text)));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(futures::stream::iter(chunks))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewaySpec {
    /// `noop-1` … `noop-K` native no-op connector plugins.
    pub noop: usize,
    /// Also load `crash` (panics in beforeSend on the message "panic") and `rewrite` (parses
    /// and rewrites the JSON message).
    pub fixtures: bool,
    pub plugins_dir: String,
    pub data_dir: String,
    pub targets_file: String,
    /// Hot reload with this debounce (0: off).
    pub hot_reload_ms: u64,
    pub backoff_min_ms: u64,
    pub store: bool,
    /// `store.durability`: `batched` (the default) or `acknowledged`.
    pub durability: String,
    pub max_sessions: usize,
    /// Built-in plugins to select (`plugins.native`).
    pub native: Vec<String>,
    /// The front doors answer without a virtual key (`frontdoor.require_key = false`).
    #[serde(default)]
    pub frontdoor_open: bool,
    /// `sessions.idle_timeout_ms` (0: the service's default).
    #[serde(default)]
    pub idle_timeout_ms: u64,
    /// More `SWITCHYARD__…` settings (S10: the PostgreSQL URL, NATS, the instance's name).
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

impl Default for GatewaySpec {
    /// The service's own defaults: the store is on (sessions and transcripts are written).
    fn default() -> Self {
        GatewaySpec {
            noop: 0,
            fixtures: false,
            plugins_dir: String::new(),
            data_dir: String::new(),
            targets_file: String::new(),
            hot_reload_ms: 0,
            backoff_min_ms: 200,
            store: true,
            durability: "batched".into(),
            max_sessions: 50_000,
            native: Vec::new(),
            frontdoor_open: false,
            idle_timeout_ms: 0,
            env: Vec::new(),
        }
    }
}

/// The real service (`App::build`) with the fixtures, until SIGTERM.
pub fn gateway(spec: GatewaySpec) {
    actix_web::rt::System::new().block_on(async move {
        let mut vars: Vec<(String, String)> = vec![
            ("SWITCHYARD__PLUGINS__DIR".into(), spec.plugins_dir.clone()),
            (
                "SWITCHYARD__PLUGINS__NATIVE".into(),
                serde_json::to_string(&spec.native).expect("a list of names"),
            ),
            ("SWITCHYARD__DATA__DIR".into(), spec.data_dir.clone()),
            (
                "SWITCHYARD__STORE__PATH".into(),
                format!("{}/switchyard.db", spec.data_dir),
            ),
            ("SWITCHYARD__STORE__ENABLED".into(), spec.store.to_string()),
            (
                "SWITCHYARD__STORE__DURABILITY".into(),
                spec.durability.clone(),
            ),
            (
                "SWITCHYARD__SESSIONS__TARGETS_FILE".into(),
                spec.targets_file.clone(),
            ),
            (
                "SWITCHYARD__SESSIONS__MAX_SESSIONS".into(),
                spec.max_sessions.to_string(),
            ),
            (
                "SWITCHYARD__SUPERVISOR__BACKOFF_MIN_MS".into(),
                spec.backoff_min_ms.to_string(),
            ),
            ("SWITCHYARD__LOG__LEVEL".into(), "error".into()),
        ];
        if spec.frontdoor_open {
            vars.push(("SWITCHYARD__FRONTDOOR__REQUIRE_KEY".into(), "false".into()));
        }
        if spec.idle_timeout_ms > 0 {
            vars.push((
                "SWITCHYARD__SESSIONS__IDLE_TIMEOUT_MS".into(),
                spec.idle_timeout_ms.to_string(),
            ));
        }
        vars.extend(spec.env.iter().cloned());
        if spec.hot_reload_ms > 0 {
            vars.push(("SWITCHYARD__HOT_RELOAD__ENABLED".into(), "true".into()));
            vars.push((
                "SWITCHYARD__HOT_RELOAD__DEBOUNCE_MS".into(),
                spec.hot_reload_ms.to_string(),
            ));
        }
        let overrides = switchyard::settings::Overrides {
            bind: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let settings = switchyard::settings::load(&overrides, vars).expect("bench settings");
        let mut plugins: Vec<PluginFactory> = (1..=spec.noop)
            .map(|i| switchyard::test_util::noop_connector(&format!("noop-{i}")))
            .collect();
        if spec.fixtures {
            plugins.push(Arc::new(|| Arc::new(Crash) as Arc<dyn Plugin>));
            plugins.push(Arc::new(|| Arc::new(Rewrite) as Arc<dyn Plugin>));
        }
        let app = switchyard::App::build(
            settings,
            switchyard::Options {
                plugins,
                broker: None,
            },
        )
        .await
        .expect("the gateway starts");
        println!("LISTEN {}", app.addr());
        app.run_until_stopped().await;
    });
}

fn connector_manifest(id: &str) -> PluginManifest {
    let mut m = PluginManifest::new(id, Version::new(1, 0, 0));
    m.compatible_connectors = vec!["HTTP_REST".into()];
    m
}

/// Panics in `beforeSend` when the message is `panic` (S7); passes everything else through.
struct Crash;

#[async_trait(?Send)]
impl Plugin for Crash {
    fn manifest(&self) -> PluginManifest {
        connector_manifest("crash")
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: &Value,
        _ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        if hook == Hook::BeforeSend && input["message"] == "panic" {
            panic!("crash requested by the benchmark");
        }
        Ok(Some(match hook {
            Hook::BeforeSend => {
                json!({ "message": input["message"], "metadata": { "crash": "ok" } })
            }
            _ => return Ok(None),
        }))
    }
}

/// The realistic plugin: parses the message as JSON, adds fields, writes it back.
struct Rewrite;

#[async_trait(?Send)]
impl Plugin for Rewrite {
    fn manifest(&self) -> PluginManifest {
        connector_manifest("rewrite")
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: &Value,
        _ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        if hook != Hook::BeforeSend {
            return Ok(None);
        }
        let text = input["message"].as_str().unwrap_or_default();
        let mut doc: Value = serde_json::from_str(text)
            .map_err(|e| PluginError::new(format!("the message is not JSON: {e}")))?;
        doc["seen"] = json!(true);
        doc["words"] = json!(doc["text"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .count());
        Ok(Some(
            json!({ "message": doc.to_string(), "metadata": input["metadata"] }),
        ))
    }
}

/// A trivial script connector plugin (the script no-op chain).
pub fn script_noop(id: &str) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "{id}", name: "{id}", description: "no-op", version: "1.0.0", priority: 100,
  compatibleConnectors: ["HTTP_REST"],
  beforeSend(message, metadata) {{ return {{ message, metadata }}; }},
  afterReceive(response) {{ return {{ response }}; }},
}});
"#
    )
}

/// The realistic script plugin: the same JSON rewrite as the native one.
pub fn script_rewrite(id: &str) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "{id}", name: "{id}", description: "rewrites the JSON message", version: "1.0.0",
  compatibleConnectors: ["HTTP_REST"],
  beforeSend(message, metadata) {{
    const doc = JSON.parse(message);
    doc.seen = true;
    doc.words = String(doc.text || "").split(/\s+/).filter(Boolean).length;
    return {{ message: JSON.stringify(doc), metadata }};
  }},
}});
"#
    )
}

/// A script plugin that stamps its version into every answer's content (S6).
pub fn script_versioned(id: &str, version: &str) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "{id}", name: "{id}", description: "stamps its version", version: "{version}",
  compatibleConnectors: ["HTTP_REST"],
  afterReceive(response) {{ return {{ response: {{ ...response, content: "[{version}] " + response.content }} }}; }},
}});
"#
    )
}

/// A script gateway plugin with one route and one tool (issue 6's overhead figures).
pub fn script_extension() -> String {
    r#"export default {
  name: "ext", version: "1.0.0",
  init(ctx) {
    ctx.app.get("/ping", (req, res) => res.json({ pong: true }));
    ctx.registerTool({ name: "echo", description: "echo", parameters: { type: "object" }, execute: (p) => p });
  },
};
"#
    .to_string()
}

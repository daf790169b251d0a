//! The two example plugins `cargo run` loads: `event-logger` (subscribes to every `plugin.*`
//! event and logs it) and `hello` (depends on `event-logger`, greets on start, says goodbye on
//! stop, so the boot and LIFO shutdown order show in the log; it also shows the native side of
//! the context: a route and a tool).
//!
//! Owns nothing the gateway relies on: they exist to be read and copied.

use async_trait::async_trait;
use semver::Version;
use serde_json::{json, Value};

use crate::broker::Event;
use crate::plugin::{Plugin, PluginContext, PluginError, PluginManifest};
use crate::route::{Method, RouteBody, RouteRequest, RouteResponse};
use crate::tool::ToolSpec;

/// Logs every plugin lifecycle event it sees on the bus.
pub struct EventLogger;

#[async_trait(?Send)]
impl Plugin for EventLogger {
    fn manifest(&self) -> PluginManifest {
        PluginManifest::new("event-logger", Version::new(1, 0, 0))
            .named("Event Logger")
            .describe("Logs every plugin.* event from the broker.")
    }

    async fn init(&self, ctx: &PluginContext) -> Result<(), PluginError> {
        ctx.events().on("plugin.*")
    }

    async fn on_event(&self, event: &Event) -> Result<(), PluginError> {
        tracing::info!(plugin = "event-logger", event = %event.event, data = %event.data, "Event observed.");
        Ok(())
    }
}

fn greeting(name: &str) -> String {
    format!("Hello, {name}!")
}

/// Greets once HTTP is up and says goodbye on shutdown; serves a greeting route and tool.
#[derive(Default)]
pub struct Hello {
    ctx: std::sync::OnceLock<PluginContext>,
}

#[async_trait(?Send)]
impl Plugin for Hello {
    fn manifest(&self) -> PluginManifest {
        PluginManifest::new("hello", Version::new(1, 0, 0))
            .named("Hello")
            .describe("Greets when the gateway is serving; depends on event-logger.")
            .depends_on("event-logger", "^1")
    }

    async fn init(&self, ctx: &PluginContext) -> Result<(), PluginError> {
        ctx.logger().info("Initialised.");
        let _ = self.ctx.set(ctx.clone());
        // GET /plugins/hello/greet/:name, handler #0.
        ctx.mount(Method::Get, "/greet/:name", false)?;
        ctx.register_tool(ToolSpec {
            name: "hello".into(),
            description: "Greets someone by name.".into(),
            parameters: json!({
                "type": "object",
                "required": ["name"],
                "properties": { "name": { "type": "string", "minLength": 1 } },
                "additionalProperties": false,
            }),
        })
    }

    async fn route(&self, handler: u32, req: RouteRequest) -> Result<RouteResponse, PluginError> {
        match handler {
            0 => Ok(RouteResponse {
                status: 200,
                headers: Default::default(),
                body: RouteBody::Json(json!({ "greeting": greeting(&req.params["name"]) })),
            }),
            other => Err(PluginError::new(format!("no route handler #{other}"))),
        }
    }

    async fn tool(&self, name: &str, params: Value) -> Result<Value, PluginError> {
        match name {
            // The schema guarantees `name` is a non-empty string.
            "hello" => {
                Ok(json!({ "greeting": greeting(params["name"].as_str().unwrap_or_default()) }))
            }
            other => Err(PluginError::new(format!("no tool '{other}'"))),
        }
    }

    async fn start(&self) -> Result<(), PluginError> {
        let ctx = self
            .ctx
            .get()
            .ok_or_else(|| PluginError::new("start before init"))?;
        let addr = ctx.server_addr().map(|a| a.to_string()).unwrap_or_default();
        ctx.logger()
            .info(&format!("Hello! The gateway is serving on {addr}."));
        ctx.events().emit("hello.greeted", json!({ "addr": addr }))
    }

    async fn stop(&self) -> Result<(), PluginError> {
        if let Some(ctx) = self.ctx.get() {
            ctx.logger().info("Goodbye.");
        }
        Ok(())
    }
}

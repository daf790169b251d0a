//! Real plugin code, unmodified: Krawall's own plugin files in sessions, plugins known by the
//! ids they declare, Krawall's whole PluginLoader, `onError` with what was thrown, value
//! imports from `../base`, and request bodies that keep the template's key order.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;
use crate::sessions::{open, say, target};

const KRAWALL: &[(&str, &str)] = &[
    (
        "krawall-openai",
        include_str!("../fixtures/krawall/openai-plugin.ts"),
    ),
    (
        "krawall-anthropic",
        include_str!("../fixtures/krawall/anthropic-plugin.ts"),
    ),
    (
        "krawall-auth",
        include_str!("../fixtures/krawall/multi-step-auth-plugin.ts"),
    ),
    (
        "krawall-audit",
        include_str!("../fixtures/krawall/audit-plugin.ts"),
    ),
];

/// The service with `targets` and only the native plugins `natives`.
async fn start(dirs: Arc<Dirs>, targets: Value, natives: &str) -> TestApp {
    crate::sessions::start(dirs, targets, &[], natives).await
}

fn plugin_errors(events: Vec<(String, Value)>) -> Vec<Value> {
    events
        .into_iter()
        .filter(|(name, _)| name == "plugin.error")
        .map(|(_, data)| data)
        .collect()
}

#[actix_web::test]
async fn krawalls_four_plugin_files_run_unmodified_under_their_own_ids() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    for (dir, source) in KRAWALL {
        dirs.write(dir, "index.ts", source);
    }
    let mut openai = target("openai", &mock, "/openai");
    openai["requestTemplate"] = json!({ "messagePath": "messages.0.content",
        "structure": { "model": "gpt-4o", "messages": [{ "role": "user", "content": "" }] } });
    openai["responseTemplate"] =
        json!({ "responsePath": "$.choices[0].message.content", "tokenUsagePath": "$.usage" });
    let mut anthropic = target("anthropic", &mock, "/anthropic");
    anthropic["responseTemplate"] = json!({ "responsePath": "$.content[1].text" });
    let targets = json!([openai, anthropic, target("secure", &mock, "/secure")]);
    // The built-ins are dropped, so the scripts may have their ids.
    let mut app = start(dirs, targets, "[]").await;
    let errors = plugin_errors(app.drain_events());
    assert!(errors.is_empty(), "{errors:?}");

    let (_, list) = app.get("/api/plugins").await;
    let mut found: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["script"]["directory"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("anthropic".into(), "krawall-anthropic".into()),
            ("audit".into(), "krawall-audit".into()),
            ("multi-step-auth".into(), "krawall-auth".into()),
            ("openai".into(), "krawall-openai".into()),
        ]
    );
    for p in list.as_array().unwrap() {
        assert_eq!(p["state"], "running", "{p}");
    }

    // multi-step-auth fetches its token in onConnect (real fetch), and the session's requests
    // carry it; openai and audit run beside it.
    let id = open(
        &app,
        json!({ "targetId": "secure", "plugins": [
            { "id": "multi-step-auth", "config": { "authEndpoint": mock.url("/auth/token"),
              "authBody": { "user": "u", "password": "p" }, "tokenPath": "data.token" } },
            { "id": "audit" }
        ] }),
    )
    .await;
    let token_requests = mock.requests("/auth/token");
    assert_eq!(token_requests.len(), 1);
    assert_eq!(
        token_requests[0].body,
        json!({ "user": "u", "password": "p" })
    );
    assert_eq!(
        token_requests[0].header("content-type"),
        Some("application/json")
    );
    let (status, reply) = say(&app, &id, "open sesame").await;
    assert_eq!(
        (status, reply["content"].as_str()),
        (200, Some("secret ok")),
        "{reply}"
    );
    assert_eq!(
        mock.requests("/secure")[0].header("authorization"),
        Some("Bearer tok-1")
    );

    // openai keeps the history in its state and normalises the usage.
    let id = open(
        &app,
        json!({ "targetId": "openai", "plugins": [{ "id": "openai", "config": { "model": "gpt-4o" } }, { "id": "audit" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "hello").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "openai says: hello");
    assert_eq!(
        reply["metadata"]["tokenUsage"],
        json!({ "promptTokens": 5, "completionTokens": 7, "totalTokens": 12 })
    );

    // anthropic reads the raw answer's text block and usage.
    let id = open(
        &app,
        json!({ "targetId": "anthropic", "plugins": [{ "id": "anthropic", "config": { "model": "claude-haiku-4-5-20251001" } }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["content"], "claude says: hi");
    assert_eq!(
        reply["metadata"]["tokenUsage"],
        json!({ "promptTokens": 3, "completionTokens": 4, "totalTokens": 7 })
    );

    // A failing token request fails the session's connect with Krawall's own message.
    let (status, refused) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "secure", "plugins": [{ "id": "multi-step-auth", "config": {
                "authEndpoint": mock.url("/fail/403") } }] }),
        )
        .await;
    assert!(status >= 400, "{status} {refused}");
    assert!(
        refused.to_string().contains("Auth handshake failed: 403"),
        "{refused}"
    );
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn a_script_may_not_take_a_native_plugins_id_until_the_native_is_dropped() {
    let dirs = Dirs::new();
    dirs.write("krawall-openai", "index.ts", KRAWALL[0].1);
    let mut app = start(dirs, json!([]), r#"["openai"]"#).await;
    let errors = plugin_errors(app.drain_events());
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["error"].as_str().unwrap();
    assert!(
        message.contains("krawall-openai/index.ts declares the id 'openai'")
            && message.contains("the native built-in 'openai' already has")
            && message.contains("drop 'openai' from plugins.native"),
        "{message}"
    );
    // The built-in keeps the id; the refused file is listed under its directory.
    let (_, native) = app.get("/api/plugins/openai").await;
    assert_eq!(
        (native["source"].as_str(), native["state"].as_str()),
        (Some("native"), Some("running"))
    );
    let (_, refused) = app.get("/api/plugins/krawall-openai").await;
    assert_eq!(refused["state"], "failed");
    app.stop().await;

    // A refused plugin listed under its directory never takes the id another plugin declares:
    // the directory `audit` holds the openai file, while `x` holds the real audit plugin.
    let dirs = Dirs::new();
    dirs.write("audit", "index.ts", KRAWALL[0].1);
    dirs.write("x", "index.ts", KRAWALL[3].1);
    let app = start(dirs, json!([]), r#"["openai"]"#).await;
    let (_, audit) = app.get("/api/plugins/audit").await;
    assert_eq!(
        (
            audit["state"].as_str(),
            audit["script"]["directory"].as_str()
        ),
        (Some("running"), Some("x")),
        "{audit}"
    );
    let (_, refused) = app.get("/api/plugins/audit.duplicate").await;
    assert_eq!(refused["state"], "failed", "{refused}");
    app.stop().await;
}

/// A gateway plugin and two connector plugins in one module; the gateway part reports what
/// Krawall's PluginLoader answered during evaluation.
const PAIR: &str = r#"
import { PluginLoader } from "../../lib/connectors/plugins/loader";
import { ConnectorError } from "../base";

const results = {};
PluginLoader.register({ id: "temp-a", name: "A", description: "", version: "1.0.0", priority: 50, compatibleConnectors: ["HTTP_REST"] });
PluginLoader.register({ id: "temp-b", name: "B", description: "", version: "1.0.0", priority: 10, compatibleConnectors: ["SSE", "HTTP_REST"],
  configSchema: [{ key: "mode", label: "Mode", type: "select", required: true, description: "", options: [{ label: "x", value: "x" }] }] });
results.compatible = PluginLoader.getCompatible("HTTP_REST").map((p) => p.id);
results.sse = PluginLoader.getCompatible("SSE").map((p) => p.id);
results.metadata = PluginLoader.listMetadata();
results.validation = [PluginLoader.validatePluginConfig("temp-b", { mode: "y" }), PluginLoader.validatePluginConfig("temp-b", {}), PluginLoader.validatePluginConfig("ghost", {})];
results.unregister = [PluginLoader.unregister("temp-a"), PluginLoader.unregister("temp-a")];
PluginLoader.clear();
results.afterClear = [PluginLoader.getAll().length, PluginLoader.isRegistered("temp-b")];
const error = new ConnectorError("upstream down", undefined, 503);
results.base = [error instanceof Error, error.name, error.statusCode];

PluginLoader.register({ id: "shout", name: "Shout", description: "upper-cases", version: "1.1.0", priority: 20,
  compatibleConnectors: ["HTTP_REST"],
  async beforeSend(message) { return { message: message.toUpperCase() }; } });
PluginLoader.register({ id: "exclaim", name: "Exclaim", description: "adds a bang", version: "1.1.0", priority: 30,
  compatibleConnectors: ["HTTP_REST"],
  async beforeSend(message) { return { message: message + "!" }; },
  async afterReceive(response) { throw new TypeError("afterReceive broke: " + response.content); },
  onError(error, hook, ctx) {
    bus && bus.emit("probe.onError", { message: error.message, name: error.name, isError: error instanceof Error,
      stackNamesFile: String(error.stack).includes("index.js:"), hook, sessionId: ctx.sessionId });
  } });

let bus;
export default {
  name: "pair", version: "1.1.0",
  init(ctx) {
    bus = ctx.getEventBus();
    ctx.app.get("/results", (req, res) => res.json(results));
  },
};
"#;

#[actix_web::test]
async fn one_module_gives_several_plugins_and_krawalls_loader_api_behaves_as_krawalls() {
    let mock = MockUpstream::start().await;
    let dirs = Dirs::new();
    dirs.write("pair-dir", "index.js", PAIR);
    let mut app = start(dirs, json!([target("chat", &mock, "/chat")]), "[]").await;
    let errors = plugin_errors(app.drain_events());
    assert!(errors.is_empty(), "{errors:?}");

    let (status, results) = app.get("/plugins/pair/results").await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(results["compatible"], json!(["temp-b", "temp-a"]));
    assert_eq!(results["sse"], json!(["temp-b"]));
    assert_eq!(
        results["metadata"][1],
        json!({ "id": "temp-b", "name": "B", "description": "", "version": "1.0.0",
                "compatibleConnectors": ["SSE", "HTTP_REST"], "priority": 10 })
    );
    assert_eq!(
        results["validation"],
        json!([
            ["Field \"mode\" must be one of: x"],
            ["Field \"mode\" is required"],
            ["Plugin \"ghost\" is not registered"]
        ])
    );
    assert_eq!(results["unregister"], json!([true, false]));
    assert_eq!(results["afterClear"], json!([0, false]));
    assert_eq!(results["base"], json!([true, "ConnectorError", 503]));

    // Three plugins from one module: the gateway part and the two connector plugins still
    // registered when it finished evaluating (clear() removed the others).
    let (_, list) = app.get("/api/plugins").await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["pair", "shout", "exclaim"]);
    let (_, exclaim) = app.get("/api/plugins/exclaim").await;
    assert_eq!(exclaim["unit"], "pair");
    assert_eq!(exclaim["priority"], 30);
    assert_eq!(exclaim["state"], "running");

    // Both are usable in one session, in priority order.
    let id = open(
        &app,
        json!({ "targetId": "chat", "plugins": [{ "id": "exclaim" }, { "id": "shout" }] }),
    )
    .await;
    let (status, reply) = say(&app, &id, "hey").await;
    // exclaim's afterReceive throws: the message still went out transformed by both.
    assert_eq!(mock.requests("/chat")[0].body["message"], "HEY!");
    assert!(status >= 400 || reply["plugins"].is_array(), "{reply}");

    // onError got the thrown TypeError itself: its own message, its name, file:line in stack.
    let event = app.next_event("probe.onError").await;
    assert_eq!(
        event.data["message"], "afterReceive broke: echo: HEY!",
        "{:?}",
        event.data
    );
    assert_eq!(event.data["name"], "TypeError");
    assert_eq!(event.data["isError"], true);
    assert_eq!(event.data["stackNamesFile"], true);
    assert_eq!(event.data["hook"], "afterReceive");
    assert_eq!(event.data["sessionId"], id.as_str());

    // Reloading a connector plugin reloads its whole unit.
    let (status, reloaded) = app.post("/api/plugins/exclaim/reload").await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(reloaded["plugin"]["id"], "pair");
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn request_bodies_keep_the_templates_key_order() {
    let mock = MockUpstream::start().await;
    let mut chat = target("ordered", &mock, "/chat");
    chat["requestTemplate"] = json!({ "messagePath": "message",
        "structure": { "model": "m", "stream": false, "message": "", "max_tokens": 5, "a_last": true } });
    let app = start(Dirs::new(), json!([chat]), "[]").await;
    let id = open(&app, json!({ "targetId": "ordered" })).await;
    let (status, reply) = say(&app, &id, "hi").await;
    assert_eq!(status, 200, "{reply}");
    let body = &mock.requests("/chat")[0].body;
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["model", "stream", "message", "max_tokens", "a_last"]);
    app.stop().await;
    mock.stop().await;
}

fn named(name: &str) -> String {
    format!("export default {{ name: \"{name}\", version: \"1.0.0\", init(ctx) {{ ctx.app.get(\"/who\", () => ({{ name: \"{name}\" }})); }} }};")
}

#[actix_web::test]
async fn a_reload_that_changes_the_declared_id_moves_the_plugin_unless_the_id_is_taken() {
    let dirs = Dirs::new();
    dirs.write("a", "index.js", &named("alpha"));
    dirs.write("b", "index.js", &named("beta"));
    let app = start(dirs.clone(), json!([]), "[]").await;
    assert_eq!(app.get("/plugins/alpha/who").await.1["name"], "alpha");

    // A new, free id: unloaded under the old one, loaded under the new one.
    dirs.write("a", "index.js", &named("gamma"));
    let (status, moved) = app.post("/api/plugins/alpha/reload").await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["plugin"]["id"], "gamma");
    assert_eq!(app.get("/api/plugins/alpha").await.0, 404);
    assert_eq!(app.get("/plugins/gamma/who").await.1["name"], "gamma");

    // An id another plugin holds: refused before anything is unloaded.
    dirs.write("a", "index.js", &named("beta"));
    let (status, refused) = app.post("/api/plugins/gamma/reload").await;
    assert_eq!(status, 409, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("a/index.js declares the id 'beta', which b/index.js already has")
            && message.contains("'gamma' keeps serving"),
        "{message}"
    );
    assert_eq!(app.get("/plugins/gamma/who").await.1["name"], "gamma");
    assert_eq!(app.get("/plugins/beta/who").await.1["name"], "beta");
    app.stop().await;
}

fn connectors(ids: &[&str]) -> String {
    let mut module = String::from("import { PluginLoader } from \"./loader\";\n");
    for id in ids {
        module += &format!("PluginLoader.register({{ id: \"{id}\", name: \"{id}\", description: \"\", version: \"1.0.0\", priority: 10, compatibleConnectors: [\"HTTP_REST\"] }});\n");
    }
    module
}

#[actix_web::test]
async fn a_reload_that_adds_a_connector_id_another_plugin_holds_is_refused() {
    let dirs = Dirs::new();
    dirs.write("x", "index.js", &connectors(&["xa"]));
    dirs.write("y", "index.js", &connectors(&["ya"]));
    let app = start(dirs.clone(), json!([]), "[]").await;
    assert_eq!(app.get("/api/plugins/ya").await.0, 200);

    // Same id, but it now also registers `xa`, which x holds.
    dirs.write("y", "index.js", &connectors(&["ya", "xa"]));
    let (status, refused) = app.post("/api/plugins/ya/reload").await;
    assert_eq!(status, 409, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("'xa'") && message.contains("'ya' keeps serving"),
        "{message}"
    );
    let (_, x) = app.get("/api/plugins/xa").await;
    assert_eq!(
        (&x["state"], &x["unit"]),
        (&json!("running"), &Value::Null),
        "{x}"
    );
    let (_, y) = app.get("/api/plugins/ya").await;
    assert_eq!(y["state"], "running", "{y}");

    // A free new connector id is fine.
    dirs.write("y", "index.js", &connectors(&["ya", "yb"]));
    let (status, reloaded) = app.post("/api/plugins/ya/reload").await;
    assert_eq!(status, 200, "{reloaded}");
    assert_eq!(app.get("/api/plugins/yb").await.0, 200);
    app.stop().await;
}

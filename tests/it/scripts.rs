//! Script plugins with real files: both contracts, the seed examples, limits, hot reload with
//! rollback, and the REST management of plugins.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard::test_util::{fault_plugin, Fault, Recorder};

use crate::common::{Dirs, TestApp};

/// A gateway plugin that answers `test.ping` with its version, and misbehaves on demand.
fn gateway(version: &str) -> String {
    format!(
        r#"let hits = 0;
export default {{
  name: "gw",
  version: "{version}",
  async init(ctx) {{
    const bus = ctx.getEventBus();
    bus.on("test.ping", async () => {{ hits += 1; await Promise.resolve(); bus.emit("test.pong", {{ plugin: "gw", version: "{version}", hits }}); }});
    bus.on("test.spin", () => {{ while (true) {{}} }});
    bus.on("test.bomb", () => {{ const keep = []; for (;;) keep.push(new Array(100000).fill(7)); }});
  }},
}};
"#
    )
}

const LIMITS: [(&str, &str); 2] = [
    ("SWITCHYARD__PLUGINS__SCRIPT__CALL_TIMEOUT_MS", "300"),
    (
        "SWITCHYARD__PLUGINS__SCRIPT__MEMORY_LIMIT_BYTES",
        "16777216",
    ),
];

/// Pings and returns the script plugin `gw`'s answer (native fault plugins answer too).
async fn pong(app: &mut TestApp) -> Value {
    app.publish("test.ping", json!({}));
    loop {
        let pong = app.next_event("test.pong").await;
        if pong.data["plugin"] == "gw" {
            return pong.data.clone();
        }
    }
}

#[actix_web::test]
async fn both_contracts_and_the_seed_examples_load_unmodified() {
    let dirs = Dirs::new();
    for example in ["my-plugin", "response-logger", "astra-example"] {
        dirs.copy_example(example);
    }
    dirs.write("gw", "index.js", &gateway("1.0.0"));
    let mut app = TestApp::spawn_in(dirs, &[], vec![]).await;

    let (_, plugins) = app.get("/api/plugins").await;
    let by_id = |id: &str| {
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap()
    };
    for id in ["astra-example", "gw", "my-plugin", "response-logger"] {
        let p = by_id(id);
        assert_eq!(p["state"], "running", "{id}: {p}");
        assert_eq!(p["source"], "script");
        assert!(
            p["script"]["engineMemoryBytes"].as_u64().unwrap() > 0,
            "{p}"
        );
        assert!(p["script"]["sourcePath"].as_str().unwrap().ends_with(id));
    }
    // Krawall metadata comes through from the TypeScript seed files.
    let logger = by_id("response-logger");
    assert_eq!(logger["script"]["entryFile"], "index.ts");
    assert_eq!(logger["name"], "Response Logger Plugin");
    assert_eq!(logger["priority"], 190);
    assert_eq!(
        logger["compatibleConnectors"],
        json!(["HTTP_REST", "WEBSOCKET", "GRPC", "SSE"])
    );
    let (_, one) = app.get("/api/plugins/response-logger").await;
    assert_eq!(one["configSchema"][0]["key"], "logLevel");
    assert_eq!(one["configSchema"][1]["default"], 2000);
    let hooks = &logger["script"]["module"]["connectorPlugins"][0]["hooks"];
    assert_eq!(
        hooks,
        &json!([
            "initialize",
            "beforeSend",
            "afterReceive",
            "onDisconnect",
            "onError"
        ])
    );
    assert_eq!(
        by_id("my-plugin")["compatibleConnectors"],
        json!(["HTTP_REST"])
    );

    // The Open Astra example used its context: what it registered is listed per plugin.
    let astra = by_id("astra-example");
    let reg = &astra["registrations"];
    assert_eq!(reg["tools"], json!(["greet"]));
    assert_eq!(reg["agents"], json!(["greeter"]));
    assert_eq!(reg["routes"][0]["path"], "/plugins/astra-example/hello");
    assert_eq!(reg["routes"][0]["method"], "GET");
    // …and the route, the tool and the agent are live.
    let (status, hello) = app.get("/plugins/astra-example/hello").await;
    assert_eq!((status, hello), (200, json!({ "hello": "world" })));
    // …and its event handler runs on its own actor and reaches the bus both ways.
    app.publish("test.ping", json!({}));
    let (_, _) = app.post("/api/plugins/gw/restart").await;
    let saw = app.next_event("astra-example.saw").await;
    assert_eq!(saw.data["plugin"], "gw");
    assert_eq!(pong(&mut app).await["version"], "1.0.0");
    app.stop().await;
}

#[actix_web::test]
async fn bad_modules_are_refused_with_a_reason_and_throws_name_file_and_line() {
    let dirs = Dirs::new();
    dirs.write("no-contract", "index.js", "export const nothing = 1;\n");
    dirs.write("throws", "index.js", "export default {\n  name: 'throws', version: '1.0.0',\n  init() {\n    throw new Error('cannot start here');\n  },\n};\n");
    dirs.write(
        "bad-syntax",
        "index.ts",
        "export default {\n  name: 'x',\n  version: '1.0.0'\n  init() {}\n};\n",
    );
    dirs.write("fine", "index.js", &gateway("1.0.0"));
    let mut app = TestApp::spawn_in(dirs, &[], vec![]).await;
    let mut errors = std::collections::HashMap::new();
    for (name, data) in app.drain_events() {
        if name == "plugin.error" {
            errors.insert(
                data["plugin"].as_str().unwrap().to_string(),
                data["error"].as_str().unwrap().to_string(),
            );
        }
    }
    assert!(
        errors["no-contract"].contains("has no default export and registers no connector plugin"),
        "{errors:?}"
    );
    assert!(
        errors["throws"].contains("cannot start here")
            && errors["throws"].contains("throws/index.js:4"),
        "{errors:?}"
    );
    assert!(
        errors["bad-syntax"].contains("bad-syntax/index.ts:4"),
        "{errors:?}"
    );
    // Known by the name it declares, living in `fine/`.
    let (_, fine) = app.get("/api/plugins/gw").await;
    assert_eq!(fine["state"], "running");
    assert_eq!(fine["script"]["directory"], "fine");
    let (_, throws) = app.get("/api/plugins/throws").await;
    assert_eq!(throws["state"], "failed");
    assert!(throws["lastError"]["message"]
        .as_str()
        .unwrap()
        .contains("index.js:4"));
    app.stop().await;
}

#[actix_web::test]
async fn runaway_loops_and_memory_bombs_are_stopped_and_the_plugin_restarts() {
    let dirs = Dirs::new();
    dirs.write("gw", "index.js", &gateway("1.0.0"));
    let mut app = TestApp::spawn_in(dirs, &LIMITS, vec![]).await;
    assert_eq!(pong(&mut app).await["hits"], 1);

    for (trigger, expect) in [("test.spin", "time budget"), ("test.bomb", "memory limit")] {
        app.publish(trigger, json!({}));
        // The gateway keeps answering while the plugin's thread is busy.
        let began = Instant::now();
        while began.elapsed() < Duration::from_millis(200) {
            assert_eq!(app.get("/livez").await.0, 200);
        }
        let error = app.next_event("plugin.error").await;
        assert_eq!(error.data["phase"], "run", "{}", error.data);
        assert!(
            error.data["error"].as_str().unwrap().contains(expect),
            "{}",
            error.data
        );
        let restarted = app.next_event("plugin.restarted").await;
        assert_eq!(restarted.data["plugin"], "gw");
        assert_eq!(
            pong(&mut app).await["hits"],
            1,
            "a fresh engine after {trigger}"
        );
    }
    let (_, health) = app.get("/health").await;
    assert_eq!(health["checks"]["actor:root/plugins/gw"][0]["restarts"], 2);
    app.stop().await;
}

/// Every `plugin.reloaded` event received so far, without waiting.
fn reloads(app: &mut TestApp) -> Vec<Value> {
    app.drain_events()
        .into_iter()
        .filter(|(name, _)| name == "plugin.reloaded")
        .map(|(_, data)| data)
        .collect()
}

#[actix_web::test]
async fn one_save_reloads_once_and_reading_the_files_reloads_nothing() {
    let dirs = Dirs::new();
    dirs.write("gw", "index.js", &gateway("1.0.0"));
    let env = [
        ("SWITCHYARD__HOT_RELOAD__ENABLED", "true"),
        ("SWITCHYARD__HOT_RELOAD__DEBOUNCE_MS", "100"),
    ];
    let mut app = TestApp::spawn_in(dirs.clone(), &env, vec![]).await;
    assert_eq!(pong(&mut app).await["version"], "1.0.0");

    dirs.write("gw", "index.js", &gateway("2.0.0"));
    let reloaded = app.next_event("plugin.reloaded").await;
    assert_eq!(reloaded.data["newVersion"], "2.0.0");
    // The reload opened the plugin's files: that is no change, so no second reload follows
    // (it did, once per debounce, for as long as the process ran: a reload's own reads
    // scheduled the next one).
    let quiet = Duration::from_millis(1_000);
    tokio::time::sleep(quiet).await;
    let again = reloads(&mut app);
    assert!(again.is_empty(), "reloads after one save: {again:?}");

    // Reading the files (an editor, a backup, `cat`) is not a change either.
    std::fs::read_to_string(dirs.core().join("gw/index.js")).unwrap();
    std::fs::read_dir(dirs.core().join("gw")).unwrap().count();
    tokio::time::sleep(quiet).await;
    let again = reloads(&mut app);
    assert!(
        again.is_empty(),
        "reloads after reading the files: {again:?}"
    );
    assert_eq!(pong(&mut app).await["version"], "2.0.0");
    app.stop().await;
}

#[actix_web::test]
async fn hot_reload_rolls_back_a_broken_edit_and_swaps_in_a_fixed_one() {
    let dirs = Dirs::new();
    dirs.write("gw", "index.js", &gateway("1.0.0"));
    let env = [
        ("SWITCHYARD__HOT_RELOAD__ENABLED", "true"),
        ("SWITCHYARD__HOT_RELOAD__DEBOUNCE_MS", "200"),
    ];
    let mut app = TestApp::spawn_in(dirs.clone(), &env, vec![]).await;
    assert_eq!(pong(&mut app).await["version"], "1.0.0");

    // A syntax error: rolled back, the old version keeps answering with its state.
    dirs.write(
        "gw",
        "index.js",
        "export default {\n  name: 'gw',\n  version: '2.0.0'\n  init() {}\n};\n",
    );
    let error = app.next_event("plugin.error").await;
    assert_eq!(error.data["phase"], "reload", "{}", error.data);
    assert!(
        error.data["error"]
            .as_str()
            .unwrap()
            .contains("gw/index.js:4"),
        "{}",
        error.data
    );
    let answer = pong(&mut app).await;
    assert_eq!(
        (answer["version"].as_str(), answer["hits"].as_u64()),
        (Some("1.0.0"), Some(2))
    );

    // A fixed edit swaps in after the debounce.
    let saved = Instant::now();
    dirs.write("gw", "index.js", &gateway("2.0.0"));
    let reloaded = app.next_event("plugin.reloaded").await;
    let took = saved.elapsed();
    assert_eq!(reloaded.data["oldVersion"], "1.0.0");
    assert_eq!(reloaded.data["newVersion"], "2.0.0");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    eprintln!(
        "save -> new version serving: {took:?} (debounce 200 ms; swap {} ms)",
        reloaded.data["durationMs"]
    );
    assert_eq!(pong(&mut app).await["version"], "2.0.0");
    let (_, plugin) = app.get("/api/plugins/gw").await;
    assert_eq!(plugin["version"], "2.0.0");

    // Deleting the directory unloads the plugin; a new directory is loaded.
    std::fs::remove_dir_all(dirs.core().join("gw")).unwrap();
    let unloaded = app.next_event("plugin.unloaded").await;
    assert_eq!(unloaded.data["plugin"], "gw");
    assert_eq!(app.get("/api/plugins/gw").await.0, 404);
    dirs.write(
        "late",
        "index.js",
        "export default { name: 'late', version: '0.1.0', init() {} };",
    );
    let loaded = app.next_event("plugin.loaded").await;
    assert_eq!(loaded.data["plugin"], "late");
    app.stop().await;
}

#[actix_web::test]
async fn script_and_native_plugins_stop_in_one_lifo_order() {
    let dirs = Dirs::new();
    for id in ["s1", "s2"] {
        dirs.write(id, "index.js", &format!("export default {{ name: '{id}', version: '1.0.0', init() {{}}, stop() {{ console.log('bye'); }} }};"));
    }
    let rec = Recorder::new();
    let app = TestApp::spawn_in(dirs, &[], vec![fault_plugin("n1", Fault::Ok, rec.clone())]).await;
    let mut stopped = app.broker.subscribe(&["plugin.stopped"]).unwrap();
    app.stop().await;
    let mut order = Vec::new();
    while let Some(event) = stopped.try_recv() {
        order.push(event.data["plugin"].as_str().unwrap().to_string());
    }
    assert_eq!(order, ["s2", "s1", "n1"]);
}

#[actix_web::test]
async fn plugins_are_managed_over_rest_and_disabled_ones_stay_disabled_across_restarts() {
    let dirs = Dirs::new();
    dirs.write("gw", "index.js", &gateway("1.0.0"));
    let rec = Recorder::new();
    let natives = || vec![fault_plugin("native", Fault::Ok, Recorder::new())];
    let mut app = TestApp::spawn_in(dirs.clone(), &[], natives()).await;
    let _ = rec;

    // restart: a new generation, answered once it runs.
    let (status, body) = app.post("/api/plugins/gw/restart").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["plugin"]["state"].as_str(),
            body["plugin"]["generation"].as_u64()
        ),
        (Some("running"), Some(2))
    );

    // disable / enable, with 409s where they make no sense.
    let (status, body) = app.post("/api/plugins/gw/enable").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("plugin_state_conflict"))
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("not disabled (it is running)"));
    let (status, body) = app.post("/api/plugins/gw/disable").await;
    assert_eq!(
        (status, body["plugin"]["state"].as_str()),
        (200, Some("disabled"))
    );
    assert_eq!(app.next_event("plugin.disabled").await.data["plugin"], "gw");
    assert_eq!(app.post("/api/plugins/gw/disable").await.0, 409);
    assert_eq!(app.post("/api/plugins/gw/reload").await.0, 409);
    app.publish("test.ping", json!({}));
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["actor:root/plugins/gw"][0]["state"],
        "disabled"
    );

    // Native plugins cannot be unloaded or reloaded.
    let (status, body) = app.delete("/api/plugins/native").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("native"));
    assert_eq!(app.post("/api/plugins/native/reload").await.0, 409);
    assert_eq!(app.post("/api/plugins/ghost/restart").await.0, 404);
    assert_eq!(app.post("/api/plugins/gw/explode").await.0, 404);

    // A restart of the service keeps the plugin disabled.
    app.stop().await;
    let mut app = TestApp::spawn_in(dirs.clone(), &[], natives()).await;
    let (_, plugin) = app.get("/api/plugins/gw").await;
    assert_eq!(plugin["state"], "disabled");
    let (status, body) = app.post("/api/plugins/gw/enable").await;
    assert_eq!(
        (status, body["plugin"]["state"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    assert_eq!(pong(&mut app).await["hits"], 1);

    // unload / load; reload over REST reports the failing step and keeps the old version.
    let (status, body) = app.delete("/api/plugins/gw").await;
    assert_eq!(
        (status, body["plugin"]["state"].as_str()),
        (200, Some("unloaded"))
    );
    assert_eq!(app.get("/api/plugins/gw").await.0, 404);
    assert_eq!(app.post("/api/plugins/nowhere/load").await.0, 404);
    let (status, body) = app.post("/api/plugins/gw/load").await;
    assert_eq!(
        (status, body["plugin"]["state"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    assert_eq!(app.post("/api/plugins/gw/load").await.0, 409);
    dirs.write(
        "gw",
        "index.js",
        "export default { name: 'gw', version: '3.0.0' };",
    );
    let (status, body) = app.post("/api/plugins/gw/reload").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("reload_failed")),
        "{body}"
    );
    assert_eq!(body["details"]["step"], "validate");
    assert!(body["message"].as_str().unwrap().contains("missing `init`"));
    assert_eq!(pong(&mut app).await["version"], "1.0.0");
    dirs.write("gw", "index.js", &gateway("3.0.0"));
    let (status, body) = app.post("/api/plugins/gw/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["reload"],
        json!({ "oldVersion": "1.0.0", "newVersion": "3.0.0" })
    );
    assert_eq!(pong(&mut app).await["version"], "3.0.0");
    app.stop().await;
}

#[actix_web::test]
async fn config_schemas_validate_with_the_seed_messages_and_order_follows_priority() {
    let dirs = Dirs::new();
    for example in ["my-plugin", "response-logger", "astra-example"] {
        dirs.copy_example(example);
    }
    let app = TestApp::spawn_in(dirs, &[], vec![]).await;

    let (status, schema) = app.get("/api/plugins/response-logger/config-schema").await;
    assert_eq!(status, 200);
    assert_eq!(schema["pluginId"], "response-logger");
    assert_eq!(schema["pluginName"], "Response Logger Plugin");
    assert_eq!(
        schema["configSchema"][0]["options"][1],
        json!({"label": "Debug", "value": "debug"})
    );

    async fn validate(app: &TestApp, body: &'static str) -> (u16, Value) {
        let mut resp = app
            .client()
            .post(app.url("/api/plugins/response-logger/validate-config"))
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .unwrap();
        let bytes = resp.body().await.unwrap();
        (
            resp.status().as_u16(),
            serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
        )
    }
    assert_eq!(
        validate(&app, r#"{"logLevel": "debug", "slowThresholdMs": 100}"#).await,
        (200, json!({"valid": true, "errors": []}))
    );
    assert_eq!(
        validate(&app, r#"{"logLevel": "trace", "slowThresholdMs": "fast"}"#).await,
        (
            200,
            json!({"valid": false, "errors": [
                "Field 'logLevel' must be one of: info, debug",
                "Field 'slowThresholdMs' must be a number"
            ]})
        )
    );
    assert_eq!(
        validate(&app, "null").await,
        (
            200,
            json!({"valid": false, "errors": ["Config must be a non-null object"]})
        )
    );
    assert_eq!(validate(&app, "{oops").await.0, 400);
    assert_eq!(app.get("/api/plugins/ghost/config-schema").await.0, 404);

    // The list is metadata without schemas; one plugin shows its schema.
    let (_, list) = app.get("/api/plugins").await;
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p.get("configSchema").is_none()));
    let (_, one) = app.get("/api/plugins/response-logger").await;
    assert_eq!(one["configSchema"].as_array().unwrap().len(), 2);

    let (_, order) = app.get("/api/plugins/order?connector=HTTP_REST").await;
    let ids: Vec<&str> = order["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["my-plugin", "response-logger"]);
    let (_, order) = app.get("/api/plugins/order?connector=GRPC").await;
    assert_eq!(order["plugins"][0]["id"], "response-logger");
    let (status, body) = app.get("/api/plugins/order?connector=FAX").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query"))
    );
    assert_eq!(app.get("/api/plugins/order").await.0, 400);
    app.stop().await;
}

#[actix_web::test]
async fn typescript_runtime_errors_point_at_the_ts_source_line() {
    let dirs = Dirs::new();
    // Types, an interface and blank lines vanish from the stripped output: without the source
    // map, the throw on line 12 would be reported a few lines up.
    dirs.write(
        "typed",
        "index.ts",
        "interface Options {\n  loud: boolean;\n  times: number;\n}\n\ntype Id = string;\n\nconst id: Id = \"typed\";\n\nexport default {\n  name: id, version: \"1.0.0\",\n  init(ctx: unknown, options?: Options): void { throw new RangeError(\"no room for \" + id); },\n};\n",
    );
    let mut app = TestApp::spawn_in(dirs, &[], vec![]).await;
    let error = app.next_event("plugin.error").await;
    let message = error.data["error"].as_str().unwrap();
    assert!(
        message.contains("RangeError: no room for typed") && message.contains("typed/index.ts:12:"),
        "{message}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn plugin_errors_show_no_host_paths_no_engine_internals_and_stay_bounded() {
    let dirs = Dirs::new();
    let root = dirs.root.path().display().to_string();
    dirs.write(
        "thrower",
        "index.js",
        r#"export default { name: "thrower", version: "1.0.0", init(ctx) {
  ctx.app.get("/number", () => { throw 42; });
  ctx.app.get("/object", () => { throw { reason: "nope" }; });
  ctx.app.get("/huge", () => { throw new Error("x".repeat(5000000)); });
  ctx.app.get("/where", () => { null.boom(); });
} };"#,
    );
    let app = TestApp::spawn_in(dirs, &[], vec![]).await;
    for (path, expected) in [
        ("/plugins/thrower/number", "uncaught 42"),
        ("/plugins/thrower/object", "uncaught {\"reason\":\"nope\"}"),
        ("/plugins/thrower/where", "thrower/index.js:5"),
    ] {
        let (status, body) = app.get(path).await;
        let text = body.to_string();
        assert!(status >= 500, "{path}: {status} {text}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{path}: {text}");
        assert!(
            !text.contains(&root),
            "{path} leaks the host's paths: {text}"
        );
        assert!(
            !text.contains("Int(") && !text.contains("Object(0x"),
            "{path}: {text}"
        );
    }
    let (_, huge) = app.get("/plugins/thrower/huge").await;
    let text = huge.to_string();
    assert!(
        text.len() < 16 * 1024,
        "a 5 MB message is cut: {} bytes",
        text.len()
    );
    assert!(text.contains("bytes in all"), "{}", &text[..200]);

    let (status, missing) = app.post("/api/plugins/nowhere/load").await;
    assert_eq!(status, 404, "{missing}");
    assert!(!missing.to_string().contains(&root), "{missing}");
    app.stop().await;
}

#[actix_web::test]
async fn a_plugin_that_breaks_the_calling_protocol_is_restarted() {
    let dirs = Dirs::new();
    dirs.write(
        "saboteur",
        "index.js",
        r#"export default { name: "saboteur", version: "1.0.0", init(ctx) {
  ctx.app.get("/ok", async () => ({ ok: true }));
  ctx.app.get("/break", async () => { Map.prototype.get = () => undefined; return { broke: true }; });
} };"#,
    );
    let mut app = TestApp::spawn_in(dirs, &[], vec![]).await;
    assert_eq!(app.get("/plugins/saboteur/ok").await.1["ok"], true);
    // The call that breaks it fails, and the plugin is restarted with a fresh engine instead of
    // answering errors for ever while it looks `running`.
    let (status, body) = app.get("/plugins/saboteur/break").await;
    assert!(status >= 500, "{status} {body}");
    assert!(body.to_string().contains("calling protocol"), "{body}");
    let restarted = app.next_event("plugin.restarted").await;
    assert_eq!(restarted.data["plugin"], "saboteur");
    crate::common::eventually("the plugin answers again", || async {
        app.get("/plugins/saboteur/ok").await.1["ok"] == true
    })
    .await;
    app.stop().await;
}

fn crasher(version: &str) -> String {
    format!(
        r#"export default {{ name: "crasher", version: "{version}", init(ctx) {{
  ctx.app.get("/version", () => ({{ version: "{version}" }}));
  ctx.app.get("/spin", () => {{ while (true) {{}} }});
}} }};"#
    )
}

#[actix_web::test]
async fn a_crash_after_a_failed_reload_restarts_the_last_version_that_initialised() {
    let dirs = Dirs::new();
    dirs.write("crasher", "index.js", &crasher("1.0.0"));
    let mut app = TestApp::spawn_in(
        dirs.clone(),
        &[("SWITCHYARD__PLUGINS__SCRIPT__CALL_TIMEOUT_MS", "200")],
        vec![],
    )
    .await;
    assert_eq!(
        app.get("/plugins/crasher/version").await.1["version"],
        "1.0.0"
    );

    // A broken edit is refused; 1.0.0 keeps serving.
    dirs.write("crasher", "index.js", "export default { name: 'crasher',");
    assert_eq!(app.post("/api/plugins/crasher/reload").await.0, 422);
    // Now it crashes (time budget): the supervisor restarts 1.0.0, not the broken file.
    let (status, _) = app.get("/plugins/crasher/spin").await;
    assert!(status >= 500);
    let restarted = app.next_event("plugin.restarted").await;
    assert_eq!(restarted.data["plugin"], "crasher");
    crate::common::eventually("1.0.0 serves again", || async {
        app.get("/plugins/crasher/version").await.1["version"] == "1.0.0"
    })
    .await;
    let (_, view) = app.get("/api/plugins/crasher").await;
    assert_eq!(view["state"], "running", "{view}");
    assert_eq!(view["script"]["runningLastGoodVersion"], true, "{view}");

    // A good edit reloads from the files again.
    dirs.write("crasher", "index.js", &crasher("2.0.0"));
    let (status, reply) = app.post("/api/plugins/crasher/reload").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        app.get("/plugins/crasher/version").await.1["version"],
        "2.0.0"
    );
    let (_, view) = app.get("/api/plugins/crasher").await;
    assert_eq!(view["script"]["runningLastGoodVersion"], false, "{view}");
    // The counters add up: one crash restart, one reload that replaced the instance; the
    // refused reload's candidate used a generation number too (1 boot + 1 + 1 + 1).
    assert_eq!(
        (&view["restarts"], &view["reloads"], &view["generation"]),
        (&json!(1), &json!(1), &json!(4)),
        "{view}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_timer_callback_that_breaks_the_time_budget_crashes_its_plugin() {
    let dirs = Dirs::new();
    dirs.write(
        "looper",
        "index.js",
        r#"export default { name: "looper", version: "1.0.0", init(ctx) {
  ctx.app.get("/ping", () => ({ ok: true }));
  setTimeout(() => { while (true) {} }, 10);
} };"#,
    );
    let mut app = TestApp::spawn_in(
        dirs,
        &[("SWITCHYARD__PLUGINS__SCRIPT__CALL_TIMEOUT_MS", "200")],
        vec![],
    )
    .await;
    // The breach QuickJS swallows in the callback is not lost: the plugin counts as crashed
    // and restarts at once, with no call needed to notice.
    let restarted = app.next_event("plugin.restarted").await;
    assert_eq!(restarted.data["plugin"], "looper");
    assert!(
        restarted.data["reason"]
            .as_str()
            .is_some_and(|r| r.contains("time budget")),
        "{}",
        restarted.data
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_memory_bomb_in_a_timer_callback_restarts_the_plugin_without_waiting_for_a_call() {
    let dirs = Dirs::new();
    dirs.write(
        "timebomb",
        "index.js",
        r#"export default { name: "timebomb", version: "1.0.0", init(ctx) {
  const hog = () => { const keep = []; for (;;) keep.push(new Array(100000).fill(7)); };
  ctx.app.get("/ping", () => ({ ok: true }));
  ctx.app.post("/sync", () => { setTimeout(hog, 10); return { armed: true }; });
  ctx.app.post("/async", () => { setTimeout(async () => { await null; hog(); }, 10); return { armed: true }; });
} };"#,
    );
    let mut app = TestApp::spawn_in(dirs, &LIMITS, vec![]).await;
    for (round, path) in ["/plugins/timebomb/sync", "/plugins/timebomb/async"]
        .into_iter()
        .enumerate()
    {
        let (status, armed) = app.post(path).await;
        assert_eq!(status, 200, "{armed}");
        // No call follows: the crash is noticed on its own.
        let restarted = app.next_event("plugin.restarted").await;
        assert_eq!(restarted.data["plugin"], "timebomb");
        assert!(
            restarted.data["reason"]
                .as_str()
                .is_some_and(|r| r.contains("memory limit")),
            "{path}: {}",
            restarted.data
        );
        assert_eq!(app.get("/plugins/timebomb/ping").await.0, 200);
        let (_, view) = app.get("/api/plugins/timebomb").await;
        assert_eq!(view["restarts"], round + 1, "{view}");
    }
    app.stop().await;
}

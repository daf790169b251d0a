//! Boot order, lifecycle events, dependencies, and start-after-bind.

use serde_json::json;
use switchyard::plugin::PluginManifest;
use switchyard::test_util::{fault_plugin, fault_plugin_with, Fault, Recorder};

use crate::common::TestApp;

fn v1(id: &str) -> PluginManifest {
    PluginManifest::new(id, semver::Version::new(1, 0, 0))
}

#[actix_web::test]
async fn boot_inits_in_dependency_order_and_reports_every_failure() {
    let rec = Recorder::new();
    let plugins = vec![
        // Discovered before its dependency: must still init after it.
        fault_plugin_with(v1("needs-a").depends_on("a", "^1"), Fault::Ok, rec.clone()),
        fault_plugin("a", Fault::Ok, rec.clone()),
        fault_plugin("broken", Fault::InitError, rec.clone()),
        fault_plugin("panicky", Fault::InitPanic, rec.clone()),
        fault_plugin_with(
            v1("needs-broken").depends_on("broken", "*"),
            Fault::Ok,
            rec.clone(),
        ),
        fault_plugin_with(
            v1("needs-ghost").depends_on("ghost", "*"),
            Fault::Ok,
            rec.clone(),
        ),
        fault_plugin_with(v1("old-api").depends_on("a", "^2"), Fault::Ok, rec.clone()),
        fault_plugin("last", Fault::Ok, rec.clone()),
    ];
    let mut app = TestApp::spawn(&[], plugins, rec.clone()).await;

    // Init order: dependencies first, ties in discovery order; refused plugins never init.
    assert_eq!(
        rec.with_prefix("init:"),
        ["a", "needs-a", "broken", "panicky", "last"],
        "init order"
    );
    let events: Vec<(String, serde_json::Value)> = app
        .drain_events()
        .into_iter()
        .filter(|(name, _)| name == "plugin.loaded" || name == "plugin.error")
        .collect();
    let summary: Vec<String> = events
        .iter()
        .map(|(name, data)| {
            let phase = data.get("phase").and_then(|p| p.as_str()).unwrap_or("-");
            format!("{name}:{}:{phase}", data["plugin"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [
            "plugin.error:needs-ghost:discover",
            "plugin.error:old-api:discover",
            "plugin.loaded:a:-",
            "plugin.loaded:needs-a:-",
            "plugin.error:broken:init",
            "plugin.error:panicky:init",
            "plugin.error:needs-broken:init",
            "plugin.loaded:last:-",
        ]
    );
    let error_of = |plugin: &str| {
        events
            .iter()
            .find(|(n, d)| n == "plugin.error" && d["plugin"] == plugin)
            .map(|(_, d)| d["error"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(error_of("broken"), "init failed on purpose");
    assert!(
        error_of("panicky").contains("init panicked on purpose"),
        "{}",
        error_of("panicky")
    );
    assert_eq!(
        error_of("needs-broken"),
        "depends on 'broken', which failed to initialise"
    );
    assert_eq!(
        error_of("needs-ghost"),
        "depends on 'ghost', which is not loaded"
    );
    assert_eq!(
        error_of("old-api"),
        "depends on 'a' ^2, but version 1.0.0 is loaded"
    );

    // The API shows the same story.
    let (status, plugins) = app.get("/api/plugins").await;
    assert_eq!(status, 200);
    let state_of = |id: &str| {
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    for id in ["a", "needs-a", "last"] {
        assert_eq!(state_of(id), "running", "{id}");
    }
    for id in [
        "broken",
        "panicky",
        "needs-broken",
        "needs-ghost",
        "old-api",
    ] {
        assert_eq!(state_of(id), "failed", "{id}");
    }
    let (_, broken) = app.get("/api/plugins/broken").await;
    assert!(broken["lastError"]["message"]
        .as_str()
        .unwrap()
        .contains("init failed on purpose"));

    // A refused optional plugin degrades /health to warn, it does not fail it.
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "warn");
    assert_eq!(
        health["checks"]["actor:root/plugins/broken"][0]["status"],
        "warn"
    );
    assert_eq!(
        health["checks"]["actor:root/plugins/a"][0]["status"],
        "pass"
    );
    app.stop().await;
}

#[actix_web::test]
async fn plugins_start_only_after_http_listens_and_emit_started() {
    let rec = Recorder::new();
    let plugins = vec![
        fault_plugin("one", Fault::Ok, rec.clone()),
        fault_plugin("two", Fault::Ok, rec.clone()),
    ];
    let mut app = TestApp::spawn(&[], plugins, rec.clone()).await;
    assert_eq!(
        rec.with_prefix("start:"),
        ["one:http=true", "two:http=true"]
    );
    // Every init happened before any start.
    let lines = rec.lines();
    let last_init = lines.iter().rposition(|l| l.starts_with("init:")).unwrap();
    let first_start = lines.iter().position(|l| l.starts_with("start:")).unwrap();
    assert!(last_init < first_start, "{lines:?}");
    assert_eq!(app.next_event("plugin.started").await.data["plugin"], "one");
    assert_eq!(app.next_event("plugin.started").await.data["plugin"], "two");
    let (status, ready) = app.get("/readyz").await;
    assert_eq!((status, ready), (200, json!({"status": "pass"})));
    app.stop().await;
}

#[actix_web::test]
async fn a_plugin_whose_start_fails_is_restarted_then_parked() {
    let rec = Recorder::new();
    let plugins = vec![
        fault_plugin("ok", Fault::Ok, rec.clone()),
        fault_plugin("bad-start", Fault::StartError, rec.clone()),
    ];
    let env = [("SWITCHYARD__SUPERVISOR__RESTART_INTENSITY", "2")];
    let mut app = TestApp::spawn(&env, plugins, rec.clone()).await;
    let error = app.next_event("plugin.error").await;
    assert_eq!(error.data["phase"], "start");
    let failed = app.next_event("plugin.failed").await;
    assert_eq!(failed.data["plugin"], "bad-start");
    // Boot start + two restarts, each of which ran start again.
    crate::common::eventually("three starts were tried", || {
        let rec = rec.clone();
        async move { rec.with_prefix("start:bad-start").len() == 3 }
    })
    .await;
    let (_, plugin) = app.get("/api/plugins/bad-start").await;
    assert_eq!(plugin["state"], "failed");
    let (_, ok) = app.get("/api/plugins/ok").await;
    assert_eq!(ok["state"], "running");
    app.stop().await;
}

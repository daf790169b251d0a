//! Graceful shutdown: LIFO stop order, timeouts, readiness.

use std::time::{Duration, Instant};

use switchyard::plugin::PluginManifest;
use switchyard::test_util::{fault_plugin, fault_plugin_with, Fault, Recorder};

use crate::common::TestApp;

#[actix_web::test]
async fn plugins_stop_in_reverse_start_order() {
    let rec = Recorder::new();
    let v1 = |id: &str| PluginManifest::new(id, semver::Version::new(1, 0, 0));
    let plugins = vec![
        fault_plugin_with(v1("web").depends_on("db", "^1"), Fault::Ok, rec.clone()),
        fault_plugin("db", Fault::Ok, rec.clone()),
        fault_plugin("cache", Fault::Ok, rec.clone()),
        fault_plugin("metrics", Fault::Ok, rec.clone()),
    ];
    let mut app = TestApp::spawn(&[], plugins, rec.clone()).await;
    let started: Vec<String> = rec
        .with_prefix("start:")
        .iter()
        .map(|s| s.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(started, ["db", "web", "cache", "metrics"]);
    let _ = app.drain_events();
    let mut events = app.broker.subscribe(&["plugin.stopped"]).unwrap();
    let report = app.stop().await;
    assert_eq!(report.code, 0);
    assert!(!report.deadline_exceeded);
    assert_eq!(
        rec.with_prefix("stopped:"),
        ["metrics", "cache", "web", "db"]
    );
    let mut stopped = Vec::new();
    while let Some(event) = events.try_recv() {
        stopped.push(event.data["plugin"].as_str().unwrap().to_string());
    }
    assert_eq!(stopped, ["metrics", "cache", "web", "db"]);
}

#[actix_web::test]
async fn a_hung_stop_is_abandoned_after_its_timeout_and_shutdown_completes() {
    let rec = Recorder::new();
    let plugins = vec![
        fault_plugin("first", Fault::Ok, rec.clone()),
        fault_plugin("hangs", Fault::HangOnStop, rec.clone()),
        fault_plugin(
            "slow",
            Fault::SlowStop(Duration::from_millis(100)),
            rec.clone(),
        ),
    ];
    let env = [("SWITCHYARD__PLUGINS__STOP_TIMEOUT_MS", "300")];
    let app = TestApp::spawn(&env, plugins, rec.clone()).await;
    let began = Instant::now();
    let report = app.stop().await;
    let took = began.elapsed();
    assert_eq!(report.code, 0);
    assert!(!report.deadline_exceeded);
    // slow finished, hangs was abandoned after 300 ms, first still stopped after it.
    assert_eq!(
        rec.with_prefix("stop"),
        [":slow", "ped:slow", ":hangs", ":first", "ped:first"]
    );
    assert!(
        took >= Duration::from_millis(400),
        "waited for slow and for the hung timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[actix_web::test]
async fn the_global_deadline_bounds_shutdown() {
    let rec = Recorder::new();
    let plugins = vec![fault_plugin("hangs", Fault::HangOnStop, rec.clone())];
    // The plugin's own timeout is longer than the whole deadline.
    let env = [
        ("SWITCHYARD__PLUGINS__STOP_TIMEOUT_MS", "60000"),
        ("SWITCHYARD__SHUTDOWN__DEADLINE_MS", "500"),
    ];
    let app = TestApp::spawn(&env, plugins, rec.clone()).await;
    let began = Instant::now();
    let report = app.stop().await;
    assert!(report.deadline_exceeded);
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}

#[actix_web::test]
async fn readiness_turns_503_while_draining() {
    let rec = Recorder::new();
    let env = [("SWITCHYARD__SHUTDOWN__READINESS_DELAY_MS", "1500")];
    let app = TestApp::spawn(
        &env,
        vec![fault_plugin("p", Fault::Ok, rec.clone())],
        rec.clone(),
    )
    .await;
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200);
    app.shutdown.trigger();
    crate::common::eventually("/readyz answers 503", || async {
        let (status, body) = app.get("/readyz").await;
        status == 503 && body["output"] == "draining"
    })
    .await;
    // Still alive while draining, and health says so.
    let (status, _) = app.get("/livez").await;
    assert_eq!(status, 200);
    let (_, health) = app.get("/health").await;
    assert_eq!(health["phase"], "draining");
    let report = app.stop().await;
    assert_eq!(report.code, 0);
    assert_eq!(rec.with_prefix("stopped:"), ["p"]);
}

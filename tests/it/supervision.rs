//! Crashes: restart with fresh state, untouched siblings, the restart budget, the broker.

use serde_json::json;
use switchyard::test_util::{fault_plugin, Fault, Recorder, PANIC_EVENT, PING_EVENT, PONG_EVENT};

use crate::common::{eventually, TestApp};

/// Pings every fault plugin and returns `plugin -> (instance, count)` from their pongs.
async fn ping(app: &mut TestApp, expected: usize) -> std::collections::HashMap<String, (u64, u64)> {
    app.publish(PING_EVENT, json!({}));
    let mut answers = std::collections::HashMap::new();
    while answers.len() < expected {
        let pong = app.next_event(PONG_EVENT).await;
        answers.insert(
            pong.data["plugin"].as_str().unwrap().to_string(),
            (
                pong.data["instance"].as_u64().unwrap(),
                pong.data["count"].as_u64().unwrap(),
            ),
        );
    }
    answers
}

#[actix_web::test]
async fn a_panicking_plugin_restarts_fresh_and_its_siblings_are_untouched() {
    let rec = Recorder::new();
    let plugins = vec![
        fault_plugin("crashy", Fault::PanicOnDemand, rec.clone()),
        fault_plugin("steady", Fault::Ok, rec.clone()),
    ];
    let mut app = TestApp::spawn(&[], plugins, rec.clone()).await;
    let before = ping(&mut app, 2).await;
    assert_eq!(before["crashy"].1, 1);
    assert_eq!(before["steady"].1, 1);

    let crashed_at = std::time::Instant::now();
    app.publish(PANIC_EVENT, json!({ "plugin": "crashy" }));
    let error = app.next_event("plugin.error").await;
    assert_eq!(error.data["plugin"], "crashy");
    assert_eq!(error.data["phase"], "run");
    assert!(
        error.data["error"]
            .as_str()
            .unwrap()
            .contains("panic on demand in crashy"),
        "{}",
        error.data
    );
    let restarted = app.next_event("plugin.restarted").await;
    let recovery = crashed_at.elapsed();
    assert_eq!(restarted.data["plugin"], "crashy");
    assert_eq!(restarted.data["generation"], 2);
    assert_eq!(restarted.data["restarts"], 1);
    eprintln!("crash -> running again: {recovery:?} (backoff min 10 ms)");

    // Fresh state and a new instance for the crashed plugin; the sibling kept both.
    let after = ping(&mut app, 2).await;
    assert_ne!(after["crashy"].0, before["crashy"].0, "a new instance");
    assert_eq!(after["crashy"].1, 1, "state starts over");
    assert_eq!(
        after["steady"],
        (before["steady"].0, 2),
        "sibling untouched"
    );
    assert_eq!(
        rec.with_prefix("init:")
            .iter()
            .filter(|p| *p == "steady")
            .count(),
        1
    );

    let (_, health) = app.get("/health").await;
    let check = &health["checks"]["actor:root/plugins/crashy"][0];
    assert_eq!(check["state"], "running");
    assert_eq!(check["generation"], 2);
    assert_eq!(check["restarts"], 1);
    assert!(check["lastError"]["message"]
        .as_str()
        .unwrap()
        .contains("panic on demand"));
    assert_eq!(
        health["checks"]["actor:root/plugins/steady"][0]["generation"],
        1
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_crash_looping_plugin_is_parked_as_failed_and_health_shows_it() {
    let rec = Recorder::new();
    let plugins = vec![
        fault_plugin("loopy", Fault::PanicOnDemand, rec.clone()),
        fault_plugin("steady", Fault::Ok, rec.clone()),
    ];
    let env = [("SWITCHYARD__SUPERVISOR__RESTART_INTENSITY", "2")];
    let mut app = TestApp::spawn(&env, plugins, rec.clone()).await;
    for round in 1..=2 {
        app.publish(PANIC_EVENT, json!({ "plugin": "loopy" }));
        let restarted = app.next_event("plugin.restarted").await;
        assert_eq!(restarted.data["restarts"], round);
    }
    app.publish(PANIC_EVENT, json!({ "plugin": "loopy" }));
    let failed = app.next_event("plugin.failed").await;
    assert_eq!(failed.data["plugin"], "loopy");
    assert_eq!(failed.data["restarts"], 2);
    assert!(failed.data["lastError"]
        .as_str()
        .unwrap()
        .contains("panic on demand"));

    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "an optional plugin never fails the service");
    assert_eq!(health["status"], "warn");
    let check = &health["checks"]["actor:root/plugins/loopy"][0];
    assert_eq!(check["state"], "failed");
    assert_eq!(check["status"], "warn");
    assert!(health["output"]
        .as_str()
        .unwrap()
        .contains("root/plugins/loopy is failed"));
    assert_eq!(
        health["checks"]["actor:root/plugins/steady"][0]["state"],
        "running"
    );
    // The rest keeps working.
    let pongs = ping(&mut app, 1).await;
    assert!(pongs.contains_key("steady"));
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[actix_web::test]
async fn the_broker_is_restarted_and_keeps_its_subscribers() {
    let rec = Recorder::new();
    let plugins = vec![fault_plugin("listener", Fault::Ok, rec.clone())];
    let mut app = TestApp::spawn(&[], plugins, rec.clone()).await;
    assert_eq!(ping(&mut app, 1).await["listener"].1, 1);

    app.broker.crash();
    // rest_for_one at the root: the plugins supervisor (started after the broker) comes back too.
    eventually("the broker runs again (generation 2)", || {
        let health = app.health.clone();
        async move {
            health
                .get("root/broker")
                .is_some_and(|r| r.generation == 2 && r.state.as_str() == "running")
                && health
                    .get("root/plugins/listener")
                    .is_some_and(|r| r.state.as_str() == "running")
        }
    })
    .await;
    let (_, health) = app.get("/health").await;
    let broker = &health["checks"]["actor:root/broker"][0];
    assert_eq!(broker["restarts"], 1);
    assert!(broker["lastError"]["message"]
        .as_str()
        .unwrap()
        .contains("broker crash requested"));
    assert_eq!(health["checks"]["actor:root/plugins"][0]["generation"], 2);

    // The test's own subscription and the restarted plugin both hear events again.
    let pongs = ping(&mut app, 1).await;
    assert_eq!(
        pongs["listener"].1, 1,
        "the plugin was restarted with the tree"
    );
    app.stop().await;
}

//! Several instances on one NATS server (Debian's `nats-server`, started here on a free
//! loopback port; `.ci/run` installs it): events published on one reach every instance once,
//! with their origin; local events stay local; a lost NATS degrades to local delivery with a
//! `/health` warning and the link comes back by itself.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use switchyard::broker::Event;

use crate::common::{eventually, Dirs, TestApp};

/// A `nats-server` on loopback, killed on drop.
pub struct Nats {
    child: Child,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Nats {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Nats::on(port)
    }

    /// A server on `port` (again, after [`Nats::kill`]).
    pub fn on(port: u16) -> Nats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "nats-server is required (Debian's `nats-server` package; .ci/run installs it)",
            );
        let nats = Nats { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An instance named `name` on `nats`.
pub async fn instance(name: &str, nats_url: &str) -> TestApp {
    TestApp::spawn_in(
        Dirs::new(),
        &[
            ("SWITCHYARD__BROKER__NATS_URL", nats_url),
            ("SWITCHYARD__SERVER__INSTANCE_ID", name),
        ],
        vec![],
    )
    .await
}

/// Events called `name` that `app` received within `wait`, without blocking longer.
async fn received(app: &mut TestApp, name: &str, wait: Duration) -> Vec<Arc<Event>> {
    tokio::time::sleep(wait).await;
    let mut out = Vec::new();
    while let Some(event) = app.events_try_recv() {
        if event.event == name {
            out.push(event);
        }
    }
    out
}

/// Publishes probes on `from` until `to` sees one: both ends' subscriptions are in place.
async fn linked(from: &TestApp, to: &mut TestApp) {
    for n in 0..100 {
        from.publish("test.probe", json!({ "n": n }));
        if !received(to, "test.probe", Duration::from_millis(50))
            .await
            .is_empty()
        {
            return;
        }
    }
    panic!("events never went from one instance to the other");
}

async fn health(app: &TestApp) -> Value {
    app.get("/health").await.1
}

#[actix_web::test]
async fn events_published_on_one_instance_reach_every_instance_once_with_their_origin() {
    let nats = Nats::start();
    let a = instance("gw-a", &nats.url()).await;
    let mut b = instance("gw-b", &nats.url()).await;
    let mut c = TestApp::spawn_in(
        Dirs::new(),
        &[
            ("SWITCHYARD__BROKER__NATS_URL", &nats.url()),
            ("SWITCHYARD__SERVER__INSTANCE_ID", "gw-c"),
        ],
        vec![switchyard::test_util::noop_connector("probe")],
    )
    .await;
    linked(&a, &mut b).await;
    linked(&a, &mut c).await;
    let mut a = a;
    received(&mut a, "test.probe", Duration::ZERO).await;

    let (status, sent) = a
        .post_json(
            "/api/events",
            json!({ "event": "ops.note", "data": { "text": "deploy" } }),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["origin"], "gw-a", "{sent}");
    for (name, app) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let got = received(app, "ops.note", Duration::from_millis(300)).await;
        assert_eq!(got.len(), 1, "instance {name} got {got:?}");
        assert_eq!(got[0].data, json!({ "text": "deploy" }));
        assert_eq!(got[0].origin.as_deref(), Some("gw-a"));
    }

    // A local event stays where it was published.
    let (status, _) = a
        .post_json(
            "/api/events",
            json!({ "event": "ops.local", "data": {}, "local": true }),
        )
        .await;
    assert_eq!(status, 202);
    a.publish("ops.after", json!({}));
    assert_eq!(
        received(&mut b, "ops.after", Duration::from_millis(300))
            .await
            .len(),
        1
    );
    assert!(received(&mut b, "ops.local", Duration::ZERO)
        .await
        .is_empty());
    assert_eq!(received(&mut a, "ops.local", Duration::ZERO).await.len(), 1);

    // Host events travel too: an operator restarts a plugin on c, b sees it start again.
    let (status, body) = c.post("/api/plugins/probe/restart").await;
    assert_eq!(status, 200, "{body}");
    let started = received(&mut b, "plugin.started", Duration::from_millis(300)).await;
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].data["plugin"], "probe");
    assert_eq!(started[0].origin.as_deref(), Some("gw-c"));
    // Each instance's /health shows the link.
    let link = &health(&b).await["checks"]["broker:cluster"][0];
    assert_eq!(link["status"], "pass", "{link}");
    assert_eq!(link["observedValue"]["state"], "connected", "{link}");
    assert!(
        link["observedValue"]["received"].as_u64().unwrap() >= 2,
        "{link}"
    );
    assert!(
        link["observedValue"]["forwarded"].as_u64().is_some(),
        "{link}"
    );
    for app in [a, b, c] {
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_lost_nats_degrades_to_local_delivery_with_a_health_warning_and_reconnects() {
    let nats = Nats::start();
    let url = nats.url();
    let mut a = instance("gw-a", &url).await;
    let mut b = instance("gw-b", &url).await;
    linked(&a, &mut b).await;
    assert_eq!(health(&a).await["status"], "pass");

    let port = nats.kill();
    eventually("a warns that NATS is gone", || async {
        health(&a).await["checks"]["broker:cluster"][0]["status"] == "warn"
    })
    .await;
    let report = health(&a).await;
    assert_eq!(report["status"], "warn", "{report}");
    assert_eq!(
        report["checks"]["broker:cluster"][0]["observedValue"]["state"], "disconnected",
        "{report}"
    );
    // Local delivery goes on; nothing reaches the other instance, nothing is queued for later.
    a.publish("ops.offline", json!({}));
    assert_eq!(
        received(&mut a, "ops.offline", Duration::from_millis(200))
            .await
            .len(),
        1
    );

    let _nats = Nats::on(port);
    eventually("a reconnects", || async {
        health(&a).await["checks"]["broker:cluster"][0]["status"] == "pass"
    })
    .await;
    linked(&a, &mut b).await;
    assert!(
        received(&mut b, "ops.offline", Duration::ZERO)
            .await
            .is_empty(),
        "an event published while NATS was down arrived late"
    );
    let link = &health(&a).await["checks"]["broker:cluster"][0]["observedValue"];
    assert!(link["notForwarded"].as_u64().unwrap() >= 1, "{link}");
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn an_unreachable_nats_at_start_is_no_reason_not_to_start() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut app = instance("gw-alone", &format!("nats://127.0.0.1:{port}")).await;
    let report = health(&app).await;
    assert_eq!(report["status"], "warn", "{report}");
    let link = &report["checks"]["broker:cluster"][0];
    assert_eq!(
        link["observedValue"]["url"],
        format!("nats://127.0.0.1:{port}")
    );
    assert_ne!(link["observedValue"]["state"], "connected");
    // Its own subscribers still get its events.
    app.publish("ops.alone", json!({}));
    let got = received(&mut app, "ops.alone", Duration::from_millis(200)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].origin.as_deref(), Some("gw-alone"));
    app.stop().await;
}

// ---- Plugin actions and states across instances (plugin::cluster) --------------------------

/// A script plugin at `version`, written into an instance's own plugin directory.
fn kit(version: &str) -> String {
    format!(
        r#"import {{ PluginLoader }} from "./loader";
PluginLoader.register({{
  id: "kit", name: "kit", description: "cluster test plugin", version: "{version}",
  compatibleConnectors: ["HTTP_REST"],
  beforeSend(message, metadata) {{ return {{ message, metadata }}; }},
}});
"#
    )
}

/// Heartbeats every 200 ms, so a silent instance is stale after 600 ms.
const BEAT_MS: &str = "200";

/// Instance `name` on `nats` with its own `dirs` and native `plugins`.
async fn member(
    name: &str,
    nats: &Nats,
    dirs: Arc<Dirs>,
    plugins: Vec<switchyard::plugin::PluginFactory>,
) -> TestApp {
    TestApp::spawn_in(
        dirs,
        &[
            ("SWITCHYARD__BROKER__NATS_URL", &nats.url()),
            ("SWITCHYARD__SERVER__INSTANCE_ID", name),
            ("SWITCHYARD__BROKER__CLUSTER_HEARTBEAT_MS", BEAT_MS),
        ],
        plugins,
    )
    .await
}

/// Plugin `id` as `app` lists it in `GET /api/plugins`.
async fn listed(app: &TestApp, id: &str) -> Value {
    let (status, list) = app.get("/api/plugins").await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no plugin {id} in {list}"))
}

/// Waits until `app` hears every one of `names` (live) about plugin `id`.
async fn hears(app: &TestApp, id: &str, names: &[&str]) {
    eventually("every instance is heard", || async {
        let plugin = listed(app, id).await;
        names
            .iter()
            .all(|n| plugin["instances"][n]["stale"] == false)
    })
    .await;
}

#[actix_web::test]
async fn a_plugin_action_on_one_instance_applies_on_every_instance() {
    let nats = Nats::start();
    let dirs: Vec<Arc<Dirs>> = (0..3).map(|_| Dirs::new()).collect();
    for d in &dirs {
        d.write("kit", "index.js", &kit("1.0.0"));
    }
    let a = member("gw-a", &nats, dirs[0].clone(), vec![]).await;
    let b = member("gw-b", &nats, dirs[1].clone(), vec![]).await;
    let c = member("gw-c", &nats, dirs[2].clone(), vec![]).await;
    for app in [&a, &b, &c] {
        hears(app, "kit", &["gw-a", "gw-b", "gw-c"]).await;
    }

    // Disable on a: done on a, b and c, each answering.
    let (status, body) = a.post("/api/plugins/kit/disable").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["state"], "disabled", "{body}");
    assert_eq!(
        body["cluster"],
        json!([
            { "instance": "gw-b", "ok": true, "state": "disabled", "pending": false },
            { "instance": "gw-c", "ok": true, "state": "disabled", "pending": false },
        ]),
        "{body}"
    );
    for app in [&b, &c] {
        assert_eq!(listed(app, "kit").await["state"], "disabled");
    }
    // c shows the plugin on all three instances.
    eventually("c sees it disabled everywhere", || async {
        let kit = listed(&c, "kit").await;
        ["gw-a", "gw-b", "gw-c"]
            .iter()
            .all(|n| kit["instances"][n]["state"] == "disabled")
    })
    .await;
    let shown = listed(&c, "kit").await["instances"].clone();
    assert_eq!(shown.as_object().unwrap().len(), 3, "{shown}");
    assert_eq!(shown["gw-a"]["version"], "1.0.0", "{shown}");
    assert!(shown["gw-a"]["lastSeen"].as_str().unwrap().ends_with('Z'));

    // Enable back, from a.
    let (status, body) = a.post("/api/plugins/kit/enable").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["cluster"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true && r["state"] == "running"),
        "{body}"
    );
    for app in [&a, &b, &c] {
        assert_eq!(listed(app, "kit").await["state"], "running");
    }

    // Reload on b: every instance reads its own files again.
    for d in &dirs {
        d.write("kit", "index.js", &kit("2.0.0"));
    }
    let (status, body) = b.post("/api/plugins/kit/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reload"]["newVersion"], "2.0.0", "{body}");
    let answered: Vec<&str> = body["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ok"] == true)
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert_eq!(answered, ["gw-a", "gw-c"], "{body}");
    for app in [&a, &c] {
        assert_eq!(listed(app, "kit").await["version"], "2.0.0");
    }

    // Disabled on every instance stays disabled when one restarts: each remembers it.
    let (status, body) = c.post("/api/plugins/kit/disable").await;
    assert_eq!(status, 200, "{body}");
    b.stop().await;
    let b = TestApp::spawn_in(dirs[1].clone(), &[], vec![]).await;
    let kit = listed(&b, "kit").await;
    assert_eq!(kit["state"], "disabled", "{kit}");
    // Alone (no NATS): exactly as before, no `instances`.
    assert!(kit.get("instances").is_none(), "{kit}");
    for app in [a, b, c] {
        app.stop().await;
    }
}

#[actix_web::test]
async fn an_instance_without_the_plugin_answers_its_error_and_a_dead_one_goes_stale() {
    let nats = Nats::start();
    let probe = || vec![switchyard::test_util::noop_connector("probe")];
    let a = member("gw-a", &nats, Dirs::new(), probe()).await;
    let b = member("gw-b", &nats, Dirs::new(), probe()).await;
    let c = member("gw-c", &nats, Dirs::new(), vec![]).await;
    hears(&a, "probe", &["gw-a", "gw-b", "gw-c"]).await;
    assert_eq!(
        listed(&a, "probe").await["instances"]["gw-c"]["state"],
        "absent"
    );

    let (status, body) = a.post("/api/plugins/probe/restart").await;
    assert_eq!(status, 200, "{body}");
    let cluster = body["cluster"].as_array().unwrap();
    assert_eq!(cluster.len(), 2, "{body}");
    assert_eq!(cluster[0]["instance"], "gw-b");
    assert_eq!(cluster[0]["ok"], true, "{body}");
    assert_eq!(cluster[0]["state"], "running", "{body}");
    assert_eq!(cluster[1]["instance"], "gw-c");
    assert_eq!(cluster[1]["ok"], false, "{body}");
    assert_eq!(cluster[1]["pending"], false, "{body}");
    assert_eq!(cluster[1]["state"], Value::Null, "{body}");
    assert!(
        cluster[1]["error"].as_str().unwrap().contains("probe"),
        "{body}"
    );
    // c answered and is still fine.
    assert_eq!(c.get("/livez").await.0, 200);

    // b goes away: a shows it stale after three missed beats, with when it was last heard.
    b.stop().await;
    eventually("b shows as stale on a", || async {
        listed(&a, "probe").await["instances"]["gw-b"]["stale"] == true
    })
    .await;
    let shown = listed(&a, "probe").await["instances"].clone();
    assert_eq!(shown["gw-a"]["stale"], false, "{shown}");
    assert_eq!(shown["gw-c"]["stale"], false, "{shown}");
    assert!(shown["gw-b"]["lastSeen"].as_str().is_some(), "{shown}");
    // A stale instance is not waited for.
    let began = std::time::Instant::now();
    let (status, body) = a.post("/api/plugins/probe/restart").await;
    assert_eq!(status, 200, "{body}");
    assert!(began.elapsed() < Duration::from_secs(2), "{body}");
    assert_eq!(body["cluster"].as_array().unwrap().len(), 1, "{body}");
    a.stop().await;
    c.stop().await;
}

// ---- Shared configuration across instances (app::sync) ----------------------------------

/// Instance `name` on PostgreSQL `url` and NATS `nats_url`, reloading everything from the
/// store every `reconcile_ms` (0: only on change and on reconnect).
async fn on_store(name: &str, url: &str, nats_url: &str, reconcile_ms: &str) -> TestApp {
    let dirs = Dirs::new();
    dirs.write("kit", "index.js", &kit("1.0.0"));
    TestApp::spawn_in(
        dirs,
        &[
            ("SWITCHYARD__BROKER__NATS_URL", nats_url),
            ("SWITCHYARD__SERVER__INSTANCE_ID", name),
            ("SWITCHYARD__BROKER__CLUSTER_HEARTBEAT_MS", BEAT_MS),
            ("SWITCHYARD__BROKER__CONFIG_RECONCILE_MS", reconcile_ms),
            ("SWITCHYARD__STORE__URL", url),
            ("SWITCHYARD_SECRET_KEY", &"ab".repeat(32)),
        ],
        vec![],
    )
    .await
}

/// `GET /v1/models` on `app` with virtual key `key`: its status.
async fn with_key(app: &TestApp, key: &str) -> u16 {
    app.client()
        .get(app.url("/v1/models"))
        .insert_header(("authorization", format!("Bearer {key}")))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Waits (at most `bound`) until `check` holds; answers how long it took.
async fn within<F, Fut>(what: &str, bound: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let began = std::time::Instant::now();
    while !check().await {
        assert!(began.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    began.elapsed()
}

#[actix_web::test]
async fn targets_keys_model_routes_and_webhooks_changed_on_one_instance_apply_on_every_instance() {
    let nats = Nats::start();
    let url = crate::pg::database().await;
    // A and B only on change (no reconcile): what B sees came through cluster.config.changed.
    let a = on_store("gw-a", &url, &nats.url(), "0").await;
    let mut b = on_store("gw-b", &url, &nats.url(), "0").await;
    linked(&a, &mut b).await;
    // C never reaches NATS (a closed port): it misses every event and converges by
    // reconciling every 300 ms.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = on_store("gw-c", &url, &format!("nats://127.0.0.1:{closed}"), "300").await;
    let live = Duration::from_secs(2);
    let reconcile = Duration::from_secs(3);

    // An API key made on A works on B and C; revoked on A, it stops working on both.
    let (status, created) = a.post_json("/api/keys", json!({ "name": "shared" })).await;
    assert_eq!(status, 201, "{created}");
    let (text, key_id) = (
        created["key"].as_str().unwrap().to_string(),
        created["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(with_key(&a, &text).await, 200);
    within("B takes the new key", live, || async {
        with_key(&b, &text).await == 200
    })
    .await;
    within("C takes the new key", reconcile, || async {
        with_key(&c, &text).await == 200
    })
    .await;
    let (status, _) = a.delete(&format!("/api/keys/{key_id}")).await;
    assert_eq!(status, 200);
    let on_b = within("B refuses the revoked key", live, || async {
        with_key(&b, &text).await == 401
    })
    .await;
    let on_c = within("C refuses the revoked key", reconcile, || async {
        with_key(&c, &text).await == 401
    })
    .await;
    eprintln!("revoked key refused: on B after {on_b:?} (event), on C after {on_c:?} (reconcile)");

    // A target: created, changed and deleted on A, the same on B and C.
    let target = json!({
        "id": "shared-t", "name": "T", "connectorType": "HTTP_REST",
        "endpoint": "http://127.0.0.1:9/v1",
        "requestTemplate": { "messagePath": "message" },
        "responseTemplate": { "responsePath": "content" }
    });
    let (status, body) = a.post_json("/api/targets", target.clone()).await;
    assert_eq!(status, 201, "{body}");
    for (gw, bound) in [(&b, live), (&c, reconcile)] {
        within("the target arrives", bound, || async {
            gw.get("/api/targets/shared-t").await.1["name"] == "T"
        })
        .await;
    }
    let mut changed = target.clone();
    changed["name"] = json!("T2");
    let resp = a
        .client()
        .put(a.url("/api/targets/shared-t"))
        .send_json(&changed)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for (gw, bound) in [(&b, live), (&c, reconcile)] {
        within("the change arrives", bound, || async {
            gw.get("/api/targets/shared-t").await.1["name"] == "T2"
        })
        .await;
    }

    // A model route on that target, and a webhook.
    let (status, body) = a
        .post_json(
            "/api/models",
            json!({ "name": "shared-m", "target": "shared-t" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, hook) = a
        .post_json(
            "/api/webhooks",
            json!({ "url": "http://127.0.0.1:9/hook", "events": ["session.created"] }),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_string();
    for (gw, bound) in [(&b, live), (&c, reconcile)] {
        within("the route arrives", bound, || async {
            gw.get("/api/models/shared-m").await.0 == 200
        })
        .await;
        within("the webhook arrives", bound, || async {
            gw.get(&format!("/api/webhooks/{hook_id}")).await.0 == 200
        })
        .await;
    }

    // Deleted on A: gone everywhere (the route first: it names the target).
    assert_eq!(a.delete("/api/models/shared-m").await.0, 200);
    assert_eq!(a.delete(&format!("/api/webhooks/{hook_id}")).await.0, 200);
    assert_eq!(a.delete("/api/targets/shared-t").await.0, 200);
    for (gw, bound) in [(&b, live), (&c, reconcile)] {
        within("the deletes arrive", bound, || async {
            gw.get("/api/models/shared-m").await.0 == 404
                && gw.get(&format!("/api/webhooks/{hook_id}")).await.0 == 404
                && gw.get("/api/targets/shared-t").await.0 == 404
        })
        .await;
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[actix_web::test]
async fn a_keys_rate_is_shared_by_the_live_instances() {
    let nats = Nats::start();
    let url = crate::pg::database().await;
    let provider = crate::frontdoor::MockProvider::start();
    let a = on_store("gw-a", &url, &nats.url(), "0").await;
    let b = on_store("gw-b", &url, &nats.url(), "0").await;
    // Each hears the other (the live instances a key's rate is shared by), and the config
    // sync has looked at its peers since (once a second).
    hears(&a, "kit", &["gw-b"]).await;
    hears(&b, "kit", &["gw-a"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = a
        .post_json(
            "/api/models",
            json!({ "name": "m", "inference": { "provider": "openai", "modelId": "m", "endpoint": provider.endpoint() } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, created) = a
        .post_json(
            "/api/keys",
            json!({ "name": "rated", "requestsPerMinute": 4 }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let text = created["key"].as_str().unwrap().to_string();
    let chat = |app: &TestApp| {
        let req = app
            .client()
            .post(app.url("/v1/chat/completions"))
            .insert_header(("authorization", format!("Bearer {text}")));
        async move {
            req.send_json(
                &json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] }),
            )
            .await
            .expect("request")
            .status()
            .as_u16()
        }
    };
    within(
        "B takes the route and the key",
        Duration::from_secs(3),
        || async { chat(&b).await == 200 },
    )
    .await;
    // 4 a minute across two live instances: 2 each. B spent one already.
    assert_eq!(chat(&b).await, 200);
    assert_eq!(chat(&b).await, 429, "B's share is spent");
    assert_eq!(chat(&a).await, 200);
    assert_eq!(chat(&a).await, 200);
    assert_eq!(chat(&a).await, 429, "A's share is spent: 4 in all, not 8");
    a.stop().await;
    b.stop().await;
    provider.stop().await;
}

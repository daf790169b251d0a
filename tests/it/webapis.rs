//! The web-platform globals from a real script plugin: fetch (through the gateway's client,
//! under the plugin's policy: refused hosts, size caps, timeouts, aborts), timers (that die
//! with their plugin on reload), TextEncoder/Decoder, URL, structuredClone, crypto, atob/btoa,
//! queueMicrotask. Each is exercised by a route of the plugin and checked here.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;

const WEB: &str = r#"
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const failure = (e) => ({ name: e.name, code: e.code ?? (e.cause && e.cause.code) ?? null, message: String(e.message) });

export default {
  name: "web", version: "1.0.0",
  init(ctx) {
    ctx.app.get("/basics", async (req, res) => {
      const out = {};
      const bytes = new TextEncoder().encode("héllo €");
      out.encoded = bytes.length;
      out.decoded = new TextDecoder().decode(bytes);
      out.lenient = new TextDecoder().decode(new Uint8Array([0x61, 0xff, 0x62]));
      const url = new URL("../b?x=1#h", "https://user:pw@a.test:8443/p/q");
      url.searchParams.append("y", "two words");
      out.url = [url.href, url.origin, url.hostname, url.port, url.pathname];
      out.search = new URLSearchParams({ q: "a b&c", n: "1" }).toString();
      out.getAll = new URLSearchParams("a=1&b=2&a=3").getAll("a");
      out.base64 = [btoa("hi!"), atob(btoa("hi!"))];
      const graph = { when: new Date(0), tags: new Set(["a"]), map: new Map([[1, { deep: [1, 2] }]]) };
      graph.self = graph;
      const copy = structuredClone(graph);
      out.clone = [copy !== graph, copy.self === copy, copy.when instanceof Date, copy.tags.has("a"), copy.map.get(1).deep[1]];
      try { structuredClone({ f() {} }); out.cloneFn = "cloned"; } catch (e) { out.cloneFn = e.name; }
      out.uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID());
      const random = crypto.getRandomValues(new Uint8Array(32));
      out.random = random.some((b) => b !== 0);
      out.sha256 = hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc")));
      const request = new Request("https://a.test/x", { method: "post", body: "hi", headers: { "X-A": "1" } });
      out.request = [request.method, await request.text(), request.headers.get("x-a"), request.bodyUsed];
      try { new Request("https://a.test/", { method: "GET", body: "no" }); out.getWithBody = "accepted"; } catch (e) { out.getWithBody = e.name; }
      const made = Response.json({ a: 1 }, { status: 201, headers: new Headers([["x-b", "2"]]) });
      out.response = [made.status, made.headers.get("content-type"), (await made.clone().json()).a, made.headers.get("X-B")];
      const order = [];
      queueMicrotask(() => order.push("microtask"));
      order.push("sync");
      await Promise.resolve();
      out.microtask = order;
      res.json(out);
    });

    ctx.app.get("/timers", async (req, res) => {
      const order = [];
      const done = new Promise((resolve) => {
        setTimeout(() => order.push("late"), 60);
        setTimeout(() => order.push("early"), 10);
        const cancelled = setTimeout(() => order.push("cancelled"), 20);
        clearTimeout(cancelled);
        let ticks = 0;
        const interval = setInterval(() => {
          ticks += 1;
          if (ticks === 3) { clearInterval(interval); order.push("interval x3"); }
        }, 5);
        setTimeout(resolve, 120, "value");
      });
      const started = Date.now();
      const value = await done;
      res.json({ order, value, waitedMs: Date.now() - started });
    });

    ctx.app.post("/fetch", async (req, res) => {
      const { url, init, abortAfterMs } = req.body;
      const options = { ...(init || {}) };
      if (abortAfterMs) options.signal = AbortSignal.timeout(abortAfterMs);
      try {
        const response = await fetch(url, options);
        const text = await response.text();
        res.json({ ok: response.ok, status: response.status, contentType: response.headers.get("content-type"),
                   body: text.startsWith("{") ? JSON.parse(text) : text, used: response.bodyUsed });
      } catch (e) {
        res.json({ error: failure(e) });
      }
    });

    ctx.app.get("/burst", async (req, res) => {
      const all = await Promise.allSettled([1, 2, 3].map(() => fetch(req.query.url)));
      res.json(all.map((r) => (r.status === "fulfilled" ? r.value.status : r.reason.code)));
    });

    ctx.app.get("/flood", async (req, res) => {
      const ids = [];
      for (let i = 0; i < 50; i++) ids.push(setTimeout(() => {}, 1e9));
      let over;
      try { await fetch(req.query.url); over = "fetched"; } catch (e) { over = failure(e); }
      ids.forEach(clearTimeout);
      const after = await fetch(req.query.url).then((r) => r.status, (e) => failure(e));
      res.json({ over, after });
    });

    ctx.app.get("/aborted", async (req, res) => {
      const controller = new AbortController();
      const pending = fetch(req.query.url, { signal: controller.signal });
      controller.abort();
      try { await pending; res.json({ aborted: false }); } catch (e) { res.json({ error: failure(e) }); }
    });
  },
};
"#;

async fn fetch(app: &TestApp, body: Value) -> Value {
    let (status, reply) = app.post_json("/plugins/web/fetch", body).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[actix_web::test]
async fn a_script_plugin_has_the_web_platform_globals() {
    let dirs = Dirs::new();
    dirs.write("web", "index.js", WEB);
    let app = TestApp::spawn_in(dirs, &[], vec![]).await;

    let (status, out) = app.get("/plugins/web/basics").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["encoded"], 10);
    assert_eq!(out["decoded"], "héllo €");
    assert_eq!(out["lenient"], "a\u{fffd}b");
    assert_eq!(
        out["url"],
        json!([
            "https://user:pw@a.test:8443/b?x=1&y=two+words#h",
            "https://a.test:8443",
            "a.test",
            "8443",
            "/b"
        ])
    );
    assert_eq!(out["search"], "q=a+b%26c&n=1");
    assert_eq!(out["getAll"], json!(["1", "3"]));
    assert_eq!(out["base64"], json!(["aGkh", "hi!"]));
    assert_eq!(out["clone"], json!([true, true, true, true, 2]));
    assert_eq!(out["cloneFn"], "DataCloneError");
    assert_eq!(out["uuid"], true);
    assert_eq!(out["random"], true);
    assert_eq!(
        out["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(out["microtask"], json!(["sync", "microtask"]));
    assert_eq!(out["request"], json!(["POST", "hi", "1", true]));
    assert_eq!(out["getWithBody"], "TypeError");
    assert_eq!(out["response"], json!([201, "application/json", 1, "2"]));

    let (status, timers) = app.get("/plugins/web/timers").await;
    assert_eq!(status, 200, "{timers}");
    assert_eq!(
        timers["order"],
        json!(["early", "interval x3", "late"]),
        "{timers}"
    );
    assert_eq!(timers["value"], "value");
    assert!(timers["waitedMs"].as_u64().unwrap() >= 100, "{timers}");
    app.stop().await;
}

#[actix_web::test]
async fn fetch_goes_through_the_gateway_under_the_plugins_policy() {
    let mock = MockUpstream::start().await;
    let port = mock.base.rsplit(':').next().unwrap().to_string();
    let allowed = format!(r#"["127.0.0.1:{port}"]"#);
    let dirs = Dirs::new();
    dirs.write("web", "index.js", WEB);
    let app = TestApp::spawn_in(
        dirs,
        &[
            (
                "SWITCHYARD__PLUGINS__SCRIPT__FETCH_ALLOWED_HOSTS",
                allowed.as_str(),
            ),
            ("SWITCHYARD__PLUGINS__SCRIPT__FETCH_TIMEOUT_MS", "1500"),
            (
                "SWITCHYARD__PLUGINS__SCRIPT__FETCH_MAX_RESPONSE_BYTES",
                "100",
            ),
            ("SWITCHYARD__PLUGINS__SCRIPT__FETCH_MAX_CONCURRENT", "2"),
            ("SWITCHYARD__PLUGINS__SCRIPT__MAX_HOST_CALLS", "50"),
            // Waiting on the network must not spend the JS time budget.
            ("SWITCHYARD__PLUGINS__SCRIPT__CALL_TIMEOUT_MS", "200"),
        ],
        vec![],
    )
    .await;

    // A JSON POST reaches the upstream with its body and headers; the answer is read.
    let ok = fetch(
        &app,
        json!({ "url": mock.url("/slow/600"), "init": { "method": "POST",
            "headers": { "content-type": "application/json", "x-probe": "1" },
            "body": "{\"message\":\"ping\"}" } }),
    )
    .await;
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["body"]["reply"], "slow: ping", "{ok}");
    assert_eq!(ok["used"], true);
    let seen = &mock.requests("/slow/600")[0];
    assert_eq!(seen.header("x-probe"), Some("1"));
    assert_eq!(seen.body["message"], "ping");

    // A status the upstream chose is a response, not an error.
    let missing = fetch(&app, json!({ "url": mock.url("/nowhere") })).await;
    assert_eq!(
        (missing["ok"].as_bool(), missing["status"].as_u64()),
        (Some(false), Some(404))
    );

    // Refused host (localhost is not 127.0.0.1 to the policy), non-http scheme.
    let refused = fetch(&app, json!({ "url": format!("http://localhost:{port}/") })).await;
    assert_eq!(refused["error"]["code"], "fetch_refused", "{refused}");
    assert_eq!(refused["error"]["name"], "TypeError");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'localhost'"));
    let scheme = fetch(&app, json!({ "url": "file:///etc/passwd" })).await;
    assert_eq!(scheme["error"]["code"], "fetch_refused", "{scheme}");

    // Response size cap.
    let big = fetch(
        &app,
        json!({ "url": mock.url("/openai"), "init": { "method": "POST", "body": "{}" } }),
    )
    .await;
    assert_eq!(big["error"]["code"], "fetch_too_large", "{big}");

    // The policy's timeout, and the script's own AbortSignal.timeout.
    let slow = fetch(&app, json!({ "url": mock.url("/slow/4000") })).await;
    assert_eq!(slow["error"]["code"], "fetch_timeout", "{slow}");
    let aborted = fetch(
        &app,
        json!({ "url": mock.url("/slow/4000"), "abortAfterMs": 100 }),
    )
    .await;
    assert_eq!(aborted["error"]["name"], "TimeoutError", "{aborted}");
    let (_, cancelled) = app
        .get(&format!(
            "/plugins/web/aborted?url={}",
            mock.url("/slow/4000")
        ))
        .await;
    assert_eq!(cancelled["error"]["name"], "AbortError", "{cancelled}");

    // The concurrency cap: the third of three fetches at once is refused straight away.
    let (_, burst) = app
        .get(&format!("/plugins/web/burst?url={}", mock.url("/slow/300")))
        .await;
    assert_eq!(burst, json!([200, 200, "fetch_busy"]));

    // Host calls live outside the engine's memory limit, so they are capped per plugin: with
    // 50 timers pending (the cap here), a fetch is refused at once; once they are cleared it works.
    let (status, flood) = app
        .get(&format!("/plugins/web/flood?url={}", mock.url("/")))
        .await;
    assert_eq!(status, 200, "{flood}");
    assert_eq!(flood["over"]["code"], "too_many_host_calls", "{flood}");
    assert_eq!(flood["after"], 200, "{flood}");

    // Every call is counted for the plugin.
    let (_, web) = app.get("/api/plugins/web").await;
    let counts = &web["script"]["fetch"];
    assert!(counts["calls"].as_u64().unwrap() >= 6, "{counts}");
    assert!(counts["refused"].as_u64().unwrap() >= 3, "{counts}");
    assert!(counts["failed"].as_u64().unwrap() >= 1, "{counts}");
    app.stop().await;
    mock.stop().await;
}

fn ticker(version: &str) -> String {
    format!(
        r#"let bus;
export default {{
  name: "ticker", version: "{version}",
  init(ctx) {{ bus = ctx.getEventBus(); }},
  start() {{ setInterval(() => bus.emit("test.tick", {{ version: "{version}" }}), 20); }},
}};
"#
    )
}

#[actix_web::test]
async fn a_plugins_timers_die_with_it_on_reload_and_unload() {
    let dirs = Dirs::new();
    dirs.write("ticker", "index.js", &ticker("1.0.0"));
    let mut app = TestApp::spawn_in(dirs.clone(), &[], vec![]).await;
    let tick = app.next_event("test.tick").await;
    assert_eq!(tick.data["version"], "1.0.0");

    dirs.write("ticker", "index.js", &ticker("2.0.0"));
    let (status, reply) = app.post("/api/plugins/ticker/reload").await;
    assert_eq!(status, 200, "{reply}");
    let _ = app.drain_events();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let versions: Vec<String> = app
        .drain_events()
        .into_iter()
        .filter(|(name, _)| name == "test.tick")
        .map(|(_, data)| data["version"].as_str().unwrap().to_string())
        .collect();
    assert!(versions.len() >= 3, "the new version ticks: {versions:?}");
    assert!(
        versions.iter().all(|v| v == "2.0.0"),
        "the old version's interval died with it: {versions:?}"
    );

    let (status, _) = app.delete("/api/plugins/ticker").await;
    assert_eq!(status, 200);
    let _ = app.drain_events();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !app.drain_events()
            .iter()
            .any(|(name, _)| name == "test.tick"),
        "an unloaded plugin's timers stop"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_call_its_caller_gave_up_on_is_dropped_by_the_plugin_too() {
    let dirs = Dirs::new();
    dirs.write(
        "stuck",
        "index.js",
        r#"export default { name: "stuck", version: "1.0.0", init(ctx) {
  setInterval(() => {}, 50);
  ctx.app.get("/never", () => new Promise(() => {}));
} };"#,
    );
    let app = TestApp::spawn_in(
        dirs,
        &[("SWITCHYARD__PLUGINS__CALL_TIMEOUT_MS", "300")],
        vec![],
    )
    .await;
    let waiting = || async {
        app.get("/api/plugins/stuck").await.1["script"]["waitingCalls"]
            .as_u64()
            .unwrap()
    };
    let request = app.get("/plugins/stuck/never");
    let (status, _) = request.await;
    assert!(
        status >= 500,
        "the caller gives up after its timeout: {status}"
    );
    // The plugin drops the call as well, instead of holding the pending promise for ever.
    crate::common::eventually("the abandoned call is dropped", || async {
        waiting().await == 0
    })
    .await;
    app.stop().await;
}

/// A server whose `/go` redirects to `to`.
fn redirector(to: String) -> (String, actix_web::dev::ServerHandle) {
    crate::mock::serve(move || {
        let to = to.clone();
        actix_web::App::new().route(
            "/go",
            actix_web::web::to(move || {
                let to = to.clone();
                async move {
                    actix_web::HttpResponse::Found()
                        .insert_header(("location", to))
                        .finish()
                }
            }),
        )
    })
}

#[actix_web::test]
async fn redirects_are_checked_hop_by_hop_and_keep_credentials_at_home() {
    let mock = MockUpstream::start().await;
    let (redirect, server) = redirector(mock.url("/chat"));
    let dirs = Dirs::new();
    dirs.write("web", "index.js", WEB);
    let app = TestApp::spawn_in(dirs, &[], vec![]).await;
    // Followed to another origin: the answer arrives, the credentials stay behind.
    let reply = fetch(
        &app,
        json!({ "url": format!("{redirect}/go"), "init": { "method": "POST", "body": "{\"message\":\"hop\"}",
            "headers": { "authorization": "Bearer home-only", "cookie": "s=1", "x-kept": "yes", "content-type": "application/json" } } }),
    )
    .await;
    assert_eq!(reply["status"], 200, "{reply}");
    let seen = mock.requests("/chat");
    let last = seen.last().unwrap();
    assert_eq!(last.header("x-kept"), Some("yes"));
    assert_eq!(last.header("authorization"), None);
    assert_eq!(last.header("cookie"), None);
    app.stop().await;

    // Each hop is checked against the policy: the first host is allowed, the second is not.
    let port = redirect.rsplit(':').next().unwrap().to_string();
    let allowed = format!(r#"["127.0.0.1:{port}"]"#);
    let dirs = Dirs::new();
    dirs.write("web", "index.js", WEB);
    let app = TestApp::spawn_in(
        dirs,
        &[(
            "SWITCHYARD__PLUGINS__SCRIPT__FETCH_ALLOWED_HOSTS",
            allowed.as_str(),
        )],
        vec![],
    )
    .await;
    let before = mock.requests("/chat").len();
    let refused = fetch(&app, json!({ "url": format!("{redirect}/go") })).await;
    assert_eq!(refused["error"]["code"], "fetch_refused", "{refused}");
    assert_eq!(
        mock.requests("/chat").len(),
        before,
        "the refused hop was never sent"
    );
    app.stop().await;
    server.stop(false).await;
    mock.stop().await;
}

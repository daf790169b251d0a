//! The operator dashboard (`/ui`): its files over plain HTTP (types, CSP, ETags, 404s, no
//! token needed), and the page itself in headless Chromium against the real service: the
//! supervision tree changing live when a plugin is restarted, disabled and enabled; a target
//! created through the form generated from a plugin's config schema (validation messages at
//! the fields); a session's streamed answer; the event log's filter; the admin token's login.
//! Each page is saved as a PNG under `target/ui-screenshots/`.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard::test_util::{fault_plugin, Fault, Recorder};

use crate::common::{Dirs, TestApp};
use crate::upstreams;
use crate::webdriver::Browser;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A script plugin whose config schema has one field of each of Krawall's types.
const GREETER: &str = r#"import { PluginLoader } from "./loader";
PluginLoader.register({
  id: "greeter", name: "Greeter", description: "Puts a greeting before each message.",
  version: "1.2.0", priority: 20, compatibleConnectors: ["HTTP_REST"],
  configSchema: [
    { key: "greeting", label: "Greeting", type: "string", required: true, description: "Said first." },
    { key: "repeat", label: "Repeat", type: "number", default: 1 },
    { key: "loud", label: "Loud", type: "boolean", default: false },
    { key: "tone", label: "Tone", type: "select", default: "warm",
      options: [{ label: "Warm", value: "warm" }, { label: "Dry", value: "dry" }] },
    { key: "extra", label: "Extra", type: "json", description: "Anything, as JSON." },
  ],
  async beforeSend(message, metadata, ctx) {
    return { message: ctx.pluginConfig.greeting + " " + message };
  },
});
"#;

fn header(headers: &awc::http::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[actix_web::test]
async fn the_dashboard_files_are_served_with_types_csp_and_etags_without_a_token() {
    let app = TestApp::spawn(
        &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")],
        vec![],
        Recorder::new(),
    )
    .await;
    let client = app.client();
    let mut paths: Vec<(String, &str)> = vec![
        ("/ui".into(), "text/html; charset=utf-8"),
        ("/ui/".into(), "text/html; charset=utf-8"),
    ];
    for (name, kind) in switchyard::api::ui::assets() {
        paths.push((format!("/ui/{name}"), kind));
    }
    let expected = [
        ("index.html", "text/html"),
        ("style.css", "text/css"),
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("metrics.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ];
    for (name, kind) in expected {
        assert!(
            paths
                .iter()
                .any(|(p, k)| p == &format!("/ui/{name}") && k.starts_with(kind)),
            "{name} is not served as {kind}"
        );
    }
    for (path, kind) in &paths {
        let mut response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(response.headers(), "content-type"), *kind, "{path}");
        assert_eq!(
            header(response.headers(), "content-security-policy"),
            CSP,
            "{path}"
        );
        assert_eq!(
            header(response.headers(), "x-content-type-options"),
            "nosniff"
        );
        assert_eq!(header(response.headers(), "cache-control"), "no-cache");
        let etag = header(response.headers(), "etag");
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: {etag:?}");
        assert!(!response.body().await.unwrap().is_empty(), "{path}");
        // The browser's copy is current: 304, no body, same tag.
        let mut again = client
            .get(app.url(path))
            .insert_header(("If-None-Match", etag.as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(header(again.headers(), "etag"), etag);
        assert!(again.body().await.unwrap().is_empty());
        let head = client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
    }
    // Every file the page loads is one of the assets (no CDN, nothing else).
    let html = String::from_utf8(
        client
            .get(app.url("/ui"))
            .send()
            .await
            .unwrap()
            .body()
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    for reference in html.split("=\"/ui/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            switchyard::api::ui::assets().any(|(n, _)| n == name),
            "index.html loads {name}, which is not embedded"
        );
    }
    assert!(
        !html.contains("://"),
        "index.html loads something from elsewhere"
    );

    for path in ["/ui/nope.js", "/ui/app.js/x", "/ui/../Cargo.toml"] {
        let mut response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "route_not_found", "{path}: {body}");
    }
    let mut response = client.post(app.url("/ui/app.js")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(header(response.headers(), "allow"), "GET, HEAD");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    // The API itself still needs the token.
    assert_eq!(app.get("/api/plugins").await.0, 401);
    app.stop().await;
}

/// Waits until the tree's node at `path` shows `state` (a data attribute kept in step with the
/// badge).
async fn wait_state(browser: &Browser, path: &str, state: &str) {
    browser
        .wait_until(
            &format!("{path} is {state}"),
            "const n = document.querySelector(`li.node[data-path=\"${arguments[0]}\"]`); \
             return !!n && n.dataset.state === arguments[1];",
            json!([path, state]),
        )
        .await;
}

#[actix_web::test]
async fn the_supervision_tree_follows_a_restart_and_a_disable_live() {
    let rec = Recorder::new();
    let app = TestApp::spawn(
        &[],
        vec![
            fault_plugin("steady", Fault::Ok, rec.clone()),
            fault_plugin(
                "worker",
                Fault::SlowStop(Duration::from_millis(1500)),
                rec.clone(),
            ),
        ],
        rec,
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/ui")).await;
    wait_state(&browser, "root/plugins/worker", "running").await;
    wait_state(&browser, "root/plugins/steady", "running").await;
    browser.wait_text("#stream-status", "live").await;
    let row = "li.node[data-path=\"root/plugins/worker\"] > .node-row";
    assert!(browser
        .text_of(&format!("{row} .restarts"))
        .await
        .contains("↻ 0"));
    // Marks this page: a reload would lose it, so what follows is live, not a new page.
    // And records every state the page shows for the worker.
    browser
        .eval(
            "window.__before = true; window.__states = []; \
             new MutationObserver(() => { \
               const n = document.querySelector('li.node[data-path=\"root/plugins/worker\"]'); \
               const s = n && n.dataset.state; \
               if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s); \
             }).observe(document.getElementById('tree'), { subtree: true, childList: true }); return true;",
            json!([]),
        )
        .await;

    browser
        .click(&format!("{row} button[data-action=\"restart\"]"))
        .await;
    browser.wait_text(&format!("{row} .restarts"), "↻ 1").await;
    wait_state(&browser, "root/plugins/worker", "running").await;
    // The slow stop was shown as it happened, then the plugin running again.
    let states = browser.eval("return window.__states;", json!([])).await;
    let shown: Vec<&str> = states
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        shown
            .iter()
            .any(|s| matches!(*s, "stopping" | "restarting" | "starting")),
        "the restart was never shown in progress: {shown:?}"
    );
    assert_eq!(shown.last(), Some(&"running"), "{shown:?}");

    browser
        .click(&format!("{row} button[data-action=\"disable\"]"))
        .await;
    wait_state(&browser, "root/plugins/worker", "disabled").await;
    browser
        .wait_text(&format!("{row} .state"), "disabled")
        .await;
    // A disabled plugin offers enable instead.
    browser
        .click(&format!("{row} button[data-action=\"enable\"]"))
        .await;
    wait_state(&browser, "root/plugins/worker", "running").await;
    assert_eq!(
        browser
            .eval("return window.__before === true;", json!([]))
            .await,
        true,
        "the page was reloaded"
    );
    // The other plugin was left alone.
    assert!(browser
        .text_of("li.node[data-path=\"root/plugins/steady\"] .restarts")
        .await
        .contains("↻ 0"));
    // Hook latency: one row per plugin.
    browser
        .find("#sparks .spark[data-plugin=\"worker\"] svg")
        .await;
    browser.screenshot("overview").await;

    browser.goto(&app.url("/ui#/plugins/worker")).await;
    browser
        .wait_text("#plugin-detail", "No configuration.")
        .await;
    browser.wait_text("#plugins", "steady").await;
    drop(browser);
    app.stop().await;
}

/// The service with the greeter plugin and `targets` in a targets file.
async fn app_with(targets: Value, env: &[(&str, &str)]) -> TestApp {
    let dirs = Dirs::new();
    dirs.write("greeter", "index.ts", GREETER);
    crate::connectors::app_with(dirs, targets, env).await
}

#[actix_web::test]
async fn a_target_is_created_through_the_form_generated_from_the_config_schema() {
    let up = upstreams::start(None);
    let app = app_with(json!([]), &[]).await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/ui#/targets")).await;
    browser.wait_text("#targets", "No targets yet").await;
    browser.click("#new-target").await;
    browser.type_into("[data-path=\"id\"]", "made-in-ui").await;
    browser
        .type_into("[data-path=\"name\"]", "Made in the UI")
        .await;
    browser
        .type_into("[data-path=\"endpoint\"]", "not a url")
        .await;
    browser.select("#add-plugin", "greeter").await;
    // The form for the plugin's schema: one control per field, of its type.
    let stage = "[data-stage=\"greeter\"]";
    browser
        .find(&format!(
            "{stage} input[data-path=\"plugins[0].config.greeting\"]"
        ))
        .await;
    browser
        .find(&format!(
            "{stage} input[type=number][data-path=\"plugins[0].config.repeat\"]"
        ))
        .await;
    browser
        .find(&format!(
            "{stage} input[type=checkbox][data-path=\"plugins[0].config.loud\"]"
        ))
        .await;
    browser
        .find(&format!(
            "{stage} select[data-path=\"plugins[0].config.tone\"]"
        ))
        .await;
    browser
        .find(&format!(
            "{stage} textarea[data-path=\"plugins[0].config.extra\"]"
        ))
        .await;

    // The plugin's validator: the required greeting is missing, the JSON field is not JSON.
    browser
        .type_into("[data-path=\"plugins[0].config.extra\"]", "{nope")
        .await;
    browser.click("#save-target").await;
    let at_greeting = browser
        .wait_text(
            "[data-error-for=\"plugins[0].config.greeting\"]",
            "is required",
        )
        .await;
    assert_eq!(at_greeting, "Field 'greeting' is required");
    browser
        .wait_text(
            "[data-error-for=\"plugins[0].config.extra\"]",
            "must be valid JSON",
        )
        .await;
    browser.wait_text("#form-error", "need attention").await;
    browser.screenshot("targets-form-errors").await;

    // The API's own answer, at the field it names: the endpoint is no URL.
    browser
        .type_into("[data-path=\"plugins[0].config.greeting\"]", "Hello")
        .await;
    browser
        .type_into("[data-path=\"plugins[0].config.extra\"]", "{\"a\": 1}")
        .await;
    browser.click("#save-target").await;
    browser
        .wait_until(
            "the endpoint shows the API's error",
            "return document.querySelector('[data-error-for=\"endpoint\"]').innerText.length > 0;",
            json!([]),
        )
        .await;
    let at_endpoint = browser.text_of("[data-error-for=\"endpoint\"]").await;
    assert!(
        at_endpoint.contains("URL") || at_endpoint.contains("url") || at_endpoint.contains("http"),
        "{at_endpoint}"
    );
    browser.wait_text("#form-error", "invalid_target").await;
    browser.screenshot("targets-form-api-error").await;
    assert_eq!(
        browser
            .text_of("[data-error-for=\"plugins[0].config.greeting\"]")
            .await,
        "",
        "a fixed field keeps no error"
    );

    browser
        .type_into("[data-path=\"endpoint\"]", &up.url("/chat"))
        .await;
    browser.click("#save-target").await;
    browser.wait_text("#targets", "made-in-ui").await;
    let (status, saved) = app.get("/api/targets/made-in-ui").await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["name"], "Made in the UI");
    assert_eq!(saved["source"], "api");
    assert_eq!(saved["plugins"][0]["id"], "greeter");
    assert_eq!(
        saved["plugins"][0]["config"],
        json!({ "greeting": "Hello", "repeat": 1, "loud": false, "tone": "warm", "extra": "{\"a\": 1}" })
    );

    // Test it from the list: the upstream echoes what the greeter made of the message.
    browser
        .click("tr[data-target=\"made-in-ui\"] button[data-action=\"test\"]")
        .await;
    browser.wait_text("#test-panel", "Answer").await;
    browser.screenshot("targets").await;

    // Edit it: the form comes back filled in (the plugin's config too); a new name is saved.
    browser
        .click("tr[data-target=\"made-in-ui\"] [data-action=\"edit\"]")
        .await;
    browser
        .wait_until(
            "the form is filled in",
            "const f = document.querySelector('[data-path=\"plugins[0].config.greeting\"]'); return !!f && f.value === 'Hello';",
            json!([]),
        )
        .await;
    browser
        .type_into("[data-path=\"name\"]", "Renamed in the UI")
        .await;
    browser.click("#save-target").await;
    browser.wait_text("#targets", "Renamed in the UI").await;
    let (_, edited) = app.get("/api/targets/made-in-ui").await;
    assert_eq!(edited["name"], "Renamed in the UI");
    assert_eq!(edited["endpoint"], saved["endpoint"]);
    assert_eq!(edited["plugins"], saved["plugins"]);
    drop(browser);
    app.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn a_session_shows_its_answer_as_it_streams() {
    let up = upstreams::start(None);
    let app = app_with(
        json!([{
            "id": "streamer", "name": "Streaming upstream", "connectorType": "HTTP_REST",
            "endpoint": up.url("/sse/openai"),
            "requestTemplate": { "messagePath": "message" },
            "responseTemplate": { "responsePath": "choices[0].delta.content", "tokenUsagePath": "usage" },
            "protocolConfig": { "stream": true },
            "plugins": [{ "id": "greeter", "config": { "greeting": "Hi" } }, { "id": "audit" }],
            "timeoutMs": 5000
        }]),
        &[("SWITCHYARD__PLUGINS__NATIVE", r#"["audit"]"#)],
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/ui#/sessions")).await;
    browser.wait_text("#sessions", "No sessions yet").await;
    browser
        .find("#session-target option[value=\"streamer\"]")
        .await;
    browser.click("#open-session-submit").await;
    browser.find("#message:not([disabled])").await;
    // Records how the answer grows, chunk by chunk, as the page shows it.
    browser
        .eval(
            "window.__seen = []; new MutationObserver(() => { const a = document.querySelector('.answer'); \
             if (a && a.classList.contains('streaming')) window.__seen.push(a.textContent); })\
             .observe(document.getElementById('chat'), { subtree: true, childList: true, characterData: true }); return true;",
            json!([]),
        )
        .await;
    browser
        .type_into("#message", "one two three four five six")
        .await;
    browser.click("#send").await;
    browser
        .wait_until(
            "the answer is complete",
            "const a = document.querySelector('.answer'); return !!a && a.classList.contains('done');",
            json!([]),
        )
        .await;
    let answer = browser.text_of(".answer").await;
    assert_eq!(answer.trim(), "Hi one two three four five six");
    let seen = browser.eval("return window.__seen;", json!([])).await;
    let partial: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| !t.is_empty() && t.trim() != answer.trim())
        .collect();
    assert!(
        partial.len() >= 2,
        "the answer did not grow chunk by chunk: {seen}"
    );
    let chunks = browser
        .eval(
            "return Number(document.querySelector('.answer').dataset.chunks);",
            json!([]),
        )
        .await;
    assert!(chunks.as_u64().unwrap() >= 6, "{chunks}");
    // Each hook's outcome is shown under the answer.
    let hooks = browser.wait_text("table.hooks", "greeter").await;
    assert!(hooks.contains("beforeSend"), "{hooks}");
    browser.screenshot("sessions").await;

    // The transcript and the audit of the session, read back.
    browser
        .eval("location.reload(); return true;", json!([]))
        .await;
    browser
        .wait_text("#chat", "one two three four five six")
        .await;
    browser
        .wait_text("#chat", "Hi one two three four five six")
        .await;
    browser.click("button[data-tab=\"audit\"]").await;
    browser.wait_text("#audit", "received").await;

    // Traffic draws each plugin's latency on the overview (the scrape is polled every 3 s).
    let hash = browser.eval("return location.hash;", json!([])).await;
    let id = hash
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    browser.goto(&app.url("/ui#/overview")).await;
    wait_state(&browser, "root/plugins/greeter", "running").await;
    // Messages until the greeter's line has three points (three scrapes with calls between).
    let points = "const p = document.querySelector('.spark[data-plugin=\"greeter\"] polyline'); \
                  return p ? p.getAttribute('points').split(' ').length : 0;";
    let mut n = 0;
    while browser.eval(points, json!([])).await.as_u64().unwrap_or(0) < 3 {
        n += 1;
        assert!(n < 60, "the latency sparkline never drew three points");
        let (status, reply) = app
            .post_json(
                &format!("/api/sessions/{id}/messages"),
                json!({ "message": format!("message {n}") }),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(browser
        .text_of(".spark[data-plugin=\"greeter\"] .last")
        .await
        .ends_with("ms"));
    browser.screenshot("overview-traffic").await;

    // The plugin page: metadata, the config schema, the pipeline order, latency.
    browser.goto(&app.url("/ui#/plugins/greeter")).await;
    browser.wait_text("#plugin-detail", "Said first.").await;
    let order = browser.wait_text("#order", "greeter").await;
    assert!(order.find("greeter") < order.find("audit"), "{order}");
    browser
        .find("tr[data-plugin=\"greeter\"] svg.sparkline polyline")
        .await;
    browser.screenshot("plugins").await;

    // The sessions page lists it, with its messages counted.
    browser.goto(&app.url("/ui#/sessions")).await;
    browser
        .wait_text(&format!("tr[data-session=\"{id}\"]"), "streamer")
        .await;
    browser.screenshot("sessions-list").await;
    drop(browser);
    app.stop().await;
    up.stop().await;
}

#[actix_web::test]
async fn with_an_admin_token_the_dashboard_asks_for_it_and_the_event_log_filters() {
    let rec = Recorder::new();
    let app = TestApp::spawn(
        &[("SWITCHYARD_ADMIN_TOKEN", "s3cret")],
        vec![fault_plugin("steady", Fault::Ok, rec.clone())],
        rec,
    )
    .await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/ui")).await;
    browser.find("#login").await;
    browser.type_into("#token", "wrong").await;
    browser.click("#login-submit").await;
    browser.wait_text("#login-error", "refused").await;
    browser.screenshot("login").await;
    browser.type_into("#token", "s3cret").await;
    browser.click("#login-submit").await;
    wait_state(&browser, "root/plugins/steady", "running").await;
    assert_eq!(
        browser
            .eval(
                "return sessionStorage.getItem('switchyard.adminToken');",
                json!([])
            )
            .await,
        "s3cret"
    );
    assert_eq!(
        browser
            .eval(
                "return localStorage.length + document.cookie.length;",
                json!([])
            )
            .await,
        0,
        "the token went somewhere other than sessionStorage"
    );
    // The stream with the header (read by fetch): live.
    browser.wait_text("#stream-status", "live").await;

    // The event log, filtered by pattern on the server.
    browser.goto(&app.url("/ui#/events")).await;
    browser.type_into("#event-pattern", "demo.*").await;
    browser.click("#apply-pattern").await;
    browser
        .wait_until(
            "the filtered stream is live",
            "return document.querySelector('#event-log').parentElement.querySelector('.badge').textContent === 'live';",
            json!([]),
        )
        .await;
    app.publish("other.thing", json!({ "n": 0 }));
    app.publish("demo.hello", json!({ "n": 1 }));
    app.publish("demo.again", json!({ "n": 2 }));
    browser.wait_text("#event-log", "demo.again").await;
    let log = browser.text_of("#event-log").await;
    assert!(log.contains("demo.hello"), "{log}");
    assert!(
        !log.contains("other.thing"),
        "the filter let through: {log}"
    );
    browser.screenshot("events").await;

    // A reload keeps the session's token: no second login.
    browser.goto(&app.url("/ui#/overview")).await;
    wait_state(&browser, "root/plugins/steady", "running").await;
    drop(browser);
    app.stop().await;
}

#[test]
fn the_dashboard_s_pure_functions_hold_under_node() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/it/ui_js/pure.mjs");
    let assets = format!("file://{}", root.join("src/api/ui").display());
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(&assets)
        .output()
        .unwrap_or_else(|e| {
            panic!("`node` cannot run ({e}): install Node.js (Debian: `apt-get install nodejs`; .ci/run does this)")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

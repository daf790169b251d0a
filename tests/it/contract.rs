//! The HTTP API's contract: the OpenAPI 3.1 document (`GET /api/openapi.json`) against the
//! routes actually mounted and the answers actually given.
//!
//! - The document lists exactly the mounted core routes (`switchyard::api::routes()`, the
//!   table `CoreRoutes` answers 405s from; HEAD twins aside), and each of its operations is
//!   answered by a route on the running service.
//! - It is OpenAPI 3.1, every `$ref` resolves, every example validates against its schema, and
//!   the request examples are accepted by the service.
//! - It and the reference page are public, with an admin token set or not.
//! - schemathesis (pinned in `tools/contract/requirements.txt`, installed by `.ci/run` into
//!   `tools/contract/.venv`; `SWITCHYARD_SCHEMATHESIS` may name another `st`) fuzzes every
//!   operation of a real service, stateful links included, and finds no server error and no
//!   answer off the document. A missing schemathesis fails the test with the command that
//!   installs it.
//! - Regression tests for what it found.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;
use crate::model::MockModel;

const TOKEN: &str = "contract-s3cret";

/// A script plugin with a route and two tools (no agent: an agent would talk to a real
/// provider).
const KIT: &str = r#"export default {
  name: "contract-kit", version: "1.0.0", description: "Tools and a route for the contract test.",
  init(ctx) {
    ctx.app.get("/items/:id", (req, res) => res.json({ id: req.params.id }));
    ctx.registerTool({
      name: "add", description: "Adds two numbers",
      parameters: { type: "object", required: ["a", "b"], additionalProperties: false,
                    properties: { a: { type: "number" }, b: { type: "number" } } },
      execute: async ({ a, b }) => ({ sum: a + b }),
    });
    ctx.registerTool({
      name: "echo", description: "Says it back",
      parameters: { type: "object", properties: { text: { type: "string" } } },
      execute: async (params) => ({ echoed: params }),
    });
  },
};
"#;

/// `GET` with the admin token (or none), as (status, headers' content type, JSON or Null).
async fn get(app: &TestApp, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let mut req = app.client().get(app.url(path));
    if let Some(token) = token {
        req = req.insert_header(("authorization", format!("Bearer {token}")));
    }
    let mut resp = req.send().await.expect("request");
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.body().limit(8 << 20).await.expect("body");
    (
        resp.status().as_u16(),
        kind,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// Sends `method path` with a JSON body (or none) and the admin token.
async fn call(app: &TestApp, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let req = app
        .client()
        .request(method, app.url(path))
        .insert_header(("authorization", format!("Bearer {TOKEN}")));
    let mut resp = match body {
        Some(body) => req.send_json(body).await,
        None => req.send().await,
    }
    .expect("request");
    let status = resp.status().as_u16();
    // An event stream never ends: its head is enough.
    if resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    {
        return (status, Value::Null);
    }
    let bytes = resp.body().limit(8 << 20).await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The service with an admin token, on private directories.
async fn spawn(dirs: std::sync::Arc<Dirs>, env: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("SWITCHYARD_ADMIN_TOKEN", TOKEN)];
    all.extend_from_slice(env);
    TestApp::spawn_in(dirs, &all, vec![]).await
}

/// Every operation of the document as `(METHOD, path)`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if switchyard::api::openapi::METHODS.contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[actix_web::test]
async fn the_document_lists_exactly_the_mounted_routes_and_each_is_served() {
    let app = spawn(Dirs::new(), &[]).await;
    let (status, _, doc) = get(&app, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    let documented = operations(&doc);
    let mounted: BTreeSet<(String, String)> = switchyard::api::routes()
        .into_iter()
        .filter(|(method, _)| method != awc::http::Method::HEAD)
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    let undocumented: Vec<_> = mounted.difference(&documented).collect();
    let unmounted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        undocumented.is_empty() && unmounted.is_empty(),
        "mounted but not in the document: {undocumented:?}\nin the document but not mounted: {unmounted:?}"
    );
    // Every GET has its HEAD twin, and nothing else is mounted.
    let heads = switchyard::api::routes()
        .into_iter()
        .filter(|(method, _)| method == awc::http::Method::HEAD)
        .count();
    assert_eq!(heads, documented.iter().filter(|(m, _)| m == "GET").count());

    // Each operation is answered by one of its routes (never 404 route_not_found nor 405),
    // with a documented status; path parameters name nothing, so nothing is changed.
    for (method, path) in &documented {
        if path == "/api/events/ws" {
            continue; // Needs a handshake; answered below.
        }
        let concrete = path
            .replace("{id}", "contract-probe")
            .replace("{name}", "contract-probe");
        let (status, body) = call(&app, method, &concrete, None).await;
        assert!(
            body["code"] != "route_not_found" && body["code"] != "method_not_allowed",
            "{method} {path} is not served: {status} {body}"
        );
        let responses = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
        if let Some(code) = body["code"].as_str() {
            let codes = &doc["paths"][path][method.to_lowercase()]["x-error-codes"];
            assert!(
                codes.as_array().unwrap().contains(&json!(code)),
                "{method} {path} answered {code}, which it does not list"
            );
        }
    }
    let (status, body) = call(&app, "GET", "/api/events/ws", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("websocket_upgrade_required"))
    );
    app.stop().await;
}

/// Resolves a local `$ref` (`#/components/...`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` under `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push((at.to_string(), r.to_string()));
                    }
                }
                refs(v, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A validator for `schema`, with the document's components for its references.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{schema} is no JSON Schema: {e}"))
}

/// Checks every example of a media type or parameter against its schema.
fn check_examples(doc: &Value, holder: &Value, at: &str, checked: &mut usize) {
    let schema = &holder["schema"];
    if schema.is_null() {
        return;
    }
    let mut examples: Vec<(String, Value)> = Vec::new();
    if let Some(example) = holder.get("example") {
        examples.push(("example".into(), example.clone()));
    }
    for (name, example) in holder["examples"].as_object().into_iter().flatten() {
        examples.push((name.clone(), example["value"].clone()));
    }
    let named = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r).cloned().unwrap_or(Value::Null),
        None => schema.clone(),
    };
    if let Some(example) = named.get("example") {
        examples.push(("schema example".into(), example.clone()));
    }
    let validator = validator(doc, schema);
    for (name, example) in examples {
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{at}: {name} does not match its schema: {errors:?}\n{example}"
        );
        *checked += 1;
    }
}

#[actix_web::test]
async fn the_document_is_openapi_3_1_with_sane_schemas_and_examples() {
    let app = spawn(
        Dirs::new(),
        &[("SWITCHYARD__PLUGINS__NATIVE", r#"["openai", "audit"]"#)],
    )
    .await;
    let (_, kind, doc) = get(&app, "/api/openapi.json", None).await;
    assert!(kind.starts_with("application/json"), "{kind}");
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "OpenAPI {version}");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Every reference resolves, every operation has a unique id, a summary and a known tag.
    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    for (at, reference) in &found {
        assert!(
            resolve(&doc, reference).is_some(),
            "{at}: {reference} resolves to nothing"
        );
    }
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_string()),
            "{method} {path}: operationId '{id}' twice"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path}: no summary"
        );
        for tag in op["tags"].as_array().unwrap() {
            assert!(
                tags.contains(&tag.as_str().unwrap()),
                "{method} {path}: tag {tag}"
            );
        }
        // Behind the admin token unless public, and 401 documented when behind it.
        let public = op["security"] == json!([]);
        assert_eq!(
            public,
            (!path.starts_with("/api/") && path != "/metrics")
                || path == "/api/openapi.json"
                || path == "/api/docs",
            "{method} {path}"
        );
        assert_eq!(
            op["responses"].get("401").is_some(),
            !public,
            "{method} {path}"
        );
        // Links name operations that exist.
        for response in op["responses"].as_object().unwrap().values() {
            for link in response["links"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, l)| l)
            {
                let target = link["operationId"]
                    .as_str()
                    .expect("a link names its operationId");
                assert!(
                    operations(&doc).iter().any(|(m, p)| {
                        doc["paths"][p][m.to_lowercase()]["operationId"] == target
                    }),
                    "{method} {path}: link to unknown {target}"
                );
            }
        }
    }

    // The error table: every code, with its status, in `Error.code` and in `x-error-codes`.
    let table: Vec<&str> = doc["x-error-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    let codes: Vec<&str> = switchyard::api::error::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(table, codes);
    assert_eq!(
        doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"],
        json!(codes)
    );

    // Every example matches its schema: request bodies, parameters, responses.
    let mut checked = 0;
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let at = format!("{method} {path}");
        for (kind, media) in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            check_examples(&doc, media, &format!("{at} request {kind}"), &mut checked);
        }
        for param in op["parameters"].as_array().into_iter().flatten() {
            check_examples(
                &doc,
                param,
                &format!("{at} parameter {}", param["name"]),
                &mut checked,
            );
        }
        for (status, response) in op["responses"].as_object().unwrap() {
            for (kind, media) in response["content"].as_object().into_iter().flatten() {
                check_examples(&doc, media, &format!("{at} {status} {kind}"), &mut checked);
            }
        }
    }
    assert!(checked > 60, "only {checked} examples checked");

    // The request examples are accepted as they stand.
    let example = |path: &str, method: &str| {
        let body = &doc["paths"][path][method]["requestBody"];
        let name = body["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: the body is no named schema: {body}"));
        resolve(&doc, name).unwrap()["example"].clone()
    };
    let target = example("/api/targets", "post");
    let (status, created) = call(&app, "POST", "/api/targets", Some(&target)).await;
    assert_eq!(status, 201, "{created}");
    let mut session = example("/api/sessions", "post");
    session["targetId"] = created["id"].clone();
    let (status, opened) = call(&app, "POST", "/api/sessions", Some(&session)).await;
    assert_eq!(status, 201, "{opened}");
    let (status, _) = call(
        &app,
        "POST",
        "/api/events",
        Some(&example("/api/events", "post")),
    )
    .await;
    assert_eq!(status, 202);
    let (status, body) = call(
        &app,
        "POST",
        &format!("/api/targets/{}/test", created["id"].as_str().unwrap()),
        Some(&example("/api/targets/{id}/test", "post")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &app,
        "PUT",
        &format!("/api/targets/{}", created["id"].as_str().unwrap()),
        Some(&target),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[actix_web::test]
async fn the_document_and_the_reference_page_need_no_token_and_load_nothing_from_elsewhere() {
    for token in [Some(TOKEN), None] {
        let env: Vec<(&str, &str)> = token
            .map(|t| ("SWITCHYARD_ADMIN_TOKEN", t))
            .into_iter()
            .collect();
        let app = TestApp::spawn_in(Dirs::new(), &env, vec![]).await;
        for auth in [None, Some("wrong"), token] {
            let (status, kind, doc) = get(&app, "/api/openapi.json", auth).await;
            assert_eq!(status, 200, "token {token:?}, sent {auth:?}");
            assert!(kind.starts_with("application/json"));
            assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
            let mut resp = app.client().get(app.url("/api/docs")).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            assert!(resp
                .headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            let page = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
            assert!(page.contains(r#"fetch("openapi.json""#));
            // Self-contained: no script, style or font from anywhere else.
            for outside in [
                "src=\"http",
                "href=\"http",
                "@import",
                "url(http",
                "//cdn",
                "<link ",
            ] {
                assert!(!page.contains(outside), "the page loads {outside}…");
            }
            let resp = app
                .client()
                .head(app.url("/api/openapi.json"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
        }
        // The exemption is those two routes only.
        let (status, _, body) = get(&app, "/api/plugins", None).await;
        assert_eq!(status, if token.is_some() { 401 } else { 200 }, "{body}");
        let (status, _, _) = get(&app, "/api/openapi.json/x", None).await;
        assert_eq!(status, if token.is_some() { 401 } else { 404 });
        app.stop().await;
    }
}

/// `tools/contract/.venv/bin/st`, or `SWITCHYARD_SCHEMATHESIS`; a missing one fails the test
/// with the way to install it.
fn schemathesis() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = std::env::var_os("SWITCHYARD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tools/contract/.venv/bin/st"));
    let works = std::process::Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "schemathesis is not installed at {} (the contract test needs it). Install it with:\n\n    \
         python3 -m venv tools/contract/.venv && tools/contract/.venv/bin/pip install -r tools/contract/requirements.txt\n\n\
         (Debian: `apt-get install python3-venv` first if `python3 -m venv` is missing), or point \
         SWITCHYARD_SCHEMATHESIS at an `st` executable of the version pinned there.",
        st.display()
    );
    st
}

/// What the run printed, with what its summary says.
struct Run {
    output: String,
    /// Operations tested.
    tested: Option<u64>,
    /// Test cases generated (`Test cases:` is followed by `N generated, …`).
    cases: Option<u64>,
}

impl Run {
    fn parse(output: String) -> Run {
        let lines: Vec<&str> = output.lines().map(str::trim).collect();
        let tested = lines
            .iter()
            .find_map(|l| l.strip_prefix("Tested:")?.trim().parse().ok());
        let cases = lines
            .iter()
            .skip_while(|l| !l.starts_with("Test cases:"))
            .find_map(|l| {
                l.split(" generated")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            });
        Run {
            output,
            tested,
            cases,
        }
    }

    /// The run's phases and summary, without the details of failures and warnings.
    fn summary(&self) -> String {
        let phases = self
            .output
            .find("Examples (")
            .map(|s| &self.output[s..])
            .unwrap_or(&self.output);
        let phases = phases.split("\n=====").next().unwrap_or_default();
        let summary = self.output.rsplit("SUMMARY ===").next().unwrap_or_default();
        format!("{phases}\n{summary}")
    }
}

/// schemathesis against a real service: every operation but the two endless event streams
/// (`GET /api/events` and `GET /api/events/ws` never finish a response, by design), with
/// examples, coverage, fuzzing and stateful phases, a fixed seed and one worker. Every check
/// but `positive_data_acceptance` (`tools/contract/schemathesis.toml` says which and why): no
/// server error (502 allowed only where an upstream failure is relayed), status codes, content
/// types, headers and bodies as documented, invalid input refused, undocumented methods
/// refused with `Allow`, the token enforced, and created resources reachable and gone once
/// deleted.
#[actix_web::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let st = schemathesis();
    let upstream = MockUpstream::start().await;
    let model = MockModel::start().await;
    let dirs = Dirs::new();
    dirs.write("contract-kit", "index.js", KIT);
    let targets = dirs.root.path().join("targets.toml");
    std::fs::write(
        &targets,
        format!(
            "[[targets]]\nid = \"configured\"\nname = \"Configured echo\"\nconnectorType = \"HTTP_REST\"\n\
             endpoint = \"{}\"\nrequestTemplate = {{ messagePath = \"message\" }}\n\
             responseTemplate = {{ responsePath = \"reply\" }}\ntimeoutMs = 2000\n",
            upstream.url("/chat")
        ),
    )
    .unwrap();
    let agents = format!(
        r#"[{{ id = "helper", displayName = "Helper", systemPromptTemplate = "You help.", model = {{ provider = "openai", modelId = "gpt-test", endpoint = "{0}" }} }}, {{ id = "claude", model = {{ provider = "anthropic", modelId = "claude-test", endpoint = "{0}" }} }}]"#,
        model.endpoint
    );
    let providers = format!(
        r#"{{ openai = {{ endpoint = "{0}" }}, anthropic = {{ endpoint = "{0}" }} }}"#,
        model.endpoint
    );
    let app = spawn(
        dirs,
        &[
            (
                "SWITCHYARD__SESSIONS__TARGETS_FILE",
                targets.to_str().unwrap(),
            ),
            ("SWITCHYARD__AGENTS", &agents),
            ("SWITCHYARD__INFERENCE__PROVIDERS", &providers),
            // Connector plugins and two gateway ones; not multi-step-auth, whose `onConnect`
            // would fetch tokens from whatever URL the fuzzer writes in its config.
            (
                "SWITCHYARD__PLUGINS__NATIVE",
                r#"["openai", "anthropic", "audit", "event-logger", "hello"]"#,
            ),
            ("SWITCHYARD__SESSIONS__HOOK_TIMEOUT_MS", "2000"),
            ("SWITCHYARD__INFERENCE__MAX_RETRIES", "0"),
            // Webhooks the fuzzer makes POST to the mock upstream (tools/contract/hooks.py).
            ("SWITCHYARD__WEBHOOKS__TIMEOUT_MS", "2000"),
        ],
    )
    .await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/contract");
    let work = tempfile::tempdir().unwrap();
    let schema = app.url("/api/openapi.json");
    let upstream_host = upstream.base.trim_start_matches("http://").to_string();
    // Another seed or more examples explore further (the defaults keep the run about a
    // minute on 2 cores, and the same from run to run).
    let seed = std::env::var("SWITCHYARD_CONTRACT_SEED").unwrap_or_else(|_| "14015".into());
    let examples = std::env::var("SWITCHYARD_CONTRACT_EXAMPLES").unwrap_or_else(|_| "100".into());
    let started = Instant::now();
    let output = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(&st)
            .arg("--config-file")
            .arg(root.join("schemathesis.toml"))
            .arg("--no-color")
            .args(["run", &schema])
            .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
            .args(["--exclude-operation-id", "event_stream"])
            .args(["--exclude-operation-id", "event_socket"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", &examples])
            .args(["--seed", &seed])
            .args(["--workers", "1"])
            .args(["--generation-database", "none"])
            .args(["--request-timeout", "20"])
            .args(["--output-truncate", "false"])
            .env("SCHEMATHESIS_HOOKS", root.join("hooks.py"))
            .env("SWITCHYARD_CONTRACT_UPSTREAM", upstream_host)
            .current_dir(work.path())
            .output()
    })
    .await
    .expect("the run's thread")
    .expect("schemathesis runs");
    let elapsed = started.elapsed();
    let run = Run::parse(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{}",
        run.output
    );
    eprintln!("{}", run.summary());
    eprintln!(
        "schemathesis: {} operations, {} test cases, no failures, in {:.0?}",
        run.tested.unwrap_or_default(),
        run.cases.unwrap_or_default(),
        elapsed
    );
    assert!(run.tested.unwrap_or_default() >= 41, "{}", run.output);
    app.stop().await;
    upstream.stop().await;
    model.stop().await;
}

// ---- Regressions of what the contract run found -------------------------------------------

/// A path without parameters is only its own routes': `DELETE /api/plugins/order` was taken
/// by `DELETE /api/plugins/{id}` (unloading a plugin called "order") and `Allow` listed
/// DELETE there, while the document has GET only.
#[actix_web::test]
async fn a_concrete_path_is_not_answered_by_a_templated_route() {
    let app = spawn(Dirs::new(), &[]).await;
    for method in ["DELETE", "OPTIONS", "PUT"] {
        let resp = app
            .client()
            .request(
                awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/api/plugins/order"),
            )
            .insert_header(("authorization", format!("Bearer {TOKEN}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method}");
        assert_eq!(
            resp.headers().get("allow").unwrap(),
            "GET, HEAD",
            "{method}"
        );
    }
    let resp = app
        .client()
        .head(app.url("/api/plugins/order?connector=HTTP_REST"))
        .insert_header(("authorization", format!("Bearer {TOKEN}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The templated routes still answer everything else.
    let (status, body) = call(&app, "DELETE", "/api/plugins/orders", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("plugin_not_found"))
    );
    app.stop().await;
}

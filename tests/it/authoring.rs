//! Author tools: the shipped type definitions (`types/`) check the example plugins strictly
//! and reject misuse, and `switchyard plugin new` writes plugins that type-check, load and
//! work in the real service.
//!
//! The type checks run the TypeScript compiler pinned in `types/package-lock.json`. They never
//! skip: without `types/node_modules` the test runs `npm ci` itself, and without Node.js it
//! fails saying what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn types_dir() -> PathBuf {
    repo().join("types")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The TypeScript compiler pinned in types/package.json, installed with `npm ci` when it is
/// missing or another version (once per test run; tests asking meanwhile wait for it).
fn tsc() -> &'static Path {
    static TSC: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = TSC.get_or_init(|| {
        if !runs("node") || !runs("npm") {
            return Err("the plugin type checks need Node.js and npm on the PATH: install them \
                 (Debian: `apt-get install nodejs npm`; .ci/run does this), then run the tests again"
                .into());
        }
        let types = types_dir();
        let tsc = types.join("node_modules/typescript/bin/tsc");
        let read = |path: &Path| -> Value {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Value::Null)
        };
        let pinned = read(&types.join("package.json"))["devDependencies"]["typescript"].clone();
        let installed = read(&types.join("node_modules/typescript/package.json"))["version"].clone();
        if !tsc.is_file() || installed != pinned {
            let out = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&types)
                .output()
                .map_err(|e| format!("cannot run npm ci in {}: {e}", types.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "npm ci in {} failed:\n{}",
                    types.display(),
                    text(&out)
                ));
            }
        }
        if tsc.is_file() {
            Ok(tsc)
        } else {
            Err(format!(
                "npm ci did not install {}: is types/package-lock.json intact?",
                tsc.display()
            ))
        }
    });
    match ready {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// What `types/check.mjs` said about each plugin directory it checked.
struct Checked {
    output: String,
}

impl Checked {
    /// Whether `dir` (as given to [`check`]) passed.
    fn passed(&self, dir: &str) -> bool {
        self.output
            .lines()
            .any(|l| l.trim_end() == format!("ok    {dir}"))
    }

    /// The errors reported for `dir`, or `None` if it was not reported as failing.
    fn errors(&self, dir: &str) -> Option<String> {
        let mut lines = self.output.lines();
        lines.find(|l| l.trim_end() == format!("FAIL  {dir}"))?;
        Some(
            lines
                .take_while(|l| l.starts_with("      "))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }
}

/// `node types/check.mjs DIR...` in `cwd` (all the shipped plugins when `dirs` is empty): one
/// process that type-checks each directory as `tsc -p DIR` would.
fn check(cwd: &Path, dirs: &[&str]) -> Checked {
    tsc();
    let out = Command::new("node")
        .arg(types_dir().join("check.mjs"))
        .args(dirs)
        .current_dir(cwd)
        .output()
        .expect("node runs");
    Checked { output: text(&out) }
}

/// A project of its own in a temp dir: `types/` copied from the repository (the declarations
/// and tsconfig.plugin.json, not the compiler), and `plugins/core/` for plugins.
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let to = root.path().join("types/switchyard");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(types_dir().join("switchyard")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    std::fs::copy(
        types_dir().join("tsconfig.plugin.json"),
        root.path().join("types/tsconfig.plugin.json"),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("plugins/core")).unwrap();
    root
}

/// `switchyard plugin new …`: exit code and output.
fn plugin_new(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["plugin", "new"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    (out.status.code().unwrap_or(-1), text(&out))
}

#[test]
fn the_shipped_examples_type_check_strictly_against_the_shipped_types() {
    // types/check.mjs: `tsc -p` for each plugin directory, and the declarations' own contract
    // test (types/tests/contract: every misuse marked @ts-expect-error must be rejected).
    let checked = check(repo(), &[]);
    let mut expected: Vec<String> = std::fs::read_dir(repo().join("plugins/core"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("index.ts").is_file())
        .map(|p| format!("plugins/core/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(expected.len() >= 3, "the examples: {expected:?}");
    expected.push("types/tests/contract".into());
    for dir in &expected {
        assert!(
            checked.passed(dir),
            "{dir} did not pass:\n{}",
            checked.output
        );
    }
    assert!(
        checked
            .output
            .lines()
            .any(|l| l == format!("{} passed, 0 failed", expected.len())),
        "{}",
        checked.output
    );
    // …with `strict` on, as every plugin's tsconfig.json inherits it.
    let out = Command::new("node")
        .arg(tsc())
        .args(["-p", "plugins/core/my-plugin", "--showConfig"])
        .current_dir(repo())
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&out.stdout).expect("tsc --showConfig prints JSON");
    assert_eq!(config["compilerOptions"]["strict"], true, "{config}");
    assert_eq!(config["compilerOptions"]["types"], json!([]), "{config}");
}

#[test]
fn an_example_that_misuses_the_api_fails_the_check() {
    let project = project();
    // A copy of a shipped example, as plugins/core/<name>, with `from` replaced by `to`.
    let copy = |name: &str, example: &str, from: &str, to: &str| {
        let source =
            std::fs::read_to_string(repo().join("plugins/core").join(example).join("index.ts"))
                .unwrap();
        assert!(source.contains(from), "{example} no longer has {from:?}");
        let dir = project.path().join("plugins/core").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.ts"), source.replacen(from, to, 1)).unwrap();
        std::fs::copy(
            repo()
                .join("plugins/core")
                .join(example)
                .join("tsconfig.json"),
            dir.join("tsconfig.json"),
        )
        .unwrap();
        format!("plugins/core/{name}")
    };
    // Unchanged, the copies pass: what fails below is the misuse alone.
    let same_krawall = copy("same-krawall", "my-plugin", "", "");
    let same_astra = copy("same-astra", "astra-example", "", "");
    // A Krawall hook that hands on the wrong shape.
    let bad_hook = copy(
        "bad-hook",
        "my-plugin",
        "return { message }; // pass through unmodified",
        "return { msg: message };",
    );
    // An Open Astra plugin calling what its context does not have.
    let bad_res = copy(
        "bad-res",
        "astra-example",
        "res.json({ hello: \"world\" })",
        "res.jsonp({ hello: \"world\" })",
    );
    // A Node.js global the sandbox does not have.
    let bad_global = copy(
        "bad-global",
        "astra-example",
        "ctxRef = ctx;",
        "ctxRef = ctx; ctx.logger.info(process.env.HOME);",
    );
    let checked = check(
        project.path(),
        &[&same_krawall, &same_astra, &bad_hook, &bad_res, &bad_global],
    );
    let out = &checked.output;
    assert!(checked.passed(&same_krawall), "{out}");
    assert!(checked.passed(&same_astra), "{out}");
    for (dir, error) in [
        (&bad_hook, "'msg' does not exist"),
        (
            &bad_res,
            "Property 'jsonp' does not exist on type 'RouteResponse'",
        ),
        (&bad_global, "Cannot find name 'process'"),
    ] {
        let errors = checked
            .errors(dir)
            .unwrap_or_else(|| panic!("{dir} passed:\n{out}"));
        assert!(errors.contains(error), "{dir}: {errors}");
    }
    assert!(out.contains("2 passed, 3 failed"), "{out}");
}

#[test]
fn plugin_new_writes_plugins_that_type_check_and_refuses_bad_ids_and_existing_dirs() {
    let project = project();
    let plugins = project.path().join("plugins");
    let plugins_arg = plugins.to_str().unwrap();
    let mut written = Vec::new();
    for (kind, lang) in [
        ("--connector", "--ts"),
        ("--connector", "--js"),
        ("--gateway", "--ts"),
        ("--gateway", "--js"),
    ] {
        let id = format!("new{}{}", kind.replace("--", "-"), lang.replace("--", "-"));
        let (code, said) = plugin_new(&[&id, kind, lang, "--plugins-dir", plugins_arg]);
        assert_eq!(code, 0, "{said}");
        let dir = plugins.join("core").join(&id);
        let entry = dir.join(format!("index.{}", &lang[2..]));
        assert!(entry.is_file(), "{said}");
        assert!(said.contains(&entry.display().to_string()), "{said}");
        assert!(said.contains("Next:"), "{said}");
        // The types were found above the plugins directory: the tsconfig points at them.
        assert_eq!(
            std::fs::read_to_string(dir.join("tsconfig.json")).unwrap(),
            "{\n  \"extends\": \"../../../types/tsconfig.plugin.json\"\n}\n"
        );
        written.push(format!("plugins/core/{id}"));
    }
    // The default is a TypeScript connector plugin.
    let (code, said) = plugin_new(&["plain", "--plugins-dir", plugins_arg]);
    assert_eq!(code, 0, "{said}");
    let plain = std::fs::read_to_string(plugins.join("core/plain/index.ts")).unwrap();
    assert!(plain.contains("PluginLoader.register(plugin)"), "{plain}");
    written.push("plugins/core/plain".into());
    // The JavaScript ones are checked too (`// @ts-check`), not just accepted.
    let (code, said) = plugin_new(&[
        "broken-js",
        "--gateway",
        "--js",
        "--plugins-dir",
        plugins_arg,
    ]);
    assert_eq!(code, 0, "{said}");
    let js = plugins.join("core/broken-js/index.js");
    let source = std::fs::read_to_string(&js).unwrap();
    std::fs::write(&js, source.replace("res.json(", "res.jsn(")).unwrap();

    let mut dirs: Vec<&str> = written.iter().map(String::as_str).collect();
    dirs.push("plugins/core/broken-js");
    let checked = check(project.path(), &dirs);
    for dir in &written {
        assert!(
            checked.passed(dir),
            "{dir} does not type-check:\n{}",
            checked.output
        );
    }
    let errors = checked
        .errors("plugins/core/broken-js")
        .unwrap_or_else(|| panic!("a misuse in a --js plugin passed:\n{}", checked.output));
    assert!(errors.contains("'jsn' does not exist"), "{errors}");

    // Refusals: exit 2, a reason, nothing written.
    for (id, reason) in [
        ("Upper", "'U' is not allowed"),
        (".hidden", "starts with '.'"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("_x", "must start with"),
    ] {
        let (code, said) = plugin_new(&[id, "--plugins-dir", plugins_arg]);
        assert_eq!(code, 2, "{id}: {said}");
        assert!(
            said.contains("not a valid plugin id") && said.contains(reason),
            "{id}: {said}"
        );
    }
    let before = std::fs::read_to_string(plugins.join("core/plain/index.ts")).unwrap();
    let (code, said) = plugin_new(&["plain", "--gateway", "--plugins-dir", plugins_arg]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("already exists"), "{said}");
    assert_eq!(
        std::fs::read_to_string(plugins.join("core/plain/index.ts")).unwrap(),
        before
    );
    let (code, said) = plugin_new(&[
        "x",
        "--gateway",
        "--connector",
        "--plugins-dir",
        plugins_arg,
    ]);
    assert_eq!(code, 2, "{said}");
    let mut left: Vec<String> = std::fs::read_dir(plugins.join("core"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "broken-js",
            "new-connector-js",
            "new-connector-ts",
            "new-gateway-js",
            "new-gateway-ts",
            "plain"
        ]
    );
}

/// Writes `targets.toml` with one HTTP_REST target on the mock and returns the env entry that
/// points the service at it.
fn mock_target(dirs: &Dirs, mock: &MockUpstream) -> (&'static str, String) {
    let path = dirs.root.path().join("targets.toml");
    let targets = json!({ "targets": [{
        "id": "chat", "name": "chat", "connectorType": "HTTP_REST", "endpoint": mock.url("/chat"),
        "requestTemplate": { "messagePath": "message" },
        "responseTemplate": { "responsePath": "reply" },
        "timeoutMs": 2000
    }]});
    std::fs::write(&path, toml::to_string(&targets).unwrap()).unwrap();
    (
        "SWITCHYARD__SESSIONS__TARGETS_FILE",
        path.display().to_string(),
    )
}

#[actix_web::test]
async fn scaffolded_plugins_load_and_work_in_the_service() {
    let dirs = Dirs::new();
    let plugins_arg = dirs.plugins().display().to_string();
    for (id, kind, lang) in [
        ("conn-ts", "--connector", "--ts"),
        ("conn-js", "--connector", "--js"),
        ("gw-ts", "--gateway", "--ts"),
        ("gw-js", "--gateway", "--js"),
    ] {
        let (code, said) = plugin_new(&[id, kind, lang, "--plugins-dir", &plugins_arg]);
        assert_eq!(code, 0, "{said}");
    }
    let mock = MockUpstream::start().await;
    let (key, file) = mock_target(&dirs, &mock);
    let mut app = TestApp::spawn_in(dirs, &[(key, file.as_str())], vec![]).await;

    let (status, plugins) = app.get("/api/plugins").await;
    assert_eq!(status, 200, "{plugins}");
    for id in ["conn-ts", "conn-js", "gw-ts", "gw-js"] {
        let plugin = plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed: {plugins}"));
        assert_eq!(plugin["state"], "running", "{plugin}");
        assert_eq!(plugin["source"], "script", "{plugin}");
        assert_eq!(plugin["version"], "0.1.0", "{plugin}");
    }
    let errors: Vec<Value> = app
        .drain_events()
        .into_iter()
        .filter(|(name, _)| name == "plugin.error")
        .map(|(_, data)| data)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // Gateway plugins: the route answers, the tool runs.
    for id in ["gw-ts", "gw-js"] {
        let (status, hello) = app.get(&format!("/plugins/{id}/hello?name=you")).await;
        assert_eq!(status, 200, "{hello}");
        assert_eq!(hello, json!({ "hello": "you", "from": id, "greetings": 1 }));
        let (_, hello) = app.get(&format!("/plugins/{id}/hello")).await;
        assert_eq!(hello["hello"], "world");
        assert_eq!(hello["greetings"], 2);
        let (status, invoked) = app
            .post_json(
                &format!("/api/tools/{id}-echo/invoke"),
                json!({ "params": { "text": "hi" } }),
            )
            .await;
        assert_eq!(status, 200, "{invoked}");
        assert_eq!(invoked["result"], json!({ "echo": "hi", "length": 2 }));
        let (status, refused) = app
            .post_json(
                &format!("/api/tools/{id}-echo/invoke"),
                json!({ "params": {} }),
            )
            .await;
        assert_eq!(status, 422, "{refused}");
    }

    // Connector plugins: their config schema is enforced, and a session runs them on each
    // message, leaving the message as it was and their summary in the answer's metadata.
    let (status, refused) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "chat", "plugins": [{ "id": "conn-ts", "config": { "logMessages": "yes" } }] }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("logMessages"), "{refused}");
    let (status, session) = app
        .post_json(
            "/api/sessions",
            json!({ "targetId": "chat", "plugins": [
                { "id": "conn-ts", "config": { "label": "demo" } },
                { "id": "conn-js" }
            ] }),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_string();
    for n in 1..=2 {
        let (status, reply) = app
            .post_json(
                &format!("/api/sessions/{id}/messages"),
                json!({ "message": "hello" }),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["content"], "echo: hello");
        let ts = &reply["metadata"]["conn-ts"];
        assert_eq!(ts["messageNumber"], n, "{reply}");
        assert_eq!(ts["label"], "demo", "{reply}");
        assert_eq!(ts["answerChars"], "echo: hello".len(), "{reply}");
        assert!(ts["roundTripMs"].as_u64().is_some(), "{reply}");
        let js = &reply["metadata"]["conn-js"];
        assert_eq!(js["messageNumber"], n, "{reply}");
        assert_eq!(js["label"], "conn-js", "{reply}");
    }
    // The plugins passed the message on unchanged.
    let sent: Vec<Value> = mock
        .requests("/chat")
        .iter()
        .map(|r| r.body["message"].clone())
        .collect();
    assert_eq!(sent, [json!("hello"), json!("hello")]);
    app.delete(&format!("/api/sessions/{id}")).await;
    app.stop().await;
    mock.stop().await;
}

/// The names `declare var|function|class NAME` in a declaration file, or `static NAME(`.
fn declared(file: &str, prefixes: &[&str]) -> Vec<String> {
    let text = std::fs::read_to_string(types_dir().join("switchyard").join(file)).unwrap();
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = prefixes.iter().find_map(|p| line.strip_prefix(p))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    names.dedup();
    names
}

#[actix_web::test]
async fn what_the_types_declare_exists_in_the_sandbox_and_nothing_node_like_does() {
    let globals = declared(
        "globals.d.ts",
        &["declare var ", "declare function ", "declare class "],
    );
    for expected in [
        "fetch",
        "AbortSignal",
        "crypto",
        "performance",
        "queueMicrotask",
    ] {
        assert!(globals.iter().any(|g| g == expected), "{globals:?}");
    }
    let statics = declared("loader.d.ts", &["static "]);
    assert!(statics.len() >= 11, "{statics:?}");
    let probe = format!(
        r#"import {{ PluginLoader }} from "./loader";
import {{ ConnectorError, BaseConnector }} from "../base";
const globals = {globals};
const absent = ["process", "require", "module", "Buffer", "global", "document", "window", "navigator",
  "Blob", "File", "FormData", "ReadableStream", "XMLHttpRequest", "localStorage", "setImmediate"];
const statics = {statics};
export default {{
  name: "probe", version: "1.0.0",
  init(ctx) {{
    ctx.app.get("/report", () => ({{
      missing: globals.filter((n) => typeof globalThis[n] === "undefined"),
      unexpected: absent.filter((n) => typeof globalThis[n] !== "undefined"),
      loader: statics.filter((n) => typeof PluginLoader[n] !== "function"),
      base: [typeof ConnectorError, typeof BaseConnector, new ConnectorError("m", null, 502).statusCode],
      bodies: [new Response("x").body, new Request("https://example.com/").body],
      timer: typeof setTimeout(() => {{}}, 0),
    }}));
  }},
}};
"#,
        globals = serde_json::to_string(&globals).unwrap(),
        statics = serde_json::to_string(&statics).unwrap(),
    );
    let dirs = Dirs::new();
    dirs.write("probe", "index.js", &probe);
    let app = TestApp::spawn_in(dirs, &[], vec![]).await;
    let (status, report) = app.get("/plugins/probe/report").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({
            "missing": [], "unexpected": [], "loader": [],
            "base": ["function", "function", 502],
            "bodies": [null, null],
            "timer": "number"
        }),
        "declared in types/switchyard but not in the sandbox (or the other way round)"
    );
    app.stop().await;
}

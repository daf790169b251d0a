//! The real executable: bad settings exit 2 with every problem named; SIGTERM stops plugins in
//! reverse order and exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_file_exits_2_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nbnd = \"x\"\nworkers = \"many\"\n[plugins]\nnative = [\"nope\"]\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid configuration (3 problems)"),
        "{stderr}"
    );
    assert!(stderr.contains("server.bnd: unknown setting"), "{stderr}");
    assert!(
        stderr.contains("server.workers: expected an integer, found a string"),
        "{stderr}"
    );
    assert!(
        stderr.contains("plugins.native: unknown native plugin 'nope'; known: multi-step-auth, openai, anthropic, audit, event-logger, hello"),
        "{stderr}"
    );
}

#[test]
fn a_broken_toml_file_exits_2_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[server]\nbind = \"127.0.0.1:0\n").unwrap();
    let (code, _, stderr) = run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not valid TOML"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn bad_environment_values_exit_2_naming_the_variable() {
    let (code, _, stderr) = run(
        &["serve"],
        &[
            ("SWITCHYARD__SHUTDOWN__DEADLINE_MS", "soon"),
            ("SWITCHYARD__SERVER__NOPE", "1"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("shutdown.deadline_ms: expected an integer, got 'soon' (from SWITCHYARD__SHUTDOWN__DEADLINE_MS)"), "{stderr}");
    assert!(
        stderr.contains("server.nope: unknown setting (from SWITCHYARD__SERVER__NOPE)"),
        "{stderr}"
    );
}

#[test]
fn check_config_prints_the_effective_settings_with_the_token_masked() {
    let (code, stdout, stderr) = run(
        &["check-config", "--bind", "127.0.0.1:9999"],
        &[("SWITCHYARD_ADMIN_TOKEN", "hunter2")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bind = \"127.0.0.1:9999\""), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn check_config_shows_the_store_url_without_its_password() {
    let (code, stdout, stderr) = run(
        &["check-config"],
        &[(
            "SWITCHYARD__STORE__URL",
            "postgres://app:db-pass-77@db.internal:5432/sy",
        )],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("db-pass-77"), "{stdout}");
    assert!(
        stdout.contains("url = \"postgres://app:********@db.internal:5432/sy\""),
        "{stdout}"
    );
}

#[test]
fn check_config_masks_the_credentials_of_inline_targets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        r#"
[[targets]]
id = "vault"
name = "Vault"
connectorType = "HTTP_REST"
endpoint = "https://svc:url-pass-123@example.com/chat"
authType = "BEARER_TOKEN"
authConfig = { token = "tok-456", extra = { deep = 789 } }
requestTemplate = { messagePath = "message" }
responseTemplate = { responsePath = "reply" }
protocolConfig = { headers = { "X-Api-Key" = "hdr-key-000", "X-Trace" = "visible" } }
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["check-config", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{stderr}");
    for secret in ["url-pass-123", "tok-456", "789", "hdr-key-000"] {
        assert!(!stdout.contains(secret), "{secret} shown: {stdout}");
    }
    // The rest of the target is shown as given.
    assert!(stdout.contains("id = \"vault\""), "{stdout}");
    assert!(stdout.contains("visible"), "{stdout}");
    assert!(stdout.contains("example.com/chat"), "{stdout}");
}

#[test]
fn an_address_in_use_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("switchyard.db");
    let (code, _, stderr) = run(
        &["--bind", &addr],
        &[
            ("SWITCHYARD__PLUGINS__NATIVE", "[]"),
            ("SWITCHYARD__STORE__PATH", db.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_example_plugins_in_reverse_order_and_exits_0() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWITCHYARD__DATA__DIR", data.path())
        .env("SWITCHYARD__STORE__PATH", data.path().join("switchyard.db"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l: &String| l.contains("\"Ready.\"")) {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("service becomes ready");
        lines.push(line);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    // The reader ends at EOF; only then has every line arrived.
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    assert_eq!(code, Some(0), "{lines:#?}");
    // JSON log lines: every default plugin stops LIFO: the shipped script examples (discovered
    // after the native ones), then hello (which depends on event-logger), then the connector
    // plugins in reverse registration order.
    let stops: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "Plugin stopped.")
        .map(|v| v["span"]["plugin"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        stops,
        [
            "response-logger",
            "my-plugin",
            "astra-example",
            "hello",
            "event-logger",
            "audit",
            "anthropic",
            "openai",
            "multi-step-auth"
        ],
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("\"Stopped.\"")));
}

#[test]
fn bad_targets_exit_2_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("targets.toml");
    std::fs::write(
        &path,
        "[[targets]]\nid = \"a\"\nname = \"A\"\nconnectorType = \"FAX\"\nendpoint = \"nowhere\"\nrequestTemplate = { messagePath = \"m\" }\nresponseTemplate = { responsePath = \"r\" }\n",
    )
    .unwrap();
    let (code, _, stderr) = run(
        &["--bind", "127.0.0.1:0"],
        &[
            ("SWITCHYARD__SESSIONS__TARGETS_FILE", path.to_str().unwrap()),
            ("SWITCHYARD__PLUGINS__NATIVE", "[]"),
            ("SWITCHYARD__PLUGINS__DIR", dir.path().to_str().unwrap()),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid targets (2 problems)"), "{stderr}");
    assert!(
        stderr.contains("targets[0].connectorType: 'FAX' is not supported"),
        "{stderr}"
    );
    assert!(
        stderr.contains("targets[0].endpoint: 'nowhere' is not an http(s) URL"),
        "{stderr}"
    );
}

#[test]
fn bad_agents_exit_2_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agents.toml");
    std::fs::write(
        &config,
        "[[agents]]\nid = \"Bad_Id\"\nmodel = { provider = \"bedrock\", modelId = \"m\", temperature = 3 }\n",
    )
    .unwrap();
    let (code, _, stderr) = run(
        &[
            "--bind",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("SWITCHYARD__PLUGINS__NATIVE", "[]"),
            ("SWITCHYARD__PLUGINS__DIR", dir.path().to_str().unwrap()),
            ("SWITCHYARD__STORE__ENABLED", "false"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid agents (3 problems)"), "{stderr}");
    assert!(
        stderr.contains("agents[0].id: 'Bad_Id' must be kebab-case"),
        "{stderr}"
    );
    assert!(
        stderr.contains("agents[0].model.provider: unknown provider 'bedrock'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("agents[0].model.temperature: 3 must be a number from 0 to 2"),
        "{stderr}"
    );
}

#[test]
fn a_database_that_cannot_be_opened_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    // The database's parent "directory" is a file.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let db = blocker.join("switchyard.db");
    let (code, _, stderr) = run(
        &["--bind", "127.0.0.1:0"],
        &[
            ("SWITCHYARD__STORE__PATH", db.to_str().unwrap()),
            ("SWITCHYARD__PLUGINS__NATIVE", "[]"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot open the database at"), "{stderr}");
}

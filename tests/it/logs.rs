//! The log output of the real executable: no colour codes when stdout is not a terminal (a
//! file, a pipe, a log collector), and JSON lines that say which request, session, plugin and
//! hook they belong to, even for a line a plugin writes on its own thread.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The service on port 0 with `format` logs on a pipe, and its stdout lines as they come.
/// The OTLP variables of the test's own environment are not passed on.
pub(crate) fn spawn(
    format: &str,
    data: &tempfile::TempDir,
    env: &[(&str, String)],
) -> (Child, Receiver<String>) {
    let mut command = Command::new(BIN);
    command
        .args(["--bind", "127.0.0.1:0", "--log-format", format])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWITCHYARD__DATA__DIR", data.path())
        .env("SWITCHYARD__STORE__PATH", data.path().join("switchyard.db"))
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Lines until one contains `needle` (that one included); fails after 20 s.
pub(crate) fn until(rx: &Receiver<String>, needle: &str, lines: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no line with {needle:?} in:\n{}", lines.join("\n")));
        lines.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    }
}

pub(crate) fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn pretty_logs_on_a_pipe_carry_no_colour_codes() {
    let data = tempfile::tempdir().unwrap();
    let (child, rx) = spawn("pretty", &data, &[]);
    let mut lines = Vec::new();
    until(&rx, "Ready.", &mut lines);
    stop(child);
    let text = lines.join("\n");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes on a pipe:\n{text:?}"
    );
    assert!(text.contains("INFO"), "{text}");
}

#[actix_web::test]
async fn a_json_line_written_in_a_hook_names_its_request_session_plugin_and_hook() {
    // On the session's thread (the default) and on the plugin's own actor.
    hook_line_names_everything(None).await;
    hook_line_names_everything(Some("false")).await;
}

async fn hook_line_names_everything(on_session_thread: Option<&str>) {
    let mock = MockUpstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let targets = data.path().join("targets.toml");
    let target = json!({ "targets": [crate::sessions::target("chat", &mock, "/chat")] });
    std::fs::write(&targets, toml::to_string(&target).unwrap()).unwrap();
    let mut env = vec![(
        "SWITCHYARD__SESSIONS__TARGETS_FILE",
        targets.display().to_string(),
    )];
    if let Some(flag) = on_session_thread {
        env.push((
            "SWITCHYARD__PLUGINS__SCRIPT__HOOKS_ON_SESSION_THREAD",
            flag.to_string(),
        ));
    }
    let (child, rx) = spawn("json", &data, &env);
    let mut lines = Vec::new();
    let listening: Value = serde_json::from_str(&until(&rx, "\"Listening.\"", &mut lines)).unwrap();
    let addr = listening["addr"].as_str().unwrap().to_string();
    until(&rx, "\"Ready.\"", &mut lines);

    let client = awc::Client::default();
    let mut resp = client
        .post(format!("http://{addr}/api/sessions"))
        .send_json(&json!({ "targetId": "chat", "plugins": [{ "id": "response-logger", "config": { "logLevel": "debug" } }] }))
        .await
        .unwrap();
    let session: Value = resp.json().await.unwrap();
    assert_eq!(resp.status(), 201, "{session}");
    let session_id = session["id"].as_str().unwrap().to_string();
    let resp = client
        .post(format!("http://{addr}/api/sessions/{session_id}/messages"))
        .insert_header(("x-request-id", "req-log-42"))
        .send_json(&json!({ "message": "hi" }))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // response-logger writes this line from its afterReceive hook.
    let line = until(&rx, "[response-logger] Response", &mut lines);
    stop(child);
    let line: Value = serde_json::from_str(&line).expect("a JSON line");
    let spans = line["spans"]
        .as_array()
        .expect("the spans it was written in");
    let field = |name: &str| spans.iter().find_map(|s| s.get(name).cloned());
    assert_eq!(field("request_id"), Some(json!("req-log-42")), "{line}");
    assert_eq!(field("session.id"), Some(json!(session_id)), "{line}");
    assert_eq!(field("plugin"), Some(json!("response-logger")), "{line}");
    assert_eq!(field("hook"), Some(json!("afterReceive")), "{line}");
}

//! kill -9 under load against the real executable: with `store.durability = "acknowledged"`
//! every answer a client received is in the transcript after a restart, on SQLite and on
//! PostgreSQL.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const CLIENTS: usize = 12;
const ROUNDS: usize = 3;

/// The real service on `data` (and the PostgreSQL database `url`, if any), with one target on
/// the mock; answers the child and its address.
fn spawn(data: &std::path::Path, durability: &str, url: Option<&str>) -> (Child, String) {
    let mut command = Command::new(BIN);
    if let Some(url) = url {
        command.env("SWITCHYARD__STORE__URL", url);
    }
    command
        .current_dir(data)
        .env("SWITCHYARD__DATA__DIR", data)
        .env("SWITCHYARD__STORE__PATH", data.join("switchyard.db"))
        .env("SWITCHYARD__STORE__DURABILITY", durability)
        .env(
            "SWITCHYARD__SESSIONS__TARGETS_FILE",
            data.join("targets.toml"),
        )
        .env("SWITCHYARD__PLUGINS__DIR", data.join("plugins"));
    start(&mut command, "the service")
}

/// Starts the real binary as `command` says (on a free loopback port, JSON logs on stdout) and
/// waits for it to be ready; answers the child and its base URL. `what` names it in a failure.
pub(crate) fn start(command: &mut Command, what: &str) -> (Child, String) {
    let mut child = command
        .args(["--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut addr = None;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{what} becomes ready"));
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match v["message"].as_str() {
            Some("Listening.") => addr = v["addr"].as_str().map(str::to_owned),
            Some("Ready.") => break,
            _ => {}
        }
    }
    (
        child,
        format!(
            "http://{}",
            addr.expect("the Listening. line names the address")
        ),
    )
}

pub(crate) fn kill9(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

/// Every `(session, message)` the stored transcripts hold as answered.
async fn stored(base: &str, sessions: &[String]) -> HashSet<(String, String)> {
    let client = awc::Client::default();
    let mut answered = HashSet::new();
    for id in sessions {
        let mut offset = 0;
        loop {
            let url = format!("{base}/api/sessions/{id}/messages?limit=500&offset={offset}");
            let mut res = client.get(url).send().await.unwrap();
            assert_eq!(res.status(), 200, "transcript of {id}");
            let page: Value = res.json().limit(64 << 20).await.unwrap();
            let items = page["items"].as_array().unwrap();
            for row in items {
                if row["direction"] == "received" {
                    let echoed = row["content"].as_str().unwrap();
                    let sent = echoed.strip_prefix("echo: ").unwrap().to_string();
                    answered.insert((id.clone(), sent));
                }
            }
            offset += items.len();
            if items.is_empty() || offset as i64 >= page["total"].as_i64().unwrap() {
                break;
            }
        }
    }
    answered
}

/// Clients send messages as fast as answers come; the service is killed mid-stream. Returns
/// the answers clients received and the sessions they used.
async fn load_then_kill(child: &mut Child, base: &str) -> (HashSet<(String, String)>, Vec<String>) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut sessions = Vec::new();
    for _ in 0..CLIENTS {
        let mut res = client
            .post(format!("{base}/api/sessions"))
            .send_json(&json!({ "targetId": "echo" }))
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        sessions.push(body["id"].as_str().unwrap().to_string());
    }
    let acked = Rc::new(RefCell::new(HashSet::new()));
    for id in &sessions {
        let (client, acked, id, base) =
            (client.clone(), acked.clone(), id.clone(), base.to_string());
        actix_web::rt::spawn(async move {
            for n in 0.. {
                let message = format!("m{n}");
                let sent = client
                    .post(format!("{base}/api/sessions/{id}/messages"))
                    .send_json(&json!({ "message": message }))
                    .await;
                let Ok(mut res) = sent else { break };
                if res.status() != 200 {
                    break;
                }
                let Ok(body) = res.json::<Value>().await else {
                    break;
                };
                assert_eq!(body["content"], format!("echo: {message}"));
                acked.borrow_mut().insert((id.clone(), message));
            }
        });
    }
    // Long enough for several batch windows and commits under load.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    kill9(child);
    // Let the clients see their connections fail.
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let acked = acked.borrow().clone();
    (acked, sessions)
}

#[actix_web::test]
async fn kill_9_loses_no_acknowledged_answer_in_acknowledged_mode() {
    kill_9_loses_nothing_acknowledged(false).await;
}

/// The same promise with the store on PostgreSQL.
#[actix_web::test]
async fn kill_9_loses_no_acknowledged_answer_on_postgres() {
    kill_9_loses_nothing_acknowledged(true).await;
}

async fn kill_9_loses_nothing_acknowledged(postgres: bool) {
    let mock = MockUpstream::start().await;
    for round in 0..ROUNDS {
        let url = match postgres {
            true => Some(crate::pg::database().await),
            false => None,
        };
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("plugins/core")).unwrap();
        std::fs::write(
            data.path().join("targets.toml"),
            toml::to_string(
                &json!({ "targets": [crate::sessions::target("echo", &mock, "/chat")] }),
            )
            .unwrap(),
        )
        .unwrap();
        let (mut child, base) = spawn(data.path(), "acknowledged", url.as_deref());
        let (acked, sessions) = load_then_kill(&mut child, &base).await;
        assert!(
            acked.len() >= 50,
            "round {round}: the load reached only {} answers",
            acked.len()
        );

        let (mut child, base) = spawn(data.path(), "acknowledged", url.as_deref());
        let kept = stored(&base, &sessions).await;
        let lost: Vec<_> = acked.difference(&kept).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged answers were lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        // The sessions open at the kill are marked interrupted, not left open.
        let mut res = awc::Client::default()
            .get(format!("{base}/api/sessions/{}", sessions[0]))
            .send()
            .await
            .unwrap();
        let session: Value = res.json().await.unwrap();
        assert_eq!(session["state"], "interrupted", "{session}");
        kill9(&mut child);
    }
    mock.stop().await;
}

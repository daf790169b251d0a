//! Clients nobody here wrote: the official `openai` and `anthropic` Python SDKs and
//! LangChain's `ChatOpenAI` (pinned in `tools/sdk/requirements.txt`, installed by `.ci/run`
//! into `tools/sdk/.venv`) against a real service and the mock provider, changed only in
//! their base URL: chat and messages whole and streamed, tool calls and tool results (streamed
//! too), the model list, and a forged key (401), an unknown model (404) and a rate limit (429)
//! raised as the SDKs' own exception types. Then the transcript and audit of the sessions the
//! SDKs' traffic ran in show the plugins at work. A missing venv fails the test with the
//! command that installs it; it never skips.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::frontdoor::{key, start, transcript, MockProvider};
use crate::upstreams;

/// `tools/sdk/.venv/bin/python` with the SDKs importable, or a failure saying how to install
/// them.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("SWITCHYARD_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("tools/sdk/.venv/bin/python"));
    let works = std::process::Command::new(&python)
        .args(["-c", "import openai, anthropic, langchain_openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "the SDK test needs the official SDKs in {} . Install them with:\n\n    \
         python3 -m venv tools/sdk/.venv && tools/sdk/.venv/bin/pip install -r tools/sdk/requirements.txt\n\n\
         (Debian: `apt-get install python3-venv` first), or point SWITCHYARD_SDK_PYTHON at a python \
         with the versions pinned there.",
        python.display()
    );
    python
}

/// The `ok <name> {facts}` lines of the script's output, by name.
fn facts(output: &str, name: &str) -> Value {
    output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ok {name} ")))
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_else(|| panic!("no `ok {name}` in:\n{output}"))
}

#[actix_web::test]
async fn the_official_sdks_work_unchanged_against_the_front_doors() {
    let python = python();
    let provider = MockProvider::start();
    let upstream = upstreams::start(None);
    let app = start(&provider, &upstream, &[]).await;
    let (main_key, main_id) = key(&app, json!({ "name": "sdk" })).await;
    let (slow_key, _) = key(&app, json!({ "name": "sdk-slow", "requestsPerMinute": 1 })).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sdk/check_sdks.py");
    let url = app.url("");
    let output = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(script)
            .env("SWITCHYARD_URL", url)
            .env("SWITCHYARD_KEY", main_key)
            .env("SWITCHYARD_SLOW_KEY", slow_key)
            .output()
    })
    .await
    .expect("the run's thread")
    .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the SDK checks failed:\n{text}");
    assert!(text.contains("all ok"), "{text}");
    eprintln!("{text}");

    // The plugins ran on the SDKs' traffic, and it is in the transcripts and the audit log.
    for (check, provider_path) in [
        ("openai.chat", "/v1/chat/completions"),
        ("anthropic.messages", "/v1/messages"),
    ] {
        let session = facts(&text, check)["session"].as_str().unwrap().to_string();
        let rows = transcript(&app, &session, 2).await;
        let items = rows["items"].as_array().unwrap();
        assert_eq!(items[0]["content"], "hello", "{rows}");
        assert_eq!(
            items[1]["content"], "echo: hello [tagged] (checked)",
            "{rows}"
        );
        assert_eq!(items[1]["metadata"]["tagger"]["turn"], 1, "{rows}");
        assert_eq!(items[1]["metadata"]["apiKey"], main_id.as_str(), "{rows}");
        let (_, audit) = app.get(&format!("/api/sessions/{session}/audit")).await;
        let entries = audit["entries"].as_array().unwrap();
        assert_eq!(entries[0]["message"], "hello [tagged]", "{audit}");
        // The audit plugin (priority 200) records the answer after the tagger's afterReceive.
        assert_eq!(
            entries[1]["responseContent"], "echo: hello [tagged] (checked)",
            "{audit}"
        );
        assert!(!provider.bodies(provider_path).is_empty());
    }
    // A tool call's answer is in its transcript beside the text.
    let (_, sessions) = app
        .get("/api/sessions?targetId=model:gpt-test&limit=100")
        .await;
    let mut found = false;
    for s in sessions["items"].as_array().unwrap() {
        let rows = transcript(&app, s["id"].as_str().unwrap(), 1).await;
        found |= rows["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["metadata"]["toolCalls"][0]["name"] == "get_weather");
    }
    assert!(found, "no transcript holds the tool call: {sessions}");
    app.stop().await;
    provider.stop().await;
    upstream.stop().await;
}

//! A small W3C WebDriver client for the dashboard's browser tests (`ui`): Debian's
//! `chromedriver` started on a free port, headless Chromium, and the handful of commands the
//! tests use (navigate, find, click, type, run a script, screenshot), spoken as JSON over
//! `awc`, which the gateway already depends on. A WebDriver crate (fantoccini with rustls) cost
//! 149 s of CPU to build cold for what is about two hundred lines here. The driver and its
//! browser are ended on drop. A missing `chromium`/`chromedriver` fails the test, saying what
//! to install.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

/// The key of an element reference in the W3C protocol.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long `find`, `wait_*` poll before failing.
pub const WAIT: Duration = Duration::from_secs(15);

fn program(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: the dashboard's browser tests need Debian's Chromium \
             and its driver (`apt-get install -y chromium chromium-driver`)"
        )
    })
}

/// One browser at a time across the test binary: on two cores, several Chromiums at once slow
/// every other test down.
fn one_at_a_time() -> Arc<tokio::sync::Mutex<()>> {
    static LOCK: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    LOCK.get_or_init(Arc::default).clone()
}

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    client: awc::Client,
    /// Released after `drop` has ended the browser.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// An element found on the page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    /// Starts `chromedriver` on a free port and a headless Chromium session.
    pub async fn start() -> Browser {
        let chromium = program("chromium");
        let chromedriver = program("chromedriver");
        let turn = one_at_a_time().lock_owned().await;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            client,
            _turn: turn,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .client
                .get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await;
            if let Ok(mut response) = ready {
                let status: Value = response.json().await.unwrap_or(Value::Null);
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not become ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let created = browser
            .raw(
                awc::http::Method::POST,
                "/session",
                Some(json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium.display().to_string(),
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1400,1000",
                            "--hide-scrollbars", "--force-device-scale-factor=1"],
                    },
                } } })),
            )
            .await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    /// A command on the driver, without the session prefix; panics on a WebDriver error.
    async fn raw(&self, method: awc::http::Method, path: &str, body: Option<Value>) -> Value {
        self.attempt(method, path, body)
            .await
            .unwrap_or_else(|(status, error)| panic!("WebDriver {path} answered {status}: {error}"))
    }

    /// A command on the driver: its value, or the status and error it answered.
    async fn attempt(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, Value)> {
        let request = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", self.port));
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let bytes = response
            .body()
            .limit(64 << 20)
            .await
            .expect("WebDriver body");
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if response.status().is_success() {
            Ok(value["value"].clone())
        } else {
            Err((response.status().as_u16(), value["value"].clone()))
        }
    }

    async fn cmd(&self, method: awc::http::Method, path: &str, body: Option<Value>) -> Value {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(awc::http::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.cmd(
            awc::http::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The first element matching `css`, waiting for one to appear.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = self
                .cmd(
                    awc::http::Method::POST,
                    "/elements",
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            if let Some(id) = found[0][ELEMENT].as_str() {
                return Element(id.to_string());
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.page_text().await;
                panic!("nothing matches `{css}` within {WAIT:?}; the page shows: {text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`; when the page redrew it in between (the tree
    /// redraws on every event), finds it again.
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let element = self.find(css).await;
            let path = format!("/session/{}/element/{}/click", self.session, element.0);
            match self
                .attempt(awc::http::Method::POST, &path, Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err((_, error))
                    if error["error"] == "stale element reference"
                        && tokio::time::Instant::now() < deadline => {}
                Err((status, error)) => panic!("clicking `{css}` answered {status}: {error}"),
            }
        }
    }

    /// Clears the field matching `css` and types `text` into it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.cmd(
            awc::http::Method::POST,
            &format!("/element/{}/clear", element.0),
            Some(json!({})),
        )
        .await;
        self.cmd(
            awc::http::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Chooses the option with `value` in the select matching `css`, as a user would.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await;
        self.click(&format!("{css} option[value=\"{value}\"]"))
            .await;
    }

    /// The text of the first element matching `css` ("" when there is none).
    pub async fn text_of(&self, css: &str) -> String {
        self.eval(
            "const el = document.querySelector(arguments[0]); return el ? el.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// What the page shows (its main part and any messages), for failure reports.
    async fn page_text(&self) -> String {
        let main = self.text_of("main").await;
        let toasts = self.text_of("#toasts").await;
        format!("{main}\n-- messages: {toasts}")
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.text_of(css).await;
            if text.contains(needle) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                let main = self.page_text().await;
                panic!("`{css}` never showed {needle:?} (last: {text:?}); the page shows: {main}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `script` (a function body) returns true.
    pub async fn wait_until(&self, what: &str, script: &str, args: Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.eval(script, args.clone()).await != true {
            if tokio::time::Instant::now() > deadline {
                let main = self.page_text().await;
                panic!("timed out waiting until {what}; the page shows: {main}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window as `target/ui-screenshots/<name>.png` in the repository
    /// (CI collects `target/`); returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let data = self.cmd(awc::http::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    /// Ends the session (which quits Chromium), then the driver. Blocking on purpose: a
    /// browser must not outlive its test.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let request = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.session, self.port
                );
                if stream.write_all(request.as_bytes()).is_ok() {
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

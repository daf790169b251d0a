//! `fetch` for script plugins: the host side of the call, under the plugin's policy.
//!
//! Owns the fetch policy (allowed hosts as globs, response size cap, timeout, concurrency cap:
//! pure checks, unit- and property-tested), performing one request through the gateway's own
//! HTTP client (rustls, the system's roots) with redirects followed here so every hop is checked
//! against the policy, and the per-plugin counters the API shows. Does not own the JavaScript
//! `fetch`/`Request`/`Response` objects (`host/web.js`) nor when a call runs (`plugin`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use url::Url;

/// What a plugin may fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Host globs (`*` matches any run of characters): `api.example.com`, `*.example.com`,
    /// `127.0.0.1:8080` (a pattern with a port matches that port only), `*` for any host.
    pub allowed_hosts: Vec<String>,
    pub max_response_bytes: usize,
    /// For the whole call: connecting, every redirect and reading the body.
    pub timeout: Duration,
    pub max_concurrent: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allowed_hosts: vec!["*".into()],
            max_response_bytes: 10 << 20,
            timeout: Duration::from_secs(30),
            max_concurrent: 8,
        }
    }
}

/// Why a fetch failed; `code` is what the script's error carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("fetch refused: {0}")]
    Refused(String),
    #[error("fetch timed out after {0} ms")]
    Timeout(u64),
    #[error("fetch refused: the response is larger than the plugin's cap of {0} bytes")]
    TooLarge(usize),
    #[error("fetch refused: the plugin already has {0} fetches in flight")]
    Busy(usize),
    #[error("fetch failed: {0}")]
    Failed(String),
}

impl FetchError {
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::Refused(_) => "fetch_refused",
            FetchError::Timeout(_) => "fetch_timeout",
            FetchError::TooLarge(_) => "fetch_too_large",
            FetchError::Busy(_) => "fetch_busy",
            FetchError::Failed(_) => "fetch_failed",
        }
    }

    /// What the script's promise is rejected with.
    pub fn to_json(&self) -> Value {
        json!({ "code": self.code(), "message": self.to_string() })
    }
}

/// Whether `pattern` (a glob where `*` matches any run of characters) matches `text`.
/// Case-insensitive, as host names are.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let (p, t) = (p.as_bytes(), t.as_bytes());
    // Classic two-pointer wildcard match: remember the last `*` and where it started matching.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl FetchPolicy {
    /// Checks one URL (the first request and every redirect) against the policy.
    pub fn check(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Refused(format!(
                "only http: and https: URLs can be fetched, not {}:",
                url.scheme()
            )));
        }
        let host = url.host_str().unwrap_or_default();
        // IPv6 literals keep their brackets in host_str, which is what an operator writes too.
        let port = url.port_or_known_default().unwrap_or(0);
        let with_port = format!("{host}:{port}");
        let allowed = self.allowed_hosts.iter().any(|pattern| {
            if has_port(pattern) {
                glob_matches(pattern, &with_port)
            } else {
                glob_matches(pattern, host)
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(FetchError::Refused(format!(
                "host '{host}' is not in this plugin's allowed hosts ({})",
                self.allowed_hosts.join(", ")
            )))
        }
    }
}

/// Whether a host pattern names a port (`host:8080`, `[::1]:8080`), not just an IPv6 literal.
fn has_port(pattern: &str) -> bool {
    match pattern.rsplit_once(':') {
        Some((host, port)) => {
            (!host.contains(':') || host.ends_with(']'))
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit() || b == b'*')
        }
        None => false,
    }
}

/// How a script asked redirects to be handled (`Request.redirect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    Follow,
    Manual,
    Error,
}

/// One request as the script's `fetch` hands it over.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub redirect: Redirect,
}

impl FetchRequest {
    /// From the host-call payload: `{url, method, headers: [[n, v]], body: base64|null, redirect}`.
    pub fn from_json(payload: &Value) -> Result<Self, FetchError> {
        let bad = |what: &str| FetchError::Failed(format!("invalid request: {what}"));
        let url = payload["url"]
            .as_str()
            .ok_or_else(|| bad("url"))?
            .to_string();
        let method = payload["method"].as_str().unwrap_or("GET").to_string();
        let headers = payload["headers"]
            .as_array()
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|pair| {
                        Some((
                            pair.get(0)?.as_str()?.to_string(),
                            pair.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = match payload["body"].as_str() {
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| bad("body"))?,
            ),
            None => None,
        };
        let redirect = match payload["redirect"].as_str() {
            Some("manual") => Redirect::Manual,
            Some("error") => Redirect::Error,
            _ => Redirect::Follow,
        };
        Ok(FetchRequest {
            url,
            method,
            headers,
            body,
            redirect,
        })
    }
}

/// What the script's `Response` is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub status: u16,
    pub status_text: String,
    pub url: String,
    pub redirected: bool,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FetchResponse {
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "statusText": self.status_text,
            "url": self.url,
            "redirected": self.redirected,
            "headers": self.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            "body": base64::engine::general_purpose::STANDARD.encode(&self.body),
        })
    }
}

/// Per-plugin counters, shown by the API (`script.fetch`).
#[derive(Debug, Default)]
pub struct FetchStats {
    calls: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    bytes_received: AtomicU64,
}

/// A snapshot of [`FetchStats`].
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FetchCounts {
    pub calls: u64,
    pub failed: u64,
    pub refused: u64,
    pub bytes_received: u64,
}

impl FetchStats {
    pub fn snapshot(&self) -> FetchCounts {
        FetchCounts {
            calls: self.calls.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }

    fn record(&self, outcome: &Result<FetchResponse, FetchError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(response) => {
                self.bytes_received
                    .fetch_add(response.body.len() as u64, Ordering::Relaxed);
            }
            Err(FetchError::Refused(_) | FetchError::Busy(_) | FetchError::TooLarge(_)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A plugin's fetch policy with what enforces it across calls.
pub struct Fetcher {
    pub plugin: String,
    pub policy: FetchPolicy,
    in_flight: Arc<tokio::sync::Semaphore>,
    pub stats: Arc<FetchStats>,
}

impl Fetcher {
    pub fn new(plugin: &str, policy: FetchPolicy, stats: Arc<FetchStats>) -> Self {
        Fetcher {
            plugin: plugin.to_string(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(policy.max_concurrent.max(1))),
            policy,
            stats,
        }
    }

    /// Performs one fetch under the policy; logs and counts it.
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, FetchError> {
        let began = Instant::now();
        let method = request.method.clone();
        let target = Url::parse(&request.url)
            .map(|u| u.host_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let outcome = match self.in_flight.clone().try_acquire_owned() {
            Ok(_permit) => {
                let timeout = self.policy.timeout;
                match tokio::time::timeout(timeout, perform(&self.policy, request)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(FetchError::Timeout(timeout.as_millis() as u64)),
                }
            }
            Err(_) => Err(FetchError::Busy(self.policy.max_concurrent)),
        };
        self.stats.record(&outcome);
        let duration_ms = began.elapsed().as_millis() as u64;
        match &outcome {
            Ok(response) => tracing::info!(
                plugin = %self.plugin, %method, host = %target, status = response.status,
                bytes = response.body.len(), duration_ms, "Plugin fetch."
            ),
            Err(error) => tracing::warn!(
                plugin = %self.plugin, %method, host = %target, code = error.code(),
                %error, duration_ms, "Plugin fetch failed."
            ),
        }
        outcome
    }
}

/// Redirects followed before giving up (what browsers allow).
const MAX_REDIRECTS: usize = 20;

/// Headers a script may not set (the host owns framing and the connection), as browsers do.
const FORBIDDEN: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    // Bodies reach the script as sent; the client does not decompress.
    "accept-encoding",
];

async fn perform(policy: &FetchPolicy, request: FetchRequest) -> Result<FetchResponse, FetchError> {
    use awc::http::{header, Method};

    let mut url = Url::parse(&request.url)
        .map_err(|e| FetchError::Failed(format!("invalid URL '{}': {e}", request.url)))?;
    let mut method = Method::from_bytes(request.method.as_bytes())
        .map_err(|_| FetchError::Failed(format!("invalid method '{}'", request.method)))?;
    let mut headers = Vec::with_capacity(request.headers.len());
    for (name, value) in &request.headers {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FetchError::Failed(format!("invalid header name '{name}'")))?;
        if FORBIDDEN.contains(&name.as_str()) {
            continue;
        }
        // The script's strings carry header bytes one per character (ISO-8859-1), as browsers do.
        let bytes: Option<Vec<u8>> = value.chars().map(|c| u8::try_from(c as u32).ok()).collect();
        let value = bytes
            .and_then(|b| header::HeaderValue::from_bytes(&b).ok())
            .ok_or_else(|| FetchError::Failed(format!("invalid value for header '{name}'")))?;
        headers.push((name, value));
    }
    let mut body = request.body;
    let client = client();
    let mut redirected = false;
    for _ in 0..=MAX_REDIRECTS {
        policy.check(&url)?;
        let mut outgoing = client.request(method.clone(), url.as_str());
        for (name, value) in &headers {
            outgoing = outgoing.append_header((name.clone(), value.clone()));
        }
        let sent = match &body {
            Some(bytes) => outgoing.send_body(bytes.clone()).await,
            None => outgoing.send().await,
        };
        let mut response = sent.map_err(|e| FetchError::Failed(describe_send_error(&e)))?;
        let status = response.status();
        if status.is_redirection() && request.redirect != Redirect::Manual {
            if let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
            {
                if request.redirect == Redirect::Error {
                    return Err(FetchError::Failed(format!(
                        "the server redirected to {location} and the request's redirect mode is 'error'"
                    )));
                }
                let next = url.join(location).map_err(|e| {
                    FetchError::Failed(format!("invalid redirect location '{location}': {e}"))
                })?;
                // Credentials are for the origin they were written for, not wherever it
                // redirects (what browsers and Node do).
                if next.origin() != url.origin() {
                    headers.retain(|(n, _)| {
                        !matches!(
                            n.as_str(),
                            "authorization" | "proxy-authorization" | "cookie"
                        )
                    });
                }
                url = next;
                // 303, and 301/302 after a POST, turn into a GET without a body (as browsers do).
                if status.as_u16() == 303
                    || (matches!(status.as_u16(), 301 | 302) && method == Method::POST)
                {
                    if method != Method::HEAD {
                        method = Method::GET;
                    }
                    body = None;
                    headers.retain(|(n, _)| !n.as_str().starts_with("content-"));
                }
                redirected = true;
                continue;
            }
        }
        let bytes = response
            .body()
            .limit(policy.max_response_bytes)
            .await
            .map_err(|e| match e {
                awc::error::PayloadError::Overflow => {
                    FetchError::TooLarge(policy.max_response_bytes)
                }
                other => FetchError::Failed(format!("reading the response failed: {other}")),
            })?;
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    v.as_bytes().iter().map(|&b| char::from(b)).collect(),
                )
            })
            .collect();
        return Ok(FetchResponse {
            status: status.as_u16(),
            status_text: status.canonical_reason().unwrap_or_default().to_string(),
            url: url.to_string(),
            redirected,
            headers,
            body: bytes.to_vec(),
        });
    }
    Err(FetchError::Failed(format!(
        "more than {MAX_REDIRECTS} redirects"
    )))
}

fn describe_send_error(error: &awc::error::SendRequestError) -> String {
    if let Some(tls) = crate::connector::tls::TlsError::from_send_error(error) {
        return tls.to_string();
    }
    error.to_string()
}

thread_local! {
    /// Redirects are followed by `perform`, hop by hop under the policy, never by the client.
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(
            crate::connector::tls::client_config(&Default::default())
                .expect("the default TLS configuration always builds"),
        ))
        .disable_redirects()
        .disable_timeout()
        .finish();
}

fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(hosts: &[&str]) -> FetchPolicy {
        FetchPolicy {
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..FetchPolicy::default()
        }
    }

    fn check(hosts: &[&str], url: &str) -> Result<(), FetchError> {
        policy(hosts).check(&Url::parse(url).unwrap())
    }

    #[test]
    fn globs_match_hosts_and_ports() {
        assert!(check(&["*"], "https://api.openai.com/v1").is_ok());
        assert!(check(&["*.example.com"], "https://a.b.example.com/").is_ok());
        assert!(check(&["*.example.com"], "https://example.com/").is_err());
        assert!(check(&["API.example.com"], "https://api.EXAMPLE.com/").is_ok());
        assert!(check(&["127.0.0.1:8080"], "http://127.0.0.1:8080/x").is_ok());
        assert!(check(&["127.0.0.1:8080"], "http://127.0.0.1:9090/x").is_err());
        assert!(check(&["localhost:*"], "http://localhost:1234/").is_ok());
        assert!(check(&["example.com"], "https://example.com:443/").is_ok());
        assert!(check(&["example.com:443"], "https://example.com/").is_ok());
        assert!(check(&["[::1]"], "http://[::1]:80/").is_ok());
        assert!(check(&["[::1]:8080"], "http://[::1]:80/").is_err());
    }

    #[test]
    fn refusals_say_why() {
        let e = check(&["api.example.com"], "https://evil.test/").unwrap_err();
        assert_eq!(e.code(), "fetch_refused");
        assert!(e.to_string().contains("'evil.test'"), "{e}");
        let e = check(&["*"], "file:///etc/passwd").unwrap_err();
        assert!(e.to_string().contains("only http: and https:"), "{e}");
        assert!(check(&[], "https://a.test/").is_err());
    }

    #[test]
    fn requests_are_read_from_the_script_payload() {
        let r = FetchRequest::from_json(&json!({
            "url": "https://a.test/", "method": "POST", "headers": [["x-a", "1"], ["x-b", "2"]],
            "body": "aGk=", "redirect": "manual"
        }))
        .unwrap();
        assert_eq!(
            r.headers,
            [("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        assert_eq!(r.body.as_deref(), Some(&b"hi"[..]));
        assert_eq!(r.redirect, Redirect::Manual);
        assert!(FetchRequest::from_json(&json!({ "method": "GET" })).is_err());
    }

    proptest! {
        #[test]
        fn a_star_matches_everything_and_a_literal_only_itself(host in "[a-z0-9.-]{0,30}") {
            prop_assert!(glob_matches("*", &host));
            prop_assert!(glob_matches(&host, &host));
            let longer = format!("{host}x");
            prop_assert!(!glob_matches(&host, &longer));
        }

        #[test]
        fn a_prefix_star_matches_every_suffix(prefix in "[a-z]{0,8}", suffix in "[a-z.]{0,12}") {
            let pattern = format!("*{suffix}");
            let text = format!("{prefix}{suffix}");
            prop_assert!(glob_matches(&pattern, &text));
        }
    }
}

//! Small helpers shared by several modules: timestamps in RFC 3339, request-id generation,
//! the mask that stands in for a secret in every response, and URLs as logs may show them.

use std::time::SystemTime;

use serde::Serializer;

/// What every response and log shows in place of a secret value.
pub const MASK: &str = "********";

/// RFC 3339 with milliseconds, UTC (`2026-11-21T23:31:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn serialize_rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// A random 128-bit id as 32 hex digits (request ids, subscription ids in logs).
pub fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// `url` as logs may show it: no user, password or query (any of them can carry a
/// credential); the query is replaced by `?…`. Not a URL: the mask.
pub fn loggable_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let had_query = parsed.query().is_some();
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut shown = parsed.to_string();
            if had_query {
                shown.push_str("?…");
            }
            shown
        }
        Err(_) => MASK.to_string(),
    }
}

/// `url` as messages and logs may show it when the operator must tell which server is meant
/// (a database URL): user, host, port and path kept, the password replaced by the mask and the
/// query (which may carry a password too) by `?…`. Not a URL: the mask.
pub fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let had_query = parsed.query().is_some();
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some(MASK));
            }
            parsed.set_query(None);
            parsed.set_fragment(None);
            let mut shown = parsed.to_string();
            if had_query {
                shown.push_str("?…");
            }
            shown
        }
        Err(_) => MASK.to_string(),
    }
}

#[cfg(test)]
mod loggable_url_tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_never_reach_a_log() {
        assert_eq!(
            loggable_url("wss://bot:s3cret@chat.example.com:8443/ws?token=abc#x"),
            "wss://chat.example.com:8443/ws?…"
        );
        assert_eq!(
            loggable_url("ws://127.0.0.1:9000/chat"),
            "ws://127.0.0.1:9000/chat"
        );
        assert_eq!(loggable_url("not a url with s3cret"), MASK);
    }

    #[test]
    fn a_database_url_keeps_its_user_and_host_but_never_its_password() {
        assert_eq!(
            masked_url(
                "postgres://app:s3cret@db.internal:5432/switchyard?password=x&sslmode=require"
            ),
            "postgres://app:********@db.internal:5432/switchyard?…"
        );
        assert_eq!(
            masked_url("postgresql://app@db/switchyard"),
            "postgresql://app@db/switchyard"
        );
        assert_eq!(masked_url("postgres://app:s3cret@[bad"), MASK);
    }
}

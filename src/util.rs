//! Small helpers shared by several modules: timestamps in RFC 3339, request-id generation and
//! the mask that stands in for a secret in every response.

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

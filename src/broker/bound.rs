//! The payload bound: no event carries more than `broker.max_event_bytes` of `data`.
//!
//! Owns measuring a payload (its size as compact JSON, the way every subscriber and every
//! stream client would write it), the marker that replaces an oversized payload, and the
//! rate-limited warnings of the broker. Does not own delivery (`Broker`) nor the envelope
//! (`events`).
//!
//! Measuring never serialises a small event: one walk adds up a lower and an upper bound of
//! each node's size from lengths alone (a string is its bytes plus quotes, and at most six
//! bytes per byte escaped; an integer its digits; a float 3 to 24 bytes), without reading a
//! string's bytes or formatting a number. Upper bound within the limit: it fits. Lower bound
//! past it: it does not, and the walk stops there. Only in between is the exact size counted
//! (string lengths plus their escapes, floats formatted into a counter), stopping past the
//! limit; since the lower bound fits, that pass reads at most about `limit` bytes. So the work
//! is bounded by the limit however large the payload, and nothing is allocated.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Number, Value};

/// `broker.max_event_bytes` when nothing sets it.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 << 10;
/// The smallest bound accepted: the marker itself must fit in it.
pub const MIN_MAX_EVENT_BYTES: usize = 1024;
/// At most this much of the original JSON goes into the marker's `preview` (and at most a
/// quarter of the bound).
pub const PREVIEW_BYTES: usize = 1024;
/// A top-level string field of an oversized object survives in the marker up to this length.
const KEPT_STRING_BYTES: usize = 256;

/// Whether `value` takes at most `limit` bytes as compact JSON (exactly as serde_json writes
/// it).
pub fn fits(value: &Value, limit: usize) -> bool {
    let mut size = Bounds::default();
    if !size.add_value(value, limit) {
        return false;
    }
    size.upper <= limit || exact_len_within(value, limit).is_some()
}

/// Bounds of a JSON size, added up node by node.
#[derive(Debug, Default)]
struct Bounds {
    lower: usize,
    upper: usize,
}

impl Bounds {
    fn add(&mut self, lower: usize, upper: usize) {
        self.lower = self.lower.saturating_add(lower);
        self.upper = self.upper.saturating_add(upper);
    }

    /// Adds `value`; false as soon as the lower bound passes `limit` (then it cannot fit, and
    /// the rest is not walked).
    fn add_value(&mut self, value: &Value, limit: usize) -> bool {
        match value {
            Value::Null | Value::Bool(true) => self.add(4, 4),
            Value::Bool(false) => self.add(5, 5),
            Value::Number(n) => {
                let (lower, upper) = number_bounds(n);
                self.add(lower, upper);
            }
            Value::String(s) => self.add_string(s),
            // Brackets and commas, then the items.
            Value::Array(items) => {
                let punctuation = 2 + items.len().saturating_sub(1);
                self.add(punctuation, punctuation);
                return self.lower <= limit && items.iter().all(|item| self.add_value(item, limit));
            }
            // Braces and commas, then each key, its colon and its value.
            Value::Object(fields) => {
                let punctuation = 2 + fields.len().saturating_sub(1);
                self.add(punctuation, punctuation);
                return self.lower <= limit
                    && fields.iter().all(|(key, item)| {
                        self.add_string(key);
                        self.add(1, 1);
                        self.lower <= limit && self.add_value(item, limit)
                    });
            }
        }
        self.lower <= limit
    }

    /// Quotes and the bytes; at most every byte escaped as `\u00XX`.
    fn add_string(&mut self, s: &str) {
        self.add(
            2 + s.len(),
            2usize.saturating_add(s.len().saturating_mul(6)),
        );
    }

    /// The upper bound of `value` alone.
    fn upper_of(value: &Value) -> usize {
        let mut size = Bounds::default();
        size.add_value(value, usize::MAX);
        size.upper
    }
}

/// Integers are written with their digits; a float takes 3 (`0.0`) to 24 bytes
/// (`-1.7976931348623157e308`).
fn number_bounds(n: &Number) -> (usize, usize) {
    let digits = |u: u64| u.checked_ilog10().map_or(1, |l| l as usize + 1);
    let exact = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => Some(digits(u)),
        (None, Some(i)) => Some(1 + digits(i.unsigned_abs())),
        (None, None) => None,
    };
    exact.map_or((3, 24), |len| (len, len))
}

/// A writer that only counts (a float's length).
struct Counter {
    written: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The exact length of `value` as serde_json writes it, or `None` past `limit`. Counted from
/// lengths and escapes, without writing anything (only a float is formatted, by serde_json,
/// into a counter).
fn exact_len_within(value: &Value, limit: usize) -> Option<usize> {
    let mut left = limit;
    take_exact(value, &mut left).then(|| limit - left)
}

/// The exact length of `value` as JSON (no limit: for the marker's `originalBytes`).
pub fn json_len(value: &Value) -> usize {
    exact_len_within(value, usize::MAX).unwrap_or(usize::MAX)
}

/// Takes `n` from `left`, or says it cannot.
fn take(left: &mut usize, n: usize) -> bool {
    match left.checked_sub(n) {
        Some(rest) => {
            *left = rest;
            true
        }
        None => false,
    }
}

/// Takes `value`'s exact JSON length from `left`; false as soon as it does not fit.
fn take_exact(value: &Value, left: &mut usize) -> bool {
    let len = match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => number_len(n),
        Value::String(s) => string_len(s),
        Value::Array(items) => {
            return take(left, 2 + items.len().saturating_sub(1))
                && items.iter().all(|item| take_exact(item, left));
        }
        Value::Object(fields) => {
            return take(left, 2 + fields.len().saturating_sub(1))
                && fields
                    .iter()
                    .all(|(key, item)| take(left, string_len(key) + 1) && take_exact(item, left));
        }
    };
    take(left, len)
}

fn number_len(n: &Number) -> usize {
    match number_bounds(n) {
        (lower, upper) if lower == upper => lower,
        // A float: as serde_json formats it.
        _ => {
            let mut counter = Counter { written: 0 };
            let _ = serde_json::to_writer(&mut counter, n);
            counter.written
        }
    }
}

/// A string as serde_json writes it: quotes, and `\"`, `\\`, `\b`, `\t`, `\n`, `\f`, `\r`
/// or `\u00XX` for the bytes that must be escaped.
fn string_len(s: &str) -> usize {
    // Counted per chunk in byte-sized counters, which the compiler vectorises (about 5 GB/s,
    // four times a plain count).
    let (mut control, mut short_control, mut quote) = (0usize, 0usize, 0usize);
    for chunk in s.as_bytes().chunks(255) {
        let (mut c, mut sc, mut q) = (0u8, 0u8, 0u8);
        for &b in chunk {
            c += u8::from(b < 0x20);
            sc += u8::from(matches!(b, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d));
            q += u8::from(b == b'"' || b == b'\\');
        }
        control += usize::from(c);
        short_control += usize::from(sc);
        quote += usize::from(q);
    }
    2 + s.len() + 5 * (control - short_control) + short_control + quote
}

/// A writer that keeps the first `cap` bytes and then stops serde_json.
struct Head {
    bytes: Vec<u8>,
    cap: usize,
}

impl io::Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.cap - self.bytes.len();
        if buf.len() > room {
            self.bytes.extend_from_slice(&buf[..room]);
            return Err(io::Error::other("preview full"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A copy of the start of `value`: enough that its JSON begins with the same `budget` bytes
/// as `value`'s, at a cost bounded by `budget` however large `value` is. `left` counts down
/// how many bytes, at least, both write before the current point; the copy ends (and its JSON
/// starts to differ) only once that reaches 0.
fn clip(value: &Value, left: &mut usize) -> Value {
    match value {
        Value::String(s) => {
            *left = left.saturating_sub(1);
            // At least `left` bytes of it (whole characters), each written as one or more.
            let mut end = (*left).min(s.len());
            while !s.is_char_boundary(end) {
                end += 1;
            }
            *left = left.saturating_sub(end + 1);
            Value::String(s[..end].to_string())
        }
        Value::Array(items) => {
            *left = left.saturating_sub(1);
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                // The comma here would be a closing bracket in the copy.
                if *left == 0 {
                    break;
                }
                *left = left.saturating_sub(usize::from(i > 0));
                out.push(clip(item, left));
            }
            Value::Array(out)
        }
        Value::Object(fields) => {
            *left = left.saturating_sub(1);
            let mut out = Map::new();
            for (i, (key, item)) in fields.iter().enumerate() {
                if *left == 0 {
                    break;
                }
                // The comma, the quoted key and the colon.
                *left = left.saturating_sub(usize::from(i > 0) + key.len() + 3);
                let item = clip(item, left);
                out.insert(key.clone(), item);
            }
            Value::Object(out)
        }
        scalar => {
            *left = left.saturating_sub(1);
            scalar.clone()
        }
    }
}

/// The start of `value`'s JSON text, cut so that, written as a JSON string (escapes
/// included), it takes at most `budget` bytes without its quotes.
fn preview(value: &Value, budget: usize) -> String {
    let mut head = Head {
        bytes: Vec::with_capacity(budget),
        cap: budget,
    };
    // serde_json reads a whole string before writing it: write a clipped copy, not a string
    // of 100 MB.
    let _ = serde_json::to_writer(&mut head, &clip(value, &mut budget.clone()));
    // The cut may split a character: keep the valid part.
    let text = match std::str::from_utf8(&head.bytes) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&head.bytes[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut used = 0;
    let end = text
        .char_indices()
        .find(|&(_, c)| {
            used += escaped_len(c);
            used > budget
        })
        .map_or(text.len(), |(at, _)| at);
    text[..end].to_string()
}

/// Bytes `c` takes inside a JSON string, as serde_json escapes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The keys of the marker; a payload's own fields of these names are not kept.
const MARKER_KEYS: [&str; 4] = ["truncated", "originalBytes", "maxBytes", "preview"];

/// What replaces a payload of `original` bytes over the bound `max`:
/// `{"truncated": true, "originalBytes", "maxBytes", "preview"}`, followed, when the payload
/// was an object, by its small top-level fields (scalars, strings up to 256 bytes) so a
/// subscriber still sees e.g. `toolName`, `plugin` and `durationMs`. Never more than `max`
/// bytes of JSON (for `max >= MIN_MAX_EVENT_BYTES`).
pub fn marker(data: &Value, original: usize, max: usize) -> Value {
    let mut out = Map::new();
    out.insert("truncated".into(), Value::Bool(true));
    out.insert("originalBytes".into(), original.into());
    out.insert("maxBytes".into(), max.into());
    out.insert(
        "preview".into(),
        Value::String(preview(data, PREVIEW_BYTES.min(max / 4))),
    );
    if let Value::Object(fields) = data {
        // The fixed part takes at most ~100 bytes and the preview a quarter: the kept fields
        // get half of the bound.
        let mut left = max / 2;
        for (key, value) in fields {
            let small = match value {
                Value::Null | Value::Bool(_) | Value::Number(_) => true,
                Value::String(s) => s.len() <= KEPT_STRING_BYTES,
                Value::Array(_) | Value::Object(_) => false,
            };
            if !small || MARKER_KEYS.contains(&key.as_str()) {
                continue;
            }
            // The comma, the key, the colon and the value, at their largest.
            let mut cost = Bounds::default();
            cost.add_string(key);
            cost.add(2, 2);
            let cost = cost.upper + Bounds::upper_of(value);
            let Some(rest) = left.checked_sub(cost) else {
                break;
            };
            left = rest;
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// At most one warning per key and period; the ones held back are counted into the next.
pub struct WarnLimiter {
    period: Duration,
    last: Mutex<HashMap<String, (Instant, u64)>>,
}

/// Keys remembered at most (event names are chosen by plugins).
const LIMITER_KEYS: usize = 1024;

impl WarnLimiter {
    pub fn new(period: Duration) -> Self {
        WarnLimiter {
            period,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last warning)` when a warning for `key` may be logged now.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, held)) = last.get_mut(key) {
            if now.duration_since(*at) < self.period {
                *held += 1;
                return None;
            }
            let held_back = *held;
            *at = now;
            *held = 0;
            return Some(held_back);
        }
        if last.len() >= LIMITER_KEYS {
            let period = self.period;
            last.retain(|_, (at, _)| now.duration_since(*at) < period);
            if last.len() >= LIMITER_KEYS {
                last.clear();
            }
        }
        last.insert(key.to_string(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn real_len(value: &Value) -> usize {
        serde_json::to_vec(value).unwrap().len()
    }

    #[test]
    fn the_measure_is_the_exact_json_length_at_every_limit() {
        let samples = [
            json!(null),
            json!(true),
            json!(-9223372036854775808i64),
            json!(18446744073709551615u64),
            json!(-1.7976931348623157e308),
            json!(0.1),
            json!("plain"),
            json!("\"\\\u{1}\u{1f}\n\té€😀"),
            json!([]),
            json!({}),
            json!([1, [2, [3, {}]], "x"]),
            json!({ "toolName": "t", "params": { "a": [1.5, null, false] }, "result": "r\"" }),
        ];
        for value in samples {
            let len = real_len(&value);
            assert_eq!(json_len(&value), len, "{value}");
            for limit in [0, 1, len.saturating_sub(1), len, len + 1, 6 * len + 100] {
                assert_eq!(fits(&value, limit), len <= limit, "{value} at {limit}");
            }
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "(\\PC|[\"\\\\\u{0}-\u{1f}]){0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-z\"\u{1}é]{0,4}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn fits_agrees_with_serde_json(value in any_json(), slack in 0usize..40) {
            let len = real_len(&value);
            prop_assert_eq!(json_len(&value), len);
            let mut size = Bounds::default();
            size.add_value(&value, usize::MAX);
            prop_assert!(size.lower <= len && len <= size.upper, "{:?} for {}", size, len);
            for limit in [len.saturating_sub(slack), len.saturating_sub(1), len, len + slack] {
                prop_assert_eq!(fits(&value, limit), len <= limit, "at {}", limit);
            }
        }
    }

    proptest! {
        #[test]
        fn a_clipped_copy_starts_like_the_original(value in any_json(), budget in 0usize..64) {
            let full = serde_json::to_vec(&value).unwrap();
            let clipped = serde_json::to_vec(&clip(&value, &mut budget.clone())).unwrap();
            let n = budget.min(full.len());
            prop_assert!(clipped.len() >= n);
            prop_assert_eq!(&clipped[..n], &full[..n]);
        }
    }

    #[test]
    fn a_huge_payload_is_refused_after_bounded_work() {
        let value = json!({ "blob": "x".repeat(64 << 20) });
        let began = Instant::now();
        assert!(!fits(&value, 256 << 10));
        // Counting stops one byte past the limit, not after 64 MiB.
        assert!(began.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn the_marker_fits_the_bound_and_keeps_small_fields() {
        for max in [MIN_MAX_EVENT_BYTES, 4096, DEFAULT_MAX_EVENT_BYTES] {
            let mut fields = Map::new();
            fields.insert("toolName".into(), json!("dump"));
            fields.insert("params".into(), json!({ "q": "\"".repeat(10_000) }));
            fields.insert("durationMs".into(), json!(1.25));
            fields.insert("truncated".into(), json!("mine"));
            for i in 0..2_000 {
                fields.insert(format!("k{i}\u{1}"), json!("\u{1}".repeat(200)));
            }
            let data = Value::Object(fields);
            let original = json_len(&data);
            let marker = marker(&data, original, max);
            assert!(real_len(&marker) <= max, "{max}: {}", real_len(&marker));
            assert_eq!(marker["truncated"], true);
            assert_eq!(marker["originalBytes"], original);
            assert_eq!(marker["toolName"], "dump");
            assert_eq!(marker["durationMs"], 1.25);
            assert!(marker.get("params").is_none());
            let preview = marker["preview"].as_str().unwrap();
            assert!(preview.starts_with(r#"{"toolName":"dump","params":{"q":"\"\""#));
            let quoted = real_len(&json!(preview)) - 2;
            assert!(quoted <= PREVIEW_BYTES.min(max / 4), "{quoted}");
        }
        // Not an object: only the marker.
        let marker = marker(&json!("é".repeat(100_000)), 200_002, 4096);
        assert_eq!(marker.as_object().unwrap().len(), 4);
        assert!(marker["preview"].as_str().unwrap().starts_with("\"éé"));
    }

    #[test]
    fn warnings_are_limited_per_key() {
        let limiter = WarnLimiter::new(Duration::from_secs(60));
        assert_eq!(limiter.allow("a"), Some(0));
        assert_eq!(limiter.allow("a"), None);
        assert_eq!(limiter.allow("a"), None);
        assert_eq!(limiter.allow("b"), Some(0));
        let limiter = WarnLimiter::new(Duration::ZERO);
        assert_eq!(limiter.allow("a"), Some(0));
        assert_eq!(limiter.allow("a"), Some(0));
    }
}

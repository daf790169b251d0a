//! The JSON shape of a target, as data: which fields it has, which are required, and what
//! each must be. Checking a value against it names *every* problem with its path, in our own
//! words, before serde reads the value (serde stops at the first problem, in its words).
//!
//! The shapes mirror the serde types (`Target`, `RequestTemplate`, `ResponseTemplate`,
//! `PluginRef`, `TlsOptions`); a unit test keeps them in step.

use serde_json::{Map, Value};

/// What a JSON value must be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Text,
    /// A string, or null (an optional field).
    OptText,
    Flag,
    /// A whole number from 0 to the bound.
    Whole(u64),
    /// A whole number from 0 to the bound, or null.
    OptWhole(u64),
    /// Any JSON object.
    Object,
    /// Any JSON object, or null.
    OptObject,
    Any,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An object with these fields (and no others).
    Fields(&'static [Field]),
    /// An array of objects with these fields.
    ListOf(&'static [Field]),
}

/// One field of an object shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub name: &'static str,
    pub required: bool,
    pub kind: Kind,
}

const fn field(name: &'static str, required: bool, kind: Kind) -> Field {
    Field {
        name,
        required,
        kind,
    }
}

/// `authType` values (`connector::auth::AuthType`).
pub(crate) const AUTH_TYPES: &[&str] = &[
    "NONE",
    "BEARER_TOKEN",
    "API_KEY",
    "BASIC_AUTH",
    "CUSTOM_HEADER",
];

/// `responseTemplate.transform` values (`connector::template::Transform`).
pub(crate) const TRANSFORMS: &[&str] = &["none", "markdown", "html"];

const REQUEST_TEMPLATE: &[Field] = &[
    field("messagePath", true, Kind::Text),
    field("structure", false, Kind::Any),
    field("variables", false, Kind::OptObject),
];

const RESPONSE_TEMPLATE: &[Field] = &[
    field("responsePath", true, Kind::Text),
    field("tokenUsagePath", false, Kind::OptText),
    field("errorPath", false, Kind::OptText),
    field("transform", false, Kind::OneOf(TRANSFORMS)),
];

const PLUGIN_REF: &[Field] = &[
    field("id", true, Kind::Text),
    field("config", false, Kind::Any),
    field("priority", false, Kind::OptWhole(u32::MAX as u64)),
    field("critical", false, Kind::Flag),
    field("timeoutMs", false, Kind::OptWhole(u64::MAX)),
];

const TLS: &[Field] = &[
    field("caFile", false, Kind::OptText),
    field("certFile", false, Kind::OptText),
    field("keyFile", false, Kind::OptText),
    field("insecureSkipVerify", false, Kind::Flag),
];

/// A target's fields, with Krawall's names.
pub(crate) const TARGET: &[Field] = &[
    field("id", true, Kind::Text),
    field("name", true, Kind::Text),
    field("connectorType", true, Kind::Text),
    field("endpoint", true, Kind::Text),
    field("authType", false, Kind::OneOf(AUTH_TYPES)),
    field("authConfig", false, Kind::Object),
    field("requestTemplate", true, Kind::Fields(REQUEST_TEMPLATE)),
    field("responseTemplate", true, Kind::Fields(RESPONSE_TEMPLATE)),
    field("protocolConfig", false, Kind::Object),
    field("timeoutMs", false, Kind::Whole(u64::MAX)),
    field("plugins", false, Kind::ListOf(PLUGIN_REF)),
    field("tls", false, Kind::Fields(TLS)),
];

/// What a JSON value is, in words ("an array", "a number"…).
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// Problems of `value` against `kind`, as `(path, message)`; `path` is where `value` is
/// (empty for the top). `noun` names the object in "unknown field" messages.
pub(crate) fn check(value: &Value, kind: Kind, path: &str, noun: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check_into(value, kind, path, noun, &mut out);
    out
}

fn check_into(value: &Value, kind: Kind, path: &str, noun: &str, out: &mut Vec<(String, String)>) {
    let mut wrong = |expected: &str| {
        out.push((
            path.to_string(),
            format!("must be {expected}, got {}", describe(value)),
        ))
    };
    match kind {
        Kind::Any => {}
        Kind::Text if value.is_string() => {}
        Kind::Text => wrong("a string"),
        Kind::OptText if value.is_string() || value.is_null() => {}
        Kind::OptText => wrong("a string"),
        Kind::Flag if value.is_boolean() => {}
        Kind::Flag => wrong("true or false"),
        Kind::Whole(max) | Kind::OptWhole(max) => {
            if value.is_null() && matches!(kind, Kind::OptWhole(_)) {
                return;
            }
            if value.as_u64().is_none_or(|n| n > max) {
                wrong(&format!("a whole number from 0 to {max}"));
            }
        }
        Kind::Object if value.is_object() => {}
        Kind::Object => wrong("an object"),
        Kind::OptObject if value.is_object() || value.is_null() => {}
        Kind::OptObject => wrong("an object"),
        Kind::OneOf(options) => {
            if !value.as_str().is_some_and(|v| options.contains(&v)) {
                let given = match value.as_str() {
                    Some(text) => format!("'{text}'"),
                    None => describe(value),
                };
                out.push((
                    path.to_string(),
                    format!("must be one of {}, got {given}", options.join(", ")),
                ));
            }
        }
        Kind::Fields(fields) => match value.as_object() {
            Some(object) => check_fields(object, fields, path, noun, out),
            None => wrong("an object"),
        },
        Kind::ListOf(fields) => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    match item.as_object() {
                        Some(object) => check_fields(object, fields, &at, &at, out),
                        None => {
                            out.push((at, format!("must be an object, got {}", describe(item))))
                        }
                    }
                }
            }
            None => wrong("an array"),
        },
    }
}

fn check_fields(
    object: &Map<String, Value>,
    fields: &[Field],
    path: &str,
    noun: &str,
    out: &mut Vec<(String, String)>,
) {
    for f in fields {
        match object.get(f.name) {
            None if f.required => out.push((join(path, f.name), "is required".into())),
            None => {}
            Some(value) => {
                let at = join(path, f.name);
                check_into(value, f.kind, &at, f.name, out);
            }
        }
    }
    for key in object.keys() {
        if !fields.iter().any(|f| f.name == key) {
            let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
            out.push((
                join(path, key),
                format!("unknown field; {noun} has {}", known.join(", ")),
            ));
        }
    }
}

/// A value that reads as `kind` (for a required field that is missing or wrong), so the
/// checks on the other fields can still run.
pub(crate) fn placeholder(kind: Kind) -> Value {
    match kind {
        Kind::Text | Kind::OneOf(_) => Value::String(String::new()),
        Kind::Whole(_) => Value::from(1u64),
        Kind::Flag => Value::Bool(false),
        Kind::Fields(fields) => Value::Object(
            fields
                .iter()
                .filter(|f| f.required)
                .map(|f| (f.name.to_string(), placeholder(f.kind)))
                .collect(),
        ),
        Kind::ListOf(_) => Value::Array(Vec::new()),
        Kind::Object => Value::Object(Map::new()),
        Kind::OptText | Kind::OptWhole(_) | Kind::OptObject | Kind::Any => Value::Null,
    }
}

/// `value` (an object of `fields`) with every part that has a problem at `bad` removed, or
/// replaced by a placeholder when the field is required, so it reads as the serde type.
pub(crate) fn repaired(
    value: &Map<String, Value>,
    fields: &[Field],
    path: &str,
    bad: &[String],
) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        let at = join(path, f.name);
        let broken = bad.contains(&at);
        match (value.get(f.name), broken) {
            (Some(v), false) => {
                let v = match (f.kind, v) {
                    (Kind::Fields(inner), Value::Object(o)) => {
                        Value::Object(repaired(o, inner, &at, bad))
                    }
                    (Kind::ListOf(inner), Value::Array(items)) => Value::Array(
                        items
                            .iter()
                            .enumerate()
                            .filter_map(|(i, item)| {
                                let at = format!("{at}[{i}]");
                                let item = item.as_object()?;
                                Some(Value::Object(repaired(item, inner, &at, bad)))
                            })
                            .collect(),
                    ),
                    _ => v.clone(),
                };
                out.insert(f.name.to_string(), v);
            }
            _ if f.required => {
                out.insert(f.name.to_string(), placeholder(f.kind));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shapes_name_what_the_serde_types_accept() {
        for name in AUTH_TYPES {
            serde_json::from_value::<crate::connector::auth::AuthType>(json!(name)).unwrap();
        }
        for name in TRANSFORMS {
            serde_json::from_value::<crate::connector::template::Transform>(json!(name)).unwrap();
        }
        // A target with every field, as the shape describes it, reads as a Target; one with
        // each field a placeholder too.
        let full = json!({
            "id": "t", "name": "T", "connectorType": "HTTP_REST", "endpoint": "http://x",
            "authType": "NONE", "authConfig": {}, "protocolConfig": {}, "timeoutMs": 5,
            "requestTemplate": { "messagePath": "m", "structure": {}, "variables": {} },
            "responseTemplate": { "responsePath": "r", "tokenUsagePath": "u", "errorPath": "e", "transform": "html" },
            "plugins": [{ "id": "p", "config": {}, "priority": 1, "critical": true, "timeoutMs": 9 }],
            "tls": { "caFile": "a", "certFile": "c", "keyFile": "k", "insecureSkipVerify": true }
        });
        assert!(check(&full, Kind::Fields(TARGET), "", "a target").is_empty());
        serde_json::from_value::<super::super::Target>(full).unwrap();
        serde_json::from_value::<super::super::Target>(placeholder(Kind::Fields(TARGET))).unwrap();
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let value = json!({
            "name": 5, "connectorType": "HTTP_REST", "endpoint": "http://x", "timeoutMs": -1,
            "authType": "SECRET", "requestTemplate": { "messagePath": ["x"], "extra": 1 },
            "responseTemplate": "r", "plugins": [{ "config": {} }, 3]
        });
        let problems = check(&value, Kind::Fields(TARGET), "target", "a target");
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "target.id",
                "target.name",
                "target.authType",
                "target.requestTemplate.messagePath",
                "target.requestTemplate.extra",
                "target.responseTemplate",
                "target.timeoutMs",
                "target.plugins[0].id",
                "target.plugins[1]",
            ]
        );
        assert_eq!(problems[1].1, "must be a string, got the number 5");
        assert!(problems[2]
            .1
            .starts_with("must be one of NONE, BEARER_TOKEN"));
    }
}

//! Targets: the upstream endpoints sessions talk to, with Krawall's field names.
//!
//! Owns the target shape (`id`, `name`, `connectorType`, `endpoint`, `authType`, `authConfig`,
//! `requestTemplate`, `responseTemplate`, `protocolConfig`, `timeoutMs`, `plugins`, `tls`; the
//! shape as data in `shape`), parsing targets with *every* problem reported by its path (missing,
//! unknown and mistyped fields beside the checks of the well-formed ones), masking and mapping
//! their credentials,
//! the connector config a target opens with, and the catalogue of known targets
//! (`catalogue`), persisted through the store's API. Does not own speaking a protocol
//! (`connector`) nor sessions.

pub mod catalogue;
mod shape;

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::connector::auth::AuthType;
use crate::connector::template::{RequestTemplate, ResponseTemplate};
use crate::connector::tls::TlsOptions;
use crate::connector::{is_default, ConnectorConfig, SUPPORTED_CONNECTORS};
use crate::util::MASK;
use shape::Kind;

/// A plugin a target (or a session) uses, with its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginRef {
    pub id: String,
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Overrides the plugin's own priority for this pipeline.
    #[serde(default)]
    pub priority: Option<u32>,
    /// A critical plugin's `beforeSend`/`afterReceive` failure fails the message.
    #[serde(default)]
    pub critical: bool,
    /// Time a hook of this plugin may take (defaults to `sessions.hook_timeout_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// An upstream endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    pub id: String,
    pub name: String,
    pub connector_type: String,
    pub endpoint: String,
    #[serde(default)]
    pub auth_type: AuthType,
    #[serde(default)]
    pub auth_config: Map<String, Value>,
    pub request_template: RequestTemplate,
    pub response_template: ResponseTemplate,
    #[serde(default)]
    pub protocol_config: Map<String, Value>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
    /// TLS options for `https://` and `wss://` endpoints.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: TlsOptions,
}

/// The URL schemes each connector type accepts.
fn schemes(connector_type: &str) -> &'static [&'static str] {
    match connector_type {
        "WEBSOCKET" => &["ws", "wss"],
        _ => &["http", "https"],
    }
}

/// Applies `f` to every credential value in an `authConfig`: everything but `headerName` and
/// `username`, and each value of `headers`.
fn for_each_secret(auth_config: &mut Map<String, Value>, f: &mut impl FnMut(&mut Value)) {
    for (key, value) in auth_config.iter_mut() {
        if key == "headers" {
            if let Some(headers) = value.as_object_mut() {
                headers.values_mut().for_each(&mut *f);
            }
        } else if key != "headerName" && key != "username" {
            f(value);
        }
    }
}

impl Target {
    /// The connector config this target opens with (plugins may change it in `onConnect`).
    pub fn connector_config(&self) -> ConnectorConfig {
        ConnectorConfig {
            endpoint: self.endpoint.clone(),
            auth_type: self.auth_type,
            auth_config: self.auth_config.clone(),
            request_template: self.request_template.clone(),
            response_template: self.response_template.clone(),
            protocol_config: self.protocol_config.clone(),
            timeout: self.timeout_ms,
            tls: self.tls.clone(),
        }
    }

    /// Logs a warning when the target accepts any certificate (`tls.insecureSkipVerify`).
    pub fn warn_if_insecure(&self) {
        if self.tls.insecure_skip_verify {
            tracing::warn!(target = %self.id, "Target accepts any TLS certificate (tls.insecureSkipVerify): its connections are encrypted but not authenticated.");
        }
    }

    /// The target as responses show it: credentials masked.
    pub fn masked(&self) -> Value {
        let mut copy = self.clone();
        for_each_secret(&mut copy.auth_config, &mut |v| {
            *v = Value::String(MASK.into())
        });
        copy.endpoint = mask_url_password(&copy.endpoint);
        let mut value = serde_json::to_value(copy).unwrap_or(Value::Null);
        // What the store seals beyond authConfig is masked here too.
        if let Some(headers) = value.pointer_mut("/protocolConfig/headers") {
            mask_credential_keys(headers);
        }
        if let Some(plugins) = value.get_mut("plugins").and_then(Value::as_array_mut) {
            for config in plugins.iter_mut().filter_map(|p| p.get_mut("config")) {
                mask_credential_keys(config);
            }
        }
        value
    }

    /// A copy with every credential string passed through `f` (encrypting or decrypting).
    ///
    /// (The endpoint's own password is masked by [`Target::masked`] and sealed by the store.)
    pub fn map_secrets<E>(
        &self,
        mut f: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Target, E> {
        let mut copy = self.clone();
        let mut failure = None;
        for_each_secret(&mut copy.auth_config, &mut |v| {
            if let (Some(text), None) = (v.as_str(), &failure) {
                match f(text) {
                    Ok(mapped) => *v = Value::String(mapped),
                    Err(e) => failure = Some(e),
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(copy),
        }
    }

    /// Problems with this target (paths relative to it).
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, field: &str, message: String| {
            if !ok {
                out.push((field.to_string(), message));
            }
        };
        check(!self.id.trim().is_empty(), "id", "must not be empty".into());
        check(
            !self.name.trim().is_empty(),
            "name",
            "must not be empty".into(),
        );
        check(
            SUPPORTED_CONNECTORS.contains(&self.connector_type.as_str()),
            "connectorType",
            format!(
                "'{}' is not supported; supported: {}",
                self.connector_type,
                SUPPORTED_CONNECTORS.join(", ")
            ),
        );
        let allowed = schemes(&self.connector_type);
        let url_ok = self
            .endpoint
            .parse::<actix_web::http::Uri>()
            .ok()
            .is_some_and(|u| {
                u.scheme_str().is_some_and(|s| allowed.contains(&s)) && u.host().is_some()
            });
        check(
            url_ok,
            "endpoint",
            match self.connector_type.as_str() {
                "WEBSOCKET" => format!("'{}' is not a ws:// or wss:// URL", self.endpoint),
                _ => format!("'{}' is not an http(s) URL", self.endpoint),
            },
        );
        check(
            self.timeout_ms > 0,
            "timeoutMs",
            "must be greater than 0".into(),
        );
        check(
            !self.request_template.message_path.is_empty(),
            "requestTemplate.messagePath",
            "must not be empty".into(),
        );
        check(
            !self.response_template.response_path.is_empty(),
            "responseTemplate.responsePath",
            "must not be empty".into(),
        );
        let has = |k: &str| {
            self.auth_config
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        match self.auth_type {
            AuthType::None => {}
            AuthType::BearerToken => check(
                has("token"),
                "authConfig.token",
                "is required for BEARER_TOKEN".into(),
            ),
            AuthType::ApiKey => {
                check(
                    has("apiKey"),
                    "authConfig.apiKey",
                    "is required for API_KEY".into(),
                );
                check(
                    has("headerName"),
                    "authConfig.headerName",
                    "is required for API_KEY".into(),
                );
            }
            AuthType::BasicAuth => {
                check(
                    has("username"),
                    "authConfig.username",
                    "is required for BASIC_AUTH".into(),
                );
                check(
                    has("password"),
                    "authConfig.password",
                    "is required for BASIC_AUTH".into(),
                );
            }
            AuthType::CustomHeader => check(
                self.auth_config
                    .get("headers")
                    .is_some_and(Value::is_object),
                "authConfig.headers",
                "must be an object of header names to values for CUSTOM_HEADER".into(),
            ),
        }
        if let Some(method) = self.protocol_config.get("method") {
            check(
                method.as_str().is_some_and(|m| {
                    ["GET", "POST", "PUT", "PATCH", "DELETE"]
                        .contains(&m.to_ascii_uppercase().as_str())
                }),
                "protocolConfig.method",
                format!("{method} is not one of GET, POST, PUT, PATCH, DELETE"),
            );
        }
        out.extend(self.connector_config().problems(&self.connector_type));
        out
    }
}

/// Parses targets given as JSON values (from settings, `targets.toml` and REST), reporting
/// every problem as `(path, message)` with paths like `targets[1].endpoint`: the shape's
/// (missing, unknown and mistyped fields, checked before serde reads the value) and the
/// checks of the fields that are well formed, all at once.
pub fn parse_targets(values: &[(String, Value)]) -> Result<Vec<Target>, Vec<(String, String)>> {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    for (path, value) in values {
        let Some(object) = value.as_object() else {
            problems.push((
                path.clone(),
                format!(
                    "a target must be a JSON object, got {}",
                    shape::describe(value)
                ),
            ));
            continue;
        };
        let shape = shape::check(value, Kind::Fields(shape::TARGET), path, "a target");
        let mut bad: Vec<String> = shape.iter().map(|(p, _)| p.clone()).collect();
        let readable = if shape.is_empty() {
            value.clone()
        } else {
            Value::Object(shape::repaired(object, shape::TARGET, path, &bad))
        };
        let well_formed = shape.is_empty();
        problems.extend(shape);
        // Without a readable connector type, its protocol checks would only mislead.
        if bad.contains(&format!("{path}.connectorType")) {
            bad.push(format!("{path}.protocolConfig"));
        }
        let covered = |at: &str| {
            bad.iter().any(|b| {
                at == b
                    || at
                        .strip_prefix(b.as_str())
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            })
        };
        match serde_json::from_value::<Target>(readable) {
            Ok(target) => {
                for (field, message) in target.problems() {
                    let at = format!("{path}.{field}");
                    if !covered(&at) {
                        problems.push((at, message));
                    }
                }
                if well_formed {
                    if !ids.insert(target.id.clone()) {
                        problems.push((
                            format!("{path}.id"),
                            format!("'{}' is used by another target", target.id),
                        ));
                    }
                    targets.push(target);
                }
            }
            // The shape above mirrors the serde types; this only guards against drift.
            Err(error) if well_formed => {
                problems.push((path.clone(), format!("cannot be read as a target: {error}")))
            }
            Err(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(problems)
    }
}

/// Every configured target: the inline `[[targets]]` of the settings first, then those of
/// `file` (when it exists). Problems are `(path, message)`, every one of them.
pub fn load(inline: &[Value], file: &Path) -> Result<Vec<Target>, Vec<(String, String)>> {
    let mut values: Vec<(String, Value)> = inline
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("targets[{i}]"), v.clone()))
        .collect();
    if file.is_file() {
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                text.parse::<toml::Table>()
                    .map_err(|e| e.to_string().trim_end().to_string())
            });
        match parsed {
            Ok(mut table) => {
                let unknown: Vec<String> =
                    table.keys().filter(|k| *k != "targets").cloned().collect();
                if !unknown.is_empty() {
                    return Err(vec![(
                        file.display().to_string(),
                        format!("unknown keys {unknown:?}; only [[targets]] entries belong here"),
                    )]);
                }
                if let Some(toml::Value::Array(items)) = table.remove("targets") {
                    for (i, item) in items.into_iter().enumerate() {
                        values.push((
                            format!("{}: targets[{i}]", file.display()),
                            serde_json::to_value(item).unwrap_or(Value::Null),
                        ));
                    }
                }
            }
            Err(error) => {
                return Err(vec![(
                    file.display().to_string(),
                    format!("not valid TOML: {error}"),
                )])
            }
        }
    }
    parse_targets(&values)
}

/// Masks, at any depth, the values of keys that name a credential (`Authorization`,
/// `password`, `X-Api-Key`…), whole.
fn mask_credential_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if crate::store::secrets::looks_like_credential(key) && !v.is_null() {
                    *v = Value::String(MASK.into());
                } else {
                    mask_credential_keys(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_credential_keys),
        _ => {}
    }
}

/// Puts back, at the same place, the stored value of every mask a client sent back.
pub fn restore_masks(sent: &mut Value, stored: &Value) {
    match (sent, stored) {
        (Value::Object(map), Value::Object(old)) => {
            for (key, v) in map.iter_mut() {
                match old.get(key) {
                    Some(previous) if v == MASK => *v = previous.clone(),
                    Some(previous) => restore_masks(v, previous),
                    None => {}
                }
            }
        }
        (Value::Array(items), Value::Array(old)) => {
            for (v, previous) in items.iter_mut().zip(old) {
                restore_masks(v, previous);
            }
        }
        _ => {}
    }
}

/// `endpoint` with the password of its userinfo (`https://user:pass@host/`) masked; anything
/// else unchanged.
pub fn mask_url_password(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(MASK));
            url.to_string()
        }
        _ => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_passwords_are_masked_and_nothing_else() {
        assert_eq!(
            mask_url_password("https://bob:hunter2@api.test:8443/v1?x=1"),
            format!("https://bob:{MASK}@api.test:8443/v1?x=1")
        );
        assert_eq!(
            mask_url_password("https://api.test/v1"),
            "https://api.test/v1"
        );
        assert_eq!(mask_url_password("not a url"), "not a url");
    }
    use serde_json::json;

    fn target(extra: Value) -> Value {
        let mut base = json!({
            "id": "t1", "name": "Mock", "connectorType": "HTTP_REST", "endpoint": "http://127.0.0.1:9/chat",
            "requestTemplate": {"messagePath": "message"}, "responseTemplate": {"responsePath": "reply"}
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn a_minimal_target_parses_with_defaults() {
        let targets = parse_targets(&[("targets[0]".into(), target(json!({})))]).unwrap();
        assert_eq!(targets[0].timeout_ms, 30_000);
        assert_eq!(targets[0].auth_type, AuthType::None);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = target(json!({
            "id": "bad", "connectorType": "FAX", "endpoint": "ftp://x", "authType": "API_KEY", "authConfig": {"apiKey": "k"},
            "timeoutMs": 0, "responseTemplate": {"responsePath": ""}
        }));
        let unknown = target(json!({"colour": "red"}));
        let dup = target(json!({}));
        let problems = parse_targets(&[
            ("targets[0]".into(), bad),
            ("targets[1]".into(), unknown),
            ("targets[2]".into(), target(json!({}))),
            ("targets[3]".into(), dup),
        ])
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "targets[0].connectorType",
                "targets[0].endpoint",
                "targets[0].timeoutMs",
                "targets[0].responseTemplate.responsePath",
                "targets[0].authConfig.headerName",
                "targets[1].colour",
                "targets[3].id",
            ]
        );
        assert!(
            problems[5].1.starts_with("unknown field"),
            "{:?}",
            problems[5]
        );
    }

    #[test]
    fn credentials_are_masked() {
        let t = parse_targets(&[("t".into(), target(json!({"authType": "API_KEY", "authConfig": {"apiKey": "sk-1", "headerName": "X-Key"}})))]).unwrap();
        let masked = t[0].masked();
        assert_eq!(
            masked["authConfig"],
            json!({"apiKey": MASK, "headerName": "X-Key"})
        );
    }
}

//! The plugins shipped in the binary, selectable with `plugins.native`.
//!
//! Owns the list of bundled plugins and their factories: Krawall's four connector plugins
//! (`multi-step-auth`, `openai` and `anthropic` in `conversation`, `audit`) and the two
//! examples `cargo run` loads (`examples`). The places we do better than Krawall:
//! multi-step-auth keeps the target's other auth headers and refreshes an expiring token;
//! openai actually sends the history and model parameters (as request-template variables);
//! audit is bounded and readable over REST. Does not own the runtime they plug into (`plugin`)
//! nor the pipeline (`session`).

pub mod audit;
pub mod conversation;
pub mod examples;
pub mod multi_step_auth;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use semver::Version;
use serde_json::{json, Value};

use crate::plugin::{
    ConfigField, FieldType, HookContext, Plugin, PluginFactory, PluginManifest, SelectOption,
};
use crate::store::audit::AuditLog;

/// Ids accepted in `plugins.native`, in registration order: Krawall's four connector plugins
/// (openai before anthropic, as Krawall imports them), then the two examples.
pub const KNOWN_IDS: &[&str] = &[
    "multi-step-auth",
    "openai",
    "anthropic",
    "audit",
    "event-logger",
    "hello",
];

/// Every bundled plugin, by id, in registration order; the audit plugin writes to `audit`.
pub fn catalogue(audit: Arc<AuditLog>) -> Vec<(&'static str, PluginFactory)> {
    let factories: [PluginFactory; 6] = [
        Arc::new(|| Arc::new(multi_step_auth::MultiStepAuth) as Arc<dyn Plugin>),
        Arc::new(|| Arc::new(conversation::Conversation::openai()) as Arc<dyn Plugin>),
        Arc::new(|| Arc::new(conversation::Conversation::anthropic()) as Arc<dyn Plugin>),
        Arc::new(move || Arc::new(audit::Audit::new(audit.clone())) as Arc<dyn Plugin>),
        Arc::new(|| Arc::new(examples::EventLogger) as Arc<dyn Plugin>),
        Arc::new(|| Arc::new(examples::Hello::default()) as Arc<dyn Plugin>),
    ];
    KNOWN_IDS.iter().copied().zip(factories).collect()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn field(
    key: &str,
    label: &str,
    field_type: FieldType,
    required: bool,
    default: Option<Value>,
    description: &str,
) -> ConfigField {
    ConfigField {
        key: key.into(),
        label: label.into(),
        field_type,
        required,
        default,
        description: description.into(),
        options: None,
        secret: false,
    }
}

/// `field` marked secret: masked in every response, sealed at rest (`session::secrets`).
pub(crate) fn secret(field: ConfigField) -> ConfigField {
    ConfigField {
        secret: true,
        ..field
    }
}

pub(crate) fn select(
    key: &str,
    label: &str,
    values: &[&str],
    required: bool,
    default: Option<&str>,
    description: &str,
) -> ConfigField {
    ConfigField {
        options: Some(
            values
                .iter()
                .map(|v| SelectOption {
                    label: v.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        ),
        ..field(
            key,
            label,
            FieldType::Select,
            required,
            default.map(|d| json!(d)),
            description,
        )
    }
}

pub(crate) fn manifest(
    id: &str,
    name: &str,
    description: &str,
    priority: u32,
    connectors: &[&str],
    schema: Vec<ConfigField>,
) -> PluginManifest {
    let mut m = PluginManifest::new(id, Version::new(1, 0, 0))
        .named(name)
        .describe(description);
    m.priority = priority;
    m.compatible_connectors = connectors.iter().map(|c| c.to_string()).collect();
    m.config_schema = schema;
    m
}

pub(crate) fn text<'a>(ctx: &'a HookContext, key: &str) -> Option<&'a str> {
    ctx.plugin_config
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Normalised usage `{promptTokens, completionTokens, totalTokens}`.
pub(crate) fn usage(prompt: u64, completion: u64, total: Option<u64>) -> Value {
    json!({ "promptTokens": prompt, "completionTokens": completion, "totalTokens": total.unwrap_or(prompt + completion) })
}

pub(crate) fn messages(ctx: &HookContext) -> Vec<Value> {
    ctx.state
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn add_tokens(ctx: &mut HookContext, key: &str, n: u64) {
    let total = ctx.state.get(key).and_then(Value::as_u64).unwrap_or(0) + n;
    ctx.state.insert(key.into(), json!(total));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_id_has_a_factory_whose_manifest_says_that_id() {
        let all = catalogue(AuditLog::new(1, 1, None));
        assert_eq!(all.len(), KNOWN_IDS.len());
        for (id, factory) in all {
            assert_eq!(factory().manifest().id, id);
        }
    }

    #[test]
    fn every_bundled_field_named_like_a_credential_is_marked_secret() {
        let mut marked = Vec::new();
        for (id, factory) in catalogue(AuditLog::new(1, 1, None)) {
            for field in factory().manifest().config_schema {
                if crate::store::secrets::looks_like_credential(&field.key) {
                    assert!(field.secret, "{id}.{} is not marked secret", field.key);
                }
                if field.secret {
                    marked.push(format!("{id}.{}", field.key));
                }
            }
        }
        assert_eq!(marked, ["multi-step-auth.authBody"]);
    }
}

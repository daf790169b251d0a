//! Secrets in a session's plugin configs: which values are secret, how responses show them and
//! how the store keeps them.
//!
//! A config value is secret when its schema field says `secret: true`, or when its key, at any
//! depth, looks like a credential (`password`, `apiKey`, `authToken`, `authBody`,
//! `Authorization`…: `store::secrets::looks_like_credential`), so a plugin that forgot to mark
//! a field is covered too. Responses show each secret as the mask (a whole subtree at once);
//! the store keeps it sealed with the store's key (`store.secret_key`), whole, whatever its
//! type. Hooks always get the real values (`HookContext::plugin_config`). Does not own the key
//! or the cipher (`store::secrets`).

use serde_json::Value;

use crate::plugin::ConfigField;
use crate::store::secrets::{is_sealed, looks_like_credential, Secrets};
use crate::util::MASK;

/// Whether the top-level config key `key` holds a secret under `schema`.
pub fn is_secret(schema: &[ConfigField], key: &str) -> bool {
    schema.iter().any(|f| f.key == key && f.secret) || looks_like_credential(key)
}

/// Applies `hide` to every secret value of `config` (top-level keys by `schema` or by name,
/// nested ones by name) and to every sealed value; the rest is kept.
fn map_secrets(
    schema: &[ConfigField],
    config: &Value,
    hide: &mut impl FnMut(&Value) -> Value,
) -> Value {
    match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let shown = if value.is_null() {
                        Value::Null
                    } else if is_secret(schema, key) || is_sealed(value) {
                        hide(value)
                    } else {
                        // Below the top level only names tell (the schema has no nested fields).
                        map_secrets(&[], value, hide)
                    };
                    (key.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| map_secrets(&[], v, hide)).collect())
        }
        other if is_sealed(other) => hide(other),
        other => other.clone(),
    }
}

/// The config as every response shows it: secrets masked.
pub fn redact(schema: &[ConfigField], config: &Value) -> Value {
    map_secrets(schema, config, &mut |_| Value::String(MASK.into()))
}

/// The config as the store keeps it: each secret sealed whole with the store's key (a nested
/// object or a number too), the rest as given.
pub fn seal(schema: &[ConfigField], config: &Value, secrets: &Secrets) -> Value {
    map_secrets(schema, config, &mut |v| secrets.seal(v))
}

/// A stored session's plugin list (`[{id, config, …}]`) as responses show it: sealed values
/// and credential-named ones masked. Also covers rows written before configs were sealed.
pub fn redact_stored(plugins: &mut Value) {
    if let Value::Array(items) = plugins {
        for item in items {
            if let Some(config) = item.get_mut("config") {
                *config = redact(&[], config);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::FieldType;
    use serde_json::json;

    fn field(key: &str, secret: bool) -> ConfigField {
        ConfigField {
            key: key.into(),
            label: key.into(),
            field_type: FieldType::Json,
            required: false,
            default: None,
            description: String::new(),
            options: None,
            secret,
        }
    }

    #[test]
    fn marked_fields_and_credential_names_at_any_depth_are_masked() {
        let schema = [field("body", true), field("tokenPath", false)];
        let config = json!({
            "body": { "user": "u", "pass": "p" },
            "tokenPath": "data.token",
            "max_tokens": 9,
            "headers": { "Authorization": "Bearer x", "Accept": "*/*" },
            "list": [{ "apiKey": 7 }],
            "clientSecret": "cs",
            "password": null,
        });
        assert_eq!(
            redact(&schema, &config),
            json!({
                "body": MASK,
                "tokenPath": "data.token",
                "max_tokens": 9,
                "headers": { "Authorization": MASK, "Accept": "*/*" },
                "list": [{ "apiKey": MASK }],
                "clientSecret": MASK,
                "password": null,
            })
        );
    }

    #[test]
    fn sealed_configs_keep_no_secret_in_clear_and_still_read_as_masked() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(None, dir.path()).unwrap();
        let schema = [field("authBody", true)];
        let config = json!({ "authBody": { "password": "pw-9", "n": 5 }, "extra": { "deep": { "token": 31337 } }, "model": "m" });
        let sealed = seal(&schema, &config, &secrets);
        let text = sealed.to_string();
        assert!(!text.contains("pw-9") && !text.contains("31337"), "{text}");
        assert_eq!(sealed["model"], "m");
        assert_eq!(secrets.open(&sealed).unwrap(), config);
        let mut stored = json!([{ "id": "p", "config": sealed }]);
        redact_stored(&mut stored);
        assert_eq!(
            stored[0]["config"],
            json!({ "authBody": MASK, "extra": { "deep": { "token": MASK } }, "model": "m" })
        );
    }
}

//! Plugin configuration against a plugin's schema: Krawall's validator, rule for rule, and the
//! binding that turns a valid config into what hooks see as `pluginConfig`.
//!
//! Owns validation (every error, in schema order, in the seed's exact wording), applying
//! defaults and parsing `json` fields once at bind time, and masking `secret` fields for
//! responses and logs. Does not own where configs come from (sessions, REST).

use serde_json::{Map, Value};

use super::{ConfigField, FieldType};

use crate::util::MASK;

/// Validates `config` against `schema`. An empty list means valid.
///
/// The rules are Krawall's `validatePluginConfig`: an empty schema
/// accepts anything; otherwise the config must be a non-null object (arrays pass, as in JS);
/// fields are checked in schema order and every error is collected; unknown keys are allowed
/// and defaults are not applied here.
pub fn validate(schema: &[ConfigField], config: &Value) -> Vec<String> {
    if schema.is_empty() {
        return Vec::new();
    }
    let empty = Map::new();
    let fields = match config {
        Value::Object(map) => map,
        // `typeof [] === "object"` in JS: arrays pass the object check and have no fields.
        Value::Array(_) => &empty,
        _ => return vec!["Config must be a non-null object".to_string()],
    };
    let mut errors = Vec::new();
    for field in schema {
        let key = &field.key;
        let value = fields.get(key).unwrap_or(&Value::Null);
        let missing = value.is_null();
        if field.required && (missing || value.as_str() == Some("")) {
            errors.push(format!("Field '{key}' is required"));
            continue;
        }
        if missing {
            continue;
        }
        let problem = match field.field_type {
            FieldType::String => (!value.is_string()).then(|| "must be a string".to_string()),
            FieldType::Number => (!value.is_number()).then(|| "must be a number".to_string()),
            FieldType::Boolean => (!value.is_boolean()).then(|| "must be a boolean".to_string()),
            FieldType::Select => field.options.as_ref().and_then(|options| {
                let ok = value
                    .as_str()
                    .is_some_and(|v| options.iter().any(|o| o.value == v));
                let values: Vec<&str> = options.iter().map(|o| o.value.as_str()).collect();
                (!ok).then(|| format!("must be one of: {}", values.join(", ")))
            }),
            FieldType::Json => value
                .as_str()
                .filter(|text| serde_json::from_str::<Value>(text).is_err())
                .map(|_| "must be valid JSON".to_string()),
        };
        if let Some(problem) = problem {
            errors.push(format!("Field '{key}' {problem}"));
        }
    }
    errors
}

/// The config a plugin's hooks see: the given values, defaults for missing fields, and `json`
/// fields given as text parsed once (Krawall serialised such strings twice).
/// Call only with a config that `validate` accepted.
pub fn bind(schema: &[ConfigField], config: &Value) -> Map<String, Value> {
    let mut bound = config.as_object().cloned().unwrap_or_default();
    for field in schema {
        let present = bound.get(&field.key).is_some_and(|v| !v.is_null());
        if !present {
            if let Some(default) = &field.default {
                bound.insert(field.key.clone(), default.clone());
            }
            continue;
        }
        if field.field_type == FieldType::Json {
            if let Some(parsed) = bound[&field.key]
                .as_str()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
            {
                bound.insert(field.key.clone(), parsed);
            }
        }
    }
    bound
}

/// A copy of `config` with every `secret` field replaced by [`MASK`].
pub fn mask(schema: &[ConfigField], config: &Value) -> Value {
    let mut masked = config.clone();
    if let Value::Object(map) = &mut masked {
        for field in schema.iter().filter(|f| f.secret) {
            if let Some(value) = map.get_mut(&field.key) {
                if !value.is_null() {
                    *value = Value::String(MASK.into());
                }
            }
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::SelectOption;
    use serde_json::json;

    fn field(key: &str, field_type: FieldType, required: bool) -> ConfigField {
        ConfigField {
            key: key.into(),
            label: key.into(),
            field_type,
            required,
            default: None,
            description: String::new(),
            options: None,
            secret: false,
        }
    }

    fn select(key: &str, values: &[&str]) -> ConfigField {
        ConfigField {
            options: Some(
                values
                    .iter()
                    .map(|v| SelectOption {
                        label: v.to_uppercase(),
                        value: v.to_string(),
                    })
                    .collect(),
            ),
            ..field(key, FieldType::Select, false)
        }
    }

    #[test]
    fn empty_schemas_accept_anything() {
        assert!(validate(&[], &Value::Null).is_empty());
        assert!(validate(&[], &json!(42)).is_empty());
    }

    #[test]
    fn config_must_be_a_non_null_object_but_arrays_pass_that_check() {
        let schema = [field("a", FieldType::String, false)];
        for bad in [Value::Null, json!(1), json!("x"), json!(true)] {
            assert_eq!(
                validate(&schema, &bad),
                ["Config must be a non-null object"]
            );
        }
        assert!(validate(&schema, &json!([])).is_empty());
        let required = [field("a", FieldType::String, true)];
        assert_eq!(validate(&required, &json!([1])), ["Field 'a' is required"]);
    }

    #[test]
    fn every_rule_with_its_exact_message_in_schema_order() {
        let schema = [
            field("apiKey", FieldType::String, true),
            field("name", FieldType::String, false),
            field("retries", FieldType::Number, false),
            field("verbose", FieldType::Boolean, false),
            select("mode", &["a", "b", "c"]),
            field("body", FieldType::Json, false),
            field("token", FieldType::String, true),
        ];
        let config = json!({
            "apiKey": "",
            "name": 5,
            "retries": "3",
            "verbose": "true",
            "mode": "d",
            "body": "{not json",
            "token": null,
            "unknown": "kept",
        });
        assert_eq!(
            validate(&schema, &config),
            [
                "Field 'apiKey' is required",
                "Field 'name' must be a string",
                "Field 'retries' must be a number",
                "Field 'verbose' must be a boolean",
                "Field 'mode' must be one of: a, b, c",
                "Field 'body' must be valid JSON",
                "Field 'token' is required",
            ]
        );
    }

    #[test]
    fn the_quirks_are_kept() {
        // An optional empty string is type-checked, not skipped.
        assert_eq!(
            validate(&[field("n", FieldType::Number, false)], &json!({"n": ""})),
            ["Field 'n' must be a number"]
        );
        assert!(validate(&[field("s", FieldType::String, false)], &json!({"s": ""})).is_empty());
        // json: only strings are parsed; an empty string fails; objects pass unchecked.
        let json_field = [field("j", FieldType::Json, false)];
        assert_eq!(
            validate(&json_field, &json!({"j": ""})),
            ["Field 'j' must be valid JSON"]
        );
        assert!(validate(&json_field, &json!({"j": {"a": 1}})).is_empty());
        assert!(validate(&json_field, &json!({"j": 7})).is_empty());
        // select without options accepts anything; with options, 1 is not "1".
        assert!(validate(&[field("s", FieldType::Select, false)], &json!({"s": 1})).is_empty());
        assert_eq!(
            validate(&[select("s", &["1"])], &json!({"s": 1})),
            ["Field 's' must be one of: 1"]
        );
        // Missing and null optional fields are skipped.
        assert!(validate(
            &[field("b", FieldType::Boolean, false)],
            &json!({"b": null})
        )
        .is_empty());
    }

    #[test]
    fn binding_applies_defaults_and_parses_json_text_once() {
        let schema = [
            ConfigField {
                default: Some(json!(3)),
                ..field("retries", FieldType::Number, false)
            },
            ConfigField {
                default: Some(json!("strict")),
                ..select("mode", &["strict", "lenient"])
            },
            field("body", FieldType::Json, false),
        ];
        let bound = bind(
            &schema,
            &json!({"mode": "lenient", "body": "{\"user\":\"u\"}"}),
        );
        assert_eq!(bound["retries"], 3);
        assert_eq!(bound["mode"], "lenient");
        assert_eq!(bound["body"], json!({"user": "u"}));
    }

    #[test]
    fn secrets_are_masked() {
        let schema = [
            ConfigField {
                secret: true,
                ..field("apiKey", FieldType::String, true)
            },
            field("model", FieldType::String, false),
        ];
        let masked = mask(&schema, &json!({"apiKey": "sk-123", "model": "gpt-4"}));
        assert_eq!(masked, json!({"apiKey": MASK, "model": "gpt-4"}));
    }
}

//! Request templating and response extraction, in Krawall's JSON path dialect.
//!
//! Owns paths like `$.choices[0].message.content` (an optional leading `$.`, then segments
//! split on `.`, `[` and `]`), building a request body from a template, and pulling content,
//! token usage and error messages out of a response.
//! Pure functions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How to build the request body (Krawall's `RequestTemplate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestTemplate {
    /// Where the message goes, e.g. `messages[0].content`.
    pub message_path: String,
    /// The body to start from (deep-cloned for each message).
    #[serde(default)]
    pub structure: Option<Value>,
    /// Leaves equal to `${key}` (or exactly `key`) are replaced by the variable's value.
    #[serde(default)]
    pub variables: Option<Map<String, Value>>,
}

/// How to read the response (Krawall's `ResponseTemplate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseTemplate {
    pub response_path: String,
    #[serde(default)]
    pub token_usage_path: Option<String>,
    /// Dot-separated only (no brackets), as in Krawall's HTTP connector.
    #[serde(default)]
    pub error_path: Option<String>,
    #[serde(default)]
    pub transform: Transform,
}

/// Post-processing of extracted content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    #[default]
    None,
    /// Strips `#`, `**`, `*` and backticks.
    Markdown,
    /// Strips tags.
    Html,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment> {
    let path = path
        .strip_prefix("$.")
        .or_else(|| path.strip_prefix('$'))
        .unwrap_or(path);
    path.split(['.', '[', ']'])
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<usize>() {
            Ok(i) => Segment::Index(i),
            Err(_) => Segment::Key(s.to_string()),
        })
        .collect()
}

/// The value at `path`, if any.
pub fn get<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path).iter().try_fold(value, |v, seg| match seg {
        Segment::Key(k) => v.get(k),
        Segment::Index(i) => v.get(*i).or_else(|| v.get(i.to_string())),
    })
}

/// Sets `path` to `new`, creating missing levels (an array when the next step is an index).
pub fn set(value: &mut Value, path: &str, new: Value) {
    let segs = segments(path);
    let mut current = value;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let next_is_index = matches!(segs.get(i + 1), Some(Segment::Index(_)));
        let fresh = || {
            if next_is_index {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            }
        };
        match seg {
            Segment::Key(key) => {
                if !current.is_object() {
                    *current = Value::Object(Map::new());
                }
                let map = current.as_object_mut().expect("an object");
                if last {
                    map.insert(key.clone(), new);
                    return;
                }
                current = map.entry(key.clone()).or_insert_with(fresh);
            }
            Segment::Index(index) => {
                if !current.is_array() {
                    *current = Value::Array(Vec::new());
                }
                let array = current.as_array_mut().expect("an array");
                if array.len() <= *index {
                    array.resize(index + 1, Value::Null);
                }
                if last {
                    array[*index] = new;
                    return;
                }
                if array[*index].is_null() {
                    array[*index] = fresh();
                }
                current = &mut array[*index];
            }
        }
    }
}

/// The request body for `message`: the structure, the message at `messagePath`, and the
/// variables (the template's, then `extra` from plugins) substituted in leaves.
pub fn build_request(
    template: &RequestTemplate,
    message: &str,
    extra: &Map<String, Value>,
) -> Value {
    let mut body = template
        .structure
        .clone()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut variables = template.variables.clone().unwrap_or_default();
    for (k, v) in extra {
        variables.insert(k.clone(), v.clone());
    }
    if !variables.is_empty() {
        substitute(&mut body, &variables);
    }
    set(
        &mut body,
        &template.message_path,
        Value::String(message.to_string()),
    );
    body
}

/// Replaces every leaf equal to `${key}` or exactly `key` (Krawall's surprising second rule).
fn substitute(value: &mut Value, variables: &Map<String, Value>) {
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| substitute(v, variables)),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, variables)),
        Value::String(text) => {
            let key = text
                .strip_prefix("${")
                .and_then(|t| t.strip_suffix('}'))
                .unwrap_or(text);
            if let Some(replacement) = variables.get(key) {
                *value = replacement.clone();
            }
        }
        _ => {}
    }
}

/// The content at `responsePath`, stringified and transformed.
pub fn extract_content(template: &ResponseTemplate, body: &Value) -> Result<String, String> {
    if template.response_path.is_empty() {
        return Err("the target's responseTemplate has no responsePath".into());
    }
    let value = get(body, &template.response_path)
        .filter(|v| !v.is_null())
        .ok_or_else(|| format!("No content found at path \"{}\"", template.response_path))?;
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(match template.transform {
        Transform::None => text,
        Transform::Markdown => text.replace("**", "").replace(['#', '*', '`'], ""),
        Transform::Html => strip_tags(&text),
    })
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The raw token usage at `tokenUsagePath` (no renaming, as in Krawall; plugins normalise it).
pub fn extract_usage(template: &ResponseTemplate, body: &Value) -> Option<Value> {
    let path = template.token_usage_path.as_deref()?;
    get(body, path).filter(|v| !v.is_null()).cloned()
}

/// The error message at `errorPath` (dot-separated only).
pub fn extract_error(template: &ResponseTemplate, body: &Value) -> Option<String> {
    let path = template.error_path.as_deref()?;
    let value = path
        .split('.')
        .filter(|s| !s.is_empty())
        .try_fold(body, |v, key| v.get(key))?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_read_with_and_without_the_dollar() {
        let body =
            json!({"choices": [{"message": {"content": "hi"}}], "usage": {"total_tokens": 3}});
        assert_eq!(
            get(&body, "$.choices[0].message.content"),
            Some(&json!("hi"))
        );
        assert_eq!(get(&body, "choices.0.message.content"), Some(&json!("hi")));
        assert_eq!(get(&body, "$.choices[1].message"), None);
        assert_eq!(get(&body, "usage.total_tokens"), Some(&json!(3)));
    }

    #[test]
    fn set_creates_missing_levels_with_arrays_for_indexes() {
        let mut v = json!({});
        set(&mut v, "messages[0].content", json!("hello"));
        assert_eq!(v, json!({"messages": [{"content": "hello"}]}));
        set(&mut v, "$.meta.user.id", json!(7));
        assert_eq!(v["meta"]["user"]["id"], 7);
    }

    #[test]
    fn requests_are_built_from_structure_message_and_variables() {
        let template = RequestTemplate {
            message_path: "messages[1].content".into(),
            structure: Some(
                json!({"model": "${model}", "temperature": "temperature", "messages": [{"role": "system", "content": "be brief"}, {"role": "user"}]}),
            ),
            variables: Some(json!({"model": "gpt-4o"}).as_object().unwrap().clone()),
        };
        let extra = json!({"temperature": 0.2}).as_object().unwrap().clone();
        let body = build_request(&template, "hi", &extra);
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["temperature"], 0.2);
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "hi"})
        );
        assert_eq!(body["messages"][0]["content"], "be brief");
    }

    #[test]
    fn responses_yield_content_usage_and_errors() {
        let t = ResponseTemplate {
            response_path: "$.choices[0].message.content".into(),
            token_usage_path: Some("$.usage".into()),
            error_path: Some("error.message".into()),
            transform: Transform::None,
        };
        let ok = json!({"choices": [{"message": {"content": "**Hi** `x`"}}], "usage": {"prompt_tokens": 1}});
        assert_eq!(extract_content(&t, &ok).unwrap(), "**Hi** `x`");
        assert_eq!(extract_usage(&t, &ok), Some(json!({"prompt_tokens": 1})));
        let md = ResponseTemplate {
            transform: Transform::Markdown,
            ..t.clone()
        };
        assert_eq!(extract_content(&md, &ok).unwrap(), "Hi x");
        let html = ResponseTemplate {
            response_path: "h".into(),
            transform: Transform::Html,
            ..t.clone()
        };
        assert_eq!(
            extract_content(&html, &json!({"h": "<p>a <b>b</b></p>"})).unwrap(),
            "a b"
        );
        assert_eq!(
            extract_content(&t, &json!({})).unwrap_err(),
            "No content found at path \"$.choices[0].message.content\""
        );
        assert_eq!(
            extract_error(&t, &json!({"error": {"message": "quota"}})).as_deref(),
            Some("quota")
        );
        assert_eq!(
            extract_content(&ResponseTemplate::default(), &ok).unwrap_err(),
            "the target's responseTemplate has no responsePath"
        );
    }
}

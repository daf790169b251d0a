//! Upstream authentication: the auth types a connector speaks and the headers each produces.
//!
//! Owns `AuthType` (Krawall's `authType` values) and turning an `authConfig` into request
//! headers (Krawall's `buildAuthHeaders`). Does not own where credentials are stored or masked
//! (`target`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How the connector authenticates upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthType {
    #[default]
    None,
    BearerToken,
    ApiKey,
    BasicAuth,
    CustomHeader,
}

/// Auth headers for `auth_type` (Krawall's `buildAuthHeaders`).
pub fn auth_headers(
    auth_type: AuthType,
    auth_config: &Map<String, Value>,
) -> Vec<(String, String)> {
    let text = |k: &str| {
        auth_config
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match auth_type {
        AuthType::None => Vec::new(),
        AuthType::BearerToken => {
            vec![("Authorization".into(), format!("Bearer {}", text("token")))]
        }
        AuthType::ApiKey => vec![(text("headerName"), text("apiKey"))],
        AuthType::BasicAuth => {
            let pair = format!("{}:{}", text("username"), text("password"));
            vec![(
                "Authorization".into(),
                format!("Basic {}", base64(pair.as_bytes())),
            )]
        }
        AuthType::CustomHeader => auth_config
            .get("headers")
            .map(text_pairs)
            .unwrap_or_default(),
    }
}

/// A JSON object as `(name, text)` pairs: strings as they are, other values as JSON text.
/// Used for header maps and for query parameters.
pub fn text_pairs(object: &Value) -> Vec<(String, String)> {
    object
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_headers_per_type() {
        let cfg = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            auth_headers(AuthType::BearerToken, &cfg(json!({"token": "t"}))),
            [("Authorization".into(), "Bearer t".into())]
        );
        assert_eq!(
            auth_headers(
                AuthType::ApiKey,
                &cfg(json!({"apiKey": "k", "headerName": "X-Key"}))
            ),
            [("X-Key".into(), "k".into())]
        );
        assert_eq!(
            auth_headers(
                AuthType::BasicAuth,
                &cfg(json!({"username": "Aladdin", "password": "open sesame"}))
            ),
            [(
                "Authorization".into(),
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".into()
            )]
        );
        assert_eq!(
            auth_headers(
                AuthType::CustomHeader,
                &cfg(json!({"headers": {"X-A": "1"}}))
            ),
            [("X-A".into(), "1".into())]
        );
        assert!(auth_headers(AuthType::None, &cfg(json!({}))).is_empty());
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}

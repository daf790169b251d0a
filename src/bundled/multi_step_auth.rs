//! `multi-step-auth` (priority 10): fetches a token from an auth endpoint before connecting and
//! sends it as a header on every request, refreshing it before it expires.
//!
//! Owns the handshake and the header it produces. Does not own how the header reaches the
//! upstream (the connector applies the config `onConnect` returns).

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{field, manifest, now_ms, secret, select, text};
use crate::connector::auth::{auth_headers, AuthType};
use crate::connector::template;
use crate::connector::ConnectorConfig;
use crate::plugin::{FieldType, Hook, HookContext, HookSet, Plugin, PluginError, PluginManifest};

/// Fetches a token before connecting and sends it as a header on every request.
pub struct MultiStepAuth;

/// Seconds before expiry at which the token is refreshed.
const REFRESH_MARGIN_MS: u64 = 5_000;

impl MultiStepAuth {
    async fn handshake(ctx: &mut HookContext) -> Result<String, PluginError> {
        let endpoint = text(ctx, "authEndpoint")
            .ok_or_else(|| PluginError::new("authEndpoint is required"))?
            .to_string();
        let method = text(ctx, "authMethod")
            .unwrap_or("POST")
            .to_ascii_uppercase();
        let client = crate::connector::http::client();
        let request = if method == "GET" {
            client.get(&endpoint)
        } else {
            client.post(&endpoint)
        }
        .insert_header(("Content-Type", "application/json"))
        .timeout(std::time::Duration::from_secs(10));
        let sent = match ctx.plugin_config.get("authBody").filter(|b| !b.is_null()) {
            Some(body) if method != "GET" => request.send_json(body).await,
            _ => request.send().await,
        };
        let mut response =
            sent.map_err(|e| PluginError::new(format!("Auth handshake failed: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PluginError::new(format!(
                "Auth handshake failed: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        let body: Value = response.json().limit(1 << 20).await.map_err(|e| {
            PluginError::new(format!(
                "Auth handshake failed: the answer is not JSON: {e}"
            ))
        })?;
        let token_path = text(ctx, "tokenPath").unwrap_or("token").to_string();
        let token = template::get(&body, &token_path)
            .and_then(|t| match t {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or_else(|| {
                PluginError::new(format!(
                    "No token found at path \"{token_path}\" in the auth response"
                ))
            })?;
        ctx.state.insert("authToken".into(), json!(token));
        let expires_at = text(ctx, "expiresInPath")
            .and_then(|p| template::get(&body, p))
            .and_then(Value::as_f64)
            .map(|secs| now_ms() + (secs * 1000.0) as u64);
        ctx.state.insert("tokenExpiresAt".into(), json!(expires_at));
        Ok(token)
    }

    fn header(ctx: &HookContext, token: &str) -> (String, String) {
        let name = text(ctx, "tokenHeader")
            .unwrap_or("Authorization")
            .to_string();
        // Krawall left a leading space with an empty prefix; we do not.
        let prefix = ctx
            .plugin_config
            .get("tokenPrefix")
            .and_then(Value::as_str)
            .unwrap_or("Bearer");
        let value = if prefix.is_empty() {
            token.to_string()
        } else {
            format!("{prefix} {token}")
        };
        (name, value)
    }
}

#[async_trait(?Send)]
impl Plugin for MultiStepAuth {
    fn manifest(&self) -> PluginManifest {
        manifest(
            "multi-step-auth",
            "Multi-Step Auth",
            "Fetches a token from an auth endpoint before connecting (e.g. POST /auth/token) and sends it as a header; refreshes it before it expires.",
            10,
            crate::plugin::CONNECTOR_TYPES,
            vec![
                field("authEndpoint", "Auth Endpoint", FieldType::String, true, None, "URL of the token endpoint."),
                select("authMethod", "Auth Method", &["POST", "GET"], false, Some("POST"), "HTTP method of the handshake."),
                // Credentials: masked in every response, sealed at rest.
                secret(field("authBody", "Auth Body", FieldType::Json, false, None, "JSON body of the handshake (credentials: masked in responses, encrypted at rest).")),
                field("tokenPath", "Token Path", FieldType::String, false, Some(json!("token")), "Where the token is in the answer, e.g. data.access_token."),
                field("tokenHeader", "Token Header", FieldType::String, false, Some(json!("Authorization")), "Header that carries the token."),
                field("tokenPrefix", "Token Prefix", FieldType::String, false, Some(json!("Bearer")), "Put before the token in the header."),
                field("expiresInPath", "Expires-In Path", FieldType::String, false, None, "Where the token's lifetime in seconds is in the answer; the token is refreshed before it runs out."),
            ],
        )
    }

    fn connector_hooks(&self) -> HookSet {
        HookSet::EMPTY
            .with(Hook::Initialize)
            .with(Hook::OnConnect)
            .with(Hook::BeforeSend)
            .with(Hook::OnDisconnect)
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: &Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        match hook {
            Hook::Initialize | Hook::OnDisconnect => {
                ctx.state.insert("authToken".into(), Value::Null);
                ctx.state.insert("tokenExpiresAt".into(), Value::Null);
                Ok(Some(Value::Null))
            }
            Hook::OnConnect => {
                let token = Self::handshake(ctx).await?;
                let mut config: ConnectorConfig = ConnectorConfig::deserialize(input)
                    .map_err(|e| PluginError::new(format!("unexpected connector config: {e}")))?;
                // Keep every header the target's own auth produced, then add the token's.
                let mut headers: Map<String, Value> =
                    auth_headers(config.auth_type, &config.auth_config)
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                let (name, value) = Self::header(ctx, &token);
                headers.insert(name, Value::String(value));
                config.auth_type = AuthType::CustomHeader;
                config.auth_config =
                    Map::from_iter([("headers".to_string(), Value::Object(headers))]);
                Ok(Some(serde_json::to_value(config).unwrap_or(Value::Null)))
            }
            Hook::BeforeSend => {
                let expires = ctx.state.get("tokenExpiresAt").and_then(Value::as_u64);
                if expires.is_none_or(|at| now_ms() + REFRESH_MARGIN_MS < at) {
                    return Ok(None);
                }
                let token = Self::handshake(ctx).await?;
                let (name, value) = Self::header(ctx, &token);
                let message = input.get("message").cloned().unwrap_or(Value::Null);
                // `$headers` in the message metadata overrides request headers for this send.
                Ok(Some(
                    json!({ "message": message, "metadata": { "$headers": { name: value } } }),
                ))
            }
            Hook::AfterReceive | Hook::OnChunk => Ok(None),
        }
    }

    fn on_error(&self, _id: &str, error: &str, hook: Hook, ctx: &HookContext) {
        tracing::error!(plugin = "multi-step-auth", hook = hook.name(), session = %ctx.session_id, %error, "Hook failed.");
    }
}

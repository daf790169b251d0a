//! The connector of a route to a model provider: a session's upstream is then an
//! `inference` client (its retries, circuit breaker and fallback client included).
//!
//! Owns turning one pipeline send into a chat call: the client's whole request travels in the
//! `$request` variable, its last user message replaced by the message as `beforeSend` left it;
//! the answer's text, tool calls and usage come back as a connector response. Does not own
//! the provider's wire format (`inference::wire`) nor sessions.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use crate::connector::{
    Connector, ConnectorError, ConnectorResponse, HealthStatus, ResponseMetadata,
};
use crate::inference::{ChatRequest, Client, InferenceError, Role};

/// The variable a front door's request travels in (a `$`-key: never in a reply or a row).
pub const REQUEST_VARIABLE: &str = "$request";

pub struct InferenceConnector {
    pub client: Arc<Client>,
}

/// A model call's failure as a connector's: a status keeps its status (a 4xx is the
/// client's), an open breaker is a 503, the rest cannot reach the provider.
pub fn connector_error(error: InferenceError) -> ConnectorError {
    match error {
        InferenceError::Status {
            status, message, ..
        } => ConnectorError::Status { status, message },
        InferenceError::CircuitOpen { .. } => ConnectorError::Status {
            status: 503,
            message: error.to_string(),
        },
        InferenceError::Tls { error, .. } => ConnectorError::Tls(error),
        InferenceError::Decode { .. } => ConnectorError::BadResponse(error.to_string()),
        InferenceError::Config(message) => ConnectorError::Config(message),
        InferenceError::Network { .. } => ConnectorError::Unreachable(error.to_string()),
    }
}

/// The request for one send: the caller's, with its last user message as the pipeline left
/// it.
pub fn request_for(
    message: &str,
    variables: &Map<String, Value>,
) -> Result<ChatRequest, ConnectorError> {
    let mut request: ChatRequest = variables
        .get(REQUEST_VARIABLE)
        .cloned()
        .ok_or_else(|| {
            ConnectorError::Config("no request to send (the $request variable is missing)".into())
        })
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                ConnectorError::Config(format!("the $request variable is not a chat request: {e}"))
            })
        })?;
    if let Some(last) = request
        .messages
        .iter_mut()
        .rev()
        .find(|m| m.role == Role::User)
    {
        last.content = message.to_string();
    }
    Ok(request)
}

#[async_trait(?Send)]
impl Connector for InferenceConnector {
    fn connector_type(&self) -> &'static str {
        "HTTP_REST"
    }

    async fn send_message(
        &self,
        message: &str,
        variables: &Map<String, Value>,
    ) -> Result<ConnectorResponse, ConnectorError> {
        let request = request_for(message, variables)?;
        let began = Instant::now();
        let answer = self.client.chat(request).await.map_err(connector_error)?;
        let usage = answer.usage;
        Ok(ConnectorResponse {
            content: answer.content,
            metadata: ResponseMetadata {
                response_time_ms: began.elapsed().as_millis() as u64,
                token_usage: Some(json!({
                    "promptTokens": usage.prompt_tokens,
                    "completionTokens": usage.completion_tokens,
                    "totalTokens": usage.total_tokens,
                })),
                tool_calls: (!answer.tool_calls.is_empty())
                    .then(|| serde_json::to_value(&answer.tool_calls).unwrap_or(Value::Null)),
                ..ResponseMetadata::default()
            },
        })
    }

    async fn health_check(&self) -> HealthStatus {
        HealthStatus {
            healthy: true,
            latency_ms: None,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::ChatMessage;

    #[test]
    fn the_pipelines_message_replaces_the_last_user_message_only() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::text(Role::User, "first"),
                ChatMessage::text(Role::Assistant, "ok"),
                ChatMessage::text(Role::User, "second"),
                ChatMessage::text(Role::Tool, "result"),
            ],
            ..ChatRequest::default()
        };
        let mut vars = Map::new();
        vars.insert(
            REQUEST_VARIABLE.into(),
            serde_json::to_value(&request).unwrap(),
        );
        let sent = request_for("SECOND", &vars).unwrap();
        let texts: Vec<&str> = sent.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(texts, ["first", "ok", "SECOND", "result"]);
        assert!(matches!(
            request_for("x", &Map::new()),
            Err(ConnectorError::Config(_))
        ));
        assert_eq!(
            connector_error(InferenceError::CircuitOpen {
                provider: "p".into(),
                retry_in_ms: 5
            })
            .status(),
            Some(503)
        );
    }
}

//! `audit` (priority 200): passively records every message and answer of a session.
//!
//! Owns what an entry says (direction, message or answer, response time, token usage). Does
//! not own where entries are kept (the store's `AuditLog`), so they outlive plugin restarts.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{manifest, now_ms};
use crate::plugin::{Hook, HookContext, HookSet, Plugin, PluginError, PluginManifest};
use crate::store::audit::AuditLog;
use crate::store::{AuditDirection, AuditEntry};

/// Passively records every message and answer.
pub struct Audit {
    log: Arc<AuditLog>,
}

impl Audit {
    pub fn new(log: Arc<AuditLog>) -> Self {
        Audit { log }
    }
}

#[async_trait(?Send)]
impl Plugin for Audit {
    fn manifest(&self) -> PluginManifest {
        manifest(
            "audit",
            "Audit Log",
            "Passive logging of all messages with timestamps, response times and token counts; GET /api/sessions/{id}/audit.",
            200,
            crate::plugin::CONNECTOR_TYPES,
            Vec::new(),
        )
    }

    fn connector_hooks(&self) -> HookSet {
        HookSet::EMPTY
            .with(Hook::Initialize)
            .with(Hook::BeforeSend)
            .with(Hook::AfterReceive)
            .with(Hook::OnDisconnect)
    }

    async fn connector_hook(
        &self,
        _id: &str,
        hook: Hook,
        input: &Value,
        ctx: &mut HookContext,
    ) -> Result<Option<Value>, PluginError> {
        let entry = |direction| AuditEntry {
            timestamp: crate::util::rfc3339(SystemTime::now()),
            direction,
            session_id: ctx.session_id.clone(),
            target_id: ctx.target_id.clone(),
            message: None,
            response_content: None,
            response_time_ms: None,
            token_usage: None,
        };
        match hook {
            Hook::BeforeSend => {
                let mut sent = entry(AuditDirection::Sent);
                sent.message = input["message"].as_str().map(str::to_owned);
                self.log.push(sent);
                ctx.state
                    .insert("lastSendTimestamp".into(), json!(now_ms()));
            }
            Hook::AfterReceive => {
                let response = &input["response"];
                let mut received = entry(AuditDirection::Received);
                received.response_content = response["content"].as_str().map(str::to_owned);
                received.response_time_ms = ctx
                    .state
                    .get("lastSendTimestamp")
                    .and_then(Value::as_u64)
                    .map(|sent| now_ms().saturating_sub(sent))
                    .or_else(|| response["metadata"]["responseTimeMs"].as_u64());
                received.token_usage = response["metadata"].get("tokenUsage").cloned();
                self.log.push(received);
            }
            Hook::Initialize | Hook::OnDisconnect => {
                ctx.state.insert("lastSendTimestamp".into(), Value::Null);
            }
            Hook::OnConnect | Hook::OnChunk => {}
        }
        // Passive: it never changes what flows through.
        Ok(None)
    }
}

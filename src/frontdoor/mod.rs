//! Front doors: OpenAI- and Anthropic-compatible traffic through the plugin pipeline.
//!
//! Owns what happens between a client's request (already read by `wire`) and its answer: the
//! model route it reaches (`route`), the implicit session it runs in (one per conversation,
//! keyed by `X-Session-ID` or the request's user, otherwise one per request, closed after
//! it), the request handed to the pipeline (the last user message as the message, the whole
//! conversation in the metadata and the `${messages}` variable), trying the route's fallbacks
//! when an upstream fails before answering, and the virtual API keys (`keys`). Sessions do the
//! rest exactly as for `POST /api/sessions`: `beforeSend`, the connector (a target's, or a
//! model provider's through `connector`), `onChunk`, `afterReceive`, transcripts and audit.
//! Does not own HTTP (`api::frontdoor` reads requests and writes answers) nor the pipeline
//! (`session`).

pub mod connector;
pub mod keys;
pub mod route;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::connector::ConnectorError;
use crate::inference::Inference;
use crate::session::{MakeConnector, OpenSpec, SessionError, SessionManager, StreamEvent};
use crate::store::Store;
use crate::target::Target;
use keys::{KeyError, KeyRing};
use route::{ModelRoute, RouteError, RouteTable};
use wire::{Answer, Dialect, Request};

/// Why a front-door request failed; `api::error` maps each to a status and code, and
/// `api::frontdoor` answers it in the client's own error shape.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrontdoorError {
    #[error(transparent)]
    Invalid(#[from] wire::Invalid),
    #[error("model '{0}' does not exist")]
    ModelNotFound(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("model route '{route}' did not answer within {after_ms} ms")]
    Timeout { route: String, after_ms: u64 },
}

impl FrontdoorError {
    /// Whether the next route may answer instead: the upstream failed or was too slow (not
    /// the client's request, which another route would refuse the same way).
    fn fails_over(&self) -> bool {
        match self {
            FrontdoorError::Timeout { .. } => true,
            FrontdoorError::Session(SessionError::TargetNotFound(_)) => true,
            FrontdoorError::Session(SessionError::Upstream(e)) => match e {
                ConnectorError::Status { status, .. } => *status >= 500 || *status == 429,
                ConnectorError::Config(_) => false,
                _ => true,
            },
            _ => false,
        }
    }
}

/// Who is asking, and which conversation the request belongs to.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The virtual key's id, when the request carried one.
    pub key: Option<String>,
    /// `X-Session-ID`, or the request's user.
    pub conversation: Option<String>,
}

/// A streamed answer under way: the first event (a chunk or the end) and the rest.
pub struct Streamed {
    pub session: String,
    pub route: String,
    pub first: StreamEvent,
    pub events: mpsc::Receiver<StreamEvent>,
    /// The session was opened for this request only: close it when the stream ends.
    pub ephemeral: bool,
}

/// The front doors' state: routes, keys, and the conversations' sessions.
pub struct FrontDoor {
    sessions: Arc<SessionManager>,
    inference: Arc<Inference>,
    pub routes: RouteTable,
    pub keys: KeyRing,
    store: Option<Store>,
    /// `key id, conversation, route` → session id.
    conversations: Mutex<HashMap<(String, String, String), String>>,
    /// Requests without a valid key are refused.
    pub require_key: bool,
    /// Held by a route change from its first write to its last, and by
    /// [`FrontDoor::sync_routes`] from its store read to its memory update.
    changing: tokio::sync::Mutex<()>,
}

/// The model routes the store holds, their plugin credentials opened (an unreadable one is
/// skipped with a warning).
async fn stored_routes(store: &Store) -> Result<Vec<ModelRoute>, String> {
    let bodies = store.model_routes().await.map_err(|e| e.to_string())?;
    let mut stored = Vec::with_capacity(bodies.len());
    for body in bodies {
        // Credentials of plugin configs were sealed on their way in.
        let body = match store.secrets() {
            Some(secrets) => secrets.open(&body).map_err(|e| e.to_string())?,
            None => body,
        };
        match serde_json::from_value::<ModelRoute>(body) {
            Ok(route) => stored.push(route),
            Err(error) => tracing::warn!(%error, "A stored model route cannot be read; skipped."),
        }
    }
    Ok(stored)
}

/// The front doors' settings.
#[derive(Debug, Clone)]
pub struct FrontdoorConfig {
    pub require_key: bool,
    /// `[[models]]` as JSON.
    pub models: Vec<Value>,
}

impl FrontDoor {
    /// The routes of the settings (every problem, with its path) and of the store, and the
    /// stored keys.
    pub async fn build(
        config: FrontdoorConfig,
        sessions: Arc<SessionManager>,
        inference: Arc<Inference>,
        store: Option<Store>,
    ) -> Result<FrontDoor, Vec<String>> {
        let exists = |id: &str| sessions.target(id).is_some();
        let configured = route::from_settings(&config.models, &exists)?;
        let stored = match &store {
            Some(store) => stored_routes(store).await.map_err(|e| vec![e])?,
            None => Vec::new(),
        };
        let keys = KeyRing::load(store.clone())
            .await
            .map_err(|e| vec![e.to_string()])?;
        Ok(FrontDoor {
            routes: RouteTable::new(configured, stored),
            keys,
            sessions,
            inference,
            store,
            conversations: Mutex::new(HashMap::new()),
            require_key: config.require_key,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    /// Takes the model routes made over REST from the store again, as the other instances of
    /// a cluster left them. Answers how many there are now; without a store, nothing changes.
    pub async fn sync_routes(&self) -> Result<usize, FrontdoorError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let _changing = self.changing.lock().await;
        let stored = stored_routes(store)
            .await
            .map_err(|e| FrontdoorError::from(KeyError::Store(e)))?;
        let count = stored.len();
        self.routes.replace_stored(stored);
        Ok(count)
    }

    /// The route model name `model` reaches.
    pub fn route_for(&self, model: &str) -> Result<ModelRoute, FrontdoorError> {
        let routes = self.routes.snapshot();
        route::resolve(&routes, model)
            .cloned()
            .ok_or_else(|| FrontdoorError::ModelNotFound(model.to_string()))
    }

    /// Adds a route over REST (persisted with the store on).
    pub async fn add_route(&self, body: Value) -> Result<ModelRoute, FrontdoorError> {
        let _changing = self.changing.lock().await;
        let exists = |id: &str| self.sessions.target(id).is_some();
        let route = self.routes.add(&body, &exists)?;
        if let Some(store) = &self.store {
            let at = crate::util::rfc3339(SystemTime::now());
            let mut saved = serde_json::to_value(&route).unwrap_or(Value::Null);
            // Never in clear at rest: sealed with the store's key, or masked without one.
            // Only when it has plugins: indexing would add `"plugins": null`, which does not
            // read back (the route was skipped at the next start and by the other instances).
            if let Some(plugins) = saved.get_mut("plugins") {
                route::for_each_credential(plugins, &mut |v| {
                    *v = match store.secrets() {
                        Some(secrets) => secrets.seal(v),
                        None => Value::String(crate::util::MASK.into()),
                    }
                });
            }
            if let Err(error) = store.save_model_route(&route.name, &saved, &at).await {
                let _ = self.routes.remove(&route.name);
                return Err(KeyError::Store(error.to_string()).into());
            }
        }
        Ok(route)
    }

    pub async fn remove_route(&self, name: &str) -> Result<(), FrontdoorError> {
        let _changing = self.changing.lock().await;
        self.routes.remove(name)?;
        if let Some(store) = &self.store {
            if let Err(error) = store.delete_model_route(name).await {
                tracing::warn!(route = %name, %error, "A deleted model route stays in the store.");
            }
        }
        Ok(())
    }

    /// The target and connector of a route's sessions.
    fn upstream(
        &self,
        route: &ModelRoute,
    ) -> Result<(Target, Option<MakeConnector>), FrontdoorError> {
        if let Some(id) = &route.target {
            let target = self
                .sessions
                .target(id)
                .ok_or_else(|| SessionError::TargetNotFound(id.clone()))?;
            return Ok((target, None));
        }
        let config = route
            .inference
            .as_ref()
            .ok_or_else(|| FrontdoorError::ModelNotFound(route.name.clone()))?;
        let client = self
            .inference
            .resolve(config)
            .map_err(|e| SessionError::Upstream(connector::connector_error(e)))?;
        let endpoint = config.endpoint.clone().unwrap_or_else(|| {
            crate::inference::provider(&config.provider)
                .map(|p| p.endpoint.to_string())
                .unwrap_or_default()
        });
        // The session's target names the route; its connector is the model client, so the
        // template fields are never read.
        let target = Target {
            id: format!("model:{}", route.name),
            name: route.name.clone(),
            connector_type: "HTTP_REST".into(),
            endpoint,
            auth_type: Default::default(),
            auth_config: Map::new(),
            request_template: Default::default(),
            response_template: Default::default(),
            protocol_config: Map::new(),
            timeout_ms: route.timeout_ms.unwrap_or(60_000),
            plugins: Vec::new(),
            tls: Default::default(),
        };
        let make: MakeConnector = Arc::new(move |_config| {
            Ok(Box::new(connector::InferenceConnector {
                client: client.clone(),
            }) as Box<dyn crate::connector::Connector>)
        });
        Ok((target, Some(make)))
    }

    /// The session a request runs in: the conversation's (opened on first use, and again
    /// after it ended) or a new one for this request only (`true`).
    async fn session_for(
        &self,
        route: &ModelRoute,
        caller: &Caller,
    ) -> Result<(String, bool), FrontdoorError> {
        let Some(conversation) = &caller.conversation else {
            return Ok((self.open(route).await?, true));
        };
        let key = (
            caller.key.clone().unwrap_or_default(),
            conversation.clone(),
            route.name.clone(),
        );
        let known = self
            .conversations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(id) = known {
            if self
                .sessions
                .describe(&id)
                .await
                .is_ok_and(|s| s.state == crate::session::actor::SessionState::Open)
            {
                return Ok((id, false));
            }
        }
        let id = self.open(route).await?;
        self.conversations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, id.clone());
        Ok((id, false))
    }

    async fn open(&self, route: &ModelRoute) -> Result<String, FrontdoorError> {
        let (target, connector) = self.upstream(route)?;
        let info = self
            .sessions
            .open(OpenSpec {
                target,
                plugins: route.plugins.clone(),
                connector,
            })
            .await?;
        Ok(info.id)
    }

    /// Closes a session opened for one request, in the background.
    pub fn release(self: &Arc<Self>, session: String) {
        let this = self.clone();
        actix_web::rt::spawn(async move {
            let _ = this.sessions.close(&session).await;
        });
    }

    /// What the pipeline gets besides the message: the metadata plugins see (the whole
    /// conversation, the dialect) and the variables (the request for a model provider,
    /// `${messages}` and `${model}` for a target's template; `messages` kept private).
    fn pipeline_input(
        request: &Request,
        route: &ModelRoute,
        dialect: Dialect,
        caller: &Caller,
    ) -> (Value, Map<String, Value>) {
        let messages = wire::openai_messages(&request.messages);
        let metadata = json!({ "frontdoor": dialect.as_str(), "messages": messages.clone() });
        let mut variables = Map::new();
        variables.insert(
            connector::REQUEST_VARIABLE.into(),
            serde_json::to_value(request.chat_request()).unwrap_or(Value::Null),
        );
        variables.insert("messages".into(), messages);
        variables.insert("model".into(), json!(request.model));
        variables.insert("route".into(), json!(route.name));
        if let Some(key) = &caller.key {
            variables.insert("apiKey".into(), json!(key));
        }
        variables.insert("$private".into(), json!(["messages"]));
        (metadata, variables)
    }

    /// A whole answer: the route, then its fallbacks until one answers.
    pub async fn complete(
        self: &Arc<Self>,
        request: &Request,
        first: &ModelRoute,
        dialect: Dialect,
        caller: &Caller,
    ) -> Result<(Answer, String), FrontdoorError> {
        let routes = self.routes.snapshot();
        let chain = route::chain(&routes, first);
        let mut outcome = Err(FrontdoorError::ModelNotFound(first.name.clone()));
        for (i, route) in chain.iter().enumerate() {
            outcome = self.complete_on(request, route, dialect, caller).await;
            match &outcome {
                Err(error) if error.fails_over() && i + 1 < chain.len() => {
                    tracing::warn!(route = %route.name, next = %chain[i + 1].name, %error, "Model route failed; trying its fallback.");
                }
                _ => break,
            }
        }
        outcome
    }

    async fn complete_on(
        self: &Arc<Self>,
        request: &Request,
        route: &ModelRoute,
        dialect: Dialect,
        caller: &Caller,
    ) -> Result<(Answer, String), FrontdoorError> {
        let (session, ephemeral) = self.session_for(route, caller).await?;
        let (metadata, variables) = Self::pipeline_input(request, route, dialect, caller);
        let send = self.sessions.send_with(
            &session,
            request.last_user_text(),
            Some(metadata),
            variables,
        );
        let result = match route.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), send)
                .await
                .unwrap_or_else(|_| Err(SessionError::Upstream(ConnectorError::Timeout)))
                .map_err(|e| match e {
                    SessionError::Upstream(ConnectorError::Timeout) => FrontdoorError::Timeout {
                        route: route.name.clone(),
                        after_ms: ms,
                    },
                    other => other.into(),
                }),
            None => send.await.map_err(FrontdoorError::from),
        };
        if ephemeral {
            self.release(session.clone());
        }
        let reply = result?;
        let (tool_calls, usage) = wire::reply_parts(&reply["metadata"]);
        Ok((
            Answer {
                id: session.clone(),
                model: request.model.clone(),
                content: reply["content"].as_str().unwrap_or_default().to_string(),
                tool_calls,
                usage,
                created: unix_now(),
            },
            session,
        ))
    }

    /// A streamed answer: the route, then its fallbacks until one begins answering (a
    /// failure after the first chunk ends the stream instead: the client has part of it).
    pub async fn stream(
        self: &Arc<Self>,
        request: &Request,
        first: &ModelRoute,
        dialect: Dialect,
        caller: &Caller,
    ) -> Result<Streamed, FrontdoorError> {
        let routes = self.routes.snapshot();
        let chain = route::chain(&routes, first);
        let mut last = FrontdoorError::ModelNotFound(first.name.clone());
        for (i, route) in chain.iter().enumerate() {
            match self.stream_on(request, route, dialect, caller).await {
                Ok(streamed) => return Ok(streamed),
                Err(error) if error.fails_over() && i + 1 < chain.len() => {
                    tracing::warn!(route = %route.name, next = %chain[i + 1].name, %error, "Model route failed; trying its fallback.");
                    last = error;
                }
                Err(error) => return Err(error),
            }
        }
        Err(last)
    }

    async fn stream_on(
        self: &Arc<Self>,
        request: &Request,
        route: &ModelRoute,
        dialect: Dialect,
        caller: &Caller,
    ) -> Result<Streamed, FrontdoorError> {
        let (session, ephemeral) = self.session_for(route, caller).await?;
        let (metadata, variables) = Self::pipeline_input(request, route, dialect, caller);
        let opened = self.sessions.send_streaming_with(
            &session,
            request.last_user_text(),
            Some(metadata),
            variables,
        );
        let mut events = match opened {
            Ok(events) => events,
            Err(error) => {
                if ephemeral {
                    self.release(session);
                }
                return Err(error.into());
            }
        };
        let first = match route.timeout_ms {
            Some(ms) => {
                match tokio::time::timeout(Duration::from_millis(ms), events.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        if ephemeral {
                            self.release(session);
                        }
                        return Err(FrontdoorError::Timeout {
                            route: route.name.clone(),
                            after_ms: ms,
                        });
                    }
                }
            }
            None => events.recv().await,
        };
        match first {
            Some(StreamEvent::Failed(error)) => {
                if ephemeral {
                    self.release(session);
                }
                Err(error.into())
            }
            Some(first) => Ok(Streamed {
                session,
                route: route.name.clone(),
                first,
                events,
                ephemeral,
            }),
            None => Err(SessionError::Ended {
                id: session,
                reason: "the stream ended before it began".into(),
            }
            .into()),
        }
    }
}

/// Seconds since the epoch (the `created` of OpenAI's answers).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_upstream_failures_and_timeouts_fail_over() {
        let status = |s| {
            FrontdoorError::Session(SessionError::Upstream(ConnectorError::Status {
                status: s,
                message: String::new(),
            }))
        };
        assert!(status(500).fails_over() && status(503).fails_over() && status(429).fails_over());
        assert!(!status(400).fails_over() && !status(401).fails_over());
        assert!(FrontdoorError::Timeout {
            route: "r".into(),
            after_ms: 1
        }
        .fails_over());
        assert!(
            FrontdoorError::Session(SessionError::Upstream(ConnectorError::Timeout)).fails_over()
        );
        assert!(!FrontdoorError::Session(SessionError::QueueFull("s".into())).fails_over());
        assert!(!FrontdoorError::ModelNotFound("m".into()).fails_over());
    }

    #[test]
    fn the_pipeline_gets_the_last_user_message_and_the_whole_conversation() {
        let request = wire::openai_request(&json!({ "model": "m", "messages": [
            { "role": "system", "content": "s" }, { "role": "user", "content": "hello" } ] }))
        .unwrap();
        let route: ModelRoute =
            serde_json::from_value(json!({ "name": "m", "target": "t" })).unwrap();
        let caller = Caller {
            key: Some("key_1".into()),
            conversation: None,
        };
        let (metadata, variables) =
            FrontDoor::pipeline_input(&request, &route, Dialect::OpenAi, &caller);
        assert_eq!(request.last_user_text(), "hello");
        assert_eq!(
            metadata["messages"][1],
            json!({ "role": "user", "content": "hello" })
        );
        assert_eq!(variables["$private"], json!(["messages"]));
        assert_eq!(variables["apiKey"], "key_1");
        assert!(variables[connector::REQUEST_VARIABLE]["messages"].is_array());
    }
}

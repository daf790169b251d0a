//! REST for what plugins register: routes, tools and agents, and the agent runner.
//!
//! Owns `GET /api/routes`, `GET /api/tools`, `GET /api/tools/{name}`,
//! `POST /api/tools/{name}/invoke`, `GET /api/agents`, `GET /api/agents/{id}` (each with its
//! standing: `state`, `consecutiveFailures`), `POST /api/agents/{id}/chat` (streamed as
//! Server-Sent Events with `Accept: text/event-stream`, or at `POST
//! /api/agents/{id}/chat/stream`) and `POST /api/agents/{id}/resume`. Does not own the registries (`plugin::extensions`) nor
//! running tools and turns (`plugin::call`, `turn`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{ApiError, AppState};
use crate::tool::Caller;

pub fn configure(api: &mut super::Mounter<'_>) {
    api.get("/routes", list_routes)
        .get("/tools", list_tools)
        .get("/tools/{name}", get_tool)
        .post("/tools/{name}/invoke", invoke_tool)
        .get("/agents", list_agents)
        .get("/agents/{id}", get_agent)
        .post("/agents/{id}/chat", chat)
        .post("/agents/{id}/chat/stream", chat_stream)
        .post("/agents/{id}/resume", resume);
}

/// `{routes}`.
#[derive(Serialize, ToSchema)]
struct RouteList {
    #[schema(value_type = Vec<super::schemas::RouteView>)]
    routes: Vec<crate::route::Route>,
}

/// `{tools}`.
#[derive(Serialize, ToSchema)]
struct ToolList {
    #[schema(value_type = Vec<super::schemas::ToolView>)]
    tools: Vec<crate::tool::Tool>,
}

/// `{agents}`.
#[derive(Serialize, ToSchema)]
struct AgentList {
    #[schema(value_type = Vec<super::schemas::AgentView>)]
    agents: Vec<AgentWithStatus>,
}

/// An agent with its standing (paused or not, failed turns in a row).
#[derive(Serialize)]
struct AgentWithStatus {
    #[serde(flatten)]
    agent: crate::agent::Agent,
    #[serde(flatten)]
    status: crate::turn::AgentStatus,
}

fn with_status(state: &AppState, agent: crate::agent::Agent) -> AgentWithStatus {
    AgentWithStatus {
        status: state.agents.status(&agent.config.id),
        agent,
    }
}

/// Every plugin route.
///
/// Method, path, owner, handler and whether it is public. The routes themselves are served
/// under `/plugins/{id}/…` (or the absolute paths plugins declared).
#[utoipa::path(get, path = "/api/routes", tag = "extensions",
    responses((status = 200, description = "The plugin routes.", body = RouteList)),
    extensions(("x-error-codes" = json!([]))))]
async fn list_routes(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(RouteList {
        routes: state.ext.routes.list(),
    })
}

/// Every registered tool.
#[utoipa::path(get, path = "/api/tools", tag = "extensions",
    responses((status = 200, description = "Tools: name, description, JSON Schema `parameters`, owning plugin.",
        body = ToolList)),
    extensions(("x-error-codes" = json!([]))))]
async fn list_tools(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(ToolList {
        tools: state.ext.tools.list(),
    })
}

/// One tool.
#[utoipa::path(get, path = "/api/tools/{name}", tag = "extensions",
    params(("name" = String, Path, description = "The tool's name.")),
    responses((status = 200, description = "The tool.", body = super::schemas::ToolView)),
    extensions(("x-error-codes" = json!(["tool_not_found"]))))]
async fn get_tool(
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let tool = state
        .ext
        .tools
        .get(&name)
        .ok_or_else(|| crate::tool::ToolError::NotFound(name.into_inner()))?;
    Ok(HttpResponse::Ok().json(tool))
}

/// Body of `POST /api/tools/{name}/invoke`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"params": {"name": "Ada"}}))]
struct InvokeBody {
    /// The tool's parameters, checked against its JSON Schema (`{}` when absent or null).
    #[serde(default)]
    params: Value,
}

/// Invoke a tool.
///
/// The parameters are validated against the tool's JSON Schema, then the owning plugin runs
/// it; `tool.executed` is published whatever happened.
#[utoipa::path(post, path = "/api/tools/{name}/invoke", tag = "extensions",
    params(("name" = String, Path, description = "The tool's name.")),
    request_body = InvokeBody,
    responses((status = 200, description = "The tool's result.", body = super::schemas::ToolResult)),
    extensions(("x-error-codes" = json!(["tool_not_found", "invalid_tool_params", "tool_failed", "plugin_unavailable", "unsupported_media_type"]))))]
async fn invoke_tool(
    name: web::Path<String>,
    body: super::JsonObject<InvokeBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = match body.into_inner().params {
        Value::Null => json!({}),
        other => other,
    };
    let done = crate::plugin::call::tool(
        &state.plugins,
        &state.broker,
        &name,
        params,
        &Caller::default(),
        state.call_timeout,
    )
    .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// Every agent configuration.
///
/// From `[[agents]]` or plugins, defaults filled in, with `source` and the agent's standing
/// (`state`: `active` or `paused`, `consecutiveFailures`).
#[utoipa::path(get, path = "/api/agents", tag = "extensions",
    responses((status = 200, description = "The agents.", body = AgentList)),
    extensions(("x-error-codes" = json!([]))))]
async fn list_agents(state: web::Data<AppState>) -> HttpResponse {
    let agents = state.ext.agents.list();
    HttpResponse::Ok().json(AgentList {
        agents: agents.into_iter().map(|a| with_status(&state, a)).collect(),
    })
}

/// One agent configuration.
#[utoipa::path(get, path = "/api/agents/{id}", tag = "extensions",
    params(("id" = String, Path, description = "The agent's id.")),
    responses((status = 200, description = "The agent.", body = super::schemas::AgentView)),
    extensions(("x-error-codes" = json!(["agent_not_found"]))))]
async fn get_agent(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let agent = state
        .ext
        .agents
        .get(&id)
        .ok_or_else(|| crate::turn::AgentError::NotFound(id.into_inner()))?;
    Ok(HttpResponse::Ok().json(with_status(&state, agent)))
}

/// Body of `POST /api/agents/{id}/chat`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"message": "Say hello to Ada", "sessionId": "ops-1"}))]
struct ChatBody {
    /// What the user says; must not be blank.
    #[schema(pattern = r"\S")]
    message: String,
    /// The conversation to continue (a new one when absent).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,128}$")]
    session_id: Option<String>,
}

/// One agent turn.
///
/// The model answers with the agent's system prompt, the conversation's history and the tools
/// its allow/deny lists permit; tool calls run through the registry. With
/// `Accept: text/event-stream` the turn is streamed as `POST /api/agents/{id}/chat/stream`
/// streams it.
#[utoipa::path(post, path = "/api/agents/{id}/chat", tag = "extensions",
    params(("id" = String, Path, description = "The agent's id.")),
    request_body = ChatBody,
    responses((status = 200, description = "The turn's answer (JSON), or its Server-Sent Events with `Accept: text/event-stream`.",
        content(
            (super::schemas::ChatResult = "application/json"),
            (super::schemas::AgentStreamEvent = "text/event-stream"),
        ))),
    extensions(("x-error-codes" = json!(["agent_not_found", "agent_paused", "invalid_chat_request", "inference_failed", "tls_error", "circuit_open", "invalid_agent_model", "agent_timeout", "unsupported_media_type"]))))]
async fn chat(
    id: web::Path<String>,
    body: super::JsonObject<ChatBody>,
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if super::sessions::accepts_event_stream(&req) {
        return stream_turn(&state, &id, body);
    }
    let outcome = state
        .agents
        .chat(&id, &body.message, body.session_id)
        .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// One agent turn, streamed.
///
/// Server-Sent Events, as they happen: `delta` (`{type, text}`) for the model's text,
/// `tool_call` (`{type, id, name, arguments}`) before a tool runs, `tool_result`
/// (`{type, id, name, result}`) after, then one `complete` (`{type}` and the JSON answer's
/// fields: `content`, `sessionId`, `toolsUsed`, `usage`, `toolCallCount`, `provider`) or one
/// `error` (`{type, code, message, details?}`: the stream ends). A turn refused before it starts
/// (no such agent, paused, bad message) is a plain JSON error with its status instead. The
/// turn runs to its end even if the client goes away, and is kept in the conversation.
#[utoipa::path(post, path = "/api/agents/{id}/chat/stream", tag = "extensions",
    params(("id" = String, Path, description = "The agent's id.")),
    request_body = ChatBody,
    responses((status = 200, description = "The turn's Server-Sent Events.",
        content((super::schemas::AgentStreamEvent = "text/event-stream")))),
    extensions(("x-error-codes" = json!(["agent_not_found", "agent_paused", "invalid_chat_request", "inference_failed", "tls_error", "circuit_open", "invalid_agent_model", "agent_timeout", "unsupported_media_type"]))))]
async fn chat_stream(
    id: web::Path<String>,
    body: super::JsonObject<ChatBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    stream_turn(&state, &id, body.into_inner())
}

/// Plays the turn in a task of its own (a client that goes away does not cut it short) and
/// streams its frames; the last one is `complete` or `error`.
fn stream_turn(state: &AppState, id: &str, body: ChatBody) -> Result<HttpResponse, ApiError> {
    let turn = state.agents.prepare(id, &body.message, body.session_id)?;
    let (sink, frames) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (turn_sink, mut turn_frames) = tokio::sync::mpsc::unbounded_channel();
    let runner = state.agents.clone();
    let relay = sink.clone();
    // The turn's frames, encoded as they come.
    let relayed = actix_web::rt::spawn(async move {
        while let Some(frame) = turn_frames.recv().await {
            let frame: crate::turn::StreamFrame = frame;
            let data = serde_json::to_string(&frame).unwrap_or_default();
            if relay.send(sse_frame(frame.kind(), &data)).is_err() {
                // The client went away: keep draining so the turn never waits on it.
                continue;
            }
        }
    });
    actix_web::rt::spawn(async move {
        let last = match runner.play(turn, Some(turn_sink)).await {
            Ok(outcome) => {
                let mut data = serde_json::to_value(&outcome).unwrap_or_default();
                if let Value::Object(map) = &mut data {
                    map.insert("type".into(), json!("complete"));
                }
                ("complete", data)
            }
            Err(error) => {
                let mut data = ApiError::from(error).body();
                if let Value::Object(map) = &mut data {
                    map.insert("type".into(), json!("error"));
                }
                ("error", data)
            }
        };
        // After every frame of the turn: `play` dropped its sink, so the relay ends.
        let _ = relayed.await;
        let _ = sink.send(sse_frame(last.0, &last.1.to_string()));
    });
    let frames = futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(frame)), frames))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Proxies must pass chunks on as they come.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames))
}

fn sse_frame(event: &str, data: &str) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// Body of `POST /api/agents/{id}/resume` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"resumedBy": "ops@example.com"}))]
struct ResumeBody {
    /// Who resumes it, for `agent.resumed` (`api` when absent).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    resumed_by: Option<String>,
}

/// Resume a paused agent.
///
/// An agent whose turns failed `agent.max_consecutive_failures` times in a row is paused: its
/// chat answers 409 `agent_paused`. This resumes it (its failure count starts again from
/// zero) and publishes `agent.resumed`. The body is optional.
#[utoipa::path(post, path = "/api/agents/{id}/resume", tag = "extensions",
    params(("id" = String, Path, description = "The agent's id.")),
    request_body(content = Option<ResumeBody>, description = "Optional: who resumes it."),
    responses((status = 200, description = "The agent's standing now.", body = super::schemas::AgentStatusView)),
    extensions(("x-error-codes" = json!(["agent_not_found", "agent_not_paused", "invalid_json", "unsupported_media_type"]))))]
async fn resume(
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: ResumeBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResumeBody::default()
    } else {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidJson(format!("invalid JSON body: {e}")))?;
        super::object_body(value)?
    };
    // It goes into a log line and an event: the documented bound is enforced, not trusted.
    if body
        .resumed_by
        .as_ref()
        .is_some_and(|by| by.chars().count() > 200)
    {
        return Err(ApiError::InvalidJson(
            "`resumedBy` must be at most 200 characters".into(),
        ));
    }
    let resumed_by = body
        .resumed_by
        .filter(|by| !by.trim().is_empty())
        .unwrap_or_else(|| "api".to_string());
    let status = state.agents.resume(&id, &resumed_by)?;
    Ok(HttpResponse::Ok().json(status))
}

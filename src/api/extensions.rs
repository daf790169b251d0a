//! REST for what plugins register: routes, tools and agents, and the agent runner.
//!
//! Owns `GET /api/routes`, `GET /api/tools`, `GET /api/tools/{name}`,
//! `POST /api/tools/{name}/invoke`, `GET /api/agents`, `GET /api/agents/{id}` and
//! `POST /api/agents/{id}/chat`. Does not own the registries (`plugin::extensions`) nor
//! running tools and turns (`plugin::call`, `turn`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::tool::Caller;

pub fn configure(api: &mut super::Mounter<'_>) {
    api.get("/routes", list_routes)
        .get("/tools", list_tools)
        .get("/tools/{name}", get_tool)
        .post("/tools/{name}/invoke", invoke_tool)
        .get("/agents", list_agents)
        .get("/agents/{id}", get_agent)
        .post("/agents/{id}/chat", chat);
}

async fn list_routes(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "routes": state.ext.routes.list() }))
}

async fn list_tools(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "tools": state.ext.tools.list() }))
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    #[serde(default)]
    params: Value,
}

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

async fn list_agents(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "agents": state.ext.agents.list() }))
}

async fn get_agent(
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let agent = state
        .ext
        .agents
        .get(&id)
        .ok_or_else(|| crate::turn::AgentError::NotFound(id.into_inner()))?;
    Ok(HttpResponse::Ok().json(agent))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChatBody {
    message: String,
    #[serde(default)]
    session_id: Option<String>,
}

async fn chat(
    id: web::Path<String>,
    body: super::JsonObject<ChatBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let outcome = state
        .agents
        .chat(&id, &body.message, body.session_id)
        .await?;
    Ok(HttpResponse::Ok().json(outcome))
}

//! Outbound webhooks over HTTP: `/api/webhooks` (list, create, get, delete), a webhook's
//! delivery history and its test delivery.
//!
//! Owns reading the requests and shaping the answers (the secret only in the create answer);
//! behind the admin token like every `/api` route. With the store off every operation answers
//! `store_disabled`. Handlers only translate; `webhook` acts.

use crate::broker::events::{ConfigKind, ConfigOp};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::webhook::{DeliveryView, NewWebhook, WebhookError, WebhookView, Webhooks};

pub fn configure(api: &mut super::Mounter<'_>) {
    api.get("/webhooks", list_webhooks)
        .post("/webhooks", create_webhook)
        .get("/webhooks/{id}", get_webhook)
        .delete("/webhooks/{id}", delete_webhook)
        .get("/webhooks/{id}/deliveries", deliveries)
        .post("/webhooks/{id}/test", test_webhook);
}

fn service(state: &AppState) -> Result<&Webhooks, ApiError> {
    state
        .webhooks
        .as_deref()
        .ok_or(ApiError::Webhook(WebhookError::StoreDisabled))
}

/// Body of `POST /api/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/switchyard", "events": ["plugin.*", "session.closed"], "description": "ops alerts"}))]
#[allow(dead_code)] // A mirror of `webhook::NewWebhook` for the document.
struct WebhookBody {
    /// Where deliveries are POSTed: an http or https URL with a host (no user or password).
    #[schema(max_length = 2048, pattern = r"^https?://\S+$")]
    url: String,
    /// Event patterns, as the event stream takes them: exact names, prefixes like `plugin.*`,
    /// or `*`. At least one.
    #[schema(min_items = 1, max_items = 64)]
    events: Vec<String>,
    /// The signing secret (16-256 characters, no spaces); absent: 32 random bytes as hex.
    #[serde(default)]
    #[schema(min_length = 16, max_length = 256)]
    secret: Option<String>,
    #[serde(default)]
    #[schema(max_length = 500)]
    description: Option<String>,
}

/// A webhook just made: its secret, shown this once.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedWebhook {
    #[serde(flatten)]
    #[schema(inline)]
    view: WebhookView,
    /// Deliveries are signed with it (`X-Switchyard-Signature`). Not shown again.
    secret: String,
}

/// `{id, deleted: true}`.
#[derive(Serialize, ToSchema)]
struct RemovedWebhook {
    id: String,
    deleted: bool,
}

/// `limit`: deliveries to list (1-500, default 50).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct History {
    #[serde(default)]
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
}

/// Every webhook (never its secret).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses((status = 200, description = "The webhooks, oldest first.", body = [WebhookView])),
    extensions(("x-error-codes" = json!(["store_disabled"]))))]
async fn list_webhooks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service(&state)?.list()))
}

/// Create a webhook.
///
/// Events matching its patterns are POSTed to its URL, signed with its secret. The secret is
/// in this answer only; a webhook made without one gets 32 random bytes (hex).
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = WebhookBody,
    responses((status = 201, description = "Created: the webhook with its secret.", body = CreatedWebhook,
        links(
            ("GetWebhook" = (operation_id = "get_webhook", parameters(("id" = "$response.body#/id")))),
            ("WebhookDeliveries" = (operation_id = "deliveries", parameters(("id" = "$response.body#/id")))),
            ("TestWebhook" = (operation_id = "test_webhook", parameters(("id" = "$response.body#/id")))),
            ("DeleteWebhook" = (operation_id = "delete_webhook", parameters(("id" = "$response.body#/id")))),
        ))),
    extensions(("x-error-codes" = json!(["invalid_webhook", "unsupported_media_type", "store_disabled", "internal_error"]))))]
async fn create_webhook(
    state: web::Data<AppState>,
    body: super::JsonObject<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let (view, secret) = service(&state)?.create(body.into_inner()).await?;
    tracing::info!(webhook = %view.id, url = %crate::util::loggable_url(&view.url), "Webhook created.");
    super::config_changed(&state, ConfigKind::Webhook, &view.id, ConfigOp::Upsert);
    Ok(HttpResponse::Created().json(CreatedWebhook { view, secret }))
}

/// One webhook (never its secret).
#[utoipa::path(get, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id.")),
    responses((status = 200, description = "The webhook.", body = WebhookView)),
    extensions(("x-error-codes" = json!(["webhook_not_found", "store_disabled"]))))]
async fn get_webhook(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service(&state)?.get(&id)?))
}

/// Delete a webhook.
///
/// Its deliveries still waiting are not sent, and its history goes with it.
#[utoipa::path(delete, path = "/api/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id.")),
    responses((status = 200, description = "Deleted.", body = RemovedWebhook)),
    extensions(("x-error-codes" = json!(["webhook_not_found", "store_disabled", "internal_error"]))))]
async fn delete_webhook(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    service(&state)?.delete(&id).await?;
    tracing::info!(webhook = %id, "Webhook deleted.");
    super::config_changed(&state, ConfigKind::Webhook, &id, ConfigOp::Delete);
    Ok(HttpResponse::Ok().json(RemovedWebhook { id, deleted: true }))
}

/// A webhook's deliveries.
///
/// Newest first: each with its state (`pending`, `retrying`, `delivered`, `dead`), attempts,
/// last status or error, and the last attempt's latency.
#[utoipa::path(get, path = "/api/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "deliveries",
    params(("id" = String, Path, description = "The webhook's id."), History),
    responses((status = 200, description = "The deliveries, newest first.", body = [DeliveryView])),
    extensions(("x-error-codes" = json!(["webhook_not_found", "store_disabled", "internal_error"]))))]
async fn deliveries(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<History>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=i64::from(crate::webhook::MAX_HISTORY)).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {}",
            crate::webhook::MAX_HISTORY
        )));
    }
    let rows = service(&state)?.deliveries(&id, limit as u32).await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Send a test delivery.
///
/// A `webhook.test` event to this webhook only; answers once its first attempt is over, with
/// the delivery as it then stands (`delivered`, or `retrying` with the receiver's status or
/// the error). A failed test is retried like any delivery.
#[utoipa::path(post, path = "/api/webhooks/{id}/test", tag = "webhooks",
    params(("id" = String, Path, description = "The webhook's id.")),
    responses((status = 200, description = "The delivery after its first attempt.", body = DeliveryView)),
    extensions(("x-error-codes" = json!(["webhook_not_found", "store_disabled", "service_stopping", "internal_error"]))))]
async fn test_webhook(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(service(&state)?.test(&id).await?))
}

//! Routes of the webhooks API. Thin: parse into typed values, call the store, map answers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;

use super::signing::SigningKey;
use super::store::{self, NewWebhook};
use super::target::{TargetError, WebhookUrl};
use super::{ALL_EVENTS, is_known_event_type};
use crate::AppState;
use crate::http::{ApiError, ApiJson, Authenticated, List, PageRequest, json_body, json_response};

/// Longest description accepted.
const MAX_DESCRIPTION: usize = 500;
/// Most event types one endpoint lists.
const MAX_EVENTS: usize = 100;

/// Registers the webhooks routes (under `/v1`), documented in the OpenAPI document.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(delete_webhook)
        .service(list_attempts);
}

/// `POST /v1/webhooks` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// An http(s) URL on a public address.
    url: String,
    /// `email.<event>`, `mail.<status>`, `domain.verified`, `domain.failed`,
    /// `suppression.added`, or `["*"]` for all.
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

fn invalid_url(e: TargetError) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_webhook_url",
        e.to_string(),
    )
    .with_field("url")
}

/// Checks the `events` list: known types or `"*"`; duplicates dropped; `"*"` anywhere
/// means everything.
fn parse_events(events: Vec<String>) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::validation(
            "'events' must list at least one event type, like [\"email.delivered\"], or [\"*\"] for all.",
        )
        .with_field("events"));
    }
    if events.len() > MAX_EVENTS {
        return Err(ApiError::validation(format!(
            "'events' lists more than {MAX_EVENTS} types; use [\"*\"] to receive all."
        ))
        .with_field("events"));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let event = event.trim().to_string();
        if event == ALL_EVENTS {
            return Ok(vec![ALL_EVENTS.to_string()]);
        }
        if !is_known_event_type(&event) {
            return Err(ApiError::validation(format!(
                "'{event}' is not an event type. Use email.<event> (email.delivered, email.bounced, ...), mail.<status>, domain.verified, domain.failed, suppression.added, or \"*\" for all."
            ))
            .with_field(format!("events[{i}]")));
        }
        if !out.contains(&event) {
            out.push(event);
        }
    }
    Ok(out)
}

/// Register an endpoint; the answer shows its signing secret, once.
#[utoipa::path(
    tag = "webhooks",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown only here", body = store::WebhookView),
        (status = 422, description = "Unknown event type (validation_error) or refused URL (invalid_webhook_url)", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/webhooks")]
async fn create_webhook(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: ApiJson<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let ApiJson { value, .. } = body;
    let view = create_endpoint(
        &state,
        auth.mode(),
        &value.url,
        value.events,
        value.description,
    )
    .await?;
    Ok(json_response(StatusCode::CREATED, json_body(&view)))
}

/// Checks and stores a new endpoint (the API route and the dashboard's form): the URL and
/// its resolved addresses, the event types, the description. The answer carries the secret.
pub async fn create_endpoint(
    state: &AppState,
    mode: crate::keys::Mode,
    url: &str,
    events: Vec<String>,
    description: Option<String>,
) -> Result<crate::webhooks::store::WebhookView, ApiError> {
    let url = WebhookUrl::parse(url).map_err(invalid_url)?;
    let events = parse_events(events)?;
    let description = description
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::validation(format!(
            "'description' is longer than {MAX_DESCRIPTION} characters."
        ))
        .with_field("description"));
    }
    state
        .webhooks
        .guard
        .check_url(&url)
        .await
        .map_err(invalid_url)?;
    let (_, secret) = SigningKey::generate();
    let new = NewWebhook {
        mode,
        url: url.as_str().to_string(),
        events,
        description,
        secret,
    };
    let view = state
        .db
        .write(move |c| store::create(c, &new))
        .await
        .map_err(ApiError::from)?;
    state.webhooks.wake();
    Ok(view)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Endpoints, newest first (no secrets).
#[utoipa::path(
    tag = "webhooks",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "`{object: \"list\", data, has_more, next_cursor}`")),
    security(("api_key" = []))
)]
#[get("/webhooks")]
async fn list_webhooks(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let mode = auth.mode();
    let limit = page.limit;
    let rows = state
        .db
        .read(move |c| store::list(c, mode, &page))
        .await
        .map_err(ApiError::from)?;
    let list = List::from_rows(rows, limit, |w| &w.id);
    Ok(json_response(StatusCode::OK, json_body(&list)))
}

fn no_such(id: &str, auth: &Authenticated) -> ApiError {
    ApiError::not_found(format!(
        "No webhook with id '{id}' exists in {} mode.",
        auth.mode().as_str()
    ))
}

/// One endpoint (no secret).
#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "The webhook id (whk_...)")),
    responses(
        (status = 200, description = "The endpoint", body = store::WebhookView),
        (status = 404, description = "No such endpoint in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/webhooks/{id}")]
async fn get_webhook(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    match state
        .db
        .read(move |c| store::get(c, mode, &id2))
        .await
        .map_err(ApiError::from)?
    {
        Some(view) => Ok(json_response(StatusCode::OK, json_body(&view))),
        None => Err(no_such(&id, &auth)),
    }
}

/// Delete an endpoint with its pending deliveries and its attempts.
#[utoipa::path(
    tag = "webhooks",
    params(("id" = String, Path, description = "The webhook id (whk_...)")),
    responses(
        (status = 200, description = "`{id, deleted: true}`"),
        (status = 404, description = "No such endpoint in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[delete("/webhooks/{id}")]
async fn delete_webhook(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let deleted = state
        .db
        .write(move |c| store::delete(c, mode, &id2))
        .await
        .map_err(ApiError::from)?;
    if !deleted {
        return Err(no_such(&id, &auth));
    }
    Ok(crate::http::deleted_response("id", &id))
}

/// Recent delivery attempts of an endpoint, newest first (kept 7 days): what was sent,
/// what came back, and what happens next.
#[utoipa::path(
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The webhook id (whk_...)"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses(
        (status = 200, description = "`{object: \"list\", data: [attempt], has_more, next_cursor}`"),
        (status = 404, description = "No such endpoint in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/webhooks/{id}/attempts")]
async fn list_attempts(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let id = path.into_inner();
    let mode = auth.mode();
    let limit = page.limit;
    let id2 = id.clone();
    match state
        .db
        .read(move |c| store::list_attempts(c, mode, &id2, &page))
        .await
        .map_err(ApiError::from)?
    {
        Some(rows) => {
            let list = List::from_rows(rows, limit, |a| &a.id);
            Ok(json_response(StatusCode::OK, json_body(&list)))
        }
        None => Err(no_such(&id, &auth)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_checked_and_collapsed() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_events(v(&[
                "email.delivered",
                "email.delivered",
                "suppression.added"
            ]))
            .unwrap(),
            v(&["email.delivered", "suppression.added"])
        );
        assert_eq!(parse_events(v(&["email.bounced", "*"])).unwrap(), v(&["*"]));
        let err = parse_events(v(&["email.delivered", "email.nope"])).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("events[1]"));
        assert!(err.message.contains("email.nope"));
        assert!(parse_events(vec![]).is_err());
    }
}

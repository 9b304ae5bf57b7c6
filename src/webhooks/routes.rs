//! Routes of the webhooks API. Thin: parse into typed values, call the store, map answers.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(
        web::resource("/webhooks/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(delete)),
    )
    .service(web::resource("/webhooks/{id}/attempts").route(web::get().to(attempts)));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    url: String,
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

/// `POST /v1/webhooks`
async fn create(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: ApiJson<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let ApiJson { value, .. } = body;
    let url = WebhookUrl::parse(&value.url).map_err(invalid_url)?;
    let events = parse_events(value.events)?;
    let description = value
        .description
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
        mode: auth.mode(),
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
    Ok(json_response(StatusCode::CREATED, json_body(&view)))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/webhooks`
async fn list(
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

/// `GET /v1/webhooks/:id`
async fn get(
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

/// `DELETE /v1/webhooks/:id`: the endpoint, its pending deliveries and its attempts.
async fn delete(
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
    Ok(json_response(
        StatusCode::OK,
        json_body(&json!({"id": id, "deleted": true})),
    ))
}

/// `GET /v1/webhooks/:id/attempts`: recent attempts, newest first.
async fn attempts(
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

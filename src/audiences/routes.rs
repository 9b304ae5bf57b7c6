//! Routes of audiences and contacts (under `/v1`). Thin: parse, call the store, map.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use serde_json::Value;

use super::store::{self, DeleteContact};
use crate::AppState;
use crate::http::{ApiError, ApiJson, Authenticated, List, PageRequest, json_body, json_response};
use crate::keys::Mode;

/// Registers the audience and contact routes.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_audiences)
        .service(create_audience)
        .service(get_audience)
        .service(delete_audience)
        .service(upsert_contacts)
        .service(list_contacts)
        .service(delete_contact);
}

fn no_audience(id: &str, mode: Mode) -> ApiError {
    ApiError::not_found(format!(
        "No audience with id '{id}' exists in {} mode.",
        mode.as_str()
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Audiences, newest first.
#[utoipa::path(
    tag = "audiences",
    params(("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, description = "`{object: \"list\", data: [audience], has_more, next_cursor}`")),
    security(("api_key" = []))
)]
#[get("/audiences")]
async fn list_audiences(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let mode = auth.mode();
    let limit = page.limit;
    let rows = state
        .db
        .read(move |c| store::list_audiences(c, mode, page.before_id.as_deref(), limit))
        .await
        .map_err(ApiError::from)?;
    let list = List::from_rows(rows, limit, |a| &a.id);
    Ok(json_response(StatusCode::OK, json_body(&list)))
}

/// `POST /v1/audiences` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAudience {
    name: Option<String>,
}

/// Create an audience.
#[utoipa::path(
    tag = "audiences",
    request_body = CreateAudience,
    responses(
        (status = 201, description = "The audience", body = store::AudienceView),
        (status = 422, description = "Invalid request", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/audiences")]
async fn create_audience(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: ApiJson<CreateAudience>,
) -> Result<HttpResponse, ApiError> {
    let name = body.value.name.as_deref().map(str::trim).unwrap_or("");
    if name.is_empty() || name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "'name' is required: 1 to 256 characters without line breaks.",
        )
        .with_field("name"));
    }
    let name = name.to_string();
    let mode = auth.mode();
    let view = state
        .db
        .write(move |c| store::create_audience(c, mode, &name))
        .await
        .map_err(ApiError::from)?;
    Ok(json_response(StatusCode::CREATED, json_body(&view)))
}

/// One audience with its contact count.
#[utoipa::path(
    tag = "audiences",
    params(("id" = String, Path, description = "aud_...")),
    responses(
        (status = 200, description = "The audience", body = store::AudienceView),
        (status = 404, description = "No such audience", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/audiences/{id}")]
async fn get_audience(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let view = state
        .db
        .read(move |c| store::get_audience(c, mode, &id2))
        .await
        .map_err(ApiError::from)?;
    match view {
        Some(v) => Ok(json_response(StatusCode::OK, json_body(&v))),
        None => Err(no_audience(&id, mode)),
    }
}

/// Delete an audience and its contacts.
#[utoipa::path(
    tag = "audiences",
    params(("id" = String, Path, description = "aud_...")),
    responses(
        (status = 200, description = "`{id, deleted: true}`"),
        (status = 404, description = "No such audience", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[delete("/audiences/{id}")]
async fn delete_audience(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let deleted = state
        .db
        .write(move |c| store::delete_audience(c, mode, &id2))
        .await
        .map_err(ApiError::from)?;
    if !deleted {
        return Err(no_audience(&id, mode));
    }
    Ok(crate::http::deleted_response("id", &id))
}

/// Add or update contacts: one contact object or `{"contacts": [...]}` (up to 10,000), by
/// email ignoring case, all or nothing, in one transaction.
#[utoipa::path(
    tag = "audiences",
    params(("id" = String, Path, description = "aud_...")),
    request_body(content = Object, description = "A contact `{email, first_name?, last_name?, data?, unsubscribed?}` or `{contacts: [...]}`"),
    responses(
        (status = 200, description = "`{created, updated, contact_count}`", body = store::UpsertOutcome),
        (status = 404, description = "No such audience", body = crate::ops::openapi::ErrorEnvelope),
        (status = 422, description = "Invalid contacts, with `details`", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/audiences/{id}/contacts")]
async fn upsert_contacts(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    body: ApiJson<Value>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let ApiJson { value, .. } = body;
    let contacts = web::block(move || super::parse_contacts(value))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "checking contacts failed");
            ApiError::internal()
        })??;
    let id2 = id.clone();
    let outcome = state
        .db
        .write(move |c| store::upsert_contacts(c, mode, &id2, &contacts))
        .await
        .map_err(ApiError::from)?;
    match outcome {
        Some(o) => Ok(json_response(StatusCode::OK, json_body(&o))),
        None => Err(no_audience(&id, mode)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactsQuery {
    limit: Option<String>,
    cursor: Option<String>,
    email: Option<String>,
}

/// The contacts of an audience, newest first; `email` finds one address (ignoring case).
#[utoipa::path(
    tag = "audiences",
    params(
        ("id" = String, Path, description = "aud_..."),
        ("email" = Option<String>, Query, description = "Only this address (ignoring case)"),
        ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "`{object: \"list\", data: [contact], has_more, next_cursor}`"),
        (status = 404, description = "No such audience", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/audiences/{id}/contacts")]
async fn list_contacts(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<ContactsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref())?;
    let email = q
        .email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    let id = path.into_inner();
    let mode = auth.mode();
    let limit = page.limit;
    let id2 = id.clone();
    let rows = state
        .db
        .read(move |c| {
            store::list_contacts(
                c,
                mode,
                &id2,
                email.as_deref(),
                page.before_id.as_deref(),
                limit,
            )
        })
        .await
        .map_err(ApiError::from)?;
    let Some(rows) = rows else {
        return Err(no_audience(&id, mode));
    };
    let list = List::from_rows(rows, limit, |c| &c.id);
    Ok(json_response(StatusCode::OK, json_body(&list)))
}

/// Remove a contact from an audience by its email (ignoring case).
#[utoipa::path(
    tag = "audiences",
    params(
        ("id" = String, Path, description = "aud_..."),
        ("email" = String, Path, description = "The contact's address"),
    ),
    responses(
        (status = 200, description = "`{email, deleted: true}`"),
        (status = 404, description = "No such audience or contact", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[delete("/audiences/{id}/contacts/{email}")]
async fn delete_contact(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, email) = path.into_inner();
    let mode = auth.mode();
    let (id2, lower) = (id.clone(), email.trim().to_lowercase());
    let outcome = state
        .db
        .write(move |c| store::delete_contact(c, mode, &id2, &lower))
        .await
        .map_err(ApiError::from)?;
    match outcome {
        DeleteContact::Deleted => Ok(crate::http::deleted_response("email", &email)),
        DeleteContact::NoAudience => Err(no_audience(&id, mode)),
        DeleteContact::NoContact => Err(ApiError::not_found(format!(
            "The audience '{id}' has no contact with the email '{email}'."
        ))),
    }
}

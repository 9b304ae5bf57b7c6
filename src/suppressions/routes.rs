//! Routes of the suppression list (under `/v1`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use serde_json::json;

use super::Reason;
use super::store::{self, SuppressionView};
use crate::AppState;
use crate::address::EmailAddress;
use crate::http::{ApiError, ApiJson, Authenticated, json_body, json_response};

/// Registers the suppression routes.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_suppressions)
        .service(add_suppression)
        .service(delete_suppression);
}

fn parse_reason(raw: &str) -> Result<Reason, ApiError> {
    Reason::parse(raw).ok_or_else(|| {
        ApiError::validation(format!(
            "'reason' must be one of bounce, complaint, unsubscribe, manual (got \"{raw}\")."
        ))
        .with_field("reason")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    reason: Option<String>,
    email: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Suppressed addresses, newest first; filters `reason` and `email` (ignoring case).
#[utoipa::path(
    tag = "suppressions",
    params(
        ("reason" = Option<String>, Query, description = "bounce, complaint, unsubscribe or manual"),
        ("email" = Option<String>, Query), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, description = "`{object: \"list\", data: [suppression], has_more, next_cursor}`")),
    security(("api_key" = []))
)]
#[get("/suppressions")]
async fn list_suppressions(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    // Suppressions have no id of their own, so the cursor is the row's position.
    let page = crate::http::PageRequest::parse(q.limit.as_deref(), None)?;
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => Some(store::decode_cursor(raw).ok_or_else(|| {
            ApiError::validation(
                "'cursor' is not a cursor this server gave out; pass the 'next_cursor' of the previous page.",
            )
            .with_field("cursor")
        })?),
    };
    let reason = q
        .reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(parse_reason)
        .transpose()?;
    let email = q
        .email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty());
    let limit = page.limit;
    let mode = auth.mode();
    let mut rows: Vec<SuppressionView> = state
        .db
        .read(move |c| store::list(c, mode, reason, email.as_deref(), before, limit))
        .await
        .map_err(ApiError::from)?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = has_more
        .then(|| rows.last().map(|r| store::encode_cursor(r.seq)))
        .flatten();
    let body =
        json!({"object": "list", "data": rows, "has_more": has_more, "next_cursor": next_cursor});
    Ok(json_response(StatusCode::OK, json_body(&body)))
}

/// `POST /v1/suppressions` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddSuppression {
    email: Option<String>,
    /// bounce, complaint, unsubscribe or manual (the default).
    reason: Option<String>,
    note: Option<String>,
}

/// Add an address to the suppression list: `201` when added, `200` with the entry that was
/// already there (its reason is kept).
#[utoipa::path(
    tag = "suppressions",
    request_body = AddSuppression,
    responses(
        (status = 201, description = "Added", body = SuppressionView),
        (status = 200, description = "Already suppressed: the existing entry", body = SuppressionView),
        (status = 422, description = "Invalid request", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/suppressions")]
async fn add_suppression(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: ApiJson<AddSuppression>,
) -> Result<HttpResponse, ApiError> {
    let ApiJson { value, .. } = body;
    let email = match value.email.as_deref().map(str::trim) {
        None | Some("") => {
            return Err(ApiError::validation("'email' is required.").with_field("email"));
        }
        Some(s) => EmailAddress::parse(s).map_err(|e| {
            ApiError::validation(format!("'email' must be a valid email address: {e}."))
                .with_field("email")
        })?,
    };
    let reason = match value.reason.as_deref() {
        None => Reason::Manual,
        Some(r) => parse_reason(r)?,
    };
    let note = value.note.filter(|n| !n.trim().is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(
            ApiError::validation("'note' may have at most 1000 characters.").with_field("note"),
        );
    }
    let mode = auth.mode();
    let (added, view) = state
        .db
        .write(move |c| -> Result<_, ApiError> {
            let address = email.to_string();
            let added = super::add(c, mode, &address, reason, None, note.as_deref())?;
            let view = store::get(c, mode, &email.normalized())?;
            Ok((added, view))
        })
        .await?;
    let view = view.ok_or_else(ApiError::internal)?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, json_body(&view)))
}

/// Remove an address from the suppression list.
#[utoipa::path(
    tag = "suppressions",
    params(("email" = String, Path, description = "The address (ignoring case)")),
    responses(
        (status = 200, description = "`{email, deleted: true}`"),
        (status = 404, description = "The address is not suppressed", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[delete("/suppressions/{email}")]
async fn delete_suppression(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let email = path.into_inner();
    let lower = email.trim().to_lowercase();
    let mode = auth.mode();
    let deleted = state
        .db
        .write(move |c| store::delete(c, mode, &lower))
        .await
        .map_err(ApiError::from)?;
    if !deleted {
        return Err(ApiError::not_found(format!(
            "'{email}' is not on the suppression list in {} mode.",
            mode.as_str()
        )));
    }
    Ok(crate::http::deleted_response("email", &email))
}

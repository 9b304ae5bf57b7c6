//! Routes of the physical-mail API, and Lob's public webhook route. Thin: parse into typed
//! values, call the store or a vendor, map the answer.

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use serde::Deserialize;
use serde_json::json;

use super::request::SendMailRequest;
use super::store::{self, Accepted, ListFilter, NewPiece, Next};
use super::vendor::{CancelResult, VendorError, lob};
use super::{MailKind, MailStatus, PostalHandle, verify};
use crate::AppState;
use crate::address::postal::AddressInput;
use crate::http::idempotency::{self, Begin};
use crate::http::{
    ApiError, ApiJson, Authenticated, List, PageRequest, blocking, json_body, json_response,
};
use crate::keys::Mode;
use crate::store::{ids, time};

/// Registers the physical-mail routes (under `/v1`), documented in the OpenAPI document.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(validate_address)
        .service(send_mail)
        .service(list_mail)
        .service(get_mail)
        .service(cancel_mail);
}

/// Public routes (no API key): vendor webhooks, which prove themselves by signature. Not in
/// the OpenAPI document: vendors call them, not clients.
pub fn public_routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.route("/v1/mail/vendor-events/lob", web::post().to(lob_webhook));
}

/// Check and normalize a postal address (and verify it, where the vendor can).
#[utoipa::path(
    tag = "mail",
    request_body = AddressInput,
    responses(
        (status = 200, description = "The verdict; an address that fails the rules is `valid: false`", body = verify::AddressCheck),
        (status = 422, description = "Malformed request (wrong types, unknown fields)", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/mail/validate-address")]
async fn validate_address(
    postal: web::Data<PostalHandle>,
    auth: Authenticated,
    body: ApiJson<AddressInput>,
) -> Result<HttpResponse, ApiError> {
    let check = verify::check(&postal, auth.mode(), &body.value).await;
    Ok(json_response(StatusCode::OK, json_body(&check)))
}

/// The HTML of a stored template for a letter (`template_id`, by id or name); it is then
/// rendered with the send's `variables` like inline `html`. A template's layout wraps emails
/// only: a letter prints the template's own HTML.
async fn template_html(
    state: &AppState,
    mode: crate::keys::Mode,
    raw: &str,
    html_given: bool,
) -> Result<String, ApiError> {
    if html_given {
        return Err(
            ApiError::validation("Give either 'html' or 'template_id', not both.")
                .with_field("template_id"),
        );
    }
    let r = crate::templates::name::TemplateRef::parse(raw);
    let found = state
        .db
        .read(move |c| crate::templates::store::find(c, mode, &r))
        .await
        .map_err(ApiError::from)?;
    let template = found.ok_or_else(|| {
        ApiError::validation(format!(
            "The template '{raw}' does not exist in {} mode. Give a template id or name from GET /v1/templates.",
            mode.as_str()
        ))
        .with_field("template_id")
    })?;
    template.parts.html.ok_or_else(|| {
        ApiError::validation(format!(
            "The template '{raw}' has no 'html' part, which a letter needs."
        ))
        .with_field("template_id")
    })
}

/// Send a letter, postcard or parcel.
#[utoipa::path(
    tag = "mail",
    request_body = SendMailRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h")),
    responses(
        (status = 200, description = "Accepted and stored", body = Accepted),
        (status = 422, description = "Invalid request, or `invalid_address` with `details`", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/mail/send")]
async fn send_mail(
    state: web::Data<AppState>,
    postal: web::Data<PostalHandle>,
    auth: Authenticated,
    req: HttpRequest,
    body: ApiJson<SendMailRequest>,
) -> Result<HttpResponse, ApiError> {
    let claim = match idempotency::begin(
        &state.db,
        &state.in_flight,
        auth.mode(),
        &req,
        "/v1/mail/send",
        &body.raw,
    )
    .await?
    {
        Begin::Replay(res) => return Ok(res),
        Begin::Claimed(c) => Some(c),
        Begin::NoKey => None,
    };
    let mode = auth.mode();
    let ApiJson { mut value, .. } = body;
    if let Some(raw) = value.template_id.take() {
        value.html = Some(template_html(&state, mode, &raw, value.html.is_some()).await?);
    }
    // Address rules, template rendering and base64 are CPU work: off the async threads.
    let draft = blocking(move || value.into_draft(mode)).await??;
    let piece = NewPiece {
        id: ids::new_id("mail"),
        mode,
        vendor: postal.vendors.name_for_new(mode, draft.kind),
        draft,
        api_key_id: auth.key_id().to_string(),
        created_at: time::now(),
    };
    let record = claim.as_ref().map(|c| c.record());
    let bytes = state
        .db
        .write(move |conn| -> Result<Vec<u8>, ApiError> {
            let accepted: Accepted = store::insert(conn, &piece)?;
            let bytes = json_body(&accepted);
            if let Some(record) = &record {
                record.save(conn, 200, &bytes)?;
            }
            Ok(bytes)
        })
        .await?;
    drop(claim);
    postal.wake();
    Ok(json_response(StatusCode::OK, bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    include: Option<String>,
}

fn not_found(id: &str, mode: Mode) -> ApiError {
    ApiError::not_found(format!(
        "No mail piece with id '{id}' exists in {} mode.",
        mode.as_str()
    ))
}

/// One piece with its tracking history (oldest first); `?include=content` adds what is printed.
#[utoipa::path(
    tag = "mail",
    params(
        ("id" = String, Path, description = "The mail id (mail_...)"),
        ("include" = Option<String>, Query, description = "`content` adds the printed HTML or PDF and the envelope lines"),
    ),
    responses(
        (status = 200, description = "The piece", body = store::MailView),
        (status = 404, description = "No such piece in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/mail/{id:mail_[0-9A-Za-z]+}")]
async fn get_mail(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let include_content = crate::http::include_content(query.include.as_deref())?;
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let view = state
        .db
        .read(move |c| store::get(c, mode, &id2, include_content))
        .await
        .map_err(ApiError::from)?;
    match view {
        Some(v) => Ok(json_response(StatusCode::OK, json_body(&v))),
        None => Err(not_found(&id, mode)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_time_filter(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            time::parse(v).ok_or_else(|| {
                ApiError::validation(format!(
                    "'{name}' must be an RFC 3339 time like \"2026-04-11T09:32:17Z\" (got \"{v}\")."
                ))
                .with_field(name)
            })
        })
        .transpose()
}

/// Pieces, newest first, with filters and cursor pagination.
#[utoipa::path(
    tag = "mail",
    params(
        ("status" = Option<String>, Query), ("type" = Option<String>, Query),
        ("created_after" = Option<String>, Query), ("created_before" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "`{object: \"list\", data, has_more, next_cursor}`")),
    security(("api_key" = []))
)]
#[get("/mail")]
async fn list_mail(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref())?;
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(MailStatus::parse(s).ok_or_else(|| {
            ApiError::validation(format!(
                "'status' must be one of {} (got \"{s}\").",
                MailStatus::ALL.map(|m| m.as_str()).join(", ")
            ))
            .with_field("status")
        })?),
    };
    let kind = match q.kind.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(k) => Some(MailKind::parse(k).ok_or_else(|| {
            ApiError::validation(format!(
                "'type' must be \"letter\", \"postcard\" or \"parcel\" (got \"{k}\")."
            ))
            .with_field("type")
        })?),
    };
    let filter = ListFilter {
        status,
        kind,
        created_after: parse_time_filter("created_after", q.created_after.as_deref())?,
        created_before: parse_time_filter("created_before", q.created_before.as_deref())?,
        before_id: page.before_id,
        limit: page.limit,
    };
    let mode = auth.mode();
    let limit = filter.limit;
    let rows = state
        .db
        .read(move |c| store::list(c, mode, &filter))
        .await
        .map_err(ApiError::from)?;
    let page = List::from_rows(rows, limit, |m| &m.id);
    Ok(json_response(StatusCode::OK, json_body(&page)))
}

/// Cancel a piece while its vendor still allows it (the simulator: before printing).
#[utoipa::path(
    tag = "mail",
    params(("id" = String, Path, description = "The mail id (mail_...)")),
    responses(
        (status = 200, description = "The canceled piece", body = store::MailView),
        (status = 409, description = "Too late to cancel", body = crate::ops::openapi::ErrorEnvelope),
        (status = 502, description = "The vendor could not be reached", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/mail/{id:mail_[0-9A-Za-z]+}/cancel")]
async fn cancel_mail(
    state: web::Data<AppState>,
    postal: web::Data<PostalHandle>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let claimed = state
        .db
        .read(move |c| store::load_piece(c, &id2))
        .await
        .map_err(ApiError::from)?;
    let Some(claimed) = claimed.filter(|c| c.piece.mode == mode) else {
        return Err(not_found(&id, mode));
    };
    let piece = claimed.piece;
    if piece.status.is_final() {
        return Err(ApiError::conflict(format!(
            "This piece is already {}; only a piece on its way can be canceled.",
            piece.status.as_str()
        )));
    }
    let description = if piece.vendor_id.is_none() {
        "Canceled before it was handed to the vendor.".to_string()
    } else {
        let vendor = postal.vendors.get(&claimed.vendor).ok_or_else(|| {
            ApiError::conflict(format!(
                "This piece belongs to the vendor '{}', which this server no longer knows.",
                claimed.vendor
            ))
        })?;
        match vendor.cancel(&piece).await {
            Ok(CancelResult::Canceled) => format!("Canceled at {}.", vendor.name()),
            Ok(CancelResult::NotAllowed(why)) => {
                return Err(ApiError::conflict(format!(
                    "This piece can no longer be canceled: {why}."
                )));
            }
            Err(VendorError::Temporary(why) | VendorError::Rejected(why)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "vendor_unavailable",
                    format!(
                        "The vendor could not be asked to cancel ({why}). Nothing changed; please retry."
                    ),
                ));
            }
        }
    };
    let expected = piece.status;
    let id2 = id.clone();
    let outcome = state
        .db
        .write(move |c| -> Result<_, ApiError> {
            if !store::mark_canceled(c, &id2, expected, &description)? {
                return Ok(None);
            }
            Ok(store::get(c, mode, &id2, false)?)
        })
        .await?;
    match outcome {
        Some(view) => Ok(json_response(StatusCode::OK, json_body(&view))),
        None => Err(ApiError::conflict(
            "This piece moved on while it was being canceled; fetch it to see its status.",
        )),
    }
}

/// `POST /v1/mail/vendor-events/lob`: Lob's webhooks, checked by signature.
async fn lob_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let signature = header("lob-signature");
    let timestamp = header("lob-signature-timestamp");
    if let Err(why) = lob::verify_signature(
        &state.config.postal.lob.webhook_secret,
        &timestamp,
        &signature,
        &body,
        time::now(),
    ) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            format!("This webhook is refused: {why}."),
        ));
    }
    let event = lob::parse_webhook(&body)
        .map_err(|why| ApiError::invalid_json(format!("This is not a Lob event: {why}.")))?;
    let matched = state
        .db
        .write(move |c| -> Result<bool, ApiError> {
            let Some(id) = store::find_by_vendor_id(c, lob::NAME, &event.resource_id)? else {
                return Ok(false);
            };
            if let Some(node) = &event.node {
                store::apply_nodes(c, &id, std::slice::from_ref(node), Next::Keep)?;
            }
            Ok(true)
        })
        .await?;
    if !matched {
        tracing::info!("a Lob event for a piece this server does not know was acknowledged");
    }
    Ok(json_response(
        StatusCode::OK,
        json_body(&json!({"received": true, "matched": matched})),
    ))
}

//! Routes of the physical-mail API, and Lob's public webhook route. Thin: parse into typed
//! values, call the store or a vendor, map the answer.

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::request::SendMailRequest;
use super::store::{self, Accepted, ListFilter, NewPiece, Next};
use super::vendor::{CancelResult, VendorError, lob};
use super::{MailKind, MailStatus, PostalHandle, verify};
use crate::AppState;
use crate::address::postal::AddressInput;
use crate::http::idempotency::{self, Begin};
use crate::http::{ApiError, ApiJson, Authenticated, List, PageRequest, json_body, json_response};
use crate::keys::Mode;
use crate::store::{ids, time};

/// Routes under `/v1` (behind the API key).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/mail/validate-address").route(web::post().to(validate_address)))
        .service(web::resource("/mail/send").route(web::post().to(send)))
        .service(web::resource("/mail").route(web::get().to(list)))
        .service(web::resource("/mail/{id}").route(web::get().to(get)))
        .service(web::resource("/mail/{id}/cancel").route(web::post().to(cancel)));
}

/// Public routes (no API key): vendor webhooks, which prove themselves by signature.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/mail/vendor-events/lob").route(web::post().to(lob_webhook)));
}

/// `POST /v1/mail/validate-address`
async fn validate_address(
    postal: web::Data<PostalHandle>,
    auth: Authenticated,
    body: ApiJson<AddressInput>,
) -> Result<HttpResponse, ApiError> {
    let check = verify::check(&postal, auth.mode(), &body.value).await;
    Ok(json_response(StatusCode::OK, json_body(&check)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(|e| {
        tracing::error!(error = %e, "a blocking task failed");
        ApiError::internal()
    })
}

/// `POST /v1/mail/send`
async fn send(
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
    let ApiJson { value, .. } = body;
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
struct GetQuery {
    include: Option<String>,
}

fn not_found(id: &str, mode: Mode) -> ApiError {
    ApiError::not_found(format!(
        "No mail piece with id '{id}' exists in {} mode.",
        mode.as_str()
    ))
}

/// `GET /v1/mail/:id`
async fn get(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<GetQuery>,
) -> Result<HttpResponse, ApiError> {
    let include_content = match query.include.as_deref() {
        None | Some("") => false,
        Some("content") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "'include' may only be \"content\" (got \"{other}\")."
            ))
            .with_field("include"));
        }
    };
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

/// `GET /v1/mail`
async fn list(
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

/// `POST /v1/mail/:id/cancel`: canceled while the vendor still allows it, else 409.
async fn cancel(
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

//! `GET /v1/emails/:id/recipients`: the recipients of any email, in the order they were
//! added, a page at a time (an audience send has one per contact). Each has its delivery
//! state and its open and click counts; `?include=content` adds the MIME copy it gets.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::http::{ApiError, Authenticated, PageRequest, json_body, json_response};
use crate::keys::Mode;
use crate::store::StoreError;

/// One recipient of an email.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecipientItem {
    pub email: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub last_response: Option<String>,
    pub opens: i64,
    pub clicks: i64,
    /// The MIME message this recipient gets (`?include=content`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    #[serde(skip)]
    pub seq: i64,
}

fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("rcpt:{seq}"))
}

fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("rcpt:")?
        .parse()
        .ok()
}

/// A page of the recipients of `email_id` after `after` (`limit + 1` rows); `None` when the
/// email does not exist in `mode`. Without an own copy, `raw` is the email's message.
pub fn page(
    conn: &Connection,
    mode: Mode,
    email_id: &str,
    after: i64,
    limit: usize,
    include_content: bool,
) -> Result<Option<Vec<RecipientItem>>, StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM emails WHERE id = ?1 AND mode = ?2")?
        .query_row(params![email_id, mode.as_str()], |_| Ok(()))
        .optional()?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let raw = if include_content {
        "coalesce((SELECT raw FROM recipient_copies WHERE recipient_id = r.id),
                  (SELECT raw FROM email_contents WHERE email_id = r.email_id))"
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT r.id, r.address, r.kind, r.status, r.attempts, r.last_response,
                coalesce(g.opens, 0), coalesce(g.clicks, 0), {raw}
         FROM recipients r
         LEFT JOIN engagement g ON g.email_id = r.email_id AND g.recipient_lower = r.address_lower
         WHERE r.email_id = ?1 AND r.id > ?2 ORDER BY r.id LIMIT ?3"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![email_id, after, (limit + 1) as i64], |r| {
            Ok(RecipientItem {
                seq: r.get(0)?,
                email: r.get(1)?,
                kind: r.get(2)?,
                status: r.get(3)?,
                attempts: r.get(4)?,
                last_response: r.get(5)?,
                opens: r.get(6)?,
                clicks: r.get(7)?,
                raw: r
                    .get::<_, Option<Vec<u8>>>(8)?
                    .map(|b| String::from_utf8_lossy(&b).into_owned()),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(rows))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipientsQuery {
    limit: Option<String>,
    cursor: Option<String>,
    include: Option<String>,
}

/// The recipients of an email, in the order they were added, with cursor pagination.
#[utoipa::path(
    tag = "emails",
    params(
        ("id" = String, Path, description = "The email id (msg_...)"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
        ("include" = Option<String>, Query, description = "`content` adds each recipient's MIME copy as `raw`"),
    ),
    responses(
        (status = 200, description = "`{object: \"list\", data: [{email, type, status, attempts, last_response, opens, clicks, raw?}], has_more, next_cursor}`"),
        (status = 404, description = "No such email in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/emails/{id}/recipients")]
pub async fn list_recipients(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    query: web::Query<RecipientsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    // Recipients are numbered rows, not ids: the cursor is the row's position.
    let limit = PageRequest::parse(q.limit.as_deref(), None)?.limit;
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => 0,
        Some(raw) => decode_cursor(raw).ok_or_else(|| {
            ApiError::validation(
                "'cursor' is not a cursor this server gave out; pass the 'next_cursor' of the previous page.",
            )
            .with_field("cursor")
        })?,
    };
    let include_content = crate::http::include_content(q.include.as_deref())?;
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let rows = state
        .db
        .read(move |c| page(c, mode, &id2, after, limit, include_content))
        .await
        .map_err(ApiError::from)?;
    let Some(mut rows) = rows else {
        return Err(ApiError::not_found(format!(
            "No email with id '{id}' exists in {} mode.",
            mode.as_str()
        )));
    };
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = has_more
        .then(|| rows.last().map(|r| encode_cursor(r.seq)))
        .flatten();
    let body =
        json!({"object": "list", "data": rows, "has_more": has_more, "next_cursor": next_cursor});
    Ok(json_response(StatusCode::OK, json_body(&body)))
}

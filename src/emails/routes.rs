//! Routes of the emails API. Thin: parse into typed values, call the store through the
//! writer or a reader, map the answer.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::request::{EmailDraft, SendRequest};
use super::store::{self, Accepted, CancelOutcome, ListFilter, PreparedEmail};
use crate::AppState;
use crate::domains::Senders;
use crate::http::idempotency::{self, Begin, IdempotencyRecord};
use crate::http::{
    ApiError, ApiJson, Authenticated, List, PageRequest, blocking, json_body, json_response,
};
use crate::keys::Mode;
use crate::store::combine::Combiner;
use crate::store::time;
use crate::templates::send::SendRenderer;
use crate::tracking::copies::Links;

/// Most items of one batch.
pub const MAX_BATCH: usize = 1000;

/// Batches of at least this many emails are stored in a transaction of their own
/// (`Db::write_alone`); smaller ones share the group commit like single sends.
const BIG_BATCH: usize = 100;

/// Registers the emails routes (under `/v1`), documented in the OpenAPI document.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(send_email)
        .service(send_batch)
        .service(list_emails)
        .service(get_email)
        .service(super::recipients::list_recipients)
        .service(cancel_email);
}

/// Parses and prepares one send request: renders its template, if it names one, builds and
/// signs the message, and makes one copy per recipient for marketing and tracked emails
/// (`tracking::copies`). `id` is the email's id (`msg_...`). Reads the database and does
/// CPU work: call it off the async threads.
fn prepare_one(
    auth: &Authenticated,
    templates: &mut SendRenderer,
    senders: &Senders,
    links: &Links,
    request: SendRequest,
    id: String,
) -> Result<PreparedEmail, ApiError> {
    let (draft, variables) = draft_of(templates, request)?;
    finish_one(auth, senders, links, draft, variables, id)
}

/// Renders the request's template, if it names one, and parses the request into a draft;
/// also gives the variables its per-recipient copies fill in. Reads the database only when
/// the request names a template ([`SendRenderer::needs_render`]).
fn draft_of(
    templates: &mut SendRenderer,
    mut request: SendRequest,
) -> Result<(EmailDraft, Map<String, Value>), ApiError> {
    let marketing = request.email_type.as_deref() == Some("marketing");
    if marketing && request.template_id.is_some() {
        // The unsubscribe link differs per recipient: the template keeps the placeholder,
        // which the per-recipient copies then fill.
        request
            .variables
            .get_or_insert_with(Default::default)
            .entry("unsubscribe_url")
            .or_insert_with(|| Value::String("{{ unsubscribe_url }}".into()));
    }
    let variables = request.variables.clone().unwrap_or_default();
    let applied = templates.apply(request)?;
    let mut draft = applied.request.into_draft(false)?;
    draft.template_id = applied.template_id;
    Ok((draft, variables))
}

/// The part of [`prepare_one`] after the template: builds and signs the message and makes
/// the per-recipient copies. Reads the database on a sender's first email: call it off the
/// async threads unless [`quick_to_finish`] says it may stay on them.
fn finish_one(
    auth: &Authenticated,
    senders: &Senders,
    links: &Links,
    draft: EmailDraft,
    variables: Map<String, Value>,
    id: String,
) -> Result<PreparedEmail, ApiError> {
    let mut prepared = super::prepare(auth.mode(), auth.key_id(), draft, senders, id)?;
    crate::tracking::copies::personalize(&mut prepared, variables, links)?;
    Ok(prepared)
}

/// Send bodies up to this size that name no template are parsed into a draft on the async
/// thread (the JSON already was, up to `http::json`'s far larger bound).
const INLINE_PREPARE_BYTES: usize = 16 * 1024;

/// Whether finishing `draft` is a few tens of microseconds of CPU and no I/O, so the async
/// thread does it itself: one MIME build of a small message from a sender known to sign
/// nothing. A hand-off to a blocking thread and back costs two thread wake-ups, as much as
/// that work on a loaded 2-core machine. DKIM (an RSA signature, about a millisecond),
/// per-recipient copies (one build each) and a sender not yet known (a database read) go
/// to a blocking thread.
fn quick_to_finish(senders: &Senders, mode: Mode, draft: &EmailDraft) -> bool {
    !crate::tracking::copies::needs_copies(draft)
        && senders.known_unsigned(mode, draft.from.address.domain())
}

fn renderer(state: &AppState, auth: &Authenticated) -> SendRenderer {
    SendRenderer::new(state.db.clone(), state.templates.clone(), auth.mode())
}

/// Items per blocking task when a batch is prepared: big enough that a task's start costs
/// nothing next to it, small enough that a batch of 1,000 uses every core.
const PREPARE_CHUNK: usize = 125;

/// Parses and prepares the items of a batch (templates, MIME, DKIM, per-recipient copies),
/// in chunks on as many blocking threads as there are cores: a batch of 1,000 is CPU work
/// that one thread would do alone while the others wait. Keeps the items' order; errors
/// carry their item's index.
async fn prepare_batch(
    state: &web::Data<AppState>,
    auth: &Authenticated,
    items: Vec<Box<RawValue>>,
) -> Result<(Vec<PreparedEmail>, Vec<ItemError>), ApiError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = PREPARE_CHUNK.max(items.len().div_ceil(cores));
    let mut chunks = Vec::new();
    // Ids are made here, in the items' order, so they sort like the batch (lists page by
    // id) although the chunks are prepared at the same time.
    let ids: Vec<String> = (0..items.len())
        .map(|_| crate::store::ids::new_id("msg"))
        .collect();
    let mut items = items.into_iter().zip(ids);
    let mut first_index = 0;
    loop {
        let part: Vec<(Box<RawValue>, String)> = items.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let len = part.len();
        let (state, auth) = (state.clone(), auth.clone());
        let mut templates = renderer(&state, &auth);
        chunks.push(blocking(move || {
            let mut prepared = Vec::with_capacity(part.len());
            let mut errors = Vec::new();
            for (offset, (item, id)) in part.into_iter().enumerate() {
                let result = crate::http::json::parse_item::<SendRequest>(&item).and_then(|r| {
                    if r.audience_id.is_some() {
                        return Err(ApiError::validation(
                            "A batch item cannot use 'audience_id'; send audience emails one at a time.",
                        )
                        .with_field("audience_id"));
                    }
                    prepare_one(
                        &auth,
                        &mut templates,
                        &state.domains.senders,
                        &state.links,
                        r,
                        id,
                    )
                });
                match result {
                    Ok(p) => prepared.push(p),
                    Err(e) => errors.push(ItemError {
                        index: first_index + offset,
                        code: e.code,
                        message: e.message,
                        field: e.field,
                    }),
                }
            }
            (prepared, errors)
        }));
        first_index += len;
    }
    let mut prepared = Vec::new();
    let mut errors = Vec::new();
    for part in futures_util::future::join_all(chunks).await {
        let (p, e) = part?;
        prepared.extend(p);
        errors.extend(e);
    }
    Ok((prepared, errors))
}

/// A single send on its way to the writer: the prepared email, and where its answer is
/// kept when the request has an Idempotency-Key.
pub struct QueuedSend {
    email: PreparedEmail,
    record: Option<IdempotencyRecord>,
}

/// What storing a single send gives back: its answer, and the answer's JSON when it was
/// made inside the transaction (to be kept under the request's Idempotency-Key).
type StoredSend = (Accepted, Option<Vec<u8>>);

/// Single sends written together: the sends that arrive while the writer is busy are
/// stored by one writer job, with a batch's multi-row statements (see `store::combine`).
pub type SendCombiner = Combiner<QueuedSend, StoredSend, ApiError>;

/// The combiner of the server's single sends.
pub fn send_combiner() -> Arc<SendCombiner> {
    Combiner::new(store_sends)
}

/// Stores `sends` in their order, and the answer of those with an Idempotency-Key beside
/// their key (the others' answers are made after the commit, off the writer thread).
fn store_sends(conn: &Connection, sends: &[QueuedSend]) -> Result<Vec<StoredSend>, ApiError> {
    let accepted = store::insert_all(conn, sends.iter().map(|s| &s.email))?;
    accepted
        .into_iter()
        .zip(sends)
        .map(|(accepted, send)| {
            let Some(record) = &send.record else {
                return Ok((accepted, None));
            };
            let bytes = json_body(&accepted);
            record.save(conn, 200, &bytes)?;
            Ok((accepted, Some(bytes)))
        })
        .collect()
}

/// Send one email (or an audience send).
#[utoipa::path(
    tag = "emails",
    request_body = SendRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h")),
    responses(
        (status = 200, description = "Accepted and stored", body = Accepted),
        (status = 422, description = "Invalid request", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/emails/send")]
async fn send_email(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    body: ApiJson<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    // Lets the writer's transaction wait for this send while it is prepared.
    let expected = state.db.expect_write();
    let claim = match idempotency::begin(
        &state.db,
        &state.in_flight,
        auth.mode(),
        &req,
        "/v1/emails/send",
        &body.raw,
    )
    .await?
    {
        Begin::Replay(res) => return Ok(res),
        Begin::Claimed(c) => Some(c),
        Begin::NoKey => None,
    };
    let ApiJson { value, raw } = body;
    if value.audience_id.is_some() {
        // An audience send writes through its own jobs, not this expected one.
        drop(expected);
        let record = claim.as_ref().map(|c| c.record());
        let bytes =
            crate::audiences::sender::accept(&state, &auth, value, raw.to_vec(), record).await?;
        drop(claim);
        state.metrics.email_accepted("queued");
        return Ok(json_response(StatusCode::OK, bytes));
    }
    let id = crate::store::ids::new_id("msg");
    let mut templates = renderer(&state, &auth);
    let prepared = if SendRenderer::needs_render(&value) || raw.len() > INLINE_PREPARE_BYTES {
        // Off the async threads: rendering reads the template, and a large body is long
        // to parse and build.
        let (auth, state) = (auth.clone(), state.clone());
        blocking(move || {
            let senders = &state.domains.senders;
            prepare_one(&auth, &mut templates, senders, &state.links, value, id)
        })
        .await??
    } else {
        let (draft, variables) = draft_of(&mut templates, value)?;
        if quick_to_finish(&state.domains.senders, auth.mode(), &draft) {
            finish_one(
                &auth,
                &state.domains.senders,
                &state.links,
                draft,
                variables,
                id,
            )?
        } else {
            let (auth, state) = (auth.clone(), state.clone());
            blocking(move || {
                let senders = &state.domains.senders;
                finish_one(&auth, senders, &state.links, draft, variables, id)
            })
            .await??
        }
    };
    let send = QueuedSend {
        email: prepared,
        record: claim.as_ref().map(|c| c.record()),
    };
    let (accepted, bytes) = state.sends.write(expected, send).await?;
    let bytes = bytes.unwrap_or_else(|| json_body(&accepted));
    drop(claim);
    state.metrics.email_accepted(accepted.status);
    for label in &accepted.captured {
        state.metrics.delivery(label);
    }
    if accepted.waits_in_queue {
        state.delivery.wake();
    }
    Ok(json_response(StatusCode::OK, bytes))
}

/// What a batch's transaction gives back: the accepted emails, the refused items, the
/// answer when an Idempotency-Key made it inside the transaction, and the stored emails.
type Stored = (
    Vec<store::Accepted>,
    Vec<ItemError>,
    Option<Vec<u8>>,
    Vec<PreparedEmail>,
);

/// The answer of a batch: `{"data": [...]}`, with `"errors"` when validation is
/// permissive. Serialized as it is (a `json!` value copied every string of a thousand
/// answers first).
#[derive(Serialize)]
struct BatchAnswer<'a> {
    data: &'a [store::Accepted],
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [ItemError]>,
}

/// One refused item of a batch.
#[derive(Debug, Serialize)]
struct ItemError {
    index: usize,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// Send 1 to 1,000 emails in one request, stored in one transaction.
#[utoipa::path(
    tag = "emails",
    request_body = Vec<SendRequest>,
    params(
        ("x-batch-validation" = Option<String>, Header, description = "strict (default) or permissive"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first answer for 24 h"),
    ),
    responses(
        (status = 200, description = "`{data: [{id, status, queued_at}], errors?: [...]}` in input order"),
        (status = 422, description = "Invalid items, with `details`", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/emails/batch")]
async fn send_batch(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    body: ApiJson<Vec<Box<RawValue>>>,
) -> Result<HttpResponse, ApiError> {
    let permissive = match req
        .headers()
        .get("x-batch-validation")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None | Some("strict") => false,
        Some("permissive") => true,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "The x-batch-validation header must be \"strict\" or \"permissive\" (got \"{other}\")."
            ))
            .with_field("x-batch-validation"));
        }
    };
    let count = body.value.len();
    if count == 0 || count > MAX_BATCH {
        return Err(ApiError::validation(format!(
            "A batch holds 1 to {MAX_BATCH} emails (got {count})."
        )));
    }
    let claim = match idempotency::begin(
        &state.db,
        &state.in_flight,
        auth.mode(),
        &req,
        "/v1/emails/batch",
        &body.raw,
    )
    .await?
    {
        Begin::Replay(res) => return Ok(res),
        Begin::Claimed(c) => Some(c),
        Begin::NoKey => None,
    };
    let ApiJson { value: items, raw } = body;
    // Megabytes for a large batch, and only the idempotency hash needed them.
    drop(raw);
    let (prepared, errors) = prepare_batch(&state, &auth, items).await?;
    if !errors.is_empty() && !permissive {
        let n = errors.len();
        let details = errors
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect();
        // Every item refused for its unverified sending domain: the 403 of a single send.
        if errors.iter().all(|e| e.code == "domain_not_verified") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "domain_not_verified",
                format!(
                    "{n} item(s) of the batch are sent from a domain that is not verified, so nothing was stored. See 'details'; verify the domain (POST /v1/domains, publish its DNS records, GET /v1/domains/{{id}}/verify) and retry."
                ),
            )
            .with_details(details));
        }
        return Err(ApiError::validation(format!(
            "{n} item(s) of the batch are invalid, so nothing was stored. See 'details'; fix them or send the header 'x-batch-validation: permissive' to accept the valid ones."
        ))
        .with_details(details));
    }
    let record = claim.as_ref().map(|c| c.record());
    // The answer is made inside the transaction only when an Idempotency-Key must store
    // it there; otherwise after, off the writer thread that every request waits for.
    let answer = move |data: &[store::Accepted], errors: &[ItemError]| -> Vec<u8> {
        json_body(&BatchAnswer {
            data,
            errors: permissive.then_some(errors),
        })
    };
    let big = prepared.len() >= BIG_BATCH;
    let store_all = move |conn: &Connection| -> Result<Stored, ApiError> {
        let data = store::insert_all(conn, &prepared)?;
        let bytes = match &record {
            Some(record) => {
                let bytes = answer(&data, &errors);
                record.save(conn, 200, &bytes)?;
                Some(bytes)
            }
            None => None,
        };
        // Handed back so that freeing a thousand messages happens elsewhere, not on the
        // writer thread every request waits for.
        Ok((data, errors, bytes, prepared))
    };
    let (data, errors, bytes, prepared) = if big {
        state.db.write_alone(store_all).await?
    } else {
        state.db.write(store_all).await?
    };
    // Freed on a blocking thread: a millisecond of work for a thousand messages.
    tokio::task::spawn_blocking(move || drop(prepared));
    let bytes = bytes.unwrap_or_else(|| answer(&data, &errors));
    drop(claim);
    for accepted in &data {
        state.metrics.email_accepted(accepted.status);
        for label in &accepted.captured {
            state.metrics.delivery(label);
        }
    }
    if data.iter().any(|a| a.waits_in_queue) {
        state.delivery.wake();
    }
    Ok(json_response(StatusCode::OK, bytes))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    include: Option<String>,
}

/// One email with its recipients and events; `?include=content` adds html, text and raw.
#[utoipa::path(
    tag = "emails",
    params(
        ("id" = String, Path, description = "The email id (msg_...)"),
        ("include" = Option<String>, Query, description = "`content` adds html, text and raw"),
    ),
    responses(
        (status = 200, description = "The email", body = store::EmailView),
        (status = 404, description = "No such email in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/emails/{id:msg_[0-9A-Za-z]+}")]
async fn get_email(
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
        None => Err(ApiError::not_found(format!(
            "No email with id '{id}' exists in {} mode.",
            mode.as_str()
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    email_type: Option<String>,
    to: Option<String>,
    from: Option<String>,
    tag: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

const EMAIL_STATUSES: [&str; 12] = [
    "queued",
    "scheduled",
    "sending",
    "deferred",
    "sent",
    "delivered",
    "bounced",
    "failed",
    "suppressed",
    "canceled",
    "partial",
    "complained",
];

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

/// Emails, newest first, with filters and cursor pagination.
#[utoipa::path(
    tag = "emails",
    params(
        ("status" = Option<String>, Query), ("type" = Option<String>, Query),
        ("to" = Option<String>, Query), ("from" = Option<String>, Query),
        ("tag" = Option<String>, Query, description = "key:value"),
        ("created_after" = Option<String>, Query), ("created_before" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "`{object: \"list\", data, has_more, next_cursor}`")),
    security(("api_key" = []))
)]
#[get("/emails")]
async fn list_emails(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let page = PageRequest::parse(q.limit.as_deref(), q.cursor.as_deref())?;
    if let Some(s) = q.status.as_deref().filter(|s| !EMAIL_STATUSES.contains(s)) {
        return Err(ApiError::validation(format!(
            "'status' must be one of {} (got \"{s}\").",
            EMAIL_STATUSES.join(", ")
        ))
        .with_field("status"));
    }
    if let Some(t) = q
        .email_type
        .as_deref()
        .filter(|t| !["transactional", "marketing"].contains(t))
    {
        return Err(ApiError::validation(format!(
            "'type' must be \"transactional\" or \"marketing\" (got \"{t}\")."
        ))
        .with_field("type"));
    }
    let tag = match q.tag.as_deref() {
        None => None,
        Some(t) => match t.split_once(':') {
            Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
            _ => {
                return Err(ApiError::validation(format!(
                    "'tag' must be written key:value, like campaign:spring (got \"{t}\")."
                ))
                .with_field("tag"));
            }
        },
    };
    let filter = ListFilter {
        status: q.status,
        email_type: q.email_type,
        to: q.to.map(|s| s.trim().to_string()),
        from: q.from.map(|s| s.trim().to_string()),
        tag,
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
    let page = List::from_rows(rows, limit, |e| &e.id);
    Ok(json_response(StatusCode::OK, json_body(&page)))
}

/// Cancel a scheduled email.
#[utoipa::path(
    tag = "emails",
    params(("id" = String, Path, description = "The email id (msg_...)")),
    responses(
        (status = 200, description = "The canceled email", body = store::EmailView),
        (status = 409, description = "The email is not scheduled", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/emails/{id:msg_[0-9A-Za-z]+}/cancel")]
async fn cancel_email(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    let id2 = id.clone();
    let outcome = state
        .db
        .write(move |c| -> Result<_, ApiError> {
            let outcome = store::cancel(c, mode, &id2)?;
            let view = match outcome {
                CancelOutcome::Canceled => store::get(c, mode, &id2, false)?,
                _ => None,
            };
            Ok((outcome, view))
        })
        .await?;
    match outcome {
        (CancelOutcome::Canceled, Some(view)) => {
            Ok(json_response(StatusCode::OK, json_body(&view)))
        }
        (CancelOutcome::NotScheduled(status), _) => Err(ApiError::conflict(format!(
            "Only a scheduled email can be canceled; this one is {status}."
        ))),
        _ => Err(ApiError::not_found(format!(
            "No email with id '{id}' exists in {} mode.",
            mode.as_str()
        ))),
    }
}

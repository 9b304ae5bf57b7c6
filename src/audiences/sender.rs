//! Audience sends. The API accepts one at once ([`accept`]: checks, counts the recipients,
//! stores the email and a pending `audience_sends` row) and a background worker ([`Sender`])
//! then makes one rendered copy per subscribed, unsuppressed contact, a chunk at a time
//! (rendering spread over the CPU cores, then one write per chunk), and wakes the delivery
//! worker after each chunk. Progress is stored with each chunk, so a restart resumes.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, watch};

use super::store::{self, Recipient};
use crate::AppState;
use crate::address::{EmailAddress, Mailbox};
use crate::delivery::DeliveryHandle;
use crate::emails::request::SendRequest;
use crate::emails::store::{Accepted, refresh_status};
use crate::events::{self, NewEvent};
use crate::http::idempotency::IdempotencyRecord;
use crate::http::{ApiError, Authenticated, json_body};
use crate::keys::Mode;
use crate::store::{Db, StoreError, time};
use crate::templates::render::TemplateError;
use crate::tracking::copies::{CopyError, CopyPlan, Links};

/// Contacts per chunk: one read, one parallel render, one write.
pub const CHUNK: usize = 1000;

/// Wakes the audience sender; cheap to clone.
#[derive(Clone, Default)]
pub struct SenderHandle {
    notify: Arc<Notify>,
}

impl SenderHandle {
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// A template error as the API answers it (`template_syntax_error` / `template_render_error`).
pub fn template_error(e: &TemplateError) -> ApiError {
    let mut message = e.to_string();
    if let Some(first) = message.get(..1) {
        message = format!("{}{}.", first.to_uppercase(), &message[1..]);
    }
    let field = match e.part() {
        crate::templates::render::Part::Subject => "subject",
        crate::templates::render::Part::Text | crate::templates::render::Part::LayoutText => "text",
        _ => "html",
    };
    ApiError::new(
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
        e.code(),
        message,
    )
    .with_field(field)
}

fn copy_error(e: CopyError) -> ApiError {
    match e {
        CopyError::Template(t) => template_error(&t),
        other => {
            tracing::error!(error = %other, "building a copy failed");
            ApiError::internal()
        }
    }
}

/// The mailbox a contact's copy is addressed to (`First Last <email>`).
fn mailbox(r: &Recipient) -> Result<Mailbox, String> {
    let address = EmailAddress::parse(&r.email).map_err(|e| e.to_string())?;
    let name = [r.first_name.as_deref(), r.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Mailbox {
        name: (!name.is_empty()).then_some(name),
        address,
    })
}

/// One contact's copy.
fn build_for(plan: &CopyPlan, r: &Recipient) -> Result<Vec<u8>, String> {
    let mb = mailbox(r)?;
    plan.build(&r.email, Some((&mb, r.variable())))
        .map_err(|e| e.to_string())
}

/// Accepts `POST /v1/emails/send` with `audience_id`: checks the content (compiled, and
/// rendered for the first contact, so a template error is a 422 now and not 100,000 failed
/// copies later), counts the recipients, and stores the email with its pending send. The
/// answer's body is `{id, status, queued_at, recipients}`.
pub async fn accept(
    state: &AppState,
    auth: &Authenticated,
    request: SendRequest,
    request_json: Vec<u8>,
    record: Option<IdempotencyRecord>,
) -> Result<Vec<u8>, ApiError> {
    let audience_id = request.audience_id.clone().unwrap_or_default();
    if request.to.is_some() || request.cc.is_some() || request.bcc.is_some() {
        return Err(ApiError::validation(
            "Give either 'audience_id' or 'to'/'cc'/'bcc', not both: an audience send goes to every subscribed contact.",
        )
        .with_field("audience_id"));
    }
    let request_json = String::from_utf8(request_json)
        .map_err(|_| ApiError::invalid_json("The request body is not UTF-8."))?;
    let mode = auth.mode();
    let (key_id, links) = (
        auth.key_id().to_string(),
        Links::new(&state.config.server.public_url, &state.server_secret),
    );
    let aud = audience_id.clone();
    let found = state
        .db
        .read(move |c| -> Result<_, StoreError> {
            let Some((n, total, last)) = store::eligible(c, mode, &aud)? else {
                return Ok(None);
            };
            let first = match &last {
                Some(last) => store::eligible_after(c, &aud, "", last, 1)?.pop(),
                None => None,
            };
            Ok(Some((n, total, last, first)))
        })
        .await
        .map_err(ApiError::from)?;
    let Some((count, total, last, first)) = found else {
        return Err(ApiError::validation(format!(
            "The audience '{audience_id}' does not exist in {} mode.",
            mode.as_str()
        ))
        .with_field("audience_id"));
    };
    if total == 0 {
        return Err(ApiError::validation(format!(
            "The audience '{audience_id}' has no contacts; add some with POST /v1/audiences/{audience_id}/contacts."
        ))
        .with_field("audience_id"));
    }
    let aud = audience_id.clone();
    let domains = state.domains.clone();
    let prepared = web_block(move || -> Result<_, ApiError> {
        let variables = request.variables.clone().unwrap_or_default();
        let draft = request.into_draft(false)?;
        let mut prepared = crate::emails::prepare(
            mode,
            &key_id,
            draft,
            &domains.senders,
            crate::store::ids::new_id("msg"),
        )?;
        prepared.raw.clear();
        prepared.audience_id = Some(aud.clone());
        let plan = CopyPlan::new(
            mode,
            &prepared.id,
            Some(&aud),
            prepared.draft.clone(),
            &prepared.message_id,
            prepared.created_at,
            variables,
            links,
        )
        .map_err(|e| template_error(&e))?;
        if let Some(first) = &first {
            let mb = mailbox(first).map_err(|e| {
                ApiError::validation(format!("A contact's address is not valid: {e}."))
            })?;
            plan.build(&first.email, Some((&mb, first.variable())))
                .map_err(copy_error)?;
        }
        Ok(prepared)
    })
    .await??;
    let last = last.unwrap_or_default();
    let aud = audience_id.clone();
    let body = state
        .db
        .write(move |c| -> Result<Vec<u8>, ApiError> {
            let mut accepted: Accepted = crate::emails::store::insert(c, &prepared)?;
            let done = (count == 0).then_some(prepared.created_at);
            if prepared.draft.scheduled_at.is_some() && count > 0 {
                // No recipient rows yet: the status says what the copies will be.
                c.execute(
                    "UPDATE emails SET status = 'scheduled' WHERE id = ?1",
                    [&prepared.id],
                )?;
                accepted.status = "scheduled";
            }
            if count == 0 {
                // Every contact is unsubscribed or suppressed: nothing to send.
                c.execute(
                    "UPDATE emails SET status = 'suppressed' WHERE id = ?1",
                    [&prepared.id],
                )?;
                accepted.status = "suppressed";
            }
            c.prepare_cached(
                "INSERT INTO audience_sends (email_id, mode, audience_id, request_json,
                                             last_contact_id, done_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                prepared.id,
                mode.as_str(),
                aud,
                request_json,
                last,
                done
            ])?;
            let mut body = serde_json::to_value(&accepted).unwrap_or(Value::Null);
            body["recipients"] = json!(count);
            let bytes = json_body(&body);
            if let Some(record) = &record {
                record.save(c, 200, &bytes)?;
            }
            Ok(bytes)
        })
        .await?;
    state.audience_sends.wake();
    Ok(body)
}

async fn web_block<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    actix_web::web::block(f).await.map_err(|e| {
        tracing::error!(error = %e, "a blocking task failed");
        ApiError::internal()
    })
}

/// A pending audience send, as the worker reads it.
#[derive(Debug, Clone)]
struct Pending {
    email_id: String,
    mode: Mode,
    audience_id: String,
    request_json: String,
    last_contact_id: String,
    cursor: String,
    subject: String,
    html: Option<String>,
    text: Option<String>,
    message_id: String,
    created_at: i64,
    scheduled_at: Option<i64>,
}

fn next_pending(conn: &Connection) -> Result<Option<Pending>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT s.email_id, s.mode, s.audience_id, s.request_json, s.last_contact_id, s.cursor,
                    e.subject, c.html, c.text, e.message_id, e.created_at, e.scheduled_at
             FROM audience_sends s JOIN emails e ON e.id = s.email_id
             LEFT JOIN email_contents c ON c.email_id = e.id
             WHERE s.done_at IS NULL ORDER BY s.email_id LIMIT 1",
        )?
        .query_row([], |r| {
            let mode: String = r.get(1)?;
            Ok(Pending {
                email_id: r.get(0)?,
                mode: Mode::parse(&mode).unwrap_or(Mode::Test),
                audience_id: r.get(2)?,
                request_json: r.get(3)?,
                last_contact_id: r.get(4)?,
                cursor: r.get(5)?,
                subject: r.get(6)?,
                html: r.get(7)?,
                text: r.get(8)?,
                message_id: r.get(9)?,
                created_at: r.get(10)?,
                scheduled_at: r.get(11)?,
            })
        })
        .optional()?)
}

/// The copy plan of a pending send, from the request it was accepted with and the content
/// stored with the email (which is what was checked at accept).
fn plan_for(
    p: &Pending,
    links: Links,
    domains: &crate::domains::Domains,
) -> Result<CopyPlan, String> {
    let mut request: SendRequest =
        serde_json::from_str(&p.request_json).map_err(|e| e.to_string())?;
    request.template_id = None;
    let variables: Map<String, Value> = request.variables.clone().unwrap_or_default();
    let mut draft = request.into_draft(true).map_err(|e| e.message)?;
    draft.subject = p.subject.clone();
    draft.html = p.html.clone();
    draft.text = p.text.clone();
    // Copies are signed like the single message of `emails::prepare`; a domain that lost
    // its verification since the send was accepted leaves them unsigned.
    let signer = domains
        .senders
        .for_email(p.mode, draft.from.address.domain())
        .ok()
        .flatten();
    CopyPlan::new(
        p.mode,
        &p.email_id,
        Some(&p.audience_id),
        draft,
        &p.message_id,
        p.created_at,
        variables,
        links,
    )
    .map(|plan| plan.with_signer(signer))
    .map_err(|e| e.to_string())
}

/// Renders the copies of `contacts`, spread over the CPU cores.
fn render_all(
    plan: &CopyPlan,
    contacts: Vec<Recipient>,
) -> Vec<(Recipient, Result<Vec<u8>, String>)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per = contacts.len().div_ceil(threads).max(1);
    let mut parts: Vec<Vec<Recipient>> = Vec::new();
    let mut rest = contacts;
    while rest.len() > per {
        let tail = rest.split_off(per);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    part.into_iter()
                        .map(|r| {
                            let copy = build_for(plan, &r);
                            (r, copy)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    // The engine is sandboxed and bounded; a panic is a bug, and loud.
                    tracing::error!(
                        "rendering audience copies panicked; those contacts were skipped"
                    );
                    Vec::new()
                })
            })
            .collect()
    })
}

/// Stores one chunk of copies and the send's progress; ends the send when `finished`.
/// Nothing is added to an email canceled meanwhile: the send ends (the `bool` says so).
fn store_chunk(
    conn: &Connection,
    p: &Pending,
    copies: &[(Recipient, Result<Vec<u8>, String>)],
    finished: bool,
) -> Result<(usize, bool), StoreError> {
    let now = time::now();
    let status: Option<String> = conn
        .query_row(
            "SELECT status FROM emails WHERE id = ?1",
            [&p.email_id],
            |r| r.get(0),
        )
        .optional()?;
    let canceled = !matches!(status.as_deref(), Some(s) if s != "canceled");
    let mut made = 0;
    if !canceled {
        let (initial, due) = match p.scheduled_at.filter(|t| *t > now) {
            Some(t) => ("scheduled", t),
            None => ("queued", now),
        };
        let mut insert = conn.prepare_cached(
            "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind, status,
                                     attempts, last_response, next_attempt_at, updated_at,
                                     contact_id)
             VALUES (?1, ?2, ?3, ?4, ?5, 'to', ?6, 0, ?7, ?8, ?9, ?10)",
        )?;
        for (r, copy) in copies {
            let lower = r.email.to_lowercase();
            let domain = lower.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            // The recipient row: queued (or scheduled) with its copy, or failed with why.
            let (status, last_response, next_attempt_at, raw) = match copy {
                Ok(raw) => (initial, None, Some(due), Some(raw)),
                Err(why) => {
                    let detail = format!("The copy for this contact could not be made: {why}");
                    events::record(
                        conn,
                        p.mode,
                        &NewEvent::email(events::email::FAILED, &p.email_id)
                            .recipient(&r.email)
                            .detail(&detail),
                    )?;
                    ("failed", Some(detail), None, None)
                }
            };
            insert.execute(params![
                p.email_id,
                p.mode.as_str(),
                r.email,
                lower,
                domain,
                status,
                last_response,
                next_attempt_at,
                now,
                r.id
            ])?;
            if let Some(raw) = raw {
                crate::emails::store::insert_copy(conn, conn.last_insert_rowid(), raw)?;
            }
            made += 1;
        }
    }
    let cursor = copies
        .last()
        .map(|(r, _)| r.id.as_str())
        .unwrap_or(p.cursor.as_str());
    conn.prepare_cached(
        "UPDATE audience_sends SET cursor = ?2, created = created + ?3,
                done_at = CASE WHEN ?4 THEN ?5 END
         WHERE email_id = ?1",
    )?
    .execute(params![
        p.email_id,
        cursor,
        made as i64,
        finished || canceled,
        now
    ])?;
    if !canceled {
        let any: bool = conn
            .prepare_cached("SELECT 1 FROM recipients WHERE email_id = ?1 LIMIT 1")?
            .query_row([&p.email_id], |_| Ok(()))
            .optional()?
            .is_some();
        // The status is recomputed when the first copies exist and at the end, not per
        // chunk: that is a count over all the email's recipients.
        if any && (p.cursor.is_empty() || finished) {
            refresh_status(conn, &p.email_id)?;
        } else if !any && finished {
            // Everyone unsubscribed or was suppressed between the accept and now.
            conn.execute(
                "UPDATE emails SET status = 'suppressed' WHERE id = ?1",
                [&p.email_id],
            )?;
        }
    }
    Ok((made, canceled))
}

/// The background worker that makes the copies of audience sends.
pub struct Sender {
    db: Db,
    links: Links,
    delivery: DeliveryHandle,
    handle: SenderHandle,
    domains: Arc<crate::domains::Domains>,
}

impl Sender {
    pub fn new(
        db: Db,
        links: Links,
        delivery: DeliveryHandle,
        handle: SenderHandle,
        domains: Arc<crate::domains::Domains>,
    ) -> Sender {
        Sender {
            db,
            links,
            delivery,
            handle,
            domains,
        }
    }

    /// Runs until `shutdown` turns true (finishing the chunk under way).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.step(&shutdown).await {
                Ok(true) => continue,
                Ok(false) => {
                    tokio::select! {
                        _ = self.handle.notify.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "making audience copies failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Makes the copies of one pending send (until it is done or shutdown is asked). False
    /// when nothing is pending.
    pub async fn step(&self, shutdown: &watch::Receiver<bool>) -> Result<bool, StoreError> {
        let Some(mut p) = self.db.read(next_pending).await? else {
            return Ok(false);
        };
        let links = self.links.clone();
        let domains = self.domains.clone();
        let p0 = p.clone();
        let plan = Arc::new(
            tokio::task::spawn_blocking(move || plan_for(&p0, links, &domains))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?,
        );
        // Chunk n is written while chunk n + 1 is read and rendered.
        let mut writing: Option<tokio::task::JoinHandle<Result<(usize, bool), StoreError>>> = None;
        loop {
            let q = p.clone();
            let contacts = self
                .db
                .read(move |c| {
                    store::eligible_after(c, &q.audience_id, &q.cursor, &q.last_contact_id, CHUNK)
                })
                .await?;
            let finished = contacts.len() < CHUNK;
            let next_cursor = contacts.last().map(|r| r.id.clone());
            let plan = plan.clone();
            let copies = tokio::task::spawn_blocking(move || match plan.as_ref() {
                Ok(plan) => render_all(plan, contacts),
                Err(why) => contacts
                    .into_iter()
                    .map(|r| (r, Err(why.clone())))
                    .collect(),
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
            let stopped = match writing.take() {
                Some(w) => self.finish_write(w).await?,
                None => false,
            };
            if stopped {
                return Ok(true);
            }
            let (db, chunk) = (self.db.clone(), p.clone());
            writing = Some(tokio::spawn(async move {
                db.write(move |c| store_chunk(c, &chunk, &copies, finished))
                    .await
            }));
            if finished || *shutdown.borrow() {
                break;
            }
            if let Some(cursor) = next_cursor {
                p.cursor = cursor;
            }
        }
        if let Some(w) = writing.take() {
            self.finish_write(w).await?;
        }
        Ok(true)
    }

    /// Waits for a chunk's write; true when the send stopped (canceled meanwhile).
    async fn finish_write(
        &self,
        w: tokio::task::JoinHandle<Result<(usize, bool), StoreError>>,
    ) -> Result<bool, StoreError> {
        let (made, stopped) = w.await.map_err(|e| StoreError::Task(e.to_string()))??;
        if made > 0 {
            self.delivery.wake();
        }
        Ok(stopped)
    }
}

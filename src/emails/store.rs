//! SQL of the emails capability: storing accepted emails with their recipients and first
//! events, reading them back, listing with filters, canceling, and the email status that
//! follows from its recipients' statuses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};
use serde::Serialize;

use super::address_index;
use super::request::{EmailDraft, EmailType};
use crate::delivery::capture;
use crate::delivery::queue::{self, AttemptResult, Settled};
use crate::events::{self, EventView, NewEvent};
use crate::keys::Mode;
use crate::store::rows::RowInsert;
use crate::store::{StoreError, time};
use crate::suppressions;
use crate::webhooks;

/// Recipient statuses after which nothing more happens.
pub const FINAL_STATUSES: [&str; 6] = [
    "sent",
    "delivered",
    "bounced",
    "failed",
    "suppressed",
    "canceled",
];

/// An email ready to store: checked, built, with its id.
pub struct PreparedEmail {
    pub id: String,
    pub mode: Mode,
    pub draft: EmailDraft,
    pub raw: Vec<u8>,
    pub message_id: String,
    pub envelope_from: String,
    pub created_at: i64,
    pub api_key_id: String,
    /// Per-recipient copies (lower-cased address, MIME bytes) of marketing and tracked
    /// emails: each carries the recipient's own unsubscribe and tracking links.
    pub copies: Vec<(String, Vec<u8>)>,
    /// The audience of an audience send (its recipients are added by a worker).
    pub audience_id: Option<String>,
    /// The From domain's DKIM signer, so per-recipient copies are signed like `raw`.
    pub signer: Option<std::sync::Arc<crate::domains::Sender>>,
    /// The draft's text columns, made when preparing: off the writer thread that stores.
    pub columns: EmailColumns,
}

/// The `emails` columns that are text made from the draft (display forms and JSON).
pub struct EmailColumns {
    from_header: String,
    from_lower: String,
    to_json: Json,
    cc_json: Json,
    bcc_json: Json,
    reply_to_json: Json,
    tags_json: Json,
    headers_json: Json,
    /// The recipients, each address once (the first of to, cc, bcc that names it).
    recipients: Vec<RecipientColumns>,
}

/// A recipient's text columns, made from the draft when preparing.
struct RecipientColumns {
    kind: &'static str,
    address: String,
    lower: String,
    domain: String,
}

impl EmailColumns {
    pub fn of(d: &EmailDraft) -> EmailColumns {
        EmailColumns {
            from_header: d.from.display(),
            from_lower: d.from.address.normalized(),
            to_json: to_json(&d.to),
            cc_json: to_json(&d.cc),
            bcc_json: to_json(&d.bcc),
            reply_to_json: to_json(&d.reply_to),
            tags_json: json_text(&d.tags, d.tags.is_empty(), "{}"),
            headers_json: json_text(&d.headers, d.headers.is_empty(), "[]"),
            recipients: recipient_columns(d),
        }
    }

    /// The domain of the From address, lower-cased: the `from_domain` column.
    fn sender_domain(&self) -> &str {
        self.from_lower
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }
}

/// What the API answers for an accepted email.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    pub status: &'static str,
    /// Unix seconds, shown in RFC 3339 (formatted when the answer is written, which is
    /// not on the writer thread).
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String)]
    pub queued_at: i64,
    /// The outcome labels of the recipients captured at accept (test mode), for the
    /// delivery metrics.
    #[serde(skip)]
    pub captured: Vec<&'static str>,
    /// Whether a recipient waits in the delivery queue (not captured, not suppressed): only
    /// then has the delivery worker anything to do, and only then is it woken.
    #[serde(skip)]
    pub waits_in_queue: bool,
}

fn recipient_columns(d: &EmailDraft) -> Vec<RecipientColumns> {
    // At most MAX_RECIPIENTS: a scan of those kept is cheaper than a set of copies.
    let mut recipients: Vec<RecipientColumns> = Vec::new();
    for (kind, mailbox) in d.recipients() {
        let lower = mailbox.address.normalized();
        if !recipients.iter().any(|r| r.lower == lower) {
            recipients.push(RecipientColumns {
                kind,
                domain: mailbox.address.domain().to_owned(),
                address: mailbox.address.as_str().to_owned(),
                lower,
            });
        }
    }
    recipients
}

/// A JSON column's text: most emails leave most lists empty, and those need no allocation.
type Json = std::borrow::Cow<'static, str>;

/// `value` as JSON text; `empty_text` itself, without an allocation, when it is `empty`.
fn json_text(value: &impl Serialize, empty: bool, empty_text: &'static str) -> Json {
    if empty {
        return Json::Borrowed(empty_text);
    }
    Json::Owned(serde_json::to_string(value).unwrap_or_else(|_| empty_text.into()))
}

/// The display forms of `list` as a JSON array of strings.
fn to_json(list: &[crate::address::Mailbox]) -> Json {
    let displays: Vec<String> = list.iter().map(|m| m.display()).collect();
    json_text(&displays, list.is_empty(), "[]")
}

/// Stores one email, its recipients (each checked against the suppression list) and its
/// first events, in the caller's transaction. A test-mode email sent now is captured here
/// too (see `delivery::capture::at_accept`), except for the recipients whose lifecycle
/// needs the queue.
pub fn insert(conn: &Connection, e: &PreparedEmail) -> Result<Accepted, StoreError> {
    let mut accepted = insert_all(conn, [e])?;
    Ok(accepted.pop().expect("one email stored, one answer"))
}

/// Stores `emails` in their order, as [`insert`] stores each, with multi-row statements
/// (see `store::rows`): the writer's work for a batch of a thousand.
///
/// The emails are planned one after the other (which recipients the suppression list
/// blocks, what test mode captures) and written in runs. A run ends with an email whose
/// capture adds to the suppression list (test mode's bounce and complaint addresses), so
/// the emails after it are planned against the list as it then is, exactly as when each
/// email was stored on its own.
pub fn insert_all<'e>(
    conn: &Connection,
    emails: impl IntoIterator<Item = &'e PreparedEmail>,
) -> Result<Vec<Accepted>, StoreError> {
    let emails = emails.into_iter();
    let mut accepted = Vec::with_capacity(emails.size_hint().0);
    let mut run = Vec::new();
    let mut suppressed = suppressions::Lookup::new(conn)?;
    for e in emails {
        let plan = Plan::of(&mut suppressed, e)?;
        let ends_run = plan.adds_suppressions();
        run.push(plan);
        if ends_run {
            write_run(conn, &run, &mut accepted)?;
            run.clear();
        }
    }
    write_run(conn, &run, &mut accepted)?;
    Ok(accepted)
}

/// An email and its recipients as they will be stored, worked out before any is written.
struct Plan<'e> {
    email: &'e PreparedEmail,
    rows: Vec<Row<'e>>,
    /// The status the answer gives (what was accepted).
    accepted_status: &'static str,
    /// The status the row holds (after test mode's capture).
    stored_status: &'static str,
}

impl<'e> Plan<'e> {
    fn of(
        suppressed: &mut suppressions::Lookup<'_>,
        e: &'e PreparedEmail,
    ) -> Result<Plan<'e>, StoreError> {
        let d = &e.draft;
        let marketing = d.email_type == EmailType::Marketing;
        let initial = if d.scheduled_at.is_some() {
            "scheduled"
        } else {
            "queued"
        };
        let capture_now = e.mode == Mode::Test && d.scheduled_at.is_none();
        let mut rows = Vec::new();
        for recipient in &e.columns.recipients {
            let reason = suppressed.blocking_reason(e.mode, &recipient.lower, marketing)?;
            let status = if reason.is_some() {
                "suppressed"
            } else {
                initial
            };
            let captured = (capture_now && reason.is_none())
                .then(|| capture::at_accept(&recipient.address))
                .flatten();
            rows.push(Row {
                recipient,
                status,
                suppressed_for: reason,
                captured,
            });
        }
        let accepted_status = derive_status(rows.iter().map(|r| (r.status, 1)));
        let stored_status = derive_status(
            rows.iter()
                .map(|r| (r.settled(e.created_at).map_or(r.status, |s| s.status), 1)),
        );
        Ok(Plan {
            email: e,
            rows,
            accepted_status,
            stored_status,
        })
    }

    /// Whether test mode's capture adds one of its recipients to the suppression list.
    fn adds_suppressions(&self) -> bool {
        self.rows
            .iter()
            .filter_map(|r| r.captured.as_ref())
            .any(queue::adds_suppression)
    }
}

/// The columns of `emails` that [`write_run`] writes.
static EMAIL_ROWS: LazyLock<RowInsert> = LazyLock::new(|| {
    RowInsert::new(
        "emails",
        &[
            "id",
            "mode",
            "type",
            "status",
            "from_header",
            "from_address",
            "from_domain",
            "envelope_from",
            "subject",
            "to_json",
            "cc_json",
            "bcc_json",
            "reply_to_json",
            "tags_json",
            "headers_json",
            "message_id",
            "track_opens",
            "track_clicks",
            "api_key_id",
            "created_at",
            "queued_at",
            "scheduled_at",
            "template_id",
            "audience_id",
        ],
    )
});

static CONTENT_ROWS: LazyLock<RowInsert> =
    LazyLock::new(|| RowInsert::new("email_contents", &["email_id", "html", "text", "raw"]));

static RECIPIENT_ROWS: LazyLock<RowInsert> = LazyLock::new(|| {
    RowInsert::new(
        "recipients",
        &[
            "email_id",
            "mode",
            "address",
            "address_lower",
            "domain",
            "kind",
            "status",
            "next_attempt_at",
            "updated_at",
            "attempts",
            "last_response",
        ],
    )
});

/// Writes the planned emails: their rows, their recipients, their events, then the
/// suppressions test mode's capture adds (only the last email of a run has any). Pushes
/// each email's answer to `accepted`.
fn write_run(
    conn: &Connection,
    run: &[Plan<'_>],
    accepted: &mut Vec<Accepted>,
) -> Result<(), StoreError> {
    if run.is_empty() {
        return Ok(());
    }
    let mut values = Vec::with_capacity(run.len() * EMAIL_ROWS.columns());
    for plan in run {
        let (e, d, c) = (plan.email, &plan.email.draft, &plan.email.columns);
        values.extend([
            e.id.to_sql()?,
            e.mode.as_str().to_sql()?,
            d.email_type.as_str().to_sql()?,
            plan.stored_status.to_sql()?,
            c.from_header.to_sql()?,
            c.from_lower.to_sql()?,
            c.sender_domain().to_sql()?,
            e.envelope_from.to_sql()?,
            d.subject.to_sql()?,
            c.to_json.to_sql()?,
            c.cc_json.to_sql()?,
            c.bcc_json.to_sql()?,
            c.reply_to_json.to_sql()?,
            c.tags_json.to_sql()?,
            c.headers_json.to_sql()?,
            e.message_id.to_sql()?,
            ToSqlOutput::from(d.track_opens),
            ToSqlOutput::from(d.track_clicks),
            e.api_key_id.to_sql()?,
            ToSqlOutput::from(e.created_at),
            ToSqlOutput::from(e.created_at),
            d.scheduled_at.to_sql()?,
            d.template_id.to_sql()?,
            e.audience_id.to_sql()?,
        ]);
    }
    EMAIL_ROWS.insert(conn, &values)?;

    values.clear();
    for plan in run {
        let (e, d) = (plan.email, &plan.email.draft);
        values.extend([
            e.id.to_sql()?,
            d.html.to_sql()?,
            d.text.to_sql()?,
            if e.raw.is_empty() {
                ToSqlOutput::from(rusqlite::types::Null)
            } else {
                e.raw.to_sql()?
            },
        ]);
    }
    CONTENT_ROWS.insert(conn, &values)?;

    let settled: Vec<Vec<Option<Settled<'_>>>> = run
        .iter()
        .map(|plan| {
            plan.rows
                .iter()
                .map(|r| r.settled(plan.email.created_at))
                .collect()
        })
        .collect();

    // Recipients in order; an email with per-recipient copies writes its rows one at a
    // time, as each copy needs the rowid of its recipient.
    values.clear();
    for (plan, settled) in run.iter().zip(&settled) {
        let e = plan.email;
        let due = e.draft.scheduled_at.unwrap_or(e.created_at);
        let with_copies = !e.copies.is_empty();
        if with_copies {
            RECIPIENT_ROWS.insert(conn, &values)?;
            values.clear();
        }
        for (r, settled) in plan.rows.iter().zip(settled) {
            let recipient = r.recipient;
            let (status, next, attempts, response) = match settled {
                Some(s) => (s.status, s.next_attempt_at, 1, Some(s.detail)),
                None => (r.status, (r.status != "suppressed").then_some(due), 0, None),
            };
            values.extend([
                e.id.to_sql()?,
                e.mode.as_str().to_sql()?,
                recipient.address.to_sql()?,
                recipient.lower.to_sql()?,
                recipient.domain.to_sql()?,
                recipient.kind.to_sql()?,
                status.to_sql()?,
                ToSqlOutput::Owned(next.map_or(
                    rusqlite::types::Value::Null,
                    rusqlite::types::Value::Integer,
                )),
                ToSqlOutput::from(e.created_at),
                ToSqlOutput::from(attempts),
                match response {
                    Some(detail) => detail.to_sql()?,
                    None => ToSqlOutput::from(rusqlite::types::Null),
                },
            ]);
            if with_copies {
                RECIPIENT_ROWS.insert(conn, &values)?;
                values.clear();
                if let Some((_, raw)) = e.copies.iter().find(|(l, _)| *l == recipient.lower) {
                    insert_copy(conn, conn.last_insert_rowid(), raw)?;
                }
            }
        }
    }
    RECIPIENT_ROWS.insert(conn, &values)?;
    drop(values);

    // The detail of each recipient's `suppressed` event, made before the events borrow it.
    let details: Vec<Vec<Option<String>>> = run
        .iter()
        .map(|plan| {
            plan.rows
                .iter()
                .map(|r| {
                    r.suppressed_for.map(|reason| {
                        format!(
                            "The address is on the suppression list ({}).",
                            reason.as_str()
                        )
                    })
                })
                .collect()
        })
        .collect();
    // Each email's events in the order it happened: accepted, suppressed, captured.
    let mut events = Vec::new();
    for ((plan, settled), details) in run.iter().zip(&settled).zip(&details) {
        let e = plan.email;
        // The `queued` event of an email sent now is implied by its row (see `get`) and
        // stored only for the webhooks that listen to it: a third of the rows per email.
        if e.draft.scheduled_at.is_some() {
            events.push((e.mode, NewEvent::email(events::email::SCHEDULED, &e.id)));
        } else if webhooks::store::is_subscribed(conn, e.mode, QUEUED_WEBHOOK_TYPE)? {
            events.push((e.mode, NewEvent::email(events::email::QUEUED, &e.id)));
        }
        for (r, detail) in plan.rows.iter().zip(details) {
            if let Some(detail) = detail {
                events.push((
                    e.mode,
                    NewEvent::email(events::email::SUPPRESSED, &e.id)
                        .recipient(&r.recipient.address)
                        .detail(detail),
                ));
            }
        }
        for (r, settled) in plan.rows.iter().zip(settled) {
            if let (Some(result), Some(settled)) = (&r.captured, settled) {
                let consequent =
                    queue::consequent_events(&e.id, &r.recipient.address, result, settled);
                events.extend(consequent.into_iter().map(|event| (e.mode, event)));
            }
        }
    }
    events::record_all(conn, &events)?;

    for (plan, settled) in run.iter().zip(&settled) {
        let e = plan.email;
        let mut captured = Vec::new();
        let mut waits_in_queue = false;
        for (r, settled) in plan.rows.iter().zip(settled) {
            waits_in_queue |= r.waits_in_queue();
            if let (Some(result), Some(settled)) = (&r.captured, settled) {
                captured.push(settled.label());
                queue::add_consequent_suppression(
                    conn,
                    e.mode,
                    &e.id,
                    &r.recipient.address,
                    result,
                    settled,
                )?;
            }
        }
        accepted.push(Accepted {
            id: e.id.clone(),
            status: plan.accepted_status,
            queued_at: e.created_at,
            captured,
            waits_in_queue,
        });
    }
    Ok(())
}

/// The webhook event type of an email's `queued` event.
const QUEUED_WEBHOOK_TYPE: &str = "email.queued";

/// A recipient of an email being stored.
struct Row<'a> {
    recipient: &'a RecipientColumns,
    /// `queued`, `scheduled` or `suppressed`.
    status: &'static str,
    /// Why the suppression list blocks the recipient, when it does.
    suppressed_for: Option<suppressions::Reason>,
    /// Test mode's capture at accept.
    captured: Option<AttemptResult>,
}

impl Row<'_> {
    /// Whether the row is left for the delivery worker: queued or scheduled, and not
    /// settled by test mode's capture.
    fn waits_in_queue(&self) -> bool {
        self.status != "suppressed" && self.captured.is_none()
    }

    /// What test mode's capture at accept (`created_at`) makes of the recipient.
    fn settled(&self, created_at: i64) -> Option<Settled<'_>> {
        self.captured
            .as_ref()
            .map(|result| queue::settle(result, 1, None, &[], created_at))
    }
}

/// Stores `raw` as the recipient's own copy of the message (see `recipient_copies` in
/// schema.sql); the delivery worker sends it instead of the email's.
pub fn insert_copy(conn: &Connection, recipient_id: i64, raw: &[u8]) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO recipient_copies (recipient_id, raw) VALUES (?1, ?2)")?
        .execute(params![recipient_id, raw])?;
    Ok(())
}

/// The email's status from its recipients' `(status, count)`: their common status;
/// `scheduled` or `queued` while all unfinished ones wait that way; `sending` while any is
/// on its way; `partial` when the finished ones differ.
pub fn derive_status<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> &'static str {
    let mut present: Vec<&str> = Vec::new();
    for (status, n) in counts {
        if n > 0 && !present.contains(&status) {
            present.push(status);
        }
    }
    let canonical = |s: &str| -> &'static str {
        match s {
            "queued" => "queued",
            "scheduled" => "scheduled",
            "sending" => "sending",
            "deferred" => "deferred",
            "sent" => "sent",
            "delivered" => "delivered",
            "bounced" => "bounced",
            "failed" => "failed",
            "suppressed" => "suppressed",
            "canceled" => "canceled",
            _ => "sending",
        }
    };
    match present.as_slice() {
        [] => "queued",
        [one] => canonical(one),
        many => {
            let unfinished: Vec<&str> = many
                .iter()
                .copied()
                .filter(|s| !FINAL_STATUSES.contains(s))
                .collect();
            let finished_other_than_suppressed = many
                .iter()
                .any(|s| FINAL_STATUSES.contains(s) && *s != "suppressed");
            if unfinished.is_empty() {
                "partial"
            } else if !finished_other_than_suppressed
                && unfinished.iter().all(|s| *s == "scheduled")
            {
                "scheduled"
            } else if !finished_other_than_suppressed && unfinished.iter().all(|s| *s == "queued") {
                "queued"
            } else {
                "sending"
            }
        }
    }
}

/// Recomputes and stores the status of `email_id` from its recipients.
pub fn refresh_status(conn: &Connection, email_id: &str) -> Result<&'static str, StoreError> {
    let counts = status_counts(conn, &[email_id])?;
    let status = derive_status(counts.iter().map(|(_, s, n)| (s.as_str(), *n)));
    conn.prepare_cached("UPDATE emails SET status = ?2 WHERE id = ?1 AND status != ?2")?
        .execute(params![email_id, status])?;
    Ok(status)
}

/// `(email id, recipient status, count)` of the emails `ids`.
///
/// The index by email and status covers only audience sends' recipients (schema.sql,
/// step 9), the one kind of email with more than MAX_RECIPIENTS of them, and every
/// recipient of an audience send is a contact and no other email's is. So an audience
/// send is counted through that index, without reading its rows, and any other email
/// through its at most fifty rows.
fn status_counts(
    conn: &Connection,
    ids: &[&str],
) -> Result<Vec<(String, String, u64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One email (a delivery outcome) is the writer's hot case: its statements are kept;
    // a page of a list has as many shapes as page sizes, so those are not.
    let keep = ids.len() == 1;
    let placeholders = vec!["?"; ids.len()].join(",");
    let audience_sends: HashSet<String> = rows(
        conn,
        &format!("SELECT id FROM emails WHERE id IN ({placeholders}) AND audience_id IS NOT NULL"),
        keep,
        params_from_iter(ids),
        |r| r.get(0),
    )?
    .into_iter()
    .collect();
    let (audience, other): (Vec<&str>, Vec<&str>) =
        ids.iter().partition(|id| audience_sends.contains(**id));
    let mut counts = Vec::new();
    for (group, contacts) in [(audience, "AND contact_id IS NOT NULL"), (other, "")] {
        if group.is_empty() {
            continue;
        }
        let placeholders = vec!["?"; group.len()].join(",");
        counts.extend(rows(
            conn,
            &format!(
                "SELECT email_id, status, count(*) FROM recipients
                 WHERE email_id IN ({placeholders}) {contacts} GROUP BY email_id, status"
            ),
            keep,
            params_from_iter(&group),
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)),
        )?);
    }
    Ok(counts)
}

/// The rows of `sql`, each made by `f`, through the connection's statement cache when
/// `keep`.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    keep: bool,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let (mut kept, mut once);
    let stmt: &mut rusqlite::Statement<'_> = if keep {
        kept = conn.prepare_cached(sql)?;
        &mut kept
    } else {
        once = conn.prepare(sql)?;
        &mut once
    };
    stmt.query_map(params, f)?.collect()
}

/// Stores the status of an email whose only recipient now has `recipient_status`: the
/// same as [`refresh_status`] without counting the recipients.
pub fn set_status_of_single(
    conn: &Connection,
    email_id: &str,
    recipient_status: &str,
) -> Result<&'static str, StoreError> {
    let status = derive_status([(recipient_status, 1)].into_iter());
    conn.prepare_cached("UPDATE emails SET status = ?2 WHERE id = ?1 AND status != ?2")?
        .execute(params![email_id, status])?;
    Ok(status)
}

/// One recipient as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub email: String,
    pub status: String,
    pub attempts: i64,
    pub last_response: Option<String>,
}

/// The email object of `GET /v1/emails/:id` and of list items.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EmailView {
    pub id: String,
    pub object: &'static str,
    pub status: String,
    #[serde(rename = "type")]
    pub email_type: String,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Vec<String>,
    pub subject: String,
    pub tags: BTreeMap<String, String>,
    pub message_id: String,
    pub created_at: String,
    pub queued_at: Option<String>,
    pub scheduled_at: Option<String>,
    /// The template the content was rendered from, if any.
    pub template_id: Option<String>,
    pub recipients: Vec<RecipientView>,
    pub recipient_counts: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub html: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub text: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

const EMAIL_COLUMNS: &str =
    "id, status, type, from_header, to_json, cc_json, bcc_json, reply_to_json,
    subject, tags_json, message_id, created_at, queued_at, scheduled_at, template_id";

fn strings(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn view_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EmailView> {
    let tags: String = r.get(9)?;
    Ok(EmailView {
        id: r.get(0)?,
        object: "email",
        status: r.get(1)?,
        email_type: r.get(2)?,
        from: r.get(3)?,
        to: strings(&r.get::<_, String>(4)?),
        cc: strings(&r.get::<_, String>(5)?),
        bcc: strings(&r.get::<_, String>(6)?),
        reply_to: strings(&r.get::<_, String>(7)?),
        subject: r.get(8)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        message_id: format!("<{}>", r.get::<_, String>(10)?),
        created_at: time::format(r.get(11)?),
        queued_at: r.get::<_, Option<i64>>(12)?.map(time::format),
        scheduled_at: r.get::<_, Option<i64>>(13)?.map(time::format),
        template_id: r.get(14)?,
        recipients: Vec::new(),
        recipient_counts: BTreeMap::new(),
        events: None,
        html: None,
        text: None,
        raw: None,
    })
}

/// Most recipients shown inside an email object. An email with more (an audience send) has
/// complete `recipient_counts` but an empty `recipients`: page through them with
/// `GET /v1/emails/:id/recipients`.
pub const INLINE_RECIPIENTS: u64 = 50;

/// Fills `recipient_counts` of several emails, and `recipients` of those with at most
/// [`INLINE_RECIPIENTS`], with two queries.
fn attach_recipients(conn: &Connection, views: &mut [EmailView]) -> Result<(), StoreError> {
    if views.is_empty() {
        return Ok(());
    }
    let index: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id.clone(), i))
        .collect();
    let wanted: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
    let mut totals = vec![0u64; views.len()];
    for (email_id, status, n) in status_counts(conn, &wanted)? {
        if let Some(&i) = index.get(&email_id) {
            totals[i] += n;
            *views[i].recipient_counts.entry(status).or_insert(0) += n;
        }
    }
    let small: Vec<&dyn ToSql> = views
        .iter()
        .zip(&totals)
        .filter(|(_, t)| (1..=INLINE_RECIPIENTS).contains(*t))
        .map(|(v, _)| &v.id as &dyn ToSql)
        .collect();
    if small.is_empty() {
        return Ok(());
    }
    let placeholders = vec!["?"; small.len()].join(",");
    let sql = format!(
        "SELECT email_id, address, status, attempts, last_response FROM recipients
         WHERE email_id IN ({placeholders}) ORDER BY id"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(small.as_slice())?;
    let mut found: Vec<(usize, RecipientView)> = Vec::new();
    while let Some(r) = rows.next()? {
        let email_id: String = r.get(0)?;
        let Some(&i) = index.get(&email_id) else {
            continue;
        };
        found.push((
            i,
            RecipientView {
                email: r.get(1)?,
                status: r.get(2)?,
                attempts: r.get(3)?,
                last_response: r.get(4)?,
            },
        ));
    }
    drop(rows);
    for (i, rv) in found {
        views[i].recipients.push(rv);
    }
    // The status follows the recipients as they are now: the delivery worker does not
    // rewrite the (large) email row when it claims queued recipients, only when they end.
    for view in views.iter_mut().filter(|v| !v.recipient_counts.is_empty()) {
        view.status =
            derive_status(view.recipient_counts.iter().map(|(s, n)| (s.as_str(), *n))).to_string();
    }
    Ok(())
}

/// One email of `mode`, with events; with content when asked.
pub fn get(
    conn: &Connection,
    mode: Mode,
    id: &str,
    include_content: bool,
) -> Result<Option<EmailView>, StoreError> {
    let sql = format!("SELECT {EMAIL_COLUMNS} FROM emails WHERE id = ?1 AND mode = ?2");
    let Some(mut view) = conn
        .query_row(&sql, params![id, mode.as_str()], view_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    attach_recipients(conn, std::slice::from_mut(&mut view))?;
    let mut events = events::for_email(conn, id)?;
    if !events
        .iter()
        .any(|e| e.kind == events::email::QUEUED || e.kind == events::email::SCHEDULED)
    {
        events.insert(0, implied_queued_event(&view));
    }
    view.events = Some(events);
    if include_content {
        let (html, text, raw): (Option<String>, Option<String>, Option<Vec<u8>>) = conn
            .query_row(
                "SELECT html, text, raw FROM email_contents WHERE email_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .unwrap_or_default();
        view.html = Some(html);
        view.text = Some(text);
        view.raw = Some(String::from_utf8_lossy(&raw.unwrap_or_default()).into_owned());
    }
    Ok(Some(view))
}

/// The `queued` event of an email sent now, which `insert` leaves implied by the email's
/// row unless a webhook listens to it. Its id is the email's own ULID under the event
/// prefix: stable, unique, and earlier than any event recorded after the email.
fn implied_queued_event(email: &EmailView) -> EventView {
    let ulid = email
        .id
        .split_once('_')
        .map_or(email.id.as_str(), |(_, u)| u);
    EventView {
        id: format!("evt_{ulid}"),
        kind: events::email::QUEUED.to_string(),
        recipient: None,
        occurred_at: email.created_at.clone(),
        detail: None,
    }
}

/// Filters of `GET /v1/emails`, checked.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub email_type: Option<String>,
    pub to: Option<String>,
    pub from: Option<String>,
    pub tag: Option<(String, String)>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub before_id: Option<String>,
    pub limit: usize,
}

/// A page of emails, newest first; fetches `limit + 1` rows so the caller knows `has_more`.
pub fn list(conn: &Connection, mode: Mode, f: &ListFilter) -> Result<Vec<EmailView>, StoreError> {
    let mut sql = format!("SELECT {EMAIL_COLUMNS} FROM emails e WHERE mode = ?");
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(mode.as_str())];
    if let Some(s) = &f.status {
        sql.push_str(" AND status = ?");
        args.push(Box::new(s.clone()));
    }
    if let Some(t) = &f.email_type {
        sql.push_str(" AND type = ?");
        args.push(Box::new(t.clone()));
    }
    if let Some(to) = &f.to {
        sql.push_str(&format!(" AND id IN ({})", address_index::TO_FILTER));
        for arg in address_index::to_filter_args(mode.as_str(), to.to_lowercase()) {
            args.push(Box::new(arg));
        }
    }
    if let Some(from) = &f.from {
        sql.push_str(" AND from_address = ?");
        args.push(Box::new(from.to_lowercase()));
    }
    if let Some((k, v)) = &f.tag {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM json_each(e.tags_json) WHERE key = ? AND value = ?)",
        );
        args.push(Box::new(k.clone()));
        args.push(Box::new(v.clone()));
    }
    if let Some(t) = f.created_after {
        sql.push_str(" AND created_at > ?");
        args.push(Box::new(t));
    }
    if let Some(t) = f.created_before {
        sql.push_str(" AND created_at < ?");
        args.push(Box::new(t));
    }
    if let Some(id) = &f.before_id {
        sql.push_str(" AND id < ?");
        args.push(Box::new(id.clone()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Box::new((f.limit + 1) as i64));
    let mut stmt = conn.prepare_cached(&sql)?;
    let refs: Vec<&dyn ToSql> = args.iter().map(|a| a.as_ref()).collect();
    let mut views = stmt
        .query_map(refs.as_slice(), view_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    attach_recipients(conn, &mut views)?;
    Ok(views)
}

/// What canceling found.
pub enum CancelOutcome {
    Canceled,
    NotFound,
    NotScheduled(String),
}

/// Cancels a scheduled email: its waiting recipients become `canceled`.
pub fn cancel(conn: &Connection, mode: Mode, id: &str) -> Result<CancelOutcome, StoreError> {
    let status: Option<String> = conn
        .query_row(
            "SELECT status FROM emails WHERE id = ?1 AND mode = ?2",
            params![id, mode.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    match status.as_deref() {
        None => return Ok(CancelOutcome::NotFound),
        Some("scheduled") => {}
        Some(other) => return Ok(CancelOutcome::NotScheduled(other.to_string())),
    }
    conn.execute(
        "UPDATE recipients SET status = 'canceled', next_attempt_at = NULL, updated_at = ?2
         WHERE email_id = ?1 AND status = 'scheduled'",
        params![id, time::now()],
    )?;
    refresh_status(conn, id)?;
    events::record(conn, mode, &NewEvent::email(events::email::CANCELED, id))?;
    Ok(CancelOutcome::Canceled)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Db;

    /// Adds email `id` of `mode` with one `to` recipient per address, in order.
    pub(crate) fn add_email(c: &Connection, id: &str, mode: &str, to: &[&str]) {
        c.execute(
            "INSERT INTO emails (id, mode, type, status, from_header, from_address, envelope_from,
                subject, to_json, cc_json, bcc_json, reply_to_json, tags_json, headers_json,
                message_id, created_at)
             VALUES (?1, ?2, 'transactional', 'queued', 'a@b.test', 'a@b.test', 'a@b.test', 's',
                     '[]', '[]', '[]', '[]', '{}', '[]', ?1, 0)",
            params![id, mode],
        )
        .unwrap();
        for address in to {
            c.execute(
                "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind,
                                         status, updated_at)
                 VALUES (?1, ?2, ?3, lower(?3), 'example.org', 'to', 'queued', 0)",
                params![id, mode, address],
            )
            .unwrap();
        }
    }

    fn to(c: &Connection, mode: Mode, address: &str) -> Vec<String> {
        let filter = ListFilter {
            to: Some(address.into()),
            limit: 10,
            ..Default::default()
        };
        list(c, mode, &filter)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// The `to` filter finds every email whether its recipients were copied to the address
    /// index, are still waiting, or some of each; copying goes by chunks and never twice.
    #[test]
    fn to_filter_sees_indexed_and_waiting_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        db.write_blocking(|c| -> Result<(), StoreError> {
            add_email(c, "msg_1", "test", &["Ana@example.org", "bo@example.org"]);
            add_email(c, "msg_2", "test", &["ana@example.org"]);
            add_email(c, "msg_3", "live", &["ana@example.org"]);
            Ok(())
        })
        .unwrap();
        let read = || db.read_blocking().unwrap();
        assert!(address_index::has_unindexed_recipients(&read()).unwrap());
        assert_eq!(
            to(&read(), Mode::Test, "ANA@example.org"),
            ["msg_2", "msg_1"]
        );
        // Two of the four copied: msg_1's; msg_2 and msg_3 still wait.
        assert_eq!(
            db.write_blocking(|c| address_index::index_new_recipients(c, 2))
                .unwrap(),
            2
        );
        assert_eq!(
            to(&read(), Mode::Test, "ana@example.org"),
            ["msg_2", "msg_1"]
        );
        assert_eq!(to(&read(), Mode::Live, "ana@example.org"), ["msg_3"]);
        assert_eq!(
            db.write_blocking(|c| address_index::index_new_recipients(c, 10))
                .unwrap(),
            2
        );
        assert!(!address_index::has_unindexed_recipients(&read()).unwrap());
        assert_eq!(
            db.write_blocking(|c| address_index::index_new_recipients(c, 10))
                .unwrap(),
            0
        );
        db.write_blocking(|c| -> Result<(), StoreError> {
            add_email(c, "msg_4", "test", &["ana@example.org"]);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            to(&read(), Mode::Test, "ana@example.org"),
            ["msg_4", "msg_2", "msg_1"]
        );
        assert_eq!(to(&read(), Mode::Test, "bo@example.org"), ["msg_1"]);
        assert!(to(&read(), Mode::Test, "cy@example.org").is_empty());
        let copied: i64 = read()
            .query_row("SELECT count(*) FROM recipient_addresses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(copied, 4);
    }

    /// Counts come whole for both kinds of email: an audience send's through the index of
    /// its contacts' statuses (without reading the rows), any other's from its rows.
    #[test]
    fn status_counts_of_audience_sends_and_other_emails() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        db.write_blocking(|c| -> Result<(), StoreError> {
            add_email(c, "msg_1", "test", &["a@example.org", "b@example.org"]);
            add_email(c, "msg_2", "test", &[]);
            c.execute(
                "UPDATE emails SET audience_id = 'aud_1' WHERE id = 'msg_2'",
                [],
            )?;
            for (n, status) in ["queued", "delivered", "delivered"].iter().enumerate() {
                c.execute(
                    "INSERT INTO recipients (email_id, mode, address, address_lower, domain,
                                             kind, status, updated_at, contact_id)
                     VALUES ('msg_2', 'test', ?1, ?1, 'example.org', 'to', ?2, 0, ?3)",
                    params![format!("c{n}@example.org"), status, format!("con_{n}")],
                )?;
            }
            c.execute(
                "UPDATE recipients SET status = 'bounced' WHERE address = 'b@example.org'",
                [],
            )?;
            Ok(())
        })
        .unwrap();
        let conn = db.read_blocking().unwrap();
        let mut counts = status_counts(&conn, &["msg_1", "msg_2", "msg_9"]).unwrap();
        counts.sort();
        let expected: Vec<(String, String, u64)> = [
            ("msg_1", "bounced", 1),
            ("msg_1", "queued", 1),
            ("msg_2", "delivered", 2),
            ("msg_2", "queued", 1),
        ]
        .iter()
        .map(|(e, s, n)| (e.to_string(), s.to_string(), *n))
        .collect();
        assert_eq!(counts, expected);
        assert_eq!(status_counts(&conn, &["msg_2"]).unwrap().len(), 2);
        let plan = crate::store::query_plan(
            &conn,
            "SELECT email_id, status, count(*) FROM recipients
             WHERE email_id IN (?1) AND contact_id IS NOT NULL GROUP BY email_id, status",
            ["msg_2"],
        );
        assert!(
            plan.contains("COVERING INDEX recipients_by_email_status"),
            "{plan}"
        );
    }

    #[test]
    fn email_status_from_recipients() {
        assert_eq!(derive_status([("delivered", 2)].into_iter()), "delivered");
        assert_eq!(
            derive_status([("delivered", 1), ("queued", 1)].into_iter()),
            "sending"
        );
        assert_eq!(
            derive_status([("delivered", 1), ("bounced", 1)].into_iter()),
            "partial"
        );
        assert_eq!(
            derive_status([("queued", 1), ("suppressed", 1)].into_iter()),
            "queued"
        );
        assert_eq!(
            derive_status([("scheduled", 2), ("suppressed", 1)].into_iter()),
            "scheduled"
        );
        assert_eq!(derive_status([("deferred", 1)].into_iter()), "deferred");
        assert_eq!(derive_status([("suppressed", 3)].into_iter()), "suppressed");
    }
}

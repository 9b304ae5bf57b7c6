//! SQL of the delivery queue: claiming due recipients with a lease, recording outcomes
//! (status, attempts, retry time, events, suppressions) and the figures the metrics show.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use super::bounce::{self, BounceCategory, Classification};
use super::smtp::Reply;

use crate::emails::store::{refresh_status, set_status_of_single};
use crate::events::{self, NewEvent};
use crate::keys::Mode;
use crate::store::{StoreError, time};
use crate::suppressions::{self, Reason};

/// How long a claimed recipient stays ours unless the worker renews it; after that (a
/// crash) it is due again. The worker renews the leases of what it holds, waiting or under
/// way, every third of this (an SMTP transaction may legitimately take longer: the DATA
/// timeout alone is ten minutes).
pub const LEASE: Duration = Duration::from_secs(300);

/// When a lease of `lease` taken at `now` ends (whole seconds, at least one).
fn lease_end(now: i64, lease: Duration) -> i64 {
    now + lease.as_secs().max(1) as i64
}

/// A recipient claimed for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub rcpt_id: i64,
    pub email_id: String,
    pub mode: Mode,
    pub address: String,
    pub domain: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The recipient has its own copy of the message (an individually rendered audience
    /// send) instead of the email's.
    pub own_copy: bool,
    /// The email's only recipient: the email's status is this recipient's, so recording
    /// the outcome needs no count of the others.
    pub alone: bool,
}

/// What a claim took from the queue.
#[derive(Debug, Default)]
pub struct Claim {
    /// Recipients to attempt now, leased to this process.
    pub claimed: Vec<Claimed>,
    /// Recipients found on the suppression list while they waited: marked `suppressed`
    /// (with a `suppressed` event) instead of being attempted.
    pub suppressed: usize,
}

/// Puts recipients leased by a dead process back in the queue. At start every lease belongs
/// to a dead process: one `serve` owns the database.
pub fn release_all_leases(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE recipients SET status = 'queued', lease_until = NULL,
                next_attempt_at = coalesce(next_attempt_at, ?1)
         WHERE status = 'sending'",
        [time::now()],
    )?)
}

/// Extends the leases of recipients the worker still holds (claimed, waiting or under way)
/// to `lease` from now, so that nobody claims them again while the process lives.
pub fn renew_leases(
    conn: &Connection,
    rcpt_ids: &[i64],
    lease: Duration,
) -> Result<(), StoreError> {
    let until = lease_end(time::now(), lease);
    let mut stmt = conn.prepare_cached(
        "UPDATE recipients SET lease_until = ?2 WHERE id = ?1 AND status = 'sending'",
    )?;
    for id in rcpt_ids {
        stmt.execute(params![id, until])?;
    }
    Ok(())
}

/// Gives claimed recipients that were never attempted back to the queue (shutdown), due
/// at once, so the next start sends them without waiting for their lease.
pub fn release(conn: &Connection, rcpt_ids: &[i64]) -> Result<usize, StoreError> {
    let now = time::now();
    let mut stmt = conn.prepare_cached(
        "UPDATE recipients SET status = 'queued', lease_until = NULL,
                next_attempt_at = min(coalesce(next_attempt_at, ?2), ?2), updated_at = ?2
         WHERE id = ?1 AND status = 'sending' RETURNING email_id",
    )?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for id in rcpt_ids {
        let email_id: Option<String> = stmt.query_row(params![id, now], |r| r.get(0)).optional()?;
        touched.extend(email_id);
    }
    for email_id in &touched {
        refresh_status(conn, email_id)?;
    }
    Ok(touched.len())
}

/// The recipients due now, then those whose lease expired. The due condition is written
/// exactly as the `recipients_due` index's (see migration 4 in schema.sql): SQLite uses a
/// partial index only for a condition that matches it.
const CLAIM_DUE: &str = "SELECT r.id, r.email_id, r.mode, r.address, r.domain, r.attempts, r.status,
                EXISTS (SELECT 1 FROM recipient_copies c WHERE c.recipient_id = r.id),
                r.address_lower, e.type,
                NOT EXISTS (SELECT 1 FROM recipients o WHERE o.email_id = r.email_id AND o.id != r.id)
         FROM recipients r JOIN emails e ON e.id = r.email_id
         WHERE (r.status = 'queued' OR r.status = 'deferred' OR r.status = 'scheduled')
               AND r.next_attempt_at <= ?1
         UNION ALL
         SELECT r.id, r.email_id, r.mode, r.address, r.domain, r.attempts, r.status,
                EXISTS (SELECT 1 FROM recipient_copies c WHERE c.recipient_id = r.id),
                r.address_lower, e.type,
                NOT EXISTS (SELECT 1 FROM recipients o WHERE o.email_id = r.email_id AND o.id != r.id)
         FROM recipients r JOIN emails e ON e.id = r.email_id
         WHERE r.status = 'sending' AND r.lease_until <= ?1
         LIMIT ?2";

/// Claims up to `limit` due recipients: scheduled emails whose time has come (recording
/// their `queued` event), queued and deferred ones whose retry time has come, and sending
/// ones whose lease expired. A recipient put on the suppression list while it waited is
/// marked `suppressed` here and never attempted.
pub fn claim_due(conn: &Connection, limit: usize, lease: Duration) -> Result<Claim, StoreError> {
    let now = time::now();
    let lease_until = lease_end(now, lease);
    let mut select = conn.prepare_cached(CLAIM_DUE)?;
    struct Row {
        claimed: Claimed,
        old_status: String,
        address_lower: String,
        marketing: bool,
    }
    let rows: Vec<Row> = select
        .query_map(params![now, limit as i64], |r| {
            let mode: String = r.get(2)?;
            Ok(Row {
                claimed: Claimed {
                    rcpt_id: r.get(0)?,
                    email_id: r.get(1)?,
                    mode: Mode::parse(&mode).unwrap_or(Mode::Test),
                    address: r.get(3)?,
                    domain: r.get(4)?,
                    attempts: r.get(5)?,
                    own_copy: r.get(7)?,
                    alone: r.get(10)?,
                },
                old_status: r.get(6)?,
                address_lower: r.get(8)?,
                marketing: r.get::<_, String>(9)? == "marketing",
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut lease = conn.prepare_cached(
        "UPDATE recipients SET status = 'sending', lease_until = ?2, updated_at = ?3 WHERE id = ?1",
    )?;
    let mut suppress = conn.prepare_cached(
        "UPDATE recipients SET status = 'suppressed', lease_until = NULL, next_attempt_at = NULL,
                updated_at = ?2
         WHERE id = ?1",
    )?;
    let mut released: BTreeMap<String, Mode> = BTreeMap::new();
    // Emails whose stored status must change now: scheduled ones (they leave `scheduled`,
    // which cancel relies on) and those with a suppressed recipient. Queued and deferred
    // recipients going out leave the email row alone: it holds the message and its bodies,
    // and SQLite rewrites a whole row on update, so the stored status is refreshed when
    // the outcome is recorded (the API derives the live status from the recipients).
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut claim = Claim::default();
    for row in rows {
        let c = &row.claimed;
        let blocked =
            suppressions::blocking_reason(conn, c.mode, &row.address_lower, row.marketing)?;
        if let Some(reason) = blocked {
            suppress.execute(params![c.rcpt_id, now])?;
            let detail = format!(
                "The address was added to the suppression list ({}) before it was sent.",
                reason.as_str()
            );
            events::record(
                conn,
                c.mode,
                &NewEvent::email(events::email::SUPPRESSED, &c.email_id)
                    .recipient(&c.address)
                    .detail(&detail),
            )?;
            claim.suppressed += 1;
            follow_recipient(conn, c, "suppressed", &mut touched)?;
            continue;
        }
        lease.execute(params![c.rcpt_id, lease_until, now])?;
        if row.old_status == "scheduled" {
            follow_recipient(conn, c, "sending", &mut touched)?;
            released.insert(c.email_id.clone(), c.mode);
        }
        claim.claimed.push(row.claimed);
    }
    for (email_id, mode) in &released {
        events::record(
            conn,
            *mode,
            &NewEvent::email(events::email::QUEUED, email_id),
        )?;
    }
    for email_id in &touched {
        refresh_status(conn, email_id)?;
    }
    Ok(claim)
}

/// Keeps the stored status of `c`'s email up with `c`, which now has `status`: set at once
/// when `c` is the email's only recipient (the email's status is then its own), otherwise
/// the email goes into `recount`, whose emails the caller recounts once at the end.
fn follow_recipient(
    conn: &Connection,
    c: &Claimed,
    status: &str,
    recount: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    if c.alone {
        set_status_of_single(conn, &c.email_id, status)?;
    } else {
        recount.insert(c.email_id.clone());
    }
    Ok(())
}

/// The earliest due time and lease end; the due condition is the index's, as in
/// [`CLAIM_DUE`].
const NEXT_DUE: &str = "SELECT min(t) FROM (
        SELECT min(next_attempt_at) AS t FROM recipients
         WHERE status = 'queued' OR status = 'deferred' OR status = 'scheduled'
        UNION ALL
        SELECT min(lease_until) FROM recipients WHERE status = 'sending')";

/// Milliseconds until the next recipient becomes due (or its lease expires), if any waits.
/// Due times are whole seconds: one due at second `t` is claimable from the start of `t`.
pub fn next_due_in_ms(conn: &Connection) -> Result<Option<i64>, StoreError> {
    // Cached: the worker asks after every claim that found nothing.
    let next: Option<i64> = conn
        .prepare_cached(NEXT_DUE)?
        .query_row([], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(next.map(|t| t * 1000 - time::now_ms()))
}

/// A message to send: its MIME bytes (as built at accept, so the `Message-ID` is the same
/// on every attempt) and its envelope sender.
#[derive(Debug)]
pub struct Message {
    pub raw: Vec<u8>,
    pub envelope_from: String,
}

/// Where a claimed recipient's message comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageSource {
    /// The email's message (`emails.raw`).
    Email(String),
    /// The recipient's own copy (`recipient_copies`).
    Recipient(i64),
}

impl MessageSource {
    pub fn of(c: &Claimed) -> MessageSource {
        if c.own_copy {
            MessageSource::Recipient(c.rcpt_id)
        } else {
            MessageSource::Email(c.email_id.clone())
        }
    }
}

/// Loads the messages of `sources` in a few queries (one per source here, on one
/// connection, with cached statements). Missing ones are left out.
pub fn load_messages(
    conn: &Connection,
    sources: &[MessageSource],
) -> Result<HashMap<MessageSource, Arc<Message>>, StoreError> {
    let mut by_email = conn.prepare_cached(
        "SELECT c.raw, e.envelope_from
         FROM emails e LEFT JOIN email_contents c ON c.email_id = e.id WHERE e.id = ?1",
    )?;
    let mut by_rcpt = conn.prepare_cached(
        "SELECT coalesce(rc.raw, c.raw), e.envelope_from
         FROM recipients r JOIN emails e ON e.id = r.email_id
         LEFT JOIN recipient_copies rc ON rc.recipient_id = r.id
         LEFT JOIN email_contents c ON c.email_id = e.id
         WHERE r.id = ?1",
    )?;
    let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Message> {
        Ok(Message {
            raw: r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
            envelope_from: r.get(1)?,
        })
    };
    let mut out = HashMap::with_capacity(sources.len());
    for source in sources {
        let message = match source {
            MessageSource::Email(id) => by_email.query_row([id], read).optional()?,
            MessageSource::Recipient(id) => by_rcpt.query_row([id], read).optional()?,
        };
        if let Some(message) = message {
            out.insert(source.clone(), Arc::new(message));
        }
    }
    Ok(out)
}

/// What one attempt for one recipient came to.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// Accepted by the recipient's server (direct) or captured (test mode).
    Delivered(String),
    /// Accepted by the relay.
    Sent(String),
    /// A temporary failure: retried on the schedule, or `failed` after the last retry.
    Deferred(String),
    /// A permanent refusal (5xx): the recipient ends `bounced`.
    Bounced(Bounce),
    /// Delivered, then a complaint came back (test mode's complained@ address).
    Complained(String),
}

/// A permanent refusal and what it says about the recipient.
#[derive(Debug, Clone)]
pub struct Bounce {
    /// The full reply, e.g. `550 5.1.1 no such user`.
    pub reply: String,
    /// The basic reply code.
    pub code: u16,
    /// The enhanced status code (`5.1.1`), when the server sent one.
    pub enhanced: Option<String>,
    /// Hard or soft, and why (mailbox, domain, policy, ...).
    pub class: Classification,
}

impl Bounce {
    /// Classifies a 5xx reply.
    pub fn from_reply(reply: &Reply) -> Bounce {
        Bounce {
            reply: reply.to_string(),
            code: reply.code,
            enhanced: reply
                .enhanced
                .map(|(class, subject, detail)| format!("{class}.{subject}.{detail}")),
            class: bounce::classify(reply),
        }
    }

    /// True when the address itself cannot receive mail: a hard bounce about the mailbox
    /// or its domain. Only those add a `bounce` suppression; a hard refusal for policy or
    /// content says nothing about the address, and a soft one (a full mailbox) may pass.
    pub fn suppresses(&self) -> bool {
        self.class.is_hard()
            && matches!(
                self.class.category,
                BounceCategory::Mailbox | BounceCategory::Domain
            )
    }

    fn data(&self) -> serde_json::Value {
        json!({
            "bounce": {
                "type": self.class.kind.to_string(),
                "category": self.class.category.to_string(),
                "code": self.code,
                "enhanced_code": self.enhanced,
                "suppressed": self.suppresses(),
            }
        })
    }
}

/// An outcome to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub claimed: Claimed,
    pub result: AttemptResult,
    /// For test mode's delayed@ address: the wait before the next attempt, overriding the
    /// schedule.
    pub retry_in: Option<Duration>,
}

/// What an attempt's result makes of its recipient row, and the event that records it.
pub struct Settled<'a> {
    /// The recipient's new status.
    pub status: &'static str,
    /// The answer kept in `last_response` and in the event's `detail`.
    pub detail: &'a str,
    /// When to try again (`deferred`).
    pub next_attempt_at: Option<i64>,
    event: &'static str,
    data: Option<serde_json::Value>,
}

impl Settled<'_> {
    /// The metric label of the outcome (`mailsflux_deliveries_total{outcome}`): the new
    /// status, one of those [`settle`] gives.
    pub fn label(&self) -> &'static str {
        self.status
    }
}

/// What `result`, the outcome of attempt number `attempts` (counting this one), makes of
/// a recipient at `now`: a deferral is retried on `retry_schedule` (or after `retry_in`),
/// and fails after its last entry.
pub fn settle<'a>(
    result: &'a AttemptResult,
    attempts: i64,
    retry_in: Option<Duration>,
    retry_schedule: &[Duration],
    now: i64,
) -> Settled<'a> {
    let settled = |status, detail, next_attempt_at, event, data| Settled {
        status,
        detail,
        next_attempt_at,
        event,
        data,
    };
    match result {
        AttemptResult::Delivered(reply) | AttemptResult::Complained(reply) => {
            settled("delivered", reply, None, events::email::DELIVERED, None)
        }
        AttemptResult::Sent(reply) => settled("sent", reply, None, events::email::SENT, None),
        AttemptResult::Bounced(bounce) => settled(
            "bounced",
            &bounce.reply,
            None,
            events::email::BOUNCED,
            Some(bounce.data()),
        ),
        // Entry k of the schedule is the wait before retry k.
        AttemptResult::Deferred(reply) => match retry_schedule.get((attempts - 1) as usize) {
            Some(wait) => {
                let wait = retry_in.unwrap_or(*wait);
                let at = now + wait.as_secs().max(u64::from(wait.subsec_nanos() > 0)) as i64;
                let data = json!({ "attempt": attempts, "next_attempt_at": time::format(at) });
                settled(
                    "deferred",
                    reply,
                    Some(at),
                    events::email::DELIVERY_DELAYED,
                    Some(data),
                )
            }
            None => settled(
                "failed",
                reply,
                None,
                events::email::FAILED,
                Some(json!({ "attempt": attempts })),
            ),
        },
    }
}

/// Writes what follows from a settled attempt for recipient `address` of `email_id`,
/// besides the recipient row: its event, and for a hard bounce or a complaint the
/// suppression (and the complaint's event).
pub fn record_consequences(
    conn: &Connection,
    mode: Mode,
    email_id: &str,
    address: &str,
    result: &AttemptResult,
    settled: Settled<'_>,
) -> Result<(), StoreError> {
    let events: Vec<(Mode, NewEvent<'_>)> = consequent_events(email_id, address, result, &settled)
        .into_iter()
        .map(|e| (mode, e))
        .collect();
    events::record_all(conn, &events)?;
    add_consequent_suppression(conn, mode, email_id, address, result, &settled)
}

/// The events an outcome records, in order: its own, and a complaint's after it.
pub fn consequent_events<'a>(
    email_id: &'a str,
    address: &'a str,
    result: &AttemptResult,
    settled: &Settled<'a>,
) -> Vec<NewEvent<'a>> {
    let mut event = NewEvent::email(settled.event, email_id)
        .recipient(address)
        .detail(settled.detail);
    if let Some(data) = &settled.data {
        event = event.data(data.clone());
    }
    let mut events = vec![event];
    if let AttemptResult::Complained(_) = result {
        events.push(NewEvent::email(events::email::COMPLAINED, email_id).recipient(address));
    }
    events
}

/// Whether recording `result` adds the address to the suppression list (a hard bounce
/// about the mailbox, a complaint): what is stored after it must see that.
pub fn adds_suppression(result: &AttemptResult) -> bool {
    match result {
        AttemptResult::Bounced(bounce) => bounce.suppresses(),
        AttemptResult::Complained(_) => true,
        _ => false,
    }
}

/// Adds the suppression of a hard bounce or a complaint (see [`adds_suppression`]),
/// after the outcome's events.
pub fn add_consequent_suppression(
    conn: &Connection,
    mode: Mode,
    email_id: &str,
    address: &str,
    result: &AttemptResult,
    settled: &Settled<'_>,
) -> Result<(), StoreError> {
    if !adds_suppression(result) {
        return Ok(());
    }
    let (reason, note) = match result {
        AttemptResult::Complained(_) => (Reason::Complaint, None),
        _ => (Reason::Bounce, Some(settled.detail)),
    };
    suppressions::add(conn, mode, address, reason, Some(email_id), note)?;
    Ok(())
}

/// Records outcomes: recipient status, attempts, last response, retry time, events,
/// suppressions, and each email's status. Returns the metric label of each outcome.
pub fn record_outcomes(
    conn: &Connection,
    outcomes: &[Outcome],
    retry_schedule: &[Duration],
) -> Result<Vec<&'static str>, StoreError> {
    let now = time::now();
    let mut update = conn.prepare_cached(
        "UPDATE recipients SET status = ?2, attempts = attempts + 1, last_response = ?3,
                next_attempt_at = ?4, lease_until = NULL, updated_at = ?5
         WHERE id = ?1",
    )?;
    let mut labels = Vec::with_capacity(outcomes.len());
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for o in outcomes {
        let c = &o.claimed;
        let settled = settle(&o.result, c.attempts + 1, o.retry_in, retry_schedule, now);
        update.execute(params![
            c.rcpt_id,
            settled.status,
            settled.detail,
            settled.next_attempt_at,
            now
        ])?;
        follow_recipient(conn, c, settled.status, &mut touched)?;
        labels.push(settled.label());
        record_consequences(conn, c.mode, &c.email_id, &c.address, &o.result, settled)?;
    }
    for email_id in &touched {
        refresh_status(conn, email_id)?;
    }
    Ok(labels)
}

/// Recipients waiting for an attempt (queued or deferred) and the earliest due time among
/// those due by ?1. Read through the due index (its condition written exactly as in the
/// schema, and `scheduled` left out after it), not by scanning every recipient ever sent:
/// `/metrics` runs it on every scrape.
const QUEUE_WAITING: &str =
    "SELECT count(*), min(CASE WHEN next_attempt_at <= ?1 THEN next_attempt_at END)
     FROM recipients
     WHERE (status = 'queued' OR status = 'deferred' OR status = 'scheduled')
       AND status != 'scheduled'";

/// Recipients under an attempt now, counted in the lease index.
const QUEUE_SENDING: &str = "SELECT count(*) FROM recipients WHERE status = 'sending'";

/// Queue depth (queued, deferred and sending recipients) and the age in seconds of the
/// oldest due recipient, for the metrics and the dashboard.
pub fn queue_figures(conn: &Connection) -> Result<(i64, i64), StoreError> {
    let now = time::now();
    let (waiting, oldest): (i64, Option<i64>) = conn
        .prepare_cached(QUEUE_WAITING)?
        .query_row([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let sending: i64 = conn
        .prepare_cached(QUEUE_SENDING)?
        .query_row([], |r| r.get(0))?;
    Ok((waiting + sending, oldest.map(|t| now - t).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use crate::store::Db;

    fn opcodes(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Migration 4: writing a recipient tests the due index's condition without a
    /// temporary B-tree, and the queue's queries (claim, next due, the metrics' figures)
    /// use the partial indexes instead of scanning every recipient.
    #[test]
    fn the_due_index_is_cheap_to_keep_and_still_used() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let conn = db.read_blocking().unwrap();
        for write in [
            "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind, status,
                                     next_attempt_at, updated_at)
             VALUES ('msg_1', 'live', 'a@b.c', 'a@b.c', 'b.c', 'to', 'queued', 0, 0)",
            "UPDATE recipients SET status = 'sending', lease_until = 1 WHERE id = 1",
        ] {
            let ops = opcodes(&conn, write);
            assert!(
                ops.iter().all(|op| op != "OpenEphemeral"),
                "{write}: {ops:?}"
            );
        }
        for (sql, params, index) in [
            (super::CLAIM_DUE, &[0, 10][..], "recipients_due"),
            (super::NEXT_DUE, &[], "recipients_due"),
            (super::QUEUE_WAITING, &[0], "recipients_due"),
            (super::QUEUE_SENDING, &[], "recipients_leased"),
        ] {
            let plan = crate::store::query_plan(&conn, sql, rusqlite::params_from_iter(params));
            assert!(plan.contains(index), "{sql}: {plan}");
        }
        assert!(super::next_due_in_ms(&conn).unwrap().is_none());
        drop(conn);
        db.close();
    }

    /// The depth counts queued, deferred and sending recipients (not scheduled or settled
    /// ones); the age is that of the oldest recipient due now.
    #[test]
    fn queue_figures_count_what_waits_and_age_what_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let conn = db.read_blocking().unwrap();
        // Recipient rows alone are enough here: no email row behind them.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        let now = crate::store::time::now();
        for (status, next_attempt_at) in [
            ("queued", Some(now - 30)),
            ("deferred", Some(now - 90)),
            ("deferred", Some(now + 600)),
            ("sending", None),
            ("scheduled", Some(now - 300)),
            ("sent", None),
            ("bounced", None),
        ] {
            conn.execute(
                "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind,
                                         status, next_attempt_at, updated_at)
                 VALUES ('msg_1', 'live', 'a@b.c', 'a@b.c', 'b.c', 'to', ?1, ?2, 0)",
                rusqlite::params![status, next_attempt_at],
            )
            .unwrap();
        }
        let (depth, oldest) = super::queue_figures(&conn).unwrap();
        assert_eq!(depth, 4);
        assert!((90..=92).contains(&oldest), "{oldest}");
        drop(conn);
        db.close();
    }
}

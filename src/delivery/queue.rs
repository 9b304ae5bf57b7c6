//! SQL of the delivery queue: claiming due recipients with a lease, recording outcomes
//! (status, attempts, retry time, events, suppressions) and the figures the metrics show.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::emails::store::refresh_status;
use crate::events::{self, NewEvent};
use crate::keys::Mode;
use crate::store::{StoreError, time};
use crate::suppressions::{self, Reason};

/// How long a claimed recipient stays ours; after that (a crash) it is due again.
pub const LEASE: Duration = Duration::from_secs(300);

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
    /// The recipient has its own copy of the message (marketing and tracked emails), so it
    /// is sent in a transaction of its own.
    pub own_copy: bool,
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

/// Claims up to `limit` due recipients: scheduled emails whose time has come (recording
/// their `queued` event), queued and deferred ones whose retry time has come, and sending
/// ones whose lease expired.
pub fn claim_due(conn: &Connection, limit: usize) -> Result<Vec<Claimed>, StoreError> {
    let now = time::now();
    let lease_until = now + LEASE.as_secs() as i64;
    let mut select = conn.prepare_cached(
        "SELECT id, email_id, mode, address, domain, attempts, status, raw IS NOT NULL
         FROM recipients
         WHERE status IN ('queued', 'deferred', 'scheduled') AND next_attempt_at <= ?1
         UNION ALL
         SELECT id, email_id, mode, address, domain, attempts, status, raw IS NOT NULL
         FROM recipients
         WHERE status = 'sending' AND lease_until <= ?1
         LIMIT ?2",
    )?;
    let rows: Vec<(Claimed, String)> = select
        .query_map(params![now, limit as i64], |r| {
            let mode: String = r.get(2)?;
            Ok((
                Claimed {
                    rcpt_id: r.get(0)?,
                    email_id: r.get(1)?,
                    mode: Mode::parse(&mode).unwrap_or(Mode::Test),
                    address: r.get(3)?,
                    domain: r.get(4)?,
                    attempts: r.get(5)?,
                    own_copy: r.get(7)?,
                },
                r.get::<_, String>(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut lease = conn.prepare_cached(
        "UPDATE recipients SET status = 'sending', lease_until = ?2, updated_at = ?3 WHERE id = ?1",
    )?;
    let mut released: Vec<(String, Mode)> = Vec::new();
    let mut touched: Vec<String> = Vec::new();
    for (c, old_status) in &rows {
        lease.execute(params![c.rcpt_id, lease_until, now])?;
        if old_status == "scheduled" && !released.iter().any(|(id, _)| id == &c.email_id) {
            released.push((c.email_id.clone(), c.mode));
        }
        if !touched.contains(&c.email_id) {
            touched.push(c.email_id.clone());
        }
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
    Ok(rows.into_iter().map(|(c, _)| c).collect())
}

/// Seconds until the next recipient becomes due (or its lease expires), if any waits.
pub fn next_due_in(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let next: Option<i64> = conn
        .query_row(
            "SELECT min(t) FROM (
                SELECT min(next_attempt_at) AS t FROM recipients
                 WHERE status IN ('queued', 'deferred', 'scheduled')
                UNION ALL
                SELECT min(lease_until) FROM recipients WHERE status = 'sending')",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok(next.map(|t| t - time::now()))
}

/// The message of an email: its MIME bytes and envelope sender. With `rcpt_id`, that
/// recipient's own copy when it has one (marketing and tracked emails).
pub fn load_message(
    conn: &Connection,
    email_id: &str,
    rcpt_id: Option<i64>,
) -> Result<Option<(Vec<u8>, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT coalesce((SELECT raw FROM recipients WHERE id = ?2 AND email_id = ?1), e.raw),
                    e.envelope_from
             FROM emails e WHERE e.id = ?1",
            params![email_id, rcpt_id],
            |r| {
                Ok((
                    r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(),
                    r.get(1)?,
                ))
            },
        )
        .optional()?)
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
    /// A permanent refusal; `hard` adds a bounce suppression.
    Bounced { reply: String, hard: bool },
    /// Delivered, then a complaint came back (test mode's complained@ address).
    Complained(String),
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
    let mut touched: Vec<&str> = Vec::new();
    for o in outcomes {
        let c = &o.claimed;
        let attempts = c.attempts + 1;
        let (status, detail, next, event) = match &o.result {
            AttemptResult::Delivered(reply) => ("delivered", reply, None, events::email::DELIVERED),
            AttemptResult::Complained(reply) => {
                ("delivered", reply, None, events::email::DELIVERED)
            }
            AttemptResult::Sent(reply) => ("sent", reply, None, events::email::SENT),
            AttemptResult::Bounced { reply, .. } => {
                ("bounced", reply, None, events::email::BOUNCED)
            }
            AttemptResult::Deferred(reply) => {
                // Entry k of the schedule is the wait before retry k.
                match retry_schedule.get((attempts - 1) as usize) {
                    Some(wait) => {
                        let wait = o.retry_in.unwrap_or(*wait);
                        let at =
                            now + wait.as_secs().max(u64::from(wait.subsec_nanos() > 0)) as i64;
                        ("deferred", reply, Some(at), events::email::DELIVERY_DELAYED)
                    }
                    None => ("failed", reply, None, events::email::FAILED),
                }
            }
        };
        update.execute(params![c.rcpt_id, status, detail, next, now])?;
        events::record(
            conn,
            c.mode,
            &NewEvent::email(event, &c.email_id)
                .recipient(&c.address)
                .detail(detail),
        )?;
        match &o.result {
            AttemptResult::Bounced { hard: true, .. } => {
                suppressions::add(
                    conn,
                    c.mode,
                    &c.address,
                    Reason::Bounce,
                    Some(&c.email_id),
                    Some(detail),
                )?;
            }
            AttemptResult::Complained(_) => {
                events::record(
                    conn,
                    c.mode,
                    &NewEvent::email(events::email::COMPLAINED, &c.email_id).recipient(&c.address),
                )?;
                suppressions::add(
                    conn,
                    c.mode,
                    &c.address,
                    Reason::Complaint,
                    Some(&c.email_id),
                    None,
                )?;
            }
            _ => {}
        }
        labels.push(match status {
            "deferred" => "deferred",
            "failed" => "failed",
            "bounced" => "bounced",
            "sent" => "sent",
            _ => "delivered",
        });
        if !touched.contains(&c.email_id.as_str()) {
            touched.push(&c.email_id);
        }
    }
    for email_id in touched {
        refresh_status(conn, email_id)?;
    }
    Ok(labels)
}

/// Queue depth and the age in seconds of the oldest due recipient, for the metrics.
pub fn queue_figures(conn: &Connection) -> Result<(i64, i64), StoreError> {
    let now = time::now();
    let (depth, oldest): (i64, Option<i64>) = conn.query_row(
        "SELECT count(*), min(CASE WHEN status != 'sending' AND next_attempt_at <= ?1
                                   THEN next_attempt_at END)
         FROM recipients WHERE status IN ('queued', 'deferred', 'sending')",
        [now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((depth, oldest.map(|t| now - t).unwrap_or(0)))
}

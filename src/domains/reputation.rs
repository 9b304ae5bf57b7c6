//! A domain's sending reputation, from this server's own events of the emails sent from it
//! (the From address's domain) in the last 30 days: live emails for a live domain (a
//! test-mode domain counts its test-mode emails, so the formula can be tried out).
//!
//! The formula (also in the README):
//! - `sent`: recipients whose delivery got an answer (events `sent`, `delivered` or
//!   `bounced`, each recipient of each email once); `bounce_rate = bounced / sent`,
//!   `complaint_rate = complained / sent` (0 when nothing was sent).
//! - bounce points (0–40): 40 up to a 2 % bounce rate, falling linearly to 0 at 5 %.
//! - complaint points (0–40): 40 up to 0.1 %, falling linearly to 0 at 0.3 % (the bulk
//!   sender limit Gmail and Yahoo enforce).
//! - authentication points (0–20): DKIM verified 8, SPF verified 6, DMARC verified 6.
//! - `score` = the sum, rounded. `status`: `insufficient_data` below 100 sent; else `poor`
//!   when the complaint rate is at or over 0.3 %, the bounce rate at or over 5 %, or the
//!   score under 60; `good` from 90; `fair` between.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::keys::Mode;
use crate::store::StoreError;

/// The window of the figures.
pub const WINDOW_DAYS: i64 = 30;
/// Fewer sent than this is `insufficient_data`.
pub const MIN_VOLUME: u64 = 100;
/// Healthy bounce rate: under 2 %.
pub const BOUNCE_HEALTHY: f64 = 0.02;
/// Bounce rate that earns no bounce points and makes the status poor.
pub const BOUNCE_LIMIT: f64 = 0.05;
/// Healthy complaint rate: under 0.1 %.
pub const COMPLAINT_HEALTHY: f64 = 0.001;
/// The bulk-sender complaint limit of Gmail and Yahoo: 0.3 %.
pub const COMPLAINT_LIMIT: f64 = 0.003;
/// Score from which the status is good.
pub const GOOD_FROM: u32 = 90;
/// Score under which the status is poor.
pub const POOR_UNDER: u32 = 60;

/// Event counts of a domain's live emails in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub complained: u64,
    pub opened: u64,
}

/// Which authentication records are verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Auth {
    pub dkim: bool,
    pub spf: bool,
    pub dmarc: bool,
}

/// The score and what it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub score: u32,
    pub status: &'static str,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
}

fn rate(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

/// Points falling linearly from `max` at `healthy` to 0 at `limit`.
fn points(rate: f64, healthy: f64, limit: f64, max: f64) -> f64 {
    if rate <= healthy {
        max
    } else if rate >= limit {
        0.0
    } else {
        max * (limit - rate) / (limit - healthy)
    }
}

/// Rounds a rate to 4 decimals for the answer (0.0123 = 1.23 %).
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The formula of the module docs.
pub fn score(c: &Counts, auth: &Auth) -> Score {
    let bounce_rate = rate(c.bounced, c.sent);
    let complaint_rate = rate(c.complained, c.sent);
    let auth_points = [(auth.dkim, 8.0), (auth.spf, 6.0), (auth.dmarc, 6.0)]
        .iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, p)| p)
        .sum::<f64>();
    let total = points(bounce_rate, BOUNCE_HEALTHY, BOUNCE_LIMIT, 40.0)
        + points(complaint_rate, COMPLAINT_HEALTHY, COMPLAINT_LIMIT, 40.0)
        + auth_points;
    let score = total.round().clamp(0.0, 100.0) as u32;
    let status = if c.sent < MIN_VOLUME {
        "insufficient_data"
    } else if complaint_rate >= COMPLAINT_LIMIT || bounce_rate >= BOUNCE_LIMIT || score < POOR_UNDER
    {
        "poor"
    } else if score >= GOOD_FROM {
        "good"
    } else {
        "fair"
    };
    Score {
        score,
        status,
        bounce_rate: round4(bounce_rate),
        complaint_rate: round4(complaint_rate),
    }
}

/// Counts the events of the emails of `mode` from `domain` created since `since` (Unix
/// seconds). Each recipient of each email counts once per kind (a retried delivery is one
/// message). A live domain counts live emails; a test-mode domain its test emails.
pub fn counts(
    conn: &Connection,
    mode: Mode,
    domain: &str,
    since: i64,
) -> Result<Counts, StoreError> {
    // `from_domain` is what the `emails_by_from_domain` index is on (schema.sql, step 8).
    let (sent, delivered, bounced, complained, opened): (i64, i64, i64, i64, i64) = conn
        .prepare_cached(
            "SELECT
                count(DISTINCT CASE WHEN e.type IN ('sent', 'delivered', 'bounced') THEN k END),
                count(DISTINCT CASE WHEN e.type = 'delivered' THEN k END),
                count(DISTINCT CASE WHEN e.type = 'bounced' THEN k END),
                count(DISTINCT CASE WHEN e.type = 'complained' THEN k END),
                count(DISTINCT CASE WHEN e.type = 'opened' THEN k END)
             FROM (SELECT ev.type AS type, ev.email_id || ' ' || coalesce(ev.recipient, '') AS k
                   FROM emails m JOIN events ev ON ev.email_id = m.id
                   WHERE m.mode = ?3
                     AND m.from_domain = ?1
                     AND m.created_at >= ?2
                     AND ev.type IN ('sent', 'delivered', 'bounced', 'complained', 'opened')) e",
        )?
        .query_row(params![domain, since, mode.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    Ok(Counts {
        sent: sent as u64,
        delivered: delivered as u64,
        bounced: bounced as u64,
        complained: complained as u64,
        opened: opened as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{self, NewEvent};
    use crate::store::ids;

    const ALL: Auth = Auth {
        dkim: true,
        spf: true,
        dmarc: true,
    };

    fn c(sent: u64, bounced: u64, complained: u64) -> Counts {
        Counts {
            sent,
            bounced,
            complained,
            ..Default::default()
        }
    }

    #[test]
    fn formula() {
        // Healthy everything: 100, good.
        assert_eq!(score(&c(1000, 10, 0), &ALL).score, 100);
        assert_eq!(score(&c(1000, 10, 0), &ALL).status, "good");
        // 3.5 % bounces: 20 bounce points, 80, fair.
        let s = score(&c(1000, 35, 0), &ALL);
        assert_eq!((s.score, s.status, s.bounce_rate), (80, "fair", 0.035));
        // 0.2 % complaints: 20 complaint points, 80, fair.
        let s = score(&c(1000, 0, 2), &ALL);
        assert_eq!((s.score, s.status, s.complaint_rate), (80, "fair", 0.002));
        // At the 0.3 % line: poor whatever the score.
        let s = score(&c(1000, 0, 3), &ALL);
        assert_eq!((s.score, s.status), (60, "poor"));
        // 5 % bounces: poor.
        assert_eq!(score(&c(1000, 50, 0), &ALL).status, "poor");
        // No DMARC: 94, good; nothing verified: 80, fair.
        let no_dmarc = Auth {
            dmarc: false,
            ..ALL
        };
        assert_eq!(score(&c(1000, 0, 0), &no_dmarc).score, 94);
        let s = score(&c(1000, 0, 0), &Auth::default());
        assert_eq!((s.score, s.status), (80, "fair"));
        // Too little volume.
        let s = score(&c(99, 50, 0), &ALL);
        assert_eq!(s.status, "insufficient_data");
        assert_eq!(score(&c(0, 0, 0), &ALL).bounce_rate, 0.0);
    }

    #[test]
    fn counts_live_events_of_the_domain_in_the_window() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let email = |mode: &str, from: &str, created_at: i64| {
            let id = ids::new_id("msg");
            conn.execute(
                "INSERT INTO emails (id, mode, type, status, from_header, from_address,
                    from_domain, envelope_from, subject, to_json, cc_json, bcc_json,
                    reply_to_json, tags_json, headers_json, message_id, created_at)
                 VALUES (?1, ?2, 'transactional', 'sent', ?3, ?3, ?4, ?3, 's', '[]', '[]',
                         '[]', '[]', '{}', '[]', 'm', ?5)",
                params![id, mode, from, from.split_once('@').unwrap().1, created_at],
            )
            .unwrap();
            id
        };
        let now = crate::store::time::now();
        let ev = |id: &str, kind: &str, rcpt: &str| {
            let e = NewEvent::email(kind, id).recipient(rcpt);
            events::record(&conn, Mode::Live, &e).unwrap();
        };
        let a = email("live", "news@acme.test", now);
        ev(&a, "queued", "x");
        ev(&a, "delivery_delayed", "r1@x.org");
        ev(&a, "sent", "r1@x.org");
        ev(&a, "sent", "r2@x.org");
        ev(&a, "bounced", "r3@x.org");
        ev(&a, "bounced", "r2@x.org"); // a later DSN for a relayed message
        ev(&a, "complained", "r1@x.org");
        ev(&a, "opened", "r1@x.org");
        ev(&a, "opened", "r1@x.org");
        let b = email("live", "a@acme.test", now - 10);
        ev(&b, "delivered", "r9@y.org");
        // Not counted: another domain, a subdomain, test mode, too old.
        for (mode, from, at) in [
            ("live", "a@other.test", now),
            ("live", "a@sub.acme.test", now),
            ("test", "a@acme.test", now),
            ("live", "a@acme.test", now - 31 * 86_400),
        ] {
            let id = email(mode, from, at);
            ev(&id, "sent", "z@z.org");
        }
        let got = counts(&conn, Mode::Live, "acme.test", now - WINDOW_DAYS * 86_400).unwrap();
        assert_eq!(
            got,
            Counts {
                sent: 4,
                delivered: 1,
                bounced: 2,
                complained: 1,
                opened: 1
            }
        );
        let plan = crate::store::query_plan(
            &conn,
            "SELECT 1 FROM emails m
             WHERE m.mode = 'live' AND m.from_domain = 'acme.test' AND m.created_at >= 0",
            [],
        );
        assert!(plan.contains("emails_by_from_domain"), "{plan}");
    }
}

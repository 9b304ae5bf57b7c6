//! SQL of the public links: what an unsubscribe, an open or a click records.

use rusqlite::{Connection, OptionalExtension, params};

use super::token::Claims;
use crate::audiences::store::mark_unsubscribed;
use crate::events::{self, NewEvent};
use crate::keys::Mode;
use crate::store::StoreError;
use crate::suppressions::{self, Reason};

/// Event types recorded here.
pub const OPENED: &str = "opened";
pub const CLICKED: &str = "clicked";
pub const UNSUBSCRIBED: &str = "unsubscribed";

/// The sender (`From` as shown) of an email that has this recipient, if both exist: a
/// validly signed token still only counts for an email and recipient that are there.
pub fn sender_of(conn: &Connection, mode: Mode, c: &Claims) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT e.from_header FROM recipients r JOIN emails e ON e.id = r.email_id
             WHERE r.mode = ?1 AND r.address_lower = ?2 AND r.email_id = ?3 AND e.mode = ?1
             LIMIT 1",
        )?
        .query_row(
            params![mode.as_str(), c.recipient.to_lowercase(), c.email_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Unsubscribes the token's recipient: an `unsubscribe` suppression (unless the address is
/// already suppressed), every contact with that address in this mode marked unsubscribed,
/// and one `unsubscribed` event on the email. `None` when the email or recipient is unknown.
pub fn unsubscribe(
    conn: &Connection,
    mode: Mode,
    c: &Claims,
) -> Result<Option<String>, StoreError> {
    let Some(sender) = sender_of(conn, mode, c)? else {
        return Ok(None);
    };
    suppressions::add(
        conn,
        mode,
        &c.recipient,
        Reason::Unsubscribe,
        Some(&c.email_id),
        None,
    )?;
    mark_unsubscribed(conn, mode, &c.recipient.to_lowercase())?;
    let already: bool = conn
        .prepare_cached(
            "SELECT 1 FROM events WHERE email_id = ?1 AND type = ?2 AND recipient = ?3 LIMIT 1",
        )?
        .query_row(params![c.email_id, UNSUBSCRIBED, c.recipient], |_| Ok(()))
        .optional()?
        .is_some();
    if !already {
        let mut event = NewEvent::email(UNSUBSCRIBED, &c.email_id).recipient(&c.recipient);
        if let Some(a) = &c.audience_id {
            event = event.data(serde_json::json!({ "audience_id": a }));
        }
        events::record(conn, mode, &event)?;
    }
    Ok(Some(sender))
}

/// Counts an open or a click of the token's recipient; the first of each kind per recipient
/// is an event (`clicked` carries the URL as its detail). False when the email or
/// recipient is unknown.
pub fn engagement(
    conn: &Connection,
    mode: Mode,
    c: &Claims,
    click: bool,
) -> Result<bool, StoreError> {
    if sender_of(conn, mode, c)?.is_none() {
        return Ok(false);
    }
    let lower = c.recipient.to_lowercase();
    let sql = if click {
        "INSERT INTO engagement (email_id, recipient_lower, clicks) VALUES (?1, ?2, 1)
         ON CONFLICT DO UPDATE SET clicks = clicks + 1 RETURNING clicks"
    } else {
        "INSERT INTO engagement (email_id, recipient_lower, opens) VALUES (?1, ?2, 1)
         ON CONFLICT DO UPDATE SET opens = opens + 1 RETURNING opens"
    };
    let count: i64 = conn
        .prepare_cached(sql)?
        .query_row(params![c.email_id, lower], |r| r.get(0))?;
    if count == 1 {
        let kind = if click { CLICKED } else { OPENED };
        let mut event = NewEvent::email(kind, &c.email_id).recipient(&c.recipient);
        if let Some(url) = c.url.as_deref().filter(|_| click) {
            event = event.detail(url);
        }
        events::record(conn, mode, &event)?;
    }
    Ok(true)
}

//! Suppressions: addresses that must not receive mail, and the policy of who is blocked for
//! which type of email. `bounce`, `complaint` and `manual` block every send; `unsubscribe`
//! blocks marketing only. Matching ignores case.

pub mod routes;
pub mod store;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use crate::events::{self, NewEvent};
use crate::keys::Mode;
use crate::store::{StoreError, time};

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Bounce,
    Complaint,
    Unsubscribe,
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Bounce => "bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        match s {
            "bounce" => Some(Reason::Bounce),
            "complaint" => Some(Reason::Complaint),
            "unsubscribe" => Some(Reason::Unsubscribe),
            "manual" => Some(Reason::Manual),
            _ => None,
        }
    }

    /// True when this reason blocks an email of that type.
    pub fn blocks(self, marketing: bool) -> bool {
        match self {
            Reason::Unsubscribe => marketing,
            Reason::Bounce | Reason::Complaint | Reason::Manual => true,
        }
    }
}

/// The reason `email_lower` may not receive an email of this type, if any.
pub fn blocking_reason(
    conn: &Connection,
    mode: Mode,
    email_lower: &str,
    marketing: bool,
) -> Result<Option<Reason>, StoreError> {
    Lookup::new(conn)?.blocking_reason(mode, email_lower, marketing)
}

/// The suppression list's lookup, prepared once for many recipients: storing a batch asks
/// it for each of a thousand, and fetching the statement from the connection's cache
/// (hashing its text on the way out and back in) was over a quarter of each lookup.
pub struct Lookup<'c> {
    stmt: rusqlite::CachedStatement<'c>,
}

impl<'c> Lookup<'c> {
    /// The lookup on `conn`, its statement taken from the connection's cache until dropped.
    pub fn new(conn: &'c Connection) -> Result<Lookup<'c>, StoreError> {
        Ok(Lookup {
            stmt: conn.prepare_cached(
                "SELECT reason FROM suppressions WHERE mode = ?1 AND email_lower = ?2",
            )?,
        })
    }

    /// As [`blocking_reason`]; the list as it is now (each lookup runs anew).
    pub fn blocking_reason(
        &mut self,
        mode: Mode,
        email_lower: &str,
        marketing: bool,
    ) -> Result<Option<Reason>, StoreError> {
        let reason = self
            .stmt
            .query_row(params![mode.as_str(), email_lower], |r| {
                Ok(r.get_ref(0)?.as_str().ok().and_then(Reason::parse))
            })
            .optional()?;
        Ok(reason.flatten().filter(|r| r.blocks(marketing)))
    }
}

/// Adds a suppression unless the address already has one; records `suppression.added` when
/// it does. Returns true when an entry was added.
pub fn add(
    conn: &Connection,
    mode: Mode,
    email: &str,
    reason: Reason,
    email_id: Option<&str>,
    note: Option<&str>,
) -> Result<bool, StoreError> {
    let now = time::now();
    let added = conn
        .prepare_cached(
            "INSERT INTO suppressions (mode, email_lower, email, reason, email_id, note, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (mode, email_lower) DO NOTHING",
        )?
        .execute(params![
            mode.as_str(),
            email.to_lowercase(),
            email,
            reason.as_str(),
            email_id,
            note,
            now
        ])?
        == 1;
    if added {
        let data = json!({
            "email": email,
            "reason": reason.as_str(),
            "email_id": email_id,
            "created_at": time::format(now),
        });
        events::record(
            conn,
            mode,
            &NewEvent {
                kind: events::SUPPRESSION_ADDED,
                email_id: None,
                recipient: Some(email),
                data: Some(data),
                ..Default::default()
            },
        )?;
    }
    Ok(added)
}

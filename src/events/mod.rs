//! The one events table. [`record`] writes an event inside the caller's transaction, next to
//! the change it describes, so an event exists exactly when its change does. The table is
//! also the webhooks' outbox.

use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::Value;

use crate::keys::Mode;
use crate::store::{StoreError, ids, time};

/// Event types of an email (API.md "Emails").
pub mod email {
    pub const QUEUED: &str = "queued";
    pub const SCHEDULED: &str = "scheduled";
    pub const SENT: &str = "sent";
    pub const DELIVERED: &str = "delivered";
    pub const DELIVERY_DELAYED: &str = "delivery_delayed";
    pub const BOUNCED: &str = "bounced";
    pub const COMPLAINED: &str = "complained";
    pub const SUPPRESSED: &str = "suppressed";
    pub const FAILED: &str = "failed";
    pub const CANCELED: &str = "canceled";
}

/// Event types that are not about an email or a mail piece.
pub const SUPPRESSION_ADDED: &str = "suppression.added";
/// A sending domain became verified (data: `{domain_id, name}`).
pub const DOMAIN_VERIFIED: &str = "domain.verified";
/// A sending domain failed verification for good (data: `{domain_id, name}`).
pub const DOMAIN_FAILED: &str = "domain.failed";

/// An event to record.
#[derive(Debug, Clone, Default)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub email_id: Option<&'a str>,
    pub mail_id: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub data: Option<Value>,
}

impl<'a> NewEvent<'a> {
    /// An event of an email, optionally about one recipient.
    pub fn email(kind: &'a str, email_id: &'a str) -> Self {
        NewEvent {
            kind,
            email_id: Some(email_id),
            ..Default::default()
        }
    }

    pub fn recipient(mut self, recipient: &'a str) -> Self {
        self.recipient = Some(recipient);
        self
    }

    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Writes `event` in the caller's transaction and returns its id.
pub fn record(conn: &Connection, mode: Mode, event: &NewEvent<'_>) -> Result<String, StoreError> {
    let id = ids::new_id("evt");
    let mut stmt = conn.prepare_cached(
        "INSERT INTO events (id, mode, type, email_id, mail_id, recipient, detail, data_json, occurred_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    stmt.execute(params![
        id,
        mode.as_str(),
        event.kind,
        event.email_id,
        event.mail_id,
        event.recipient,
        event.detail,
        event.data.as_ref().map(|d| d.to_string()),
        time::now()
    ])?;
    Ok(id)
}

/// An event as the API shows it inside an email.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub recipient: Option<String>,
    pub occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The events of an email, oldest first.
pub fn for_email(conn: &Connection, email_id: &str) -> Result<Vec<EventView>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, recipient, occurred_at, detail FROM events WHERE email_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([email_id], |r| {
            Ok(EventView {
                id: r.get(0)?,
                kind: r.get(1)?,
                recipient: r.get(2)?,
                occurred_at: time::format(r.get(3)?),
                detail: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

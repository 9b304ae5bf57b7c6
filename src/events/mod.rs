//! The one events table. [`record`] writes an event inside the caller's transaction, next to
//! the change it describes, so an event exists exactly when its change does. The table is
//! also the webhooks' outbox.

use std::sync::LazyLock;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, ToSql};
use serde::Serialize;
use serde_json::Value;

use crate::keys::Mode;
use crate::store::rows::RowInsert;
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
    let mut ids = record_all(conn, std::slice::from_ref(&(mode, event.clone())))?;
    Ok(ids.pop().unwrap_or_default())
}

/// The `events` columns [`record_all`] writes.
static EVENT_ROWS: LazyLock<RowInsert> = LazyLock::new(|| {
    RowInsert::new(
        "events",
        &[
            "id",
            "mode",
            "type",
            "email_id",
            "mail_id",
            "recipient",
            "detail",
            "data_json",
            "occurred_at",
        ],
    )
});

/// Writes `events` in the caller's transaction, in their order (their ids sort the same
/// way), and queues each for the webhooks listening: what [`record`] does for one, with
/// multi-row statements (see `store::rows`) for the many a batch of emails records.
/// Returns their ids.
pub fn record_all(
    conn: &Connection,
    events: &[(Mode, NewEvent<'_>)],
) -> Result<Vec<String>, StoreError> {
    let now = time::now();
    let ids: Vec<String> = events.iter().map(|_| ids::new_id("evt")).collect();
    let data: Vec<Option<String>> = events
        .iter()
        .map(|(_, e)| e.data.as_ref().map(Value::to_string))
        .collect();
    let mut values = Vec::with_capacity(events.len() * EVENT_ROWS.columns());
    for (((mode, event), id), data) in events.iter().zip(&ids).zip(&data) {
        values.extend([
            id.to_sql()?,
            mode.as_str().to_sql()?,
            event.kind.to_sql()?,
            event.email_id.to_sql()?,
            event.mail_id.to_sql()?,
            event.recipient.to_sql()?,
            event.detail.to_sql()?,
            data.to_sql()?,
            ToSqlOutput::from(now),
        ]);
    }
    EVENT_ROWS.insert(conn, &values)?;
    // The outbox: queue the events for the endpoints listening, in this same transaction.
    for ((mode, event), id) in events.iter().zip(&ids) {
        let webhook_type = crate::webhooks::webhook_type(event.kind, event.email_id, event.mail_id);
        crate::webhooks::store::enqueue_for_event(conn, *mode, id, &webhook_type)?;
    }
    Ok(ids)
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

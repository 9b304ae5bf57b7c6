//! SQL of the postal capability: storing accepted pieces, the worker's queue (claim, lease,
//! next action), status changes with their tracking nodes and `mail.<status>` events, reading
//! pieces back and listing them.

use std::collections::BTreeMap;

use base64::Engine;
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::Serialize;
use serde_json::{Value, json};

use super::request::{MailDraft, ParcelInput, PrintOptions};
use super::vendor::{Piece, Submitted, TrackingNode};
use super::{MailAddress, MailKind, MailStatus};
use crate::events::{self, NewEvent};
use crate::keys::Mode;
use crate::store::{StoreError, time};

/// A piece to store.
pub struct NewPiece {
    pub id: String,
    pub mode: Mode,
    pub vendor: &'static str,
    pub draft: MailDraft,
    pub api_key_id: String,
    pub created_at: i64,
}

/// What `POST /v1/mail/send` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    pub status: &'static str,
    pub queued_at: String,
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Stores a new piece with its `queued` node and event, due for the worker at its send date
/// (or now).
pub fn insert(conn: &Connection, p: &NewPiece) -> Result<Accepted, StoreError> {
    let d = &p.draft;
    let due_ms = d.send_date.unwrap_or(p.created_at) * 1000;
    conn.prepare_cached(
        "INSERT INTO mail_pieces (id, mode, type, status, vendor, description, to_json, from_json,
            options_json, metadata_json, html, front_html, back_html, pdf, send_date, api_key_id,
            next_action_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?17)",
    )?
    .execute(params![
        p.id,
        p.mode.as_str(),
        d.kind.as_str(),
        p.vendor,
        d.description,
        to_json(&d.to),
        to_json(&d.from),
        to_json(&d.options),
        to_json(&d.metadata),
        d.html,
        d.front_html,
        d.back_html,
        d.pdf,
        d.send_date,
        p.api_key_id,
        due_ms,
        p.created_at,
    ])?;
    let description = match d.send_date {
        Some(t) => format!("Accepted; it goes to the vendor on {}.", time::format(t)),
        None => "Accepted and queued for the vendor.".to_string(),
    };
    add_node(
        conn,
        p.mode,
        &p.id,
        d.kind,
        p.vendor,
        &TrackingNode {
            status: MailStatus::Queued,
            vendor_status: String::new(),
            description,
            location: None,
            occurred_at: p.created_at,
            vendor_event_id: None,
        },
        true,
    )?;
    Ok(Accepted {
        id: p.id.clone(),
        status: MailStatus::Queued.as_str(),
        queued_at: time::format(p.created_at),
    })
}

/// Writes one tracking node, and when `changes_status`, the `mail.<status>` event. Returns
/// false when the vendor's event id was already recorded.
fn add_node(
    conn: &Connection,
    mode: Mode,
    id: &str,
    kind: MailKind,
    vendor: &str,
    node: &TrackingNode,
    changes_status: bool,
) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO mail_tracking
                (mail_id, status, vendor_status, description, location, occurred_at, vendor_event_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            id,
            node.status.as_str(),
            (!node.vendor_status.is_empty()).then_some(&node.vendor_status),
            node.description,
            node.location,
            node.occurred_at,
            node.vendor_event_id,
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    if changes_status {
        events::record(
            conn,
            mode,
            &NewEvent {
                kind: node.status.as_str(),
                mail_id: Some(id),
                detail: Some(&node.description),
                data: Some(json!({
                    "mail_id": id,
                    "type": kind.as_str(),
                    "status": node.status.as_str(),
                    "vendor": vendor,
                    "vendor_status": node.vendor_status,
                    "location": node.location,
                })),
                ..Default::default()
            },
        )?;
    }
    Ok(true)
}

/// When the worker next looks at a piece after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Leave the schedule as it is (a webhook between two polls).
    Keep,
    /// At this time (Unix ms).
    At(i64),
}

/// Applies vendor reports to a piece: a node further along the way changes the status (and
/// records `mail.<status>`); a node at the current step is added to the history; older ones
/// and anything after a final status are ignored. `next_action_at` (ms) is where the worker
/// looks next unless the piece ends. Returns the statuses entered.
pub fn apply_nodes(
    conn: &Connection,
    id: &str,
    nodes: &[TrackingNode],
    next: Next,
) -> Result<Vec<MailStatus>, StoreError> {
    let Some((mode, kind, vendor, mut current)) = state(conn, id)? else {
        return Ok(Vec::new());
    };
    let mut sorted: Vec<&TrackingNode> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.occurred_at);
    let mut entered = Vec::new();
    let mut last_vendor_status = None;
    for node in sorted {
        if current.is_final() {
            break;
        }
        let advances = node.status.rank() > current.rank();
        if !advances && node.status.rank() < current.rank() {
            continue;
        }
        if add_node(conn, mode, id, kind, &vendor, node, advances)? {
            last_vendor_status = Some(node.vendor_status.clone());
            if advances {
                current = node.status;
                entered.push(current);
            }
        }
    }
    let (keep, at) = match next {
        _ if current.is_final() => (false, None),
        Next::Keep => (true, None),
        Next::At(t) => (false, Some(t)),
    };
    conn.prepare_cached(
        "UPDATE mail_pieces SET status = ?2,
            vendor_status = COALESCE(?3, vendor_status),
            next_action_at = CASE WHEN ?4 THEN next_action_at ELSE ?5 END,
            lease_until = CASE WHEN ?4 THEN lease_until ELSE NULL END,
            attempts = 0, last_error = NULL, updated_at = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        current.as_str(),
        last_vendor_status.filter(|s| !s.is_empty()),
        keep,
        at,
        time::now()
    ])?;
    Ok(entered)
}

fn state(
    conn: &Connection,
    id: &str,
) -> Result<Option<(Mode, MailKind, String, MailStatus)>, StoreError> {
    let row: Option<(String, String, String, String)> = conn
        .query_row(
            "SELECT mode, type, vendor, status FROM mail_pieces WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    Ok(row.and_then(|(m, k, v, s)| {
        Some((
            Mode::parse(&m)?,
            MailKind::parse(&k)?,
            v,
            MailStatus::parse(&s)?,
        ))
    }))
}

/// What happened when a submission was recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    Recorded,
    /// The piece was canceled while the vendor call ran: the vendor copy must be canceled.
    CanceledMeanwhile,
}

/// Records a vendor's acceptance of a queued piece (status `submitted`).
pub fn record_submitted(
    conn: &Connection,
    id: &str,
    s: &Submitted,
    next_action_at: i64,
) -> Result<SubmitOutcome, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE mail_pieces SET vendor_id = ?2, vendor_status = ?3, carrier = ?4,
                tracking_number = ?5, expected_delivery_date = ?6, vendor_data_json = ?7,
                updated_at = ?8
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![
            id,
            s.vendor_id,
            s.vendor_status,
            s.carrier,
            s.tracking_number,
            s.expected_delivery_date,
            s.vendor_data.to_string(),
            time::now()
        ])?;
    if changed == 0 {
        conn.execute(
            "UPDATE mail_pieces SET vendor_id = ?2, vendor_data_json = ?3, lease_until = NULL WHERE id = ?1",
            params![id, s.vendor_id, s.vendor_data.to_string()],
        )?;
        return Ok(SubmitOutcome::CanceledMeanwhile);
    }
    apply_nodes(
        conn,
        id,
        &[TrackingNode {
            status: MailStatus::Submitted,
            vendor_status: s.vendor_status.clone(),
            description: "Handed to the vendor for printing and mailing.".into(),
            location: None,
            occurred_at: time::now(),
            vendor_event_id: None,
        }],
        Next::At(next_action_at),
    )?;
    Ok(SubmitOutcome::Recorded)
}

/// Records a failed vendor call: retried at `retry_at` (ms), or the piece `failed` when
/// `retry_at` is `None`.
pub fn record_failure(
    conn: &Connection,
    id: &str,
    error: &str,
    retry_at: Option<i64>,
) -> Result<(), StoreError> {
    match retry_at {
        Some(at) => {
            conn.execute(
                "UPDATE mail_pieces SET attempts = attempts + 1, last_error = ?2,
                    next_action_at = ?3, lease_until = NULL, updated_at = ?4
                 WHERE id = ?1",
                params![id, error, at, time::now()],
            )?;
        }
        None => {
            apply_nodes(
                conn,
                id,
                &[TrackingNode {
                    status: MailStatus::Failed,
                    vendor_status: String::new(),
                    description: error.to_string(),
                    location: None,
                    occurred_at: time::now(),
                    vendor_event_id: None,
                }],
                Next::Keep,
            )?;
            conn.execute(
                "UPDATE mail_pieces SET last_error = ?2 WHERE id = ?1",
                params![id, error],
            )?;
        }
    }
    Ok(())
}

/// Cancels a piece whose status is still `expected`. False when it moved on meanwhile.
pub fn mark_canceled(
    conn: &Connection,
    id: &str,
    expected: MailStatus,
    description: &str,
) -> Result<bool, StoreError> {
    let Some((_, _, _, current)) = state(conn, id)? else {
        return Ok(false);
    };
    if current != expected {
        return Ok(false);
    }
    apply_nodes(
        conn,
        id,
        &[TrackingNode {
            status: MailStatus::Canceled,
            vendor_status: String::new(),
            description: description.to_string(),
            location: None,
            occurred_at: time::now(),
            vendor_event_id: None,
        }],
        Next::Keep,
    )?;
    Ok(true)
}

/// Keeps what a refresh said about the tracking number and delivery date.
pub fn update_tracking_info(
    conn: &Connection,
    id: &str,
    tracking_number: Option<&str>,
    expected_delivery_date: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE mail_pieces SET tracking_number = COALESCE(?2, tracking_number),
            expected_delivery_date = COALESCE(?3, expected_delivery_date)
         WHERE id = ?1",
        params![id, tracking_number, expected_delivery_date],
    )?;
    Ok(())
}

/// The id of the piece a vendor knows as `vendor_id`.
pub fn find_by_vendor_id(
    conn: &Connection,
    vendor: &str,
    vendor_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM mail_pieces WHERE vendor = ?1 AND vendor_id = ?2",
            params![vendor, vendor_id],
            |r| r.get(0),
        )
        .optional()?)
}

const PIECE_COLUMNS: &str = "id, mode, type, status, to_json, from_json, description,
    options_json, html, front_html, back_html, pdf, send_date, metadata_json, vendor_id,
    vendor_data_json, created_at, vendor, attempts";

/// A piece as the worker claims it: what the vendor needs, the vendor's name, and how many
/// vendor calls for it have failed in a row.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub piece: Piece,
    pub vendor: String,
    pub attempts: i64,
}

fn piece_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Claimed>> {
    let mode: String = r.get(1)?;
    let kind: String = r.get(2)?;
    let status: String = r.get(3)?;
    let (Some(mode), Some(kind), Some(status)) = (
        Mode::parse(&mode),
        MailKind::parse(&kind),
        MailStatus::parse(&status),
    ) else {
        return Ok(None);
    };
    let to: MailAddress = serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default();
    let from: MailAddress = serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default();
    let Ok(options) = serde_json::from_str::<PrintOptions>(&r.get::<_, String>(7)?) else {
        return Ok(None);
    };
    Ok(Some(Claimed {
        piece: Piece {
            id: r.get(0)?,
            mode,
            kind,
            status,
            to,
            from,
            description: r.get(6)?,
            options,
            html: r.get(8)?,
            front_html: r.get(9)?,
            back_html: r.get(10)?,
            pdf: r.get(11)?,
            send_date: r.get(12)?,
            metadata: serde_json::from_str(&r.get::<_, String>(13)?).unwrap_or_default(),
            vendor_id: r.get(14)?,
            vendor_data: serde_json::from_str(&r.get::<_, String>(15)?).unwrap_or(Value::Null),
            created_at: r.get(16)?,
        },
        vendor: r.get(17)?,
        attempts: r.get(18)?,
    }))
}

/// One piece with its vendor's name, as vendors see it.
pub fn load_piece(conn: &Connection, id: &str) -> Result<Option<Claimed>, StoreError> {
    let sql = format!("SELECT {PIECE_COLUMNS} FROM mail_pieces WHERE id = ?1");
    Ok(conn
        .query_row(&sql, [id], piece_from_row)
        .optional()?
        .flatten())
}

/// Claims up to `limit` pieces whose next action is due at `now_ms`, leasing them for
/// `lease_ms` so a slow vendor call is not started twice.
pub fn claim_due(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let sql = format!(
        "SELECT {PIECE_COLUMNS} FROM mail_pieces
         WHERE next_action_at IS NOT NULL AND next_action_at <= ?1
           AND (lease_until IS NULL OR lease_until < ?1)
         ORDER BY next_action_at LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let pieces: Vec<Claimed> = stmt
        .query_map(params![now_ms, limit as i64], piece_from_row)?
        .filter_map(|r| r.transpose())
        .collect::<Result<_, _>>()?;
    let mut lease = conn.prepare_cached("UPDATE mail_pieces SET lease_until = ?2 WHERE id = ?1")?;
    for c in &pieces {
        lease.execute(params![c.piece.id, now_ms + lease_ms])?;
    }
    Ok(pieces)
}

/// Milliseconds until the next piece is due (`None`: nothing scheduled).
pub fn next_due_in_ms(conn: &Connection, now_ms: i64) -> Result<Option<i64>, StoreError> {
    // A leased piece is not due before its lease ends, whatever its next action says.
    let next: Option<i64> = conn
        .prepare_cached(
            "SELECT min(max(next_action_at, COALESCE(lease_until + 1, 0))) FROM mail_pieces
             WHERE next_action_at IS NOT NULL",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(next.map(|t| (t - now_ms).max(0)))
}

/// At start, every lease belongs to a dead process (one serve per database file).
pub fn release_all_leases(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE mail_pieces SET lease_until = NULL WHERE lease_until IS NOT NULL",
        [],
    )?)
}

/// An address as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AddressView {
    pub name: Option<String>,
    pub company: Option<String>,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub state: Option<String>,
    pub postal_code: String,
    pub country: String,
}

impl From<MailAddress> for AddressView {
    fn from(a: MailAddress) -> Self {
        AddressView {
            name: a.name,
            company: a.company,
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            state: a.state,
            postal_code: a.postal_code,
            country: a.country,
        }
    }
}

/// One tracking node as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrackingView {
    pub status: String,
    pub vendor_status: Option<String>,
    pub description: String,
    pub location: Option<String>,
    pub occurred_at: String,
}

/// What the vendor prints (`?include=content`): the rendered HTML or the PDF, and the
/// envelope lines.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContentView {
    pub html: Option<String>,
    pub front_html: Option<String>,
    pub back_html: Option<String>,
    /// Base64.
    pub pdf: Option<String>,
    #[schema(value_type = Object)]
    pub envelope: BTreeMap<&'static str, Vec<String>>,
}

/// The mail object of `GET /v1/mail/:id` and of list items.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MailView {
    pub id: String,
    pub object: &'static str,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub description: Option<String>,
    pub to: AddressView,
    pub from: AddressView,
    pub vendor: String,
    pub vendor_id: Option<String>,
    pub vendor_status: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub expected_delivery_date: Option<String>,
    pub size: Option<String>,
    pub color: Option<bool>,
    pub double_sided: Option<bool>,
    pub mail_class: &'static str,
    pub parcel: Option<ParcelInput>,
    pub send_date: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Vec<TrackingView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentView>,
}

const VIEW_COLUMNS: &str = "id, type, status, description, to_json, from_json, vendor, vendor_id,
    vendor_status, carrier, tracking_number, expected_delivery_date, options_json, send_date,
    created_at, updated_at, metadata_json";

fn view_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailView> {
    let to: MailAddress = serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or_default();
    let from: MailAddress = serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default();
    let options: Option<PrintOptions> = serde_json::from_str(&r.get::<_, String>(12)?).ok();
    Ok(MailView {
        id: r.get(0)?,
        object: "mail",
        kind: r.get(1)?,
        status: r.get(2)?,
        description: r.get(3)?,
        to: to.into(),
        from: from.into(),
        vendor: r.get(6)?,
        vendor_id: r.get(7)?,
        vendor_status: r.get(8)?,
        carrier: r.get(9)?,
        tracking_number: r.get(10)?,
        expected_delivery_date: r.get(11)?,
        size: options.as_ref().and_then(|o| o.size.clone()),
        color: options.as_ref().and_then(|o| o.color),
        double_sided: options.as_ref().and_then(|o| o.double_sided),
        mail_class: options
            .as_ref()
            .map(|o| o.mail_class.as_str())
            .unwrap_or("first_class"),
        parcel: options.as_ref().and_then(|o| o.parcel),
        send_date: r.get::<_, Option<i64>>(13)?.map(time::format),
        created_at: time::format(r.get(14)?),
        updated_at: time::format(r.get(15)?),
        metadata: serde_json::from_str(&r.get::<_, String>(16)?).unwrap_or_default(),
        tracking: None,
        content: None,
    })
}

/// One piece of `mode` with its tracking history (oldest first), and what it prints when
/// asked.
pub fn get(
    conn: &Connection,
    mode: Mode,
    id: &str,
    include_content: bool,
) -> Result<Option<MailView>, StoreError> {
    let sql = format!("SELECT {VIEW_COLUMNS} FROM mail_pieces WHERE id = ?1 AND mode = ?2");
    let Some(mut view) = conn
        .query_row(&sql, params![id, mode.as_str()], view_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT status, vendor_status, description, location, occurred_at FROM mail_tracking
         WHERE mail_id = ?1 ORDER BY id",
    )?;
    let tracking = stmt
        .query_map([id], |r| {
            Ok(TrackingView {
                status: r.get(0)?,
                vendor_status: r.get(1)?,
                description: r.get(2)?,
                location: r.get(3)?,
                occurred_at: time::format(r.get(4)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    view.tracking = Some(tracking);
    if include_content {
        let lines = |json: String| {
            serde_json::from_str::<MailAddress>(&json)
                .map(|a| a.formatted)
                .unwrap_or_default()
        };
        let content = conn.query_row(
            "SELECT html, front_html, back_html, pdf, to_json, from_json FROM mail_pieces WHERE id = ?1",
            [id],
            |r| {
                Ok(ContentView {
                    html: r.get(0)?,
                    front_html: r.get(1)?,
                    back_html: r.get(2)?,
                    pdf: r
                        .get::<_, Option<Vec<u8>>>(3)?
                        .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
                    envelope: BTreeMap::from([
                        ("to", lines(r.get(4)?)),
                        ("from", lines(r.get(5)?)),
                    ]),
                })
            },
        )?;
        view.content = Some(content);
    }
    Ok(Some(view))
}

/// Filters of `GET /v1/mail`, checked.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<MailStatus>,
    pub kind: Option<MailKind>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    pub before_id: Option<String>,
    pub limit: usize,
}

/// A page of pieces, newest first; `limit + 1` rows so the caller knows `has_more`.
pub fn list(conn: &Connection, mode: Mode, f: &ListFilter) -> Result<Vec<MailView>, StoreError> {
    let mut sql = format!("SELECT {VIEW_COLUMNS} FROM mail_pieces WHERE mode = ?");
    let mut args: Vec<Box<dyn ToSql>> = vec![Box::new(mode.as_str())];
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(Box::new(s.as_str()));
    }
    if let Some(k) = f.kind {
        sql.push_str(" AND type = ?");
        args.push(Box::new(k.as_str()));
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
    let rows = stmt
        .query_map(refs.as_slice(), view_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postal::request::SendMailRequest;

    fn node(status: MailStatus, at: i64, event: Option<&str>) -> TrackingNode {
        TrackingNode {
            status,
            vendor_status: status.as_str().into(),
            description: format!("{} happened", status.as_str()),
            location: Some("AUSTIN, TX 78701".into()),
            occurred_at: at,
            vendor_event_id: event.map(str::to_string),
        }
    }

    fn setup() -> (Connection, String) {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let request: SendMailRequest = serde_json::from_value(json!({
            "type": "letter",
            "to": {"name": "Ana", "line1": "1 Main St", "city": "Springfield", "state": "IL", "postal_code": "62704", "country": "US"},
            "from": {"company": "Acme", "line1": "1 Congress Ave", "city": "Austin", "state": "TX", "postal_code": "78701", "country": "US"},
            "html": "<p>hi</p>"
        }))
        .unwrap();
        let piece = NewPiece {
            id: crate::store::ids::new_id("mail"),
            mode: Mode::Test,
            vendor: "simulator",
            draft: request.into_draft(Mode::Test).unwrap(),
            api_key_id: "key_1".into(),
            created_at: 1_700_000_000,
        };
        insert(&conn, &piece).unwrap();
        (conn, piece.id)
    }

    fn history(conn: &Connection, id: &str) -> Vec<String> {
        get(conn, Mode::Test, id, false)
            .unwrap()
            .unwrap()
            .tracking
            .unwrap()
            .into_iter()
            .map(|t| t.status)
            .collect()
    }

    fn event_types(conn: &Connection, id: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT type FROM events WHERE mail_id = ?1 ORDER BY id")
            .unwrap();
        stmt.query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn statuses_only_move_forward_and_repeats_count_once() {
        let (conn, id) = setup();
        use MailStatus::*;
        // Out of order, with a repeat and a stale report.
        let entered = apply_nodes(
            &conn,
            &id,
            &[
                node(InLocalArea, 30, Some("e3")),
                node(InTransit, 20, Some("e2")),
                node(InTransit, 20, Some("e2")),
                node(Submitted, 10, None),
            ],
            Next::At(5),
        )
        .unwrap();
        assert_eq!(entered, [Submitted, InTransit, InLocalArea]);
        // The same vendor event again, and an older status: nothing new.
        let entered = apply_nodes(
            &conn,
            &id,
            &[node(InTransit, 20, Some("e2")), node(Printing, 40, None)],
            Next::Keep,
        )
        .unwrap();
        assert!(entered.is_empty());
        // A further scan at the same step is history, not a status change.
        apply_nodes(&conn, &id, &[node(InLocalArea, 45, Some("e4"))], Next::Keep).unwrap();
        apply_nodes(&conn, &id, &[node(Delivered, 50, Some("e5"))], Next::Keep).unwrap();
        // Nothing after a final status.
        let entered =
            apply_nodes(&conn, &id, &[node(ReturnedToSender, 60, None)], Next::Keep).unwrap();
        assert!(entered.is_empty());
        assert_eq!(
            history(&conn, &id),
            [
                "queued",
                "submitted",
                "in_transit",
                "in_local_area",
                "in_local_area",
                "delivered"
            ]
        );
        assert_eq!(
            event_types(&conn, &id),
            [
                "queued",
                "submitted",
                "in_transit",
                "in_local_area",
                "delivered"
            ]
        );
        let next: Option<i64> = conn
            .query_row(
                "SELECT next_action_at FROM mail_pieces WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(next, None, "a final piece leaves the queue");
    }

    #[test]
    fn claims_lease_and_cancel_checks_the_status() {
        let (conn, id) = setup();
        let due = 1_700_000_000 * 1000;
        assert_eq!(claim_due(&conn, due - 1, 10, 1000).unwrap().len(), 0);
        assert_eq!(claim_due(&conn, due, 10, 1000).unwrap().len(), 1);
        assert_eq!(
            claim_due(&conn, due + 1, 10, 1000).unwrap().len(),
            0,
            "leased"
        );
        assert_eq!(claim_due(&conn, due + 1001, 10, 1000).unwrap().len(), 1);
        assert_eq!(release_all_leases(&conn).unwrap(), 1);
        assert!(!mark_canceled(&conn, &id, MailStatus::Submitted, "no").unwrap());
        assert!(mark_canceled(&conn, &id, MailStatus::Queued, "yes").unwrap());
        assert_eq!(claim_due(&conn, i64::MAX, 10, 1000).unwrap().len(), 0);
        let s = Submitted {
            vendor_id: "sim_1".into(),
            ..Default::default()
        };
        assert_eq!(
            record_submitted(&conn, &id, &s, 0).unwrap(),
            SubmitOutcome::CanceledMeanwhile
        );
    }
}

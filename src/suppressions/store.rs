//! SQL of the suppressions API: read, list (filters, pages by row order, newest first) and
//! delete. Adding goes through [`super::add`], which also records `suppression.added`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::Serialize;

use super::Reason;
use crate::keys::Mode;
use crate::store::{StoreError, time};

/// A suppression as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SuppressionView {
    pub email: String,
    pub object: &'static str,
    pub reason: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The row's position, for the cursor; not shown.
    #[serde(skip)]
    pub seq: i64,
}

const COLUMNS: &str = "rowid, email, reason, created_at, email_id, note";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SuppressionView> {
    Ok(SuppressionView {
        seq: r.get(0)?,
        email: r.get(1)?,
        object: "suppression",
        reason: r.get(2)?,
        created_at: time::format(r.get(3)?),
        email_id: r.get(4)?,
        note: r.get(5)?,
    })
}

/// The cursor of a suppressions page: the last row's position, opaque to clients.
pub fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("sup:{seq}"))
}

/// The position in a cursor this server gave out, if it is one.
pub fn decode_cursor(raw: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("sup:")?
        .parse()
        .ok()
}

pub fn get(
    conn: &Connection,
    mode: Mode,
    email_lower: &str,
) -> Result<Option<SuppressionView>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM suppressions WHERE mode = ?1 AND email_lower = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![mode.as_str(), email_lower], from_row)
        .optional()?)
}

/// A page of suppressions, newest first (`limit + 1` rows, for `has_more`).
pub fn list(
    conn: &Connection,
    mode: Mode,
    reason: Option<Reason>,
    email_lower: Option<&str>,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<SuppressionView>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM suppressions WHERE mode = ?");
    let mode = mode.as_str();
    let mut args: Vec<&dyn ToSql> = vec![&mode];
    let reason = reason.map(Reason::as_str);
    if let Some(r) = &reason {
        sql.push_str(" AND reason = ?");
        args.push(r);
    }
    if let Some(e) = &email_lower {
        sql.push_str(" AND email_lower = ?");
        args.push(e);
    }
    if let Some(b) = &before {
        sql.push_str(" AND rowid < ?");
        args.push(b);
    }
    sql.push_str(" ORDER BY rowid DESC LIMIT ?");
    let limit = (limit + 1) as i64;
    args.push(&limit);
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(args.as_slice(), from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Removes the address from the list; true when it was there.
pub fn delete(conn: &Connection, mode: Mode, email_lower: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM suppressions WHERE mode = ?1 AND email_lower = ?2",
        params![mode.as_str(), email_lower],
    )? == 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip() {
        assert_eq!(super::decode_cursor(&super::encode_cursor(42)), Some(42));
        assert_eq!(super::decode_cursor("nope!"), None);
    }
}

//! The dashboard's own read queries: the overview's figures and its chart. Everything else
//! it shows comes from the capabilities' stores (the dashboard only reads).

use rusqlite::{Connection, params};

use crate::keys::Mode;
use crate::store::{StoreError, time};

/// Counts of the overview, over one window.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub sent: i64,
    pub delivered: i64,
    pub bounced: i64,
    pub complained: i64,
}

/// Event counts of `mode` since `since` (Unix seconds).
pub fn counts_since(conn: &Connection, mode: Mode, since: i64) -> Result<Counts, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT type, count(*) FROM events
         WHERE mode = ?1 AND occurred_at >= ?2 AND email_id IS NOT NULL
           AND type IN ('sent', 'delivered', 'bounced', 'complained')
         GROUP BY type",
    )?;
    let mut counts = Counts::default();
    let rows = stmt.query_map(params![mode.as_str(), since], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (kind, n) = row?;
        match kind.as_str() {
            "sent" => counts.sent = n,
            "delivered" => counts.delivered = n,
            "bounced" => counts.bounced = n,
            _ => counts.complained = n,
        }
    }
    Ok(counts)
}

/// One day of the chart.
#[derive(Debug, Clone)]
pub struct Day {
    /// Unix seconds at 00:00 UTC.
    pub start: i64,
    pub delivered: i64,
    pub bounced: i64,
}

/// Delivered (or sent) and bounced per day over the last `days` days, oldest first.
pub fn daily(conn: &Connection, mode: Mode, days: i64) -> Result<Vec<Day>, StoreError> {
    let today = time::now() / 86_400 * 86_400;
    let first = today - (days - 1) * 86_400;
    let mut out: Vec<Day> = (0..days)
        .map(|i| Day {
            start: first + i * 86_400,
            delivered: 0,
            bounced: 0,
        })
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT occurred_at / 86400 * 86400 AS day, type, count(*) FROM events
         WHERE mode = ?1 AND occurred_at >= ?2 AND email_id IS NOT NULL
           AND type IN ('sent', 'delivered', 'bounced')
         GROUP BY day, type",
    )?;
    let rows = stmt.query_map(params![mode.as_str(), first], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (day, kind, n) = row?;
        let i = ((day - first) / 86_400) as usize;
        if let Some(d) = out.get_mut(i) {
            if kind == "bounced" {
                d.bounced += n;
            } else {
                d.delivered += n;
            }
        }
    }
    Ok(out)
}

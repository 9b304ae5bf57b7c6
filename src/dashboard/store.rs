//! The dashboard's own read queries: the overview's figures and its chart. Everything else
//! it shows comes from the capabilities' stores (the dashboard only reads).

use rusqlite::{Connection, params};

use crate::keys::Mode;
use crate::store::{StoreError, ids, time};

/// Counts of the overview, over one window.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub sent: i64,
    pub delivered: i64,
    pub bounced: i64,
    pub complained: i64,
}

/// The overview's counts: events of mode ?1 since ?2 (Unix seconds), whose ids are ?3 or
/// after (`ids::lower_bound`).
const COUNTS_SQL: &str = "SELECT type, count(*) FROM events
     WHERE id >= ?3 AND mode = ?1 AND occurred_at >= ?2 AND email_id IS NOT NULL
       AND type IN ('sent', 'delivered', 'bounced', 'complained')
     GROUP BY type";

/// The chart's days, over the same window as `COUNTS_SQL`.
const DAILY_SQL: &str = "SELECT occurred_at / 86400 * 86400 AS day, type, count(*) FROM events
     WHERE id >= ?3 AND mode = ?1 AND occurred_at >= ?2 AND email_id IS NOT NULL
       AND type IN ('sent', 'delivered', 'bounced')
     GROUP BY day, type";

/// Event counts of `mode` since `since` (Unix seconds). Events are read as a range of ids,
/// which are in time order (see migration 7 in schema.sql); `occurred_at` gives the exact
/// edge.
pub fn counts_since(conn: &Connection, mode: Mode, since: i64) -> Result<Counts, StoreError> {
    let mut stmt = conn.prepare_cached(COUNTS_SQL)?;
    let mut counts = Counts::default();
    let first_id = ids::lower_bound("evt", since);
    let rows = stmt.query_map(params![mode.as_str(), since, first_id], |r| {
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
    let mut stmt = conn.prepare_cached(DAILY_SQL)?;
    let first_id = ids::lower_bound("evt", first);
    let rows = stmt.query_map(params![mode.as_str(), first, first_id], |r| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    /// An event of `mode` stamped `at` (Unix seconds), with an id made at `id_at_ms` (Unix
    /// milliseconds), as `events::record` makes them (the id a moment before the time).
    fn event(conn: &Connection, mode: &str, kind: &str, at: i64, id_at_ms: i64) {
        let id = format!("evt_{}", Ulid::from_parts(id_at_ms as u64, rand_part()));
        conn.execute(
            "INSERT INTO events (id, mode, type, email_id, occurred_at)
             VALUES (?1, ?2, ?3, 'msg_1', ?4)",
            params![id, mode, kind, at],
        )
        .unwrap();
    }

    fn rand_part() -> u128 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        N.fetch_add(1, Ordering::Relaxed) as u128
    }

    #[test]
    fn counts_the_window_read_as_a_range_of_ids() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let now = time::now();
        let since = now - 86_400;
        // In the window, the first one stamped on its first second with an id made in the
        // last millisecond of the second before.
        event(&conn, "live", "delivered", since, since * 1000 - 1);
        event(&conn, "live", "delivered", now, now * 1000);
        event(&conn, "live", "bounced", now - 60, (now - 60) * 1000);
        event(&conn, "live", "sent", since + 1, (since + 1) * 1000);
        // Not counted: just before the window, another mode, a type the overview skips.
        event(
            &conn,
            "live",
            "delivered",
            since - 1,
            (since - 1) * 1000 + 999,
        );
        event(&conn, "test", "delivered", now, now * 1000);
        event(&conn, "live", "opened", now, now * 1000);
        let c = counts_since(&conn, Mode::Live, since).unwrap();
        assert_eq!((c.sent, c.delivered, c.bounced, c.complained), (1, 2, 1, 0));
        // The chart's window starts at midnight of the first day: the same edges there.
        let first = now / 86_400 * 86_400 - 86_400;
        event(&conn, "live", "bounced", first, first * 1000 - 1);
        event(
            &conn,
            "live",
            "bounced",
            first - 1,
            (first - 1) * 1000 + 999,
        );
        let days = daily(&conn, Mode::Live, 2).unwrap();
        let charted: i64 = days.iter().map(|d| d.delivered + d.bounced).sum();
        let expected: i64 = conn
            .query_row(
                "SELECT count(*) FROM events WHERE mode = 'live' AND occurred_at >= ?1
                   AND type IN ('sent', 'delivered', 'bounced')",
                [first],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(charted, expected, "{days:?}");
        assert_eq!(days[0].bounced + days[1].bounced, 2, "{days:?}");
    }

    /// Both window queries read a range of the events' own B-tree, not every event.
    #[test]
    fn window_queries_read_a_range_of_the_primary_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        for sql in [COUNTS_SQL, DAILY_SQL] {
            let plan = crate::store::query_plan(&conn, sql, params!["live", 0, "evt_0"]);
            assert!(
                plan.contains("SEARCH events USING PRIMARY KEY (id>?)"),
                "{plan}"
            );
        }
    }
}

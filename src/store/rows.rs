//! Multi-row INSERTs, for the writer's hot paths (a batch of a thousand emails).
//!
//! One `INSERT ... VALUES (..), (..), ...` of fifty rows is one statement run: its cursors
//! open once, so a table or index whose new keys come after all the others (ids made in
//! order, one mode, one sender) takes each next row on the page the cursor already holds,
//! instead of descending from the root per row; and the per-statement work (binding
//! setup, opening and closing cursors, resetting) is paid once per fifty rows. Rows that
//! do not fill a statement go through the one-row statement, so short writes (a single
//! send) cost what they did.

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, params_from_iter};

use super::StoreError;

/// Rows per multi-row statement: enough to make the per-statement work vanish, few
/// enough that the statement (and its bound values) stays small.
pub const ROWS_PER_STATEMENT: usize = 50;

/// The INSERT statements of one table and column list.
pub struct RowInsert {
    columns: usize,
    one: String,
    many: String,
}

impl RowInsert {
    /// `INSERT INTO table (columns...)`, one row or [`ROWS_PER_STATEMENT`] at a time.
    pub fn new(table: &str, columns: &[&str]) -> RowInsert {
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        let head = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        RowInsert {
            columns: columns.len(),
            one: format!("{head}{row}"),
            many: format!("{head}{}", vec![row; ROWS_PER_STATEMENT].join(", ")),
        }
    }

    /// Columns per row.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Inserts `values`, the rows one after the other (`columns()` values each), in
    /// their order: the rowids they get follow it.
    pub fn insert(&self, conn: &Connection, values: &[ToSqlOutput<'_>]) -> Result<(), StoreError> {
        debug_assert_eq!(values.len() % self.columns, 0, "whole rows");
        let mut full = values.chunks_exact(self.columns * ROWS_PER_STATEMENT);
        if full.len() > 0 {
            let mut stmt = conn.prepare_cached(&self.many)?;
            for chunk in full.by_ref() {
                stmt.execute(params_from_iter(chunk))?;
            }
        }
        let rest = full.remainder();
        if !rest.is_empty() {
            let mut stmt = conn.prepare_cached(&self.one)?;
            for row in rest.chunks_exact(self.columns) {
                stmt.execute(params_from_iter(row))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ToSql;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b INTEGER)")
            .unwrap();
        conn
    }

    #[test]
    fn rows_keep_their_order_across_full_and_partial_statements() {
        let conn = table();
        let insert = RowInsert::new("t", &["a", "b"]);
        let n = ROWS_PER_STATEMENT * 2 + 7;
        let names: Vec<String> = (0..n).map(|i| format!("row {i}")).collect();
        let mut values = Vec::new();
        for (i, name) in names.iter().enumerate() {
            values.push(name.to_sql().unwrap());
            values.push(if i % 3 == 0 {
                ToSqlOutput::from(rusqlite::types::Null)
            } else {
                ToSqlOutput::from(i as i64)
            });
        }
        insert.insert(&conn, &values).unwrap();
        let rows: Vec<(i64, String, Option<i64>)> = conn
            .prepare("SELECT id, a, b FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), n);
        for (i, (id, a, b)) in rows.into_iter().enumerate() {
            assert_eq!(id, i as i64 + 1);
            assert_eq!(a, format!("row {i}"));
            assert_eq!(b, (i % 3 != 0).then_some(i as i64));
        }
    }

    #[test]
    fn a_failing_row_fails_the_insert() {
        let conn = table();
        let insert = RowInsert::new("t", &["a", "b"]);
        let mut values = Vec::new();
        for i in 0..ROWS_PER_STATEMENT {
            values.push(if i == 17 {
                ToSqlOutput::from(rusqlite::types::Null)
            } else {
                ToSqlOutput::from("x")
            });
            values.push(ToSqlOutput::from(1i64));
        }
        assert!(insert.insert(&conn, &values).is_err());
    }
}

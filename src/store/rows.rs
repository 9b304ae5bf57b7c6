//! Multi-row INSERTs, for the writer's hot paths (a batch of a thousand emails).
//!
//! One `INSERT ... VALUES (..), (..), ...` of fifty rows is one statement run: its cursors
//! open once, so a table or index whose new keys come after all the others (ids made in
//! order, one mode, one sender) takes each next row on the page the cursor already holds,
//! instead of descending from the root per row; and the per-statement work (binding
//! setup, opening and closing cursors, resetting) is paid once per fifty rows. What does
//! not fill a statement of fifty goes through statements of ten, then of three, then of
//! one: the few dozen single sends the writer stores together (`store::combine`) get most
//! of the gain too, and one row costs what it always did.
//!
//! On the writer's connection ([`keep_statements`]) the multi-row statements bind their
//! values without copying them. rusqlite binds every text and blob as `SQLITE_TRANSIENT`,
//! so SQLite copies each value into memory of its own before it copies it again into the
//! row: with a thousand values per statement, those copies were an eighth of the writer's
//! time in batch profiles. Bound as `SQLITE_STATIC` SQLite reads them where they are; the
//! bindings are cleared before [`RowInsert::insert`] returns, while the values still live.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ffi, params_from_iter};

use super::StoreError;

/// Rows per multi-row statement: enough to make the per-statement work vanish, few
/// enough that the statement (and its bound values) stays small.
pub const ROWS_PER_STATEMENT: usize = 50;

/// The shorter multi-row statements, for what is left after the statements of
/// [`ROWS_PER_STATEMENT`] rows, largest first. Each length is one more prepared statement
/// per table; these keep the one-row statements to at most two per write.
const SHORTER_STATEMENTS: [usize; 2] = [10, 3];

/// The INSERT statements of one table and column list.
pub struct RowInsert {
    columns: usize,
    one: String,
    /// The multi-row statements with their number of rows, largest first.
    many: Vec<(usize, String)>,
}

impl RowInsert {
    /// `INSERT INTO table (columns...)`, [`ROWS_PER_STATEMENT`] rows at a time, then
    /// fewer (`SHORTER_STATEMENTS`), then one.
    pub fn new(table: &str, columns: &[&str]) -> RowInsert {
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        let into = format!("INTO {table} ({}) VALUES ", columns.join(", "));
        let many = std::iter::once(ROWS_PER_STATEMENT)
            .chain(SHORTER_STATEMENTS)
            .map(|rows| {
                // OR FAIL: with the default ABORT, a statement that writes several rows
                // makes SQLite copy every page it changes into a statement journal, to undo
                // the statement alone if a row fails. A failing row fails the whole write
                // job, which is undone anyway (see schema.sql, step 8).
                let sql = format!(
                    "INSERT OR FAIL {into}{}",
                    vec![row.as_str(); rows].join(", ")
                );
                (rows, sql)
            })
            .collect();
        RowInsert {
            columns: columns.len(),
            one: format!("INSERT {into}{row}"),
            many,
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
        let mut rest = values;
        for (rows, sql) in &self.many {
            let mut full = rest.chunks_exact(self.columns * rows);
            if full.len() > 0 && !insert_kept(conn, sql, &mut full)? {
                let mut stmt = conn.prepare_cached(sql)?;
                for chunk in full.by_ref() {
                    stmt.execute(params_from_iter(chunk))?;
                }
            }
            rest = full.remainder();
        }
        if !rest.is_empty() {
            let mut stmt = conn.prepare_cached(&self.one)?;
            for row in rest.chunks_exact(self.columns) {
                stmt.execute(params_from_iter(row))?;
            }
        }
        Ok(())
    }
}

thread_local! {
    /// The statements kept for one connection on this thread (see [`keep_statements`]).
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// Multi-row statements of one connection, prepared by SQLite's own API.
struct Kept {
    db: *mut ffi::sqlite3,
    statements: HashMap<String, NonNull<ffi::sqlite3_stmt>>,
}

/// Keeps the multi-row statements that `conn` runs on this thread prepared, binding values
/// without copying them, until the returned guard drops. The guard must drop before the
/// connection closes (SQLite refuses to close a connection with statements left), so the
/// writer thread makes it after taking its connection. One connection per thread.
pub fn keep_statements(conn: &Connection) -> KeptStatements {
    // SAFETY: the handle is only compared and used on this thread while `conn` is open
    // (the guard finalizes every statement made with it before the connection closes).
    let db = unsafe { conn.handle() };
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        assert!(
            kept.is_none(),
            "statements are kept for one connection per thread"
        );
        *kept = Some(Kept {
            db,
            statements: HashMap::new(),
        });
    });
    KeptStatements {
        _this_thread: PhantomData,
    }
}

/// Finalizes the kept statements when dropped (see [`keep_statements`]).
pub struct KeptStatements {
    /// The statements belong to the thread that made the guard.
    _this_thread: PhantomData<*const ()>,
}

impl Drop for KeptStatements {
    fn drop(&mut self) {
        if let Some(kept) = KEPT.with(|kept| kept.borrow_mut().take()) {
            for stmt in kept.statements.into_values() {
                // SAFETY: each statement was prepared on this connection, which is still
                // open, and is no longer used.
                unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
            }
        }
    }
}

/// Runs every chunk of `rows` through the kept statement `sql` of `conn`; false (nothing
/// run) when this thread keeps no statements for `conn`.
fn insert_kept(
    conn: &Connection,
    sql: &str,
    rows: &mut std::slice::ChunksExact<'_, ToSqlOutput<'_>>,
) -> Result<bool, StoreError> {
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        let Some(kept) = kept.as_mut() else {
            return Ok(false);
        };
        // SAFETY: only compared with the handle the statements were kept for.
        if kept.db != unsafe { conn.handle() } {
            return Ok(false);
        }
        let stmt = match kept.statements.get(sql) {
            Some(stmt) => *stmt,
            None => {
                let stmt = prepare(kept.db, sql)?;
                kept.statements.insert(sql.to_owned(), stmt);
                stmt
            }
        };
        for chunk in rows.by_ref() {
            // SAFETY: `stmt` belongs to this open connection and this thread, and the
            // chunk outlives the call, which clears the bindings before it returns.
            unsafe { execute_static(kept.db, stmt, chunk)? };
        }
        Ok(true)
    })
}

fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Result<NonNull<ffi::sqlite3_stmt>, StoreError> {
    let mut stmt = std::ptr::null_mut();
    let len = c_int::try_from(sql.len()).expect("statement text under 2 GB");
    // SAFETY: `sql` is valid for `len` bytes; SQLite writes the new statement to `stmt`.
    let rc = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast(),
            len,
            ffi::SQLITE_PREPARE_PERSISTENT as _,
            &mut stmt,
            std::ptr::null_mut(),
        )
    };
    match NonNull::new(stmt) {
        Some(stmt) if rc == ffi::SQLITE_OK => Ok(stmt),
        // SAFETY: the connection is open; finalize accepts NULL.
        _ => Err(unsafe {
            let err = error(db, rc);
            ffi::sqlite3_finalize(stmt);
            err
        }),
    }
}

/// Binds `values` to `stmt` as `SQLITE_STATIC` (no copies), runs it, then resets it and
/// clears the bindings, so nothing points into `values` once this returns.
///
/// # Safety
/// `stmt` must be a live statement of the open connection `db`, used by this thread only.
unsafe fn execute_static(
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
    values: &[ToSqlOutput<'_>],
) -> Result<(), StoreError> {
    let stmt = stmt.as_ptr();
    let mut rc = ffi::SQLITE_OK;
    for (i, value) in values.iter().enumerate() {
        let index = c_int::try_from(i + 1).expect("fewer than 2^31 parameters");
        let value = match value {
            ToSqlOutput::Borrowed(v) => *v,
            ToSqlOutput::Owned(v) => ValueRef::from(v),
            _ => {
                rc = ffi::SQLITE_MISUSE;
                break;
            }
        };
        // SAFETY: every pointer bound stays valid until the bindings are cleared below.
        rc = unsafe {
            match value {
                ValueRef::Null => ffi::sqlite3_bind_null(stmt, index),
                ValueRef::Integer(n) => ffi::sqlite3_bind_int64(stmt, index, n),
                ValueRef::Real(r) => ffi::sqlite3_bind_double(stmt, index, r),
                ValueRef::Text(t) => ffi::sqlite3_bind_text64(
                    stmt,
                    index,
                    if t.is_empty() {
                        c"".as_ptr()
                    } else {
                        t.as_ptr().cast()
                    },
                    t.len() as ffi::sqlite3_uint64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as _,
                ),
                ValueRef::Blob([]) => ffi::sqlite3_bind_zeroblob(stmt, index, 0),
                ValueRef::Blob(b) => ffi::sqlite3_bind_blob64(
                    stmt,
                    index,
                    b.as_ptr().cast(),
                    b.len() as ffi::sqlite3_uint64,
                    ffi::SQLITE_STATIC(),
                ),
            }
        };
        if rc != ffi::SQLITE_OK {
            break;
        }
    }
    // SAFETY: as the function's contract says. After a step, reset returns its error, if
    // any, and readies the statement for the next run.
    unsafe {
        if rc == ffi::SQLITE_OK {
            ffi::sqlite3_step(stmt);
            rc = ffi::sqlite3_reset(stmt);
        }
        let result = if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(error(db, rc))
        };
        ffi::sqlite3_clear_bindings(stmt);
        result
    }
}

/// The error of the last call on `db` that returned `rc`, as rusqlite reports errors.
///
/// # Safety
/// `db` must be an open connection.
unsafe fn error(db: *mut ffi::sqlite3, rc: c_int) -> StoreError {
    // SAFETY: the connection is open; its message lives until the next call on it.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db);
        let message = ffi::sqlite3_errmsg(db);
        let message =
            (!message.is_null()).then(|| CStr::from_ptr(message).to_string_lossy().into_owned());
        (if code == ffi::SQLITE_OK { rc } else { code }, message)
    };
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        ffi::Error::new(code),
        message,
    ))
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
        rows_keep_their_order(&conn);
        let _kept = keep_statements(&conn);
        rows_keep_their_order(&conn);
        assert_eq!(
            kept_statements(),
            Some(3),
            "kept statements ran the chunks of 50, 10 and 3 rows"
        );
    }

    /// How many statements this thread keeps, if it keeps any.
    fn kept_statements() -> Option<usize> {
        KEPT.with(|k| k.borrow().as_ref().map(|k| k.statements.len()))
    }

    #[test]
    fn a_failing_row_fails_the_insert() {
        let conn = table();
        a_failing_row_fails(&conn);
        let _kept = keep_statements(&conn);
        a_failing_row_fails(&conn);
        // The kept statement was reset: it runs again.
        rows_keep_their_order(&conn);
    }

    #[test]
    fn kept_statements_serve_only_their_connection() {
        let kept_for = table();
        let _kept = keep_statements(&kept_for);
        let other = table();
        rows_keep_their_order(&other);
        assert_eq!(kept_statements(), Some(0));
    }

    fn rows_keep_their_order(conn: &Connection) {
        conn.execute("DELETE FROM t", []).unwrap();
        let insert = RowInsert::new("t", &["a", "b"]);
        // Two statements of fifty, one of ten, one of three, then two rows alone.
        let n = ROWS_PER_STATEMENT * 2 + 15;
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
        insert.insert(conn, &values).unwrap();
        let rows: Vec<(i64, String, Option<i64>)> = conn
            .prepare("SELECT id, a, b FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), n);
        for (i, (id, a, b)) in rows.into_iter().enumerate() {
            // The table was emptied, so rowids start again from 1.
            assert_eq!(id, i as i64 + 1);
            assert_eq!(a, format!("row {i}"));
            assert_eq!(b, (i % 3 != 0).then_some(i as i64));
        }
    }

    fn a_failing_row_fails(conn: &Connection) {
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
        let err = insert.insert(conn, &values).unwrap_err().to_string();
        assert!(err.contains("NOT NULL"), "{err}");
    }
}

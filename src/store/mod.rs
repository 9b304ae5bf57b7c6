//! The database: one SQLite file in WAL mode.
//!
//! Reads go through a small pool of connections on blocking threads ([`Db::read`]). Writes go
//! through one writer thread ([`Db::write`]) that takes every job waiting in its queue, runs
//! them in one transaction (each inside its own savepoint, so one failing job does not undo
//! the others), commits once and only then answers each caller. That is group commit: with
//! `synchronous = full` one fsync covers many requests, and an answer always means "on disk"
//! (the fsync is made by a thread of its own while the writer goes on, see `writer`).
//! Jobs that may safely run twice ([`ExpectedWrite::run_repeatable`], such as the write of
//! single sends) share one savepoint instead: a savepoint copies each page its job changes
//! into a journal, a fifth of the writer's work per single send. If one of them fails, the
//! shared savepoint is rolled back and each runs again in its own, so the outcome is the
//! same. A request that will write announces it ([`Db::expect_write`]), and the writer holds
//! its next transaction open up to a couple of milliseconds for such writes, so that
//! concurrent single sends share a commit instead of each rewriting the same pages into the
//! WAL. Many such writes of one kind can go further and become one job
//! ([`combine::Combiner`]): single sends are then written with the multi-row statements of
//! a batch.
//!
//! WAL checkpoints run on their own thread and connection (`checkpoint`), so copying
//! pages back into the database file never holds up the writer.

mod checkpoint;
pub mod combine;
pub mod ids;
pub mod rows;
pub mod time;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations};

use crate::config::{DatabaseConfig, Synchronous};
pub use writer::{ExpectedWrite, Writer, WriterStats, rollback_epoch};

/// The schema, embedded: `schema.sql` at the top of the repository.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// Errors of the storage layer. Routes map them to `503 storage_unavailable` or
/// `500 internal_error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("a database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when the database is busy, locked or out of space: worth a 503, not a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            StoreError::Pool(_) | StoreError::WriterGone => true,
            _ => false,
        }
    }
}

/// Shared handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Db {
    readers: r2d2::Pool<SqliteConnectionManager>,
    writer: Writer,
    path: Arc<PathBuf>,
}

impl Db {
    /// Opens (creating if needed) the database, applies pending migrations and starts the
    /// writer thread.
    pub fn open(config: &DatabaseConfig) -> Result<Db, StoreError> {
        let path = config.path.clone();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Task(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut conn = open_connection(&path, config.synchronous)?;
        enlarge_lookaside(&conn);
        migrate(&mut conn)?;
        // The checkpointer does this connection's checkpoints (see `checkpoint`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Checkpoints copy WAL frames to the file: they need no cache to speak of.
        let checkpoint_conn = open_connection(&path, config.synchronous)?;
        checkpoint_conn.pragma_update(None, "cache_size", -256)?;
        let checkpointer = checkpoint::Checkpointer::start(checkpoint_conn);
        let sync = config.synchronous;
        let manager = SqliteConnectionManager::file(&path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(move |c| {
                configure(c, sync)?;
                // Readers mostly look rows up by key and the OS page cache holds the file:
                // a small cache each keeps 8 of them from adding megabytes to the process.
                c.pragma_update(None, "cache_size", READER_CACHE_KIB)
            });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .min_idle(Some(1))
            .build(manager)?;
        // Under `full` the writer commits without syncing and a thread of its own syncs the
        // WAL before any answer (see `writer::Syncer`).
        let sync_wal = match config.synchronous {
            Synchronous::Full => {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                Some(wal_path(&path))
            }
            Synchronous::Normal => None,
        };
        let writer = Writer::start(conn, checkpointer, writer::GATHER_WINDOW, sync_wal);
        Ok(Db {
            readers,
            writer,
            path: Arc::new(path),
        })
    }

    /// A new database file `test.db` in `dir`, for unit tests.
    #[cfg(test)]
    pub fn open_for_test(dir: &Path) -> Db {
        Db::open(&DatabaseConfig {
            path: dir.join("test.db"),
            synchronous: Synchronous::Normal,
        })
        .expect("opening a test database")
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with a read connection on a blocking thread, all of it on one snapshot of
    /// the database (a read transaction).
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(StoreError::from)?;
            // One snapshot for all of `f`'s statements. Without it each statement read the
            // database as it was then, and a commit between two of them gave an answer that
            // was never true: an email whose recipients had all bounced while their counts
            // (read first) still said "sending".
            let snapshot = Snapshot::begin(&conn)?;
            let result = f(&conn);
            drop(snapshot);
            result
        })
        .await
        .map_err(|e| E::from(StoreError::Task(e.to_string())))?
    }

    /// Runs `f` inside the writer's transaction; returns once the transaction is committed.
    /// An `Err` from `f` undoes only `f`'s own changes.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.writer.run(f).await
    }

    /// The writer's transactions and jobs so far (`/metrics`).
    pub fn writer_stats(&self) -> Arc<WriterStats> {
        self.writer.stats()
    }

    /// Announces a write the caller is about to queue with [`ExpectedWrite::run_repeatable`]
    /// (a single send, while it is prepared): the writer's transaction gathers a moment
    /// longer for it, so concurrent sends share fewer, larger commits. Such a write may run
    /// twice, so it must only read its captures and write to the database; many of them
    /// share one savepoint per transaction instead of one each: the hot path of single sends.
    pub fn expect_write(&self) -> ExpectedWrite {
        self.writer.expect()
    }

    /// Like [`Db::write`], in a transaction of its own: for big jobs, such as a batch of
    /// emails (see `Writer::run_alone`).
    pub async fn write_alone<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.writer.run_alone(f).await
    }

    /// A read connection for synchronous callers (the CLI, blocking workers).
    pub fn read_blocking(
        &self,
    ) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.readers.get()?)
    }

    /// Runs `f` in the writer's transaction from a blocking thread.
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.writer.run_blocking(f)
    }

    /// Stops the writer after the jobs already queued.
    pub fn close(&self) {
        self.writer.stop();
    }
}

/// Runs one statement without parameters (`BEGIN`, `COMMIT`, `SAVEPOINT job`, ...) through
/// the connection's statement cache. `execute_batch` parses its text on every call; these
/// run once or twice per transaction or job, so on busy paths the parse adds up.
pub fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// A read transaction on a connection: every statement run while it lives reads the same
/// snapshot of the database. Dropping it ends the transaction (a rollback: a read has
/// nothing to keep), also when the reader panics, so a pooled connection never goes back
/// with a transaction open.
///
/// `BEGIN` and `ROLLBACK` go through the statement cache: `Connection::transaction` parses
/// them on every read, which was a visible share of a busy server's reads.
pub struct Snapshot<'c> {
    conn: &'c Connection,
}

impl<'c> Snapshot<'c> {
    pub fn begin(conn: &'c Connection) -> Result<Snapshot<'c>, StoreError> {
        execute_cached(conn, "BEGIN")?;
        Ok(Snapshot { conn })
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if let Err(e) = execute_cached(self.conn, "ROLLBACK") {
            tracing::error!(error = %e, "ending a read transaction failed");
        }
    }
}

/// Page cache of each read connection, in KiB as `PRAGMA cache_size` takes it (negative).
const READER_CACHE_KIB: i64 = -1_000;

/// The WAL file SQLite keeps beside the database at `db`: its name with `-wal` appended
/// (byte for byte, so a path that is not UTF-8 names the right file too).
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Every row of a two-column query, for tests that compare a table with what they expect.
#[cfg(test)]
pub(crate) fn pairs<A, B>(conn: &Connection, sql: &str) -> Vec<(A, B)>
where
    A: rusqlite::types::FromSql,
    B: rusqlite::types::FromSql,
{
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Opens a connection with the pragmas every connection uses.
pub fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    configure_library();
    let conn = Connection::open(path)?;
    configure(&conn, sync)?;
    Ok(conn)
}

/// Lookaside slots of the writer's connection, of 1,200 bytes: SQLite makes three
/// quarters of that memory into 1,200-byte slots and the rest into 128-byte ones.
const WRITER_LOOKASIDE_SLOTS: i32 = 1_500;

/// Gives the writer's connection a lookaside allocator big enough for a multi-row INSERT
/// (see `rows`): SQLite copies every bound text into memory of its own, and a statement
/// of fifty emails binds over a thousand of them. The default (1,200 bytes times 40 or
/// 100 slots) is used up by the first rows, and the rest went to malloc and free, an
/// eighth of the writer's time. Here: 1.8 MB, for the one connection.
fn enlarge_lookaside(conn: &Connection) {
    // SAFETY: the handle is this open connection's; SQLITE_DBCONFIG_LOOKASIDE takes a
    // buffer (null: SQLite allocates it), a slot size and a slot count. It returns
    // SQLITE_BUSY and changes nothing while lookaside memory is in use, which only costs
    // the speed-up.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            1_200 as std::ffi::c_int,
            WRITER_LOOKASIDE_SLOTS as std::ffi::c_int,
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(
            rc,
            "the writer's lookaside allocator keeps its default size"
        );
    }
}

/// Process-wide SQLite settings, applied once before the first connection opens.
///
/// Memory statistics off: with them on, every allocation SQLite makes takes a global mutex
/// and updates counters nobody reads here (a tenth of the writer's time in profiles).
fn configure_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is only valid before SQLite initializes; afterwards (a
        // connection opened elsewhere in this process first, as in unit tests) it returns
        // SQLITE_MISUSE and changes nothing, which is fine: the setting is only a speed-up.
        let _ = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
    });
}

fn configure(conn: &Connection, sync: Synchronous) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // SQLite never shrinks the WAL file on its own: once it had grown past the writer's
    // checkpoint limit, the file length kept saying "too large" and the writer checkpointed
    // after every commit (a sixth of its time). Truncated to the limit when the log
    // restarts, the file is longer than the limit only while the log itself is.
    conn.pragma_update(
        None,
        "journal_size_limit",
        checkpoint::WAL_LIMIT_BYTES as i64,
    )?;
    // 2 MB of pages per connection: the B-tree interior pages the hot inserts walk fit, and
    // the rest comes from the OS page cache. The ingest benchmark measured no gain from 8 MB
    // (18.5k vs 19.3k emails/s in batches, within its noise) for 10 MB more resident.
    conn.pragma_update(None, "cache_size", -2_000)?;
    // The writer alone runs a few dozen distinct statements (ingest, delivery, webhooks,
    // the multi-row inserts of `rows`); rusqlite's default of 16 would re-prepare them.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The migration steps of `schema.sql`: the text after each line that starts with
/// `-- migration: N`, up to the next such line.
fn migration_steps() -> Vec<&'static str> {
    let mut steps = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in SCHEMA.split_inclusive('\n') {
        if line.starts_with("-- migration:") {
            if let Some(s) = start {
                steps.push(&SCHEMA[s..offset]);
            }
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    if let Some(s) = start {
        steps.push(&SCHEMA[s..]);
    }
    steps
}

/// The plan SQLite chooses for `sql` with `params`, one step per line: for the tests that
/// check a query reads the index it was written for.
#[cfg(test)]
pub fn query_plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params, |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Brings the schema to the latest version (idempotent).
///
/// Foreign keys are off while the steps run: a step that rebuilds a table drops the old one,
/// which with them on would delete (cascade) or refuse for the rows that point at it. They
/// are checked once all steps ran, and a violation fails the migration.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    let before = version(conn)?;
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrations = Migrations::new(migration_steps().into_iter().map(M::up).collect());
    let migrated = migrations.to_latest(conn);
    let violations = if version(conn)? == before {
        Ok(0)
    } else {
        conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get::<_, i64>(0)
        })
    };
    conn.pragma_update(None, "foreign_keys", if enforced { "ON" } else { "OFF" })?;
    migrated?;
    match violations? {
        0 => Ok(()),
        n => Err(StoreError::Task(format!(
            "the schema migration left {n} rows pointing at rows that do not exist"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read sees the database as it was when it began, whatever commits while it runs:
    /// two statements of one read never disagree.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_keeps_one_snapshot_across_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        db.write(|c| -> Result<(), StoreError> {
            c.execute_batch(
                "CREATE TABLE counters (n INTEGER NOT NULL); INSERT INTO counters VALUES (1);",
            )?;
            Ok(())
        })
        .await
        .unwrap();
        let writer = db.clone();
        let (before, after) = db
            .read(move |c| -> Result<(i64, i64), StoreError> {
                let count =
                    |c: &Connection| c.query_row("SELECT n FROM counters", [], |r| r.get(0));
                let before = count(c)?;
                // Committed on the writer's connection between the two statements.
                writer.write_blocking(|w| -> Result<(), StoreError> {
                    w.execute("UPDATE counters SET n = 2", [])?;
                    Ok(())
                })?;
                Ok((before, count(c)?))
            })
            .await
            .unwrap();
        assert_eq!((before, after), (1, 1));
        let now = db
            .read(|c| -> Result<i64, StoreError> {
                Ok(c.query_row("SELECT n FROM counters", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(now, 2, "the next read sees the commit");
    }

    #[test]
    fn a_snapshot_ends_its_transaction_when_dropped_even_by_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_connection(&dir.path().join("s.db"), Synchronous::Normal).unwrap();
        {
            let _snapshot = Snapshot::begin(&conn).unwrap();
            assert!(!conn.is_autocommit(), "a read transaction is open");
        }
        assert!(conn.is_autocommit());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _snapshot = Snapshot::begin(&conn).unwrap();
            panic!("a reader fails");
        }));
        assert!(panicked.is_err());
        assert!(
            conn.is_autocommit(),
            "the connection goes back to the pool clean"
        );
        // And the cached BEGIN can start the next one.
        let _again = Snapshot::begin(&conn).unwrap();
        assert!(!conn.is_autocommit());
    }

    #[test]
    fn migration_2_moves_bodies_out_of_the_rows_that_change() {
        let mut conn = at_version(1);
        conn.execute_batch(
            "INSERT INTO emails (id, mode, type, status, from_header, from_address, envelope_from,
                subject, to_json, cc_json, bcc_json, reply_to_json, tags_json, headers_json,
                html, text, raw, message_id, created_at)
             VALUES ('msg_1', 'test', 'marketing', 'queued', 'a@x.test', 'a@x.test', 'a@x.test',
                's', '[]', '[]', '[]', '[]', '{}', '[]', '<p>hi</p>', 'hi', x'4142', 'm', 1);
             INSERT INTO recipients (id, email_id, mode, address, address_lower, domain, kind,
                status, updated_at, raw)
             VALUES (7, 'msg_1', 'test', 'b@y.test', 'b@y.test', 'y.test', 'to', 'queued', 1,
                x'4344'),
                    (8, 'msg_1', 'test', 'c@y.test', 'c@y.test', 'y.test', 'to', 'queued', 1,
                NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let content: (String, String, Vec<u8>) = conn
            .query_row(
                "SELECT html, text, raw FROM email_contents WHERE email_id = 'msg_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(content, ("<p>hi</p>".into(), "hi".into(), b"AB".to_vec()));
        let copies: Vec<(i64, Vec<u8>)> =
            pairs(&conn, "SELECT recipient_id, raw FROM recipient_copies");
        assert_eq!(copies, vec![(7, b"CD".to_vec())]);
        let email_columns: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('emails') WHERE name IN ('html', 'text', 'raw')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(email_columns, 0);
    }

    /// An in-memory database, foreign keys on as the server has them, with the first
    /// `version` migration steps applied.
    fn at_version(version: usize) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        Migrations::new(
            migration_steps()[..version]
                .iter()
                .map(|s| M::up(s))
                .collect(),
        )
        .to_latest(&mut conn)
        .unwrap();
        conn
    }

    /// Email `msg_1` of `mode`, with the columns every schema version since 2 has.
    fn add_email(conn: &Connection, mode: &str) {
        conn.execute(
            "INSERT INTO emails (id, mode, type, status, from_header, from_address, envelope_from,
                subject, to_json, cc_json, bcc_json, reply_to_json, tags_json, headers_json,
                message_id, created_at)
             VALUES ('msg_1', ?1, 'transactional', 'queued', 'a@x.test', 'a@x.test',
                'a@x.test', 's', '[]', '[]', '[]', '[]', '{}', '[]', 'm', 1)",
            [mode],
        )
        .unwrap();
    }

    #[test]
    fn migration_3_moves_the_address_index_out_of_the_recipients() {
        let mut conn = at_version(2);
        add_email(&conn, "test");
        conn.execute_batch(
            "INSERT INTO recipients (id, email_id, mode, address, address_lower, domain, kind,
                status, updated_at)
             VALUES (7, 'msg_1', 'test', 'B@y.test', 'b@y.test', 'y.test', 'to', 'queued', 1),
                    (9, 'msg_1', 'test', 'c@y.test', 'c@y.test', 'y.test', 'cc', 'queued', 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let copied: Vec<(String, String, String)> = conn
            .prepare("SELECT mode, address_lower, email_id FROM recipient_addresses")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let row = |a: &str| ("test".to_string(), a.to_string(), "msg_1".to_string());
        assert_eq!(copied, vec![row("b@y.test"), row("c@y.test")]);
        let mark: String = conn
            .query_row(
                "SELECT value FROM settings WHERE key = 'recipients_indexed_to'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(mark, "9");
        let old_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'recipients_by_address'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old_index, 0);
    }

    #[test]
    fn migration_10_makes_the_address_index_its_first_run() {
        let mut conn = at_version(9);
        add_email(&conn, "test");
        conn.execute_batch(
            "INSERT INTO recipient_addresses (mode, address_lower, email_id)
             VALUES ('test', 'b@y.test', 'msg_1'), ('test', 'a@y.test', 'msg_1');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let entries: Vec<(i64, String)> =
            pairs(&conn, "SELECT run, address_lower FROM recipient_addresses");
        assert_eq!(entries, [(1, "a@y.test".into()), (1, "b@y.test".into())]);
        let runs: Vec<(i64, i64)> = pairs(&conn, "SELECT id, entries FROM recipient_address_runs");
        assert_eq!(runs, [(1, 2)]);
        // An empty index makes no run.
        let mut empty = at_version(9);
        migrate(&mut empty).unwrap();
        let count: i64 = empty
            .query_row("SELECT count(*) FROM recipient_address_runs", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(count, 0);
    }

    /// The runs there are when the indexer starts copying in parts are complete ones.
    #[test]
    fn migration_11_keeps_every_run_complete() {
        let mut conn = at_version(10);
        add_email(&conn, "test");
        conn.execute_batch(
            "INSERT INTO recipient_address_runs (id, entries) VALUES (1, 1);
             INSERT INTO recipient_addresses (run, mode, address_lower, email_id)
                 VALUES (1, 'test', 'a@y.test', 'msg_1');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let runs: Vec<(i64, i64)> = pairs(&conn, "SELECT id, filling FROM recipient_address_runs");
        assert_eq!(runs, [(1, 0)]);
    }

    /// Every row of `table` in id order, each rendered column by column, to compare a table
    /// before and after a rebuild.
    fn every_row(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
            .unwrap();
        let columns = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..columns)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The first column of every row `sql` gives.
    fn first_column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The names of the indexes on `table`, sorted.
    fn index_names(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(
            "SELECT name FROM sqlite_master WHERE tbl_name = ?1 AND type = 'index' ORDER BY name",
        )
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn migration_4_rebuilds_the_recipients_and_keeps_every_row() {
        let mut conn = at_version(3);
        add_email(&conn, "live");
        conn.execute_batch(
            "INSERT INTO recipients (id, email_id, mode, address, address_lower, domain, kind,
                status, attempts, last_response, next_attempt_at, lease_until, updated_at,
                contact_id)
             VALUES (7, 'msg_1', 'live', 'B@y.test', 'b@y.test', 'y.test', 'to', 'deferred', 2,
                    '451 later', 50, NULL, 3, 'ct_1'),
                    (9, 'msg_1', 'live', 'c@y.test', 'c@y.test', 'y.test', 'bcc', 'sending', 1,
                    NULL, 40, 99, 4, NULL);
             INSERT INTO recipient_copies (recipient_id, raw) VALUES (7, x'4142');",
        )
        .unwrap();
        let before = every_row(&conn, "recipients");
        migrate(&mut conn).unwrap();
        assert_eq!(every_row(&conn, "recipients"), before);
        let enforced: bool = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert!(enforced, "foreign keys are on again after migrating");
        let copies: i64 = conn
            .query_row("SELECT count(*) FROM recipient_copies", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            copies, 1,
            "the copies pointing at the rebuilt table are kept"
        );
        assert_eq!(
            index_names(&conn, "recipients"),
            [
                "recipients_by_email",
                "recipients_by_email_status",
                "recipients_due",
                "recipients_leased"
            ]
        );
        let bad_kind = conn.execute(
            "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind, status,
                updated_at) VALUES ('msg_1', 'live', 'd@y.test', 'd@y.test', 'y.test', 'from',
                'queued', 5)",
            [],
        );
        assert!(bad_kind.is_err(), "the CHECK on kind still holds");
        let orphan = conn.execute(
            "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind, status,
                updated_at) VALUES ('msg_none', 'live', 'd@y.test', 'd@y.test', 'y.test', 'to',
                'queued', 5)",
            [],
        );
        assert!(orphan.is_err(), "the foreign key to emails still holds");
    }

    /// After migration 5 no index is in descending order, and a newest-first page of any
    /// listing still reads its index backwards: no sort, no temporary B-tree.
    #[test]
    fn migration_5_keeps_lists_newest_first_without_sorting() {
        let mut conn = at_version(4);
        add_email(&conn, "live");
        migrate(&mut conn).unwrap();
        let descending: Vec<String> = first_column(
            &conn,
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%DESC%'",
        );
        assert!(descending.is_empty(), "{descending:?}");
        let listed: String = conn
            .query_row(
                "SELECT id FROM emails WHERE mode = 'live' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(listed, "msg_1");
        for (sql, index) in [
            (
                "SELECT id FROM emails WHERE mode = ?1 AND id < ?2 ORDER BY id DESC LIMIT 3",
                "emails_by_mode",
            ),
            (
                "SELECT id FROM emails WHERE mode = ?1 AND status = ?2 ORDER BY id DESC LIMIT 3",
                "emails_by_status",
            ),
            (
                "SELECT id FROM emails WHERE mode = ?1 AND from_address = ?2 ORDER BY id DESC LIMIT 3",
                "emails_by_from",
            ),
            (
                "SELECT id FROM templates WHERE mode = ?1 AND id < ?2 ORDER BY id DESC LIMIT 3",
                "templates_by_mode",
            ),
            (
                "SELECT id FROM mail_pieces WHERE mode = ?1 AND status = ?2 ORDER BY id DESC LIMIT 3",
                "mail_by_status",
            ),
            (
                "SELECT id FROM webhooks WHERE mode = ?1 ORDER BY id DESC LIMIT 3",
                "webhooks_by_mode",
            ),
            (
                "SELECT id FROM webhook_attempts WHERE webhook_id = ?1 ORDER BY id DESC LIMIT 3",
                "webhook_attempts_by_webhook",
            ),
            (
                "SELECT id FROM audiences WHERE mode = ?1 ORDER BY id DESC LIMIT 3",
                "audiences_by_mode",
            ),
        ] {
            let params = ["live", "x"].into_iter().take(sql.matches('?').count());
            let plan = query_plan(&conn, sql, rusqlite::params_from_iter(params));
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }

    /// Migration 6 rebuilds the events as one B-tree keyed by id and keeps every row and
    /// index; the id stays unique.
    #[test]
    fn migration_6_keys_events_by_id_and_keeps_them() {
        let mut conn = at_version(5);
        conn.execute_batch(
            "INSERT INTO events (id, mode, type, email_id, mail_id, recipient, detail, data_json,
                occurred_at)
             VALUES ('evt_2', 'live', 'delivered', 'msg_1', NULL, 'b@y.test', '250 ok', NULL, 5),
                    ('evt_1', 'test', 'mail.created', NULL, 'mail_1', NULL, NULL, '{\"a\":1}', 4);",
        )
        .unwrap();
        let before = every_row(&conn, "events");
        migrate(&mut conn).unwrap();
        assert_eq!(every_row(&conn, "events"), before);
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
        // (events_by_time is dropped by migration 7.)
        assert_eq!(
            index_names(&conn, "events"),
            ["events_by_email", "events_by_mail"]
        );
        let again = conn.execute(
            "INSERT INTO events (id, mode, type, occurred_at) VALUES ('evt_1', 'live', 'x', 6)",
            [],
        );
        assert!(again.is_err(), "an event id stays unique");
    }

    /// Migration 7 drops the index of events by time and nothing else.
    #[test]
    fn migration_7_drops_the_time_index_of_events() {
        let mut conn = at_version(6);
        assert!(index_names(&conn, "events").contains(&"events_by_time".to_string()));
        conn.execute(
            "INSERT INTO events (id, mode, type, occurred_at) VALUES ('evt_1', 'live', 'x', 6)",
            [],
        )
        .unwrap();
        let before = every_row(&conn, "events");
        migrate(&mut conn).unwrap();
        assert_eq!(every_row(&conn, "events"), before);
        assert_eq!(
            index_names(&conn, "events"),
            ["events_by_email", "events_by_mail"]
        );
    }

    /// Migration 8 fills the From domain column the index is on now, and defers the
    /// foreign keys of `recipients` and `email_contents` to COMMIT, without touching a
    /// row of either.
    #[test]
    fn migration_8_adds_the_from_domain_and_defers_two_foreign_keys() {
        let mut conn = at_version(7);
        conn.execute_batch(
            r#"INSERT INTO emails (id, mode, type, status, from_header, from_address,
                envelope_from, subject, to_json, cc_json, bcc_json, reply_to_json, tags_json,
                headers_json, message_id, created_at)
             VALUES ('msg_1', 'live', 'transactional', 'queued', 'a@x.test', 'a@x.test',
                'a@x.test', 's', '[]', '[]', '[]', '[]', '{}', '[]', 'm', 1),
                    ('msg_2', 'live', 'transactional', 'queued', 'q', '"a@b"@y.test',
                '"a@b"@y.test', 's', '[]', '[]', '[]', '[]', '{}', '[]', 'm', 2);
             INSERT INTO recipients (id, email_id, mode, address, address_lower, domain, kind,
                status, updated_at)
             VALUES (7, 'msg_1', 'live', 'b@z.test', 'b@z.test', 'z.test', 'to', 'queued', 1);
             INSERT INTO email_contents (email_id, raw) VALUES ('msg_1', x'4142');"#,
        )
        .unwrap();
        let recipients = every_row(&conn, "recipients");
        let contents: Vec<Vec<u8>> = first_column(&conn, "SELECT raw FROM email_contents");
        migrate(&mut conn).unwrap();
        let domains: Vec<String> =
            first_column(&conn, "SELECT from_domain FROM emails ORDER BY id");
        assert_eq!(domains, ["x.test", "y.test"]);
        let plan = query_plan(
            &conn,
            "SELECT 1 FROM emails WHERE mode = 'live' AND from_domain = 'x.test' AND created_at >= 0",
            [],
        );
        assert!(plan.contains("emails_by_from_domain"), "{plan}");
        assert_eq!(every_row(&conn, "recipients"), recipients);
        let after: Vec<Vec<u8>> = first_column(&conn, "SELECT raw FROM email_contents");
        assert_eq!(after, contents);
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        // Rows pointing at no email: accepted by the statement, refused by the COMMIT.
        for orphan in [
            "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind,
                status, updated_at)
             VALUES ('msg_9', 'live', 'c@z.test', 'c@z.test', 'z.test', 'to', 'queued', 1)",
            "INSERT INTO email_contents (email_id, raw) VALUES ('msg_9', x'00')",
        ] {
            let tx = conn.transaction().unwrap();
            tx.execute(orphan, []).unwrap();
            let commit = tx.commit().unwrap_err().to_string();
            assert!(commit.contains("FOREIGN KEY"), "{commit}");
        }
        // Deleting an email still deletes its rows at once.
        conn.execute("DELETE FROM emails WHERE id = 'msg_1'", [])
            .unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM recipients) + (SELECT count(*) FROM email_contents)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }

    /// Migration 9 narrows the index by email and status to audience sends' recipients.
    #[test]
    fn migration_9_indexes_only_contacts_by_status() {
        let mut conn = at_version(8);
        migrate(&mut conn).unwrap();
        let sql: Vec<String> = first_column(
            &conn,
            "SELECT sql FROM sqlite_master WHERE name = 'recipients_by_email_status'",
        );
        assert_eq!(sql.len(), 1);
        assert!(
            sql[0].ends_with("WHERE contact_id IS NOT NULL"),
            "{}",
            sql[0]
        );
        let plan = query_plan(
            &conn,
            "SELECT status, count(*) FROM recipients WHERE email_id = 'msg_1' GROUP BY status",
            [],
        );
        assert!(!plan.contains("recipients_by_email_status"), "{plan}");
    }

    #[test]
    fn schema_applies_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = migration_steps();
        assert!(
            steps[0].contains("CREATE TABLE settings"),
            "the header is not a step"
        );
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'emails'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}

//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT of whichever connection pushes the
//! WAL past its threshold: here that is always the writer, and profiles show it spending a
//! sixth of its time copying pages back into the database file while every request waits.
//! So the writer's connection has `wal_autocheckpoint = 0`, and this thread, with its own
//! connection, runs a PASSIVE checkpoint (it never blocks the writer or the readers) shortly
//! after commits, on the other core.
//!
//! The WAL starts again from its beginning only when a write transaction begins with every
//! frame copied back. Under a steady stream of commits the thread never gets there (each
//! commit lands while it copies), so the WAL would only grow, and a checkpoint the writer
//! made at a size limit stalled every request for 20 to 50 ms. So the writer finishes the
//! job itself, between two transactions, right after a pass of this thread: only the frames
//! committed during that pass are left to copy, and the next transaction restarts the WAL
//! ([`Checkpointer::restart_due`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

/// The WAL size past which the writer checkpoints itself whatever the thread did: a bound
/// for when the thread cannot keep up. Also the size the WAL file is cut back to.
pub const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// The WAL length from which the writer restarts it after a pass of the thread. Each of
/// those checkpoints holds the writer while it syncs: 10 to 20 ms under single sends, 50 to
/// 60 ms under batches on the benchmark machine. Restarting later makes them rarer but
/// longer: at 64 MB, batches measured up to 8% faster (within their noise), and single-send
/// p99 went from 16.6–17.7 ms to 19.5–19.8 ms in alternating runs, so it stays at 16 MB.
const RESTART_BYTES: u64 = 16 * 1024 * 1024;

/// Shortest time between two checkpoints: pages written again and again in a burst (the
/// B-tree's inner pages) are copied once per period, not once per commit.
const PERIOD: Duration = Duration::from_millis(200);

/// What the thread's last pass found.
#[derive(Default)]
struct Progress {
    /// Passes finished so far.
    passes: AtomicU64,
    /// Frames in the WAL at the end of the last pass.
    log_frames: AtomicU64,
}

/// Handle kept by the writer: tells the checkpointer that commits happened.
pub struct Checkpointer {
    tx: SyncSender<()>,
    wal_path: PathBuf,
    progress: Arc<Progress>,
    /// The pass after which the writer last restarted the WAL.
    restarted_after: AtomicU64,
    /// [`RESTART_BYTES`] in frames (one page each) of this database.
    restart_frames: u64,
}

impl Checkpointer {
    /// Starts the thread; `conn` is its own connection to the database.
    pub fn start(conn: Connection) -> Checkpointer {
        let wal_path = PathBuf::from(format!("{}-wal", conn.path().unwrap_or_default()));
        let page_size = conn
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .map_or(4096, |size| size.max(512) as u64);
        let (tx, rx) = sync_channel(1);
        let progress = Arc::new(Progress::default());
        let shared = progress.clone();
        thread::Builder::new()
            .name("mailsflux-db-checkpoint".into())
            .spawn(move || run(conn, rx, &shared))
            .expect("spawning the database checkpoint thread");
        Checkpointer {
            tx,
            wal_path,
            progress,
            restarted_after: AtomicU64::new(0),
            restart_frames: RESTART_BYTES / page_size,
        }
    }

    /// Called by the writer after each commit: wakes the thread (without waiting).
    pub fn committed(&self) {
        match self.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// Whether the writer should checkpoint now, between two transactions, so that the
    /// next one restarts the WAL: once per pass of the thread that left a long WAL behind
    /// (then little is left to copy), or whenever the WAL file passed the hard limit.
    pub fn restart_due(&self) -> bool {
        let passes = self.progress.passes.load(Ordering::Acquire);
        let long = self.progress.log_frames.load(Ordering::Acquire) >= self.restart_frames;
        if long && passes != self.restarted_after.load(Ordering::Relaxed) {
            self.restarted_after.store(passes, Ordering::Relaxed);
            return true;
        }
        std::fs::metadata(&self.wal_path)
            .map(|m| m.len() > WAL_LIMIT_BYTES)
            .unwrap_or(false)
    }
}

fn run(conn: Connection, rx: Receiver<()>, progress: &Progress) {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // (busy, frames in the WAL, frames copied back)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(log) => {
                progress
                    .log_frames
                    .store(log.max(0) as u64, Ordering::Release);
                progress.passes.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => tracing::warn!(error = %e, "a WAL checkpoint failed; the next one retries"),
        }
        thread::sleep(PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::store::{Db, StoreError};

    /// Under a steady stream of commits the WAL restarts from its beginning again and again
    /// (the writer finishes a pass of the checkpoint thread), instead of growing to the
    /// hard limit.
    #[test]
    fn a_steady_stream_of_commits_keeps_the_wal_short() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        // The same 64 pages rewritten by every commit: the WAL grows by 64 frames a commit
        // while the database file stays small.
        db.write_blocking(|c| -> Result<(), StoreError> {
            c.execute_batch(
                "CREATE TABLE blobs (id INTEGER PRIMARY KEY, x BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64)
                 INSERT INTO blobs (id, x) SELECT i, zeroblob(4000) FROM n;",
            )?;
            Ok(())
        })
        .unwrap();
        let wal = db.path().with_extension("db-wal");
        let (mut written, mut longest) = (0u64, 0u64);
        // Twice the hard limit: without the restarts, the WAL would reach that limit.
        let goal = 2 * super::WAL_LIMIT_BYTES;
        let started = Instant::now();
        while written < goal && started.elapsed() < Duration::from_secs(60) {
            db.write_blocking(|c| -> Result<(), StoreError> {
                c.prepare_cached("UPDATE blobs SET x = randomblob(4000)")?
                    .execute([])?;
                Ok(())
            })
            .unwrap();
            written += 64 * 4096;
            longest = longest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(written >= goal, "wrote only {written} bytes");
        // Without the restarts the WAL reaches the hard limit before the writer cuts it
        // back. How far below it stays depends on how long a pass of the thread takes: on
        // a slow machine running the other tests at once, 50 MB has been seen.
        assert!(
            longest < super::WAL_LIMIT_BYTES,
            "the WAL grew to {longest} bytes for {written} written"
        );
    }
}

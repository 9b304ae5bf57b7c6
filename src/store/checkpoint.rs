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
//! job itself, between two transactions ([`Checkpointer::restart_due`]), and the next
//! transaction restarts the WAL. What the writer copies and syncs (the WAL, then the
//! database file) is what was committed during the thread's last pass, so once the WAL is
//! long the thread first catches up: pass after pass with no pause, each copying what was
//! committed during the one before, until a pass had little to copy; only then does it hand
//! over. Handing over after any pass held the writer for 160 to 190 ms per restart under
//! batches on the benchmark machine (a pass copying 16 MB lasts that long), a quarter of
//! its time. While the log is short, the thread also syncs the database file after each
//! pass (see `run`), and once more when a catch-up is done, so the writer's restart has few
//! pages left to sync.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The WAL size past which the writer checkpoints itself whatever the thread did: a bound
/// for when the thread cannot keep up. Also the size the WAL file is cut back to when the
/// log restarts (`journal_size_limit`): cutting it back to the restart length instead cost
/// the writer's first commit after each restart a 10 ms `ftruncate`.
pub const WAL_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// The WAL length from which the thread catches up and then the writer restarts the log.
/// A restart holds the writer for what the catch-up left, whatever the length (45 to 120 ms
/// under batches on the benchmark machine), so a longer log makes them rarer: at 16 MB,
/// 21 to 26 restarts in 16 s of batches, at 64 MB 7 to 9. (Before the catch-up, a longer
/// log also made each restart longer, and 16 MB was kept for single sends' p99.)
const RESTART_BYTES: u64 = 64 * 1024 * 1024;

/// Shortest time between two checkpoints: pages written again and again in a burst (the
/// B-tree's inner pages) are copied once per period, not once per commit.
const PERIOD: Duration = Duration::from_millis(200);

/// While it waits out [`PERIOD`], the thread has the kernel start writing the files' new
/// pages to disk this often (see [`start_writeback`]).
const WRITEBACK_EVERY: Duration = Duration::from_millis(50);

/// A pass that had at most this much to copy is short, and so are the commits that landed
/// while it ran: the writer can finish the job after it.
const SHORT_PASS_BYTES: u64 = 2 * 1024 * 1024;

/// Passes in a row the thread makes to catch up before handing over anyway (a reader on an
/// old snapshot, or a writer faster than the copies, would otherwise keep it going).
const MAX_CATCH_UP_PASSES: u32 = 8;

/// What the thread's last pass found.
#[derive(Default)]
struct Progress {
    /// Hand-overs so far: passes after which the writer may finish the job.
    handovers: AtomicU64,
    /// Frames in the WAL when the last pass began (all copied back, unless a reader on an
    /// older snapshot held some).
    log_frames: AtomicU64,
}

/// Handle kept by the writer: tells the checkpointer that commits happened.
pub struct Checkpointer {
    tx: SyncSender<()>,
    wal_path: PathBuf,
    progress: Arc<Progress>,
    /// The hand-over after which the writer last restarted the WAL.
    restarted_after: AtomicU64,
    /// [`RESTART_BYTES`] in frames (one page each) of this database.
    restart_frames: u64,
}

impl Checkpointer {
    /// Starts the thread; `conn` is its own connection to the database.
    pub fn start(conn: Connection) -> Checkpointer {
        let db_path = PathBuf::from(conn.path().unwrap_or_default());
        let wal_path = super::wal_path(&db_path);
        // Read-only is enough to sync it (see `run`); without it, passes still run.
        let db_file = std::fs::File::open(&db_path)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot open the database file to sync it"))
            .ok();
        let page_size = conn
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .map_or(4096, |size| size.max(512) as u64);
        let (tx, rx) = sync_channel(1);
        let wal = WalFile {
            path: wal_path.clone(),
            file: None,
        };
        let progress = Arc::new(Progress::default());
        let shared = progress.clone();
        let frames = Frames {
            restart: RESTART_BYTES / page_size,
            short_pass: SHORT_PASS_BYTES / page_size,
        };
        thread::Builder::new()
            .name("mailsflux-db-checkpoint".into())
            .spawn(move || run(conn, db_file, wal, rx, &shared, frames))
            .expect("spawning the database checkpoint thread");
        Checkpointer {
            tx,
            wal_path,
            progress,
            restarted_after: AtomicU64::new(0),
            restart_frames: frames.restart,
        }
    }

    /// Called by the writer after each commit: wakes the thread (without waiting).
    pub fn committed(&self) {
        match self.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// Whether the writer should checkpoint now, between two transactions, so that the
    /// next one restarts the WAL: once after the thread caught up with a long WAL (then
    /// little is left to copy), or whenever the WAL file passed the hard limit.
    pub fn restart_due(&self) -> bool {
        let handovers = self.progress.handovers.load(Ordering::Acquire);
        let long = self.progress.log_frames.load(Ordering::Acquire) >= self.restart_frames;
        if long && handovers != self.restarted_after.load(Ordering::Relaxed) {
            self.restarted_after.store(handovers, Ordering::Relaxed);
            return true;
        }
        std::fs::metadata(&self.wal_path)
            .map(|m| m.len() > WAL_LIMIT_BYTES)
            .unwrap_or(false)
    }
}

/// Runs a PASSIVE checkpoint on `conn`: the frames in the WAL when it began, and those
/// copied back (both 0 when another connection was checkpointing).
pub fn passive(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    // (busy, frames in the WAL, frames copied back); -1 for the last two when busy.
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        let frames = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
        Ok((frames(1)?, frames(2)?))
    })
}

/// Lengths, in frames of this database's page size, that the thread compares with.
#[derive(Clone, Copy)]
struct Frames {
    /// [`RESTART_BYTES`].
    restart: u64,
    /// [`SHORT_PASS_BYTES`].
    short_pass: u64,
}

/// Starts the kernel writing out `file`'s dirty pages, without waiting for them (Linux's
/// `sync_file_range` with `SYNC_FILE_RANGE_WRITE`; elsewhere nothing).
///
/// Under `synchronous = "normal"` nothing syncs the WAL between checkpoints, so each pass
/// began (SQLite syncs the WAL first) with 200 ms of commits to write out: 25 to 100 ms of
/// `fsync` on the benchmark machine, during which the writer's own WAL writes stalled (the
/// filesystem's journal) and every request waited. Written out as it comes, the data leaves
/// those syncs little to do. The kernel would get there by itself, but only past its
/// dirty-memory threshold (10% of RAM) or after 30 s.
fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `file`, open for the whole call; the call only
        // queues writeback of the file's own pages.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// The WAL file, opened when the thread first needs it. It lives as long as the database
/// is open (a restart overwrites it from its beginning), so one handle serves.
struct WalFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl WalFile {
    fn get(&mut self) -> std::io::Result<&std::fs::File> {
        match self.file {
            Some(ref file) => Ok(file),
            None => Ok(self.file.insert(std::fs::File::open(&self.path)?)),
        }
    }
}

/// Waits out [`PERIOD`] after a pass, starting the writeback of both files meanwhile.
fn wait_for_next_pass(wal: &mut WalFile, db_file: Option<&std::fs::File>) {
    let started = Instant::now();
    while let Some(left) = PERIOD.checked_sub(started.elapsed()) {
        thread::sleep(left.min(WRITEBACK_EVERY));
        if let Ok(wal) = wal.get() {
            start_writeback(wal);
        }
        if let Some(db_file) = db_file {
            start_writeback(db_file);
        }
    }
}

/// Syncs the WAL file, then the database file (the order of a checkpoint's syncs).
fn sync_files(wal: &mut WalFile, db_file: Option<&std::fs::File>) {
    let wal = wal.get().and_then(std::fs::File::sync_data);
    let db = db_file.map_or(Ok(()), std::fs::File::sync_data);
    if let Err(e) = wal.and(db) {
        tracing::warn!(error = %e, "syncing the database files failed");
    }
}

fn run(
    conn: Connection,
    db_file: Option<std::fs::File>,
    mut wal: WalFile,
    rx: Receiver<()>,
    progress: &Progress,
    frames: Frames,
) {
    // Frames copied back by the last pass: where the next one starts.
    let mut copied = 0u64;
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let mut passes = 0;
        let mut synced = false;
        loop {
            let started = Instant::now();
            let (log, done) = match passive(&conn) {
                Ok(frames) => frames,
                Err(e) => {
                    tracing::warn!(error = %e, "a WAL checkpoint failed; the next one retries");
                    break;
                }
            };
            // A log shorter than what was copied before has restarted since.
            let to_copy = if log < copied { log } else { log - copied };
            copied = done;
            let long = log >= frames.restart;
            // SQLite syncs the database file only after a pass that found no new commit at
            // its end: under a steady stream, none. The pages the passes copied then piled
            // up unsynced until the writer's restart synced them all, and at a 64 MB restart
            // length single sends' p99 doubled (with ext4's ordered data, every fsync of the
            // WAL also waits for the database file's new blocks). Synced here after each pass
            // while the log is short, they stay few; the catch-up passes skip it, to stay
            // short. Syncing only once, when the catch-up begins, left p99 as bad under
            // `synchronous = "full"` (74 against 28 ms).
            if to_copy > 0
                && !long
                && let Some(Err(e)) = db_file.as_ref().map(std::fs::File::sync_data)
            {
                tracing::warn!(error = %e, "syncing the database file failed");
            }
            passes += 1;
            tracing::trace!(
                log,
                to_copy,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "checkpoint pass"
            );
            let catching_up = long && to_copy > frames.short_pass;
            if long && !catching_up && !synced {
                // Caught up: sync what the catch-up passes copied now, while the writer
                // goes on, and copy once more what landed meanwhile. Left to the writer's
                // restart, that sync held every request for 30 to 40 ms each second under
                // single sends (their p99).
                if let Some(Err(e)) = db_file.as_ref().map(std::fs::File::sync_data) {
                    tracing::warn!(error = %e, "syncing the database file failed");
                }
                synced = true;
                continue;
            }
            if !catching_up || passes >= MAX_CATCH_UP_PASSES {
                if long {
                    // The writer's restart syncs the WAL and then the database file: what
                    // is dirty in them now need not wait for it.
                    sync_files(&mut wal, db_file.as_ref());
                }
                progress.log_frames.store(log, Ordering::Release);
                progress.handovers.fetch_add(1, Ordering::AcqRel);
                break;
            }
        }
        wait_for_next_pass(&mut wal, db_file.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::store::{Db, StoreError};

    /// The WAL header's checkpoint sequence number: SQLite adds one each time the log
    /// restarts from its beginning.
    fn wal_restarts(wal: &std::path::Path) -> u32 {
        let mut header = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open(wal).unwrap(), &mut header).unwrap();
        u32::from_be_bytes([header[12], header[13], header[14], header[15]])
    }

    /// Under a steady stream of commits the WAL restarts from its beginning each time it
    /// has grown to the restart length (the thread catches up, the writer finishes),
    /// instead of growing to the hard limit.
    #[test]
    fn a_steady_stream_of_commits_restarts_the_wal() {
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
        let wal = crate::store::wal_path(db.path());
        let restarts_before = wal_restarts(&wal);
        // The bound on the WAL file is under the hard limit, so the writer's own limit
        // cannot be what restarts the log while the file stays under it.
        let bound = 2 * super::RESTART_BYTES;
        assert!(bound < super::WAL_LIMIT_BYTES);
        let (mut written, mut longest, mut restarts) = (0u64, 0u64, 0);
        let started = Instant::now();
        // Until the log restarted twice: each restart comes once the log has reached the
        // restart length and the thread has caught up, so how much is written before it
        // varies with the machine (80 to 110 MB here). The loop stops early if the file
        // outgrows the bound, which fails below.
        while restarts < 2 && longest < bound && started.elapsed() < Duration::from_secs(90) {
            db.write_blocking(|c| -> Result<(), StoreError> {
                c.prepare_cached("UPDATE blobs SET x = randomblob(4000)")?
                    .execute([])?;
                Ok(())
            })
            .unwrap();
            written += 64 * 4096;
            longest = longest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            restarts = wal_restarts(&wal) - restarts_before;
            std::thread::sleep(Duration::from_millis(1));
        }
        // Each restart came soon after the log reached the restart length: how far past it
        // depends on how long the thread takes to catch up (on a slow machine running the
        // other tests at once, twice as long).
        assert!(
            longest < bound,
            "the WAL grew to {longest} bytes for {written} written ({restarts} restarts)"
        );
        assert!(
            restarts >= 2,
            "the WAL restarted {restarts} times for {written} bytes written (longest {longest})"
        );
    }
}

//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT of whichever connection pushes the
//! WAL past its threshold: here that is always the writer, and profiles show it spending a
//! sixth of its time copying pages back into the database file while every request waits.
//! So the writer's connection has `wal_autocheckpoint = 0`, and this thread, with its own
//! connection, runs a PASSIVE checkpoint (it never blocks the writer or the readers) shortly
//! after commits, on the other core.
//!
//! A passive checkpoint that races a commit leaves the frames of that commit behind, so under
//! a steady stream of commits the WAL could only grow. The writer guards against that: once
//! the WAL passes [`WAL_LIMIT_BYTES`] it checkpoints itself, between two transactions, which
//! lets the next transaction start the WAL from the beginning again.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

/// The WAL size past which the writer checkpoints itself (see the module docs).
pub const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Shortest time between two checkpoints: pages written again and again in a burst (the
/// B-tree's inner pages) are copied once per period, not once per commit.
const PERIOD: Duration = Duration::from_millis(200);

/// Handle kept by the writer: tells the checkpointer that commits happened.
pub struct Checkpointer {
    tx: SyncSender<()>,
    wal_path: PathBuf,
}

impl Checkpointer {
    /// Starts the thread; `conn` is its own connection to the database.
    pub fn start(conn: Connection) -> Checkpointer {
        let wal_path = PathBuf::from(format!("{}-wal", conn.path().unwrap_or_default()));
        let (tx, rx) = sync_channel(1);
        thread::Builder::new()
            .name("mailsflux-db-checkpoint".into())
            .spawn(move || run(conn, rx))
            .expect("spawning the database checkpoint thread");
        Checkpointer { tx, wal_path }
    }

    /// Called by the writer after each commit. Cheap: at most one signal waits.
    pub fn committed(&self) {
        match self.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }

    /// True when the WAL has grown past [`WAL_LIMIT_BYTES`] despite the checkpoints.
    pub fn wal_too_large(&self) -> bool {
        std::fs::metadata(&self.wal_path)
            .map(|m| m.len() > WAL_LIMIT_BYTES)
            .unwrap_or(false)
    }
}

/// Checkpoints after commits, at most once per [`PERIOD`]; ends when the writer is gone.
fn run(conn: Connection, rx: Receiver<()>) {
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "a WAL checkpoint failed; the next one retries");
        }
        thread::sleep(PERIOD);
    }
}

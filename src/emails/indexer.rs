//! Keeps `recipient_addresses`, the index of the `to` filter, up with the recipients.
//!
//! Accepting an email does not touch that index (see migration 3 in schema.sql): an index
//! keyed by address gets a random page per recipient, and the writer logs whole pages on
//! every commit. This task copies new recipients there in address order, thousands per
//! transaction, shortly after they are accepted. The filter reads the recipients not yet
//! copied as well, so what it finds never depends on this task being up to date.

use std::time::Duration;

use tokio::sync::watch;

use super::store;
use crate::store::{Db, StoreError};

/// How often the task copies. The cost of a copy is in the index pages it writes, one per
/// address range touched, whatever the number of rows that land there: copies made every
/// 100 ms (a few thousand rows under load) were a fifth of the writer's time in batch
/// profiles. Every half second, the ingest benchmark measured 41.9k instead of 37.8k
/// emails/s in batches, with single-send p99 unchanged (18.1 vs 17.2 ms, within its noise);
/// every second gained nothing more.
const TICK: Duration = Duration::from_millis(500);
/// Most recipients copied per transaction: a half second of batches at the benchmark's
/// rate, which holds the writer for about 50 ms; a backlog larger than that (after a
/// restart, say) is copied in several transactions, so requests get the writer in between.
const CHUNK: usize = 25_000;

/// Runs until `shutdown` turns true.
pub async fn run(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = catch_up(&db).await {
            tracing::warn!(error = %e, "copying recipients to the address index failed");
        }
    }
}

/// Copies every recipient accepted so far, a chunk per transaction.
pub async fn catch_up(db: &Db) -> Result<(), StoreError> {
    while db.read(store::has_unindexed_recipients).await? {
        let copied = db.write(|c| store::index_addresses(c, CHUNK)).await?;
        if copied < CHUNK {
            break;
        }
    }
    Ok(())
}

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

/// How often the task looks for recipients to copy.
const TICK: Duration = Duration::from_millis(100);
/// Most recipients copied per transaction: the job holds the writer for about 10 ms.
const CHUNK: usize = 5_000;

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

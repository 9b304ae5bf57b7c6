//! Keeps `recipient_addresses`, the index of the `to` filter, up with the recipients.
//!
//! Accepting an email does not touch that index (see migrations 3 and 10 in schema.sql):
//! an index keyed by address gets a random page per recipient, and the writer logs whole
//! pages on every commit. This task copies new recipients there shortly after they are
//! accepted, thousands per transaction, as a sorted run of their own, and merges runs of
//! like size (`address_index`). The filter reads the recipients not yet copied as well, so
//! what it finds never depends on this task being up to date.

use std::time::Duration;

use tokio::sync::watch;

use super::address_index;
use crate::store::{Db, StoreError};

/// How often the task copies. Each copy makes a run, and every run is one more lookup for
/// the filter until it is merged; a longer tick makes fewer, larger runs. The ingest
/// benchmark measured 41.9k instead of 37.8k emails/s in batches with copies every half
/// second instead of every 100 ms (when copies still wrote into one sorted B-tree), with
/// single-send p99 unchanged; every second gained nothing more.
const TICK: Duration = Duration::from_millis(500);
/// Most recipients copied per pass: a half second of batches at the benchmark's rate; a
/// backlog larger than that (after a restart, say) is copied as several runs.
const CHUNK: usize = 25_000;
/// Most index entries written per transaction, by a copy or a merge step: about a
/// millisecond of the writer on the 2-core benchmark machine, so that a request waiting
/// behind one is hardly held. (Copies of a whole pass and merge steps of 2,048 entries
/// held the writer for 15–20 and 7–10 ms, and made most of the single sends' p99.)
const PART: usize = 512;

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
        if let Err(e) = merge(&db, &shutdown).await {
            tracing::warn!(error = %e, "merging runs of the address index failed");
        }
    }
}

/// Copies every recipient accepted so far, a run per `CHUNK` recipients. The entries
/// are read and sorted on a reader connection; the writer appends them `PART` at a time,
/// each part a transaction of its own (`Db::write_alone`: sharing one would put it in a
/// savepoint, which journals every page it touches).
pub async fn catch_up(db: &Db) -> Result<(), StoreError> {
    while let Some(mut copy) = db
        .read(|c| {
            let copy = address_index::RunCopy::of_new_recipients(c, CHUNK)?;
            // The scan filled this reader's page cache with recipients no request reads
            // again; held, that is up to a megabyte per reader the copies happen to use.
            c.execute_batch("PRAGMA shrink_memory")?;
            Ok::<_, StoreError>(copy)
        })
        .await?
    {
        let recipients = copy.recipients();
        loop {
            let (written, more) = db
                .write_alone(move |c| {
                    let more = copy.write_next(c, PART)?;
                    Ok::<_, StoreError>((copy, more))
                })
                .await?;
            if !more {
                break;
            }
            copy = written;
        }
        if recipients < CHUNK {
            break;
        }
    }
    Ok(())
}

/// Merges runs until none need it, one step per writer job so that requests get the writer
/// in between. Stops early at shutdown, and after a tick's time, so that a large merge
/// (millions of entries) does not hold back the copies, which would leave more and more
/// recipients for the filter to read unindexed; a merge resumes where it stopped.
pub async fn merge(db: &Db, shutdown: &watch::Receiver<bool>) -> Result<(), StoreError> {
    let until = tokio::time::Instant::now() + TICK;
    while !*shutdown.borrow()
        && tokio::time::Instant::now() < until
        && db
            .write_alone(|c| address_index::merge_step(c, PART))
            .await?
    {}
    Ok(())
}

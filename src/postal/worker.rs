//! The postal worker: submits queued pieces to their vendor once their send date has come,
//! then refreshes each piece every `refresh_interval` of its vendor (the simulator's step, or
//! the polling interval of a remote vendor) until it reaches a final status.
//!
//! Its queue is the `mail_pieces` table (`next_action_at`, `lease_until`), so a restart loses
//! nothing: leases are released at start and due pieces are picked up again. Routes wake it
//! when a piece is queued; otherwise it sleeps until the next piece is due. On shutdown it
//! finishes the vendor calls under way and stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::PostalHandle;
use super::store::{self, Claimed, Next, SubmitOutcome};
use super::vendor::{CancelResult, PostalVendor, VendorError};
use crate::store::{Db, StoreError, time};

/// Longest sleep when nothing is due (a safety net; the worker is normally woken).
const IDLE_SLEEP: Duration = Duration::from_secs(30);
/// How long a claimed piece stays leased (longer than any vendor call's timeout).
const LEASE_MS: i64 = 120_000;
/// Pieces handled at once.
pub const CONCURRENCY: usize = 16;
/// How long shutdown waits for vendor calls under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Failed submissions are retried this many times (with a doubling wait) before the piece
/// is `failed`.
const MAX_SUBMIT_ATTEMPTS: i64 = 10;

pub struct PostalWorker {
    db: Db,
    postal: PostalHandle,
}

impl PostalWorker {
    pub fn new(db: Db, postal: PostalHandle) -> PostalWorker {
        PostalWorker { db, postal }
    }

    /// Runs until `shutdown` turns true. Up to [`CONCURRENCY`] pieces are handled at once,
    /// so one slow vendor does not hold up the others (test-mode pieces in particular).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        match self.db.write(store::release_all_leases).await {
            Ok(n) if n > 0 => tracing::info!(
                pieces = n,
                "mail pieces from an interrupted run are back in the queue"
            ),
            Ok(_) => {}
            Err::<_, StoreError>(e) => tracing::error!(error = %e, "releasing mail leases failed"),
        }
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mut tasks: JoinSet<()> = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let now_ms = time::now_ms();
            let claimed = match self
                .db
                .write(move |c| store::claim_due(c, now_ms, free, LEASE_MS))
                .await
            {
                Ok(c) => c,
                Err::<_, StoreError>(e) => {
                    tracing::error!(error = %e, "claiming due mail pieces failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if !claimed.is_empty() {
                for c in claimed {
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let db = self.db.clone();
                    let vendor = self.postal.vendors.get(&c.vendor);
                    tasks.spawn(async move {
                        handle(db, vendor, c, now_ms).await;
                        drop(permit);
                    });
                }
                continue;
            }
            let wait = match self
                .db
                .read(move |c| store::next_due_in_ms(c, time::now_ms()))
                .await
            {
                Ok(Some(ms)) => Duration::from_millis(ms as u64).min(IDLE_SLEEP),
                Ok(None) => IDLE_SLEEP,
                Err::<_, StoreError>(e) => {
                    tracing::error!(error = %e, "reading the mail queue failed");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.postal.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        // Shutdown: let the vendor calls under way finish, within a grace period; a piece cut
        // off is still leased in the database and is picked up again at the next start.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "mail vendor calls still running at shutdown; they are retried at the next start"
            );
            tasks.abort_all();
        }
    }

    /// Handles every piece due at `now_ms` (at most [`CONCURRENCY`]), waits for them, and
    /// returns how many: the worker's step function, for tests that drive the clock.
    pub async fn run_once(&self, now_ms: i64) -> usize {
        let claimed = match self
            .db
            .write(move |c| store::claim_due(c, now_ms, CONCURRENCY, LEASE_MS))
            .await
        {
            Ok(c) => c,
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, "claiming due mail pieces failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return 0;
            }
        };
        let n = claimed.len();
        let mut tasks = JoinSet::new();
        for c in claimed {
            let db = self.db.clone();
            let vendor = self.postal.vendors.get(&c.vendor);
            tasks.spawn(async move { handle(db, vendor, c, now_ms).await });
        }
        while tasks.join_next().await.is_some() {}
        n
    }
}

fn message(e: &VendorError) -> &str {
    match e {
        VendorError::Temporary(m) | VendorError::Rejected(m) => m,
    }
}

/// The wait before retry `attempt` (1-based): 5 s doubling, at most an hour.
fn backoff_ms(attempt: i64) -> i64 {
    (5_000i64 << attempt.clamp(0, 10)).min(3_600_000)
}

async fn handle(db: Db, vendor: Option<Arc<dyn PostalVendor>>, c: Claimed, now_ms: i64) {
    let id = c.piece.id.clone();
    let result = match vendor {
        None => {
            let why = format!("the vendor '{}' is not known to this build", c.vendor);
            db.write(move |conn| store::record_failure(conn, &id, &why, None))
                .await
        }
        Some(vendor) if c.piece.vendor_id.is_none() => submit(&db, vendor, c, now_ms).await,
        Some(vendor) => refresh(&db, vendor, c, now_ms).await,
    };
    if let Err::<(), StoreError>(e) = result {
        tracing::error!(error = %e, "recording a mail piece's progress failed; it is retried when its lease ends");
    }
}

async fn submit(
    db: &Db,
    vendor: Arc<dyn PostalVendor>,
    c: Claimed,
    now_ms: i64,
) -> Result<(), StoreError> {
    let id = c.piece.id.clone();
    match vendor.submit(&c.piece).await {
        Ok(submitted) => {
            let next = now_ms + vendor.refresh_interval().as_millis() as i64;
            let s2 = submitted.clone();
            let id2 = id.clone();
            let outcome = db
                .write(move |conn| store::record_submitted(conn, &id2, &s2, next))
                .await?;
            if outcome == SubmitOutcome::CanceledMeanwhile {
                // Canceled while the vendor call ran: take the vendor's copy back.
                let mut piece = c.piece;
                piece.vendor_id = Some(submitted.vendor_id);
                match vendor.cancel(&piece).await {
                    Ok(CancelResult::Canceled) => {}
                    Ok(CancelResult::NotAllowed(why)) => {
                        tracing::warn!(mail_id = %id, %why, "a piece canceled during submission could not be canceled at the vendor")
                    }
                    Err(e) => {
                        tracing::warn!(mail_id = %id, error = %message(&e), "a piece canceled during submission could not be canceled at the vendor")
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            let attempt = c.attempts + 1;
            let retry_at = match &e {
                VendorError::Temporary(_) if attempt < MAX_SUBMIT_ATTEMPTS => {
                    Some(now_ms + backoff_ms(attempt))
                }
                _ => None,
            };
            let why = format!(
                "{} could not take the piece: {}",
                vendor.name(),
                message(&e)
            );
            tracing::warn!(mail_id = %id, attempt, retry = retry_at.is_some(), error = %why, "mail submission failed");
            db.write(move |conn| store::record_failure(conn, &id, &why, retry_at))
                .await
        }
    }
}

async fn refresh(
    db: &Db,
    vendor: Arc<dyn PostalVendor>,
    c: Claimed,
    now_ms: i64,
) -> Result<(), StoreError> {
    let id = c.piece.id.clone();
    let interval = vendor.refresh_interval().as_millis() as i64;
    match vendor.refresh(&c.piece, now_ms / 1000).await {
        Ok(r) => {
            db.write(move |conn| {
                store::update_tracking_info(
                    conn,
                    &id,
                    r.tracking_number.as_deref(),
                    r.expected_delivery_date.as_deref(),
                )?;
                store::apply_nodes(conn, &id, &r.nodes, Next::At(now_ms + interval))
            })
            .await?;
            Ok(())
        }
        Err(e) => {
            // A failed poll never fails the piece: webhooks may still come, and the next
            // poll may work.
            let why = format!("refreshing at {} failed: {}", vendor.name(), message(&e));
            tracing::warn!(mail_id = %id, error = %why, "mail refresh failed");
            let at = now_ms + backoff_ms(c.attempts + 1).max(interval.min(3_600_000));
            db.write(move |conn| store::record_failure(conn, &id, &why, Some(at)))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 10_000);
        assert_eq!(backoff_ms(2), 20_000);
        assert_eq!(backoff_ms(20), 3_600_000);
    }
}

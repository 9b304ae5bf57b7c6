//! The background re-check of domains: verified ones every `recheck_verified` (6 h), the
//! others still in play (pending, partially verified, temporarily failing) every
//! `recheck_pending` (15 min), so a verified domain that loses a record becomes
//! `temporary_failure`, and a domain never verified becomes `failed` after 72 h, without
//! anyone asking. [`recheck_due`] is one step (tests and the loop call it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Domains, store};
use crate::store::{StoreError, time};

/// Domains checked per step at most.
const BATCH: usize = 50;
/// The loop never sleeps longer than this between steps.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Checks the domains that are due; returns how many were checked.
pub async fn recheck_due(domains: &Domains) -> Result<usize, StoreError> {
    let timings = domains.config.domains.timings;
    let pending = timings.recheck_pending.as_secs().max(1) as i64;
    let verified = timings.recheck_verified.as_secs().max(1) as i64;
    let now = time::now();
    let due = domains
        .db
        .read(move |c| store::due_for_check(c, now, pending, verified, BATCH))
        .await?;
    let n = due.len();
    for row in due {
        let name = row.name.clone();
        if let Some(saved) = domains.check(row).await? {
            tracing::debug!(domain = %name, status = saved.status.as_str(), "domain re-checked");
        }
    }
    Ok(n)
}

/// Runs [`recheck_due`] until `shutdown` turns true.
pub async fn run(domains: Arc<Domains>, mut shutdown: watch::Receiver<bool>) {
    let timings = domains.config.domains.timings;
    let tick = timings
        .recheck_pending
        .min(timings.recheck_verified)
        .min(MAX_SLEEP)
        .max(Duration::from_millis(200));
    loop {
        if *shutdown.borrow() {
            return;
        }
        match recheck_due(&domains).await {
            Ok(n) if n >= BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the domain re-check failed; it runs again later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}

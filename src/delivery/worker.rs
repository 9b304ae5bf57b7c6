//! The delivery worker: claims due recipients from the queue, delivers them in groups (one
//! SMTP transaction per email and destination domain) under a global concurrency limit, and
//! records each outcome. It is woken at once when emails are accepted, and otherwise sleeps
//! until the next recipient is due. On shutdown it stops claiming, lets the attempts under
//! way finish, and leaves the rest queued.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use super::capture;
use super::live::LiveTransport;
use super::queue::{self, Claimed, Outcome};
use crate::config::{Config, DeliveryMode};
use crate::keys::Mode;
use crate::ops::metrics::Metrics;
use crate::store::{Db, StoreError};

/// Wakes the worker; cheap to clone into every route that queues mail.
#[derive(Clone, Default)]
pub struct DeliveryHandle {
    notify: Arc<Notify>,
}

impl DeliveryHandle {
    /// Tells the worker there is new work (a wake-up is kept if it is busy).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Longest sleep when nothing is due: a safety net, the worker is normally woken.
const IDLE_SLEEP: Duration = Duration::from_secs(30);
/// How long shutdown waits for attempts under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Recipients claimed per free slot at once.
const CLAIM_PER_SLOT: usize = 8;

pub struct Worker {
    db: Db,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    handle: DeliveryHandle,
    live: Arc<LiveTransport>,
}

impl Worker {
    pub fn new(
        db: Db,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        handle: DeliveryHandle,
    ) -> Worker {
        let live = Arc::new(LiveTransport::new(&config, metrics.clone()));
        Worker {
            db,
            config,
            metrics,
            handle,
            live,
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.config.delivery.concurrency));
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
            let limit = (free * CLAIM_PER_SLOT).min(1000);
            let claimed = match self.db.write(move |c| queue::claim_due(c, limit)).await {
                Ok(c) => c,
                Err::<_, StoreError>(e) => {
                    tracing::error!(error = %e, "claiming due recipients failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                let wait = match self.db.read(queue::next_due_in).await {
                    Ok(Some(secs)) => Duration::from_secs(secs.max(0) as u64).min(IDLE_SLEEP),
                    Ok(None) => IDLE_SLEEP,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the queue failed");
                        Duration::from_secs(1)
                    }
                };
                // Due times are whole seconds: a recipient due "now" may be a moment away.
                let wait = wait.max(Duration::from_millis(50));
                tokio::select! {
                    _ = self.handle.notify.notified() => {}
                    _ = tokio::time::sleep(if wait.is_zero() { Duration::from_millis(200) } else { wait }) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for group in self.group(claimed) {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let db = self.db.clone();
                let config = self.config.clone();
                let metrics = self.metrics.clone();
                let live = self.live.clone();
                tasks.spawn(async move {
                    deliver_group(db, config, metrics, live, group).await;
                    drop(permit);
                });
            }
        }
        // Shutdown: finish the attempts under way, within a grace period.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "delivery attempts still running at shutdown; they will be retried at the next start"
            );
            tasks.abort_all();
        }
        self.live.shutdown().await;
    }

    /// One group per email and destination: test mode and relay per email, direct mode per
    /// email and recipient domain (one SMTP transaction per domain). A live recipient with
    /// its own copy of the message is a group of its own.
    fn group(&self, claimed: Vec<Claimed>) -> Vec<Vec<Claimed>> {
        let direct = self.config.delivery.mode == DeliveryMode::Direct;
        let mut groups: BTreeMap<(String, String, i64), Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            let domain = if direct && c.mode == Mode::Live {
                c.domain.clone()
            } else {
                String::new()
            };
            // Test mode captures without reading the message, so copies need no own group.
            let own = if c.own_copy && c.mode == Mode::Live {
                c.rcpt_id
            } else {
                0
            };
            groups
                .entry((c.email_id.clone(), domain, own))
                .or_default()
                .push(c);
        }
        groups.into_values().collect()
    }
}

async fn deliver_group(
    db: Db,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    live: Arc<LiveTransport>,
    group: Vec<Claimed>,
) {
    let schedule = config.delivery_retry_schedule();
    let Some(first) = group.first() else { return };
    let outcomes: Vec<Outcome> = if first.mode == Mode::Test {
        group
            .into_iter()
            .map(|c| capture::capture(c, &schedule))
            .collect()
    } else {
        let email_id = first.email_id.clone();
        let rcpt_id = first.own_copy.then_some(first.rcpt_id);
        match db
            .read(move |c| queue::load_message(c, &email_id, rcpt_id))
            .await
        {
            Ok(Some((raw, envelope_from))) => live.deliver(&envelope_from, &raw, group).await,
            Ok(None) => {
                tracing::error!(email_id = %first.email_id, "claimed recipients of a missing email");
                return;
            }
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, "loading a message failed; its lease will expire and it will be retried");
                return;
            }
        }
    };
    let recorded = db
        .write(move |c| queue::record_outcomes(c, &outcomes, &schedule))
        .await;
    match recorded {
        Ok(labels) => {
            for label in labels {
                metrics.delivery(label);
            }
        }
        Err::<_, StoreError>(e) => {
            tracing::error!(error = %e, "recording delivery outcomes failed; the recipients will be retried when their lease expires");
        }
    }
}

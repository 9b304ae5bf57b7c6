//! The delivery worker: claims due recipients from the queue with a lease, delivers them in
//! groups (one SMTP transaction per message and destination), and records the outcomes.
//!
//! - Woken at once when emails are accepted ([`DeliveryHandle::wake`]); otherwise it sleeps
//!   until the next recipient is due.
//! - Limits: `delivery.concurrency` groups at once in all, and at most
//!   `DeliveryConfig::sessions_per_destination` per destination (one recipient domain in
//!   direct mode: 20; the relay: `delivery.concurrency`). A group waiting for its
//!   destination holds no global slot, so a slow domain does not starve the others.
//! - Messages of a claim are loaded in one read; outcomes go to one recorder task that
//!   writes them in batches (one transaction for many groups).
//! - Shutdown: stops claiming, gives claimed-but-unstarted recipients back to the queue,
//!   lets the SMTP transactions under way finish (within a grace period) and records them.
//!   After a crash the leases expire (at start, at once): delivery is at least once, with
//!   the same message bytes and `Message-ID`, built when the email was accepted.
//! - Leases: while the process lives, the leases of every recipient it holds (waiting for
//!   a slot or under way) are renewed every third of the lease, so a long wait behind a
//!   slow destination never lets another claim take them again (a duplicate send).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::capture;
use super::live::{self, LiveTransport};
use super::queue::{self, AttemptResult, Claimed, Message, MessageSource, Outcome};
use super::smtp::SmtpPool;
use crate::config::{Config, DeliveryMode};
use crate::keys::Mode;
use crate::ops::metrics::Metrics;
use crate::store::{Db, StoreError};

/// Wakes the worker and reports on its SMTP pool; cheap to clone into every route that
/// queues mail.
#[derive(Clone, Default)]
pub struct DeliveryHandle {
    notify: Arc<Notify>,
    pool: Arc<OnceLock<SmtpPool>>,
}

impl DeliveryHandle {
    /// Tells the worker there is new work (a wake-up is kept if it is busy).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// SMTP sessions open now, in use or idle (the `smtp_sessions_open` metric).
    pub fn open_sessions(&self) -> usize {
        self.pool.get().map(SmtpPool::open_sessions).unwrap_or(0)
    }
}

/// Longest sleep when nothing is due: a safety net, the worker is normally woken.
const IDLE_SLEEP: Duration = Duration::from_secs(30);
/// How long shutdown waits for attempts under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Groups claimed ahead per slot: enough to keep every slot busy between claims.
const CLAIM_PER_SLOT: usize = 8;
/// Most recipients per claim transaction.
const MAX_CLAIM: usize = 1000;
/// Most outcomes per recorder transaction.
const MAX_RECORD_BATCH: usize = 2000;
/// How long the recorder gathers outcomes after the first before it writes them. Under load
/// outcomes arrive one group at a time; written at once, each would be a transaction of a
/// few rows that rewrites the same index pages as the one before (a fifth less database
/// CPU per delivery at 5 ms). Statuses show up at most this much later.
const RECORD_GATHER: Duration = Duration::from_millis(5);

/// How long a busy worker that found nothing due waits before looking again (a wake-up
/// comes sooner when mail is accepted).
const RECHECK_WHILE_BUSY: Duration = Duration::from_millis(200);

/// What a claim brought.
enum ClaimOutcome {
    Groups(Vec<Group>),
    Nothing,
    Failed,
}

/// Recipients that go out together: one message, one destination.
struct Group {
    /// The destination's limit key: "" for test mode (no SMTP), the relay, or the domain.
    dest: String,
    source: MessageSource,
    recipients: Vec<Claimed>,
    /// The message (live mode), loaded after the claim.
    message: Option<Arc<Message>>,
}

/// What every delivery task needs.
struct Shared {
    live: Result<LiveTransport, String>,
    schedule: Vec<Duration>,
    recorder: mpsc::UnboundedSender<Vec<Outcome>>,
    held: Held,
}

/// The recipients this worker has claimed and not finished (waiting or under way): the
/// ones whose leases it renews.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<HashSet<i64>>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        // A panic while holding the lock leaves a set that is still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, ids: impl IntoIterator<Item = i64>) {
        self.lock().extend(ids);
    }

    fn forget(&self, ids: impl IntoIterator<Item = i64>) {
        let mut held = self.lock();
        for id in ids {
            held.remove(&id);
        }
    }

    fn ids(&self) -> Vec<i64> {
        self.lock().iter().copied().collect()
    }
}

pub struct Worker {
    db: Db,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    handle: DeliveryHandle,
    held: Held,
}

impl Worker {
    pub fn new(
        db: Db,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        handle: DeliveryHandle,
    ) -> Worker {
        Worker {
            db,
            config,
            metrics,
            handle,
            held: Held::default(),
        }
    }

    /// Runs until `shutdown` turns true. The SMTP pool is made here, in the runtime that
    /// runs the deliveries.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let live = LiveTransport::new(&self.config).map_err(|e| {
            tracing::error!(error = %e, "live delivery is unavailable");
            e.to_string()
        });
        if let Ok(live) = &live {
            let _ = self.handle.pool.set(live.pool().clone());
        }
        let (recorder_tx, recorder_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(
            self.db.clone(),
            self.metrics.clone(),
            self.handle.clone(),
            self.config.delivery_retry_schedule(),
            recorder_rx,
        ));
        let shared = Arc::new(Shared {
            live,
            schedule: self.config.delivery_retry_schedule(),
            recorder: recorder_tx,
            held: self.held.clone(),
        });
        let concurrency = self.config.delivery.concurrency.max(1);
        let per_dest = self.config.delivery.sessions_per_destination();
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut dests: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut pending = Pending::default();
        let mut tasks: JoinSet<()> = JoinSet::new();
        // The next claim runs while deliveries go on: waiting for it between deliveries
        // would leave every slot idle for a write and a read each time.
        let mut claiming: Option<Pin<Box<dyn Future<Output = ClaimOutcome> + Send + '_>>> = None;
        // The last claim found nothing due: claim again on a wake-up or at this moment (a
        // deadline, so that deliveries finishing all the time do not keep pushing it back).
        let mut queue_empty = false;
        let mut recheck_at = tokio::time::Instant::now();
        let buffer = (concurrency * CLAIM_PER_SLOT).min(MAX_CLAIM);
        let lease = self.config.delivery.tuning.lease;
        let renew_every = (lease / 3).max(Duration::from_millis(100));
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            dispatch(
                &mut pending,
                &slots,
                &mut dests,
                per_dest,
                &mut tasks,
                &shared,
            );
            // Claim in large batches, ahead of need: top the buffer up once fewer groups
            // wait than half of it. Small claims (one per finished group) would make every
            // delivery wait for a claim transaction.
            if claiming.is_none() && !queue_empty && pending.len() < buffer / 2 {
                let room = buffer.saturating_sub(pending.len()).max(1);
                claiming = Some(Box::pin(self.claim(room)));
            }
            if claiming.is_none() && tasks.is_empty() && pending.is_empty() {
                self.sleep_until_due(&mut shutdown).await;
                queue_empty = false;
                continue;
            }
            let claim = async {
                match claiming.as_mut() {
                    Some(claim) => claim.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = claim => {
                    claiming = None;
                    match outcome {
                        ClaimOutcome::Groups(groups) => groups.into_iter().for_each(|g| pending.push(g)),
                        ClaimOutcome::Nothing => {
                            queue_empty = true;
                            recheck_at = tokio::time::Instant::now() + RECHECK_WHILE_BUSY;
                        }
                        ClaimOutcome::Failed => {}
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = self.handle.notify.notified(), if queue_empty => queue_empty = false,
                // Due times pass while deliveries run; look again now and then.
                _ = tokio::time::sleep_until(recheck_at), if queue_empty => queue_empty = false,
                _ = renew.tick() => self.renew_leases(lease),
                _ = shutdown.changed() => {}
            }
        }
        // A claim under way has leased its recipients: take them, to give them back below.
        if let Some(claim) = claiming.take()
            && let ClaimOutcome::Groups(groups) = claim.await
        {
            groups.into_iter().for_each(|g| pending.push(g));
        }

        // Shutdown: what was claimed but not started goes back to the queue at once.
        let unstarted: Vec<i64> = pending
            .drain()
            .flat_map(|g| g.recipients.into_iter().map(|c| c.rcpt_id))
            .collect();
        if !unstarted.is_empty() {
            let released = self.db.write(move |c| queue::release(c, &unstarted)).await;
            if let Err::<_, StoreError>(e) = released {
                tracing::warn!(error = %e, "claimed recipients stay leased until the next start");
            }
        }
        // Finish the transactions under way, within a grace period.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "delivery attempts still running at shutdown; they will be retried at the next start"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        // The recorder ends once every sender (the tasks' and ours) is gone.
        let shared = match Arc::try_unwrap(shared) {
            Ok(shared) => shared,
            Err(_) => {
                tracing::error!("delivery tasks outlived the worker");
                return;
            }
        };
        let Shared {
            live,
            recorder: recorder_tx,
            ..
        } = shared;
        drop(recorder_tx);
        let _ = recorder.await;
        if let Ok(live) = live {
            live.shutdown().await;
        }
    }

    /// Renews the leases of the recipients held now, without holding up the loop.
    fn renew_leases(&self, lease: Duration) {
        let ids = self.held.ids();
        if ids.is_empty() {
            return;
        }
        let db = self.db.clone();
        tokio::spawn(async move {
            let renewed = db.write(move |c| queue::renew_leases(c, &ids, lease)).await;
            if let Err::<_, StoreError>(e) = renewed {
                tracing::error!(error = %e, "renewing delivery leases failed; a recipient held past its lease may be sent twice");
            }
        });
    }

    /// Claims up to `room` due recipients and loads their messages, grouped.
    async fn claim(&self, room: usize) -> ClaimOutcome {
        let lease = self.config.delivery.tuning.lease;
        let claim = match self
            .db
            .write(move |c| queue::claim_due(c, room, lease))
            .await
        {
            Ok(c) => c,
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, "claiming due recipients failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return ClaimOutcome::Failed;
            }
        };
        for _ in 0..claim.suppressed {
            self.metrics.delivery("suppressed");
        }
        if claim.claimed.is_empty() {
            return ClaimOutcome::Nothing;
        }
        self.held.take(claim.claimed.iter().map(|c| c.rcpt_id));
        match self.load(self.group(claim.claimed)).await {
            Ok(groups) => ClaimOutcome::Groups(groups),
            Err(ids) => {
                // Leave them to the next claim rather than to their lease.
                self.held.forget(ids.iter().copied());
                let _ = self.db.write(move |c| queue::release(c, &ids)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                ClaimOutcome::Failed
            }
        }
    }

    /// Sleeps until the next recipient is due, a wake-up, or shutdown.
    async fn sleep_until_due(&self, shutdown: &mut watch::Receiver<bool>) {
        let wait = match self.db.read(queue::next_due_in_ms).await {
            Ok(Some(ms)) => Duration::from_millis(ms.max(0) as u64).min(IDLE_SLEEP),
            Ok(None) => IDLE_SLEEP,
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, "reading the queue failed");
                Duration::from_secs(1)
            }
        };
        // A floor, so that a recipient due but not claimable yet cannot make a busy loop.
        let wait = wait.max(Duration::from_millis(50));
        tokio::select! {
            _ = self.handle.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }

    /// One group per message and destination: test mode and relay per message, direct mode
    /// per message and recipient domain (one SMTP transaction per domain).
    fn group(&self, claimed: Vec<Claimed>) -> Vec<Group> {
        let direct = self.config.delivery.mode == DeliveryMode::Direct;
        let mut groups: BTreeMap<(MessageSource, String), Group> = BTreeMap::new();
        for c in claimed {
            let dest = match c.mode {
                Mode::Test => String::new(),
                Mode::Live if direct => c.domain.to_ascii_lowercase(),
                Mode::Live => "relay".to_string(),
            };
            let source = MessageSource::of(&c);
            groups
                .entry((source.clone(), dest.clone()))
                .or_insert_with(|| Group {
                    dest,
                    source,
                    recipients: Vec::new(),
                    message: None,
                })
                .recipients
                .push(c);
        }
        groups.into_values().collect()
    }

    /// Loads the messages of the live groups in one read. `Err` gives back the recipient
    /// ids when the database could not be read.
    async fn load(&self, mut groups: Vec<Group>) -> Result<Vec<Group>, Vec<i64>> {
        let mut sources: Vec<MessageSource> = groups
            .iter()
            .filter(|g| !g.dest.is_empty())
            .map(|g| g.source.clone())
            .collect();
        if sources.is_empty() {
            return Ok(groups);
        }
        sources.sort();
        sources.dedup();
        let messages = match self
            .db
            .read(move |c| queue::load_messages(c, &sources))
            .await
        {
            Ok(m) => m,
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, "loading messages failed; they go back to the queue");
                return Err(groups
                    .into_iter()
                    .flat_map(|g| g.recipients.into_iter().map(|c| c.rcpt_id))
                    .collect());
            }
        };
        let mut missing = Vec::new();
        groups.retain_mut(|g| {
            if g.dest.is_empty() {
                return true;
            }
            match messages.get(&g.source) {
                Some(m) => {
                    g.message = Some(m.clone());
                    true
                }
                None => {
                    missing.push(std::mem::take(&mut g.recipients));
                    false
                }
            }
        });
        for recipients in missing {
            self.held.forget(recipients.iter().map(|c| c.rcpt_id));
            tracing::error!(email_id = %recipients[0].email_id, "claimed recipients of a message that is gone");
            let outcomes = live::all(
                recipients,
                AttemptResult::Deferred("the message could not be loaded".to_string()),
            );
            let schedule = self.config.delivery_retry_schedule();
            let _ = self
                .db
                .write(move |c| queue::record_outcomes(c, &outcomes, &schedule))
                .await;
        }
        Ok(groups)
    }
}

/// Claimed groups waiting to start, queued per destination so that starting one costs
/// nothing for the groups of a destination that is full.
#[derive(Default)]
struct Pending {
    by_dest: HashMap<String, VecDeque<Group>>,
    /// Destinations with waiting groups, served in turn.
    order: VecDeque<String>,
    len: usize,
}

impl Pending {
    fn push(&mut self, group: Group) {
        let queue = self.by_dest.entry(group.dest.clone()).or_default();
        if queue.is_empty() {
            self.order.push_back(group.dest.clone());
        }
        queue.push_back(group);
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn drain(&mut self) -> impl Iterator<Item = Group> + '_ {
        self.order.clear();
        self.len = 0;
        self.by_dest.drain().flat_map(|(_, queue)| queue)
    }
}

/// Starts waiting groups while there is a global slot, each destination in turn as far as
/// its own limit allows; the others keep waiting.
fn dispatch(
    pending: &mut Pending,
    slots: &Arc<Semaphore>,
    dests: &mut HashMap<String, Arc<Semaphore>>,
    per_dest: usize,
    tasks: &mut JoinSet<()>,
    shared: &Arc<Shared>,
) {
    let mut served = VecDeque::with_capacity(pending.order.len());
    'destinations: while let Some(dest) = pending.order.pop_front() {
        let Some(queue) = pending.by_dest.get_mut(&dest) else {
            continue;
        };
        // Test mode ("") has no SMTP destination and no limit of its own.
        let dest_sem = (!dest.is_empty()).then(|| {
            dests
                .entry(dest.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(per_dest)))
                .clone()
        });
        while !queue.is_empty() {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                served.push_back(dest);
                break 'destinations;
            };
            let dest_slot = match &dest_sem {
                None => None,
                Some(sem) => match sem.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
            };
            let Some(group) = queue.pop_front() else {
                break;
            };
            pending.len -= 1;
            let shared = shared.clone();
            tasks.spawn(async move {
                let outcomes = deliver_group(&shared, group).await;
                // The lease left (at least two thirds of it) covers the recording.
                shared
                    .held
                    .forget(outcomes.iter().map(|o| o.claimed.rcpt_id));
                let _ = shared.recorder.send(outcomes);
                drop(dest_slot);
                drop(slot);
            });
        }
        if queue.is_empty() {
            pending.by_dest.remove(&dest);
        } else {
            served.push_back(dest);
        }
    }
    served.append(&mut pending.order);
    pending.order = served;
    // Forget destinations nobody uses (only the map holds their semaphore).
    dests.retain(|_, sem| Arc::strong_count(sem) > 1);
}

/// One attempt for a group: capture in test mode, SMTP in live mode.
async fn deliver_group(shared: &Shared, group: Group) -> Vec<Outcome> {
    let Some(message) = group.message else {
        return group
            .recipients
            .into_iter()
            .map(|c| capture::capture(c, &shared.schedule))
            .collect();
    };
    match &shared.live {
        Ok(live) => live.deliver(&message, group.recipients).await,
        Err(why) => live::all(
            group.recipients,
            AttemptResult::Deferred(format!("SMTP is unavailable: {why}")),
        ),
    }
}

/// Writes outcomes as they come, many groups per transaction (those that arrive within
/// [`RECORD_GATHER`] of the first), and counts them.
async fn record_loop(
    db: Db,
    metrics: Arc<Metrics>,
    handle: DeliveryHandle,
    schedule: Vec<Duration>,
    mut rx: mpsc::UnboundedReceiver<Vec<Outcome>>,
) {
    while let Some(mut batch) = rx.recv().await {
        let write_at = tokio::time::Instant::now() + RECORD_GATHER;
        while batch.len() < MAX_RECORD_BATCH {
            // A closed channel (shutdown) or the deadline ends the gathering.
            match tokio::time::timeout_at(write_at, rx.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        let retry_soon = batch
            .iter()
            .any(|o| matches!(o.result, AttemptResult::Deferred(_)));
        let schedule = schedule.clone();
        match db
            .write(move |c| queue::record_outcomes(c, &batch, &schedule))
            .await
        {
            Ok(labels) => {
                for label in labels {
                    metrics.delivery(label);
                }
            }
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, "recording delivery outcomes failed; the recipients will be retried when their lease expires");
            }
        }
        if retry_soon {
            // The worker may be asleep until a later due time than this retry's.
            handle.wake();
        }
    }
}

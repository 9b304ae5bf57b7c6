//! The dispatcher: drains the webhooks outbox.
//!
//! It claims due deliveries per endpoint (at most [`PER_ENDPOINT`] in flight for one
//! endpoint, [`GLOBAL`] in all), so a slow or dead endpoint only ever holds its own slots
//! and never delays another. Each attempt is signed (Standard Webhooks), sent with
//! `webhooks.timeout`, and its outcome goes to a recorder that writes outcomes in batches.
//! It is woken at once when an event is queued (see `store::install_waker`) or a slot frees
//! up, and otherwise sleeps until the next retry is due. On shutdown it stops claiming,
//! lets the attempts under way finish (within the timeout), records them, and leaves the
//! rest in the outbox for the next start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, USER_AGENT};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::signing::SigningKey;
use super::store::{self, AttemptResult, Claimed, Endpoint, Outcome};
use super::target::{Guard, TargetError, VettedResolver, WebhookUrl};
use crate::config::Config;
use crate::store::{Db, StoreError, time};

/// Deliveries of one endpoint in flight at once.
pub const PER_ENDPOINT: usize = 32;
/// Deliveries in flight at once over all endpoints.
pub const GLOBAL: usize = 512;
/// Longest sleep when nothing is due: a safety net, the dispatcher is normally woken.
const IDLE_SLEEP: Duration = Duration::from_secs(30);
/// How often old attempts are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most outcomes written in one transaction.
const RECORD_BATCH: usize = 1024;
/// Most of a response body read (for the attempts log; the rest is dropped).
const MAX_BODY: usize = 64 * 1024;
/// How much of a failing answer's body the attempts log keeps.
const ERROR_SNIPPET: usize = 200;

/// What the routes and the dispatcher share: the SSRF guard and the wake-ups.
#[derive(Clone)]
pub struct WebhooksHandle {
    pub guard: Arc<Guard>,
    /// Deliveries were queued (rung on the database writer thread).
    work: Arc<Notify>,
    /// A slot freed up or the endpoints changed: worth a claim even when every endpoint
    /// was busy.
    capacity: Arc<Notify>,
}

impl WebhooksHandle {
    pub fn new(guard: Guard) -> WebhooksHandle {
        WebhooksHandle {
            guard: Arc::new(guard),
            work: Arc::new(Notify::new()),
            capacity: Arc::new(Notify::new()),
        }
    }

    /// Tells the dispatcher the endpoints changed (a wake-up is kept if it is busy).
    pub fn wake(&self) {
        self.work.notify_one();
        self.capacity.notify_one();
    }
}

/// The outbox worker; see the module docs.
pub struct Dispatcher {
    db: Db,
    handle: WebhooksHandle,
    client: reqwest::Client,
    timeout: Duration,
    schedule: Arc<Vec<Duration>>,
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhooks HTTP client: {0}")]
pub struct ClientError(String);

impl Dispatcher {
    pub fn new(db: Db, config: &Config, handle: WebhooksHandle) -> Result<Dispatcher, ClientError> {
        let timeout = config.webhooks.timeout.0;
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(VettedResolver(handle.guard.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(PER_ENDPOINT)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Dispatcher {
            db,
            handle,
            client,
            timeout,
            schedule: Arc::new(config.webhooks.retry_schedule.iter().map(|d| d.0).collect()),
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let work = self.handle.work.clone();
        let capacity = self.handle.capacity.clone();
        let waker = work.clone();
        if let Err::<_, StoreError>(e) = self
            .db
            .write(move |_| {
                store::install_waker(waker);
                Ok(())
            })
            .await
        {
            tracing::error!(error = %e, "cannot install the webhooks wake-up; deliveries will wait for the next poll");
        }
        let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let slots = Arc::new(Semaphore::new(GLOBAL));
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel::<Outcome>();
        let recorder = tokio::spawn(record_loop(
            self.db.clone(),
            outcomes_rx,
            self.schedule.clone(),
            capacity.clone(),
        ));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut last_prune: Option<Instant> = None;
        let lease = self.timeout + Duration::from_secs(60);
        loop {
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                match self.db.write(store::prune_attempts).await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "old webhook attempts pruned"),
                    Ok(_) => {}
                    Err::<_, StoreError>(e) => {
                        tracing::warn!(error = %e, "pruning webhook attempts failed")
                    }
                }
            }
            let global_free = slots.available_permits();
            let busy = in_flight.lock().map(|m| m.clone()).unwrap_or_default();
            let claimed = if global_free == 0 {
                Ok(Claim {
                    saturated: true,
                    ..Claim::default()
                })
            } else {
                self.db
                    .write(move |c| claim_round(c, &busy, global_free, lease))
                    .await
            };
            let claim = match claimed {
                Ok(c) => c,
                Err::<_, StoreError>(e) => {
                    tracing::error!(error = %e, "claiming webhook deliveries failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            };
            if claim.saturated {
                // Every endpoint is at its limit: new events cannot start before a slot
                // frees up, so only that (or new endpoints) is worth waking for.
                tokio::select! {
                    _ = capacity.notified() => {}
                    _ = tokio::time::sleep(IDLE_SLEEP) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            if claim.jobs.is_empty() {
                let wait = match claim.next_due_ms {
                    Some(t) => {
                        Duration::from_millis((t - time::now_ms()).max(1) as u64).min(IDLE_SLEEP)
                    }
                    None => IDLE_SLEEP,
                };
                tokio::select! {
                    _ = work.notified() => {}
                    _ = capacity.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for (endpoint, job) in claim.jobs {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                if let Ok(mut m) = in_flight.lock() {
                    *m.entry(job.webhook_id.clone()).or_default() += 1;
                }
                let client = self.client.clone();
                let guard = self.handle.guard.clone();
                let timeout = self.timeout;
                let in_flight = in_flight.clone();
                let outcomes = outcomes.clone();
                let capacity = capacity.clone();
                tasks.spawn(async move {
                    let outcome = attempt(&client, &guard, timeout, &endpoint, job).await;
                    if let Ok(mut m) = in_flight.lock()
                        && let Some(n) = m.get_mut(&outcome.webhook_id)
                    {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            m.remove(&outcome.webhook_id);
                        }
                    }
                    let _ = outcomes.send(outcome);
                    drop(permit);
                    capacity.notify_one();
                });
            }
        }
        // Shutdown: let the attempts under way finish (they are bounded by the timeout).
        let drained = tokio::time::timeout(self.timeout + Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "webhook attempts still running at shutdown; they will be retried at the next start"
            );
            tasks.abort_all();
        }
        drop(outcomes);
        let _ = recorder.await;
    }
}

/// What one claim round found: jobs with their endpoint, or when the next one is due, or
/// that every endpoint is at its limit.
#[derive(Default)]
struct Claim {
    jobs: Vec<(Arc<Endpoint>, Claimed)>,
    next_due_ms: Option<i64>,
    saturated: bool,
}

/// Claims due deliveries for every enabled endpoint with free slots, within `global_free`.
fn claim_round(
    conn: &rusqlite::Connection,
    busy: &HashMap<String, usize>,
    mut global_free: usize,
    lease: Duration,
) -> Result<Claim, StoreError> {
    let endpoints = store::enabled_endpoints(conn)?;
    let mut claim = Claim::default();
    // Endpoints with free slots and nothing due now: when is their next delivery due?
    // (Busy endpoints wake the dispatcher themselves when an attempt ends.)
    let mut waiting = Vec::new();
    let mut any_free = false;
    let any_endpoint = !endpoints.is_empty();
    for endpoint in endpoints {
        let free = PER_ENDPOINT
            .saturating_sub(busy.get(&endpoint.id).copied().unwrap_or(0))
            .min(global_free);
        if free == 0 {
            continue;
        }
        any_free = true;
        let jobs = store::claim(conn, &endpoint.id, free, lease)?;
        if jobs.is_empty() {
            waiting.push(endpoint.id);
            continue;
        }
        global_free -= jobs.len();
        let endpoint = Arc::new(endpoint);
        claim
            .jobs
            .extend(jobs.into_iter().map(|j| (endpoint.clone(), j)));
        if global_free == 0 {
            break;
        }
    }
    if claim.jobs.is_empty() {
        claim.saturated = any_endpoint && !any_free;
        claim.next_due_ms = store::next_due_ms(conn, &waiting)?;
    }
    Ok(claim)
}

/// Writes outcomes in batches until the channel closes, then wakes the dispatcher: a retry
/// may now be due sooner than anything it was waiting for.
async fn record_loop(
    db: Db,
    mut rx: mpsc::UnboundedReceiver<Outcome>,
    schedule: Arc<Vec<Duration>>,
    wake: Arc<Notify>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let schedule = schedule.clone();
        let n = batch.len();
        match db
            .write(move |c| store::record_outcomes(c, &batch, &schedule))
            .await
        {
            Ok(disabled) => {
                for id in disabled {
                    tracing::warn!(webhook_id = %id, "webhook endpoint disabled");
                }
                wake.notify_one();
            }
            Err::<_, StoreError>(e) => {
                tracing::error!(error = %e, outcomes = n, "recording webhook attempts failed; those deliveries will be retried when their lease ends");
            }
        }
    }
}

/// One signed POST of `job` to `endpoint`.
async fn attempt(
    client: &reqwest::Client,
    guard: &Guard,
    timeout: Duration,
    endpoint: &Endpoint,
    job: Claimed,
) -> Outcome {
    let started = Instant::now();
    let at_ms = time::now_ms();
    let result = send(client, guard, timeout, endpoint, &job).await;
    Outcome {
        delivery_id: job.delivery_id,
        webhook_id: job.webhook_id,
        event_id: job.event_id,
        event_type: job.event_type,
        attempts: job.attempts,
        result,
        duration_ms: started.elapsed().as_millis() as i64,
        at_ms,
    }
}

fn failed(error: impl Into<String>) -> AttemptResult {
    AttemptResult::Failed {
        status: None,
        error: error.into(),
        retry_after: None,
    }
}

async fn send(
    client: &reqwest::Client,
    guard: &Guard,
    timeout: Duration,
    endpoint: &Endpoint,
    job: &Claimed,
) -> AttemptResult {
    let url = match WebhookUrl::parse(&endpoint.url) {
        Ok(u) => u,
        Err(e) => return failed(e.to_string()),
    };
    // The client does not resolve IP-address hosts: check those here.
    if let Some(ip) = url.ip_literal()
        && let Err(e) = guard.check_ip(&ip.to_string(), ip)
    {
        return failed(e.to_string());
    }
    let Some(key) = SigningKey::parse(&endpoint.secret) else {
        return failed(
            "the endpoint's secret is unreadable; delete the endpoint and create it again",
        );
    };
    let timestamp = time::now();
    let signature = key.sign(&job.event_id, timestamp, &job.body);
    let request = client
        .post(url.url().clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            USER_AGENT,
            HeaderValue::from_static(concat!("mailsflux-webhooks/", env!("CARGO_PKG_VERSION"))),
        )
        .header("webhook-id", &job.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(job.body.clone());
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) => return failed(describe(&e, timeout)),
    };
    let status = response.status();
    let retry_after = if matches!(status.as_u16(), 429 | 502 | 504) {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    } else {
        None
    };
    // Read (a bounded part of) the body: it lets the connection be reused, and a failing
    // endpoint's answer explains the failure.
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() < MAX_BODY => body.extend_from_slice(&chunk),
            Ok(Some(_)) | Ok(None) => break,
            Err(e) if status.is_success() => {
                tracing::debug!(error = %e, "reading a webhook answer failed");
                break;
            }
            Err(_) => break,
        }
    }
    if status.is_success() {
        return AttemptResult::Delivered {
            status: status.as_u16(),
        };
    }
    if status == StatusCode::GONE {
        return AttemptResult::Gone;
    }
    let snippet: String = String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_SNIPPET)
        .collect();
    let mut error = format!("HTTP {}", status);
    if status.is_redirection() {
        error.push_str(" (redirects are not followed; register the final URL)");
    }
    if !snippet.trim().is_empty() {
        error.push_str(": ");
        error.push_str(snippet.trim());
    }
    AttemptResult::Failed {
        status: Some(status.as_u16()),
        error,
        retry_after,
    }
}

/// A sentence for a failed request: the SSRF guard's refusal, a timeout, or the chain of
/// causes (reqwest's own message alone says little).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut causes: Vec<String> = Vec::new();
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<TargetError>() {
            return t.to_string();
        }
        let text = err.to_string();
        if !causes.iter().any(|c| c.contains(&text)) {
            causes.push(text);
        }
        source = err.source();
    }
    if e.is_timeout() {
        return format!(
            "no answer within {} (webhooks.timeout)",
            humantime::format_duration(timeout)
        );
    }
    if e.is_connect() {
        return format!(
            "could not connect: {}",
            causes.last().cloned().unwrap_or_default()
        );
    }
    causes.join(": ")
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = ::time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = ::time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc()
        .unix_timestamp();
    Some(Duration::from_secs((at - time::now()).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = ::time::OffsetDateTime::now_utc() + ::time::Duration::seconds(100);
        let format = ::time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let got = parse_retry_after(&later.format(&format).unwrap()).unwrap();
        assert!((98..=100).contains(&got.as_secs()), "{got:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}

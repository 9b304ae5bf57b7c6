//! SQL of the webhooks capability: endpoints and their subscriptions, the outbox
//! (`webhook_deliveries`) with its leases, and the attempts log.
//!
//! [`enqueue_for_event`] runs inside `events::record`, in the transaction that records the
//! event, on the database writer thread. It is one statement over the subscriptions'
//! primary key, and it is skipped when the writer's copy of the subscribed event types
//! (see [`is_subscribed`]) says nobody listens: most events of a busy server have no
//! endpoint, and the probe was a twentieth of the writer's time.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::http::PageRequest;
use crate::keys::Mode;
use crate::store::{StoreError, ids, time};

/// An endpoint failing every delivery for this long is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);
/// Attempts are kept this long.
pub const ATTEMPTS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

thread_local! {
    /// The dispatcher's wake-up, installed on the database writer thread (each database has
    /// its own writer thread, so each app its own waker). Waking before the commit is safe:
    /// the dispatcher claims through the same writer, so its claim runs after this commit.
    static WAKER: RefCell<Option<Arc<Notify>>> = const { RefCell::new(None) };
}

/// The event types each mode's endpoints listen to, as last read on this thread.
struct Subscribed {
    /// The database it was read from: tests run several databases in one process.
    path: String,
    /// `store::rollback_epoch()` when it was read.
    epoch: u64,
    /// Per mode, the event types listened to (`*` for every type).
    types: HashMap<Mode, HashSet<String>>,
}

thread_local! {
    /// Read again after any change to `webhook_subscriptions` on this thread (see
    /// [`forget_subscriptions`]) and after any rollback of the writer.
    static SUBSCRIBED: RefCell<Option<Subscribed>> = const { RefCell::new(None) };
}

/// Whether any endpoint of `mode` listens to `webhook_type` (or to everything), as of the
/// caller's transaction. Answered from a copy kept on the calling thread (the writer),
/// read again after it changed the subscriptions or rolled anything back, so an event is
/// never left out; a database without a file path is always asked.
pub fn is_subscribed(
    conn: &Connection,
    mode: Mode,
    webhook_type: &str,
) -> Result<bool, StoreError> {
    let path = conn.path().unwrap_or_default();
    if path.is_empty() {
        return any_subscription(conn, mode, webhook_type);
    }
    let epoch = crate::store::rollback_epoch();
    SUBSCRIBED.with(|cell| {
        let mut cached = cell.borrow_mut();
        let fresh = matches!(&*cached, Some(s) if s.epoch == epoch && s.path == path);
        if !fresh {
            let mut types: HashMap<Mode, HashSet<String>> = HashMap::new();
            let mut stmt =
                conn.prepare_cached("SELECT DISTINCT mode, event_type FROM webhook_subscriptions")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let mode: String = row.get(0)?;
                types
                    .entry(Mode::parse(&mode).unwrap_or(Mode::Test))
                    .or_default()
                    .insert(row.get(1)?);
            }
            *cached = Some(Subscribed {
                path: path.to_string(),
                epoch,
                types,
            });
        }
        let types = &cached.as_ref().expect("loaded above").types;
        // Looked up by `&str`: this runs for every event the writer records.
        Ok(types
            .get(&mode)
            .is_some_and(|t| t.contains(webhook_type) || t.contains("*")))
    })
}

fn any_subscription(conn: &Connection, mode: Mode, webhook_type: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM webhook_subscriptions WHERE mode = ?1 AND event_type IN (?2, '*') LIMIT 1",
        )?
        .query_row(params![mode.as_str(), webhook_type], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Drops this thread's copy of the subscriptions; every change to `webhook_subscriptions`
/// calls it before it returns, in the same transaction.
fn forget_subscriptions() {
    SUBSCRIBED.with(|cell| *cell.borrow_mut() = None);
}

/// Installs the dispatcher's wake-up on the current thread. Call it from a `Db::write` job,
/// so it lands on the writer thread where every event is recorded.
pub fn install_waker(notify: Arc<Notify>) {
    WAKER.with(|w| *w.borrow_mut() = Some(notify));
}

/// Queues the event for every enabled endpoint of `mode` subscribed to `webhook_type` (or
/// to everything), in the caller's transaction. Returns the deliveries queued.
pub fn enqueue_for_event(
    conn: &Connection,
    mode: Mode,
    event_id: &str,
    webhook_type: &str,
) -> Result<usize, StoreError> {
    if !is_subscribed(conn, mode, webhook_type)? {
        return Ok(0);
    }
    let n = conn
        .prepare_cached(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, next_attempt_ms)
             SELECT webhook_id, ?2, ?3, ?4 FROM webhook_subscriptions
             WHERE mode = ?1 AND event_type IN (?3, '*')",
        )?
        .execute(params![
            mode.as_str(),
            event_id,
            webhook_type,
            time::now_ms()
        ])?;
    if n > 0 {
        WAKER.with(|w| {
            if let Some(notify) = w.borrow().as_ref() {
                notify.notify_one();
            }
        });
    }
    Ok(n)
}

/// An endpoint as the API shows it. `secret` only in the answer that creates it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub object: &'static str,
    pub url: String,
    pub events: Vec<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub description: Option<String>,
    pub created_at: String,
}

/// A checked endpoint to store.
pub struct NewWebhook {
    pub mode: Mode,
    pub url: String,
    /// Known types, deduplicated; `["*"]` alone for everything.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub secret: String,
}

/// Stores an endpoint and its subscriptions.
pub fn create(conn: &Connection, w: &NewWebhook) -> Result<WebhookView, StoreError> {
    let id = ids::new_id("whk");
    let now = time::now();
    let events_json = serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into());
    conn.execute(
        "INSERT INTO webhooks (id, mode, url, events_json, secret, description, status,
                               created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'enabled', ?7, ?7)",
        params![
            id,
            w.mode.as_str(),
            w.url,
            events_json,
            w.secret,
            w.description,
            now
        ],
    )?;
    let mut sub = conn.prepare_cached(
        "INSERT OR IGNORE INTO webhook_subscriptions (mode, event_type, webhook_id) VALUES (?1, ?2, ?3)",
    )?;
    for event in &w.events {
        sub.execute(params![w.mode.as_str(), event, id])?;
    }
    forget_subscriptions();
    Ok(WebhookView {
        id,
        object: "webhook",
        url: w.url.clone(),
        events: w.events.clone(),
        status: "enabled".into(),
        secret: Some(w.secret.clone()),
        description: w.description.clone(),
        created_at: time::format(now),
    })
}

const VIEW_COLUMNS: &str = "id, url, events_json, status, description, created_at";

fn view_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookView> {
    let events: String = r.get(2)?;
    Ok(WebhookView {
        id: r.get(0)?,
        object: "webhook",
        url: r.get(1)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        status: r.get(3)?,
        secret: None,
        description: r.get(4)?,
        created_at: time::format(r.get(5)?),
    })
}

/// One endpoint of `mode`, without its secret.
pub fn get(conn: &Connection, mode: Mode, id: &str) -> Result<Option<WebhookView>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {VIEW_COLUMNS} FROM webhooks WHERE mode = ?1 AND id = ?2"),
            params![mode.as_str(), id],
            view_row,
        )
        .optional()?)
}

/// A page of endpoints of `mode`, newest first (`limit + 1` rows to tell `has_more`).
pub fn list(
    conn: &Connection,
    mode: Mode,
    page: &PageRequest,
) -> Result<Vec<WebhookView>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VIEW_COLUMNS} FROM webhooks
         WHERE mode = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = stmt
        .query_map(
            params![mode.as_str(), page.before_id, (page.limit + 1) as i64],
            view_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes an endpoint with its subscriptions, pending deliveries and attempts. Returns
/// false when `mode` has no such endpoint.
pub fn delete(conn: &Connection, mode: Mode, id: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "DELETE FROM webhooks WHERE mode = ?1 AND id = ?2",
        params![mode.as_str(), id],
    )?;
    if n == 0 {
        return Ok(false);
    }
    conn.execute(
        "DELETE FROM webhook_subscriptions WHERE webhook_id = ?1",
        [id],
    )?;
    forget_subscriptions();
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", [id])?;
    conn.execute("DELETE FROM webhook_attempts WHERE webhook_id = ?1", [id])?;
    Ok(true)
}

/// Disables an endpoint: no new deliveries are queued for it and its pending ones are
/// dropped (a disabled endpoint would otherwise pile up work nobody receives).
pub fn disable(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE webhooks SET status = 'disabled', updated_at = ?2 WHERE id = ?1",
        params![id, time::now()],
    )?;
    conn.execute(
        "DELETE FROM webhook_subscriptions WHERE webhook_id = ?1",
        [id],
    )?;
    forget_subscriptions();
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?1", [id])?;
    Ok(())
}

/// One attempt as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub id: String,
    pub object: &'static str,
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt of this delivery.
    pub attempt: i64,
    /// `delivered`, `retry_scheduled`, `gave_up` or `endpoint_disabled`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub next_attempt_at: Option<String>,
    pub at: String,
}

/// A page of an endpoint's attempts, newest first; `None` when `mode` has no such endpoint.
pub fn list_attempts(
    conn: &Connection,
    mode: Mode,
    webhook_id: &str,
    page: &PageRequest,
) -> Result<Option<Vec<AttemptView>>, StoreError> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM webhooks WHERE mode = ?1 AND id = ?2",
            params![mode.as_str(), webhook_id],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, event_type, attempt, outcome, status_code, error, duration_ms,
                next_attempt_ms, at
         FROM webhook_attempts
         WHERE webhook_id = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(
            params![webhook_id, page.before_id, (page.limit + 1) as i64],
            |r| {
                let next: Option<i64> = r.get(8)?;
                let at: i64 = r.get(9)?;
                Ok(AttemptView {
                    id: r.get(0)?,
                    object: "webhook_attempt",
                    event_id: r.get(1)?,
                    event_type: r.get(2)?,
                    attempt: r.get(3)?,
                    outcome: r.get(4)?,
                    status_code: r.get(5)?,
                    error: r.get(6)?,
                    duration_ms: r.get(7)?,
                    next_attempt_at: next.map(|ms| time::format(ms.div_euclid(1000))),
                    at: time::format(at.div_euclid(1000)),
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(rows))
}

// ---- the dispatcher's side ----

/// Hands every lease back. At start every lease belongs to a dead process (one `serve`
/// owns the database), so those deliveries are due at once.
pub fn release_all_leases(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE webhook_deliveries SET leased = 0, next_attempt_ms = ?1 WHERE leased = 1",
        [time::now_ms()],
    )?)
}

/// An enabled endpoint, as the dispatcher needs it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: String,
}

/// Every enabled endpoint (both modes).
pub fn enabled_endpoints(conn: &Connection) -> Result<Vec<Endpoint>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, url, secret FROM webhooks WHERE status = 'enabled'")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Endpoint {
                id: r.get(0)?,
                url: r.get(1)?,
                secret: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A delivery claimed for one attempt, with the body to send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub body: Vec<u8>,
}

/// Claims up to `limit` due deliveries of one endpoint: their due time moves to the end of
/// the lease, so nobody claims them again unless this process dies.
pub fn claim(
    conn: &Connection,
    webhook_id: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let now = time::now_ms();
    let mut select = conn.prepare_cached(
        "SELECT d.id, d.event_id, d.event_type, d.attempts, e.email_id, e.mail_id, e.recipient,
                e.detail, e.data_json, e.occurred_at, m.tags_json
         FROM webhook_deliveries d
         JOIN events e ON e.id = d.event_id
         LEFT JOIN emails m ON m.id = e.email_id
         WHERE d.webhook_id = ?1 AND d.next_attempt_ms <= ?2
         ORDER BY d.next_attempt_ms LIMIT ?3",
    )?;
    let rows = select
        .query_map(params![webhook_id, now, limit as i64], |r| {
            let event = EventRow {
                email_id: r.get(4)?,
                mail_id: r.get(5)?,
                recipient: r.get(6)?,
                detail: r.get(7)?,
                data_json: r.get(8)?,
                occurred_at: r.get(9)?,
                tags_json: r.get(10)?,
            };
            let event_type: String = r.get(2)?;
            Ok(Claimed {
                delivery_id: r.get(0)?,
                webhook_id: webhook_id.to_string(),
                event_id: r.get(1)?,
                body: payload(&event_type, &event),
                event_type,
                attempts: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut lease_stmt = conn.prepare_cached(
        "UPDATE webhook_deliveries SET leased = 1, next_attempt_ms = ?2 WHERE id = ?1",
    )?;
    let until = now + lease.as_millis() as i64;
    for c in &rows {
        lease_stmt.execute(params![c.delivery_id, until])?;
    }
    Ok(rows)
}

struct EventRow {
    email_id: Option<String>,
    mail_id: Option<String>,
    recipient: Option<String>,
    detail: Option<String>,
    data_json: Option<String>,
    occurred_at: i64,
    tags_json: Option<String>,
}

/// The JSON body of an event: `{"type", "timestamp", "data"}`. Built from the stored
/// event, so every attempt sends the same bytes.
fn payload(event_type: &str, e: &EventRow) -> Vec<u8> {
    let stored: Option<Value> = e
        .data_json
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok());
    let data = if let Some(email_id) = &e.email_id {
        let tags = e
            .tags_json
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or_else(|| json!({}));
        let mut data = json!({
            "email_id": email_id,
            "recipient": e.recipient,
            "tags": tags,
            "detail": e.detail,
        });
        merge_extra(&mut data, stored);
        data
    } else if let Some(mail_id) = &e.mail_id {
        let mut data = json!({ "mail_id": mail_id, "detail": e.detail });
        merge_extra(&mut data, stored);
        data
    } else {
        let mut data = match stored {
            Some(Value::Object(map)) => Value::Object(map),
            Some(other) => json!({ "value": other }),
            None => Value::Object(Map::new()),
        };
        if let (Some(detail), Value::Object(map)) = (&e.detail, &mut data) {
            map.entry("detail").or_insert_with(|| json!(detail));
        }
        data
    };
    serde_json::to_vec(&json!({
        "type": event_type,
        "timestamp": time::format(e.occurred_at),
        "data": data,
    }))
    .unwrap_or_default()
}

/// Adds an event's stored data members that the payload does not already have.
fn merge_extra(data: &mut Value, stored: Option<Value>) {
    if let (Value::Object(target), Some(Value::Object(extra))) = (data, stored) {
        for (k, v) in extra {
            target.entry(k).or_insert(v);
        }
    }
}

/// The earliest due time (Unix ms) among `endpoints`' deliveries, if any waits.
pub fn next_due_ms(conn: &Connection, endpoints: &[String]) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT min(next_attempt_ms) FROM webhook_deliveries WHERE webhook_id = ?1",
    )?;
    let mut next: Option<i64> = None;
    for id in endpoints {
        let t: Option<i64> = stmt.query_row([id], |r| r.get(0))?;
        next = match (next, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(next)
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// `410 Gone`: the endpoint is disabled.
    Gone,
    /// Anything else: retried on the schedule (or after `retry_after`).
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// An attempt to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: i64,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub result: AttemptResult,
    pub duration_ms: i64,
    pub at_ms: i64,
}

/// Records attempts: deletes delivered (and given up) deliveries, schedules retries, logs
/// every attempt, tracks failing endpoints and disables the ones that answered 410 or have
/// failed every delivery for [`DISABLE_AFTER`]. Returns the endpoints disabled.
pub fn record_outcomes(
    conn: &Connection,
    outcomes: &[Outcome],
    schedule: &[Duration],
) -> Result<Vec<String>, StoreError> {
    let now_ms = time::now_ms();
    let mut remove = conn.prepare_cached("DELETE FROM webhook_deliveries WHERE id = ?1")?;
    let mut retry = conn.prepare_cached(
        "UPDATE webhook_deliveries SET attempts = ?2, next_attempt_ms = ?3, leased = 0 WHERE id = ?1",
    )?;
    let mut log = conn.prepare_cached(
        "INSERT INTO webhook_attempts (id, webhook_id, event_id, event_type, attempt, outcome,
                                       status_code, error, duration_ms, next_attempt_ms, at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE id = ?2)",
    )?;
    let mut healthy: Vec<&str> = Vec::new();
    let mut failing: Vec<&str> = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    for o in outcomes {
        let attempt = o.attempts + 1;
        let (outcome, status, error, next) = match &o.result {
            AttemptResult::Delivered { status } => {
                remove.execute([o.delivery_id])?;
                if !healthy.contains(&o.webhook_id.as_str()) {
                    healthy.push(&o.webhook_id);
                }
                ("delivered", Some(*status), None, None)
            }
            AttemptResult::Gone => {
                if !gone.contains(&o.webhook_id) {
                    gone.push(o.webhook_id.clone());
                }
                (
                    "endpoint_disabled",
                    Some(410),
                    Some("410 Gone: the endpoint asked not to be called again".to_string()),
                    None,
                )
            }
            AttemptResult::Failed {
                status,
                error,
                retry_after,
            } => {
                if !failing.contains(&o.webhook_id.as_str()) {
                    failing.push(&o.webhook_id);
                }
                // Entry k of the schedule is the wait before retry k.
                match schedule.get(o.attempts as usize) {
                    Some(wait) => {
                        let wait = retry_after.map(|r| r.min(MAX_RETRY_AFTER)).unwrap_or(*wait);
                        let at = now_ms + wait.as_millis() as i64;
                        retry.execute(params![o.delivery_id, attempt, at])?;
                        ("retry_scheduled", *status, Some(error.clone()), Some(at))
                    }
                    None => {
                        remove.execute([o.delivery_id])?;
                        ("gave_up", *status, Some(error.clone()), None)
                    }
                }
            }
        };
        log.execute(params![
            ids::new_id("wha"),
            o.webhook_id,
            o.event_id,
            o.event_type,
            attempt,
            outcome,
            status.map(i64::from),
            error,
            o.duration_ms,
            next,
            o.at_ms
        ])?;
    }
    let mut clear = conn.prepare_cached(
        "UPDATE webhooks SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
    )?;
    for id in &healthy {
        clear.execute([id])?;
    }
    let mut mark = conn.prepare_cached(
        "UPDATE webhooks SET failing_since = coalesce(failing_since, ?2)
         WHERE id = ?1 AND status = 'enabled' RETURNING failing_since",
    )?;
    let now = now_ms.div_euclid(1000);
    let mut disabled = gone.clone();
    for id in failing.iter().filter(|id| !healthy.contains(id)) {
        let since: Option<Option<i64>> =
            mark.query_row(params![id, now], |r| r.get(0)).optional()?;
        if let Some(Some(since)) = since
            && now - since >= DISABLE_AFTER.as_secs() as i64
            && !disabled.iter().any(|d| d == id)
        {
            disabled.push(id.to_string());
        }
    }
    for id in &disabled {
        disable(conn, id)?;
    }
    Ok(disabled)
}

/// Deletes attempts older than [`ATTEMPTS_KEPT`] (ids are time-ordered ULIDs).
pub fn prune_attempts(conn: &Connection) -> Result<usize, StoreError> {
    let cutoff_ms = time::now_ms() - ATTEMPTS_KEPT.as_millis() as i64;
    Ok(conn.execute("DELETE FROM webhook_attempts WHERE at < ?1", [cutoff_ms])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        conn
    }

    fn endpoint(conn: &Connection, events: &[&str]) -> String {
        create(
            conn,
            &NewWebhook {
                mode: Mode::Test,
                url: "https://example.com/hook".into(),
                events: events.iter().map(|s| s.to_string()).collect(),
                description: None,
                secret: "whsec_AAAA".into(),
            },
        )
        .unwrap()
        .id
    }

    fn pending(conn: &Connection, id: &str) -> i64 {
        conn.query_row(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn enqueue_follows_filters_and_modes() {
        let conn = db();
        let all = endpoint(&conn, &["*"]);
        let delivered = endpoint(&conn, &["email.delivered"]);
        assert_eq!(
            enqueue_for_event(&conn, Mode::Test, "evt_1", "email.delivered").unwrap(),
            2
        );
        assert_eq!(
            enqueue_for_event(&conn, Mode::Test, "evt_2", "email.bounced").unwrap(),
            1
        );
        assert_eq!(
            enqueue_for_event(&conn, Mode::Live, "evt_3", "email.delivered").unwrap(),
            0
        );
        assert_eq!(pending(&conn, &all), 2);
        assert_eq!(pending(&conn, &delivered), 1);
        disable(&conn, &delivered).unwrap();
        assert_eq!(
            enqueue_for_event(&conn, Mode::Test, "evt_4", "email.delivered").unwrap(),
            1
        );
        assert_eq!(pending(&conn, &delivered), 0);
    }

    #[test]
    fn endpoint_failing_for_five_days_is_disabled() {
        let conn = db();
        let id = endpoint(&conn, &["*"]);
        let failed = |delivery_id| Outcome {
            delivery_id,
            webhook_id: id.clone(),
            event_id: "evt_1".into(),
            event_type: "email.delivered".into(),
            attempts: 0,
            result: AttemptResult::Failed {
                status: Some(500),
                error: "HTTP 500".into(),
                retry_after: None,
            },
            duration_ms: 3,
            at_ms: time::now_ms(),
        };
        let schedule = [Duration::ZERO, Duration::from_secs(5)];
        // Failing for four days: still enabled.
        conn.execute(
            "UPDATE webhooks SET failing_since = ?2 WHERE id = ?1",
            params![id, time::now() - 4 * 24 * 3600],
        )
        .unwrap();
        assert!(
            record_outcomes(&conn, &[failed(1)], &schedule)
                .unwrap()
                .is_empty()
        );
        // A success clears the streak.
        let mut ok = failed(2);
        ok.result = AttemptResult::Delivered { status: 200 };
        record_outcomes(&conn, &[ok], &schedule).unwrap();
        let since: Option<i64> = conn
            .query_row(
                "SELECT failing_since FROM webhooks WHERE id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(since, None);
        // Failing for five days and more: disabled.
        conn.execute(
            "UPDATE webhooks SET failing_since = ?2 WHERE id = ?1",
            params![id, time::now() - 5 * 24 * 3600 - 1],
        )
        .unwrap();
        assert_eq!(
            record_outcomes(&conn, &[failed(3)], &schedule).unwrap(),
            std::slice::from_ref(&id)
        );
        let status: String = conn
            .query_row("SELECT status FROM webhooks WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "disabled");
    }

    #[test]
    fn suppression_payload_is_the_stored_data() {
        let body = payload(
            "suppression.added",
            &EventRow {
                email_id: None,
                mail_id: None,
                recipient: Some("a@b.test".into()),
                detail: None,
                data_json: Some(r#"{"email":"a@b.test","reason":"bounce"}"#.into()),
                occurred_at: 0,
                tags_json: None,
            },
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "suppression.added");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(v["data"], json!({"email": "a@b.test", "reason": "bounce"}));
    }
}

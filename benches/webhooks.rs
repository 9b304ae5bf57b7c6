//! Webhooks benchmark (not a test: nothing is asserted). Run it with `scripts/bench-webhooks`
//! (`cargo bench --bench webhooks`, the release profile).
//!
//! 1. Dispatch: events delivered per second to a local receiver that answers at once. The
//!    receiver holds its calls while a backlog of events is ingested (test-mode batch
//!    sends), then opens: the figure is the backlog drained per second, dispatch alone.
//! 2. Ingest cost: single sends/s and batch emails/s with no endpoint; with 3 endpoints
//!    subscribed to everything whose receiver holds every call (the outbox rows are written
//!    but hardly any is delivered: the cost of enqueueing alone); and with 3 endpoints
//!    answering at once (the dispatcher delivering on the same CPU as the sends arrive).
//!
//! Everything runs in this process on one machine: the server, its workers, the receiver
//! and the clients share the CPU, as they would on a small VPS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use mailsflux::config::{DeliveryMode, DurationSetting};
use mailsflux::keys::{self, Mode, Permission};
use mailsflux::store::{Db, StoreError};
use mailsflux::{Application, Config};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Emails of the dispatch backlog (two events each: queued, delivered).
const BACKLOG_EMAILS: usize = 10_000;
/// Emails per batch request.
const BATCH: usize = 500;
/// Batch requests for the ingest figure.
const INGEST_BATCHES: usize = 20;
/// Single sends for the ingest figure, and how many clients send at once.
const SINGLE_SENDS: usize = 4_000;
const CLIENTS: usize = 16;

struct Receiver {
    port: u16,
    count: Arc<AtomicU64>,
    gate: watch::Sender<bool>,
}

async fn start_receiver() -> Receiver {
    let count = Arc::new(AtomicU64::new(0));
    let (gate, gate_rx) = watch::channel(false);
    let c = count.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let c = c.clone();
        let gate = gate_rx.clone();
        App::new().default_service(web::to(move |_body: web::Bytes| {
            let c = c.clone();
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                c.fetch_add(1, Ordering::Relaxed);
                HttpResponse::Ok().finish()
            }
        }))
    })
    .workers(1)
    .backlog(4096)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    Receiver { port, count, gate }
}

struct Server {
    app_url: String,
    key: String,
    db_path: std::path::PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    handle: actix_web::dev::ServerHandle,
}

async fn start_server() -> Server {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.database.path = dir.path().join("bench.db");
    config.delivery.mode = DeliveryMode::Relay;
    config.delivery.require_verified_domain = false;
    config.webhooks.allow_private_targets = true;
    config.webhooks.timeout = DurationSetting(Duration::from_secs(120));
    let db_path = config.database.path.clone();
    let db_config = config.database.clone();
    let key = tokio::task::spawn_blocking(move || {
        let db = Db::open(&db_config).unwrap();
        let (_, key) = db
            .write_blocking(|c| -> Result<_, StoreError> {
                keys::create(c, "bench", Mode::Test, Permission::FullAccess)
            })
            .unwrap();
        db.close();
        key
    })
    .await
    .unwrap();
    let app = Application::build(config).await.unwrap();
    let app_url = format!("http://127.0.0.1:{}", app.port());
    let handle = app.server_handle();
    tokio::spawn(app.run_until_stopped());
    Server {
        app_url,
        key,
        db_path,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
        _dir: dir,
        handle,
    }
}

impl Server {
    async fn post(&self, path: &str, body: &Value) -> Value {
        let res = self
            .client
            .post(format!("{}{path}", self.app_url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    async fn endpoint(&self, url: &str) {
        self.post("/v1/webhooks", &json!({"url": url, "events": ["*"]}))
            .await;
    }

    fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn email(i: usize) -> Value {
    json!({
        "from": "Bench <bench@acme.test>",
        "to": format!("user{i}@example.org"),
        "subject": "Benchmark",
        "text": "Hello from the benchmark.",
        "tags": {"run": "bench"}
    })
}

fn batch_body(start: usize) -> Value {
    Value::Array((start..start + BATCH).map(email).collect())
}

/// Sends `batches` batch requests from `CLIENTS / 4` clients; returns emails per second.
async fn ingest_batches(server: &Arc<Server>, batches: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let clients = (CLIENTS / 4).max(1);
    for c in 0..clients {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut b = c;
            while b < batches {
                server
                    .post("/v1/emails/batch", &batch_body(b * BATCH))
                    .await;
                b += clients;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (batches * BATCH) as f64 / started.elapsed().as_secs_f64()
}

/// Sends `n` single emails from `CLIENTS` clients; returns sends per second.
async fn ingest_singles(server: &Arc<Server>, n: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while i < n {
                server.post("/v1/emails/send", &email(i)).await;
                i += CLIENTS;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn dispatch_figure() {
    let rx = start_receiver().await;
    let server = Arc::new(start_server().await);
    server
        .endpoint(&format!("http://127.0.0.1:{}/hook", rx.port))
        .await;
    let events = (BACKLOG_EMAILS * 2) as i64;
    ingest_batches(&server, BACKLOG_EMAILS / BATCH).await;
    // Every email captured, so every event (queued + delivered) is in the outbox.
    let s = server.clone();
    wait_until("the backlog", Duration::from_secs(300), move || {
        s.count("SELECT count(*) FROM events") >= events
    })
    .await;
    let queued = server.count("SELECT count(*) FROM webhook_deliveries");
    let started = Instant::now();
    rx.gate.send_replace(true);
    let count = rx.count.clone();
    wait_until("the deliveries", Duration::from_secs(600), move || {
        count.load(Ordering::Relaxed) as i64 >= events
    })
    .await;
    let drained = started.elapsed();
    // Wait for the last outcomes to be recorded, so the figure includes that work.
    let s = server.clone();
    wait_until("the outbox to empty", Duration::from_secs(60), move || {
        s.count("SELECT count(*) FROM webhook_deliveries") == 0
    })
    .await;
    let recorded = started.elapsed();
    println!(
        "dispatch: {events} events (outbox {queued}) delivered in {:.2}s = {:.0} events/s; all outcomes recorded after {:.2}s = {:.0} events/s",
        drained.as_secs_f64(),
        events as f64 / drained.as_secs_f64(),
        recorded.as_secs_f64(),
        events as f64 / recorded.as_secs_f64(),
    );
    server.handle.stop(true).await;
}

async fn ingest_figures(endpoints: usize, hold: bool) {
    let rx = start_receiver().await;
    rx.gate.send_replace(!hold);
    let server = Arc::new(start_server().await);
    for i in 0..endpoints {
        server
            .endpoint(&format!("http://127.0.0.1:{}/hook{i}", rx.port))
            .await;
    }
    // Warm up (connections, caches).
    ingest_singles(&server, 200).await;
    let singles = ingest_singles(&server, SINGLE_SENDS).await;
    let batch = ingest_batches(&server, INGEST_BATCHES).await;
    let queued = server.count("SELECT count(*) FROM webhook_deliveries");
    println!(
        "ingest with {endpoints} endpoint(s) subscribed to \"*\"{}: {singles:.0} single sends/s ({CLIENTS} clients), {batch:.0} batch emails/s ({BATCH} per request, {} clients); webhook calls answered meanwhile: {}, deliveries in the outbox after: {queued}",
        if hold {
            " (receiver holding calls)"
        } else {
            ""
        },
        (CLIENTS / 4).max(1),
        rx.count.load(Ordering::Relaxed)
    );
    // Let held calls finish, so the graceful stop does not wait for their timeout.
    rx.gate.send_replace(true);
    server.handle.stop(true).await;
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries too: only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("webhooks benchmark: run it with scripts/bench-webhooks");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    dispatch_figure().await;
    ingest_figures(0, false).await;
    ingest_figures(3, true).await;
    ingest_figures(3, false).await;
}

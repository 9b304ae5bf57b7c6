//! mailsflux: a self-hosted email and physical-mail API. One binary, one SQLite file.
//!
//! [`Application::build`] turns a [`Config`] into a running server (HTTP API, background
//! workers); `main` and every integration test use it, so tests run the real thing.

/// Blocking threads of each HTTP worker (actix's default is 512 divided among the
/// workers): SQLite reads and MIME building are short, and there are 8 read connections.
pub const BLOCKING_THREADS_PER_WORKER: usize = 8;

pub mod address;
pub mod audiences;
pub mod config;
pub mod dashboard;
pub mod delivery;
pub mod domains;
pub mod emails;
pub mod events;
pub mod http;
pub mod keys;
pub mod ops;
pub mod postal;
pub mod store;
pub mod suppressions;
pub mod templates;
pub mod tracking;
pub mod webhooks;

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use base64::Engine;
use rusqlite::OptionalExtension;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa_actix_web::AppExt;

pub use config::Config;
use delivery::{DeliveryHandle, Worker};
use http::auth::AuthState;
use http::idempotency::InFlight;
use ops::metrics::Metrics;
use store::{Db, StoreError};
use webhooks::{Dispatcher, WebhooksHandle};

/// What handlers share.
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub delivery: DeliveryHandle,
    pub in_flight: InFlight,
    /// Secret for signed tokens (tracking, unsubscribe, sessions), made on first start.
    pub server_secret: Arc<Vec<u8>>,
    /// The webhooks' SSRF guard (checks URLs at registration) and dispatcher wake-up.
    pub webhooks: WebhooksHandle,
    /// Sending domains: DNS checks, and the From-domain lookup and signing of each send.
    pub domains: Arc<domains::Domains>,
    /// Compiled user templates, shared by sends and previews.
    pub templates: Arc<templates::TemplateCache>,
    /// Wakes the worker that makes the copies of audience sends.
    pub audience_sends: audiences::sender::SenderHandle,
    /// Gathers concurrent single sends into shared writer jobs.
    pub sends: Arc<emails::routes::SendCombiner>,
    /// The public links' base URL and signer, keyed once (deriving the key hashes four
    /// SHA-256 blocks, which every send and every link hit used to do again).
    pub links: tracking::copies::Links,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A worker could not be set up (e.g. the DNS resolver).
    #[error("{0}")]
    Setup(String),
}

impl StartError {
    /// Exit code: 2 for what the operator must fix in the setup, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::AlreadyRunning(_) | StartError::Listen { .. } => 2,
            _ => 1,
        }
    }
}

/// Exclusive lock next to the database: one `serve` per database file.
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    pub fn acquire(db_path: &std::path::Path) -> Result<InstanceLock, StartError> {
        let mut lock_path = db_path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        if let Some(parent) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match file.try_lock() {
            Ok(()) => Ok(InstanceLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StartError::AlreadyRunning(format!(
                "another `mailsflux serve` is already using the database {} (lock file {}); run one server per database file",
                db_path.display(),
                lock_path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StartError::Io(e)),
        }
    }
}

/// Reads the server secret, making it on first start.
fn server_secret(db: &Db) -> Result<Vec<u8>, StoreError> {
    db.write_blocking(|conn| -> Result<Vec<u8>, StoreError> {
        let existing: Option<String> = conn
            .query_row(
                "SELECT value FROM settings WHERE key = 'server_secret'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let engine = base64::engine::general_purpose::STANDARD;
        if let Some(value) = existing.and_then(|v| engine.decode(v).ok()) {
            return Ok(value);
        }
        let secret: [u8; 32] = rand::random();
        conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES ('server_secret', ?1)",
            [engine.encode(secret)],
        )?;
        Ok(secret.to_vec())
    })
}

/// A key made on the first start of an empty database, to print once.
pub struct FirstKey {
    pub token: String,
}

/// Every route of the app. Public routes first; everything under `/v1` requires a key. Routes
/// under `/v1` are registered through utoipa-actix-web, so each one is in the OpenAPI document.
pub fn configure_app(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(ops::routes)
        .configure(dashboard::routes)
        .configure(postal::routes::public_routes)
        .configure(tracking::routes::routes)
        .service(
            utoipa_actix_web::scope("/v1")
                .wrap(from_fn(http::auth::require_api_key))
                .configure(emails::routes::routes)
                .configure(domains::routes::routes)
                .configure(templates::routes::routes)
                .configure(postal::routes::routes)
                .configure(webhooks::routes::routes)
                .configure(audiences::routes::routes)
                .configure(suppressions::routes::routes),
        );
}

/// A running server and its workers.
pub struct Application {
    port: u16,
    server: Option<Server>,
    handle: ServerHandle,
    shutdown: watch::Sender<bool>,
    worker: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
    postal_worker: Option<JoinHandle<()>>,
    sender: Option<JoinHandle<()>>,
    maintenance: JoinHandle<()>,
    /// Writes when each API key was last used (see `keys::usage`).
    key_usage: Option<JoinHandle<()>>,
    /// Copies new recipients to the `to` filter's index (see `emails::indexer`).
    indexer: JoinHandle<()>,
    domain_checks: JoinHandle<()>,
    db: Db,
    first_key: Option<FirstKey>,
    _lock: InstanceLock,
}

impl Application {
    /// Opens the database (migrating it), binds `server.listen` (port 0 picks a free one),
    /// and starts the HTTP server and the workers. Call from inside a Tokio runtime.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        // TLS for SMTP and HTTPS clients uses ring; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Arc::new(config);
        let lock = InstanceLock::acquire(&config.database.path)?;
        let db_config = config.database.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&db_config))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let db2 = db.clone();
        let (secret, first_key) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let secret = server_secret(&db2)?;
            let first_key = db2.write_blocking(|conn| -> Result<Option<FirstKey>, StoreError> {
                if keys::any(conn)? {
                    return Ok(None);
                }
                let (_, token) = keys::create(
                    conn,
                    "default test key",
                    keys::Mode::Test,
                    keys::Permission::FullAccess,
                )?;
                Ok(Some(FirstKey { token }))
            })?;
            let released = db2.write_blocking(delivery::queue::release_all_leases)?;
            if released > 0 {
                tracing::info!(
                    recipients = released,
                    "recipients from an interrupted run are back in the queue"
                );
            }
            let released = db2.write_blocking(webhooks::store::release_all_leases)?;
            if released > 0 {
                tracing::info!(
                    deliveries = released,
                    "webhook deliveries from an interrupted run are back in the outbox"
                );
            }
            Ok((secret, first_key))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;

        let mut metrics = Metrics::new();
        metrics.observe_writer(db.writer_stats());
        let metrics = Arc::new(metrics);
        let delivery = DeliveryHandle::default();
        let nameservers: Vec<std::net::SocketAddr> =
            config.dns.nameservers.iter().map(|n| n.0).collect();
        let resolver = delivery::mx::build_resolver(&nameservers)
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let webhooks = WebhooksHandle::new(webhooks::target::Guard::new(
            resolver,
            config.webhooks.allow_private_targets,
        ));
        let dispatcher = Dispatcher::new(db.clone(), &config, webhooks.clone())
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let domains = Arc::new(domains::Domains::new(db.clone(), config.clone()));
        let audience_sends = audiences::sender::SenderHandle::default();
        let links = tracking::copies::Links::new(&config.server.public_url, &secret);
        let state = web::Data::new(AppState {
            config: config.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
            delivery: delivery.clone(),
            in_flight: InFlight::default(),
            server_secret: Arc::new(secret),
            domains: domains.clone(),
            templates: Arc::new(templates::TemplateCache::default()),
            webhooks,
            audience_sends: audience_sends.clone(),
            links: links.clone(),
            sends: emails::routes::send_combiner(),
        });
        let auth = web::Data::new(AuthState::new(
            db.clone(),
            config.limits.requests_per_second,
        ));
        let auth_for_maintenance = auth.clone();
        let metrics_data = web::Data::from(metrics.clone());
        let postal = postal::PostalHandle::new(&config);
        let postal_data = web::Data::new(postal.clone());

        let listener =
            TcpListener::bind(config.server.listen).map_err(|source| StartError::Listen {
                addr: config.server.listen.to_string(),
                source,
            })?;
        let port = listener.local_addr()?.port();
        let max_body = config.server.max_body_bytes;
        let server = HttpServer::new(move || {
            let (app, api) = App::new()
                .into_utoipa_app()
                .openapi(ops::openapi::base())
                .configure(configure_app)
                .split_for_parts();
            app.app_data(web::Data::new(ops::openapi::Document::new(&api)))
                .app_data(state.clone())
                .app_data(auth.clone())
                .app_data(metrics_data.clone())
                .app_data(postal_data.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::FormConfig::default().limit(max_body))
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|err, _| http::query_error(&err).into()),
                )
                .app_data(web::PathConfig::default().error_handler(|err, _| {
                    http::ApiError::validation(format!("The path is not valid: {err}.")).into()
                }))
                .wrap(from_fn(http::kernel))
                .default_service(web::to(http::not_found))
        })
        .listen(listener)
        .map_err(|source| StartError::Listen {
            addr: config.server.listen.to_string(),
            source,
        })?
        .disable_signals()
        .shutdown_timeout(20)
        .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
        .run();
        let handle = server.handle();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let worker = Worker::new(
            db.clone(),
            config.clone(),
            metrics.clone(),
            delivery.clone(),
        );
        let worker = tokio::spawn(worker.run(shutdown_rx.clone()));
        let sender = audiences::sender::Sender::new(
            db.clone(),
            links,
            delivery.clone(),
            audience_sends,
            domains.clone(),
        );
        let sender = tokio::spawn(sender.run(shutdown_rx.clone()));
        let dispatcher = tokio::spawn(dispatcher.run(shutdown_rx.clone()));
        let domain_checks = tokio::spawn(domains::worker::run(domains, shutdown_rx.clone()));
        let postal_worker = tokio::spawn(
            postal::worker::PostalWorker::new(db.clone(), postal).run(shutdown_rx.clone()),
        );
        let indexer = tokio::spawn(emails::indexer::run(db.clone(), shutdown_rx.clone()));
        tokio::spawn(ops::memory::run(shutdown_rx.clone()));
        let key_usage = tokio::spawn(keys::usage::run(
            db.clone(),
            auth_for_maintenance.usage.clone(),
            shutdown_rx.clone(),
        ));
        let maintenance = tokio::spawn(maintenance_loop(
            db.clone(),
            auth_for_maintenance,
            shutdown_rx,
        ));
        delivery.wake();

        Ok(Application {
            port,
            server: Some(server),
            handle,
            shutdown,
            worker: Some(worker),
            dispatcher: Some(dispatcher),
            postal_worker: Some(postal_worker),
            sender: Some(sender),
            maintenance,
            key_usage: Some(key_usage),
            indexer,
            domain_checks,
            db,
            first_key,
            _lock: lock,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The key made on the first start of an empty database, if this start made one.
    pub fn first_key(&self) -> Option<&FirstKey> {
        self.first_key.as_ref()
    }

    /// A handle that can stop the HTTP server from elsewhere.
    pub fn server_handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until the HTTP server stops (see [`Application::server_handle`]), then stops
    /// the workers gracefully and closes the database.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let server = self.server.take().expect("server is present until run");
        let result = server.await;
        self.shutdown_workers().await;
        result
    }

    async fn shutdown_workers(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
        if let Some(worker) = self.postal_worker.take() {
            let _ = worker.await;
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            let _ = dispatcher.await;
        }
        if let Some(sender) = self.sender.take() {
            let _ = sender.await;
        }
        self.maintenance.abort();
        if let Some(key_usage) = self.key_usage.take() {
            let _ = key_usage.await;
        }
        let _ = (&mut self.indexer).await;
        let _ = (&mut self.domain_checks).await;
        let db = self.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
    }
}

/// Periodic housekeeping: expired idempotency answers, rate-limit state of idle keys.
async fn maintenance_loop(db: Db, auth: web::Data<AuthState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(limiter) = &auth.limiter {
            limiter.retain_recent();
        }
        match db.write(http::idempotency::purge_expired).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "expired idempotency keys removed"),
            Ok(_) => {}
            Err::<_, StoreError>(e) => tracing::warn!(error = %e, "idempotency cleanup failed"),
        }
    }
}

//! Prometheus metrics (`GET /metrics`). Counters are updated where things happen; gauges that
//! a query answers better (queue depth, age of the oldest due recipient) are read at scrape.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Histogram,
    pub emails_accepted: Family<StatusLabels, Counter>,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub smtp_sessions_open: Gauge<i64, AtomicI64>,
    pub queue_depth: Gauge<i64, AtomicI64>,
    pub oldest_due_age_seconds: Gauge<i64, AtomicI64>,
    /// When the queue gauges were last read from the database (see [`Metrics::queue_stale`]).
    queue_read_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The queue gauges are read from the database at most this often: the count walks the
/// waiting recipients, and a scraper polling many times a second would make that a load.
const QUEUE_GAUGES_MAX_AGE: Duration = Duration::from_secs(1);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mailsflux");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        // Finer between 5 and 25 ms, where a latency objective (p99 under 20 ms) is read:
        // `scripts/bench-ingest` works out the server's own p99 from these buckets.
        let http_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        let emails_accepted = Family::<StatusLabels, Counter>::default();
        registry.register(
            "emails_accepted",
            "Emails accepted by the API, by their status at acceptance",
            emails_accepted.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by outcome (delivered, sent, deferred, bounced, failed, suppressed)",
            deliveries.clone(),
        );
        let smtp_sessions_open = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "smtp_sessions_open",
            "SMTP sessions open now",
            smtp_sessions_open.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "queue_depth",
            "Recipients waiting for delivery (queued, deferred or sending)",
            queue_depth.clone(),
        );
        let oldest_due_age_seconds = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "queue_oldest_due_age_seconds",
            "Age of the oldest recipient that is due for delivery",
            oldest_due_age_seconds.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            emails_accepted,
            deliveries,
            smtp_sessions_open,
            queue_depth,
            oldest_due_age_seconds,
            queue_read_at: std::sync::Mutex::new(None),
        }
    }

    /// Adds the database writer's counters: `mailsflux_db_transactions_total` and
    /// `mailsflux_db_write_jobs_total` (their ratio is how many writes a group commit shares).
    pub fn observe_writer(&mut self, stats: Arc<crate::store::WriterStats>) {
        self.registry
            .register_collector(Box::new(WriterCollector(stats)));
    }

    /// True (and the clock restarted) when the queue gauges are older than a second.
    pub fn queue_stale(&self) -> bool {
        let mut at = self
            .queue_read_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if at.is_some_and(|t| t.elapsed() < QUEUE_GAUGES_MAX_AGE) {
            return false;
        }
        *at = Some(std::time::Instant::now());
        true
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.http_duration.observe(elapsed.as_secs_f64());
    }

    pub fn email_accepted(&self, status: &str) {
        self.emails_accepted
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn delivery(&self, outcome: &str) {
        self.deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Reads the writer's counters at each scrape (they live in the store, which knows nothing
/// of Prometheus).
#[derive(Debug)]
struct WriterCollector(Arc<crate::store::WriterStats>);

impl Collector for WriterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "db_transactions",
                "Write transactions run by the database writer (group commits)",
                self.0.transactions(),
            ),
            (
                "db_write_jobs",
                "Writes run in those transactions (group commit shares a transaction between them)",
                self.0.jobs(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

//! Operations: `GET /healthz`, `GET /metrics` (Prometheus text) and the metrics themselves.

pub mod metrics;

use actix_web::{HttpResponse, web};

use crate::AppState;
use crate::delivery::queue;
use metrics::Metrics;

/// `GET /healthz`: the process answers and the database can be read.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let ok = state
        .db
        .read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(crate::store::StoreError::from)
        })
        .await
        .is_ok();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// `GET /metrics`: refreshes the queue gauges, then encodes everything.
pub async fn metrics(state: web::Data<AppState>, metrics: web::Data<Metrics>) -> HttpResponse {
    if let Ok((depth, oldest)) = state.db.read(queue::queue_figures).await {
        metrics.queue_depth.set(depth);
        metrics.oldest_due_age_seconds.set(oldest);
    }
    metrics
        .smtp_sessions_open
        .set(state.delivery.open_sessions() as i64);
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

//! Operations: `GET /healthz`, `GET /metrics` (Prometheus text), the metrics themselves, the
//! OpenAPI document, and giving memory back after bursts (`memory`).

pub mod memory;
pub mod metrics;
pub mod openapi;

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

/// `GET /metrics`: refreshes the queue gauges (at most once a second), then encodes
/// everything.
pub async fn metrics(state: web::Data<AppState>, metrics: web::Data<Metrics>) -> HttpResponse {
    if metrics.queue_stale()
        && let Ok((depth, oldest)) = state.db.read(queue::queue_figures).await
    {
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

/// The public operational routes (no API key).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics))
        .route("/v1/openapi.json", web::get().to(openapi::serve));
}

//! The API's shared kernel: errors and their JSON envelope, the JSON body extractor, API-key
//! authentication, pagination, idempotency, rate limits, and the middleware every request
//! passes through (request id, envelope for bare errors, access log, request metrics).

pub mod auth;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod pagination;
pub mod ratelimit;

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use tracing::Instrument;

pub use auth::Authenticated;
pub use error::ApiError;
pub use json::ApiJson;
pub use pagination::{List, PageRequest};

use crate::ops::metrics::Metrics;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives every request an id (the client's `x-request-id` when it is sane), logs it, puts it
/// on the answer, turns any error answer that is not already our JSON envelope (actix's own
/// 404, 405, 413, a panic's 500, ...) into one, and counts the request.
pub async fn kernel(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    let method = req.method().to_string();
    let path = req.path().to_string();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let started = Instant::now();
    let span = tracing::info_span!("request", request_id = %request_id, %method, %path);
    let result = next.call(req).instrument(span.clone()).await;
    let mut res = match result {
        Ok(res) => res,
        Err(err) => {
            // An error raised outside a handler (a middleware or the router).
            return Err(err);
        }
    };
    if res.status().as_u16() >= 400 && !is_json_or_html(res.response().headers()) {
        let status = res.status();
        let (code, message) = error::code_for_status(status);
        let err = ApiError::new(status, code, message);
        let (req, old) = res.into_parts();
        let mut new = err.error_response();
        for (name, value) in old.headers() {
            if name != CONTENT_TYPE && name != actix_web::http::header::CONTENT_LENGTH {
                new.headers_mut().insert(name.clone(), value.clone());
            }
        }
        res = ServiceResponse::new(req, new);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    let status = res.status().as_u16();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let elapsed = started.elapsed();
    if let Some(metrics) = metrics {
        metrics.observe_request(&route, &method, status, elapsed);
    }
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, elapsed_ms = elapsed.as_millis() as u64, route = %route, "request failed");
        } else {
            tracing::info!(status, elapsed_ms = elapsed.as_millis() as u64, route = %route, "request");
        }
    });
    Ok(res)
}

/// Our own answers: JSON envelopes of the API, and the HTML pages of the dashboard and the
/// public unsubscribe/tracking routes.
fn is_json_or_html(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"))
}

/// The app's fallback: 405 when a route has the path but not the method, else 404.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    if req.resource_map().has_resource(req.path()) {
        return ApiError::new(
            actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on {}. See the API reference for the methods this route accepts.",
                req.method(),
                req.path()
            ),
        )
        .error_response();
    }
    ApiError::not_found(format!(
        "There is no route {} {}. See the API reference for the available routes.",
        req.method(),
        req.path()
    ))
    .error_response()
}

/// Runs CPU or blocking work (parsing large bodies, rendering, signing) off the async
/// threads; a failed task is a 500.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f).await.map_err(|e| {
        tracing::error!(error = %e, "a blocking task failed");
        ApiError::internal()
    })
}

/// Reads the `include` query parameter of the routes that can add an object's content:
/// absent or empty is false, `content` is true, anything else a 422 naming the parameter.
pub fn include_content(include: Option<&str>) -> Result<bool, ApiError> {
    match include {
        None | Some("") => Ok(false),
        Some("content") => Ok(true),
        Some(other) => Err(ApiError::validation(format!(
            "'include' may only be \"content\" (got \"{other}\")."
        ))
        .with_field("include")),
    }
}

/// The 422 for a query string the route's parameters cannot hold: an unknown parameter is
/// named with the ones allowed (a misspelt filter would otherwise be ignored and the list
/// answered unfiltered), anything else quoted as serde reports it.
pub fn query_error(err: &actix_web::error::QueryPayloadError) -> ApiError {
    let text = err.to_string();
    if let Some(name) = json::between(&text, "unknown field `", "`") {
        let allowed = json::allowed_here(&text)
            .unwrap_or_else(|| " This route takes no query parameters.".to_string());
        return ApiError::validation(format!("Unknown query parameter '{name}'.{allowed}"))
            .with_field(name);
    }
    if let Some(name) = json::between(&text, "duplicate field `", "`") {
        return ApiError::validation(format!(
            "The query parameter '{name}' is given more than once; give it once."
        ))
        .with_field(name);
    }
    ApiError::validation(format!(
        "The query string is not valid: {}.",
        text.replace('`', "'")
    ))
}

/// The JSON body of a successful answer.
pub fn json_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The answer of every delete (API.md): `200 {"id": ..., "deleted": true}`, or `"email"`
/// instead of `"id"` where the path names an email.
pub fn deleted_response(key: &str, value: &str) -> HttpResponse {
    json_response(
        actix_web::http::StatusCode::OK,
        json_body(&serde_json::json!({ key: value, "deleted": true })),
    )
}

/// `200 application/json` with `body`.
pub fn json_response(status: actix_web::http::StatusCode, body: Vec<u8>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// Keeps a value as the response type of handlers that may answer with any body type.
pub fn boxed<B: MessageBody + 'static>(res: HttpResponse<B>) -> HttpResponse<BoxBody> {
    res.map_into_boxed_body()
}

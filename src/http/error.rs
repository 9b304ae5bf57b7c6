//! `ApiError`: every failure of the API, mapped to the JSON envelope of API.md in one place:
//! `{"error": {"code", "message", "status", "field"?, "details"?}}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::Value;

use crate::store::StoreError;

/// An error answer of the API. Build it with the constructors below so codes and statuses
/// stay as API.md lists them.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub details: Option<Vec<Value>>,
    /// Extra headers (e.g. `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a [Value]>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            details: None,
            headers: Vec::new(),
        }
    }

    /// Names the request field the error is about (`to`, `to[2]`, `attachments[0].content`).
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side. The error has been logged; please try again.",
        )
    }

    pub fn storage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "The database is busy or unavailable. Nothing was stored; please retry shortly.",
        )
        .with_header("Retry-After", "1")
    }

    /// The JSON body alone (also used to store idempotent replays).
    pub fn body_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            error: Body {
                code: self.code,
                message: &self.message,
                status: self.status.as_u16(),
                field: self.field.as_deref(),
                details: self.details.as_deref(),
            },
        })
        .unwrap_or_default()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        for (name, value) in &self.headers {
            res.insert_header((*name, value.as_str()));
        }
        res.body(self.body_json())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "storage unavailable");
            ApiError::storage_unavailable()
        } else {
            tracing::error!(error = %err, "storage error");
            ApiError::internal()
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        ApiError::from(StoreError::from(err))
    }
}

/// The code API.md uses for a bare HTTP status that no handler described (actix's own 404,
/// 405, 413, ...).
pub fn code_for_status(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => (
            "invalid_json",
            "The request could not be read. Send a JSON body.",
        ),
        401 => (
            "missing_api_key",
            "Add an 'Authorization: Bearer <key>' header.",
        ),
        404 => (
            "not_found",
            "There is no such route. See the API reference for the available routes.",
        ),
        405 => (
            "method_not_allowed",
            "This route does not accept that HTTP method. See the API reference for the methods it accepts.",
        ),
        408 => (
            "request_timeout",
            "The request took too long to arrive. Please retry.",
        ),
        413 => (
            "payload_too_large",
            "The request body is larger than the server accepts (server.max_body_bytes).",
        ),
        415 => (
            "unsupported_media_type",
            "Send the body as JSON with 'Content-Type: application/json'.",
        ),
        429 => ("rate_limit_exceeded", "Too many requests. Wait and retry."),
        503 => (
            "storage_unavailable",
            "The service is unavailable right now. Please retry shortly.",
        ),
        s if s >= 500 => (
            "internal_error",
            "Something went wrong on our side. The error has been logged; please try again.",
        ),
        _ => ("bad_request", "The request could not be processed."),
    }
}

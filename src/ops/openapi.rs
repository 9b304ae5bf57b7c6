//! The OpenAPI 3.1 document, generated from the code: every `/v1` handler is registered
//! through utoipa-actix-web, which only accepts documented handlers, so the document and the
//! app's route table are the same list. Served at `GET /v1/openapi.json` without a key.

use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa::{Modify, ToSchema};

/// The error envelope, for the document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// The `error` member of every failure.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// A stable code such as `invalid_recipient`.
    code: String,
    /// A sentence a person can act on.
    message: String,
    /// Equal to the HTTP status.
    status: u16,
    /// A path into the request, e.g. `to[2]`.
    field: Option<String>,
    /// One entry per bad item of a batch, each with `index`.
    details: Option<Vec<serde_json::Value>>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mf_live_sk_... or mf_test_sk_...")
                    .build(),
            ),
        );
        components.schemas.insert(
            "ErrorEnvelope".into(),
            <ErrorEnvelope as utoipa::PartialSchema>::schema(),
        );
        components.schemas.insert(
            "ErrorBody".into(),
            <ErrorBody as utoipa::PartialSchema>::schema(),
        );
    }
}

/// The document before routes are added: title, version, auth scheme, shared schemas.
pub fn base() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mailsflux API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Self-hosted email and physical-mail API. Authenticate with \
                     'Authorization: Bearer <API key>'. Errors are always \
                     {\"error\": {\"code\", \"message\", \"status\"}}.",
                ))
                .build(),
        )
        .build();
    BearerAuth.modify(&mut doc);
    doc
}

/// The finished document as JSON, made once per worker at start.
pub struct Document(pub String);

impl Document {
    pub fn new(doc: &OpenApi) -> Document {
        Document(doc.to_json().unwrap_or_else(|_| "{}".into()))
    }
}

/// `GET /v1/openapi.json`
pub async fn serve(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

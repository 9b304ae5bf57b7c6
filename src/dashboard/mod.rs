//! The web dashboard under `/dashboard`: server-rendered pages (askama), sign-in with a
//! password, signed session cookies, CSRF tokens on every form, security headers, and every
//! asset embedded in the binary. The core flows work without JavaScript; the one small
//! script only adds copy buttons. The dashboard only reads through the capabilities' stores,
//! except for what it manages itself (API keys, sessions).

mod more;
mod pages;
pub mod session;
mod store;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};

/// The Content-Security-Policy of every dashboard page: no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'";

/// Adds the security headers to every dashboard answer (pages may set a stricter CSP).
async fn security_headers(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let defaults: [(&str, &str); 5] = [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in defaults {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Ok(res)
}

/// Registers `/dashboard/...` (public: the pages check the session themselves).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(
        utoipa_actix_web::scope("/dashboard")
            .wrap(from_fn(security_headers))
            .configure(more::routes)
            .configure(pages::routes),
    );
}

//! The public link routes (no API key): `GET /u/:token` (a confirmation page: a GET never
//! unsubscribes, mail scanners follow links), `POST /u/:token` (RFC 8058 one-click, also the
//! page's form), `GET /t/o/:token` (open pixel) and `GET /t/c/:token` (click redirect, only
//! to the URL signed into the token at send). A forged or unknown token gets a 404 page.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::store;
use super::token::{Claims, Kind};
use crate::AppState;
use crate::store::StoreError;

/// Registers the public routes (outside `/v1`).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.route("/u/{token}", web::get().to(unsubscribe_page))
        .route("/u/{token}", web::post().to(unsubscribe))
        .route("/t/o/{token}", web::get().to(open_pixel))
        .route("/t/c/{token}", web::get().to(click));
}

/// The server's own small HTML page.
#[derive(Template)]
#[template(path = "link_page.html")]
struct LinkPage<'a> {
    title: &'a str,
    message: &'a str,
    show_form: bool,
}

fn page(status: StatusCode, page: LinkPage<'_>) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .insert_header((
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header(("Referrer-Policy", "no-referrer"))
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("Something went wrong on our side.")
        }
    }
}

fn not_found() -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        LinkPage {
            title: "Link not found",
            message: "This link is not valid. It may have been copied incompletely.",
            show_form: false,
        },
    )
}

fn failed() -> HttpResponse {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        LinkPage {
            title: "Please try again",
            message: "We could not handle this link just now. Please try again in a moment.",
            show_form: false,
        },
    )
}

fn claims(state: &AppState, token: &str, kind: Kind) -> Option<Claims> {
    state
        .links
        .signer()
        .verify(token)
        .filter(|c| c.kind == kind)
}

/// The name to show for a sender: the display name, else the address.
fn sender_name(from: &str) -> String {
    crate::address::Mailbox::parse(from)
        .ok()
        .and_then(|m| m.name.filter(|n| !n.trim().is_empty()))
        .unwrap_or_else(|| from.to_string())
}

async fn unsubscribe_page(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(c) = claims(&state, &path, Kind::Unsubscribe) else {
        return not_found();
    };
    let Some(mode) = c.mode() else {
        return not_found();
    };
    let c2 = c.clone();
    let sender = state
        .db
        .read(move |conn| store::sender_of(conn, mode, &c2))
        .await;
    match sender {
        Ok(Some(from)) => {
            let message = format!(
                "Stop marketing emails from {} to {}?",
                sender_name(&from),
                c.recipient
            );
            page(
                StatusCode::OK,
                LinkPage {
                    title: "Unsubscribe",
                    message: &message,
                    show_form: true,
                },
            )
        }
        Ok(None) => not_found(),
        Err::<_, StoreError>(e) => {
            tracing::error!(error = %e, "reading an unsubscribe link failed");
            failed()
        }
    }
}

/// RFC 8058: a POST (body `List-Unsubscribe=One-Click`) unsubscribes at once. The body is
/// not required: the page's form sends it, and nothing but a deliberate POST gets here.
async fn unsubscribe(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(c) = claims(&state, &path, Kind::Unsubscribe) else {
        return not_found();
    };
    let Some(mode) = c.mode() else {
        return not_found();
    };
    let c2 = c.clone();
    let done = state
        .db
        .write(move |conn| store::unsubscribe(conn, mode, &c2))
        .await;
    match done {
        Ok(Some(from)) => {
            let message = format!(
                "{} will no longer get marketing emails from {}.",
                c.recipient,
                sender_name(&from)
            );
            page(
                StatusCode::OK,
                LinkPage {
                    title: "You are unsubscribed",
                    message: &message,
                    show_form: false,
                },
            )
        }
        Ok(None) => not_found(),
        Err::<_, StoreError>(e) => {
            tracing::error!(error = %e, "recording an unsubscribe failed");
            failed()
        }
    }
}

/// A transparent 1x1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

async fn open_pixel(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(c) = claims(&state, &path, Kind::Open) else {
        return not_found();
    };
    let Some(mode) = c.mode() else {
        return not_found();
    };
    let recorded = state
        .db
        .write(move |conn| store::engagement(conn, mode, &c, false))
        .await;
    match recorded {
        Ok(true) => HttpResponse::Ok()
            .content_type("image/gif")
            .insert_header((header::CACHE_CONTROL, "no-store, max-age=0"))
            .body(PIXEL),
        Ok(false) => not_found(),
        Err::<_, StoreError>(e) => {
            // The reader sees an image either way; the open is lost, and logged.
            tracing::error!(error = %e, "recording an open failed");
            HttpResponse::Ok().content_type("image/gif").body(PIXEL)
        }
    }
}

async fn click(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(c) = claims(&state, &path, Kind::Click) else {
        return not_found();
    };
    let (Some(mode), Some(url)) = (c.mode(), c.url.clone()) else {
        return not_found();
    };
    if !super::html::is_trackable(&url) || url.contains(['\r', '\n']) {
        return not_found();
    }
    let recorded = state
        .db
        .write(move |conn| store::engagement(conn, mode, &c, true))
        .await;
    match recorded {
        Ok(false) => not_found(),
        Ok(true) | Err(_) => HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
    }
}

//! The dashboard's pages and forms.

use std::collections::BTreeMap;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use askama::Template;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use super::session::{self, Session, SignIn};
use super::store as dash_store;
use crate::AppState;
use crate::delivery::queue;
use crate::emails::store::{self as email_store, EmailView, ListFilter};
use crate::http::auth::AuthState;
use crate::keys::{self, ApiKey, Mode, Permission};
use crate::store::{StoreError, time};

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.route("", web::get().to(root))
        .route("/", web::get().to(overview))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/mode/{mode}", web::get().to(switch_mode))
        .route("/emails", web::get().to(emails))
        .route("/emails/{id}", web::get().to(email))
        .route("/emails/{id}/html", web::get().to(email_html))
        .route("/emails/{id}/raw", web::get().to(email_raw))
        .route("/inbox", web::get().to(inbox))
        .route("/settings/api-keys", web::get().to(keys_page))
        .route("/settings/api-keys", web::post().to(create_key))
        .route("/settings/api-keys/{id}/revoke", web::post().to(revoke_key))
        .route("/assets/app.css", web::get().to(css))
        .route("/assets/app.js", web::get().to(js))
        .default_service(web::to(not_found_page));
}

const MODE_COOKIE: &str = "mf_mode";

/// What a dashboard page can fail with; each is an HTML answer.
#[derive(Debug)]
pub enum DashError {
    SignIn,
    Forbidden(&'static str),
    NotFound,
    Internal,
}

impl std::fmt::Display for DashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

#[derive(Template)]
#[template(path = "dashboard/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl ResponseError for DashError {
    fn status_code(&self) -> StatusCode {
        match self {
            DashError::SignIn => StatusCode::SEE_OTHER,
            DashError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashError::NotFound => StatusCode::NOT_FOUND,
            DashError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (title, message) = match self {
            DashError::SignIn => {
                return HttpResponse::SeeOther()
                    .insert_header((header::LOCATION, "/dashboard/login"))
                    .finish();
            }
            DashError::Forbidden(why) => ("Forbidden", *why),
            DashError::NotFound => ("Not found", "There is no such page or item."),
            DashError::Internal => (
                "Something went wrong",
                "The error has been logged. Please try again.",
            ),
        };
        html(self.status_code(), &ErrorPage { title, message })
    }
}

impl From<StoreError> for DashError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "dashboard storage error");
        DashError::Internal
    }
}

fn html(status: StatusCode, page: &impl Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type(ContentType::html())
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "rendering a dashboard page failed");
            HttpResponse::InternalServerError()
                .content_type(ContentType::plaintext())
                .body("internal error")
        }
    }
}

pub(super) fn page(p: &impl Template) -> Result<HttpResponse, DashError> {
    Ok(html(StatusCode::OK, p))
}

/// A signed-in administrator, with the data mode the pages show.
pub struct Signed {
    pub session: Session,
    pub session_id: String,
    pub mode: Mode,
}

impl FromRequest for Signed {
    type Error = DashError;
    type Future = LocalBoxFuture<'static, Result<Self, DashError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let cookie = req.cookie(session::COOKIE).map(|c| c.value().to_string());
        let mode = match req.cookie(MODE_COOKIE).as_ref().map(|c| c.value()) {
            Some("live") => Mode::Live,
            _ => Mode::Test,
        };
        Box::pin(async move {
            let state = state.ok_or(DashError::Internal)?;
            let session_id = cookie
                .and_then(|c| session::verify_cookie(&c, &state.server_secret))
                .ok_or(DashError::SignIn)?;
            let id = session_id.clone();
            let session = state
                .db
                .read(move |c| session::find(c, &id))
                .await?
                .ok_or(DashError::SignIn)?;
            Ok(Signed {
                session,
                session_id,
                mode,
            })
        })
    }
}

/// Fields every page's layout needs.
pub struct Layout {
    pub email: String,
    pub csrf: String,
    pub mode: &'static str,
    pub section: &'static str,
}

impl Layout {
    pub(super) fn new(signed: &Signed, section: &'static str) -> Layout {
        Layout {
            email: signed.session.email.clone(),
            csrf: signed.session.csrf_token.clone(),
            mode: signed.mode.as_str(),
            section,
        }
    }
}

async fn root() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/dashboard/"))
        .finish()
}

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    error: Option<String>,
    email: String,
}

async fn login_form() -> Result<HttpResponse, DashError> {
    page(&LoginPage {
        error: None,
        email: String::new(),
    })
}

#[derive(Deserialize)]
struct LoginForm {
    email: Option<String>,
    password: Option<String>,
}

/// Signs in: argon2 verification off the async threads, the same work for an unknown email,
/// and a lock-out after repeated failures.
async fn login(
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, DashError> {
    let email = form.email.clone().unwrap_or_default().trim().to_lowercase();
    let password = form.password.clone().unwrap_or_default();
    let e2 = email.clone();
    let login = state.db.read(move |c| session::login_state(c, &e2)).await?;
    let (admin, locked) = (login.admin, login.locked_until);
    let outcome = if let Some(until) = locked {
        SignIn::Locked { until }
    } else {
        let hash = admin.as_ref().map(|(_, h)| h.clone());
        let ok = web::block(move || {
            let hash = hash.as_deref().unwrap_or(session::dummy_hash());
            session::verify_password(&password, hash)
        })
        .await
        .map_err(|_| DashError::Internal)?;
        match (ok, admin) {
            (true, Some((admin_id, _))) => SignIn::Ok { admin_id },
            _ => SignIn::Wrong,
        }
    };
    match outcome {
        SignIn::Ok { admin_id } => {
            let secret = state.server_secret.clone();
            let e2 = email.clone();
            let cookie_value = state
                .db
                .write(move |c| -> Result<String, StoreError> {
                    session::clear_failures(c, &e2)?;
                    session::start(c, &admin_id, &secret)
                })
                .await?;
            let secure = state.config.server.public_url.starts_with("https://");
            let cookie = Cookie::build(session::COOKIE, cookie_value)
                .path("/dashboard")
                .http_only(true)
                .secure(secure)
                .same_site(SameSite::Strict)
                .max_age(actix_web::cookie::time::Duration::seconds(
                    session::SESSION_SECS,
                ))
                .finish();
            Ok(HttpResponse::SeeOther()
                .cookie(cookie)
                .insert_header((header::LOCATION, "/dashboard/"))
                .finish())
        }
        SignIn::Wrong => {
            let e2 = email.clone();
            state
                .db
                .write(move |c| session::record_failure(c, &e2))
                .await?;
            Ok(html(
                StatusCode::UNAUTHORIZED,
                &LoginPage {
                    error: Some("The email or the password is wrong.".into()),
                    email,
                },
            ))
        }
        SignIn::Locked { until } => Ok(html(
            StatusCode::TOO_MANY_REQUESTS,
            &LoginPage {
                error: Some(format!(
                    "Too many failed sign-ins. Try again after {}.",
                    time::format(until)
                )),
                email,
            },
        )),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

pub(super) fn check_csrf(signed: &Signed, given: Option<&str>) -> Result<(), DashError> {
    if session::csrf_ok(&signed.session, given.unwrap_or("")) {
        Ok(())
    } else {
        Err(DashError::Forbidden(
            "The form has expired or did not come from this dashboard. Reload the page and try again.",
        ))
    }
}

async fn logout(
    state: web::Data<AppState>,
    signed: Signed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let id = signed.session_id.clone();
    state.db.write(move |c| session::end(c, &id)).await?;
    let mut gone = Cookie::build(session::COOKIE, "")
        .path("/dashboard")
        .finish();
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/dashboard/login"))
        .finish())
}

#[derive(Deserialize)]
struct BackQuery {
    back: Option<String>,
}

/// Switches between live and test data (a view preference kept in a cookie).
async fn switch_mode(
    _signed: Signed,
    path: web::Path<String>,
    query: web::Query<BackQuery>,
) -> Result<HttpResponse, DashError> {
    let mode = match path.as_str() {
        "live" => "live",
        "test" => "test",
        _ => return Err(DashError::NotFound),
    };
    // Only a path inside the dashboard: never an open redirect.
    let back = query
        .back
        .as_deref()
        .filter(|b| b.starts_with("/dashboard") && !b.starts_with("//") && !b.contains("://"))
        .unwrap_or("/dashboard/");
    let cookie = Cookie::build(MODE_COOKIE, mode)
        .path("/dashboard")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, back.to_string()))
        .finish())
}

/// One bar of the overview's chart.
struct Bar {
    x: i64,
    y: i64,
    height: i64,
    class: &'static str,
    title: String,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct OverviewPage {
    layout: Layout,
    day: dash_store::Counts,
    month: dash_store::Counts,
    queue_depth: i64,
    oldest_due_secs: i64,
    bars: Vec<Bar>,
    chart_max: i64,
}

const CHART_HEIGHT: i64 = 120;
const BAR_WIDTH: i64 = 10;

fn chart(days: &[dash_store::Day]) -> (Vec<Bar>, i64) {
    let max = days
        .iter()
        .map(|d| d.delivered.max(d.bounced))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut bars = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let x = i as i64 * (2 * BAR_WIDTH + 4);
        let date = &time::format(d.start)[..10];
        for (offset, value, class, label) in [
            (0, d.delivered, "bar-ok", "delivered"),
            (BAR_WIDTH, d.bounced, "bar-bad", "bounced"),
        ] {
            let height = value * CHART_HEIGHT / max;
            bars.push(Bar {
                x: x + offset,
                y: CHART_HEIGHT - height,
                height,
                class,
                title: format!("{date}: {value} {label}"),
            });
        }
    }
    (bars, max)
}

async fn overview(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let (day, month, (queue_depth, oldest_due_secs), days) = state
        .db
        .read(move |c| -> Result<_, StoreError> {
            let now = time::now();
            Ok((
                dash_store::counts_since(c, mode, now - 86_400)?,
                dash_store::counts_since(c, mode, now - 30 * 86_400)?,
                queue::queue_figures(c)?,
                dash_store::daily(c, mode, 30)?,
            ))
        })
        .await?;
    let (bars, chart_max) = chart(&days);
    page(&OverviewPage {
        layout: Layout::new(&signed, "overview"),
        day,
        month,
        queue_depth,
        oldest_due_secs,
        bars,
        chart_max,
    })
}

#[derive(Deserialize, Default)]
struct EmailFilters {
    status: Option<String>,
    to: Option<String>,
    from: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/emails.html")]
struct EmailsPage {
    layout: Layout,
    title: &'static str,
    emails: Vec<EmailView>,
    status: String,
    to: String,
    from: String,
    tag: String,
    next: Option<String>,
    action: &'static str,
}

async fn list_emails(
    state: &AppState,
    mode: Mode,
    f: &EmailFilters,
) -> Result<(Vec<EmailView>, Option<String>), DashError> {
    let page = crate::http::PageRequest::parse(Some("50"), f.cursor.as_deref())
        .map_err(|_| DashError::NotFound)?;
    let nonempty = |s: &Option<String>| {
        s.clone()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_string())
    };
    let filter = ListFilter {
        status: nonempty(&f.status),
        to: nonempty(&f.to),
        from: nonempty(&f.from),
        tag: nonempty(&f.tag).and_then(|t| {
            t.split_once(':')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        }),
        before_id: page.before_id,
        limit: page.limit,
        ..Default::default()
    };
    let limit = filter.limit;
    let rows = state
        .db
        .read(move |c| email_store::list(c, mode, &filter))
        .await?;
    let list = crate::http::List::from_rows(rows, limit, |e| &e.id);
    Ok((list.data, list.next_cursor))
}

async fn emails(
    state: web::Data<AppState>,
    signed: Signed,
    query: web::Query<EmailFilters>,
) -> Result<HttpResponse, DashError> {
    let (emails, next) = list_emails(&state, signed.mode, &query).await?;
    page(&EmailsPage {
        layout: Layout::new(&signed, "emails"),
        title: "Emails",
        emails,
        status: query.status.clone().unwrap_or_default(),
        to: query.to.clone().unwrap_or_default(),
        from: query.from.clone().unwrap_or_default(),
        tag: query.tag.clone().unwrap_or_default(),
        next,
        action: "/dashboard/emails",
    })
}

/// The test inbox: captured test-mode mail, whatever the mode switch says (like Mailpit).
async fn inbox(
    state: web::Data<AppState>,
    signed: Signed,
    query: web::Query<EmailFilters>,
) -> Result<HttpResponse, DashError> {
    let (emails, next) = list_emails(&state, Mode::Test, &query).await?;
    let mut layout = Layout::new(&signed, "inbox");
    layout.mode = "test";
    page(&EmailsPage {
        layout,
        title: "Test inbox",
        emails,
        status: query.status.clone().unwrap_or_default(),
        to: query.to.clone().unwrap_or_default(),
        from: query.from.clone().unwrap_or_default(),
        tag: query.tag.clone().unwrap_or_default(),
        next,
        action: "/dashboard/inbox",
    })
}

#[derive(Template)]
#[template(path = "dashboard/email.html")]
struct EmailPage {
    layout: Layout,
    email: EmailView,
    tags: BTreeMap<String, String>,
    has_html: bool,
}

/// An email's mode is found by looking in both: the inbox links test emails while the
/// switch may say live.
async fn find_email(
    state: &AppState,
    preferred: Mode,
    id: String,
    content: bool,
) -> Result<EmailView, DashError> {
    let view = state
        .db
        .read(move |c| -> Result<_, StoreError> {
            match email_store::get(c, preferred, &id, content)? {
                Some(v) => Ok(Some(v)),
                None => {
                    let other = if preferred == Mode::Live {
                        Mode::Test
                    } else {
                        Mode::Live
                    };
                    email_store::get(c, other, &id, content)
                }
            }
        })
        .await?;
    view.ok_or(DashError::NotFound)
}

async fn email(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    let email = find_email(&state, signed.mode, path.into_inner(), true).await?;
    let has_html = matches!(email.html, Some(Some(_)));
    page(&EmailPage {
        layout: Layout::new(&signed, "emails"),
        tags: email.tags.clone(),
        email,
        has_html,
    })
}

/// The HTML body, for the sandboxed iframe: its own CSP forbids scripts and remote loads.
async fn email_html(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    let email = find_email(&state, signed.mode, path.into_inner(), true).await?;
    let body = email.html.flatten().ok_or(DashError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((
            "content-security-policy",
            "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; frame-ancestors 'self'",
        ))
        .insert_header(("x-frame-options", "SAMEORIGIN"))
        .body(body))
}

async fn email_raw(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    let email = find_email(&state, signed.mode, path.into_inner(), true).await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body(email.raw.unwrap_or_default()))
}

#[derive(Template)]
#[template(path = "dashboard/keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<KeyRow>,
    created: Option<String>,
}

struct KeyRow {
    key: ApiKey,
    created_at: String,
    /// When the key was last used, or "never" (see `keys::usage`).
    last_used_at: String,
}

async fn render_keys(
    state: &AppState,
    signed: &Signed,
    created: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, DashError> {
    let list = state.db.read(keys::list).await?;
    let keys = list
        .into_iter()
        .map(|key| KeyRow {
            created_at: time::format(key.created_at),
            last_used_at: key
                .last_used_at
                .map_or_else(|| "never".into(), time::format),
            key,
        })
        .collect();
    Ok(html(
        status,
        &KeysPage {
            layout: Layout::new(signed, "keys"),
            keys,
            created,
        },
    ))
}

async fn keys_page(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    render_keys(&state, &signed, None, StatusCode::OK).await
}

#[derive(Deserialize)]
struct CreateKeyForm {
    csrf: Option<String>,
    name: Option<String>,
    mode: Option<String>,
    permission: Option<String>,
}

/// Creates a key and shows it once, on the answer to the form.
async fn create_key(
    state: web::Data<AppState>,
    signed: Signed,
    form: web::Form<CreateKeyForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let name = form.name.clone().unwrap_or_default().trim().to_string();
    let mode = form
        .mode
        .as_deref()
        .and_then(Mode::parse)
        .unwrap_or(Mode::Test);
    let permission = form
        .permission
        .as_deref()
        .and_then(Permission::parse)
        .unwrap_or(Permission::FullAccess);
    if name.is_empty() || name.len() > 100 {
        return Err(DashError::Forbidden(
            "Give the key a name of 1 to 100 characters.",
        ));
    }
    let (_, token) = state
        .db
        .write(move |c| keys::create(c, &name, mode, permission))
        .await?;
    render_keys(&state, &signed, Some(token), StatusCode::OK).await
}

async fn revoke_key(
    state: web::Data<AppState>,
    auth: web::Data<AuthState>,
    signed: Signed,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let id = path.into_inner();
    state.db.write(move |c| keys::revoke(c, &id)).await?;
    auth.forget_keys();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/dashboard/settings/api-keys"))
        .finish())
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(include_str!("../../templates/dashboard/assets/app.css"))
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(include_str!("../../templates/dashboard/assets/app.js"))
}

async fn not_found_page() -> HttpResponse {
    DashError::NotFound.error_response()
}

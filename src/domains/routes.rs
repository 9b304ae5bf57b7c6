//! Routes of the domains API. Thin: parse, call the store (or the DNS check), map the answer.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};

use super::dns::{self, RecordSpec};
use super::reputation::{self, Auth};
use super::store::{self, DomainRow, InsertError, RecordStatus};
use super::{DomainName, dkim};
use crate::AppState;
use crate::config::Config;
use crate::http::{ApiError, ApiJson, Authenticated, List, PageRequest, json_body, json_response};
use crate::keys::Mode;
use crate::store::{ids, time};

/// Registers the domains routes (under `/v1`), documented in the OpenAPI document.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_domain)
        .service(list_domains)
        .service(get_domain)
        .service(delete_domain)
        .service(verify_domain)
        .service(domain_reputation);
}

/// `POST /v1/domains`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// The domain you send from, like `acme.com` (internationalised names are accepted).
    pub name: Option<String>,
}

/// One DNS record to publish, with the result of the last check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    /// `DKIM`, `SPF`, `DMARC` or `RETURN_PATH`.
    pub record: &'static str,
    /// `TXT` or `MX`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub value: String,
    /// MX records only: the preference to publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// `pending`, `verified` or `failed`.
    pub status: &'static str,
    /// When `failed`: what is published there instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<Vec<String>>,
}

/// The domain object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    /// `pending`, `verified`, `partially_verified`, `failed` or `temporary_failure`.
    pub status: &'static str,
    pub records: Vec<RecordView>,
    pub created_at: String,
    pub verified_at: Option<String>,
    pub last_checked_at: Option<String>,
}

impl DomainView {
    /// The API's view of a stored domain: its records with the last check's results.
    pub fn new(row: &DomainRow, config: &Config) -> DomainView {
        let c = &row.checks;
        let records = dns::records(row, config)
            .into_iter()
            .zip([&c.dkim, &c.spf, &c.dmarc, &c.return_path])
            .map(|(spec, check): (RecordSpec, _)| RecordView {
                record: spec.record,
                kind: spec.kind,
                name: spec.name,
                value: spec.value,
                priority: spec.priority,
                status: check.status.as_str(),
                found: check
                    .found
                    .clone()
                    .filter(|_| check.status == RecordStatus::Failed),
            })
            .collect();
        DomainView {
            id: row.id.clone(),
            object: "domain",
            name: row.name.clone(),
            status: row.status.as_str(),
            records,
            created_at: time::format(row.created_at),
            verified_at: row.verified_at.map(time::format),
            last_checked_at: row.last_checked_at.map(time::format),
        }
    }
}

/// The reputation object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReputationView {
    pub domain_id: String,
    pub name: String,
    /// 0–100; see the README for the formula.
    pub score: u32,
    /// `good`, `fair`, `poor` or `insufficient_data`.
    pub status: &'static str,
    pub window_days: i64,
    pub sent: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub complained: u64,
    pub opened: u64,
    pub bounce_rate: f64,
    pub complaint_rate: f64,
    pub computed_at: String,
}

fn not_found(id: &str, mode: Mode) -> ApiError {
    ApiError::not_found(format!(
        "No domain with id '{id}' exists in {} mode.",
        mode.as_str()
    ))
}

/// Reads domain `id` of `mode`, or answers 404.
async fn load(state: &AppState, mode: Mode, id: &str) -> Result<DomainRow, ApiError> {
    if !ids::is_id(id, "dom") {
        return Err(not_found(id, mode));
    }
    let id2 = id.to_string();
    state
        .db
        .read(move |c| store::get(c, mode, &id2))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| not_found(id, mode))
}

fn view(state: &AppState, status: StatusCode, row: &DomainRow) -> HttpResponse {
    json_response(status, json_body(&DomainView::new(row, &state.config)))
}

/// Add a sending domain: makes its DKIM key and lists the DNS records to publish.
#[utoipa::path(
    tag = "domains",
    request_body = CreateDomain,
    responses(
        (status = 201, description = "Added, pending verification", body = DomainView),
        (status = 409, description = "The domain exists already in this mode", body = crate::ops::openapi::ErrorEnvelope),
        (status = 422, description = "Not a valid domain name", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[post("/domains")]
async fn create_domain(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: ApiJson<CreateDomain>,
) -> Result<HttpResponse, ApiError> {
    let Some(raw) = body.value.name.as_deref() else {
        return Err(ApiError::validation(
            "The 'name' field is required, like {\"name\": \"acme.com\"}.",
        )
        .with_field("name"));
    };
    let name = DomainName::parse(raw).map_err(|m| ApiError::validation(m).with_field("name"))?;
    let selector = state.config.domains.dkim_selector.clone();
    // The longest record name, <selector>._domainkey.<name>, must fit DNS's 253 characters.
    if selector.len() + "._domainkey.".len() + name.as_str().len() > 253 {
        return Err(ApiError::validation(format!(
            "'{}' is too long: its DKIM record name would exceed the 253 characters DNS allows.",
            name.as_str()
        ))
        .with_field("name"));
    }
    let mode = auth.mode();
    let duplicate = || {
        ApiError::conflict(format!(
            "The domain '{}' exists already in {} mode; GET /v1/domains lists it.",
            name.as_str(),
            mode.as_str()
        ))
        .with_field("name")
    };
    // Answer a duplicate before spending seconds on a key.
    let name2 = name.clone();
    if state
        .db
        .read(move |c| store::exists(c, mode, &name2))
        .await
        .map_err(ApiError::from)?
    {
        return Err(duplicate());
    }
    let pair = web::block(dkim::generate)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "the key generation task failed");
            ApiError::internal()
        })?
        .map_err(|e| {
            tracing::error!(error = %e, "DKIM key generation failed");
            ApiError::internal()
        })?;
    let name2 = name.clone();
    let inserted = state
        .domains
        .write(move |c| {
            store::insert(
                c,
                mode,
                &name2,
                &selector,
                &pair.private_der,
                &pair.public_b64,
            )
        })
        .await;
    match inserted {
        Ok(row) => Ok(view(&state, StatusCode::CREATED, &row)),
        Err(InsertError::Duplicate) => Err(duplicate()),
        Err(InsertError::Store(e)) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// Sending domains, newest first.
#[utoipa::path(
    tag = "domains",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "`{object: \"list\", data: [domain], has_more, next_cursor}`")),
    security(("api_key" = []))
)]
#[get("/domains")]
async fn list_domains(
    state: web::Data<AppState>,
    auth: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let mode = auth.mode();
    let limit = page.limit;
    let rows = state
        .db
        .read(move |c| store::list(c, mode, page.before_id.as_deref(), limit))
        .await
        .map_err(ApiError::from)?;
    let views: Vec<DomainView> = rows
        .iter()
        .map(|r| DomainView::new(r, &state.config))
        .collect();
    let list = List::from_rows(views, limit, |v| v.id.as_str());
    Ok(json_response(StatusCode::OK, json_body(&list)))
}

/// One domain with its records and their last check.
#[utoipa::path(
    tag = "domains",
    params(("id" = String, Path, description = "The domain id (dom_...)")),
    responses(
        (status = 200, description = "The domain", body = DomainView),
        (status = 404, description = "No such domain in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/domains/{id}")]
async fn get_domain(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, auth.mode(), &path).await?;
    Ok(view(&state, StatusCode::OK, &row))
}

/// Delete a domain and its key. Live sends from it are refused again (while
/// `delivery.require_verified_domain` is on); emails already accepted keep their signature.
#[utoipa::path(
    tag = "domains",
    params(("id" = String, Path, description = "The domain id (dom_...)")),
    responses(
        (status = 200, description = "`{id, deleted: true}`"),
        (status = 404, description = "No such domain in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[delete("/domains/{id}")]
async fn delete_domain(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let mode = auth.mode();
    if !ids::is_id(&id, "dom") {
        return Err(not_found(&id, mode));
    }
    let id2 = id.clone();
    let deleted = state
        .domains
        .write(move |c| store::delete(c, mode, &id2))
        .await
        .map_err(ApiError::from)?;
    if !deleted {
        return Err(not_found(&id, mode));
    }
    Ok(crate::http::deleted_response("id", &id))
}

/// Look the domain's records up in DNS now and update its status.
#[utoipa::path(
    tag = "domains",
    params(("id" = String, Path, description = "The domain id (dom_...)")),
    responses(
        (status = 200, description = "The domain after the check", body = DomainView),
        (status = 404, description = "No such domain in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/domains/{id}/verify")]
async fn verify_domain(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mode = auth.mode();
    let row = load(&state, mode, &path).await?;
    let saved = state
        .domains
        .check(row)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| not_found(&path, mode))?;
    Ok(view(&state, StatusCode::OK, &saved))
}

/// The domain's sending reputation over the last 30 days.
#[utoipa::path(
    tag = "domains",
    params(("id" = String, Path, description = "The domain id (dom_...)")),
    responses(
        (status = 200, description = "Score, status and the figures behind them", body = ReputationView),
        (status = 404, description = "No such domain in this mode", body = crate::ops::openapi::ErrorEnvelope),
    ),
    security(("api_key" = []))
)]
#[get("/domains/{id}/reputation")]
async fn domain_reputation(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let row = load(&state, auth.mode(), &path).await?;
    let body = reputation_of(&state, row).await.map_err(ApiError::from)?;
    Ok(json_response(StatusCode::OK, json_body(&body)))
}

/// The reputation of a domain over the window, from this server's own events (also shown by
/// the dashboard).
pub async fn reputation_of(
    state: &AppState,
    row: DomainRow,
) -> Result<ReputationView, crate::store::StoreError> {
    let now = time::now();
    let since = now - reputation::WINDOW_DAYS * 86_400;
    let name = row.name.clone();
    let mode = row.mode;
    let counts = state
        .db
        .read(move |c| reputation::counts(c, mode, &name, since))
        .await?;
    let verified = |s: RecordStatus| s == RecordStatus::Verified;
    let auth = Auth {
        dkim: verified(row.checks.dkim.status),
        spf: verified(row.checks.spf.status),
        dmarc: verified(row.checks.dmarc.status),
    };
    let score = reputation::score(&counts, &auth);
    Ok(ReputationView {
        domain_id: row.id,
        name: row.name,
        score: score.score,
        status: score.status,
        window_days: reputation::WINDOW_DAYS,
        sent: counts.sent,
        delivered: counts.delivered,
        bounced: counts.bounced,
        complained: counts.complained,
        opened: counts.opened,
        bounce_rate: score.bounce_rate,
        complaint_rate: score.complaint_rate,
        computed_at: time::format(now),
    })
}

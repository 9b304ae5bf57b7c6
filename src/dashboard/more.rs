//! Dashboard pages over the other capabilities: sending domains (records to publish, verify,
//! reputation), templates (list, preview with sample variables), physical mail (list,
//! tracking timeline), webhooks (list, create, recent attempts), audiences (contacts, CSV
//! import) and suppressions (list, remove). They read through each capability's store.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::pages::{DashError, Layout, Signed, check_csrf, page};
use crate::AppState;
use crate::audiences::import::{self, ImportReport};
use crate::audiences::store::{self as audience_store, AudienceView, ContactView};
use crate::domains::routes::{DomainView, ReputationView, reputation_of};
use crate::domains::store as domain_store;
use crate::postal::store::{self as mail_store, MailView};
use crate::store::StoreError;
use crate::suppressions::store::{self as suppression_store, SuppressionView};
use crate::templates::render::CompiledTemplate;
use crate::templates::store::{self as template_store, TemplateView};
use crate::webhooks::routes::create_endpoint;
use crate::webhooks::store::{self as webhook_store, AttemptView, WebhookView};

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.route("/domains", web::get().to(domains))
        .route("/domains/{id}", web::get().to(domain))
        .route("/domains/{id}/verify", web::post().to(verify_domain))
        .route("/templates", web::get().to(templates))
        .route("/templates/{id}", web::get().to(template))
        .route("/mail", web::get().to(mail_list))
        .route("/mail/{id}", web::get().to(mail_piece))
        .route("/webhooks", web::get().to(webhooks))
        .route("/webhooks", web::post().to(create_webhook))
        .route("/webhooks/{id}", web::get().to(webhook))
        .route("/audiences", web::get().to(audiences))
        .route("/audiences/{id}", web::get().to(audience))
        .route("/audiences/{id}/import", web::post().to(import_contacts))
        .route("/suppressions", web::get().to(suppressions))
        .route("/suppressions/remove", web::post().to(remove_suppression));
}

#[derive(Template)]
#[template(path = "dashboard/domains.html")]
struct DomainsPage {
    layout: Layout,
    domains: Vec<DomainView>,
}

async fn domains(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let rows = state
        .db
        .read(move |c| domain_store::list(c, mode, None, 200))
        .await?;
    let domains = rows
        .iter()
        .map(|r| DomainView::new(r, &state.config))
        .collect();
    page(&DomainsPage {
        layout: Layout::new(&signed, "domains"),
        domains,
    })
}

#[derive(Template)]
#[template(path = "dashboard/domain.html")]
struct DomainPage {
    layout: Layout,
    domain: DomainView,
    reputation: ReputationView,
}

async fn load_domain(
    state: &AppState,
    signed: &Signed,
    id: String,
) -> Result<domain_store::DomainRow, DashError> {
    let mode = signed.mode;
    state
        .db
        .read(move |c| domain_store::get(c, mode, &id))
        .await?
        .ok_or(DashError::NotFound)
}

async fn domain(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    let row = load_domain(&state, &signed, path.into_inner()).await?;
    let domain = DomainView::new(&row, &state.config);
    let reputation = reputation_of(&state, row).await?;
    page(&DomainPage {
        layout: Layout::new(&signed, "domains"),
        domain,
        reputation,
    })
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

/// Looks the records up in DNS now, then shows the domain again.
async fn verify_domain(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let row = load_domain(&state, &signed, path.into_inner()).await?;
    let id = row.id.clone();
    state.domains.check(row).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/dashboard/domains/{id}")))
        .finish())
}

#[derive(Template)]
#[template(path = "dashboard/templates.html")]
struct TemplatesPage {
    layout: Layout,
    templates: Vec<TemplateView>,
}

async fn templates(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let templates = state
        .db
        .read(move |c| template_store::list(c, mode, None, 200))
        .await?;
    page(&TemplatesPage {
        layout: Layout::new(&signed, "templates"),
        templates,
    })
}

#[derive(Template)]
#[template(path = "dashboard/template.html")]
struct TemplatePage {
    layout: Layout,
    template: TemplateView,
    variables_json: String,
    preview_subject: String,
    preview_text: String,
    preview_error: Option<String>,
}

#[derive(Deserialize)]
struct PreviewQuery {
    variables: Option<String>,
}

/// A template with a preview rendered from sample variables (a GET form: nothing changes).
/// The HTML preview is shown as text: the dashboard never renders user HTML inline.
async fn template(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let r = crate::templates::name::TemplateRef::parse(&path.into_inner());
    let template = state
        .db
        .read(move |c| template_store::get(c, mode, &r))
        .await?
        .ok_or(DashError::NotFound)?;
    let variables_json = query.variables.clone().unwrap_or_else(|| {
        let sample: serde_json::Map<String, serde_json::Value> = template
            .variables
            .iter()
            .map(|v| (v.clone(), serde_json::Value::String(format!("sample {v}"))))
            .collect();
        serde_json::to_string_pretty(&sample).unwrap_or_default()
    });
    let parts = crate::templates::render::TemplateParts {
        subject: template.subject.clone(),
        html: None,
        text: template.text.clone().or_else(|| template.html.clone()),
    };
    let given = variables_json.clone();
    let rendered = web::block(move || -> Result<(String, String), String> {
        let vars: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&given)
            .map_err(|e| format!("The variables are not a JSON object: {e}"))?;
        let compiled = CompiledTemplate::compile(&parts, None).map_err(|e| e.to_string())?;
        let out = compiled.render(&vars).map_err(|e| e.to_string())?;
        Ok((
            out.subject.unwrap_or_default(),
            out.text.unwrap_or_default(),
        ))
    })
    .await
    .map_err(|_| DashError::Internal)?;
    let (preview_subject, preview_text, preview_error) = match rendered {
        Ok((s, t)) => (s, t, None),
        Err(e) => (String::new(), String::new(), Some(e)),
    };
    page(&TemplatePage {
        layout: Layout::new(&signed, "templates"),
        template,
        variables_json,
        preview_subject,
        preview_text,
        preview_error,
    })
}

#[derive(Template)]
#[template(path = "dashboard/mail_list.html")]
struct MailListPage {
    layout: Layout,
    pieces: Vec<MailView>,
}

async fn mail_list(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let filter = mail_store::ListFilter {
        status: None,
        kind: None,
        created_after: None,
        created_before: None,
        before_id: None,
        limit: 100,
    };
    let pieces = state
        .db
        .read(move |c| mail_store::list(c, mode, &filter))
        .await?;
    page(&MailListPage {
        layout: Layout::new(&signed, "mail"),
        pieces,
    })
}

#[derive(Template)]
#[template(path = "dashboard/mail_piece.html")]
struct MailPiecePage {
    layout: Layout,
    piece: MailView,
}

async fn mail_piece(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let id = path.into_inner();
    let piece = state
        .db
        .read(move |c| -> Result<_, StoreError> { mail_store::get(c, mode, &id, false) })
        .await?
        .ok_or(DashError::NotFound)?;
    page(&MailPiecePage {
        layout: Layout::new(&signed, "mail"),
        piece,
    })
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
struct WebhooksPage {
    layout: Layout,
    webhooks: Vec<WebhookView>,
    created: Option<WebhookView>,
    error: Option<String>,
}

async fn render_webhooks(
    state: &AppState,
    signed: &Signed,
    created: Option<WebhookView>,
    error: Option<String>,
) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let page_request = crate::http::PageRequest {
        limit: 100,
        before_id: None,
    };
    let webhooks = state
        .db
        .read(move |c| webhook_store::list(c, mode, &page_request))
        .await?;
    page(&WebhooksPage {
        layout: Layout::new(signed, "webhooks"),
        webhooks,
        created,
        error,
    })
}

async fn webhooks(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    render_webhooks(&state, &signed, None, None).await
}

#[derive(Deserialize)]
struct WebhookForm {
    csrf: Option<String>,
    url: Option<String>,
    events: Option<String>,
    description: Option<String>,
}

/// Registers an endpoint through the same checks as the API; the secret is shown once.
async fn create_webhook(
    state: web::Data<AppState>,
    signed: Signed,
    form: web::Form<WebhookForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let events: Vec<String> = form
        .events
        .clone()
        .unwrap_or_else(|| "*".into())
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    let url = form.url.clone().unwrap_or_default();
    match create_endpoint(&state, signed.mode, &url, events, form.description.clone()).await {
        Ok(view) => render_webhooks(&state, &signed, Some(view), None).await,
        Err(e) => render_webhooks(&state, &signed, None, Some(e.message)).await,
    }
}

#[derive(Template)]
#[template(path = "dashboard/webhook.html")]
struct WebhookPage {
    layout: Layout,
    webhook: WebhookView,
    attempts: Vec<AttemptView>,
}

/// An endpoint and its recent attempts: why deliveries fail.
async fn webhook(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let id = path.into_inner();
    let found = state
        .db
        .read(move |c| -> Result<_, StoreError> {
            let Some(webhook) = webhook_store::get(c, mode, &id)? else {
                return Ok(None);
            };
            let page_request = crate::http::PageRequest {
                limit: 100,
                before_id: None,
            };
            let attempts =
                webhook_store::list_attempts(c, mode, &id, &page_request)?.unwrap_or_default();
            Ok(Some((webhook, attempts)))
        })
        .await?;
    let (webhook, attempts) = found.ok_or(DashError::NotFound)?;
    page(&WebhookPage {
        layout: Layout::new(&signed, "webhooks"),
        webhook,
        attempts,
    })
}

#[derive(Template)]
#[template(path = "dashboard/audiences.html")]
struct AudiencesPage {
    layout: Layout,
    audiences: Vec<AudienceView>,
}

async fn audiences(state: web::Data<AppState>, signed: Signed) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let audiences = state
        .db
        .read(move |c| audience_store::list_audiences(c, mode, None, 200))
        .await?;
    page(&AudiencesPage {
        layout: Layout::new(&signed, "audiences"),
        audiences,
    })
}

#[derive(Template)]
#[template(path = "dashboard/audience.html")]
struct AudiencePage {
    layout: Layout,
    audience: AudienceView,
    contacts: Vec<ContactView>,
    report: Option<ImportReport>,
    error: Option<String>,
}

async fn render_audience(
    state: &AppState,
    signed: &Signed,
    id: String,
    report: Option<ImportReport>,
    error: Option<String>,
) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let found = state
        .db
        .read(move |c| -> Result<_, StoreError> {
            let Some(audience) = audience_store::get_audience(c, mode, &id)? else {
                return Ok(None);
            };
            let contacts =
                audience_store::list_contacts(c, mode, &id, None, None, 100)?.unwrap_or_default();
            Ok(Some((audience, contacts)))
        })
        .await?;
    let (audience, contacts) = found.ok_or(DashError::NotFound)?;
    page(&AudiencePage {
        layout: Layout::new(signed, "audiences"),
        audience,
        contacts,
        report,
        error,
    })
}

async fn audience(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
) -> Result<HttpResponse, DashError> {
    render_audience(&state, &signed, path.into_inner(), None, None).await
}

#[derive(Deserialize)]
struct ImportForm {
    csrf: Option<String>,
    csv: Option<String>,
}

/// Imports pasted CSV (header row: email, first_name, last_name, other columns into `data`)
/// through the same code as `mailsflux contacts import`, which suits large files better.
async fn import_contacts(
    state: web::Data<AppState>,
    signed: Signed,
    path: web::Path<String>,
    form: web::Form<ImportForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let id = path.into_inner();
    let mode = signed.mode;
    let id2 = id.clone();
    let exists = state
        .db
        .read(move |c| audience_store::get_audience(c, mode, &id2))
        .await?
        .is_some();
    if !exists {
        return Err(DashError::NotFound);
    }
    let csv = form.csv.clone().unwrap_or_default();
    let db = state.db.clone();
    let id2 = id.clone();
    let result = web::block(move || import::import(&db, &id2, csv.as_bytes(), |_| {}))
        .await
        .map_err(|_| DashError::Internal)?;
    match result {
        Ok(report) => render_audience(&state, &signed, id, Some(report), None).await,
        Err(e) => render_audience(&state, &signed, id, None, Some(e.to_string())).await,
    }
}

#[derive(Template)]
#[template(path = "dashboard/suppressions.html")]
struct SuppressionsPage {
    layout: Layout,
    suppressions: Vec<SuppressionView>,
}

async fn suppressions(
    state: web::Data<AppState>,
    signed: Signed,
) -> Result<HttpResponse, DashError> {
    let mode = signed.mode;
    let suppressions = state
        .db
        .read(move |c| suppression_store::list(c, mode, None, None, None, 200))
        .await?;
    page(&SuppressionsPage {
        layout: Layout::new(&signed, "suppressions"),
        suppressions,
    })
}

#[derive(Deserialize)]
struct RemoveForm {
    csrf: Option<String>,
    email: Option<String>,
}

/// Removes an address from the suppression list, so it can receive mail again.
async fn remove_suppression(
    state: web::Data<AppState>,
    signed: Signed,
    form: web::Form<RemoveForm>,
) -> Result<HttpResponse, DashError> {
    check_csrf(&signed, form.csrf.as_deref())?;
    let mode = signed.mode;
    let email = form.email.clone().unwrap_or_default().trim().to_lowercase();
    state
        .db
        .write(move |c| suppression_store::delete(c, mode, &email))
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/dashboard/suppressions"))
        .finish())
}

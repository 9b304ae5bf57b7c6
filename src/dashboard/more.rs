//! Dashboard pages over the other capabilities: sending domains (records to publish, verify,
//! reputation), templates (list, preview with sample variables) and physical mail (list,
//! tracking timeline). They read through each capability's store.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::pages::{DashError, Layout, Signed, check_csrf, page};
use crate::AppState;
use crate::domains::routes::{DomainView, ReputationView, reputation_of};
use crate::domains::store as domain_store;
use crate::postal::store::{self as mail_store, MailView};
use crate::store::StoreError;
use crate::templates::render::CompiledTemplate;
use crate::templates::store::{self as template_store, TemplateView};

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.route("/domains", web::get().to(domains))
        .route("/domains/{id}", web::get().to(domain))
        .route("/domains/{id}/verify", web::post().to(verify_domain))
        .route("/templates", web::get().to(templates))
        .route("/templates/{id}", web::get().to(template))
        .route("/mail", web::get().to(mail_list))
        .route("/mail/{id}", web::get().to(mail_piece));
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

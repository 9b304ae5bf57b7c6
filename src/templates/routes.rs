//! Routes of the templates API. Thin: check the body (name rules, part syntax off the async
//! threads), save through the writer, map the answer; previews render on a blocking thread.

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use super::name::{TemplateName, TemplateRef};
use super::render::{Part, TemplateError};
use super::send::{self, Loaded, PartMask};
use super::store::{self, Change, SaveError, TemplateChanges};
use super::{CheckedPart, check_part};
use crate::AppState;
use crate::http::{
    ApiError, ApiJson, Authenticated, List, PageRequest, blocking, json_body, json_response,
};
use crate::keys::Mode;

/// Registers the templates routes (under `/v1`), documented in the OpenAPI document.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_templates)
        .service(create_template)
        .service(get_template)
        .service(update_template)
        .service(delete_template)
        .service(preview_template);
}

/// `POST /v1/templates`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    subject: Option<String>,
    html: Option<String>,
    text: Option<String>,
    layout: Option<String>,
}

/// `PUT /v1/templates/:id`: absent fields stay, `null` removes a part or the layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default, deserialize_with = "present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    subject: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    html: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    text: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    layout: Option<Option<String>>,
}

/// Tells an absent field (`None`, by `default`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /v1/templates/:id/render`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    variables: Option<Map<String, Value>>,
}

fn not_found(r: &str, mode: Mode) -> ApiError {
    ApiError::not_found(format!(
        "No template with id or name '{r}' exists in {} mode.",
        mode.as_str()
    ))
}

fn parse_name(raw: &str) -> Result<TemplateName, ApiError> {
    TemplateName::parse(raw).map_err(|e| ApiError::validation(e.to_string()).with_field("name"))
}

/// What the request does to one part, before its syntax is checked. An empty string removes
/// the part, like `null`.
fn part_change(value: Option<Option<String>>) -> Change<String> {
    match value {
        None => Change::Keep,
        Some(None) => Change::Clear,
        Some(Some(s)) if s.is_empty() => Change::Clear,
        Some(Some(s)) => Change::Set(s),
    }
}

/// The unchecked changes of a create or update.
struct Draft {
    name: Option<TemplateName>,
    subject: Change<String>,
    html: Change<String>,
    text: Change<String>,
    layout: Change<TemplateRef>,
}

impl Draft {
    fn checked_subject(&self) -> Result<(), ApiError> {
        if let Change::Set(s) = &self.subject
            && s.contains(['\r', '\n'])
        {
            return Err(ApiError::validation(
                "The subject may not contain line breaks (CR or LF): it becomes an email header.",
            )
            .with_field("subject"));
        }
        Ok(())
    }

    /// Parses every part that is set (CPU work: runs on a blocking thread).
    fn check(self) -> Result<TemplateChanges, TemplateError> {
        let check = |part: Part, c: Change<String>| -> Result<Change<CheckedPart>, TemplateError> {
            Ok(match c {
                Change::Keep => Change::Keep,
                Change::Clear => Change::Clear,
                Change::Set(s) => Change::Set(check_part(part, s)?),
            })
        };
        Ok(TemplateChanges {
            name: self.name,
            subject: check(Part::Subject, self.subject)?,
            html: check(Part::Html, self.html)?,
            text: check(Part::Text, self.text)?,
            layout: self.layout,
        })
    }
}

fn save_error(err: SaveError, target: &str, mode: Mode) -> ApiError {
    let list = |names: &[String]| {
        let shown: Vec<String> = names.iter().take(10).map(|n| format!("'{n}'")).collect();
        let more = names.len().saturating_sub(10);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    };
    match err {
        SaveError::NotFound => not_found(target, mode),
        SaveError::NameRequired => {
            ApiError::validation("The field 'name' is required.").with_field("name")
        }
        SaveError::NameTaken(name) => ApiError::conflict(format!(
            "A template named '{name}' already exists in {} mode (names are unique, ignoring case). Choose another name, or update that template.",
            mode.as_str()
        ))
        .with_field("name"),
        SaveError::NoBody => ApiError::validation(
            "A template needs an 'html' or a 'text' part (or both).",
        )
        .with_field("html"),
        SaveError::LayoutNotFound(r) => ApiError::validation(format!(
            "The layout '{r}' does not exist in {} mode. Create the layout template first, or give its id or name.",
            mode.as_str()
        ))
        .with_field("layout"),
        SaveError::LayoutIsSelf => {
            ApiError::validation("A template cannot be its own layout.").with_field("layout")
        }
        SaveError::LayoutHasLayout { layout, its_layout } => ApiError::validation(format!(
            "The template '{layout}' cannot be used as a layout: it has a layout itself ('{its_layout}'). Layouts are one level deep."
        ))
        .with_field("layout"),
        SaveError::IsALayout { used_by } => ApiError::validation(format!(
            "This template is the layout of {}, so it cannot have a layout itself (layouts are one level deep).",
            list(&used_by)
        ))
        .with_field("layout"),
        SaveError::LayoutWithoutContent { layout, part } => {
            let inner = TemplateError::LayoutWithoutContent { part };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                inner.code(),
                format!(
                    "The layout '{layout}' cannot wrap this template: its {}",
                    part_sentence(&inner)
                ),
            )
            .with_field("layout")
        }
        SaveError::BreaksDependents { part, used_by } => {
            let inner = TemplateError::LayoutWithoutContent { part };
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                inner.code(),
                format!(
                    "This template is the layout of {}, so its {} must keep {{{{ content }}}}, where their {} goes.",
                    list(&used_by),
                    part.as_str(),
                    part.as_str()
                ),
            )
            .with_field(part.as_str())
        }
        SaveError::InUse { used_by } => ApiError::conflict(format!(
            "This template is the layout of {}; change or delete those templates first (PUT them with \"layout\": null).",
            list(&used_by)
        )),
        SaveError::Store(e) => e.into(),
    }
}

/// "`layout html` never uses {{ content }}, ..." without the engine's leading "the ".
fn part_sentence(err: &TemplateError) -> String {
    let s = err.to_string();
    let s = s.strip_prefix("the ").unwrap_or(&s).to_owned();
    if s.ends_with('.') { s } else { format!("{s}.") }
}

/// Checks the draft's parts off the async threads, then saves it through the writer.
async fn save(
    state: &web::Data<AppState>,
    mode: Mode,
    target: Option<String>,
    draft: Draft,
) -> Result<store::TemplateView, ApiError> {
    draft.checked_subject()?;
    let changes = blocking(move || draft.check())
        .await?
        .map_err(|e| super::api_error(&e, None, None))?;
    let shown = target.clone().unwrap_or_default();
    let saved = state
        .db
        .write(move |conn| {
            let target = target.as_deref().map(TemplateRef::parse);
            store::save(conn, mode, target.as_ref(), &changes)
        })
        .await
        .map_err(|e| save_error(e, &shown, mode))?;
    send::forget(&state.templates, &saved.view.id);
    for id in &saved.dependents {
        send::forget(&state.templates, id);
    }
    Ok(saved.view)
}

/// `POST /v1/templates`
#[utoipa::path(
    tag = "templates",
    responses((status = 201, description = "The created template")),
    security(("api_key" = []))
)]
#[post("/templates")]
async fn create_template(
    state: web::Data<AppState>,
    auth: Authenticated,
    body: ApiJson<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let ApiJson { value: b, .. } = body;
    let draft = Draft {
        name: Some(parse_name(&b.name)?),
        subject: part_change(Some(b.subject)),
        html: part_change(Some(b.html)),
        text: part_change(Some(b.text)),
        layout: match b.layout {
            Some(l) => Change::Set(TemplateRef::parse(&l)),
            None => Change::Keep,
        },
    };
    if !matches!(draft.html, Change::Set(_)) && !matches!(draft.text, Change::Set(_)) {
        return Err(
            ApiError::validation("A template needs an 'html' or a 'text' part (or both).")
                .with_field("html"),
        );
    }
    let view = save(&state, auth.mode(), None, draft).await?;
    Ok(json_response(StatusCode::CREATED, json_body(&view)))
}

/// `PUT /v1/templates/:id`
#[utoipa::path(
    tag = "templates",
    params(("id" = String, Path, description = "The template id (tpl_...) or name")),
    responses((status = 200, description = "The updated template")),
    security(("api_key" = []))
)]
#[put("/templates/{id}")]
async fn update_template(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
    body: ApiJson<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let ApiJson { value: b, .. } = body;
    let name = match b.name {
        None => None,
        Some(None) => {
            return Err(ApiError::validation(
                "'name' cannot be null: a template always has a name.",
            )
            .with_field("name"));
        }
        Some(Some(n)) => Some(parse_name(&n)?),
    };
    let draft = Draft {
        name,
        subject: part_change(b.subject),
        html: part_change(b.html),
        text: part_change(b.text),
        layout: match b.layout {
            None => Change::Keep,
            Some(None) => Change::Clear,
            Some(Some(l)) if l.is_empty() => Change::Clear,
            Some(Some(l)) => Change::Set(TemplateRef::parse(&l)),
        },
    };
    let view = save(&state, auth.mode(), Some(path.into_inner()), draft).await?;
    Ok(json_response(StatusCode::OK, json_body(&view)))
}

/// `GET /v1/templates/:id` (id or name)
#[utoipa::path(
    tag = "templates",
    params(("id" = String, Path, description = "The template id (tpl_...) or name")),
    responses((status = 200, description = "The template")),
    security(("api_key" = []))
)]
#[get("/templates/{id}")]
async fn get_template(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let mode = auth.mode();
    let r = TemplateRef::parse(&raw);
    let view = state
        .db
        .read(move |c| store::get(c, mode, &r))
        .await
        .map_err(ApiError::from)?;
    match view {
        Some(v) => Ok(json_response(StatusCode::OK, json_body(&v))),
        None => Err(not_found(&raw, mode)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/templates`
#[utoipa::path(
    tag = "templates",
    params(
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "A list of templates")),
    security(("api_key" = []))
)]
#[get("/templates")]
async fn list_templates(
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
    let page = List::from_rows(rows, limit, |t| &t.id);
    Ok(json_response(StatusCode::OK, json_body(&page)))
}

/// `DELETE /v1/templates/:id`. Accepted emails keep their rendered content.
#[utoipa::path(
    tag = "templates",
    params(("id" = String, Path, description = "The template id (tpl_...) or name")),
    responses((status = 200, description = "`{id, deleted: true}`")),
    security(("api_key" = []))
)]
#[delete("/templates/{id}")]
async fn delete_template(
    state: web::Data<AppState>,
    auth: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let mode = auth.mode();
    let r = TemplateRef::parse(&raw);
    let id = state
        .db
        .write(move |c| store::delete(c, mode, &r))
        .await
        .map_err(|e| save_error(e, &raw, mode))?;
    send::forget(&state.templates, &id);
    Ok(crate::http::deleted_response("id", &id))
}

/// Placeholder for `unsubscribe_url` in previews when the caller gives none: the real link
/// is made per recipient at send time.
fn preview_unsubscribe_url(state: &AppState) -> String {
    format!(
        "{}/u/preview",
        state.config.server.public_url.trim_end_matches('/')
    )
}

/// `POST /v1/templates/:id/render`: `{variables}` → `{subject, html, text}`, rendered exactly
/// as a send would (layout included); nothing is stored. The body may be empty.
#[utoipa::path(
    tag = "templates",
    params(("id" = String, Path, description = "The template id (tpl_...) or name")),
    request_body(content = serde_json::Value, description = "`{variables}`; may be empty"),
    responses((status = 200, description = "`{subject, html, text}`")),
    security(("api_key" = []))
)]
#[post("/templates/{id}/render")]
async fn preview_template(
    state: web::Data<AppState>,
    auth: Authenticated,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: PreviewBody = if body.iter().all(u8::is_ascii_whitespace) {
        PreviewBody::default()
    } else {
        crate::http::json::check_content_type(&req)?;
        crate::http::json::parse(&body)?
    };
    let raw = path.into_inner();
    let mode = auth.mode();
    let r = TemplateRef::parse(&raw);
    let loaded = state
        .db
        .read(move |c| store::load_with_layout(c, mode, &r))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| not_found(&raw, mode))?;
    let loaded = Loaded {
        template: loaded.0,
        layout: loaded.1,
    };
    let mut variables = body.variables.unwrap_or_default();
    if !variables.contains_key("unsubscribe_url") {
        variables.insert(
            "unsubscribe_url".into(),
            Value::String(preview_unsubscribe_url(&state)),
        );
    }
    let cache = state.templates.clone();
    let name = loaded.template.name.clone();
    let rendered =
        blocking(move || send::compile(&cache, &loaded, PartMask::ALL)?.render(&variables))
            .await?
            .map_err(|e| super::api_error(&e, None, None))?;
    if let Some(subject) = &rendered.subject {
        send::check_rendered_subject(&name, subject)?;
    }
    Ok(json_response(
        StatusCode::OK,
        json_body(&json!({
            "subject": rendered.subject,
            "html": rendered.html,
            "text": rendered.text,
        })),
    ))
}

//! Sending with a template: turns a [`SendRequest`] that names a `template_id` into one that
//! carries the rendered `subject` / `html` / `text`, so the emails capability stores and
//! sends the rendered content and never looks at the template again (later edits or deletes
//! of the template do not change an accepted email).
//!
//! Fields given beside `template_id` override the template's part of the same name and are
//! used as they are (not rendered, not wrapped by the layout); the template's overridden
//! parts are not rendered at all, so their variables need not be supplied.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use r2d2_sqlite::SqliteConnectionManager;

use super::name::TemplateRef;
use super::render::{CompiledTemplate, TemplateCache, TemplateError, TemplateParts};
use super::store::{self, TemplateRecord};
use crate::emails::request::SendRequest;
use crate::http::ApiError;
use crate::keys::Mode;
use crate::store::Db;

/// Which of the template's parts a render uses (the others are overridden by the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartMask {
    pub subject: bool,
    pub html: bool,
    pub text: bool,
}

impl PartMask {
    /// Every part: previews.
    pub const ALL: PartMask = PartMask {
        subject: true,
        html: true,
        text: true,
    };

    fn bits(self) -> u8 {
        u8::from(self.subject) | u8::from(self.html) << 1 | u8::from(self.text) << 2
    }

    fn select(self, parts: &TemplateParts) -> TemplateParts {
        TemplateParts {
            subject: parts.subject.clone().filter(|_| self.subject),
            html: parts.html.clone().filter(|_| self.html),
            text: parts.text.clone().filter(|_| self.text),
        }
    }
}

/// A template as loaded for a render: the template and its layout.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub template: TemplateRecord,
    pub layout: Option<TemplateRecord>,
}

/// The compiled form of the `mask` parts of `loaded` (with its layout), from the shared cache
/// when it was compiled from the same sources before. CPU work on a miss.
pub fn compile(
    cache: &TemplateCache,
    loaded: &Loaded,
    mask: PartMask,
) -> Result<Arc<CompiledTemplate>, TemplateError> {
    let parts = mask.select(&loaded.template.parts);
    let layout = loaded.layout.as_ref().map(|l| &l.parts);
    let version = super::render::source_version(&parts, layout);
    let key = cache_key(&loaded.template.id, mask.bits());
    cache.get_or_compile(&key, version, || CompiledTemplate::compile(&parts, layout))
}

fn cache_key(id: &str, bits: u8) -> String {
    format!("{id}#{bits}")
}

/// Drops every compiled form of template `id` from the cache (on update and delete). The
/// cache's versions are hashes of the sources, so this frees memory rather than preventing
/// stale renders, which cannot happen.
pub fn forget(cache: &TemplateCache, id: &str) {
    for bits in 0..8 {
        cache.invalidate(&cache_key(id, bits));
    }
}

/// Refuses a rendered subject with a line break: an email header cannot hold one, and
/// silently changing the subject would hide the problem.
pub fn check_rendered_subject(name: &str, subject: &str) -> Result<(), ApiError> {
    if subject.contains(['\r', '\n']) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_render_error",
            format!(
                "The template '{name}' rendered a subject with a line break (CR or LF), which an email header cannot hold. Remove line breaks from the subject template and from the variables it uses."
            ),
        )
        .with_field("template_id"));
    }
    Ok(())
}

/// A request after template resolution: the rendered content in place, and the id of the
/// template it came from (stored with the email).
#[derive(Debug)]
pub struct Applied {
    pub request: SendRequest,
    pub template_id: Option<String>,
}

/// Resolves `template_id` on the send requests of one API call (a send or a batch). Each
/// distinct template is read from the database and compiled once per call (and compiled
/// once per process while its sources do not change, through the shared cache).
///
/// [`apply`](Self::apply) reads the database and renders: call it on a blocking thread
/// (`web::block`) when the request names a template; without one it does no I/O.
pub struct SendRenderer {
    db: Db,
    cache: Arc<TemplateCache>,
    mode: Mode,
    conn: Option<r2d2::PooledConnection<SqliteConnectionManager>>,
    loaded: HashMap<String, Option<Arc<Loaded>>>,
    compiled: HashMap<(String, u8), Arc<CompiledTemplate>>,
}

impl SendRenderer {
    pub fn new(db: Db, cache: Arc<TemplateCache>, mode: Mode) -> SendRenderer {
        SendRenderer {
            db,
            cache,
            mode,
            conn: None,
            loaded: HashMap::new(),
            compiled: HashMap::new(),
        }
    }

    /// Whether the request needs this renderer's blocking work.
    pub fn needs_render(request: &SendRequest) -> bool {
        request.template_id.is_some()
    }

    fn load(&mut self, raw: &str) -> Result<Option<Arc<Loaded>>, ApiError> {
        if let Some(hit) = self.loaded.get(raw) {
            return Ok(hit.clone());
        }
        if self.conn.is_none() {
            self.conn = Some(self.db.read_blocking()?);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(ApiError::internal());
        };
        // One snapshot for the template and its layout: read apart, a commit between the
        // two could pair a template with a layout it never had.
        let snapshot = crate::store::Snapshot::begin(conn)?;
        let found = store::load_with_layout(conn, self.mode, &TemplateRef::parse(raw))?
            .map(|(template, layout)| Arc::new(Loaded { template, layout }));
        drop(snapshot);
        self.loaded.insert(raw.to_owned(), found.clone());
        Ok(found)
    }

    fn compiled(
        &mut self,
        loaded: &Loaded,
        mask: PartMask,
    ) -> Result<Arc<CompiledTemplate>, TemplateError> {
        let key = (loaded.template.id.clone(), mask.bits());
        if let Some(hit) = self.compiled.get(&key) {
            return Ok(hit.clone());
        }
        let c = compile(&self.cache, loaded, mask)?;
        self.compiled.insert(key, c.clone());
        Ok(c)
    }

    /// Renders the request's template with its `variables` into `subject` / `html` /
    /// `text` (fields the request gives win). Errors: the template does not exist in this
    /// mode (`422 validation_error`, field `template_id`); the render fails
    /// (`422 template_render_error`, naming the variable or the limit); the rendered subject
    /// has a line break ([`check_rendered_subject`]); no subject at all
    /// (`422 validation_error`); `variables` without `template_id` (`422 validation_error`,
    /// except on audience sends, whose content is rendered per contact).
    pub fn apply(&mut self, mut request: SendRequest) -> Result<Applied, ApiError> {
        let Some(raw) = request.template_id.take() else {
            // Marketing content is itself rendered per recipient (tracking::copies), so its
            // variables are used even without a template.
            if request.variables.is_some()
                && request.audience_id.is_none()
                && request.email_type.as_deref() != Some("marketing")
            {
                return Err(ApiError::validation(
                    "'variables' are only used with 'template_id'; name the template to render, or remove 'variables'.",
                )
                .with_field("variables"));
            }
            return Ok(Applied {
                request,
                template_id: None,
            });
        };
        let loaded = self.load(&raw)?.ok_or_else(|| {
            ApiError::validation(format!(
                "The template '{raw}' does not exist in {} mode. Give a template id or name from GET /v1/templates.",
                self.mode.as_str()
            ))
            .with_field("template_id")
        })?;
        let t = &loaded.template;
        let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        let mask = PartMask {
            subject: !given(&request.subject),
            html: !given(&request.html),
            text: !given(&request.text),
        };
        let name = t.name.as_str();
        let compiled = self
            .compiled(&loaded, mask)
            .map_err(|e| super::api_error(&e, Some(name), Some("template_id")))?;
        let variables = request.variables.take().unwrap_or_default();
        let rendered = compiled
            .render(&variables)
            .map_err(|e| super::api_error(&e, Some(name), Some("template_id")))?;
        if let Some(subject) = rendered.subject {
            check_rendered_subject(name, &subject)?;
            if subject.trim().is_empty() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "template_render_error",
                    format!(
                        "The template '{name}' rendered an empty subject. Check the variables its subject uses, or give a 'subject'."
                    ),
                )
                .with_field("template_id"));
            }
            request.subject = Some(subject);
        } else if !given(&request.subject) {
            return Err(ApiError::validation(format!(
                "The template '{name}' has no subject: give a 'subject' beside 'template_id', or add one to the template."
            ))
            .with_field("subject"));
        }
        if let Some(html) = rendered.html {
            request.html = Some(html);
        }
        if let Some(text) = rendered.text {
            request.text = Some(text);
        }
        Ok(Applied {
            request,
            template_id: Some(t.id.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::store::PartVariables;

    fn loaded(html: &str) -> Loaded {
        Loaded {
            template: TemplateRecord {
                id: "tpl_1".into(),
                name: "t".into(),
                parts: TemplateParts {
                    subject: Some("S {{ a }}".into()),
                    html: Some(html.into()),
                    text: None,
                },
                layout_id: None,
                variables: PartVariables::default(),
                created_at: 0,
                updated_at: 0,
            },
            layout: None,
        }
    }

    #[test]
    fn compiled_once_per_source_and_mask() {
        let cache = TemplateCache::default();
        let v1 = loaded("<p>{{ a }}</p>");
        let first = compile(&cache, &v1, PartMask::ALL).unwrap();
        let again = compile(&cache, &v1, PartMask::ALL).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Another mask is another compiled form, without the masked part.
        let no_subject = PartMask {
            subject: false,
            ..PartMask::ALL
        };
        let partial = compile(&cache, &v1, no_subject).unwrap();
        assert!(!Arc::ptr_eq(&first, &partial));
        let vars = serde_json::json!({"a": 1});
        let vars = vars.as_object().unwrap();
        assert_eq!(partial.render(vars).unwrap().subject, None);
        assert_eq!(first.render(vars).unwrap().subject.as_deref(), Some("S 1"));
        // Edited sources are never served from the old entry, even without `forget`.
        let v2 = loaded("<b>{{ a }}</b>");
        let edited = compile(&cache, &v2, PartMask::ALL).unwrap();
        assert_eq!(
            edited.render(vars).unwrap().html.as_deref(),
            Some("<b>1</b>")
        );
        // `forget` drops every mask.
        forget(&cache, "tpl_1");
        let parts = PartMask::ALL.select(&v2.template.parts);
        let version = crate::templates::render::source_version(&parts, None);
        assert!(
            cache
                .get(&cache_key("tpl_1", PartMask::ALL.bits()), version)
                .is_none()
        );
    }
}

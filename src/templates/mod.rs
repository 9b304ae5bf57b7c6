//! User templates: the sandboxed minijinja engine (`render`), template names (`name`), their
//! storage (`store`), the `/v1/templates` routes (`routes`) and the resolution of
//! `template_id` on sends (`send`).
//!
//! A template is saved as source; every part is parsed when it is saved (so a syntax error
//! is a 422 at once) and the variables each part reads are kept. Sends and previews compile
//! the template (with its layout) through the shared [`TemplateCache`], keyed by template id
//! and a hash of the sources, so an edit can never serve a stale compiled template and a
//! batch of 1,000 sends compiles once.

pub mod name;
pub mod render;
pub mod routes;
pub mod send;
pub mod store;

use actix_web::http::StatusCode;

use crate::http::ApiError;
pub use render::{CompiledTemplate, TemplateCache};
use render::{Part, TemplateError, TemplateParts};

/// Variables the server supplies itself: `content` (a layout's slot for the template it
/// wraps) and `unsubscribe_url` (marketing sends). They are left out of a template's
/// `variables` list, which tells a client what it has to supply.
pub const SERVER_VARIABLES: [&str; 2] = [render::LAYOUT_CONTENT_VARIABLE, "unsubscribe_url"];

/// One part's source, checked at save time: it parses, and it reads these variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPart {
    pub source: String,
    pub variables: Vec<String>,
}

/// Parses one part on its own (CPU work: call it off the async threads) and lists the
/// variables it reads. Parts are checked one by one so each keeps its own variable list:
/// an update of one part then never needs the others re-parsed.
pub fn check_part(part: Part, source: String) -> Result<CheckedPart, TemplateError> {
    let mut parts = TemplateParts::default();
    match part {
        Part::Subject => parts.subject = Some(source),
        Part::Html | Part::LayoutHtml => parts.html = Some(source),
        Part::Text | Part::LayoutText => parts.text = Some(source),
    }
    let variables = render::check_syntax(&parts)?;
    let source = parts
        .subject
        .or(parts.html)
        .or(parts.text)
        .unwrap_or_default();
    Ok(CheckedPart { source, variables })
}

/// The API error for a template problem: `422` with [`TemplateError::code`]. `template` names
/// the template in the message when the request named it indirectly (a send). The field is
/// `variables.<name>` for a missing variable, the part for a syntax error found at save
/// time, else `fallback_field` (e.g. `template_id` on a send).
pub fn api_error(
    err: &TemplateError,
    template: Option<&str>,
    fallback_field: Option<&str>,
) -> ApiError {
    let detail = sentence(&err.to_string());
    let message = match template {
        Some(name) => format!("The template '{name}' could not be used: {detail}"),
        None => capitalize(&detail),
    };
    let field = match err {
        TemplateError::MissingVariable { name, .. } => Some(format!("variables.{name}")),
        TemplateError::Syntax { part, .. } | TemplateError::SourceTooLarge { part, .. }
            if template.is_none() =>
        {
            Some(match part {
                Part::LayoutHtml | Part::LayoutText => "layout".to_owned(),
                other => other.as_str().to_owned(),
            })
        }
        _ => fallback_field.map(str::to_owned),
    };
    let mut api = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.code(), message);
    if let Some(field) = field {
        api = api.with_field(field);
    }
    api
}

/// A sentence ends with a period (engine messages do not).
fn sentence(s: &str) -> String {
    let s = s.trim_end();
    if s.ends_with(['.', '!', '?']) {
        s.to_owned()
    } else {
        format!("{s}.")
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_checked_alone() {
        let p = check_part(Part::Html, "<p>{{ b }} {{ a }}</p>".into()).unwrap();
        assert_eq!(p.variables, vec!["a", "b"]);
        assert_eq!(p.source, "<p>{{ b }} {{ a }}</p>");
        let err = check_part(Part::Text, "line 1\n{% if %}".into()).unwrap_err();
        assert!(matches!(
            err,
            TemplateError::Syntax {
                part: Part::Text,
                line: Some(2),
                ..
            }
        ));
    }

    #[test]
    fn errors_become_api_errors() {
        let err = check_part(Part::Html, "{{ x }".into()).unwrap_err();
        let api = api_error(&err, None, None);
        assert_eq!(api.code, "template_syntax_error");
        assert_eq!(api.field.as_deref(), Some("html"));
        assert!(
            api.message
                .starts_with("Syntax error in the html template at line 1")
        );
        assert!(api.message.ends_with('.'));

        let missing = TemplateError::MissingVariable {
            part: Part::Subject,
            name: "order.id".into(),
            line: Some(1),
        };
        let api = api_error(&missing, Some("receipt"), Some("template_id"));
        assert_eq!(api.code, "template_render_error");
        assert_eq!(api.field.as_deref(), Some("variables.order.id"));
        assert!(
            api.message
                .starts_with("The template 'receipt' could not be used: the variable `order.id`"),
            "{}",
            api.message
        );
    }
}

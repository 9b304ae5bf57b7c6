//! Template names and references. A template is addressed by its id or by its name (in
//! `/v1/templates/:id`, `template_id` of a send, `layout`), so a name may never look like an
//! id: everything that starts with `tpl_` is taken to be an id.

use std::fmt;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The prefix of template ids; no name may start with it (ASCII case ignored).
pub const ID_PREFIX: &str = "tpl_";

/// A checked template name: 1 to 100 characters, no control characters (so no CR, LF or
/// tab), no `/` (it travels in URL paths), no leading or trailing whitespace, and not
/// starting with `tpl_`. Names are unique per mode ignoring ASCII case (the database
/// enforces that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateName(String);

/// Why a name was refused; `Display` is the sentence for the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("The template name may not be empty.")]
    Empty,
    #[error("The template name is {0} characters long; the limit is 100.")]
    TooLong(usize),
    #[error("The template name may not contain line breaks, tabs or other control characters.")]
    Control,
    #[error("The template name may not contain '/'.")]
    Slash,
    #[error("The template name may not start or end with whitespace.")]
    Whitespace,
    #[error(
        "The template name may not start with 'tpl_': names that look like template ids would be ambiguous, since a template can be addressed by id or by name."
    )]
    LooksLikeId,
}

impl TemplateName {
    pub fn parse(raw: &str) -> Result<TemplateName, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        let chars = raw.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(NameError::TooLong(chars));
        }
        if raw.chars().any(char::is_control) {
            return Err(NameError::Control);
        }
        if raw.contains('/') {
            return Err(NameError::Slash);
        }
        if raw.trim() != raw {
            return Err(NameError::Whitespace);
        }
        if starts_with_id_prefix(raw) {
            return Err(NameError::LooksLikeId);
        }
        Ok(TemplateName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TemplateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn starts_with_id_prefix(s: &str) -> bool {
    s.get(..ID_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ID_PREFIX))
}

/// How a request names a template: by id (anything starting with `tpl_`) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TemplateRef {
    Id(String),
    Name(String),
}

impl TemplateRef {
    /// Never fails: a reference that is neither a valid id nor a valid name simply finds
    /// nothing (404 / 422 "does not exist"), which is the answer the client needs.
    pub fn parse(raw: &str) -> TemplateRef {
        if starts_with_id_prefix(raw) {
            TemplateRef::Id(raw.to_owned())
        } else {
            TemplateRef::Name(raw.to_owned())
        }
    }
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateRef::Id(s) | TemplateRef::Name(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(TemplateName::parse("welcome").is_ok());
        assert!(TemplateName::parse("Welcome email · v2 (fr)").is_ok());
        assert!(TemplateName::parse(&"é".repeat(100)).is_ok());
        assert_eq!(
            TemplateName::parse(&"é".repeat(101)),
            Err(NameError::TooLong(101))
        );
        assert_eq!(TemplateName::parse(""), Err(NameError::Empty));
        assert_eq!(TemplateName::parse("a\r\nb"), Err(NameError::Control));
        assert_eq!(TemplateName::parse("a\tb"), Err(NameError::Control));
        assert_eq!(TemplateName::parse("a/b"), Err(NameError::Slash));
        assert_eq!(TemplateName::parse(" a"), Err(NameError::Whitespace));
        assert_eq!(TemplateName::parse("a "), Err(NameError::Whitespace));
        assert_eq!(TemplateName::parse("tpl_x"), Err(NameError::LooksLikeId));
        assert_eq!(TemplateName::parse("TPL_x"), Err(NameError::LooksLikeId));
        assert!(TemplateName::parse("tpl").is_ok());
        assert!(TemplateName::parse("tplx").is_ok());
    }

    #[test]
    fn refs() {
        assert_eq!(
            TemplateRef::parse("tpl_01ABC"),
            TemplateRef::Id("tpl_01ABC".into())
        );
        assert_eq!(
            TemplateRef::parse("welcome"),
            TemplateRef::Name("welcome".into())
        );
    }
}

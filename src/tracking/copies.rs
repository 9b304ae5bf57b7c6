//! Per-recipient copies of an email. A marketing email carries each recipient's own
//! unsubscribe link (in `List-Unsubscribe` and as `{{ unsubscribe_url }}`), and a tracked
//! email each recipient's own pixel and click links, so such an email is built once per
//! recipient; the copy is stored in `recipient_copies` and the delivery worker sends that.
//!
//! For a marketing email the subject, html and text are Jinja templates (the sandboxed
//! engine of `templates::render`), rendered per recipient with the send's `variables`, plus
//! `unsubscribe_url`, plus `contact` (email, first_name, last_name, data) for audience sends.

use serde_json::{Map, Value};

use super::html::{self, Tracking};
use super::token::{Claims, Kind, Signer};
use crate::address::Mailbox;
use crate::audiences::sender::template_error;
use crate::emails::mime;
use crate::emails::request::{EmailDraft, EmailType};
use crate::emails::store::PreparedEmail;
use crate::http::ApiError;
use crate::keys::Mode;
use crate::templates::render::{CompiledTemplate, TemplateError, TemplateParts};

/// Builds the public links of the server (`server.public_url`).
#[derive(Clone)]
pub struct Links {
    base: String,
    signer: Signer,
}

impl Links {
    pub fn new(public_url: &str, server_secret: &[u8]) -> Links {
        Links {
            base: public_url.trim_end_matches('/').to_string(),
            signer: Signer::new(server_secret),
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// `{public_url}/{prefix}/{token}`.
    fn url(&self, prefix: &str, claims: &Claims) -> String {
        format!("{}/{prefix}/{}", self.base, self.signer.sign(claims))
    }

    /// The start of every unsubscribe URL (click tracking leaves those links alone).
    fn unsubscribe_prefix(&self) -> String {
        format!("{}/u/", self.base)
    }
}

/// Why a copy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("the HTML could not be rewritten for tracking: {0}")]
    Html(String),
    #[error("the MIME message could not be built: {0}")]
    Mime(#[from] std::io::Error),
    #[error("DKIM signing failed: {0}")]
    Dkim(String),
}

/// Everything the copies of one email share.
pub struct CopyPlan {
    mode: Mode,
    email_id: String,
    audience_id: Option<String>,
    draft: EmailDraft,
    message_id: String,
    date: i64,
    variables: Map<String, Value>,
    template: Option<CompiledTemplate>,
    links: Links,
    /// Signs each copy with the From domain's DKIM key, when it has one.
    signer: Option<std::sync::Arc<crate::domains::Sender>>,
}

/// True when an email needs one copy per recipient.
pub fn needs_copies(draft: &EmailDraft) -> bool {
    draft.email_type == EmailType::Marketing || draft.track_opens || draft.track_clicks
}

/// Header names and values of the one-click unsubscribe (RFC 2369, RFC 8058).
fn unsubscribe_headers(url: &str) -> mime::ExtraHeaders {
    vec![
        ("List-Unsubscribe".to_string(), format!("<{url}>")),
        (
            "List-Unsubscribe-Post".to_string(),
            "List-Unsubscribe=One-Click".to_string(),
        ),
    ]
}

impl CopyPlan {
    /// Compiles the content (for marketing) once; a syntax error is the sender's to fix.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mode: Mode,
        email_id: &str,
        audience_id: Option<&str>,
        draft: EmailDraft,
        message_id: &str,
        date: i64,
        variables: Map<String, Value>,
        links: Links,
    ) -> Result<CopyPlan, TemplateError> {
        let template = if draft.email_type == EmailType::Marketing {
            Some(CompiledTemplate::compile(
                &TemplateParts {
                    subject: Some(draft.subject.clone()),
                    html: draft.html.clone(),
                    text: draft.text.clone(),
                },
                None,
            )?)
        } else {
            None
        };
        Ok(CopyPlan {
            mode,
            email_id: email_id.to_string(),
            audience_id: audience_id.map(str::to_string),
            draft,
            message_id: message_id.to_string(),
            date,
            variables,
            template,
            links,
            signer: None,
        })
    }

    /// Signs every copy with this domain key (set for live and test sends from a sending
    /// domain, like the single message of `emails::prepare`).
    pub fn with_signer(
        mut self,
        signer: Option<std::sync::Arc<crate::domains::Sender>>,
    ) -> CopyPlan {
        self.signer = signer;
        self
    }

    fn claims(&self, kind: Kind, recipient: &str) -> Claims {
        let mut c = Claims::new(kind, self.mode, &self.email_id, recipient);
        if kind == Kind::Unsubscribe {
            c.audience_id = self.audience_id.clone();
        }
        c
    }

    /// The unsubscribe URL of `recipient`.
    pub fn unsubscribe_url(&self, recipient: &str) -> String {
        self.links
            .url("u", &self.claims(Kind::Unsubscribe, recipient))
    }

    /// The MIME bytes of the copy for `recipient`; for an audience send, `contact` is the
    /// contact (the `contact` variable; the copy is addressed to it).
    pub fn build(
        &self,
        recipient: &str,
        contact: Option<(&Mailbox, Value)>,
    ) -> Result<Vec<u8>, CopyError> {
        let mut draft = self.draft.clone();
        let mut extra = mime::ExtraHeaders::new();
        if let Some(template) = &self.template {
            let url = self.unsubscribe_url(recipient);
            let mut vars = self.variables.clone();
            vars.insert("unsubscribe_url".into(), Value::String(url.clone()));
            if let Some((_, contact)) = &contact {
                vars.insert("contact".into(), contact.clone());
            }
            let rendered = template.render(&vars)?;
            // A variable may hold a line break; a header may not.
            draft.subject = rendered
                .subject
                .unwrap_or_default()
                .replace(['\r', '\n'], " ");
            // The HTML escaper writes `/` as `&#x2f;`; the URL is ours (no other character
            // it escapes), so it goes in as written, which readers and scanners expect.
            draft.html = rendered
                .html
                .map(|h| h.replace(&url.replace('/', "&#x2f;"), &url));
            draft.text = rendered.text;
            extra = unsubscribe_headers(&url);
        }
        if let Some((mailbox, _)) = contact {
            draft.to = vec![mailbox.clone()];
        }
        if let Some(html_body) = draft.html.take() {
            // The text part comes from the HTML as written, before links are rewritten.
            if draft.text.is_none() {
                draft.text = Some(mime::html_to_text(&html_body));
            }
            let pixel = draft
                .track_opens
                .then(|| self.links.url("t/o", &self.claims(Kind::Open, recipient)));
            let unsubscribe_prefix = self.links.unsubscribe_prefix();
            let click = |target: &str| -> Option<String> {
                if target.starts_with(&unsubscribe_prefix) {
                    return None;
                }
                // Recorded normalized (non-ASCII percent-encoded, IDNA host): what a browser
                // would request, and always a valid `Location`. Unparsable links stay as they are.
                let url = url::Url::parse(target).ok()?;
                let mut c = self.claims(Kind::Click, recipient);
                c.url = Some(url.to_string());
                Some(self.links.url("t/c", &c))
            };
            let tracking = Tracking {
                click: if draft.track_clicks {
                    Some(&click)
                } else {
                    None
                },
                pixel: pixel.as_deref(),
            };
            draft.html = Some(html::apply(&html_body, &tracking).map_err(CopyError::Html)?);
        }
        let raw = mime::build(&draft, &self.message_id, self.date, &extra)?;
        match &self.signer {
            Some(signer) => signer
                .sign(&raw)
                .map_err(|e| CopyError::Dkim(e.to_string())),
            None => Ok(raw),
        }
    }
}

/// Gives a marketing or tracked email one copy per recipient (to, cc and bcc; each address
/// once). The email's own `raw` becomes the first recipient's copy. A template error is the
/// sender's to fix: `422 template_syntax_error` / `template_render_error`.
pub fn personalize(
    p: &mut PreparedEmail,
    variables: Map<String, Value>,
    links: &Links,
) -> Result<(), ApiError> {
    if !needs_copies(&p.draft) {
        return Ok(());
    }
    let plan = CopyPlan::new(
        p.mode,
        &p.id,
        None,
        p.draft.clone(),
        &p.message_id,
        p.created_at,
        variables,
        links.clone(),
    )
    .map_err(|e| template_error(&e))?
    .with_signer(p.signer.clone());
    let mut copies: Vec<(String, Vec<u8>)> = Vec::new();
    for (_, m) in p.draft.recipients() {
        let address = m.address.as_str();
        let lower = m.address.normalized();
        if copies.iter().any(|(l, _)| *l == lower) {
            continue;
        }
        let raw = plan.build(address, None).map_err(|e| match e {
            CopyError::Template(t) => template_error(&t),
            other => {
                tracing::error!(error = %other, "building a copy failed");
                ApiError::internal()
            }
        })?;
        copies.push((lower, raw));
    }
    if let Some((_, first)) = copies.first() {
        p.raw = first.clone();
    }
    p.copies = copies;
    Ok(())
}

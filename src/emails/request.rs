//! The send request as it arrives (`SendRequest`, loose JSON shapes) and as the rest of the
//! code sees it (`EmailDraft`, typed and checked). Parsing turns one into the other or says
//! exactly which field is wrong, with the error code API.md gives for it.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::address::Mailbox;
use crate::http::ApiError;
use crate::store::time;

/// Most recipients (to + cc + bcc) of one email.
pub const MAX_RECIPIENTS: usize = 50;

/// A string or an array of strings (`"to": "a@x.org"` or `"to": ["a@x.org", "b@x.org"]`).
#[derive(Debug, Clone)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or an array of address strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// An attachment as sent: base64 content.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRequest {
    pub filename: Option<String>,
    pub content: String,
    pub content_type: Option<String>,
    pub content_id: Option<String>,
}

/// `POST /v1/emails/send` and each item of `/batch`, as JSON.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub from: Option<String>,
    /// An address or an array of addresses.
    #[schema(value_type = Option<Object>)]
    pub to: Option<OneOrMany>,
    #[schema(value_type = Option<Object>)]
    pub cc: Option<OneOrMany>,
    #[schema(value_type = Option<Object>)]
    pub bcc: Option<OneOrMany>,
    #[schema(value_type = Option<Object>)]
    pub reply_to: Option<OneOrMany>,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    pub template_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
    pub audience_id: Option<String>,
    #[serde(rename = "type")]
    pub email_type: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub attachments: Option<Vec<AttachmentRequest>>,
    pub tags: Option<BTreeMap<String, String>>,
    pub scheduled_at: Option<String>,
    pub track_opens: Option<bool>,
    pub track_clicks: Option<bool>,
}

/// Transactional or marketing (marketing respects unsubscribes and gets List-Unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailType {
    Transactional,
    Marketing,
}

impl EmailType {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailType::Transactional => "transactional",
            EmailType::Marketing => "marketing",
        }
    }
}

/// A decoded attachment.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
    /// Set for inline parts referenced as `cid:` from the HTML.
    pub content_id: Option<String>,
}

/// A checked email, ready to be built into MIME and stored.
#[derive(Debug, Clone)]
pub struct EmailDraft {
    pub email_type: EmailType,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    /// Custom headers, checked: no CR/LF, not one the server sets.
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<Attachment>,
    pub tags: BTreeMap<String, String>,
    /// Unix seconds, only when in the future.
    pub scheduled_at: Option<i64>,
    pub track_opens: bool,
    pub track_clicks: bool,
    /// The stored template the content was rendered from (kept with the email).
    pub template_id: Option<String>,
}

impl EmailDraft {
    /// Every recipient (to, cc, bcc) with its kind.
    pub fn recipients(&self) -> impl Iterator<Item = (&'static str, &Mailbox)> {
        self.to
            .iter()
            .map(|m| ("to", m))
            .chain(self.cc.iter().map(|m| ("cc", m)))
            .chain(self.bcc.iter().map(|m| ("bcc", m)))
    }
}

/// Headers a client may not set: the server owns them (API.md lists the first eight; the MIME
/// structure headers would break the message).
const RESERVED_HEADERS: [&str; 12] = [
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "dkim-signature",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "reply-to",
];

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

fn recipient_error(field: String, why: impl fmt::Display) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_recipient",
        format!("The '{field}' field must be a valid email address: {why}."),
    )
    .with_field(field)
}

/// A line break in an address field is a header injection attempt: API.md answers it with
/// `validation_error`, like CR/LF in the subject or a custom header.
fn no_line_break(field: &str, value: &str) -> Result<(), ApiError> {
    if has_line_break(value) {
        return Err(ApiError::validation(format!(
            "The '{field}' field may not contain line breaks (CR or LF)."
        ))
        .with_field(field));
    }
    Ok(())
}

fn parse_one(field: String, s: &str) -> Result<Mailbox, ApiError> {
    no_line_break(&field, s)?;
    Mailbox::parse(s).map_err(|e| recipient_error(field, e))
}

fn parse_list(name: &str, value: Option<&OneOrMany>) -> Result<Vec<Mailbox>, ApiError> {
    match value {
        None => Ok(Vec::new()),
        Some(OneOrMany::One(s)) => parse_one(name.to_string(), s).map(|m| vec![m]),
        Some(OneOrMany::Many(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| parse_one(format!("{name}[{i}]"), s))
            .collect(),
    }
}

impl SendRequest {
    /// Checks everything that does not need the database. `content_from_template` says a
    /// template supplied subject/body, so they are not required here.
    pub fn into_draft(self, content_from_template: bool) -> Result<EmailDraft, ApiError> {
        let from = match self.from.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_from",
                    "The 'from' field is required, e.g. \"Acme <hello@acme.test>\".",
                )
                .with_field("from"));
            }
            Some(s) => Mailbox::parse(no_line_break("from", s).map(|()| s)?).map_err(|e| {
                ApiError::new(
                    actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_from",
                    format!(
                        "The 'from' field must be an address like \"Acme <hello@acme.test>\": {e}."
                    ),
                )
                .with_field("from")
            })?,
        };
        let to = parse_list("to", self.to.as_ref())?;
        let cc = parse_list("cc", self.cc.as_ref())?;
        let bcc = parse_list("bcc", self.bcc.as_ref())?;
        let reply_to = parse_list("reply_to", self.reply_to.as_ref())?;
        if self.audience_id.is_none() && to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(recipient_error(
                "to".into(),
                "at least one recipient is required",
            ));
        }
        let total = to.len() + cc.len() + bcc.len();
        if total > MAX_RECIPIENTS {
            return Err(ApiError::validation(format!(
                "An email may have at most {MAX_RECIPIENTS} recipients in to, cc and bcc together (got {total}). Use a batch or an audience for more."
            ))
            .with_field("to"));
        }
        let email_type = match self.email_type.as_deref() {
            None | Some("transactional") if self.audience_id.is_none() => EmailType::Transactional,
            None | Some("transactional") | Some("marketing") => EmailType::Marketing,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "'type' must be \"transactional\" or \"marketing\" (got \"{other}\")."
                ))
                .with_field("type"));
            }
        };
        let subject = self.subject.unwrap_or_default();
        if has_line_break(&subject) {
            return Err(ApiError::validation(
                "The subject may not contain line breaks (CR or LF).",
            )
            .with_field("subject"));
        }
        if !content_from_template {
            if subject.trim().is_empty() {
                return Err(
                    ApiError::validation("The 'subject' field is required.").with_field("subject")
                );
            }
            let empty = |s: &Option<String>| s.as_deref().is_none_or(|s| s.is_empty());
            if empty(&self.html) && empty(&self.text) {
                return Err(ApiError::validation(
                    "Give the content: one of 'html', 'text' or 'template_id' is required.",
                )
                .with_field("html"));
            }
        }
        let mut headers = Vec::new();
        for (name, value) in self.headers.unwrap_or_default() {
            let field = format!("headers.{name}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(ApiError::validation(format!(
                    "'{name}' is not a valid header name: use printable ASCII without spaces or ':'."
                ))
                .with_field(field));
            }
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ApiError::validation(format!(
                    "The header '{name}' is set by the server and cannot be overridden; use the matching field instead."
                ))
                .with_field(field));
            }
            if has_line_break(&value) {
                return Err(ApiError::validation(format!(
                    "The value of header '{name}' may not contain line breaks (CR or LF)."
                ))
                .with_field(field));
            }
            headers.push((name, value));
        }
        let mut attachments = Vec::new();
        for (i, a) in self.attachments.unwrap_or_default().into_iter().enumerate() {
            attachments.push(parse_attachment(i, a)?);
        }
        let mut tags = BTreeMap::new();
        for (k, v) in self.tags.unwrap_or_default() {
            if k.is_empty()
                || k.len() > 256
                || v.len() > 256
                || has_line_break(&k)
                || has_line_break(&v)
            {
                return Err(ApiError::validation(
                    "Tag names and values must be 1 to 256 characters without line breaks.",
                )
                .with_field(format!("tags.{k}")));
            }
            tags.insert(k, v);
        }
        let scheduled_at = match self.scheduled_at.as_deref() {
            None => None,
            Some(raw) => {
                let t = time::parse(raw).ok_or_else(|| {
                    ApiError::validation(format!(
                        "'scheduled_at' must be an RFC 3339 time like \"2026-12-01T09:00:00Z\" (got \"{raw}\")."
                    ))
                    .with_field("scheduled_at")
                })?;
                (t > time::now()).then_some(t)
            }
        };
        Ok(EmailDraft {
            email_type,
            from,
            to,
            cc,
            bcc,
            reply_to,
            subject,
            html: self.html.filter(|s| !s.is_empty()),
            text: self.text.filter(|s| !s.is_empty()),
            headers,
            attachments,
            tags,
            scheduled_at,
            track_opens: self.track_opens.unwrap_or(false),
            track_clicks: self.track_clicks.unwrap_or(false),
            template_id: None,
        })
    }
}

fn parse_attachment(i: usize, a: AttachmentRequest) -> Result<Attachment, ApiError> {
    let field = |f: &str| format!("attachments[{i}].{f}");
    let cleaned: String = a
        .content
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let content = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| {
            ApiError::validation(format!(
                "Attachment {i}'s content must be base64 (standard alphabet, with padding)."
            ))
            .with_field(field("content"))
        })?;
    let filename = a.filename.unwrap_or_default();
    if has_line_break(&filename) || filename.contains(['"', '\\', '/']) {
        return Err(ApiError::validation(format!(
            "Attachment {i}'s filename may not contain line breaks, quotes, slashes or backslashes."
        ))
        .with_field(field("filename")));
    }
    let content_id = a.content_id.filter(|c| !c.is_empty());
    if filename.is_empty() && content_id.is_none() {
        return Err(ApiError::validation(format!(
            "Attachment {i} needs a 'filename' (or a 'content_id' for an inline part)."
        ))
        .with_field(field("filename")));
    }
    if let Some(cid) = &content_id
        && (has_line_break(cid) || cid.contains(['<', '>', ' ']))
    {
        return Err(ApiError::validation(format!(
            "Attachment {i}'s content_id may not contain spaces, '<', '>' or line breaks."
        ))
        .with_field(field("content_id")));
    }
    let content_type = match a.content_type.filter(|c| !c.is_empty()) {
        Some(ct) => {
            let ok = ct.split_once('/').is_some_and(|(t, s)| {
                let token = |x: &str| {
                    !x.is_empty()
                        && x.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
                };
                token(t) && token(s.split(';').next().unwrap_or("").trim())
            });
            if !ok || has_line_break(&ct) {
                return Err(ApiError::validation(format!(
                    "Attachment {i}'s content_type must be a MIME type like \"application/pdf\"."
                ))
                .with_field(field("content_type")));
            }
            ct
        }
        None => guess_content_type(&filename).to_string(),
    };
    Ok(Attachment {
        filename,
        content_type,
        content,
        content_id,
    })
}

/// A content type from the file name's extension, for attachments sent without one.
fn guess_content_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("webp") => "image/webp",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("ics") => "text/calendar",
        Some("json") => "application/json",
        Some("zip") => "application/zip",
        Some("xml") => "application/xml",
        Some("doc") => "application/msword",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

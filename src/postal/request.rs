//! `POST /v1/mail/send`: the request as sent ([`SendMailRequest`]) and the checked piece it
//! becomes ([`MailDraft`]). Parse, don't validate: a `MailDraft` always has valid, normalized
//! addresses, content that fits its kind, rendered HTML, and options from the allowed sets.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::verify::{self, TestPhrase};
use super::{MailAddress, MailKind};
use crate::address::postal::{self, AddressInput, Severity};
use crate::http::ApiError;
use crate::keys::Mode;
use crate::store::time;
use crate::templates::render::{CompiledTemplate, TemplateParts};

/// The body of `POST /v1/mail/send`, as sent.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMailRequest {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub to: Option<AddressInput>,
    #[schema(value_type = Option<Object>)]
    pub from: Option<AddressInput>,
    pub description: Option<String>,
    pub html: Option<String>,
    pub template_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Map<String, Value>>,
    /// Base64 of a PDF.
    pub pdf: Option<String>,
    pub front_html: Option<String>,
    pub back_html: Option<String>,
    pub size: Option<String>,
    pub color: Option<bool>,
    pub double_sided: Option<bool>,
    pub mail_class: Option<String>,
    pub parcel: Option<ParcelInput>,
    pub send_date: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// Parcel dimensions as sent: whole grams and millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelInput {
    pub weight_grams: u32,
    pub length_mm: u32,
    pub width_mm: u32,
    pub height_mm: u32,
}

/// The USPS limits for a parcel: 70 lb, and 108 in for the longest side.
const MAX_PARCEL_GRAMS: u32 = 31_751;
const MAX_PARCEL_SIDE_MM: u32 = 2_743;

/// The mail class: the speed a piece travels at, and the basis of its expected delivery date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailClass {
    /// USPS First-Class Mail (letters and postcards; the default).
    FirstClass,
    /// USPS Marketing Mail (letters and postcards to US addresses; slower, cheaper).
    Standard,
    /// The parcel default (e.g. USPS Ground Advantage).
    Ground,
    Priority,
    Express,
}

impl MailClass {
    pub fn as_str(self) -> &'static str {
        match self {
            MailClass::FirstClass => "first_class",
            MailClass::Standard => "standard",
            MailClass::Ground => "ground",
            MailClass::Priority => "priority",
            MailClass::Express => "express",
        }
    }

    /// Business days from mailing to delivery the simulator promises (USPS service standards,
    /// rounded up; international adds a week).
    pub fn business_days(self, international: bool) -> u32 {
        let days = match self {
            MailClass::FirstClass => 4,
            MailClass::Standard => 8,
            MailClass::Ground => 4,
            MailClass::Priority => 2,
            MailClass::Express => 1,
        };
        if international { days + 5 } else { days }
    }
}

/// How a piece is printed and mailed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrintOptions {
    /// `us_letter`/`us_legal` for letters, `4x6`/`6x9`/`6x11` for postcards; none for parcels.
    pub size: Option<String>,
    /// Letters only: colour printing (default false).
    pub color: Option<bool>,
    /// Letters only: both sides of each sheet (default true).
    pub double_sided: Option<bool>,
    pub mail_class: MailClass,
    pub parcel: Option<ParcelInput>,
}

/// A checked piece, ready to store.
#[derive(Debug, Clone)]
pub struct MailDraft {
    pub kind: MailKind,
    pub to: MailAddress,
    pub from: MailAddress,
    pub description: Option<String>,
    pub html: Option<String>,
    pub front_html: Option<String>,
    pub back_html: Option<String>,
    pub pdf: Option<Vec<u8>>,
    pub options: PrintOptions,
    pub send_date: Option<i64>,
    pub metadata: BTreeMap<String, String>,
}

const LETTER_SIZES: [&str; 2] = ["us_letter", "us_legal"];
const POSTCARD_SIZES: [&str; 3] = ["4x6", "6x9", "6x11"];
/// How far ahead `send_date` may be (as at Lob).
const MAX_SEND_AHEAD_SECS: i64 = 180 * 24 * 3600;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::validation(message).with_field(field)
}

fn not_for(field: &str, kind: MailKind, hint: &str) -> ApiError {
    invalid(
        field,
        format!(
            "'{field}' does not apply to a {}{hint}.",
            kind.as_str(),
            hint = if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            }
        ),
    )
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

impl SendMailRequest {
    /// Checks everything and renders the HTML. CPU work (templates, base64): call it off the
    /// async threads. `mode` decides whether the simulator's test phrases apply.
    pub fn into_draft(self, mode: Mode) -> Result<MailDraft, ApiError> {
        let kind = match self.kind.as_deref() {
            None => {
                return Err(invalid(
                    "type",
                    "The field 'type' is required: \"letter\", \"postcard\" or \"parcel\".",
                ));
            }
            Some(k) => MailKind::parse(k).ok_or_else(|| {
                invalid(
                    "type",
                    format!("'type' must be \"letter\", \"postcard\" or \"parcel\" (got \"{k}\")."),
                )
            })?,
        };
        if self.template_id.is_some() {
            // The route resolves `template_id` into `html` before this point.
            return Err(invalid(
                "template_id",
                "'template_id' could not be resolved; send the content as 'html' with 'variables'.",
            ));
        }
        let (to, from) = check_addresses(self.to.as_ref(), self.from.as_ref(), mode)?;
        let description = match self.description {
            Some(d) if d.chars().count() > 255 => {
                return Err(invalid(
                    "description",
                    "'description' may be at most 255 characters.",
                ));
            }
            other => other.filter(|d| !d.trim().is_empty()),
        };
        let metadata = check_metadata(self.metadata)?;
        let send_date = check_send_date(self.send_date.as_deref())?;
        let variables = self.variables.unwrap_or_default();
        let pdf = match non_empty(&self.pdf) {
            Some(b64) => Some(decode_pdf(b64)?),
            None => None,
        };
        if pdf.is_some() && !variables.is_empty() {
            return Err(invalid(
                "variables",
                "'variables' fill in HTML content; a 'pdf' is printed as it is.",
            ));
        }

        let mut draft = MailDraft {
            kind,
            to,
            from,
            description,
            html: None,
            front_html: None,
            back_html: None,
            pdf: None,
            options: PrintOptions {
                size: None,
                color: None,
                double_sided: None,
                mail_class: MailClass::FirstClass,
                parcel: None,
            },
            send_date,
            metadata,
        };

        match kind {
            MailKind::Letter => {
                for (field, present) in [
                    ("front_html", self.front_html.is_some()),
                    ("back_html", self.back_html.is_some()),
                ] {
                    if present {
                        return Err(not_for(
                            field,
                            kind,
                            "a letter's content is 'html' or 'pdf'",
                        ));
                    }
                }
                if self.parcel.is_some() {
                    return Err(not_for("parcel", kind, ""));
                }
                match (non_empty(&self.html), pdf) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "pdf",
                            "Give a letter's content as 'html' or as 'pdf', not both.",
                        ));
                    }
                    (Some(html), None) => {
                        draft.html = Some(render("html", html, &variables)?);
                    }
                    (None, Some(pdf)) => draft.pdf = Some(pdf),
                    (None, None) => {
                        return Err(invalid(
                            "html",
                            "A letter needs content: 'html' (with optional 'variables') or 'pdf' (base64).",
                        ));
                    }
                }
                draft.options.size = Some(pick(
                    "size",
                    self.size.as_deref(),
                    &LETTER_SIZES,
                    "us_letter",
                )?);
                draft.options.color = Some(self.color.unwrap_or(false));
                draft.options.double_sided = Some(self.double_sided.unwrap_or(true));
                draft.options.mail_class = letter_class(self.mail_class.as_deref())?;
            }
            MailKind::Postcard => {
                if self.html.is_some() {
                    return Err(not_for(
                        "html",
                        kind,
                        "a postcard's content is 'front_html' and 'back_html' (or 'pdf')",
                    ));
                }
                if self.parcel.is_some() {
                    return Err(not_for("parcel", kind, ""));
                }
                for (field, present) in [
                    ("color", self.color.is_some()),
                    ("double_sided", self.double_sided.is_some()),
                ] {
                    if present {
                        return Err(not_for(
                            field,
                            kind,
                            "postcards are always printed in colour on both sides",
                        ));
                    }
                }
                let front = non_empty(&self.front_html);
                let back = non_empty(&self.back_html);
                match (front, back, pdf) {
                    (None, None, Some(pdf)) => draft.pdf = Some(pdf),
                    (Some(_), Some(_), Some(_))
                    | (Some(_), None, Some(_))
                    | (None, Some(_), Some(_)) => {
                        return Err(invalid(
                            "pdf",
                            "Give a postcard's content as 'front_html' and 'back_html', or as a two-page 'pdf', not both.",
                        ));
                    }
                    (Some(f), Some(b), None) => {
                        draft.front_html = Some(render("front_html", f, &variables)?);
                        draft.back_html = Some(render("back_html", b, &variables)?);
                    }
                    (None, _, None) => {
                        return Err(invalid(
                            "front_html",
                            "A postcard needs 'front_html' and 'back_html' (or a two-page 'pdf').",
                        ));
                    }
                    (Some(_), None, None) => {
                        return Err(invalid(
                            "back_html",
                            "A postcard needs 'back_html' beside 'front_html'.",
                        ));
                    }
                }
                draft.options.size =
                    Some(pick("size", self.size.as_deref(), &POSTCARD_SIZES, "4x6")?);
                draft.options.mail_class = letter_class(self.mail_class.as_deref())?;
            }
            MailKind::Parcel => {
                for (field, present) in [
                    ("html", self.html.is_some()),
                    ("pdf", self.pdf.is_some()),
                    ("front_html", self.front_html.is_some()),
                    ("back_html", self.back_html.is_some()),
                    ("variables", !variables.is_empty()),
                    ("size", self.size.is_some()),
                    ("color", self.color.is_some()),
                    ("double_sided", self.double_sided.is_some()),
                ] {
                    if present {
                        return Err(not_for(
                            field,
                            kind,
                            "a parcel is described by 'parcel' (weight and dimensions)",
                        ));
                    }
                }
                let Some(parcel) = self.parcel else {
                    return Err(invalid(
                        "parcel",
                        "A parcel needs 'parcel': {\"weight_grams\", \"length_mm\", \"width_mm\", \"height_mm\"}.",
                    ));
                };
                for (field, value, max) in [
                    ("parcel.weight_grams", parcel.weight_grams, MAX_PARCEL_GRAMS),
                    ("parcel.length_mm", parcel.length_mm, MAX_PARCEL_SIDE_MM),
                    ("parcel.width_mm", parcel.width_mm, MAX_PARCEL_SIDE_MM),
                    ("parcel.height_mm", parcel.height_mm, MAX_PARCEL_SIDE_MM),
                ] {
                    if value == 0 || value > max {
                        return Err(invalid(
                            field,
                            format!("'{field}' must be from 1 to {max} (got {value})."),
                        ));
                    }
                }
                draft.options.parcel = Some(parcel);
                draft.options.mail_class = match self.mail_class.as_deref() {
                    None | Some("ground") => MailClass::Ground,
                    Some("priority") => MailClass::Priority,
                    Some("express") => MailClass::Express,
                    Some(other) => {
                        return Err(invalid(
                            "mail_class",
                            format!(
                                "A parcel's 'mail_class' is \"ground\", \"priority\" or \"express\" (got \"{other}\")."
                            ),
                        ));
                    }
                };
            }
        }
        if draft.options.mail_class == MailClass::Standard && draft.to.country != "US" {
            return Err(invalid(
                "mail_class",
                "\"standard\" (USPS Marketing Mail) only goes to US addresses; use \"first_class\".",
            ));
        }
        Ok(draft)
    }
}

fn letter_class(raw: Option<&str>) -> Result<MailClass, ApiError> {
    match raw {
        None | Some("first_class") => Ok(MailClass::FirstClass),
        Some("standard") => Ok(MailClass::Standard),
        Some(other) => Err(invalid(
            "mail_class",
            format!(
                "A letter's or postcard's 'mail_class' is \"first_class\" or \"standard\" (got \"{other}\")."
            ),
        )),
    }
}

fn pick(
    field: &str,
    raw: Option<&str>,
    allowed: &[&str],
    default: &str,
) -> Result<String, ApiError> {
    match raw {
        None => Ok(default.to_string()),
        Some(v) if allowed.contains(&v) => Ok(v.to_string()),
        Some(v) => Err(invalid(
            field,
            format!(
                "'{field}' must be one of {} (got \"{v}\").",
                allowed
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Renders one HTML part through the sandboxed template engine (strict variables).
fn render(field: &str, source: &str, variables: &Map<String, Value>) -> Result<String, ApiError> {
    let parts = TemplateParts {
        subject: None,
        html: Some(source.to_string()),
        text: None,
    };
    let rendered = CompiledTemplate::compile(&parts, None)
        .and_then(|t| t.render(variables))
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.code(),
                format!(
                    "'{field}': {}.",
                    capitalize(&e.to_string().replace("the html", &format!("the {field}")))
                ),
            )
            .with_field(field)
        })?;
    Ok(rendered.html.unwrap_or_default())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn decode_pdf(b64: &str) -> Result<Vec<u8>, ApiError> {
    let cleaned: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|_| invalid("pdf", "'pdf' must be the base64 of a PDF file."))?;
    if !bytes.starts_with(b"%PDF-") {
        return Err(invalid(
            "pdf",
            "'pdf' is base64, but not of a PDF file (it must start with \"%PDF-\").",
        ));
    }
    Ok(bytes)
}

/// Lob's limits: 20 keys, keys up to 40 characters, string values up to 500.
fn check_metadata(raw: Option<Map<String, Value>>) -> Result<BTreeMap<String, String>, ApiError> {
    let raw = raw.unwrap_or_default();
    if raw.len() > 20 {
        return Err(invalid("metadata", "'metadata' may have at most 20 keys."));
    }
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let field = format!("metadata.{k}");
        if k.is_empty() || k.chars().count() > 40 {
            return Err(invalid(&field, "Metadata keys must be 1 to 40 characters."));
        }
        let Value::String(s) = v else {
            return Err(invalid(
                &field,
                format!("The metadata value of '{k}' must be a string."),
            ));
        };
        if s.chars().count() > 500 {
            return Err(invalid(
                &field,
                format!("The metadata value of '{k}' may be at most 500 characters."),
            ));
        }
        out.insert(k, s);
    }
    Ok(out)
}

fn check_send_date(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let t = time::parse(raw).ok_or_else(|| {
        invalid(
            "send_date",
            format!("'send_date' must be an RFC 3339 time like \"2026-12-01T09:00:00Z\" (got \"{raw}\")."),
        )
    })?;
    let now = time::now();
    if t > now + MAX_SEND_AHEAD_SECS {
        return Err(invalid(
            "send_date",
            "'send_date' may be at most 180 days ahead.",
        ));
    }
    Ok((t > now).then_some(t))
}

/// Validates and normalizes both addresses; every problem becomes one `details` entry of a
/// `422 invalid_address`.
fn check_addresses(
    to: Option<&AddressInput>,
    from: Option<&AddressInput>,
    mode: Mode,
) -> Result<(MailAddress, MailAddress), ApiError> {
    let mut details = Vec::new();
    let mut out = Vec::new();
    for (side, input) in [("to", to), ("from", from)] {
        let Some(input) = input else {
            details.push(json!({
                "field": side,
                "code": "missing_field",
                "message": format!("The '{side}' address is required."),
            }));
            continue;
        };
        let v = postal::validate(input);
        for m in v.messages.iter().filter(|m| m.severity == Severity::Error) {
            details.push(json!({
                "field": format!("{side}.{}", m.field),
                "code": m.code,
                "message": m.message,
            }));
        }
        if non_empty(&input.name).is_none() && non_empty(&input.company).is_none() {
            details.push(json!({
                "field": format!("{side}.name"),
                "code": "missing_field",
                "message": format!("The '{side}' address needs a 'name' or a 'company' to print on the envelope."),
            }));
        }
        if side == "to"
            && mode == Mode::Test
            && verify::test_phrase(input.line1.as_deref()).is_some_and(TestPhrase::undeliverable)
        {
            details.push(json!({
                "field": "to.line1",
                "code": "undeliverable",
                "message": "The simulator reports this address as undeliverable (a Lob test phrase); mail cannot be sent to it.",
            }));
        }
        out.push(MailAddress::from_normalized(&v.normalized));
    }
    if !details.is_empty() {
        let sides: Vec<&str> = ["to", "from"]
            .into_iter()
            .filter(|s| {
                details.iter().any(|d| {
                    d["field"]
                        .as_str()
                        .is_some_and(|f| f == *s || f.starts_with(&format!("{s}.")))
                })
            })
            .collect();
        let n = details.len();
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_address",
            format!(
                "The {} address{} cannot be used: {n} problem(s), listed in 'details' by field. Fix them and send again (POST /v1/mail/validate-address checks an address alone).",
                sides.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(" and "),
                if sides.len() > 1 { "es" } else { "" },
            ),
        )
        .with_details(details);
        if sides.len() == 1 {
            err = err.with_field(sides[0]);
        }
        return Err(err);
    }
    let from = out.pop().unwrap_or_default();
    let to = out.pop().unwrap_or_default();
    Ok((to, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(kind: &str) -> Value {
        json!({
            "type": kind,
            "to": {"name": "Ana Diaz", "line1": "210 King Street", "city": "San Francisco", "state": "CA", "postal_code": "94107", "country": "US"},
            "from": {"company": "Acme", "line1": "1 Market St", "city": "San Francisco", "state": "CA", "postal_code": "94105", "country": "US"}
        })
    }

    fn parse(v: Value) -> Result<MailDraft, ApiError> {
        let r: SendMailRequest = serde_json::from_value(v).unwrap();
        r.into_draft(Mode::Test)
    }

    #[test]
    fn letter_renders_variables_and_normalizes_addresses() {
        let mut v = base("letter");
        v["html"] = json!("<p>Hello {{ name }}</p>");
        v["variables"] = json!({"name": "<Ana>"});
        let d = parse(v).unwrap();
        assert_eq!(d.html.as_deref(), Some("<p>Hello &lt;Ana&gt;</p>"));
        assert_eq!(d.to.line1, "210 KING ST");
        assert_eq!(d.options.size.as_deref(), Some("us_letter"));
        assert_eq!(d.options.double_sided, Some(true));
        assert_eq!(d.options.color, Some(false));
    }

    #[test]
    fn content_rules_per_kind() {
        let e = parse(base("letter")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("html"));
        let mut v = base("postcard");
        v["front_html"] = json!("<p>front</p>");
        assert_eq!(parse(v).unwrap_err().field.as_deref(), Some("back_html"));
        let mut v = base("parcel");
        assert_eq!(
            parse(v.clone()).unwrap_err().field.as_deref(),
            Some("parcel")
        );
        v["parcel"] = json!({"weight_grams": 0, "length_mm": 10, "width_mm": 10, "height_mm": 10});
        assert_eq!(
            parse(v).unwrap_err().field.as_deref(),
            Some("parcel.weight_grams")
        );
        let mut v = base("letter");
        v["html"] = json!("<p>{{ missing }}</p>");
        assert_eq!(parse(v).unwrap_err().code, "template_render_error");
        let mut v = base("letter");
        v["pdf"] = json!(base64::engine::general_purpose::STANDARD.encode("not a pdf"));
        assert_eq!(parse(v).unwrap_err().field.as_deref(), Some("pdf"));
        let mut v = base("letter");
        v["pdf"] = json!(base64::engine::general_purpose::STANDARD.encode("%PDF-1.4"));
        v["variables"] = json!({"a": "b"});
        assert_eq!(parse(v).unwrap_err().field.as_deref(), Some("variables"));
        let mut v = base("postcard");
        v["front_html"] = json!("a");
        v["back_html"] = json!("b");
        v["size"] = json!("5x7");
        assert_eq!(parse(v).unwrap_err().field.as_deref(), Some("size"));
    }

    #[test]
    fn bad_addresses_list_every_problem() {
        let mut v = base("letter");
        v["html"] = json!("hi");
        v["to"]["postal_code"] = json!("1234");
        v["from"]["name"] = Value::Null;
        v["from"]["company"] = Value::Null;
        let e = parse(v).unwrap_err();
        assert_eq!(e.code, "invalid_address");
        let fields: Vec<String> = e
            .details
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap().to_string())
            .collect();
        assert!(fields.contains(&"to.postal_code".to_string()), "{fields:?}");
        assert!(fields.contains(&"from.name".to_string()), "{fields:?}");
    }
}

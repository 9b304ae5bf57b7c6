//! Postal address checking and normalisation, with no I/O.
//!
//! [`validate`] takes an address as a client sent it and answers what a person needs to fix
//! it or print it: whether it passes the rules, the normalized fields, the envelope lines,
//! the parsed components and one message per problem or change.
//!
//! US addresses follow USPS Publication 28 (`us.rs`, tables in `usps_tables.rs`): upper
//! case, no punctuation, standard street suffixes, directionals and unit designators, PO
//! boxes, rural routes, military addresses, ZIP+4 and the ZIP prefix of the state. Other
//! countries (`intl.rs`) follow Google's address metadata (CC-BY 4.0, embedded from
//! `data/address-formats.json`): required fields, postal code pattern, subdivisions,
//! capitals and layout.
//!
//! What it cannot know: whether a mailbox exists at the address. That takes a vendor that
//! verifies (Lob, ...), which is why this checker answers only about form.

mod data;
mod format;
mod intl;
mod us;
mod usps_tables;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

/// An address as a client sent it.
///
/// Every field is optional here so that a missing one becomes a `missing_field` message a
/// person can act on, instead of a deserialisation error. Unknown fields are refused: a
/// typo such as `zip` for `postal_code` must not be silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    pub name: Option<String>,
    pub company: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 code, alpha-3 code or country name ("DE", "DEU", "Deutschland").
    pub country: Option<String>,
}

/// The answer of [`validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// `true` when no message is an error: the address has every required field in a
    /// valid form. It says nothing about whether the mailbox exists.
    pub valid: bool,
    pub normalized: NormalizedAddress,
    pub components: Components,
    pub messages: Vec<Message>,
}

/// The address after normalisation, field by field, plus its envelope lines.
///
/// Fields keep the caller's split (`line1`, `line2`) so the address can be stored and sent
/// back as given; `formatted` is what goes on the envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NormalizedAddress {
    pub name: Option<String>,
    pub company: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 code; `None` when the country was missing or unknown.
    pub country: Option<String>,
    /// Envelope lines in the destination country's layout (name, organisation, street
    /// lines, locality line...). The country name line is not included: whether it is
    /// needed depends on where the piece is mailed from (see [`country_name`]).
    pub formatted: Vec<String>,
}

/// The parts of the address, named as Lob names them so that a vendor's answer and ours
/// can be read the same way. Every key is always present; unknown parts are `null`. Street
/// parts are parsed for US addresses only; elsewhere only city, state, postal code and
/// country are filled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Components {
    /// House number, with its fraction when there is one ("123", "123 1/2", "N6W23001").
    pub primary_number: Option<String>,
    pub street_predirection: Option<String>,
    /// The street name; for military mail, the unit ("PSC 1234", "UNIT 2050", "CMR 450").
    pub street_name: Option<String>,
    /// Standard suffix ("ST", "AVE"); "ST EXT" for a street with an extension.
    pub street_suffix: Option<String>,
    pub street_postdirection: Option<String>,
    /// Standard unit designator ("APT", "STE", "#").
    pub secondary_designator: Option<String>,
    pub secondary_number: Option<String>,
    /// "PMB" when the address has a private mailbox number.
    pub pmb_designator: Option<String>,
    pub pmb_number: Option<String>,
    /// Box number of a PO box, a rural route box, a highway contract box or a military box.
    pub po_box_number: Option<String>,
    /// Route designation of a rural or highway contract route ("RR 2", "HC 68").
    pub rural_route: Option<String>,
    /// "APO", "FPO" or "DPO" for military and diplomatic mail.
    pub military: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    /// Five-digit ZIP code in the US; the whole postal code elsewhere.
    pub zip_code: Option<String>,
    pub zip_code_plus_4: Option<String>,
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
}

/// How much a message matters. Only errors make an address invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The address breaks a rule; `valid` is false.
    Error,
    /// The address passes, but something looks wrong (a street without a house number).
    Warning,
    /// Something was changed (`normalized`) or left out; nothing to fix.
    Info,
}

/// One finding about one field, written for a person.
///
/// The API contract is `{code, field, message}`; `severity` is for the server's own use
/// (for example to list only errors in a `422`) and is not serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Stable machine-readable code: `missing_field`, `unknown_country`, `unknown_state`,
    /// `invalid_postal_code`, `postal_code_state_mismatch`, `military_mismatch` (errors);
    /// `missing_primary_number`, `missing_secondary_number`, `missing_box_number`
    /// (warnings); `normalized`, `unused_field` (information).
    pub code: &'static str,
    /// The input field the message is about (`line1`, `postal_code`, ...).
    pub field: String,
    /// A sentence saying what is wrong or what was changed.
    pub message: String,
    #[serde(skip)]
    pub severity: Severity,
}

/// Checks and normalizes an address. Never fails: every problem is a [`Message`].
#[must_use]
pub fn validate(input: &AddressInput) -> Validation {
    let given_country = clean(input.country.as_deref());
    let Some(raw_country) = given_country else {
        let mut messages = Messages::default();
        messages.error(
            "missing_field",
            "country",
            "The country is missing: give an ISO 3166-1 alpha-2 code such as \"US\" or a \
             country name.",
        );
        return intl::unchecked(input, messages);
    };
    match country_code(&raw_country).and_then(data::country) {
        Some(country) => {
            let mut validation = if country.code == "US" {
                us::validate(input, country)
            } else {
                intl::validate(input, country)
            };
            if loose_key(&raw_country) != loose_key(&country.code) {
                validation.messages.push(Message {
                    code: "normalized",
                    field: "country".to_owned(),
                    message: format!(
                        "The country \"{raw_country}\" was standardized to its ISO code \"{}\".",
                        country.code
                    ),
                    severity: Severity::Info,
                });
            }
            validation
        }
        None => {
            let mut messages = Messages::default();
            messages.error(
                "unknown_country",
                "country",
                format!(
                    "\"{raw_country}\" is not a country we know: give an ISO 3166-1 alpha-2 \
                     code such as \"US\", \"GB\" or \"DE\"."
                ),
            );
            intl::unchecked(input, messages)
        }
    }
}

/// The ISO 3166-1 alpha-2 code for a code, an alpha-3 code or a country name, in any case,
/// with or without accents and punctuation ("us", "U.S.A.", "Deutschland", "Côte d'Ivoire").
#[must_use]
pub fn country_code(name_or_code: &str) -> Option<&'static str> {
    intl::country_code(name_or_code)
}

/// The English name of a country in capitals ("UNITED KINGDOM"), for the last line of an
/// envelope mailed from another country.
#[must_use]
pub fn country_name(code: &str) -> Option<&'static str> {
    data::country(&code.trim().to_uppercase()).map(|c| c.name.as_str())
}

/// The messages of one validation, in the order found.
#[derive(Debug, Default)]
struct Messages(Vec<Message>);

impl Messages {
    fn push(&mut self, severity: Severity, code: &'static str, field: &str, message: String) {
        self.0.push(Message {
            code,
            field: field.to_owned(),
            message,
            severity,
        });
    }

    fn error(&mut self, code: &'static str, field: &str, message: impl Into<String>) {
        self.push(Severity::Error, code, field, message.into());
    }

    fn warning(&mut self, code: &'static str, field: &str, message: impl Into<String>) {
        self.push(Severity::Warning, code, field, message.into());
    }

    fn info(&mut self, code: &'static str, field: &str, message: impl Into<String>) {
        self.push(Severity::Info, code, field, message.into());
    }

    /// Reports a `missing_field` error for a required field.
    fn missing(&mut self, field: &str, what: &str) {
        self.error(
            "missing_field",
            field,
            format!("The {what} is missing; this country requires it."),
        );
    }

    /// Reports a `normalized` change when the value changed beyond case and spacing.
    fn changed(&mut self, field: &str, before: Option<&str>, after: Option<&str>) {
        let (Some(before), Some(after)) = (before, after) else {
            return;
        };
        if loose_key(before) != loose_key(after) {
            self.info(
                "normalized",
                field,
                format!(
                    "The {} \"{}\" was standardized to \"{after}\".",
                    label(field),
                    before.trim()
                ),
            );
        }
    }

    fn has_errors(&self) -> bool {
        self.0.iter().any(|m| m.severity == Severity::Error)
    }

    fn into_vec(self) -> Vec<Message> {
        self.0
    }
}

/// The words used for a field in messages.
fn label(field: &str) -> &str {
    match field {
        "line1" => "address line 1",
        "line2" => "address line 2",
        "postal_code" => "postal code",
        other => other,
    }
}

/// Trims a field and collapses inner whitespace; empty means absent.
fn clean(value: Option<&str>) -> Option<String> {
    let value = value?;
    let collapsed = value.split_whitespace().collect::<Vec<_>>().join(" ");
    (!collapsed.is_empty()).then_some(collapsed)
}

/// A comparison key that ignores case, accents, punctuation and spacing.
fn loose_key(value: &str) -> String {
    fold(value)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// Upper case, Latin accents removed, punctuation turned into spaces (periods and
/// apostrophes removed), spaces collapsed: "Côte d'Ivoire" and "COTE DIVOIRE" compare equal.
fn fold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '.' || c == '\'' || c == '’' {
            continue;
        }
        if c == '&' {
            out.push_str(" AND ");
            continue;
        }
        if c.is_alphanumeric() {
            for upper in c.to_uppercase() {
                match strip_accent(upper) {
                    Some(plain) => out.push_str(plain),
                    None => out.push(upper),
                }
            }
        } else {
            out.push(' ');
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The unaccented Latin letters for an accented upper-case letter.
fn strip_accent(c: char) -> Option<&'static str> {
    let plain = match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ă' | 'Ą' => "A",
        'Æ' => "AE",
        'Ç' | 'Ć' | 'Č' | 'Ĉ' | 'Ċ' => "C",
        'Ď' | 'Đ' | 'Ð' => "D",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ė' | 'Ę' | 'Ě' => "E",
        'Ğ' | 'Ģ' => "G",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' | 'Į' | 'İ' => "I",
        'Ķ' => "K",
        'Ł' | 'Ļ' | 'Ľ' => "L",
        'Ñ' | 'Ń' | 'Ň' | 'Ņ' => "N",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō' | 'Ő' => "O",
        'Œ' => "OE",
        'Ř' | 'Ŕ' => "R",
        'Ś' | 'Š' | 'Ş' | 'Ș' => "S",
        'ẞ' => "SS",
        'Ť' | 'Ţ' | 'Ț' => "T",
        'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' | 'Ů' | 'Ű' | 'Ų' => "U",
        'Ý' | 'Ÿ' => "Y",
        'Ź' | 'Ż' | 'Ž' => "Z",
        'Þ' => "TH",
        _ => return None,
    };
    Some(plain)
}

//! US addresses, normalized to USPS Publication 28.
//!
//! Pub 28 asks for capitals, no punctuation (except the hyphen of a house number or ZIP+4
//! and the slash of a fraction), standard abbreviations for street suffixes, directionals
//! and unit designators, the secondary unit on the delivery line, `PO BOX n`,
//! `RR n BOX n`, `HC n BOX n`, military `PSC/UNIT/CMR n BOX n` with APO/FPO/DPO and
//! AA/AE/AP, two-letter state codes, and a ZIP code whose first digits belong to the state.
//! A street line is read right to left the way the USPS parses it: units at the end, then
//! a post-directional, then the suffix, then a pre-directional after the house number.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::data::Country;
use super::format::{self, LayoutValues};
use super::usps_tables::{
    COMMON_UNIT_WORDS, MILITARY_CITIES, MILITARY_STATES, STATE_ALIASES, directional,
    suffix_standard, unit_designator,
};
use super::{AddressInput, Components, Messages, NormalizedAddress, Validation, clean, fold};

/// The envelope layout of Pub 28: no comma on the last line.
const US_LAYOUT: &str = "%N%n%O%n%A%n%C %S %Z";

/// Pub 28 keeps delivery address lines to 40 characters; past that a unit moves to the
/// line above instead of joining the delivery line.
const MAX_LINE: usize = 40;

/// A pattern compiled once. The patterns are constants checked by a unit test; a pattern
/// that failed to compile would simply never match.
struct Pattern(LazyLock<Option<Regex>>);

impl Pattern {
    const fn new(init: fn() -> Option<Regex>) -> Self {
        Self(LazyLock::new(init))
    }

    fn captures<'t>(&self, text: &'t str) -> Option<Captures<'t>> {
        self.0.as_ref().and_then(|re| re.captures(text))
    }

    fn is_match(&self, text: &str) -> bool {
        self.0.as_ref().is_some_and(|re| re.is_match(text))
    }
}

/// "PO BOX 12", "P O BOX 12", "POST OFFICE BOX 12", "POB 12", "BOX 12", "PO BOX # 12".
static PO_BOX: Pattern = Pattern::new(|| {
    Regex::new(
        r"^(?:(?:P ?O ?|POST OFFICE |POST )?(?:BOX|BX)|POB|POBOX|P ?O ?B) (?:# )?([0-9A-Z][0-9A-Z-]*)$",
    )
    .ok()
});

/// "RR 2 BOX 15", "RURAL ROUTE 2 BOX 15", "RFD 2", "RTE 2 BOX 15" (with a box only).
static RURAL_ROUTE: Pattern = Pattern::new(|| {
    Regex::new(
        r"^(?:(?:RR|R R|RURAL ROUTE|RURAL RTE|RURAL RT|RFD) ?(\d+)(?: (?:BOX|BX) (?:# )?([0-9A-Z][0-9A-Z-]*))?|(?:RTE|RT|ROUTE) (\d+) (?:BOX|BX) (?:# )?([0-9A-Z][0-9A-Z-]*))$",
    )
    .ok()
});

/// "BOX 15 RR 2": the box written first.
static RURAL_ROUTE_BOX_FIRST: Pattern = Pattern::new(|| {
    Regex::new(r"^(?:BOX|BX) (?:# )?([0-9A-Z][0-9A-Z-]*) (?:RR|RURAL ROUTE|RFD) ?(\d+)$").ok()
});

/// "HC 68 BOX 23A", "HIGHWAY CONTRACT 68 BOX 23A", "STAR ROUTE 68 BOX 23A".
static HIGHWAY_CONTRACT: Pattern = Pattern::new(|| {
    Regex::new(
        r"^(?:HC|H C|HIGHWAY CONTRACT|HWY CONTRACT|STAR ROUTE|STAR RTE) ?(\d+)(?: (?:BOX|BX) (?:# )?([0-9A-Z][0-9A-Z-]*))?$",
    )
    .ok()
});

/// "PSC 1234 BOX 5678", "UNIT 2050 BOX 4190", "CMR 450 BOX 2".
static MILITARY_BOX: Pattern = Pattern::new(|| {
    Regex::new(r"^(PSC|UNIT|CMR) (\d+)(?: (?:BOX|BX) (?:# )?([0-9A-Z][0-9A-Z-]*))?$").ok()
});

/// A designator glued to its number: "APT4", "STE200".
static GLUED_UNIT: Pattern = Pattern::new(|| {
    Regex::new(r"^(APT|APARTMENT|STE|SUITE|UNIT|RM|ROOM|BLDG|FL|SPC|LOT|TRLR|PMB)(\d+[A-Z]?)$").ok()
});

/// "3RD", "21ST": an ordinal, a street name ("5TH AVE") or a floor ("3RD FLOOR").
static ORDINAL: Pattern = Pattern::new(|| Regex::new(r"^(\d+)(?:ST|ND|RD|TH)$").ok());

/// A house number: "123", "123A", "123-45" (Queens), "N6W23001" (Wisconsin grid).
static HOUSE_NUMBER: Pattern =
    Pattern::new(|| Regex::new(r"^(?:\d[0-9A-Z-]*|[NSEW]\d+[NSEW]\d+)$").ok());

/// A fraction after a house number: "1/2".
static FRACTION: Pattern = Pattern::new(|| Regex::new(r"^\d+/\d+$").ok());

/// A unit number: "4", "4B", "B", "12-3".
static UNIT_NUMBER: Pattern =
    Pattern::new(|| Regex::new(r"^(?:[0-9A-Z]{1,8}(?:-[0-9A-Z]{1,8})?)$").ok());

/// ZIP or ZIP+4: "12345", "12345-6789", "12345 6789", "123456789".
static ZIP: Pattern = Pattern::new(|| Regex::new(r"^(\d{5})(?: ?- ?| )?(\d{4})?$").ok());

/// One secondary unit ("APT 4", "# 7", "REAR") or private mailbox ("PMB 12").
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    /// Standard designator: "APT", "STE", "#", "PMB"...
    designator: String,
    number: Option<String>,
}

impl Unit {
    fn render(&self) -> String {
        match &self.number {
            Some(number) => format!("{} {number}", self.designator),
            None => self.designator.clone(),
        }
    }

    fn is_pmb(&self) -> bool {
        self.designator == "PMB"
    }
}

/// A street delivery line, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Street {
    primary_number: Option<String>,
    predirection: Option<String>,
    name: Option<String>,
    suffix: Option<String>,
    postdirection: Option<String>,
    units: Vec<Unit>,
    /// The units were written before the house number ("Apt 4, 12 Main St").
    units_moved: bool,
}

impl Street {
    fn render(&self) -> String {
        let mut parts: Vec<String> = [
            &self.primary_number,
            &self.predirection,
            &self.name,
            &self.suffix,
            &self.postdirection,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        parts.extend(self.units.iter().map(Unit::render));
        parts.join(" ")
    }
}

/// What one address line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Street(Street),
    PoBox(String),
    /// Rural route or highway contract: ("RR 2", box).
    Route(String, Option<String>),
    /// Military unit and box: ("PSC 1234", box).
    Military(String, Option<String>),
    /// Only secondary units: "APT 4", "BLDG 5 FL 3", "PMB 12".
    Units(Vec<Unit>),
    /// Anything else ("C/O JANE DOE"), cleaned.
    Other(String),
}

impl Line {
    fn render(&self) -> String {
        match self {
            Line::Street(street) => street.render(),
            Line::PoBox(number) => format!("PO BOX {number}"),
            Line::Route(route, Some(number)) | Line::Military(route, Some(number)) => {
                format!("{route} BOX {number}")
            }
            Line::Route(route, None) | Line::Military(route, None) => route.clone(),
            Line::Units(units) => units.iter().map(Unit::render).collect::<Vec<_>>().join(" "),
            Line::Other(text) => text.clone(),
        }
    }

    /// A line that mail is delivered to (not only a unit or a note).
    fn is_delivery(&self) -> bool {
        matches!(
            self,
            Line::Street(_) | Line::PoBox(_) | Line::Route(..) | Line::Military(..)
        )
    }
}

/// Checks and normalizes a US address.
pub(super) fn validate(input: &AddressInput, country: &'static Country) -> Validation {
    let mut messages = Messages::default();

    let name = clean_upper(input.name.as_deref());
    let company = clean_upper(input.company.as_deref());
    let city = clean_upper(input.city.as_deref());
    let raw_state = clean(input.state.as_deref());
    let raw_zip = clean(input.postal_code.as_deref());

    let lines = arrange_lines(
        clean(input.line1.as_deref()),
        clean(input.line2.as_deref()),
        &mut messages,
    );
    let line1 = lines.first.as_ref().map(Line::render);
    let line2 = lines.second.as_ref().map(Line::render);
    messages.changed("line1", lines.first_given.as_deref(), line1.as_deref());
    messages.changed("line2", lines.second_given.as_deref(), line2.as_deref());

    for (present, field, what) in [
        (line1.is_some(), "line1", "street address (line1)"),
        (city.is_some(), "city", "city"),
        (raw_state.is_some(), "state", "state"),
        (raw_zip.is_some(), "postal_code", "ZIP code"),
    ] {
        if !present {
            messages.missing(field, what);
        }
    }

    let mut components = Components {
        country: Some("US".to_owned()),
        ..Components::default()
    };
    for (line, field) in [(&lines.first, "line1"), (&lines.second, "line2")] {
        if let Some(line) = line {
            add_components(&mut components, line, field, &mut messages);
        }
    }
    let military_city = city
        .as_deref()
        .is_some_and(|c| MILITARY_CITIES.contains(&c));
    warn_about_delivery_line(lines.first.as_ref(), military_city, &mut messages);

    let (state_code, state) = check_state(country, raw_state.as_deref(), &mut messages);
    let postal_code = check_zip(
        country,
        raw_zip.as_deref(),
        state_code,
        &mut components,
        &mut messages,
    );
    check_military(military_city, state_code, city.is_some(), &mut messages);
    if military_city {
        components.military = city.clone();
    }
    components.city = city.clone();
    components.state = state.clone();

    let street_lines = delivery_lines(lines.first.as_ref(), lines.second.as_ref());
    let formatted = format::render(
        US_LAYOUT,
        &LayoutValues {
            name: name.as_deref(),
            organization: company.as_deref(),
            address_lines: street_lines.iter().map(String::as_str).collect(),
            city: city.as_deref(),
            state: state.as_deref(),
            postal_code: postal_code.as_deref(),
        },
    )
    .into_iter()
    .map(|line| line.to_uppercase())
    .collect();

    let normalized = NormalizedAddress {
        name,
        company,
        line1,
        line2,
        city,
        state,
        postal_code,
        country: Some("US".to_owned()),
        formatted,
    };
    Validation {
        valid: !messages.has_errors(),
        normalized,
        components,
        messages: messages.into_vec(),
    }
}

/// The two address lines after parsing and putting in order, with the text each one came
/// from (to report what changed).
struct ArrangedLines {
    first: Option<Line>,
    second: Option<Line>,
    first_given: Option<String>,
    second_given: Option<String>,
}

/// Parses both lines and puts them in order: the delivery line first, units and notes
/// second; a unit written twice is kept once, and a unit designator left without its number
/// in line1 is completed by line2.
fn arrange_lines(
    raw_line1: Option<String>,
    raw_line2: Option<String>,
    messages: &mut Messages,
) -> ArrangedLines {
    let mut first = raw_line1
        .as_deref()
        .and_then(|l| classify(&tokenize(l), false));
    let mut second = raw_line2
        .as_deref()
        .and_then(|l| classify(&tokenize(l), true));
    let (mut first_given, mut second_given) = (raw_line1, raw_line2);

    let second_delivers = second.as_ref().is_some_and(Line::is_delivery);
    let first_delivers = first.as_ref().is_some_and(Line::is_delivery);
    if second_delivers && !first_delivers {
        std::mem::swap(&mut first, &mut second);
        std::mem::swap(&mut first_given, &mut second_given);
        let what = if second.is_some() {
            "The street address was in line2 and the unit or note in line1; they were swapped \
             so the delivery address comes first."
        } else {
            "The address was given in line2 only; it was moved to line1."
        };
        messages.info("normalized", "line1", what);
    }
    // A unit written in both lines ("12 MAIN ST APT 4" and "APT 4") is kept once.
    if let (Some(Line::Street(street)), Some(Line::Units(units))) = (&first, &second)
        && !street.units.is_empty()
        && street.units == *units
    {
        messages.info(
            "normalized",
            "line2",
            "The unit in line2 repeats the one in line1, so line2 was removed.",
        );
        second = None;
        second_given = None;
    }
    // "12 MAIN ST APT" with "APT 5" in line2: line2 completes the unit of line1.
    if let (Some(Line::Street(street)), Some(Line::Units(units))) = (&mut first, &second)
        && let Some(last) = street.units.last()
        && last.number.is_none()
        && unit_designator(&last.designator).is_some_and(|d| d.requires_number)
        && units.first().is_some_and(|u| {
            u.number.is_some() && (u.designator == last.designator || u.designator == "#")
        })
    {
        street.units.pop();
        messages.info(
            "normalized",
            "line1",
            "The unit designator at the end of line1 had no number and line2 gives it; the \
             unit is kept once, in line2.",
        );
    }
    if let Some(Line::Street(street)) = &first
        && street.units_moved
    {
        messages.info(
            "normalized",
            "line1",
            "The unit was written before the street address; it was moved after it, where \
             Publication 28 places it.",
        );
    }
    ArrangedLines {
        first,
        second,
        first_given,
        second_given,
    }
}

/// Warns when the delivery line has no house number, holds only a unit, or is not an
/// address at all (a building name alone). A ship's name is the delivery line of Navy mail, so military mail
/// is spared the second warning.
fn warn_about_delivery_line(first: Option<&Line>, military: bool, messages: &mut Messages) {
    match first {
        Some(Line::Street(street)) if street.primary_number.is_none() => messages.warning(
            "missing_primary_number",
            "line1",
            "Address line 1 has no house number; a street address needs one to be delivered.",
        ),
        Some(Line::Units(_)) => messages.warning(
            "missing_primary_number",
            "line1",
            "Address line 1 holds only a unit; add the street address, PO box or route.",
        ),
        Some(Line::Other(_)) if !military => messages.warning(
            "missing_primary_number",
            "line1",
            "Address line 1 is not a street address, PO box, rural route or military address; \
             check that it is the delivery address.",
        ),
        _ => {}
    }
}

/// The state's two-letter code (when known) and the state as it will be printed.
fn check_state(
    country: &'static Country,
    given: Option<&str>,
    messages: &mut Messages,
) -> (Option<&'static str>, Option<String>) {
    let Some(given) = given else {
        return (None, None);
    };
    let Some(code) = state_code(country, given) else {
        messages.error(
            "unknown_state",
            "state",
            format!(
                "\"{given}\" is not a US state, territory or military state; use its two-letter \
                 code, such as \"CA\" or \"NY\"."
            ),
        );
        return (None, Some(given.to_uppercase()));
    };
    messages.changed("state", Some(given), Some(code));
    (Some(code), Some(code.to_owned()))
}

/// Normalizes the ZIP code, fills the ZIP components and checks the ZIP prefix against the
/// state (`sub_zips` of the metadata). Returns the ZIP code as it will be printed.
fn check_zip(
    country: &'static Country,
    given: Option<&str>,
    state_code: Option<&str>,
    components: &mut Components,
    messages: &mut Messages,
) -> Option<String> {
    let given = given?;
    let Some((zip5, plus4, restored)) = parse_zip(given, state_code, country) else {
        messages.error(
            "invalid_postal_code",
            "postal_code",
            format!(
                "\"{given}\" is not a valid ZIP code; use 5 digits (12345) or ZIP+4 \
                 (12345-6789)."
            ),
        );
        return Some(given.to_uppercase());
    };
    let full = match &plus4 {
        Some(plus4) => format!("{zip5}-{plus4}"),
        None => zip5.clone(),
    };
    if restored {
        messages.info(
            "normalized",
            "postal_code",
            format!(
                "The ZIP code \"{given}\" had lost its leading zero; it was restored to \
                 \"{zip5}\"."
            ),
        );
    } else {
        messages.changed("postal_code", Some(given), Some(&full));
    }
    if let Some(code) = state_code
        && let Some(sub) = country.subdivisions.iter().find(|s| s.key == code)
        && let Some(prefix) = &sub.zip_prefix
        && !prefix.is_match(&zip5)
    {
        let state_name = sub.name.as_deref().unwrap_or(code);
        messages.error(
            "postal_code_state_mismatch",
            "postal_code",
            format!(
                "The ZIP code {zip5} is not in {state_name} ({code}); check the ZIP code and \
                 the state."
            ),
        );
    }
    components.zip_code = Some(zip5);
    components.zip_code_plus_4 = plus4;
    Some(full)
}

/// Military mail: APO/FPO/DPO go with AA/AE/AP, and only with them.
fn check_military(
    military_city: bool,
    state_code: Option<&str>,
    has_city: bool,
    messages: &mut Messages,
) {
    let military_state = state_code.is_some_and(|s| MILITARY_STATES.contains(&s));
    if military_city && state_code.is_some() && !military_state {
        messages.error(
            "military_mismatch",
            "state",
            "APO, FPO and DPO addresses take the state AA, AE or AP, not a US state.",
        );
    }
    if military_state && has_city && !military_city {
        messages.error(
            "military_mismatch",
            "city",
            "Addresses in AA, AE or AP take the city APO, FPO or DPO.",
        );
    }
}

/// The street lines as printed. Pub 28 wants the delivery line immediately above the city
/// line: a line2 that is only a unit joins a street line that has none (or goes above it
/// when the joined line would pass 40 characters), and any other unit or note line ("C/O
/// ...", "BLDG 2") is printed above the delivery line.
fn delivery_lines(first: Option<&Line>, second: Option<&Line>) -> Vec<String> {
    let (Some(first), Some(second)) = (first, second) else {
        return first.or(second).map(Line::render).into_iter().collect();
    };
    let (delivery_line, other_line) = (first.render(), second.render());
    if !first.is_delivery() || second.is_delivery() {
        return vec![delivery_line, other_line];
    }
    if let (Line::Street(street), Line::Units(_)) = (first, second)
        && street.units.is_empty()
    {
        let joined = format!("{delivery_line} {other_line}");
        if joined.len() <= MAX_LINE {
            return vec![joined];
        }
    }
    vec![other_line, delivery_line]
}

/// Fills the components from one address line.
fn add_components(components: &mut Components, line: &Line, field: &str, messages: &mut Messages) {
    match line {
        Line::Street(street) => {
            if components.street_name.is_none() {
                components.primary_number = street.primary_number.clone();
                components.street_predirection = street.predirection.clone();
                components.street_name = street.name.clone();
                components.street_suffix = street.suffix.clone();
                components.street_postdirection = street.postdirection.clone();
            }
            add_units(components, &street.units, field, messages);
        }
        Line::PoBox(number) => components.po_box_number = Some(number.clone()),
        Line::Route(route, number) => {
            components.rural_route = Some(route.clone());
            components.po_box_number = number.clone();
            if number.is_none() {
                messages.warning(
                    "missing_box_number",
                    field,
                    format!("The route {route} has no box number; add it as \"{route} BOX 123\"."),
                );
            }
        }
        Line::Military(unit, number) => {
            components.street_name = Some(unit.clone());
            components.po_box_number = number.clone();
            if number.is_none() {
                messages.warning(
                    "missing_box_number",
                    field,
                    format!(
                        "The military address {unit} has no box number; add it as \
                         \"{unit} BOX 123\"."
                    ),
                );
            }
        }
        Line::Units(units) => add_units(components, units, field, messages),
        Line::Other(_) => {}
    }
}

/// Records units: the last secondary unit (the most precise) and the private mailbox.
fn add_units(components: &mut Components, units: &[Unit], field: &str, messages: &mut Messages) {
    for unit in units {
        if unit.is_pmb() {
            components.pmb_designator = Some("PMB".to_owned());
            components.pmb_number = unit.number.clone();
            continue;
        }
        components.secondary_designator = Some(unit.designator.clone());
        components.secondary_number = unit.number.clone();
        let needs_number = unit_designator(&unit.designator).is_some_and(|d| d.requires_number);
        if needs_number && unit.number.is_none() {
            messages.warning(
                "missing_secondary_number",
                field,
                format!(
                    "The unit designator {} has no number; add the apartment or suite number.",
                    unit.designator
                ),
            );
        }
    }
}

/// Upper case, periods removed, commas turned into spaces, spaces collapsed.
fn clean_upper(value: Option<&str>) -> Option<String> {
    let value = value?.to_uppercase().replace('.', "").replace(',', " ");
    clean(Some(&value))
}

/// Splits a line into upper-case words without punctuation. `#` becomes its own word
/// ("#4" → "# 4"), a designator glued to its number is split ("APT4" → "APT 4"); the hyphen
/// and slash stay inside words ("123-45", "1/2", "C/O").
fn tokenize(line: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(line.len() + 4);
    for c in line.to_uppercase().chars() {
        match c {
            '.' | '\'' | '’' | '"' => {}
            '#' => spaced.push_str(" # "),
            c if c.is_alphanumeric() || c == '-' || c == '/' || c == '&' => spaced.push(c),
            _ => spaced.push(' '),
        }
    }
    let mut tokens = Vec::new();
    for word in spaced.split_whitespace() {
        let word = word.trim_matches('-');
        if word.is_empty() {
            continue;
        }
        match GLUED_UNIT.captures(word) {
            Some(parts) => {
                tokens.extend(
                    parts
                        .iter()
                        .skip(1)
                        .flatten()
                        .map(|m| m.as_str().to_owned()),
                );
            }
            None => tokens.push(word.to_owned()),
        }
    }
    tokens
}

/// Reads what a line holds. `unit_line` allows a bare number ("4") to mean a unit.
fn classify(tokens: &[String], unit_line: bool) -> Option<Line> {
    if tokens.is_empty() {
        return None;
    }
    let joined = tokens.join(" ");
    if let Some(parts) = MILITARY_BOX.captures(&joined) {
        let unit = format!("{} {}", &parts[1], &parts[2]);
        return Some(Line::Military(
            unit,
            parts.get(3).map(|m| m.as_str().to_owned()),
        ));
    }
    if let Some(parts) = PO_BOX.captures(&joined) {
        return Some(Line::PoBox(parts[1].to_owned()));
    }
    if let Some(parts) = RURAL_ROUTE.captures(&joined) {
        let route = parts
            .get(1)
            .or(parts.get(3))
            .map(|m| m.as_str())
            .unwrap_or_default();
        let number = parts.get(2).or(parts.get(4)).map(|m| m.as_str().to_owned());
        return Some(Line::Route(format!("RR {route}"), number));
    }
    if let Some(parts) = RURAL_ROUTE_BOX_FIRST.captures(&joined) {
        return Some(Line::Route(
            format!("RR {}", &parts[2]),
            Some(parts[1].to_owned()),
        ));
    }
    if let Some(parts) = HIGHWAY_CONTRACT.captures(&joined) {
        return Some(Line::Route(
            format!("HC {}", &parts[1]),
            parts.get(2).map(|m| m.as_str().to_owned()),
        ));
    }
    if let Some(units) = parse_units(tokens) {
        return Some(Line::Units(units));
    }
    if unit_line && tokens.len() == 1 && is_unit_number(&tokens[0]) && has_digit(&tokens[0]) {
        return Some(Line::Units(vec![Unit {
            designator: "#".to_owned(),
            number: Some(tokens[0].clone()),
        }]));
    }
    if let Some(street) = parse_street(tokens) {
        return Some(Line::Street(street));
    }
    Some(Line::Other(joined))
}

fn has_digit(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_digit())
}

fn is_unit_number(word: &str) -> bool {
    UNIT_NUMBER.is_match(word) && (has_digit(word) || word.len() == 1)
}

fn is_house_number(word: &str) -> bool {
    HOUSE_NUMBER.is_match(word) && !ORDINAL.is_match(word)
}

/// Reads the whole slice as units, or `None`.
fn parse_units(tokens: &[String]) -> Option<Vec<Unit>> {
    let mut units = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (unit, used) = parse_unit(tokens, i)?;
        units.push(unit);
        i += used;
    }
    (!units.is_empty()).then_some(units)
}

/// Reads one unit at `i`: the unit and how many words it used.
fn parse_unit(tokens: &[String], i: usize) -> Option<(Unit, usize)> {
    let word = tokens.get(i)?.as_str();
    let next = tokens.get(i + 1).map(String::as_str);
    let after = tokens.get(i + 2).map(String::as_str);
    let is_last = i + 1 == tokens.len();
    let unit = |designator: &str, number: Option<&str>| Unit {
        designator: designator.to_owned(),
        number: number.map(str::to_owned),
    };
    // "# 4"
    if word == "#" {
        let number = next.filter(|n| is_unit_number(n))?;
        return Some((unit("#", Some(number)), 2));
    }
    // "3RD FLOOR"
    if let Some(parts) = ORDINAL.captures(word)
        && next.is_some_and(|n| matches!(n, "FLOOR" | "FL" | "FLR"))
    {
        return Some((unit("FL", Some(&parts[1])), 2));
    }
    // "PMB 12", "PMB # 12"
    let designator = if word == "PMB" {
        "PMB"
    } else {
        let found = unit_designator(word)?;
        found.standard
    };
    match (next, after) {
        (Some("#"), Some(number)) if is_unit_number(number) => {
            Some((unit(designator, Some(number)), 3))
        }
        (Some(number), _) if is_unit_number(number) => Some((unit(designator, Some(number)), 2)),
        _ => {
            let alone = unit_designator(word).is_some_and(|d| !d.requires_number);
            if alone || (is_last && COMMON_UNIT_WORDS.contains(&word)) {
                Some((unit(designator, None), 1))
            } else {
                None
            }
        }
    }
}

/// Parses a street line, or `None` when it does not look like one (no house number and no
/// street suffix).
fn parse_street(tokens: &[String]) -> Option<Street> {
    let mut street = Street::default();
    let mut rest: &[String] = tokens;

    // Units written before the house number: "APT 4 12 MAIN ST".
    if !rest.is_empty() && !is_house_number(&rest[0]) {
        // The longest unit prefix: in "APT 4 123 MAIN ST" the 4 belongs to the unit.
        for j in (1..rest.len()).rev() {
            if is_house_number(&rest[j])
                && let Some(units) = parse_units(&rest[..j])
            {
                street.units = units;
                street.units_moved = true;
                rest = &rest[j..];
                break;
            }
        }
    }

    // House number and fraction.
    let has_number = rest.first().is_some_and(|w| is_house_number(w));
    // Units at the end: the earliest split that leaves a street name before them.
    let earliest = if has_number { 2 } else { 1 };
    for k in earliest..rest.len() {
        if let Some(units) = parse_units(&rest[k..]) {
            street.units.extend(units);
            rest = &rest[..k];
            break;
        }
    }
    if has_number {
        let mut number = rest[0].clone();
        rest = &rest[1..];
        if let Some(fraction) = rest
            .first()
            .filter(|w| FRACTION.is_match(w) && rest.len() > 1)
        {
            number = format!("{number} {fraction}");
            rest = &rest[1..];
        }
        street.primary_number = Some(number);
    }

    // Right to left: post-directional, suffix, then a pre-directional, each only while a
    // street name remains ("123 NORTH ST" is the street NORTH, suffix ST).
    let mut start = 0;
    let mut end = rest.len();
    if end - start >= 2
        && let Some(dir) = directional(&rest[end - 1])
    {
        street.postdirection = Some(dir.to_owned());
        end -= 1;
    }
    if end - start >= 2
        && let Some(suffix) = suffix_standard(&rest[end - 1])
    {
        street.suffix = Some(suffix.to_owned());
        end -= 1;
        // "MAIN STREET EXTENSION" → "MAIN ST EXT".
        if suffix == "EXT"
            && end - start >= 2
            && let Some(inner) = suffix_standard(&rest[end - 1])
        {
            street.suffix = Some(format!("{inner} EXT"));
            end -= 1;
        }
    }
    if end - start >= 3
        && let (Some(a), Some(b)) = (directional(&rest[start]), directional(&rest[start + 1]))
        && matches!(a, "N" | "S")
        && matches!(b, "E" | "W")
    {
        street.predirection = Some(format!("{a}{b}"));
        start += 2;
    } else if end - start >= 2
        && let Some(dir) = directional(&rest[start])
    {
        street.predirection = Some(dir.to_owned());
        start += 1;
    }
    if start < end {
        street.name = Some(rest[start..end].join(" "));
    }
    if street.primary_number.is_none() && street.suffix.is_none() {
        return None;
    }
    Some(street)
}

/// The two-letter code of a US state, territory or military state, from its code, its
/// name or a traditional abbreviation.
fn state_code(country: &'static Country, given: &str) -> Option<&'static str> {
    let folded = fold(given);
    if let Some(sub) = country.subdivisions.iter().find(|s| s.key == folded) {
        return Some(sub.key.as_str());
    }
    if let Some(sub) = country
        .subdivisions
        .iter()
        .find(|s| s.name.as_deref().is_some_and(|n| fold(n) == folded))
    {
        return Some(sub.key.as_str());
    }
    let alias = STATE_ALIASES.iter().find(|(alias, _)| *alias == folded)?;
    country
        .subdivisions
        .iter()
        .find(|s| s.key == alias.1)
        .map(|s| s.key.as_str())
}

/// ZIP code and ZIP+4 from what was typed, and whether a lost leading zero was restored
/// (spreadsheets turn 02134 into 2134; it is restored only when the state confirms it).
fn parse_zip(
    given: &str,
    state: Option<&str>,
    country: &Country,
) -> Option<(String, Option<String>, bool)> {
    let text = given.trim();
    if let Some(parts) = ZIP.captures(text) {
        let zip5 = parts[1].to_owned();
        let plus4 = parts.get(2).map(|m| m.as_str().to_owned());
        return Some((zip5, plus4, false));
    }
    let digits_only = text.len() == 4 && text.chars().all(|c| c.is_ascii_digit());
    if digits_only {
        let restored = format!("0{text}");
        let confirmed = state
            .and_then(|code| country.subdivisions.iter().find(|s| s.key == code))
            .and_then(|sub| sub.zip_prefix.as_ref())
            .is_some_and(|prefix| prefix.is_match(&restored));
        if confirmed {
            return Some((restored, None, true));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::data;
    use super::super::usps_tables::{DIRECTIONALS, STREET_SUFFIXES, UNIT_DESIGNATORS};
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize(line)
    }

    fn street(line: &str) -> Street {
        match classify(&words(line), false) {
            Some(Line::Street(street)) => street,
            other => panic!("{line}: not a street: {other:?}"),
        }
    }

    fn us() -> &'static Country {
        data::country("US").expect("US in the metadata")
    }

    #[test]
    fn every_pattern_compiles() {
        for pattern in [
            &PO_BOX,
            &RURAL_ROUTE,
            &RURAL_ROUTE_BOX_FIRST,
            &HIGHWAY_CONTRACT,
            &MILITARY_BOX,
            &GLUED_UNIT,
            &ORDINAL,
            &HOUSE_NUMBER,
            &FRACTION,
            &UNIT_NUMBER,
            &ZIP,
        ] {
            assert!(pattern.0.is_some());
        }
    }

    #[test]
    fn tokenize_drops_punctuation_but_keeps_hyphen_slash_and_hash() {
        assert_eq!(
            words("123 Main St., Apt. #4"),
            ["123", "MAIN", "ST", "APT", "#", "4"]
        );
        assert_eq!(words("104-20 Queens Blvd"), ["104-20", "QUEENS", "BLVD"]);
        assert_eq!(words("12 1/2 O'Hara Rd"), ["12", "1/2", "OHARA", "RD"]);
        assert_eq!(words("5 Elm St Ste200"), ["5", "ELM", "ST", "STE", "200"]);
        assert_eq!(words("  - ; "), Vec::<String>::new());
    }

    #[test]
    fn suffix_table_is_complete_and_consistent() {
        assert!(
            STREET_SUFFIXES.len() > 480,
            "{} suffix spellings",
            STREET_SUFFIXES.len()
        );
        for (variant, standard) in STREET_SUFFIXES {
            assert_eq!(
                suffix_standard(standard),
                Some(*standard),
                "{standard} of {variant}"
            );
            let first = STREET_SUFFIXES
                .iter()
                .find(|(v, _)| v == variant)
                .map(|(_, s)| s);
            assert_eq!(first, Some(standard), "{variant} listed twice");
        }
        for (spelling, standard) in [
            ("AVENUE", "AVE"),
            ("AVNUE", "AVE"),
            ("BOULEVARD", "BLVD"),
            ("CROSSING", "XING"),
            ("EXPRESSWAY", "EXPY"),
            ("TURNPIKE", "TPKE"),
            ("STRAVENUE", "STRA"),
            ("MEADOW", "MDW"),
            ("MEADOWS", "MDWS"),
            ("STREETS", "STS"),
            ("WELLS", "WLS"),
        ] {
            assert_eq!(suffix_standard(spelling), Some(standard), "{spelling}");
        }
        assert_eq!(suffix_standard("MAIN"), None);
    }

    #[test]
    fn unit_table_has_every_c2_designator() {
        let standards: Vec<&str> = UNIT_DESIGNATORS.iter().map(|(_, d)| d.standard).collect();
        for standard in [
            "APT", "BSMT", "BLDG", "DEPT", "FL", "FRNT", "HNGR", "KEY", "LBBY", "LOT", "LOWR",
            "OFC", "PH", "PIER", "REAR", "RM", "SIDE", "SLIP", "SPC", "STOP", "STE", "TRLR",
            "UNIT", "UPPR",
        ] {
            assert!(standards.contains(&standard), "{standard}");
        }
        assert!(unit_designator("SUITE").is_some_and(|d| d.requires_number));
        assert!(unit_designator("REAR").is_some_and(|d| !d.requires_number));
    }

    #[test]
    fn directionals_standardize() {
        assert_eq!(DIRECTIONALS.len(), 20);
        assert_eq!(directional("NORTHEAST"), Some("NE"));
        assert_eq!(directional("SOUTH"), Some("S"));
        assert_eq!(directional("MAIN"), None);
    }

    #[test]
    fn street_lines_are_read_right_to_left() {
        let s = street("100 north main street southwest apt 4");
        assert_eq!(s.primary_number.as_deref(), Some("100"));
        assert_eq!(s.predirection.as_deref(), Some("N"));
        assert_eq!(s.name.as_deref(), Some("MAIN"));
        assert_eq!(s.suffix.as_deref(), Some("ST"));
        assert_eq!(s.postdirection.as_deref(), Some("SW"));
        assert_eq!(s.render(), "100 N MAIN ST SW APT 4");
        // The only word left is the name, never a directional or a suffix.
        assert_eq!(street("12 North St").name.as_deref(), Some("NORTH"));
        assert_eq!(street("12 Avenue B").name.as_deref(), Some("AVENUE B"));
        assert_eq!(street("12 Park Avenue").name.as_deref(), Some("PARK"));
        assert_eq!(street("12 W 3rd Floor St").render(), "12 W 3RD FLOOR ST");
    }

    #[test]
    fn units_anywhere_are_found_and_moved() {
        assert_eq!(street("Suite 5 12 Main St").render(), "12 MAIN ST STE 5");
        assert!(street("Suite 5 12 Main St").units_moved);
        assert_eq!(
            street("12 Main St Bldg 3 Fl 2").render(),
            "12 MAIN ST BLDG 3 FL 2"
        );
        assert_eq!(street("12 Main St 2nd Floor").render(), "12 MAIN ST FL 2");
        assert_eq!(street("12 Main St Apt # 4").render(), "12 MAIN ST APT 4");
        assert_eq!(
            classify(&words("Apt 4"), true),
            Some(Line::Units(vec![Unit {
                designator: "APT".to_owned(),
                number: Some("4".to_owned())
            }]))
        );
    }

    #[test]
    fn box_lines() {
        let render = |line: &str| classify(&words(line), false).map(|l| l.render());
        assert_eq!(render("P.O. Box 12").as_deref(), Some("PO BOX 12"));
        assert_eq!(render("Post Office Box 12").as_deref(), Some("PO BOX 12"));
        assert_eq!(render("Rural Route 3 Box 9").as_deref(), Some("RR 3 BOX 9"));
        assert_eq!(render("HC 1 Box 2").as_deref(), Some("HC 1 BOX 2"));
        assert_eq!(render("PSC 1 Box 2").as_deref(), Some("PSC 1 BOX 2"));
        assert_eq!(render("Unit 2 Box 3").as_deref(), Some("UNIT 2 BOX 3"));
        assert_eq!(
            render("12 Box Elder Rd").as_deref(),
            Some("12 BOX ELDER RD")
        );
    }

    #[test]
    fn zip_codes() {
        let zip = |text: &str, state: Option<&str>| parse_zip(text, state, us());
        assert_eq!(zip("12345", None), Some(("12345".into(), None, false)));
        assert_eq!(
            zip("123456789", None),
            Some(("12345".into(), Some("6789".into()), false))
        );
        assert_eq!(
            zip("12345-6789", None),
            Some(("12345".into(), Some("6789".into()), false))
        );
        assert_eq!(zip("2108", Some("MA")), Some(("02108".into(), None, true)));
        assert_eq!(zip("2108", None), None);
        assert_eq!(zip("1234", Some("CA")), None);
        assert_eq!(zip("12345-678", None), None);
    }

    #[test]
    fn state_names_and_codes() {
        assert_eq!(state_code(us(), "ca"), Some("CA"));
        assert_eq!(state_code(us(), "California"), Some("CA"));
        assert_eq!(state_code(us(), "Calif."), Some("CA"));
        assert_eq!(state_code(us(), "district of columbia"), Some("DC"));
        assert_eq!(state_code(us(), "Armed Forces Pacific"), Some("AP"));
        assert_eq!(state_code(us(), "Armed Forces (AE)"), Some("AE"));
        assert_eq!(state_code(us(), "Puerto Rico"), Some("PR"));
        assert_eq!(state_code(us(), "Ontario"), None);
    }
}

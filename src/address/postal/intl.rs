//! Addresses outside the US, checked against the embedded address metadata: country names
//! to ISO codes, required fields, the postal code pattern (and its written form), the
//! subdivision list, the fields printed in capitals and the envelope layout.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::data::{self, COUNTRIES, Country, Subdivision};
use super::format::{self, LayoutValues};
use super::{AddressInput, Components, Messages, NormalizedAddress, Validation, clean, fold};

/// Names people use for countries that the metadata's English name does not cover: local
/// names, short forms, constituent countries. Keys are in [`fold`]ed form.
const COUNTRY_ALIASES: &[(&str, &str)] = &[
    ("USA", "US"),
    ("U S", "US"),
    ("U S A", "US"),
    ("UNITED STATES OF AMERICA", "US"),
    ("AMERICA", "US"),
    ("UK", "GB"),
    ("U K", "GB"),
    ("GREAT BRITAIN", "GB"),
    ("BRITAIN", "GB"),
    ("ENGLAND", "GB"),
    ("SCOTLAND", "GB"),
    ("WALES", "GB"),
    ("NORTHERN IRELAND", "GB"),
    ("UNITED KINGDOM OF GREAT BRITAIN AND NORTHERN IRELAND", "GB"),
    ("DEUTSCHLAND", "DE"),
    ("BRD", "DE"),
    ("FEDERAL REPUBLIC OF GERMANY", "DE"),
    ("BUNDESREPUBLIK DEUTSCHLAND", "DE"),
    ("REPUBLIQUE FRANCAISE", "FR"),
    ("ESPANA", "ES"),
    ("ITALIA", "IT"),
    ("NEDERLAND", "NL"),
    ("HOLLAND", "NL"),
    ("BELGIQUE", "BE"),
    ("BELGIE", "BE"),
    ("BELGIEN", "BE"),
    ("SCHWEIZ", "CH"),
    ("SUISSE", "CH"),
    ("SVIZZERA", "CH"),
    ("OSTERREICH", "AT"),
    ("OESTERREICH", "AT"),
    ("BRASIL", "BR"),
    ("NIPPON", "JP"),
    ("NIHON", "JP"),
    ("日本", "JP"),
    ("PRC", "CN"),
    ("PEOPLES REPUBLIC OF CHINA", "CN"),
    ("中国", "CN"),
    ("KOREA", "KR"),
    ("REPUBLIC OF KOREA", "KR"),
    ("KOREA REPUBLIC OF", "KR"),
    ("대한민국", "KR"),
    ("DPRK", "KP"),
    ("BHARAT", "IN"),
    ("EIRE", "IE"),
    ("REPUBLIC OF IRELAND", "IE"),
    ("RUSSIA", "RU"),
    ("РОССИЯ", "RU"),
    ("CZECH REPUBLIC", "CZ"),
    ("CZECHIA", "CZ"),
    ("CESKO", "CZ"),
    ("SLOVENSKO", "SK"),
    ("POLSKA", "PL"),
    ("SVERIGE", "SE"),
    ("NORGE", "NO"),
    ("DANMARK", "DK"),
    ("FINLAND", "FI"),
    ("SUOMI", "FI"),
    ("ALAND", "AX"),
    ("ALAND ISLANDS", "AX"),
    ("HELLAS", "GR"),
    ("ELLADA", "GR"),
    ("TURKIYE", "TR"),
    ("MAGYARORSZAG", "HU"),
    ("HRVATSKA", "HR"),
    ("SERBIA", "RS"),
    ("SLOVENIJA", "SI"),
    ("MOLDOVA", "MD"),
    ("NORTH MACEDONIA", "MK"),
    ("VIETNAM", "VN"),
    ("LAOS", "LA"),
    ("SINGAPORE", "SG"),
    ("UAE", "AE"),
    ("KSA", "SA"),
    ("MACAU", "MO"),
    ("IVORY COAST", "CI"),
    ("DRC", "CD"),
    ("DR CONGO", "CD"),
    ("DEMOCRATIC REPUBLIC OF THE CONGO", "CD"),
    ("REPUBLIC OF THE CONGO", "CG"),
    ("TANZANIA", "TZ"),
    ("ESWATINI", "SZ"),
    ("CABO VERDE", "CV"),
    ("HOLY SEE", "VA"),
    ("VATICAN CITY", "VA"),
    ("BRITISH VIRGIN ISLANDS", "VG"),
    ("US VIRGIN ISLANDS", "VI"),
    ("U S VIRGIN ISLANDS", "VI"),
    ("MICRONESIA", "FM"),
    ("PALESTINE", "PS"),
    ("GUERNSEY", "GG"),
    ("JERSEY", "JE"),
    ("DOMINICAN REPUBLIC", "DO"),
    ("PANAMA", "PA"),
    ("GRENADA", "GD"),
    ("BULGARIA", "BG"),
    ("HUNGARY", "HU"),
    ("AOTEAROA", "NZ"),
    ("ST PIERRE AND MIQUELON", "PM"),
    ("SAINT PIERRE AND MIQUELON", "PM"),
    ("SAINT VINCENT AND THE GRENADINES", "VC"),
    ("BRUNEI", "BN"),
    ("SYRIA", "SY"),
    ("IRAN", "IR"),
    ("BOLIVIA", "BO"),
    ("VENEZUELA", "VE"),
];

/// ISO 3166-1 alpha-3 codes of the countries most mail goes to.
const ALPHA3: &[(&str, &str)] = &[
    ("USA", "US"),
    ("GBR", "GB"),
    ("DEU", "DE"),
    ("FRA", "FR"),
    ("ESP", "ES"),
    ("ITA", "IT"),
    ("NLD", "NL"),
    ("BEL", "BE"),
    ("CHE", "CH"),
    ("AUT", "AT"),
    ("BRA", "BR"),
    ("MEX", "MX"),
    ("JPN", "JP"),
    ("CHN", "CN"),
    ("KOR", "KR"),
    ("IND", "IN"),
    ("IRL", "IE"),
    ("RUS", "RU"),
    ("CZE", "CZ"),
    ("POL", "PL"),
    ("SWE", "SE"),
    ("NOR", "NO"),
    ("DNK", "DK"),
    ("FIN", "FI"),
    ("GRC", "GR"),
    ("PRT", "PT"),
    ("TUR", "TR"),
    ("CAN", "CA"),
    ("AUS", "AU"),
    ("NZL", "NZ"),
    ("ZAF", "ZA"),
    ("ARG", "AR"),
    ("CHL", "CL"),
    ("COL", "CO"),
    ("PER", "PE"),
    ("ISR", "IL"),
    ("SGP", "SG"),
    ("HKG", "HK"),
    ("TWN", "TW"),
    ("UKR", "UA"),
    ("HUN", "HU"),
    ("ROU", "RO"),
    ("BGR", "BG"),
    ("HRV", "HR"),
    ("SVK", "SK"),
    ("SVN", "SI"),
    ("LUX", "LU"),
    ("ARE", "AE"),
    ("SAU", "SA"),
    ("EGY", "EG"),
    ("NGA", "NG"),
    ("KEN", "KE"),
    ("PHL", "PH"),
    ("IDN", "ID"),
    ("MYS", "MY"),
    ("THA", "TH"),
    ("VNM", "VN"),
    ("PAK", "PK"),
    ("BGD", "BD"),
    ("ISL", "IS"),
    ("EST", "EE"),
    ("LVA", "LV"),
    ("LTU", "LT"),
    ("PRI", "PR"),
];

/// Folded country name, alias or code → alpha-2 code.
static COUNTRY_INDEX: LazyLock<HashMap<String, &'static str>> = LazyLock::new(build_index);

fn build_index() -> HashMap<String, &'static str> {
    let mut index: HashMap<String, &'static str> = HashMap::new();
    let mut ambiguous: Vec<String> = Vec::new();
    let mut add_name = |index: &mut HashMap<String, &'static str>,
                        key: String,
                        code: &'static str| match index.get(&key) {
        Some(existing) if *existing != code => ambiguous.push(key),
        Some(_) => {}
        None => {
            index.insert(key, code);
        }
    };
    for (code, country) in COUNTRIES.iter() {
        let code: &'static str = code.as_str();
        add_name(&mut index, fold(&country.name), code);
        // "BULGARIA (REP.)" is also "BULGARIA".
        if let Some(open) = country.name.find('(') {
            add_name(&mut index, fold(&country.name[..open]), code);
        }
    }
    // Two countries under one name ("CHANNEL ISLANDS", "FINLAND" for Åland): the aliases
    // below decide, or the name is refused.
    for key in ambiguous {
        index.remove(&key);
    }
    let known = |code: &str| data::country(code).map(|c| c.code.as_str());
    for (alias, code) in ALPHA3.iter().chain(COUNTRY_ALIASES) {
        if let Some(code) = known(code) {
            index.insert(fold(alias), code);
        }
    }
    index
}

/// See [`super::country_code`].
pub(super) fn country_code(name_or_code: &str) -> Option<&'static str> {
    let key = fold(name_or_code);
    if key.len() == 2
        && let Some(country) = data::country(&key)
    {
        return Some(country.code.as_str());
    }
    let key = key.strip_prefix("THE ").unwrap_or(&key);
    COUNTRY_INDEX.get(key).copied()
}

/// Checks an address of a country other than the US.
pub(super) fn validate(input: &AddressInput, country: &'static Country) -> Validation {
    let mut messages = Messages::default();
    let latin = is_latin(input);
    let upper = |letter: char, value: Option<String>| match value {
        Some(v) if country.upper(letter) => Some(v.to_uppercase()),
        other => other,
    };

    let name = upper('N', clean(input.name.as_deref()));
    let company = upper('O', clean(input.company.as_deref()));
    let line1 = upper('A', clean(input.line1.as_deref()));
    let line2 = upper('A', clean(input.line2.as_deref()));
    let city = upper('C', clean(input.city.as_deref()));
    let raw_state = clean(input.state.as_deref());
    let raw_zip = clean(input.postal_code.as_deref());

    // Required fields.
    let required = [
        ('A', line1.is_some(), "line1", "street address (line1)"),
        ('C', city.is_some(), "city", "city"),
        ('S', raw_state.is_some(), "state", "state or province"),
        ('Z', raw_zip.is_some(), "postal_code", "postal code"),
        ('N', name.is_some(), "name", "recipient name"),
        ('O', company.is_some(), "company", "company"),
    ];
    for (letter, present, field, what) in required {
        if country.requires(letter) && !present {
            messages.missing(field, what);
        }
    }

    let (subdivision, state) = check_state(country, raw_state.as_deref(), &mut messages);
    let postal_code = check_postal_code(country, raw_zip.as_deref(), subdivision, &mut messages);

    // Envelope lines. A city given for a country whose layout has no city (Japan writes it
    // in the street lines) still goes on the envelope, after the street lines.
    let layout = match (&country.lfmt, latin) {
        (Some(lfmt), true) => lfmt.as_str(),
        _ => country.fmt.as_str(),
    };
    let mut address_lines: Vec<&str> = [&line1, &line2]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if !layout.contains("%C")
        && let Some(city) = &city
    {
        address_lines.push(city);
    }
    let formatted = format::render(
        layout,
        &LayoutValues {
            name: name.as_deref(),
            organization: company.as_deref(),
            address_lines,
            city: city.as_deref(),
            state: if country.uses_field('S') {
                state.as_deref()
            } else {
                None
            },
            postal_code: postal_code.as_deref(),
        },
    );

    let components = Components {
        city: city.clone(),
        state: state.clone(),
        zip_code: postal_code.clone(),
        country: Some(country.code.clone()),
        ..Components::default()
    };
    let normalized = NormalizedAddress {
        name,
        company,
        line1,
        line2,
        city,
        state,
        postal_code,
        country: Some(country.code.clone()),
        formatted,
    };
    Validation {
        valid: !messages.has_errors(),
        normalized,
        components,
        messages: messages.into_vec(),
    }
}

/// Finds the subdivision and returns it with the state as it will be printed; reports an
/// unknown subdivision, and a state given for a country whose addresses have none.
fn check_state(
    country: &'static Country,
    given: Option<&str>,
    messages: &mut Messages,
) -> (Option<&'static Subdivision>, Option<String>) {
    let Some(given) = given else {
        return (None, None);
    };
    let subdivision = find_subdivision(country, given);
    let state = match subdivision {
        Some((sub, by_latin_name)) => state_display(country, sub, by_latin_name),
        None => {
            if !country.subdivisions.is_empty() && country.uses_field('S') {
                report_unknown_state(country, given, messages);
            }
            given.to_owned()
        }
    };
    let state = if country.upper('S') {
        state.to_uppercase()
    } else {
        state
    };
    if !country.uses_field('S') {
        messages.info(
            "unused_field",
            "state",
            format!(
                "{} addresses do not include a state or province, so it is left off the \
                 envelope.",
                display_name(country)
            ),
        );
    }
    messages.changed("state", Some(given), Some(&state));
    (subdivision.map(|(sub, _)| sub), Some(state))
}

/// Reports a state that is not in the country's list. The metadata spells non-Latin
/// subdivisions in Latin one way ("Moskva") where people write another ("Moscow"), so for
/// those a Latin name that does not match is only a warning; elsewhere it is an error.
fn report_unknown_state(country: &Country, given: &str, messages: &mut Messages) {
    let latin_input = given.chars().all(is_latin_char);
    let latin_keys = country
        .subdivisions
        .iter()
        .all(|s| s.key.chars().all(is_latin_char));
    let example = country
        .subdivisions
        .first()
        .map(|s| match (&s.lname, latin_input) {
            (Some(lname), true) => lname.as_str(),
            _ => s.key.as_str(),
        })
        .unwrap_or_default();
    let message = format!(
        "\"{given}\" is not a state, province or region of {} that we know; use one of its \
         names or codes, such as \"{example}\".",
        display_name(country),
    );
    if latin_input && !latin_keys {
        messages.warning("unknown_state", "state", message);
    } else {
        messages.error("unknown_state", "state", message);
    }
}

/// Puts the postal code in its written form and checks it against the country's pattern
/// and the subdivision's prefix. Returns the postal code as it will be printed.
fn check_postal_code(
    country: &'static Country,
    given: Option<&str>,
    subdivision: Option<&Subdivision>,
    messages: &mut Messages,
) -> Option<String> {
    let given = given?;
    let Some(code) = normalize_postal_code(country, given) else {
        messages.error(
            "invalid_postal_code",
            "postal_code",
            invalid_postal_code_message(country, given),
        );
        return Some(given.to_uppercase());
    };
    if let Some(sub) = subdivision
        && let Some(prefix) = &sub.zip_prefix
        && !prefix.is_match(&code)
    {
        messages.error(
            "postal_code_state_mismatch",
            "postal_code",
            format!(
                "The postal code {code} does not belong to {}; check the postal code and the \
                 state.",
                sub.name
                    .as_deref()
                    .or(sub.lname.as_deref())
                    .unwrap_or(&sub.key)
            ),
        );
    }
    if !country.uses_field('Z') && country.zip.is_none() {
        messages.info(
            "unused_field",
            "postal_code",
            format!(
                "{} addresses have no postal code, so it is left off the envelope.",
                display_name(country)
            ),
        );
    }
    messages.changed("postal_code", Some(given), Some(&code));
    Some(code)
}

/// The answer when the country is missing or unknown: fields are only trimmed, the envelope
/// lines follow the generic layout, and the address is invalid.
pub(super) fn unchecked(input: &AddressInput, messages: Messages) -> Validation {
    let name = clean(input.name.as_deref());
    let company = clean(input.company.as_deref());
    let line1 = clean(input.line1.as_deref());
    let line2 = clean(input.line2.as_deref());
    let city = clean(input.city.as_deref());
    let state = clean(input.state.as_deref());
    let postal_code = clean(input.postal_code.as_deref());
    let formatted = format::render(
        "%N%n%O%n%A%n%C %S %Z",
        &LayoutValues {
            name: name.as_deref(),
            organization: company.as_deref(),
            address_lines: [&line1, &line2]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect(),
            city: city.as_deref(),
            state: state.as_deref(),
            postal_code: postal_code.as_deref(),
        },
    );
    Validation {
        valid: false,
        components: Components {
            city: city.clone(),
            state: state.clone(),
            zip_code: postal_code.clone(),
            ..Components::default()
        },
        normalized: NormalizedAddress {
            name,
            company,
            line1,
            line2,
            city,
            state,
            postal_code,
            country: None,
            formatted,
        },
        messages: messages.into_vec(),
    }
}

/// Whether every field is written in Latin script (so the Latin layout `lfmt` applies).
fn is_latin(input: &AddressInput) -> bool {
    [
        &input.name,
        &input.company,
        &input.line1,
        &input.line2,
        &input.city,
        &input.state,
        &input.postal_code,
    ]
    .into_iter()
    .flatten()
    .flat_map(|field| field.chars())
    .all(is_latin_char)
}

/// Whether a character belongs to Latin script (or is a digit, space or punctuation).
fn is_latin_char(c: char) -> bool {
    c.is_ascii()
        || ('\u{00A0}'..='\u{024F}').contains(&c)
        || ('\u{1E00}'..='\u{1EFF}').contains(&c)
        || ('\u{2000}'..='\u{206F}').contains(&c)
}

/// The country's name for people: "UNITED KINGDOM" → "United Kingdom".
fn display_name(country: &Country) -> String {
    country
        .name
        .split(' ')
        .map(|word| {
            let lower = word.to_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) if word.len() > 2 || first == '(' => {
                    first.to_uppercase().chain(chars).collect::<String>()
                }
                _ => lower,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds the subdivision a person meant, by key, local name, Latin name or ISO code, in
/// any case and with or without accents. Irish counties match with or without "Co." or
/// "County". The flag says whether the match was on the Latin name or ISO code (so the
/// Latin name is the one to print for a non-Latin key).
pub(super) fn find_subdivision<'c>(
    country: &'c Country,
    given: &str,
) -> Option<(&'c Subdivision, bool)> {
    let wanted = strip_county(&fold(given));
    let same =
        |candidate: Option<&String>| candidate.is_some_and(|c| strip_county(&fold(c)) == wanted);
    // "Beijing" for "Beijing Shi", "Gyeonggi" for "Gyeonggi-do", "Kyiv" for "Kyiv city".
    let same_short = |candidate: Option<&String>| {
        candidate.is_some_and(|c| strip_admin_term(&fold(c)).is_some_and(|short| short == wanted))
    };
    country.subdivisions.iter().find_map(|sub| {
        if same(Some(&sub.key)) || same(sub.name.as_ref()) {
            Some((sub, false))
        } else if same(sub.lname.as_ref())
            || same(sub.isoid.as_ref())
            || same_short(sub.lname.as_ref())
        {
            Some((sub, true))
        } else {
            None
        }
    })
}

/// A Latin subdivision name without its trailing administrative word ("BEIJING SHI" →
/// "BEIJING"), when it has one.
fn strip_admin_term(folded: &str) -> Option<&str> {
    const TERMS: &[&str] = &[
        "SHENG",
        "SHI",
        "ZIZHIQU",
        "CITY",
        "COUNTY",
        "OBLAST",
        "KRAY",
        "PROVINCE",
        "DO",
        "PREFECTURE",
        "REGION",
        "STATE",
    ];
    let (head, last) = folded.rsplit_once(' ')?;
    TERMS.contains(&last).then_some(head)
}

/// "CO DUBLIN" and "COUNTY DUBLIN" are "DUBLIN".
fn strip_county(folded: &str) -> String {
    folded
        .strip_prefix("COUNTY ")
        .or_else(|| folded.strip_prefix("CO "))
        .unwrap_or(folded)
        .to_owned()
}

/// How a matched subdivision is written on the envelope.
///
/// The metadata's key is what the country's post expects where it is a code ("NSW", "ON",
/// "RM") or a Latin name ("Co. Dublin", "Karnataka"). Spain and Mexico print the province
/// or state name rather than the key ("M", "Ags."). Non-Latin keys ("東京都") are kept for
/// addresses written in that script and replaced by the Latin name otherwise.
fn state_display(country: &Country, sub: &Subdivision, by_latin_name: bool) -> String {
    if matches!(country.code.as_str(), "ES" | "MX") {
        return sub.name.clone().unwrap_or_else(|| sub.key.clone());
    }
    let key_is_latin = sub.key.chars().all(is_latin_char);
    if key_is_latin || !by_latin_name {
        sub.key.clone()
    } else {
        sub.lname.clone().unwrap_or_else(|| sub.key.clone())
    }
}

/// The postal code in its written form ("sw1a1aa" → "SW1A 1AA", "K1A0B1" → "K1A 0B1"),
/// or `None` when it does not fit the country's pattern. Countries without a pattern
/// accept any value.
pub(super) fn normalize_postal_code(country: &Country, given: &str) -> Option<String> {
    let upper = given
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase();
    let Some(pattern) = &country.zip else {
        return Some(upper);
    };
    let mut attempts = vec![upper.clone()];
    // "D-10115", "F 75008", "NL-1234 AB": a country prefix some people still write.
    for separator in ["-", " ", ""] {
        let prefix = format!("{}{separator}", country.code);
        if let Some(rest) = upper.strip_prefix(&prefix)
            && !rest.is_empty()
        {
            attempts.push(rest.trim().to_owned());
        }
    }
    // The older European vehicle letters: "D-10115", "F-75008", "A-1010", "CH-8001".
    if let Some((letters, rest)) = upper.split_once('-')
        && (1..=3).contains(&letters.len())
        && letters.chars().all(|c| c.is_ascii_uppercase())
        && rest.starts_with(|c: char| c.is_ascii_digit())
    {
        attempts.push(rest.trim().to_owned());
    }
    for attempt in attempts {
        let compact: String = attempt
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        let mut candidates = separated_forms(country, &compact);
        let examples_separate = !candidates.is_empty();
        if examples_separate {
            candidates.push(attempt.clone());
            candidates.push(compact);
        } else {
            candidates.push(compact);
            candidates.push(attempt.clone());
        }
        if let Some(found) = candidates.into_iter().find(|c| pattern.is_match(c)) {
            return Some(found);
        }
    }
    None
}

/// The compact code with a separator put where the country's examples put it, counted
/// from the end (the inward code of a UK postcode is always three characters).
fn separated_forms(country: &Country, compact: &str) -> Vec<String> {
    let length = compact.chars().count();
    let mut with_separator: Vec<(usize, char, usize)> = country
        .zip_examples
        .iter()
        .filter_map(|example| {
            let position = example.find([' ', '-'])?;
            let separator = example[position..].chars().next()?;
            let from_end = example[position + 1..].chars().count();
            let example_length = example.chars().filter(|c| *c != ' ' && *c != '-').count();
            Some((example_length, separator, from_end))
        })
        .collect();
    // Examples of the same length first.
    with_separator.sort_by_key(|(example_length, _, _)| *example_length != length);
    let mut forms: Vec<String> = Vec::new();
    for (_, separator, from_end) in with_separator {
        if from_end == 0 || from_end >= length {
            continue;
        }
        let split = compact
            .char_indices()
            .nth(length - from_end)
            .map(|(i, _)| i)
            .unwrap_or(compact.len());
        let form = format!("{}{separator}{}", &compact[..split], &compact[split..]);
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// "… is not a valid postal code for Canada; postal codes there look like H3Z 2Y7."
fn invalid_postal_code_message(country: &Country, given: &str) -> String {
    let examples: Vec<&str> = country
        .zip_examples
        .iter()
        .take(2)
        .map(String::as_str)
        .collect();
    if examples.is_empty() {
        format!(
            "\"{given}\" is not a valid postal code for {}.",
            display_name(country)
        )
    } else {
        format!(
            "\"{given}\" is not a valid postal code for {}; postal codes there look like {}.",
            display_name(country),
            examples.join(" or ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(name: &str) -> Option<&'static str> {
        country_code(name)
    }

    #[test]
    fn country_names_codes_and_aliases() {
        assert_eq!(code("us"), Some("US"));
        assert_eq!(code("U.S."), Some("US"));
        assert_eq!(code("U.S.A."), Some("US"));
        assert_eq!(code("United States of America"), Some("US"));
        assert_eq!(code("united states"), Some("US"));
        assert_eq!(code("UK"), Some("GB"));
        assert_eq!(code("Great Britain"), Some("GB"));
        assert_eq!(code("England"), Some("GB"));
        assert_eq!(code("United Kingdom"), Some("GB"));
        assert_eq!(code("Deutschland"), Some("DE"));
        assert_eq!(code("germany"), Some("DE"));
        assert_eq!(code("DEU"), Some("DE"));
        assert_eq!(code("The Netherlands"), Some("NL"));
        assert_eq!(code("Côte d'Ivoire"), Some("CI"));
        assert_eq!(code("España"), Some("ES"));
        assert_eq!(code("Bulgaria"), Some("BG"));
        assert_eq!(code("Finland"), Some("FI"));
        assert_eq!(code("Channel Islands"), None);
        assert_eq!(code("Atlantis"), None);
        assert_eq!(code("ZZ"), None);
        assert_eq!(code(""), None);
    }

    #[test]
    fn postal_codes_take_their_written_form() {
        let norm =
            |cc: &str, zip: &str| data::country(cc).and_then(|c| normalize_postal_code(c, zip));
        assert_eq!(norm("GB", "sw1a1aa").as_deref(), Some("SW1A 1AA"));
        assert_eq!(norm("GB", "m25bq").as_deref(), Some("M2 5BQ"));
        assert_eq!(norm("GB", "BFPO 61").as_deref(), Some("BFPO 61"));
        assert_eq!(norm("CA", "k1a0b1").as_deref(), Some("K1A 0B1"));
        assert_eq!(norm("JP", "1540023").as_deref(), Some("154-0023"));
        assert_eq!(norm("BR", "01310100").as_deref(), Some("01310-100"));
        assert_eq!(norm("NL", "1012ab").as_deref(), Some("1012 AB"));
        assert_eq!(norm("FR", "75 008").as_deref(), Some("75008"));
        assert_eq!(norm("DE", "D-10115").as_deref(), Some("10115"));
        assert_eq!(norm("DE", "1011").as_deref(), None);
        assert_eq!(norm("GB", "12345").as_deref(), None);
    }
}

//! The address corpus (`tests/fixtures/address_corpus.json`) and rule-by-rule tests of the
//! public API.
//!
//! Each corpus case gives an input and what must come out: `valid`, a subset of the
//! `normalized` fields (a `null` means the field must be absent), the exact `formatted`
//! lines, a subset of `components`, message `codes` that must be present and `absent` codes
//! that must not be. Only the keys a case names are compared, so a case states one rule.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{AddressInput, Severity, Validation, country_code, country_name, validate};

const CORPUS: &str = include_str!("../../../tests/fixtures/address_corpus.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    #[serde(default)]
    note: Option<String>,
    input: AddressInput,
    valid: bool,
    #[serde(default)]
    normalized: Option<Map<String, Value>>,
    #[serde(default)]
    formatted: Option<Vec<String>>,
    #[serde(default)]
    components: Option<Map<String, Value>>,
    #[serde(default)]
    codes: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
}

/// Every difference between a case and the answer, as readable lines.
fn check(case: &Case, answer: &Validation) -> Vec<String> {
    let mut problems = Vec::new();
    let codes: Vec<&str> = answer.messages.iter().map(|m| m.code).collect();
    if answer.valid != case.valid {
        problems.push(format!(
            "valid: expected {}, got {} ({codes:?})",
            case.valid, answer.valid
        ));
    }
    let normalized = serde_json::to_value(&answer.normalized).unwrap_or(Value::Null);
    for (key, expected) in case.normalized.iter().flatten() {
        let got = normalized.get(key).unwrap_or(&Value::Null);
        if got != expected {
            problems.push(format!("normalized.{key}: expected {expected}, got {got}"));
        }
    }
    if let Some(expected) = &case.formatted
        && *expected != answer.normalized.formatted
    {
        problems.push(format!(
            "formatted: expected {expected:?}, got {:?}",
            answer.normalized.formatted
        ));
    }
    let components = serde_json::to_value(&answer.components).unwrap_or(Value::Null);
    for (key, expected) in case.components.iter().flatten() {
        match components.get(key) {
            Some(got) if got == expected => {}
            Some(got) => problems.push(format!("components.{key}: expected {expected}, got {got}")),
            None => problems.push(format!("components.{key}: no such key")),
        }
    }
    for code in &case.codes {
        if !codes.contains(&code.as_str()) {
            problems.push(format!("missing message code {code} (got {codes:?})"));
        }
    }
    for code in &case.absent {
        if codes.contains(&code.as_str()) {
            problems.push(format!("unexpected message code {code}"));
        }
    }
    // The answer must be coherent whatever the case says.
    let has_error = answer
        .messages
        .iter()
        .any(|m| m.severity == Severity::Error);
    if answer.valid == has_error {
        problems.push("valid disagrees with the error messages".to_owned());
    }
    if answer
        .messages
        .iter()
        .any(|m| m.message.is_empty() || m.field.is_empty())
    {
        problems.push("a message has no text or no field".to_owned());
    }
    problems
}

#[test]
fn corpus() {
    let cases: Vec<Case> = serde_json::from_str(CORPUS).expect("the corpus is valid JSON");
    assert!(
        cases.len() >= 200,
        "the corpus has only {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let answer = validate(&case.input);
        let problems = check(case, &answer);
        if !problems.is_empty() {
            let note = case.note.as_deref().unwrap_or("");
            failures.push(format!(
                "{} {note}\n    {}",
                case.id,
                problems.join("\n    ")
            ));
        }
    }
    let passed = cases.len() - failures.len();
    println!("address corpus: {passed}/{} cases pass", cases.len());
    assert!(
        failures.is_empty(),
        "{} corpus failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_ids_are_unique() {
    let cases: Vec<Case> = serde_json::from_str(CORPUS).expect("the corpus is valid JSON");
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "duplicate case ids");
}

fn us(line1: &str, line2: Option<&str>) -> AddressInput {
    AddressInput {
        line1: Some(line1.to_owned()),
        line2: line2.map(str::to_owned),
        city: Some("Springfield".to_owned()),
        state: Some("IL".to_owned()),
        postal_code: Some("62704".to_owned()),
        country: Some("US".to_owned()),
        ..AddressInput::default()
    }
}

#[test]
fn input_refuses_unknown_fields() {
    let typo = serde_json::from_str::<AddressInput>(r#"{"line1": "1 Main St", "zip": "62704"}"#);
    assert!(typo.is_err());
    let fine = serde_json::from_str::<AddressInput>(r#"{"line1": "1 Main St", "state": null}"#);
    assert!(fine.is_ok());
}

#[test]
fn components_keep_every_key_even_when_empty() {
    let answer = validate(&us("PO Box 9", None));
    let value = serde_json::to_value(&answer.components).expect("serializes");
    let object = value.as_object().expect("an object");
    for key in [
        "primary_number",
        "street_predirection",
        "street_name",
        "street_suffix",
        "street_postdirection",
        "secondary_designator",
        "secondary_number",
        "pmb_designator",
        "pmb_number",
        "po_box_number",
        "rural_route",
        "military",
        "city",
        "state",
        "zip_code",
        "zip_code_plus_4",
        "country",
    ] {
        assert!(object.contains_key(key), "missing key {key}");
    }
    assert_eq!(object["primary_number"], Value::Null);
}

#[test]
fn messages_serialize_as_code_field_message() {
    let mut input = us("1 Main St", None);
    input.postal_code = Some("ABCDE".to_owned());
    let answer = validate(&input);
    assert!(!answer.valid);
    let value = serde_json::to_value(&answer.messages).expect("serializes");
    let first = value[0].as_object().expect("an object");
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "field", "message"]);
    assert_eq!(first["code"], "invalid_postal_code");
    assert_eq!(first["field"], "postal_code");
}

#[test]
fn normalized_messages_say_what_changed() {
    let answer = validate(&us("123 main street", None));
    let change = answer
        .messages
        .iter()
        .find(|m| m.code == "normalized")
        .expect("a normalized message");
    assert_eq!(change.field, "line1");
    assert!(change.message.contains("123 MAIN ST"), "{}", change.message);
    assert_eq!(change.severity, Severity::Info);
    // Case and spacing alone are not reported.
    let quiet = validate(&us("123 main st", None));
    assert!(quiet.messages.is_empty(), "{:?}", quiet.messages);
}

#[test]
fn us_addresses_are_fully_upper_case() {
    let mut input = us("1 Main St", Some("c/o Ann"));
    input.name = Some("Ann O'Neil".to_owned());
    input.company = Some("Café Ltd.".to_owned());
    let answer = validate(&input);
    for line in &answer.normalized.formatted {
        assert_eq!(*line, line.to_uppercase());
    }
    assert_eq!(answer.normalized.company.as_deref(), Some("CAFÉ LTD"));
}

#[test]
fn validation_is_total_on_odd_input() {
    let odd = [
        "",
        " ",
        "#",
        "# #",
        "APT",
        "PO BOX",
        "RR",
        "1/2",
        "-",
        "---",
        "123",
        "N",
        "ÄÖÜ",
        "\u{0}",
        "1 2 3 4 5 6 7 8 9 10",
        "BOX BOX BOX",
        "APT 4 APT 5",
        "東京都",
    ];
    for text in odd {
        let answer = validate(&us(text, Some(text)));
        assert_eq!(answer.normalized.country.as_deref(), Some("US"));
        let mut input = us(text, None);
        input.country = Some(text.to_owned());
        input.postal_code = Some(text.to_owned());
        input.state = Some(text.to_owned());
        let _ = validate(&input);
    }
}

#[test]
fn public_country_helpers() {
    assert_eq!(country_code("Deutschland"), Some("DE"));
    assert_eq!(country_code("gb"), Some("GB"));
    assert_eq!(country_name("gb"), Some("UNITED KINGDOM"));
    assert_eq!(country_name("XX"), None);
}

//! `POST /v1/mail/validate-address`: the built-in checker, the simulator's answers to Lob's
//! test phrases (test mode) and a verifying vendor (live mode, US addresses, when the letters
//! vendor verifies).
//!
//! The built-in checker knows form, not mailboxes: a valid address is
//! `deliverability: "unknown"`, an invalid one `"undeliverable"` (it cannot be delivered as
//! written), both `verified_by: "local"`.

use serde::Serialize;

use super::PostalHandle;
use super::vendor::VendorError;
use crate::address::postal::{
    self, AddressInput, Components, Message, NormalizedAddress, Severity,
};
use crate::keys::Mode;

/// The answer of `POST /v1/mail/validate-address`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AddressCheck {
    pub valid: bool,
    pub deliverability: String,
    #[schema(value_type = Object)]
    pub normalized: NormalizedAddress,
    #[schema(value_type = Object)]
    pub components: Components,
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Message>,
    /// `local`, `simulator` or the vendor's name (`lob`).
    pub verified_by: &'static str,
}

/// Lob's documented US verification test phrases (`primary_line` with a test key), which the
/// simulator answers the way Lob's test environment does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPhrase {
    CommercialHighrise,
    ResidentialHighrise,
    ResidentialHouse,
    PoBox,
    RuralRoute,
    PuertoRico,
    Military,
    DepartmentOfState,
    Deliverable,
    MissingUnit,
    IncorrectUnit,
    UnnecessaryUnit,
    UndeliverableBlockMatch,
    UndeliverableNoMatch,
}

const PHRASES: [(&str, TestPhrase); 14] = [
    ("commercial highrise", TestPhrase::CommercialHighrise),
    ("residential highrise", TestPhrase::ResidentialHighrise),
    ("residential house", TestPhrase::ResidentialHouse),
    ("po box", TestPhrase::PoBox),
    ("rural route", TestPhrase::RuralRoute),
    ("puerto rico", TestPhrase::PuertoRico),
    ("military", TestPhrase::Military),
    ("department of state", TestPhrase::DepartmentOfState),
    ("deliverable", TestPhrase::Deliverable),
    ("missing unit", TestPhrase::MissingUnit),
    ("incorrect unit", TestPhrase::IncorrectUnit),
    ("unnecessary unit", TestPhrase::UnnecessaryUnit),
    (
        "undeliverable block match",
        TestPhrase::UndeliverableBlockMatch,
    ),
    ("undeliverable no match", TestPhrase::UndeliverableNoMatch),
];

/// The `line1` that makes a simulated piece end `returned_to_sender`.
pub const RETURN_TO_SENDER_PHRASE: &str = "returned to sender";

/// The whole `line1`, case and spacing aside, as one phrase.
fn phrase_key(line1: Option<&str>) -> Option<String> {
    let key = line1?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    (!key.is_empty()).then_some(key)
}

/// The test phrase `line1` is, if any.
pub fn test_phrase(line1: Option<&str>) -> Option<TestPhrase> {
    let key = phrase_key(line1)?;
    PHRASES.iter().find(|(p, _)| *p == key).map(|(_, t)| *t)
}

/// True when `line1` asks the simulator to return the piece to its sender.
pub fn is_return_to_sender(line1: &str) -> bool {
    phrase_key(Some(line1)).as_deref() == Some(RETURN_TO_SENDER_PHRASE)
}

impl TestPhrase {
    /// Lob's deliverability for the phrase.
    pub fn deliverability(self) -> &'static str {
        match self {
            TestPhrase::MissingUnit => "deliverable_missing_unit",
            TestPhrase::IncorrectUnit => "deliverable_incorrect_unit",
            TestPhrase::UnnecessaryUnit => "deliverable_unnecessary_unit",
            TestPhrase::UndeliverableBlockMatch | TestPhrase::UndeliverableNoMatch => {
                "undeliverable"
            }
            _ => "deliverable",
        }
    }

    pub fn undeliverable(self) -> bool {
        self.deliverability() == "undeliverable"
    }

    fn explanation(self) -> &'static str {
        match self {
            TestPhrase::MissingUnit => {
                "The building is deliverable, but the address is missing its unit (apartment, suite) number."
            }
            TestPhrase::IncorrectUnit => {
                "The building is deliverable, but the unit number given may not exist."
            }
            TestPhrase::UnnecessaryUnit => {
                "The address is deliverable; the unit number given is not needed."
            }
            TestPhrase::UndeliverableBlockMatch => {
                "The street block exists, but no mailbox matches this address."
            }
            TestPhrase::UndeliverableNoMatch => "No mailbox matches this address.",
            _ => "The address is deliverable.",
        }
    }
}

/// Checks an address for `mode`.
pub async fn check(postal: &PostalHandle, mode: Mode, input: &AddressInput) -> AddressCheck {
    let local = postal::validate(input);
    let mut result = AddressCheck {
        deliverability: if local.valid {
            "unknown"
        } else {
            "undeliverable"
        }
        .to_string(),
        valid: local.valid,
        normalized: local.normalized,
        components: local.components,
        messages: local.messages,
        verified_by: "local",
    };
    if mode == Mode::Test {
        // Like Lob's test environment, the required fields are checked first.
        if let Some(phrase) = test_phrase(input.line1.as_deref()).filter(|_| result.valid) {
            result.deliverability = phrase.deliverability().to_string();
            result.valid = !phrase.undeliverable();
            result.verified_by = "simulator";
            result.messages.push(Message {
                code: "deliverability",
                field: "line1".into(),
                message: format!("Simulator (Lob test phrase): {}", phrase.explanation()),
                severity: if phrase.undeliverable() {
                    Severity::Error
                } else {
                    Severity::Info
                },
            });
        }
        return result;
    }
    if !result.valid || result.normalized.country.as_deref() != Some("US") {
        return result;
    }
    let Some(vendor) = postal.vendors.verifier(mode) else {
        return result;
    };
    let Some(call) = vendor.verify_address(input) else {
        return result;
    };
    match call.await {
        Ok(v) => {
            result.verified_by = vendor.name();
            result.valid = v.deliverability != "undeliverable";
            let n = &mut result.normalized;
            for (slot, value) in [
                (&mut n.line1, v.line1),
                (&mut n.line2, v.line2),
                (&mut n.city, v.city),
                (&mut n.state, v.state),
                (&mut n.postal_code, v.postal_code),
            ] {
                if let Some(value) = value.filter(|s| !s.is_empty()) {
                    *slot = Some(value);
                }
            }
            if !result.valid {
                result.messages.push(Message {
                    code: "deliverability",
                    field: "line1".into(),
                    message: format!(
                        "{} reports that no mailbox matches this address.",
                        vendor.name()
                    ),
                    severity: Severity::Error,
                });
            }
            result.deliverability = v.deliverability;
        }
        Err(e) => {
            let why = match e {
                VendorError::Temporary(m) | VendorError::Rejected(m) => m,
            };
            tracing::warn!(vendor = vendor.name(), error = %why, "address verification failed; answering with the local check");
            result.messages.push(Message {
                code: "vendor_unavailable",
                field: "line1".into(),
                message: format!(
                    "The vendor could not verify the address ({why}); this answer is the built-in check only."
                ),
                severity: Severity::Warning,
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_whole_line_ignoring_case() {
        assert_eq!(
            test_phrase(Some("  Missing   UNIT ")),
            Some(TestPhrase::MissingUnit)
        );
        assert_eq!(test_phrase(Some("12 missing unit rd")), None);
        assert!(
            test_phrase(Some("undeliverable no match"))
                .unwrap()
                .undeliverable()
        );
        assert_eq!(
            test_phrase(Some("deliverable")).unwrap().deliverability(),
            "deliverable"
        );
        assert!(is_return_to_sender("Returned to Sender"));
        assert_eq!(PHRASES.len(), 14);
    }
}

//! Audiences and contacts: the routes (`routes`), their SQL (`store`), the per-contact copies
//! of an audience send made in the background (`sender`), and the checks a contact goes
//! through before it is stored (here, shared by the API and the CSV import).

pub mod import;
pub mod routes;
pub mod sender;
pub mod store;

use serde_json::{Map, Value, json};

use crate::address::EmailAddress;
use crate::http::ApiError;
use store::{ContactInput, Patch};

/// Most contacts in one `POST /v1/audiences/:id/contacts`.
pub const MAX_CONTACTS_PER_CALL: usize = 10_000;
/// Longest first or last name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Largest `data` object of one contact, as JSON.
pub const MAX_DATA_BYTES: usize = 16 * 1024;

/// Why one contact was refused: the item's field path (`email`, `data`) and a sentence.
#[derive(Debug, Clone)]
pub struct ContactError {
    pub field: &'static str,
    pub message: String,
}

fn name_field(
    field: &'static str,
    v: Option<&Value>,
) -> Result<Patch<Option<String>>, ContactError> {
    match v {
        None => Ok(Patch::Keep),
        Some(Value::Null) => Ok(Patch::Set(None)),
        Some(Value::String(s)) => check_name(field, s).map(Patch::Set),
        Some(_) => Err(ContactError {
            field,
            message: format!("'{field}' must be a string or null."),
        }),
    }
}

/// Checks a first or last name: trimmed, at most [`MAX_NAME_CHARS`], no control characters.
/// An empty name is stored as none.
pub fn check_name(field: &'static str, s: &str) -> Result<Option<String>, ContactError> {
    let s = s.trim();
    if s.chars().count() > MAX_NAME_CHARS {
        return Err(ContactError {
            field,
            message: format!("'{field}' may have at most {MAX_NAME_CHARS} characters."),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(ContactError {
            field,
            message: format!("'{field}' may not contain control characters or line breaks."),
        });
    }
    Ok((!s.is_empty()).then(|| s.to_string()))
}

/// Checks an address for a contact.
pub fn check_email(s: &str) -> Result<EmailAddress, ContactError> {
    EmailAddress::parse(s).map_err(|e| ContactError {
        field: "email",
        message: format!("'email' must be a valid email address: {e}."),
    })
}

/// Checks the `data` object of a contact.
pub fn check_data(data: Map<String, Value>) -> Result<Map<String, Value>, ContactError> {
    let size = Value::Object(data.clone()).to_string().len();
    if size > MAX_DATA_BYTES {
        return Err(ContactError {
            field: "data",
            message: format!(
                "'data' is {size} bytes as JSON; a contact's data may have at most {MAX_DATA_BYTES}."
            ),
        });
    }
    Ok(data)
}

/// Parses one contact object of the API.
pub fn parse_contact(item: Value) -> Result<ContactInput, ContactError> {
    let Value::Object(mut obj) = item else {
        return Err(ContactError {
            field: "email",
            message: "A contact must be an object like {\"email\": \"ana@example.org\"}.".into(),
        });
    };
    if let Some(unknown) = obj.keys().find(|k| {
        !["email", "first_name", "last_name", "data", "unsubscribed"].contains(&k.as_str())
    }) {
        return Err(ContactError {
            field: "email",
            message: format!(
                "Unknown field '{unknown}': a contact has email, first_name, last_name, data and unsubscribed (put your own fields in 'data')."
            ),
        });
    }
    let email = match obj.get("email") {
        Some(Value::String(s)) => check_email(s)?,
        None | Some(Value::Null) => {
            return Err(ContactError {
                field: "email",
                message: "'email' is required.".into(),
            });
        }
        Some(_) => {
            return Err(ContactError {
                field: "email",
                message: "'email' must be a string.".into(),
            });
        }
    };
    let first_name = name_field("first_name", obj.get("first_name"))?;
    let last_name = name_field("last_name", obj.get("last_name"))?;
    let data = match obj.remove("data") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Set(Map::new()),
        Some(Value::Object(m)) => Patch::Set(check_data(m)?),
        Some(_) => {
            return Err(ContactError {
                field: "data",
                message: "'data' must be an object of your own fields, like {\"plan\": \"pro\"}."
                    .into(),
            });
        }
    };
    let unsubscribed = match obj.get("unsubscribed") {
        None => Patch::Keep,
        Some(Value::Bool(b)) => Patch::Set(*b),
        Some(_) => {
            return Err(ContactError {
                field: "unsubscribed",
                message: "'unsubscribed' must be true or false.".into(),
            });
        }
    };
    Ok(ContactInput {
        email,
        first_name,
        last_name,
        data,
        unsubscribed,
    })
}

/// Parses the body of `POST /v1/audiences/:id/contacts`: one contact object, or
/// `{"contacts": [...]}`. All or nothing: any bad item refuses the whole call, with one
/// `details` entry per bad item.
pub fn parse_contacts(body: Value) -> Result<Vec<ContactInput>, ApiError> {
    let (items, list) = match body {
        Value::Object(mut obj) if obj.contains_key("contacts") => {
            if obj.len() > 1 {
                return Err(ApiError::validation(
                    "Send either one contact object or {\"contacts\": [...]}, not both.",
                )
                .with_field("contacts"));
            }
            match obj.remove("contacts") {
                Some(Value::Array(items)) => (items, true),
                _ => {
                    return Err(ApiError::validation(
                        "'contacts' must be an array of contact objects.",
                    )
                    .with_field("contacts"));
                }
            }
        }
        other @ Value::Object(_) => (vec![other], false),
        _ => {
            return Err(ApiError::validation(
                "The body must be a contact object or {\"contacts\": [...]}.",
            ));
        }
    };
    if list && (items.is_empty() || items.len() > MAX_CONTACTS_PER_CALL) {
        return Err(ApiError::validation(format!(
            "'contacts' holds 1 to {MAX_CONTACTS_PER_CALL} contacts per call (got {}); split larger lists into several calls or use `mailsflux contacts import`.",
            items.len()
        ))
        .with_field("contacts"));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut details = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_contact(item) {
            Ok(c) => out.push(c),
            Err(e) => {
                let field = if list {
                    format!("contacts[{index}].{}", e.field)
                } else {
                    e.field.to_string()
                };
                details.push(json!({
                    "index": index,
                    "code": "validation_error",
                    "message": e.message,
                    "field": field,
                }));
            }
        }
    }
    if details.is_empty() {
        return Ok(out);
    }
    if !list {
        let d = &details[0];
        return Err(
            ApiError::validation(d["message"].as_str().unwrap_or_default())
                .with_field(d["field"].as_str().unwrap_or_default())
                .with_details(details),
        );
    }
    Err(ApiError::validation(format!(
        "{} contact(s) are invalid, so nothing was stored. See 'details' (one entry per bad item, with its index).",
        details.len()
    ))
    .with_details(details))
}

//! `mailsflux contacts import --audience ID FILE.csv`: loads a CSV file into an audience
//! through the same upsert as the API, in chunks (one write each), reporting progress and
//! every row it skipped with the reason.
//!
//! The header row names the columns: `email` (also `email_address`, `e-mail`),
//! `first_name` (`firstname`, `first name`), `last_name` (`lastname`, `last name`); every
//! other column goes into the contact's `data` (as strings; empty cells left out). Header
//! names ignore case, and spaces or hyphens count as underscores. An empty cell never
//! erases a stored value.

use std::io::Read;

use rusqlite::OptionalExtension;
use serde_json::{Map, Value};

use super::store::{self, ContactInput, Patch};
use super::{check_data, check_email, check_name};
use crate::keys::Mode;
use crate::store::{Db, StoreError};

/// Contacts per write.
pub const IMPORT_CHUNK: usize = 5_000;

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    /// `(line number in the file, why)`.
    pub skipped: Vec<(u64, String)>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("no audience with id '{0}' exists")]
    NoAudience(String),
    #[error("the header row has no email column (expected one named 'email')")]
    NoEmailColumn,
    #[error("cannot read the CSV file: {0}")]
    Csv(#[from] csv::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq)]
enum Column {
    Email,
    FirstName,
    LastName,
    Data(String),
}

fn column(header: &str) -> Column {
    let norm: String = header
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect();
    match norm.as_str() {
        "email" | "email_address" | "e_mail" => Column::Email,
        "first_name" | "firstname" => Column::FirstName,
        "last_name" | "lastname" => Column::LastName,
        _ => Column::Data(header.trim().to_string()),
    }
}

/// One row as a contact, or why it is skipped.
fn parse_row(columns: &[Column], record: &csv::StringRecord) -> Result<ContactInput, String> {
    let mut email = None;
    let mut first_name = Patch::Keep;
    let mut last_name = Patch::Keep;
    let mut data = Map::new();
    let has_data = columns.iter().any(|c| matches!(c, Column::Data(_)));
    for (col, value) in columns.iter().zip(record.iter()) {
        let value = value.trim();
        match col {
            Column::Email => email = Some(value),
            Column::FirstName if !value.is_empty() => {
                first_name = Patch::Set(check_name("first_name", value).map_err(|e| e.message)?)
            }
            Column::LastName if !value.is_empty() => {
                last_name = Patch::Set(check_name("last_name", value).map_err(|e| e.message)?)
            }
            Column::Data(name) if !value.is_empty() => {
                data.insert(name.clone(), Value::String(value.to_string()));
            }
            _ => {}
        }
    }
    let email = match email {
        None | Some("") => return Err("the email cell is empty".into()),
        Some(e) => check_email(e).map_err(|e| e.message)?,
    };
    let data = if has_data && !data.is_empty() {
        Patch::Set(check_data(data).map_err(|e| e.message)?)
    } else {
        Patch::Keep
    };
    Ok(ContactInput {
        email,
        first_name,
        last_name,
        data,
        unsubscribed: Patch::Keep,
    })
}

/// Imports `input` into the audience. `progress` is called with the bytes read so far.
/// Runs on a blocking thread (it waits for each write).
pub fn import(
    db: &Db,
    audience_id: &str,
    input: impl Read,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, ImportError> {
    let mode: Option<String> = db
        .read_blocking()?
        .query_row(
            "SELECT mode FROM audiences WHERE id = ?1",
            [audience_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(StoreError::from)?;
    let mode = mode
        .as_deref()
        .and_then(Mode::parse)
        .ok_or_else(|| ImportError::NoAudience(audience_id.to_string()))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let columns: Vec<Column> = reader.headers()?.iter().map(column).collect();
    if !columns.contains(&Column::Email) {
        return Err(ImportError::NoEmailColumn);
    }
    let mut report = ImportReport::default();
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                report.rows += 1;
                match parse_row(&columns, &record) {
                    Ok(c) => chunk.push(c),
                    Err(why) => report.skipped.push((line, why)),
                }
            }
            Err(e) if e.is_io_error() => return Err(e.into()),
            Err(e) => {
                report.rows += 1;
                report.skipped.push((line, e.to_string()));
            }
        }
        if chunk.len() >= IMPORT_CHUNK {
            write_chunk(db, mode, audience_id, &mut chunk, &mut report)?;
            progress(reader.position().byte());
        }
    }
    write_chunk(db, mode, audience_id, &mut chunk, &mut report)?;
    progress(reader.position().byte());
    Ok(report)
}

fn write_chunk(
    db: &Db,
    mode: Mode,
    audience_id: &str,
    chunk: &mut Vec<ContactInput>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    if chunk.is_empty() {
        return Ok(());
    }
    let contacts = std::mem::take(chunk);
    let id = audience_id.to_string();
    let outcome = db.write_blocking(move |c| store::upsert_contacts(c, mode, &id, &contacts))?;
    let outcome = outcome.ok_or_else(|| ImportError::NoAudience(audience_id.to_string()))?;
    report.created += outcome.created;
    report.updated += outcome.updated;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_rows() {
        let cols: Vec<Column> = ["E-Mail", "First Name", "lastname", "Plan"]
            .into_iter()
            .map(column)
            .collect();
        assert_eq!(cols[0], Column::Email);
        assert_eq!(cols[1], Column::FirstName);
        assert_eq!(cols[2], Column::LastName);
        assert_eq!(cols[3], Column::Data("Plan".into()));
        let row = csv::StringRecord::from(vec!["ana@example.org", "Ana", "", "pro"]);
        let c = parse_row(&cols, &row).unwrap();
        assert_eq!(c.first_name, Patch::Set(Some("Ana".into())));
        assert_eq!(c.last_name, Patch::Keep);
        assert!(matches!(c.data, Patch::Set(ref m) if m["Plan"] == "pro"));
        let bad = csv::StringRecord::from(vec!["not-an-address", "A"]);
        assert!(parse_row(&cols, &bad).unwrap_err().contains("valid email"));
        let empty = csv::StringRecord::from(vec!["", "A"]);
        assert_eq!(
            parse_row(&cols, &empty).unwrap_err(),
            "the email cell is empty"
        );
    }
}

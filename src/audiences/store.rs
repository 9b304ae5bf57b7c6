//! SQL of audiences and contacts: create/list/delete audiences, the contact upsert (by email,
//! ignoring case, many at once in the caller's transaction), listing and deleting contacts,
//! and what an audience send reads (eligible contacts, in id order).

use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::address::EmailAddress;
use crate::keys::Mode;
use crate::store::{StoreError, ids, time};

/// An audience as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AudienceView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub contact_count: i64,
    pub created_at: String,
}

/// A contact as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactView {
    pub id: String,
    pub object: &'static str,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    pub unsubscribed: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A field of an upsert: absent keeps what is stored, present (even `null`) replaces it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Set(T),
}

impl<T> Patch<T> {
    fn is_set(&self) -> bool {
        matches!(self, Patch::Set(_))
    }
    fn value(&self) -> Option<&T> {
        match self {
            Patch::Set(v) => Some(v),
            Patch::Keep => None,
        }
    }
}

/// One checked contact of an upsert.
#[derive(Debug, Clone)]
pub struct ContactInput {
    pub email: EmailAddress,
    pub first_name: Patch<Option<String>>,
    pub last_name: Patch<Option<String>>,
    pub data: Patch<Map<String, Value>>,
    pub unsubscribed: Patch<bool>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct UpsertOutcome {
    pub created: u64,
    pub updated: u64,
    pub contact_count: i64,
}

const AUDIENCE_COLUMNS: &str = "a.id, a.name, a.created_at,
    (SELECT count(*) FROM contacts c WHERE c.audience_id = a.id)";

fn audience_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AudienceView> {
    Ok(AudienceView {
        id: r.get(0)?,
        object: "audience",
        name: r.get(1)?,
        created_at: time::format(r.get(2)?),
        contact_count: r.get(3)?,
    })
}

pub fn create_audience(
    conn: &Connection,
    mode: Mode,
    name: &str,
) -> Result<AudienceView, StoreError> {
    let id = ids::new_id("aud");
    let now = time::now();
    conn.prepare_cached(
        "INSERT INTO audiences (id, mode, name, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, mode.as_str(), name, now])?;
    Ok(AudienceView {
        id,
        object: "audience",
        name: name.to_string(),
        contact_count: 0,
        created_at: time::format(now),
    })
}

pub fn get_audience(
    conn: &Connection,
    mode: Mode,
    id: &str,
) -> Result<Option<AudienceView>, StoreError> {
    let sql = format!("SELECT {AUDIENCE_COLUMNS} FROM audiences a WHERE a.id = ?1 AND a.mode = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![id, mode.as_str()], audience_from_row)
        .optional()?)
}

fn audience_exists(conn: &Connection, mode: Mode, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM audiences WHERE id = ?1 AND mode = ?2")?
        .query_row(params![id, mode.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// A page of audiences, newest first (`limit + 1` rows, for `has_more`).
pub fn list_audiences(
    conn: &Connection,
    mode: Mode,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<AudienceView>, StoreError> {
    let sql = format!(
        "SELECT {AUDIENCE_COLUMNS} FROM audiences a WHERE a.mode = ?1 AND (?2 IS NULL OR a.id < ?2)
         ORDER BY a.id DESC LIMIT ?3"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(
            params![mode.as_str(), before_id, (limit + 1) as i64],
            audience_from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes an audience and its contacts. Emails already sent to it keep their recipients.
pub fn delete_audience(conn: &Connection, mode: Mode, id: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM audiences WHERE id = ?1 AND mode = ?2",
        params![id, mode.as_str()],
    )? == 1)
}

/// Inserts or updates `contacts` (by email, ignoring case) in order: a later item with the
/// same email updates the earlier one. `None` when the audience does not exist.
pub fn upsert_contacts(
    conn: &Connection,
    mode: Mode,
    audience_id: &str,
    contacts: &[ContactInput],
) -> Result<Option<UpsertOutcome>, StoreError> {
    if !audience_exists(conn, mode, audience_id)? {
        return Ok(None);
    }
    let now = time::now();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO contacts (id, audience_id, mode, email, email_lower, first_name, last_name,
                               data_json, unsubscribed, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, coalesce(?8, '{}'), coalesce(?9, 0), ?10, ?10)
         ON CONFLICT (audience_id, email_lower) DO UPDATE SET
            email = excluded.email,
            first_name = CASE WHEN ?11 THEN excluded.first_name ELSE first_name END,
            last_name = CASE WHEN ?12 THEN excluded.last_name ELSE last_name END,
            data_json = CASE WHEN ?13 THEN excluded.data_json ELSE data_json END,
            unsubscribed = CASE WHEN ?14 THEN excluded.unsubscribed ELSE unsubscribed END,
            updated_at = excluded.updated_at
         RETURNING id",
    )?;
    let (mut created, mut updated) = (0u64, 0u64);
    for c in contacts {
        // The process-wide generator: ids sort in creation order also across calls made in
        // the same millisecond (the list pages by id).
        let id = ids::new_id("con");
        let data = c.data.value().map(|d| Value::Object(d.clone()).to_string());
        let returned: String = stmt.query_row(
            params![
                id,
                audience_id,
                mode.as_str(),
                c.email.to_string(),
                c.email.normalized(),
                c.first_name.value().cloned().flatten(),
                c.last_name.value().cloned().flatten(),
                data,
                c.unsubscribed.value().copied(),
                now,
                c.first_name.is_set(),
                c.last_name.is_set(),
                c.data.is_set(),
                c.unsubscribed.is_set(),
            ],
            |r| r.get(0),
        )?;
        if returned == id {
            created += 1;
        } else {
            updated += 1;
        }
    }
    let contact_count = count_contacts(conn, audience_id)?;
    Ok(Some(UpsertOutcome {
        created,
        updated,
        contact_count,
    }))
}

fn count_contacts(conn: &Connection, audience_id: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM contacts WHERE audience_id = ?1")?
        .query_row([audience_id], |r| r.get(0))?)
}

const CONTACT_COLUMNS: &str =
    "id, email, first_name, last_name, data_json, unsubscribed, created_at, updated_at";

fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContactView> {
    let data: String = r.get(4)?;
    Ok(ContactView {
        id: r.get(0)?,
        object: "contact",
        email: r.get(1)?,
        first_name: r.get(2)?,
        last_name: r.get(3)?,
        data: serde_json::from_str(&data).unwrap_or_default(),
        unsubscribed: r.get(5)?,
        created_at: time::format(r.get(6)?),
        updated_at: time::format(r.get(7)?),
    })
}

/// A page of an audience's contacts, newest first; `None` when the audience does not exist.
pub fn list_contacts(
    conn: &Connection,
    mode: Mode,
    audience_id: &str,
    email_lower: Option<&str>,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Option<Vec<ContactView>>, StoreError> {
    if !audience_exists(conn, mode, audience_id)? {
        return Ok(None);
    }
    let mut sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE audience_id = ?");
    let mut args: Vec<&dyn ToSql> = vec![&audience_id];
    if let Some(e) = &email_lower {
        sql.push_str(" AND email_lower = ?");
        args.push(e);
    }
    if let Some(b) = &before_id {
        sql.push_str(" AND id < ?");
        args.push(b);
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    let limit = (limit + 1) as i64;
    args.push(&limit);
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(args.as_slice(), contact_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(rows))
}

/// What deleting a contact found.
pub enum DeleteContact {
    Deleted,
    NoAudience,
    NoContact,
}

pub fn delete_contact(
    conn: &Connection,
    mode: Mode,
    audience_id: &str,
    email_lower: &str,
) -> Result<DeleteContact, StoreError> {
    if !audience_exists(conn, mode, audience_id)? {
        return Ok(DeleteContact::NoAudience);
    }
    let n = conn.execute(
        "DELETE FROM contacts WHERE audience_id = ?1 AND email_lower = ?2",
        params![audience_id, email_lower],
    )?;
    Ok(if n > 0 {
        DeleteContact::Deleted
    } else {
        DeleteContact::NoContact
    })
}

/// Marks every contact of `mode` with this address unsubscribed, in all audiences (an
/// `unsubscribe` suppression blocks marketing to the address everywhere anyway, so the
/// contacts say the same). Returns how many changed.
pub fn mark_unsubscribed(
    conn: &Connection,
    mode: Mode,
    email_lower: &str,
) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE contacts SET unsubscribed = 1, updated_at = ?3
             WHERE mode = ?1 AND email_lower = ?2 AND unsubscribed = 0",
        )?
        .execute(params![mode.as_str(), email_lower, time::now()])?)
}

/// The contacts an audience send goes to: subscribed and without any suppression (every
/// reason blocks marketing).
const ELIGIBLE: &str = "c.audience_id = ?1 AND c.unsubscribed = 0
    AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.mode = c.mode AND s.email_lower = c.email_lower)";

/// How many contacts an audience send would reach now, and the newest contact id (the end
/// of the send's walk). `None` when the audience does not exist.
pub fn eligible(
    conn: &Connection,
    mode: Mode,
    audience_id: &str,
) -> Result<Option<(i64, i64, Option<String>)>, StoreError> {
    if !audience_exists(conn, mode, audience_id)? {
        return Ok(None);
    }
    let sql = format!("SELECT count(*), max(c.id) FROM contacts c WHERE {ELIGIBLE}");
    let (n, last): (i64, Option<String>) = conn
        .prepare_cached(&sql)?
        .query_row([audience_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let total = count_contacts(conn, audience_id)?;
    Ok(Some((n, total, last)))
}

/// A contact as an audience send renders it.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub data: Map<String, Value>,
}

impl Recipient {
    /// The `contact` variable of templates: email, first_name, last_name, data. A missing
    /// name is an empty string, so `{{ contact.first_name or "there" }}` works and
    /// `{{ contact.first_name }}` never fails; a missing `data` field is undefined.
    pub fn variable(&self) -> Value {
        serde_json::json!({
            "email": self.email,
            "first_name": self.first_name.as_deref().unwrap_or(""),
            "last_name": self.last_name.as_deref().unwrap_or(""),
            "data": self.data,
        })
    }
}

/// The next eligible contacts after `cursor` (ids in ascending order) up to `last_id`.
pub fn eligible_after(
    conn: &Connection,
    audience_id: &str,
    cursor: &str,
    last_id: &str,
    limit: usize,
) -> Result<Vec<Recipient>, StoreError> {
    let sql = format!(
        "SELECT c.id, c.email, c.first_name, c.last_name, c.data_json FROM contacts c
         WHERE {ELIGIBLE} AND c.id > ?2 AND c.id <= ?3 ORDER BY c.id LIMIT ?4"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![audience_id, cursor, last_id, limit as i64], |r| {
            let data: String = r.get(4)?;
            Ok(Recipient {
                id: r.get(0)?,
                email: r.get(1)?,
                first_name: r.get(2)?,
                last_name: r.get(3)?,
                data: serde_json::from_str(&data).unwrap_or_default(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

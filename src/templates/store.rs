//! SQL of the templates capability: saving (create and update share one path, so every rule
//! about names and layouts is checked in one place, inside the writer's transaction),
//! reading by id or name, listing, deleting, and loading a template with its layout for a
//! render. Every query filters on `mode`.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::name::{TemplateName, TemplateRef};
use super::render::{LAYOUT_CONTENT_VARIABLE, Part, TemplateParts};
use super::{CheckedPart, SERVER_VARIABLES};
use crate::keys::Mode;
use crate::store::{StoreError, ids, time};

/// The variables each part reads, as stored in `variables_json`. Kept per part so an update
/// of one part needs no re-parse of the others, and so a layout's `content` slot can be
/// checked per part.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartVariables {
    #[serde(default)]
    pub subject: Vec<String>,
    #[serde(default)]
    pub html: Vec<String>,
    #[serde(default)]
    pub text: Vec<String>,
}

/// A stored template.
#[derive(Debug, Clone)]
pub struct TemplateRecord {
    pub id: String,
    pub name: String,
    pub parts: TemplateParts,
    pub layout_id: Option<String>,
    pub variables: PartVariables,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TemplateRecord {
    /// Whether this template's html (text) can wrap another template's html (text).
    fn wraps(&self, part: Part) -> bool {
        let vars = match part {
            Part::Html | Part::LayoutHtml => &self.variables.html,
            _ => &self.variables.text,
        };
        vars.iter().any(|v| v == LAYOUT_CONTENT_VARIABLE)
    }
}

/// The template object of the API.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateView {
    pub id: String,
    pub object: &'static str,
    pub name: String,
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
    /// What a sender supplies: the variables of the template and of the layout parts that
    /// wrap it, sorted, without the ones the server fills ([`SERVER_VARIABLES`]).
    pub variables: Vec<String>,
    /// The id of the layout template, if any.
    pub layout: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl TemplateView {
    fn new(t: &TemplateRecord, layout: Option<&PartVariables>) -> TemplateView {
        let mut vars: BTreeSet<&str> = BTreeSet::new();
        let own = &t.variables;
        vars.extend(
            own.subject
                .iter()
                .chain(&own.html)
                .chain(&own.text)
                .map(String::as_str),
        );
        if let Some(l) = layout {
            if t.parts.html.is_some() {
                vars.extend(l.html.iter().map(String::as_str));
            }
            if t.parts.text.is_some() {
                vars.extend(l.text.iter().map(String::as_str));
            }
        }
        TemplateView {
            id: t.id.clone(),
            object: "template",
            name: t.name.clone(),
            subject: t.parts.subject.clone(),
            html: t.parts.html.clone(),
            text: t.parts.text.clone(),
            variables: vars
                .into_iter()
                .filter(|v| !SERVER_VARIABLES.contains(v))
                .map(str::to_owned)
                .collect(),
            layout: t.layout_id.clone(),
            created_at: time::format(t.created_at),
            updated_at: time::format(t.updated_at),
        }
    }
}

/// One field of an update: leave it, set it, or remove it (JSON `null`).
#[derive(Debug, Clone, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

/// What a create or an update asks for, already checked where no database is needed
/// (name rules, part syntax).
#[derive(Debug, Clone, Default)]
pub struct TemplateChanges {
    pub name: Option<TemplateName>,
    pub subject: Change<CheckedPart>,
    pub html: Change<CheckedPart>,
    pub text: Change<CheckedPart>,
    pub layout: Change<TemplateRef>,
}

/// Why a save or delete was refused. Routes map each to its API error.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("the template does not exist")]
    NotFound,
    #[error("a create needs a name")]
    NameRequired,
    #[error("the name is taken")]
    NameTaken(String),
    #[error("the template would have neither html nor text")]
    NoBody,
    #[error("the layout does not exist")]
    LayoutNotFound(String),
    #[error("a template cannot be its own layout")]
    LayoutIsSelf,
    #[error("the layout has a layout itself")]
    LayoutHasLayout { layout: String, its_layout: String },
    #[error("the template is a layout of others, so it cannot have a layout")]
    IsALayout { used_by: Vec<String> },
    #[error("the layout has no content slot for a part of the template")]
    LayoutWithoutContent { layout: String, part: Part },
    #[error("the change removes the content slot that templates using this layout need")]
    BreaksDependents { part: Part, used_by: Vec<String> },
    #[error("the template is a layout of others")]
    InUse { used_by: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for SaveError {
    fn from(e: rusqlite::Error) -> Self {
        SaveError::Store(e.into())
    }
}

/// A saved template and the ids of the templates that use it as their layout (their
/// compiled forms include it, so the caller drops them from the cache too).
#[derive(Debug)]
pub struct Saved {
    pub view: TemplateView,
    pub dependents: Vec<String>,
}

const COLUMNS: &str =
    "id, name, subject, html, text, layout_id, variables_json, created_at, updated_at";

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TemplateRecord> {
    let vars: String = r.get(6)?;
    Ok(TemplateRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        parts: TemplateParts {
            subject: r.get(2)?,
            html: r.get(3)?,
            text: r.get(4)?,
        },
        layout_id: r.get(5)?,
        variables: serde_json::from_str(&vars).unwrap_or_default(),
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// The template of `mode` with this id or name (names match ignoring ASCII case).
pub fn find(
    conn: &Connection,
    mode: Mode,
    r: &TemplateRef,
) -> Result<Option<TemplateRecord>, StoreError> {
    let (column, value) = match r {
        TemplateRef::Id(id) => ("id", id),
        TemplateRef::Name(name) => ("name", name),
    };
    let sql = format!("SELECT {COLUMNS} FROM templates WHERE {column} = ?1 AND mode = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![value, mode.as_str()], record_from_row)
        .optional()?)
}

fn find_by_id(
    conn: &Connection,
    mode: Mode,
    id: &str,
) -> Result<Option<TemplateRecord>, StoreError> {
    find(conn, mode, &TemplateRef::Id(id.to_owned()))
}

/// A template and its layout, for a render.
pub fn load_with_layout(
    conn: &Connection,
    mode: Mode,
    r: &TemplateRef,
) -> Result<Option<(TemplateRecord, Option<TemplateRecord>)>, StoreError> {
    let Some(t) = find(conn, mode, r)? else {
        return Ok(None);
    };
    let layout = match &t.layout_id {
        Some(id) => find_by_id(conn, mode, id)?,
        None => None,
    };
    Ok(Some((t, layout)))
}

/// The view of a record: reads its layout's variables.
fn view(conn: &Connection, mode: Mode, t: &TemplateRecord) -> Result<TemplateView, StoreError> {
    let layout = match &t.layout_id {
        Some(id) => find_by_id(conn, mode, id)?.map(|l| l.variables),
        None => None,
    };
    Ok(TemplateView::new(t, layout.as_ref()))
}

/// One template as the API shows it.
pub fn get(
    conn: &Connection,
    mode: Mode,
    r: &TemplateRef,
) -> Result<Option<TemplateView>, StoreError> {
    match find(conn, mode, r)? {
        Some(t) => Ok(Some(view(conn, mode, &t)?)),
        None => Ok(None),
    }
}

/// A page of templates, newest first: `limit + 1` rows so the caller knows `has_more`.
pub fn list(
    conn: &Connection,
    mode: Mode,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<TemplateView>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.id, t.name, t.subject, t.html, t.text, t.layout_id, t.variables_json,
                t.created_at, t.updated_at, l.variables_json
         FROM templates t LEFT JOIN templates l ON l.id = t.layout_id
         WHERE t.mode = ?1 AND (?2 IS NULL OR t.id < ?2)
         ORDER BY t.id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![mode.as_str(), before_id, (limit + 1) as i64], |r| {
        let t = record_from_row(r)?;
        let layout: Option<String> = r.get(9)?;
        Ok((t, layout))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (t, layout) = row?;
        let layout: Option<PartVariables> =
            layout.map(|l| serde_json::from_str(&l).unwrap_or_default());
        out.push(TemplateView::new(&t, layout.as_ref()));
    }
    Ok(out)
}

/// A template that uses another as its layout.
#[derive(Debug)]
struct Dependent {
    id: String,
    name: String,
    has_html: bool,
    has_text: bool,
}

impl Dependent {
    fn has(&self, part: Part) -> bool {
        match part {
            Part::Html | Part::LayoutHtml => self.has_html,
            _ => self.has_text,
        }
    }
}

/// Whether `parts` has the html (text) part.
fn has_part(parts: &TemplateParts, part: Part) -> bool {
    match part {
        Part::Html | Part::LayoutHtml => parts.html.is_some(),
        Part::Text | Part::LayoutText => parts.text.is_some(),
        Part::Subject => parts.subject.is_some(),
    }
}

/// The templates that use `layout_id` as their layout, by name.
fn dependents(conn: &Connection, layout_id: &str) -> Result<Vec<Dependent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, html IS NOT NULL, text IS NOT NULL FROM templates
         WHERE layout_id = ?1 ORDER BY name",
    )?;
    let rows = stmt
        .query_map([layout_id], |r| {
            Ok(Dependent {
                id: r.get(0)?,
                name: r.get(1)?,
                has_html: r.get(2)?,
                has_text: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn apply_part(change: &Change<CheckedPart>, source: &mut Option<String>, vars: &mut Vec<String>) {
    match change {
        Change::Keep => {}
        Change::Set(p) => {
            *source = Some(p.source.clone());
            vars.clone_from(&p.variables);
        }
        Change::Clear => {
            *source = None;
            vars.clear();
        }
    }
}

/// Creates (`target` None) or updates a template, in the caller's transaction. Checks, in
/// order: the template exists; it keeps an html or text part; the name is free in this
/// mode; the layout exists in this mode, is not the template itself, has no layout itself
/// (layouts are one level deep, which rules out cycles), and says `{{ content }}` in each
/// part the template has; a template that is the layout of others gets no layout and keeps
/// `{{ content }}` where they need it.
pub fn save(
    conn: &Connection,
    mode: Mode,
    target: Option<&TemplateRef>,
    changes: &TemplateChanges,
) -> Result<Saved, SaveError> {
    let now = time::now();
    let existing = match target {
        Some(r) => Some(find(conn, mode, r)?.ok_or(SaveError::NotFound)?),
        None => None,
    };
    let mut t = match existing {
        Some(t) => t,
        None => TemplateRecord {
            id: ids::new_id("tpl"),
            name: changes
                .name
                .as_ref()
                .ok_or(SaveError::NameRequired)?
                .to_string(),
            parts: TemplateParts::default(),
            layout_id: None,
            variables: PartVariables::default(),
            created_at: now,
            updated_at: now,
        },
    };
    let is_new = target.is_none();
    if let Some(name) = &changes.name {
        t.name = name.to_string();
    }
    apply_part(
        &changes.subject,
        &mut t.parts.subject,
        &mut t.variables.subject,
    );
    apply_part(&changes.html, &mut t.parts.html, &mut t.variables.html);
    apply_part(&changes.text, &mut t.parts.text, &mut t.variables.text);
    t.updated_at = now;
    if t.parts.html.is_none() && t.parts.text.is_none() {
        return Err(SaveError::NoBody);
    }

    let taken: Option<String> = conn
        .prepare_cached("SELECT name FROM templates WHERE mode = ?1 AND name = ?2 AND id != ?3")?
        .query_row(params![mode.as_str(), t.name, t.id], |r| r.get(0))
        .optional()?;
    if let Some(other) = taken {
        return Err(SaveError::NameTaken(other));
    }

    let deps = if is_new {
        Vec::new()
    } else {
        dependents(conn, &t.id)?
    };
    let layout = match &changes.layout {
        Change::Keep => match &t.layout_id {
            Some(id) => find_by_id(conn, mode, id)?,
            None => None,
        },
        Change::Clear => None,
        Change::Set(r) => {
            let l = find(conn, mode, r)?.ok_or_else(|| SaveError::LayoutNotFound(r.to_string()))?;
            if l.id == t.id {
                return Err(SaveError::LayoutIsSelf);
            }
            if let Some(its) = &l.layout_id {
                let its_layout = find_by_id(conn, mode, its)?
                    .map(|x| x.name)
                    .unwrap_or_else(|| its.clone());
                return Err(SaveError::LayoutHasLayout {
                    layout: l.name,
                    its_layout,
                });
            }
            if !deps.is_empty() {
                return Err(SaveError::IsALayout {
                    used_by: deps.into_iter().map(|d| d.name).collect(),
                });
            }
            Some(l)
        }
    };
    t.layout_id = layout.as_ref().map(|l| l.id.clone());
    if let Some(l) = &layout {
        for part in [Part::LayoutHtml, Part::LayoutText] {
            if has_part(&t.parts, part) && has_part(&l.parts, part) && !l.wraps(part) {
                return Err(SaveError::LayoutWithoutContent {
                    layout: l.name.clone(),
                    part,
                });
            }
        }
    }
    for part in [Part::Html, Part::Text] {
        if !has_part(&t.parts, part) || t.wraps(part) {
            continue;
        }
        let broken: Vec<String> = deps
            .iter()
            .filter(|d| d.has(part))
            .map(|d| d.name.clone())
            .collect();
        if !broken.is_empty() {
            return Err(SaveError::BreaksDependents {
                part,
                used_by: broken,
            });
        }
    }

    let vars_json = serde_json::to_string(&t.variables).unwrap_or_else(|_| "{}".into());
    let result = if is_new {
        conn.prepare_cached(
            "INSERT INTO templates (id, mode, name, subject, html, text, layout_id,
                                    variables_json, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            t.id,
            mode.as_str(),
            t.name,
            t.parts.subject,
            t.parts.html,
            t.parts.text,
            t.layout_id,
            vars_json,
            t.created_at,
            t.updated_at
        ])
    } else {
        conn.prepare_cached(
            "UPDATE templates SET name = ?3, subject = ?4, html = ?5, text = ?6, layout_id = ?7,
                                  variables_json = ?8, updated_at = ?9
             WHERE id = ?1 AND mode = ?2",
        )?
        .execute(params![
            t.id,
            mode.as_str(),
            t.name,
            t.parts.subject,
            t.parts.html,
            t.parts.text,
            t.layout_id,
            vars_json,
            t.updated_at
        ])
    };
    match result {
        Ok(_) => {}
        // The check above ran in this transaction; this is only a safety net.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Err(SaveError::NameTaken(t.name));
        }
        Err(e) => return Err(e.into()),
    }
    let view = TemplateView::new(&t, layout.as_ref().map(|l| &l.variables));
    Ok(Saved {
        view,
        dependents: deps.into_iter().map(|d| d.id).collect(),
    })
}

/// Deletes a template unless other templates use it as their layout. Returns its id.
pub fn delete(conn: &Connection, mode: Mode, r: &TemplateRef) -> Result<String, SaveError> {
    let t = find(conn, mode, r)?.ok_or(SaveError::NotFound)?;
    let deps = dependents(conn, &t.id)?;
    if !deps.is_empty() {
        return Err(SaveError::InUse {
            used_by: deps.into_iter().map(|d| d.name).collect(),
        });
    }
    conn.prepare_cached("DELETE FROM templates WHERE id = ?1 AND mode = ?2")?
        .execute(params![t.id, mode.as_str()])?;
    Ok(t.id)
}

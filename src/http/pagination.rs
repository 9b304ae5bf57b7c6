//! Cursor pagination: `limit` (1–100, default 20) and `cursor` (the previous page's
//! `next_cursor`). Lists are newest first and page by id: ids are ULIDs, so "older than the
//! last id seen" is stable while new rows arrive.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use super::error::ApiError;

/// A checked page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: usize,
    /// Return items with an id strictly below this one.
    pub before_id: Option<String>,
}

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

impl PageRequest {
    /// Parses the raw `limit` and `cursor` query values.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::validation(format!(
                        "'limit' must be a whole number from 1 to {MAX_LIMIT} (got '{raw}')."
                    ))
                    .with_field("limit"));
                }
            },
        };
        let before_id = match cursor {
            None => None,
            Some("") => None,
            Some(raw) => Some(decode_cursor(raw).ok_or_else(|| {
                ApiError::validation(
                    "'cursor' is not a cursor this server gave out; pass the 'next_cursor' of the previous page.",
                )
                .with_field("cursor")
            })?),
        };
        Ok(PageRequest { limit, before_id })
    }
}

pub fn encode_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(raw: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    let (prefix, ulid) = id.split_once('_')?;
    (!prefix.is_empty()
        && prefix.chars().all(|c| c.is_ascii_lowercase())
        && ulid.len() == 26
        && ulid::Ulid::from_string(ulid).is_ok())
    .then_some(id)
}

/// The list envelope: `{"object":"list","data":[...],"has_more":bool,"next_cursor":...}`.
#[derive(Debug, Serialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first; `id_of` names each
    /// item's id for the cursor.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, id_of: impl Fn(&T) -> &str) -> List<T> {
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if has_more {
            rows.last().map(|last| encode_cursor(id_of(last)))
        } else {
            None
        };
        List {
            object: "list",
            data: rows,
            has_more,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_cursors() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 20);
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("101"), None).is_err());
        assert!(PageRequest::parse(Some("x"), None).is_err());
        assert!(PageRequest::parse(None, Some("garbage!")).is_err());
        let id = crate::store::ids::new_id("msg");
        let page = PageRequest::parse(Some("5"), Some(&encode_cursor(&id))).unwrap();
        assert_eq!(page.before_id.as_deref(), Some(id.as_str()));
    }
}

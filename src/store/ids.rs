//! Identifiers: a type prefix and a ULID (time-sortable), e.g. `msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF`.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// One generator for the process, so ids made in the same millisecond still sort in the
/// order they were made (the list routes page by id).
static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

/// A new id with the given prefix (`msg`, `evt`, `key`, ...).
pub fn new_id(prefix: &str) -> String {
    let ulid = {
        let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        let generator = guard.get_or_insert_with(Generator::new);
        // The generator only fails when 2^80 ids were made in one millisecond.
        generator.generate().unwrap_or_else(|_| Ulid::new())
    };
    // Written into one allocation of the right size: the writer thread makes an event id
    // per recorded event, and `format!` spent more time than the generator.
    let mut encoded = [0u8; ulid::ULID_LEN];
    let mut id = String::with_capacity(prefix.len() + 1 + ulid::ULID_LEN);
    id.push_str(prefix);
    id.push('_');
    id.push_str(ulid.array_to_str(&mut encoded));
    id
}

/// The smallest id with `prefix` that can have been made at or after `unix_seconds`, for
/// reading a time window as a range of ids. A record's id is made just before its time
/// is read, so the bound starts a second earlier: an id made at the end of one second for
/// a record stamped with the next is still in the range. (When the clock steps back, the
/// generator keeps the later time, which only makes ids larger.)
pub fn lower_bound(prefix: &str, unix_seconds: i64) -> String {
    let ms = (unix_seconds.saturating_sub(1).max(0) as u64).saturating_mul(1000);
    format!("{prefix}_{}", Ulid::from_parts(ms, 0))
}

/// True when `id` is `<prefix>_` followed by a well-formed ULID.
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|u| u.len() == 26 && Ulid::from_string(u).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("msg")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(is_id(&ids[0], "msg"));
        assert!(!is_id(&ids[0], "evt"));
        assert!(!is_id("msg_nope", "msg"));
    }

    #[test]
    fn lower_bound_is_below_every_id_made_since() {
        let now = crate::store::time::now();
        let bound = lower_bound("evt", now);
        let id = new_id("evt");
        assert!(bound < id, "{bound} < {id}");
        assert!(is_id(&bound, "evt"));
        // An id of two seconds before is outside the window.
        let old = format!(
            "evt_{}",
            Ulid::from_parts(((now - 2) * 1000) as u64, u128::MAX >> 48)
        );
        assert!(old < bound, "{old} < {bound}");
        assert_eq!(
            lower_bound("evt", -5),
            format!("evt_{}", Ulid::from_parts(0, 0))
        );
    }
}

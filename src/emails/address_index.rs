//! SQL of the `to` filter's address index: sorted runs, written by the indexer and merged
//! in the background.
//!
//! An index keyed by address gets one random page per new entry once it outgrows what is
//! added at a time, and SQLite logs whole pages on every commit: with distinct recipient
//! addresses that page cost more than the email itself (batches of the ingest benchmark
//! with random addresses: 19.3k emails/s and 5.4 KB of WAL per email after 40 s, against
//! 26k and 3.4 KB with a thousand repeating ones; see migration 10 in schema.sql). So the
//! index is a set of runs, as in a log-structured merge tree: each indexer pass writes its
//! recipients as a new run, sorted, behind every other run (the run id leads the key), and
//! runs of like size are merged into one, a chunk at a time. Each entry is so written once
//! per merge it goes through (a handful over the life of a database: runs grow by
//! [`FAN_IN`] each time), always in order. The filter looks the address up in every run.
//!
//! A merge moves a chunk of entries, in key order, from its source runs to its target run
//! in one transaction, and remembers the last key moved: at every commit each entry is in
//! a source or in the target, never in neither, so the filter is never short of one.

use std::sync::LazyLock;

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use crate::store::StoreError;
use crate::store::rows::RowInsert;

/// How many runs of one size class are merged into one. Runs of `FAN_IN^t` to
/// `FAN_IN^(t+1) - 1` entries are of class `t`; a merge of `FAN_IN` of them makes a run of
/// a higher class, so a database of `n` entries holds fewer than `FAN_IN` runs of each of
/// about `log(n) / log(FAN_IN)` classes, and each entry is rewritten about that many times.
pub const FAN_IN: usize = 8;

/// The setting that holds the last recipient id copied to the index.
const INDEXED_TO: &str = "recipients_indexed_to";

/// The condition that selects the ids of the emails of one mode sent to one address, for
/// `id IN (...)`: the indexed recipients, in every run, and those the indexer has not
/// copied yet. Its parameters, in order: mode, lower-cased address, `INDEXED_TO`'s key,
/// lower-cased address (see [`to_filter_args`]).
pub const TO_FILTER: &str = "SELECT email_id FROM recipient_addresses
         WHERE run IN (SELECT id FROM recipient_address_runs)
           AND mode = ? AND address_lower = ?
     UNION ALL
     SELECT email_id FROM recipients
         WHERE id > (SELECT coalesce(max(CAST(value AS INTEGER)), 0) FROM settings
                     WHERE key = ?)
           AND address_lower = ?";

/// The parameters of [`TO_FILTER`].
pub fn to_filter_args(mode: &'static str, address_lower: String) -> [String; 4] {
    [
        mode.to_string(),
        address_lower.clone(),
        INDEXED_TO.to_string(),
        address_lower,
    ]
}

fn indexed_to(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM settings WHERE key = ?1",
            [INDEXED_TO],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Whether recipients wait to be copied to the index.
#[cfg(test)]
pub fn has_unindexed_recipients(conn: &Connection) -> Result<bool, StoreError> {
    let last: Option<i64> = conn.query_row("SELECT max(id) FROM recipients", [], |r| r.get(0))?;
    Ok(last.unwrap_or(0) > indexed_to(conn)?)
}

/// A pass's copy of the recipients not indexed yet into a run of their own.
///
/// The entries are read and sorted first, on any connection (a reader's, off the writer);
/// the writer then only appends them, a part per transaction ([`RunCopy::write_next`]),
/// so that requests get the writer in between. Copied in one transaction, a half second of
/// single sends (about 5,000 recipients) held every other write for 15–20 ms on the
/// 2-core benchmark machine, and a half second of batches for up to 100 ms: the largest
/// part of the single sends' p99.
///
/// Until its last part is written the run is `filling`: the filter already reads its
/// entries (they are also still after `INDEXED_TO`, where the filter reads them too), no
/// merge takes it, and a run a crash left filling is dropped by the next copy, which
/// copies its recipients again.
pub struct RunCopy {
    /// `INDEXED_TO` when the entries were read: the copy moves it on only from there.
    from: i64,
    /// The last recipient the entries come from.
    upto: i64,
    /// How many recipients the entries come from.
    recipients: usize,
    /// The entries, sorted, without repeats (one email can name an address twice).
    entries: Entries,
    /// How many of them are written.
    written: usize,
    /// The run, once its first part is written.
    run: Option<i64>,
}

impl RunCopy {
    /// The entries of up to `limit` recipients after `INDEXED_TO`, in recipient order;
    /// `None` when every recipient is indexed.
    pub fn of_new_recipients(
        conn: &Connection,
        limit: usize,
    ) -> Result<Option<RunCopy>, StoreError> {
        let from = indexed_to(conn)?;
        let mut upto = from;
        let mut entries = Entries::default();
        let mut recipients = conn.prepare_cached(
            "SELECT id, mode, address_lower, email_id FROM recipients
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = recipients.query(params![from, limit as i64])?;
        while let Some(row) = rows.next()? {
            upto = row.get(0)?;
            let text = |i| row.get_ref(i).and_then(|v| Ok(v.as_str()?));
            entries.push(text(1)?, text(2)?, text(3)?);
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let recipients = entries.len();
        entries.sort_and_dedup();
        Ok(Some(RunCopy {
            from,
            upto,
            recipients,
            entries,
            written: 0,
            run: None,
        }))
    }

    /// How many recipients the copy indexes.
    pub fn recipients(&self) -> usize {
        self.recipients
    }

    /// Writes the next `part` entries in the caller's transaction and returns whether any
    /// are left. The first part makes the run (filling) after dropping any a crash left
    /// filling; the last completes it and moves `INDEXED_TO` past the copied recipients.
    /// After an error the copy is spent: the next one starts over.
    pub fn write_next(&mut self, conn: &Connection, part: usize) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        let run = match self.run {
            Some(run) => run,
            None => {
                drop_filling_runs(conn)?;
                new_run(conn, true)?
            }
        };
        let end = self.entries.len().min(self.written.saturating_add(part));
        append(conn, run, self.entries.range(self.written..end))?;
        let done = end == self.entries.len();
        if done {
            // Only one copy runs at a time (the indexer's); this keeps a second one from
            // moving the mark past recipients whose run the first one dropped.
            if indexed_to(conn)? != self.from {
                return Err(StoreError::Task(
                    "the address index moved on during a copy".into(),
                ));
            }
            let completed = conn
                .prepare_cached(
                    "UPDATE recipient_address_runs SET entries = ?2, filling = 0
                     WHERE id = ?1 AND filling = 1",
                )?
                .execute(params![run, self.entries.len() as i64])?;
            if completed != 1 {
                return Err(StoreError::Task(format!(
                    "run {run} of the address index was dropped during its copy"
                )));
            }
            conn.prepare_cached("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)")?
                .execute(params![INDEXED_TO, self.upto.to_string()])?;
        }
        tracing::trace!(
            run,
            written = end,
            done,
            elapsed_us = started.elapsed().as_micros() as u64,
            "copied address index entries"
        );
        self.run = Some(run);
        self.written = end;
        Ok(!done)
    }
}

/// Index entries in one buffer rather than three strings each: a copy holds up to
/// 25,000 of them, which are then two allocations to make and free instead of 75,000.
#[derive(Default)]
struct Entries {
    text: String,
    /// Where each entry starts in `text`, and where its mode, address and email id end.
    bounds: Vec<[usize; 4]>,
}

impl Entries {
    fn push(&mut self, mode: &str, address: &str, email_id: &str) {
        let start = self.text.len();
        let mut end = |part: &str| {
            self.text.push_str(part);
            self.text.len()
        };
        let bounds = [start, end(mode), end(address), end(email_id)];
        self.bounds.push(bounds);
    }

    fn len(&self) -> usize {
        self.bounds.len()
    }

    fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    fn sort_and_dedup(&mut self) {
        let text = self.text.as_str();
        self.bounds
            .sort_unstable_by(|a, b| key(text, a).cmp(&key(text, b)));
        self.bounds.dedup_by(|a, b| key(text, a) == key(text, b));
    }

    fn range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = [&str; 3]> {
        self.bounds[range].iter().map(|b| key(&self.text, b))
    }
}

/// The mode, address and email id of the entry within `bounds` in `text`.
fn key<'t>(text: &'t str, bounds: &[usize; 4]) -> [&'t str; 3] {
    [
        &text[bounds[0]..bounds[1]],
        &text[bounds[1]..bounds[2]],
        &text[bounds[2]..bounds[3]],
    ]
}

/// Copies up to `limit` recipients not yet indexed into a new run in the caller's
/// transaction, and returns how many were copied: a [`RunCopy`] in one part.
#[cfg(test)]
pub fn index_new_recipients(conn: &Connection, limit: usize) -> Result<usize, StoreError> {
    let Some(mut copy) = RunCopy::of_new_recipients(conn, limit)? else {
        return Ok(0);
    };
    while copy.write_next(conn, usize::MAX)? {}
    Ok(copy.recipients())
}

/// Removes the runs a copy left filling (it stopped: a crash, an error), with their
/// entries. Their recipients are still after `INDEXED_TO`.
fn drop_filling_runs(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM recipient_addresses
         WHERE run IN (SELECT id FROM recipient_address_runs WHERE filling = 1)",
    )?
    .execute([])?;
    conn.prepare_cached("DELETE FROM recipient_address_runs WHERE filling = 1")?
        .execute([])?;
    Ok(())
}

/// A run with no entries yet, after every other; `filling` while a copy writes it.
fn new_run(conn: &Connection, filling: bool) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO recipient_address_runs (id, entries, filling)
         SELECT coalesce(max(id), 0) + 1, 0, ?1 FROM recipient_address_runs",
    )?
    .execute([filling])?;
    Ok(conn.last_insert_rowid())
}

/// A run as the merge policy sees it.
#[derive(Debug)]
struct Run {
    id: i64,
    entries: i64,
    /// The run this one's entries are moving to, while a merge is under way.
    merging_into: Option<i64>,
    /// A copy is still writing it (see [`RunCopy`]).
    filling: bool,
}

impl Run {
    /// The size class: runs of a class are merged together.
    fn class(&self) -> u32 {
        (self.entries.max(1) as u64).ilog(FAN_IN as u64)
    }
}

/// An entry's key within a run, the position a merge has reached.
type Key = (String, String, String);

/// Does one step of merging, in the caller's transaction: moves up to about `chunk`
/// entries of the merge under way (of the smallest runs, if several are), or starts one
/// when `FAN_IN` runs of one size class are free. Returns whether there was anything to do;
/// call it again until there is not.
pub fn merge_step(conn: &Connection, chunk: usize) -> Result<bool, StoreError> {
    let runs = conn
        .prepare_cached("SELECT id, entries, merging_into, filling FROM recipient_address_runs")?
        .query_map([], |r| {
            Ok(Run {
                id: r.get(0)?,
                entries: r.get(1)?,
                merging_into: r.get(2)?,
                filling: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let (target, sources) = match next_merge(&runs) {
        Some(Next::Continue(target)) => {
            let sources = runs.iter().filter(|r| r.merging_into == Some(target));
            (target, sources.map(|r| r.id).collect())
        }
        Some(Next::Start(sources)) => (start_merge(conn, &sources)?, sources),
        None => return Ok(false),
    };
    move_chunk(conn, target, &sources, chunk)?;
    Ok(true)
}

/// What a merge step does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Moves entries of the merge into this target.
    Continue(i64),
    /// Starts a merge of these runs.
    Start(Vec<i64>),
}

/// The smallest merge there is to do, under way or not, so that small runs do not pile up
/// behind a large merge (one of millions of entries lasts a minute): several merges can be
/// under way, of disjoint runs.
fn next_merge(runs: &[Run]) -> Option<Next> {
    match (merge_under_way(runs), runs_to_merge(runs)) {
        (Some((_, busy)), Some((sources, entries))) if entries < busy => Some(Next::Start(sources)),
        (Some((target, _)), _) => Some(Next::Continue(target)),
        (None, Some((sources, _))) => Some(Next::Start(sources)),
        (None, None) => None,
    }
}

/// The target of the smallest merge under way, with the entries its sources held.
fn merge_under_way(runs: &[Run]) -> Option<(i64, i64)> {
    let mut merges: Vec<(i64, i64)> = Vec::new();
    for run in runs {
        if let Some(target) = run.merging_into {
            match merges.iter_mut().find(|(t, _)| *t == target) {
                Some((_, entries)) => *entries += run.entries,
                None => merges.push((target, run.entries)),
            }
        }
    }
    merges
        .into_iter()
        .min_by_key(|&(target, entries)| (entries, target))
}

/// The oldest `FAN_IN` free runs of the smallest size class that has that many, with
/// their entries. A run being filled is not free.
fn runs_to_merge(runs: &[Run]) -> Option<(Vec<i64>, i64)> {
    let targets: Vec<i64> = runs.iter().filter_map(|r| r.merging_into).collect();
    let mut free: Vec<&Run> = runs
        .iter()
        .filter(|r| r.merging_into.is_none() && !r.filling && !targets.contains(&r.id))
        .collect();
    free.sort_by_key(|r| (r.class(), r.id));
    free.chunk_by(|a, b| a.class() == b.class())
        .find(|class| class.len() >= FAN_IN)
        .map(|class| {
            let merged = &class[..FAN_IN];
            (
                merged.iter().map(|r| r.id).collect(),
                merged.iter().map(|r| r.entries).sum(),
            )
        })
}

/// Makes the target run of a merge of `sources` and returns its id.
fn start_merge(conn: &Connection, sources: &[i64]) -> Result<i64, StoreError> {
    let target = new_run(conn, false)?;
    let mut mark = conn.prepare_cached(
        "UPDATE recipient_address_runs SET merging_into = ?2 WHERE id = ?1 AND merging_into IS NULL",
    )?;
    for source in sources {
        mark.execute(params![source, target])?;
    }
    Ok(target)
}

/// The multi-row INSERT of index entries (see `store::rows`).
static ENTRY_ROWS: LazyLock<RowInsert> = LazyLock::new(|| {
    RowInsert::new(
        "recipient_addresses",
        &["run", "mode", "address_lower", "email_id"],
    )
});

/// Inserts `entries` (mode, address, email id) into `run`. In key order, after the run's
/// others, they are appended.
fn append<'e>(
    conn: &Connection,
    run: i64,
    entries: impl Iterator<Item = [&'e str; 3]>,
) -> Result<(), StoreError> {
    let run = ToSqlOutput::from(run);
    let mut values = Vec::with_capacity(entries.size_hint().0 * ENTRY_ROWS.columns());
    for [mode, address, email] in entries {
        values.extend([
            run.clone(),
            ToSqlOutput::from(mode),
            ToSqlOutput::from(address),
            ToSqlOutput::from(email),
        ]);
    }
    ENTRY_ROWS.insert(conn, &values)
}

/// Moves the entries of `sources` after `target`'s mark and up to about `chunk` of them, in
/// key order, to `target`; when the sources are empty, removes them.
///
/// The merge is done here rather than by one `INSERT ... SELECT`: SQLite copies a SELECT
/// from the table it inserts into to a temporary table first, and sorts entries that come
/// from several runs; the two were half of a step's time. Each source gives its next
/// entries already in order, and the target's new entries all come after its others.
fn move_chunk(
    conn: &Connection,
    target: i64,
    sources: &[i64],
    chunk: usize,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let from: Key = conn
        .prepare_cached(
            "SELECT coalesce(merged_mode, ''), coalesce(merged_address, ''),
                    coalesce(merged_email, '')
             FROM recipient_address_runs WHERE id = ?1",
        )?
        .query_row([target], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    // The next `per_source` entries of each source. The chunk ends at the smallest last
    // key of those that gave that many (a source that gave fewer has no more): no source
    // has entries before it that were not read. When every source is short, the chunk
    // takes the rest and the merge is done.
    let per_source = (chunk / sources.len().max(1)).max(1);
    let mut next_entries = conn.prepare_cached(
        "SELECT mode, address_lower, email_id FROM recipient_addresses
         WHERE run = ?1 AND (mode, address_lower, email_id) > (?2, ?3, ?4)
         ORDER BY mode, address_lower, email_id LIMIT ?5",
    )?;
    let mut entries: Vec<Key> = Vec::with_capacity(per_source * sources.len());
    let mut until: Option<Key> = None;
    for source in sources {
        let read = entries.len();
        let rows = next_entries.query_map(
            params![source, from.0, from.1, from.2, per_source as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        for row in rows {
            entries.push(row?);
        }
        if entries.len() - read == per_source {
            let last = entries.last().expect("a source gave entries");
            if until.as_ref().is_none_or(|u| last < u) {
                until = Some(last.clone());
            }
        }
    }
    if let Some(until) = &until {
        entries.retain(|key| key <= until);
    }
    entries.sort_unstable();
    // One email's recipients split between two passes can repeat an address in two runs.
    entries.dedup();
    append(
        conn,
        target,
        entries
            .iter()
            .map(|(m, a, e)| [m.as_str(), a.as_str(), e.as_str()]),
    )?;
    let upper = if until.is_some() {
        " AND (mode, address_lower, email_id) <= (?5, ?6, ?7)"
    } else {
        ""
    };
    let mut args: Vec<&dyn ToSql> = vec![&target, &from.0, &from.1, &from.2];
    if let Some((mode, address, email)) = &until {
        args.extend([mode as &dyn ToSql, address, email]);
    }
    conn.prepare_cached(&format!(
        "DELETE FROM recipient_addresses
         WHERE run IN (SELECT id FROM recipient_address_runs WHERE merging_into = ?1)
           AND (mode, address_lower, email_id) > (?2, ?3, ?4){upper}"
    ))?
    .execute(&*args)?;
    if until.is_none() {
        conn.prepare_cached("DELETE FROM recipient_address_runs WHERE merging_into = ?1")?
            .execute([target])?;
    }
    // The mark moves to the last key moved, or goes when the merge is done.
    let mark = until.as_ref();
    conn.prepare_cached(
        "UPDATE recipient_address_runs
         SET entries = entries + ?2, merged_mode = ?3, merged_address = ?4, merged_email = ?5
         WHERE id = ?1",
    )?
    .execute(params![
        target,
        entries.len() as i64,
        mark.map(|k| &k.0),
        mark.map(|k| &k.1),
        mark.map(|k| &k.2)
    ])?;
    tracing::trace!(
        target_run = target,
        moved = entries.len(),
        done = until.is_none(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "merged address index entries"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::emails::store::tests::add_email;
    use crate::emails::store::{ListFilter, list};
    use crate::keys::Mode;
    use crate::store::Db;

    /// What the `to` filter finds, in a fresh read transaction.
    fn found(db: &Db, mode: Mode, address: &str) -> BTreeSet<String> {
        let filter = ListFilter {
            to: Some(address.into()),
            limit: 1_000,
            ..Default::default()
        };
        list(&db.read_blocking().unwrap(), mode, &filter)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    fn runs(db: &Db) -> Vec<(i64, i64, Option<i64>)> {
        db.read_blocking()
            .unwrap()
            .prepare("SELECT id, entries, merging_into FROM recipient_address_runs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Each run's `entries` is what it holds, and no entry belongs to a run that is gone.
    fn assert_counts_hold(db: &Db) {
        let conn = db.read_blocking().unwrap();
        let held: Vec<(i64, i64)> = crate::store::pairs(
            &conn,
            "SELECT run, count(*) FROM recipient_addresses GROUP BY run ORDER BY run",
        );
        let runs = runs(db);
        for (run, count) in &held {
            let Some((_, entries, merging_into)) = runs.iter().find(|r| r.0 == *run) else {
                panic!("entries of run {run}, which is gone");
            };
            // A source of a merge under way has given part of its entries away.
            if merging_into.is_none() {
                assert_eq!(entries, count, "entries of run {run}");
            }
        }
    }

    /// Small passes make many runs; merging them in steps of a few entries, with passes
    /// in between, the filter finds every email at every commit, and at the end no merge
    /// is left, each size class has fewer than `FAN_IN` runs, each run holds what it says,
    /// and the index holds exactly the recipients' addresses.
    #[test]
    fn merging_runs_loses_no_email_at_any_step() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let addresses = [
            "ana@x.test",
            "bo@x.test",
            "cy@x.test",
            "di@x.test",
            "ed@x.test",
        ];
        // The emails each address should be found with, per mode.
        let mut expected: Vec<(Mode, &str, BTreeSet<String>)> = Vec::new();
        for mode in [Mode::Test, Mode::Live] {
            for address in addresses {
                expected.push((mode, address, BTreeSet::new()));
            }
        }
        let check = |expected: &[(Mode, &str, BTreeSet<String>)]| {
            for (mode, address, ids) in expected {
                assert_eq!(&found(&db, *mode, address), ids, "{mode:?} {address}");
            }
        };
        let mut next = 0;
        let mut add = |expected: &mut Vec<(Mode, &str, BTreeSet<String>)>, n: usize| {
            for _ in 0..n {
                next += 1;
                let id = format!("msg_{next:04}");
                let mode = if next % 3 == 0 {
                    Mode::Live
                } else {
                    Mode::Test
                };
                // Two or three addresses, one of them twice (to and cc, say).
                let picked = [
                    addresses[next % 5],
                    addresses[(next * 7 + 1) % 5],
                    addresses[next % 5],
                ];
                let email = id.clone();
                db.write_blocking(move |c| -> Result<(), StoreError> {
                    add_email(c, &email, mode.as_str(), &picked);
                    Ok(())
                })
                .unwrap();
                for address in picked {
                    let slot = expected
                        .iter_mut()
                        .find(|(m, a, _)| *m == mode && *a == address)
                        .unwrap();
                    slot.2.insert(id.clone());
                }
            }
        };
        // Twenty passes of one to five recipients: runs of class 0 and 1.
        for pass in 0..20 {
            add(&mut expected, 1 + pass % 2);
            db.write_blocking(move |c| index_new_recipients(c, 1 + pass % 5))
                .unwrap();
        }
        check(&expected);
        let mut steps = 0;
        while db.write_blocking(|c| merge_step(c, 2)).unwrap() {
            steps += 1;
            check(&expected);
            assert_counts_hold(&db);
            if steps % 7 == 0 {
                // New emails and passes while a merge is under way.
                add(&mut expected, 2);
                db.write_blocking(|c| index_new_recipients(c, 3)).unwrap();
                check(&expected);
            }
            assert!(steps < 1_000, "merging does not end");
        }
        assert!(
            steps > 10,
            "merged in chunks of about two entries ({steps} steps)"
        );
        while db.write_blocking(|c| index_new_recipients(c, 100)).unwrap() > 0 {}
        while db.write_blocking(|c| merge_step(c, 2)).unwrap() {}
        check(&expected);
        assert_counts_hold(&db);
        let runs = runs(&db);
        assert!(
            runs.iter().all(|r| r.2.is_none()),
            "no merge left: {runs:?}"
        );
        for class in 0..4 {
            let of_class = runs
                .iter()
                .filter(|r| run(r.0, r.1, r.2).class() == class)
                .count();
            assert!(
                of_class < FAN_IN,
                "{of_class} runs of class {class}: {runs:?}"
            );
        }
        // The index holds what the recipients say, each entry once per run at most (one
        // email's recipients split between two passes may leave a repeated address in
        // both runs; the filter does not mind).
        let conn = db.read_blocking().unwrap();
        let entries = |sql: &str| -> Vec<(String, String, String)> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(
            entries(
                "SELECT DISTINCT mode, address_lower, email_id FROM recipient_addresses ORDER BY 1, 2, 3"
            ),
            entries(
                "SELECT DISTINCT mode, address_lower, email_id FROM recipients ORDER BY 1, 2, 3"
            )
        );
    }

    /// Adds email `id` of test mode, to `to`.
    fn add(db: &Db, id: &str, to: &[&'static str]) {
        let (id, to) = (id.to_string(), to.to_vec());
        db.write_blocking(move |c| -> Result<(), StoreError> {
            add_email(c, &id, "test", &to);
            Ok(())
        })
        .unwrap();
    }

    /// Writes the next `part` entries of `copy` in a transaction of their own, as the
    /// indexer does; returns the copy and whether entries are left.
    fn write_part(db: &Db, mut copy: RunCopy, part: usize) -> (RunCopy, bool) {
        db.write_blocking(move |c| {
            let more = copy.write_next(c, part)?;
            Ok::<_, StoreError>((copy, more))
        })
        .unwrap()
    }

    /// Writes what is left of `copy` in one transaction; whether that failed.
    fn finish_fails(db: &Db, mut copy: RunCopy) -> bool {
        db.write_blocking(move |c| copy.write_next(c, usize::MAX))
            .is_err()
    }

    fn new_copy(db: &Db) -> RunCopy {
        RunCopy::of_new_recipients(&db.read_blocking().unwrap(), 1_000)
            .unwrap()
            .expect("recipients to copy")
    }

    fn filling_runs(db: &Db) -> i64 {
        db.read_blocking()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM recipient_address_runs WHERE filling = 1",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// A copy written a few entries per transaction: after every commit the filter finds
    /// every email, and no merge takes the run while it fills, though it would make the
    /// eighth run of its size class. One abandoned halfway (a crash) is dropped by the next
    /// copy, which copies the same recipients again; and a copy whose run is gone (another
    /// copy dropped it), or that read before another one moved the mark, does not move it.
    #[test]
    fn a_copy_in_parts_is_found_at_every_commit_and_redone_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let addresses = ["ana@x.test", "bo@x.test", "cy@x.test", "di@x.test"];
        let mut expected: Vec<(&str, BTreeSet<String>)> =
            addresses.iter().map(|a| (*a, BTreeSet::new())).collect();
        let mut emails = 0;
        let mut send = |expected: &mut Vec<(&str, BTreeSet<String>)>, to: &[&'static str]| {
            emails += 1;
            let id = format!("msg_{emails:03}");
            add(&db, &id, to);
            for address in to {
                let slot = expected.iter_mut().find(|(a, _)| a == address).unwrap();
                slot.1.insert(id.clone());
            }
        };
        let check = |expected: &[(&str, BTreeSet<String>)]| {
            for (address, ids) in expected {
                assert_eq!(&found(&db, Mode::Test, address), ids, "{address}");
            }
        };
        // Seven runs of one entry (size class 0).
        for i in 0..FAN_IN - 1 {
            send(&mut expected, &[addresses[i % 4]]);
            db.write_blocking(|c| index_new_recipients(c, 1)).unwrap();
        }
        for i in 0..12 {
            send(&mut expected, &[addresses[i % 4], addresses[(i + 1) % 4]]);
        }

        // A copy of the 24 recipients abandoned after two parts of five.
        let copy = new_copy(&db);
        assert_eq!(copy.recipients(), 24);
        let (copy, more) = write_part(&db, copy, 5);
        assert!(more);
        let (abandoned, _) = write_part(&db, copy, 5);
        assert_eq!(filling_runs(&db), 1);
        check(&expected);
        assert!(
            !db.write_blocking(|c| merge_step(c, 2)).unwrap(),
            "a filling run is not merged: {:?}",
            runs(&db)
        );

        // A copy read now but finished after the next one: it writes nothing wrong.
        let stale = new_copy(&db);
        // The next copy starts over: the same recipients, the abandoned run dropped.
        let mut copy = new_copy(&db);
        assert_eq!(copy.recipients(), 24);
        let mut parts = 0;
        loop {
            let (next, more) = write_part(&db, copy, 3);
            copy = next;
            parts += 1;
            check(&expected);
            assert_eq!(filling_runs(&db), i64::from(more));
            if !more {
                break;
            }
            assert!(!db.write_blocking(|c| merge_step(c, 2)).unwrap());
        }
        assert!(parts > 3, "written in parts ({parts})");
        assert_counts_hold(&db);
        assert!(!has_unindexed_recipients(&db.read_blocking().unwrap()).unwrap());

        // The abandoned copy's run is gone: finishing it fails and moves nothing.
        let indexed = indexed_to(&db.read_blocking().unwrap()).unwrap();
        assert!(finish_fails(&db, abandoned));
        assert_eq!(indexed_to(&db.read_blocking().unwrap()).unwrap(), indexed);
        check(&expected);
        assert_counts_hold(&db);
        // So does the stale one, whose run is new and whose entries clash with nothing:
        // the mark moved since it read, so it leaves no run and the mark where it is.
        let before = runs(&db);
        assert!(finish_fails(&db, stale));
        assert_eq!(indexed_to(&db.read_blocking().unwrap()).unwrap(), indexed);
        assert_eq!(runs(&db), before);

        // An eighth run of one entry: the eight are merged, every email still found.
        send(&mut expected, &["di@x.test"]);
        db.write_blocking(|c| index_new_recipients(c, 1)).unwrap();
        let mut steps = 0;
        while db.write_blocking(|c| merge_step(c, 2)).unwrap() {
            steps += 1;
        }
        assert!(steps > 0);
        check(&expected);
        assert_counts_hold(&db);
        assert!(runs(&db).len() < FAN_IN, "{:?}", runs(&db));
    }

    /// A copy's entries come out in key order (byte-wise, as SQLite's), each once.
    #[test]
    fn entries_sort_by_mode_address_and_email_without_repeats() {
        let mut entries = Entries::default();
        for (mode, address, email) in [
            ("test", "bo@x.test", "msg_2"),
            ("live", "zed@x.test", "msg_1"),
            ("test", "bo@x.test", "msg_1"),
            ("test", "Bo@x.test", "msg_3"),
            ("test", "bo@x.test", "msg_2"),
            ("test", "bo@x.tes", "msg_9"),
        ] {
            entries.push(mode, address, email);
        }
        entries.sort_and_dedup();
        assert_eq!(entries.len(), 5);
        let sorted: Vec<[&str; 3]> = entries.range(0..5).collect();
        assert_eq!(
            sorted,
            [
                ["live", "zed@x.test", "msg_1"],
                ["test", "Bo@x.test", "msg_3"],
                ["test", "bo@x.tes", "msg_9"],
                ["test", "bo@x.test", "msg_1"],
                ["test", "bo@x.test", "msg_2"],
            ]
        );
        assert_eq!(entries.range(3..4).count(), 1);
    }

    fn run(id: i64, entries: i64, merging_into: Option<i64>) -> Run {
        Run {
            id,
            entries,
            merging_into,
            filling: false,
        }
    }

    /// Merges take the oldest `FAN_IN` runs of one size class, the smallest class first,
    /// and never a run already in a merge or the target of one.
    #[test]
    fn runs_of_one_size_class_are_merged_together() {
        let ids = |merge: Option<(Vec<i64>, i64)>| merge.map(|(ids, _)| ids);
        let mut runs: Vec<Run> = (1..=7).map(|id| run(id, 100, None)).collect();
        // Seven runs of class 2 (64..511) and one of class 1: nothing to merge.
        runs.push(run(8, 10, None));
        assert_eq!(runs_to_merge(&runs), None);
        assert_eq!(next_merge(&runs), None);
        runs.push(run(9, 500, None));
        assert_eq!(
            runs_to_merge(&runs),
            Some(((1..=7).chain([9]).collect(), 1_200))
        );
        // Eight of class 1 come before those of class 2.
        runs.extend((10..=16).map(|id| run(id, 8, None)));
        let small = vec![8, 10, 11, 12, 13, 14, 15, 16];
        assert_eq!(ids(runs_to_merge(&runs)), Some(small.clone()));
        assert_eq!(next_merge(&runs), Some(Next::Start(small)));
        // Runs in a merge, or a merge's target, are not free.
        runs[7].merging_into = Some(20);
        runs.push(run(20, 3, None));
        assert_eq!(
            ids(runs_to_merge(&runs)),
            Some((1..=7).chain([9]).collect())
        );
        assert_eq!(merge_under_way(&runs), Some((20, 10)));
        // The merge under way (10 entries) is smaller than the one there is to start.
        assert_eq!(next_merge(&runs), Some(Next::Continue(20)));
    }

    /// Of two merges under way, the smaller goes first; and a merge of small runs starts
    /// while a larger one is under way.
    #[test]
    fn the_smallest_merge_goes_first() {
        let mut runs: Vec<Run> = (1..=8).map(|id| run(id, 600, Some(30))).collect();
        runs.extend((9..=16).map(|id| run(id, 70, Some(31))));
        runs.push(run(30, 1_000, None));
        runs.push(run(31, 0, None));
        assert_eq!(merge_under_way(&runs), Some((31, 560)));
        assert_eq!(next_merge(&runs), Some(Next::Continue(31)));
        assert_eq!(merge_under_way(&runs[..8]), Some((30, 4_800)));
        assert_eq!(merge_under_way(&[]), None);
        // Eight runs of 10 entries (80 in all) go before both.
        runs.extend((40..=47).map(|id| run(id, 10, None)));
        assert_eq!(next_merge(&runs), Some(Next::Start((40..=47).collect())));
    }
}

//! When each key was last used (`api_keys.last_used_at`, shown by `keys list` and the
//! dashboard), so that a team can tell a key nobody uses any more from one in service
//! before revoking it.
//!
//! Every authenticated request notes its key's use in memory; a task writes what was noted
//! in one job a minute, and once more when the server stops. Writing on every request
//! would put the single writer on the path of every read (and cost a commit per request).
//! So the time shown is at most a minute behind, and a crash loses at most that minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::watch;

use crate::store::{Db, StoreError};

/// How often the noted uses are written.
const FLUSH_EVERY: Duration = Duration::from_secs(60);

/// The uses noted since the last write: key id → latest Unix second.
#[derive(Default)]
pub struct KeyUsage {
    noted: Mutex<HashMap<String, i64>>,
}

impl KeyUsage {
    /// Notes that key `key_id` was used at `at` (Unix seconds). Allocates only for the first
    /// use of a key in a period.
    pub fn note(&self, key_id: &str, at: i64) {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        match noted.get_mut(key_id) {
            Some(last) => *last = (*last).max(at),
            None => {
                noted.insert(key_id.to_owned(), at);
            }
        }
    }

    /// Takes what was noted, leaving nothing.
    fn take(&self) -> Vec<(String, i64)> {
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        noted.drain().collect()
    }

    /// Writes what was noted. A failed write notes the uses again, for the next one.
    pub async fn flush(&self, db: &Db) -> Result<(), StoreError> {
        let uses = self.take();
        if uses.is_empty() {
            return Ok(());
        }
        let kept = uses.clone();
        if let Err(e) = db.write(move |conn| record(conn, &uses)).await {
            for (id, at) in kept {
                self.note(&id, at);
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Sets each key's `last_used_at`, never moving it back.
fn record(conn: &Connection, uses: &[(String, i64)]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
    )?;
    for (id, at) in uses {
        stmt.execute(params![id, at])?;
    }
    Ok(())
}

/// Writes the noted uses every `FLUSH_EVERY`, and a last time when `shutdown` fires.
pub async fn run(db: Db, usage: Arc<KeyUsage>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => false,
            _ = shutdown.changed() => true,
        };
        if let Err(e) = usage.flush(&db).await {
            tracing::warn!(error = %e, "recording when API keys were last used failed");
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, Mode, Permission};

    #[tokio::test]
    async fn uses_are_written_in_one_go_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let (a, b) = db
            .write(|c| -> Result<_, StoreError> {
                let a = keys::create(c, "a", Mode::Test, Permission::FullAccess)?.0;
                let b = keys::create(c, "b", Mode::Live, Permission::FullAccess)?.0;
                Ok((a.id, b.id))
            })
            .await
            .unwrap();
        let usage = KeyUsage::default();
        usage.note(&a, 100);
        usage.note(&a, 300);
        usage.note(&a, 200);
        usage.flush(&db).await.unwrap();
        // An older use noted later does not move the time back.
        usage.note(&a, 250);
        usage.flush(&db).await.unwrap();
        usage.flush(&db).await.unwrap();
        let list = db.read(keys::list).await.unwrap();
        let last = |id: &str| list.iter().find(|k| k.id == id).unwrap().last_used_at;
        assert_eq!(last(&a), Some(300));
        assert_eq!(last(&b), None);
        db.close();
    }
}

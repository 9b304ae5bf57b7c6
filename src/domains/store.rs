//! SQL of the domains table: create, read, list, delete, the signing key of a From domain,
//! saving a DNS check with its status transition and events, the domains due for a
//! background check, and matching a VERP bounce address back to its email.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{BOUNCE_LOCAL_PART, DomainName};
use crate::events::{self, NewEvent};
use crate::keys::Mode;
use crate::store::{StoreError, ids, time};

/// The status of a domain (API.md "Domains").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    /// Nothing (or not enough) published yet, within the grace period.
    Pending,
    /// DKIM and SPF are published as listed.
    Verified,
    /// One of DKIM and SPF is published, not both, within the grace period.
    PartiallyVerified,
    /// Never verified within the grace period, or lost a record for longer than it.
    Failed,
    /// Was verified, and a DKIM or SPF check now fails; mail still goes out while it lasts.
    TemporaryFailure,
}

impl DomainStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainStatus::Pending => "pending",
            DomainStatus::Verified => "verified",
            DomainStatus::PartiallyVerified => "partially_verified",
            DomainStatus::Failed => "failed",
            DomainStatus::TemporaryFailure => "temporary_failure",
        }
    }

    pub fn parse(s: &str) -> Option<DomainStatus> {
        Some(match s {
            "pending" => DomainStatus::Pending,
            "verified" => DomainStatus::Verified,
            "partially_verified" => DomainStatus::PartiallyVerified,
            "failed" => DomainStatus::Failed,
            "temporary_failure" => DomainStatus::TemporaryFailure,
            _ => return None,
        })
    }

    /// Whether live mail may be sent from a domain in this status when
    /// `delivery.require_verified_domain` is on: verified, and verified domains whose DNS
    /// check fails for now (a DNS hiccup must not stop transactional mail).
    pub fn may_send(self) -> bool {
        matches!(
            self,
            DomainStatus::Verified | DomainStatus::TemporaryFailure
        )
    }
}

/// The status of one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Nothing published at that name yet (or not looked up yet, or the lookup failed).
    #[default]
    Pending,
    Verified,
    /// Something is published there, but not what is listed.
    Failed,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::Pending => "pending",
            RecordStatus::Verified => "verified",
            RecordStatus::Failed => "failed",
        }
    }
}

/// The result of checking one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub status: RecordStatus,
    /// What is published, when it is not what is listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<Vec<String>>,
}

/// The last check of each record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Checks {
    pub dkim: Check,
    pub spf: Check,
    pub dmarc: Check,
    pub return_path: Check,
}

/// A domain as stored (without its private key).
#[derive(Debug, Clone)]
pub struct DomainRow {
    pub id: String,
    pub mode: Mode,
    pub name: String,
    pub status: DomainStatus,
    pub selector: String,
    pub public_key: String,
    pub checks: Checks,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub last_checked_at: Option<i64>,
    pub failing_since: Option<i64>,
}

const COLUMNS: &str = "id, mode, name, status, dkim_selector, dkim_public_key, checks_json,
    created_at, verified_at, last_checked_at, failing_since";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    let mode: String = r.get(1)?;
    let status: String = r.get(3)?;
    let checks: String = r.get(6)?;
    Ok(DomainRow {
        id: r.get(0)?,
        mode: Mode::parse(&mode).unwrap_or(Mode::Test),
        name: r.get(2)?,
        status: DomainStatus::parse(&status).unwrap_or(DomainStatus::Pending),
        selector: r.get(4)?,
        public_key: r.get(5)?,
        checks: serde_json::from_str(&checks).unwrap_or_default(),
        created_at: r.get(7)?,
        verified_at: r.get(8)?,
        last_checked_at: r.get(9)?,
        failing_since: r.get(10)?,
    })
}

/// Why a domain could not be added.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("the domain exists already")]
    Duplicate,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for InsertError {
    fn from(e: rusqlite::Error) -> Self {
        InsertError::Store(e.into())
    }
}

/// True when `name` is already a domain of `mode`.
pub fn exists(conn: &Connection, mode: Mode, name: &DomainName) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM domains WHERE mode = ?1 AND name = ?2",
            params![mode.as_str(), name.as_str()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Adds a pending domain with its key pair.
pub fn insert(
    conn: &Connection,
    mode: Mode,
    name: &DomainName,
    selector: &str,
    private_der: &[u8],
    public_b64: &str,
) -> Result<DomainRow, InsertError> {
    if exists(conn, mode, name)? {
        return Err(InsertError::Duplicate);
    }
    let id = ids::new_id("dom");
    conn.execute(
        "INSERT INTO domains (id, mode, name, status, dkim_selector, dkim_private_key,
                              dkim_public_key, checks_json, created_at)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, '{}', ?7)",
        params![
            id,
            mode.as_str(),
            name.as_str(),
            selector,
            private_der,
            public_b64,
            time::now()
        ],
    )?;
    get(conn, mode, &id)?.ok_or(InsertError::Store(StoreError::Task(
        "the new domain vanished".into(),
    )))
}

/// One domain of `mode`.
pub fn get(conn: &Connection, mode: Mode, id: &str) -> Result<Option<DomainRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM domains WHERE id = ?1 AND mode = ?2");
    Ok(conn
        .query_row(&sql, params![id, mode.as_str()], row)
        .optional()?)
}

/// A page of domains, newest first (`limit + 1` rows, for `has_more`).
pub fn list(
    conn: &Connection,
    mode: Mode,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<DomainRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM domains WHERE mode = ?1 AND (?2 IS NULL OR id < ?2)
         ORDER BY id DESC LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params![mode.as_str(), before_id, (limit + 1) as i64], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes a domain; false when there was none.
pub fn delete(conn: &Connection, mode: Mode, id: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM domains WHERE id = ?1 AND mode = ?2",
        params![id, mode.as_str()],
    )? > 0)
}

/// What sending from a domain needs: its status, key and whether the bounce subdomain's
/// MX is published.
pub struct SigningRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub status: DomainStatus,
    pub selector: String,
    pub private_der: Vec<u8>,
    pub return_path_verified: bool,
}

/// The domain of `mode` named `name` (the From address's domain), with its private key.
pub fn signing_row(
    conn: &Connection,
    mode: Mode,
    name: &str,
) -> Result<Option<SigningRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, created_at, status, dkim_selector, dkim_private_key, checks_json
             FROM domains WHERE mode = ?1 AND name = ?2",
        )?
        .query_row(params![mode.as_str(), name], |r| {
            let status: String = r.get(3)?;
            let checks: String = r.get(6)?;
            let checks: Checks = serde_json::from_str(&checks).unwrap_or_default();
            Ok(SigningRow {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
                status: DomainStatus::parse(&status).unwrap_or(DomainStatus::Pending),
                selector: r.get(4)?,
                private_der: r.get(5)?,
                return_path_verified: checks.return_path.status == RecordStatus::Verified,
            })
        })
        .optional()?)
}

/// The status a check leads to, and what changes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: DomainStatus,
    pub failing_since: Option<i64>,
    /// `domain.verified` or `domain.failed`, when the status changed to one of those.
    pub event: Option<&'static str>,
}

/// The domain status machine. Verified once DKIM and SPF are (DMARC and the return path
/// are recommended, not required). A domain never verified is `pending` (or
/// `partially_verified` with one of the two) until `give_up_after` from its creation, then
/// `failed`. A verified domain that loses DKIM or SPF is `temporary_failure` (sending goes
/// on) until `give_up_after` from the first failing check, then `failed`. A failed domain is
/// only checked on request, and becomes verified when its records are right.
pub fn transition(row: &DomainRow, checks: &Checks, now: i64, give_up_after: i64) -> Transition {
    let dkim = checks.dkim.status == RecordStatus::Verified;
    let spf = checks.spf.status == RecordStatus::Verified;
    let to = |status, failing_since| Transition {
        status,
        failing_since,
        event: None,
    };
    let mut t = if dkim && spf {
        to(DomainStatus::Verified, None)
    } else {
        match row.status {
            DomainStatus::Verified | DomainStatus::TemporaryFailure => {
                let since = row.failing_since.unwrap_or(now);
                if now - since >= give_up_after {
                    to(DomainStatus::Failed, None)
                } else {
                    to(DomainStatus::TemporaryFailure, Some(since))
                }
            }
            DomainStatus::Failed => to(DomainStatus::Failed, None),
            DomainStatus::Pending | DomainStatus::PartiallyVerified => {
                if now - row.created_at >= give_up_after {
                    to(DomainStatus::Failed, None)
                } else if dkim || spf {
                    to(DomainStatus::PartiallyVerified, None)
                } else {
                    to(DomainStatus::Pending, None)
                }
            }
        }
    };
    if t.status != row.status {
        t.event = match t.status {
            DomainStatus::Verified => Some(events::DOMAIN_VERIFIED),
            DomainStatus::Failed => Some(events::DOMAIN_FAILED),
            _ => None,
        };
    }
    t
}

/// Saves a check of `row` made at `now`: records, status, times, and the event of the
/// transition. Returns the domain as saved, or None when it was deleted meanwhile.
pub fn save_check(
    conn: &Connection,
    row: &DomainRow,
    checks: &Checks,
    now: i64,
    give_up_after: i64,
) -> Result<Option<DomainRow>, StoreError> {
    // Another check may have saved since `row` was read: decide from the current row.
    let Some(current) = get(conn, row.mode, &row.id)? else {
        return Ok(None);
    };
    let t = transition(&current, checks, now, give_up_after);
    let verified_at = if t.status == DomainStatus::Verified && current.status != t.status {
        Some(now)
    } else {
        current.verified_at
    };
    conn.execute(
        "UPDATE domains SET status = ?2, checks_json = ?3, last_checked_at = ?4,
                verified_at = ?5, failing_since = ?6
         WHERE id = ?1",
        params![
            current.id,
            t.status.as_str(),
            serde_json::to_string(checks).unwrap_or_else(|_| "{}".into()),
            now,
            verified_at,
            t.failing_since
        ],
    )?;
    if let Some(kind) = t.event {
        events::record(
            conn,
            current.mode,
            &NewEvent {
                kind,
                data: Some(json!({"domain_id": current.id, "name": current.name})),
                ..Default::default()
            },
        )?;
    }
    get(conn, current.mode, &current.id)
}

/// Domains whose next background check is due: pending, partially verified and
/// temporarily failing ones every `pending_every` seconds, verified ones every
/// `verified_every`. Failed domains are checked only on request.
pub fn due_for_check(
    conn: &Connection,
    now: i64,
    pending_every: i64,
    verified_every: i64,
    limit: usize,
) -> Result<Vec<DomainRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM domains
         WHERE (status IN ('pending', 'partially_verified', 'temporary_failure')
                AND coalesce(last_checked_at, created_at) <= ?1)
            OR (status = 'verified' AND coalesce(last_checked_at, 0) <= ?2)
         ORDER BY coalesce(last_checked_at, 0) LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(
            params![now - pending_every, now - verified_every, limit as i64],
            row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The email a bounce came back for, from the envelope recipient of the bounce (the VERP
/// address `bounces+<email id>@bounces.<domain>` the email was sent with). Matching ignores
/// case (some servers lower-case addresses; ULIDs are case-insensitive) and needs the
/// whole address to be the email's envelope sender, so a made-up address matches nothing.
pub fn email_for_bounce_address(
    conn: &Connection,
    addr: &str,
) -> Result<Option<String>, StoreError> {
    let addr = addr.trim().trim_start_matches('<').trim_end_matches('>');
    let Some((local, _domain)) = addr.rsplit_once('@') else {
        return Ok(None);
    };
    let Some(token) = local
        .split_once('+')
        .filter(|(base, _)| base.eq_ignore_ascii_case(BOUNCE_LOCAL_PART))
        .map(|(_, token)| token)
    else {
        return Ok(None);
    };
    let Some(ulid) = token
        .strip_prefix("msg_")
        .or_else(|| token.strip_prefix("MSG_"))
    else {
        return Ok(None);
    };
    let id = format!("msg_{}", ulid.to_ascii_uppercase());
    if !ids::is_id(&id, "msg") {
        return Ok(None);
    }
    let envelope: Option<String> = conn
        .query_row(
            "SELECT envelope_from FROM emails WHERE id = ?1",
            [&id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(envelope
        .filter(|e| e.eq_ignore_ascii_case(addr))
        .map(|_| id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(status: DomainStatus, created_at: i64, failing_since: Option<i64>) -> DomainRow {
        DomainRow {
            id: "dom_01JNPXR4KQ8S2V3WZ6B7C9D0EF".into(),
            mode: Mode::Live,
            name: "acme.test".into(),
            status,
            selector: "mf".into(),
            public_key: "x".into(),
            checks: Checks::default(),
            created_at,
            verified_at: None,
            last_checked_at: None,
            failing_since,
        }
    }

    fn checks(dkim: RecordStatus, spf: RecordStatus) -> Checks {
        Checks {
            dkim: Check {
                status: dkim,
                found: None,
            },
            spf: Check {
                status: spf,
                found: None,
            },
            ..Default::default()
        }
    }

    const H72: i64 = 72 * 3600;

    #[test]
    fn status_machine() {
        use DomainStatus::*;
        use RecordStatus as R;
        let now = 1_000_000;
        let fresh = domain(Pending, now - 10, None);
        let t = transition(&fresh, &checks(R::Pending, R::Pending), now, H72);
        assert_eq!((t.status, t.event), (Pending, None));
        let t = transition(&fresh, &checks(R::Verified, R::Failed), now, H72);
        assert_eq!((t.status, t.event), (PartiallyVerified, None));
        let t = transition(&fresh, &checks(R::Verified, R::Verified), now, H72);
        assert_eq!(
            (t.status, t.event),
            (Verified, Some(events::DOMAIN_VERIFIED))
        );
        // 72 h without verification: failed, once.
        let old = domain(PartiallyVerified, now - H72, None);
        let t = transition(&old, &checks(R::Verified, R::Pending), now, H72);
        assert_eq!((t.status, t.event), (Failed, Some(events::DOMAIN_FAILED)));
        let failed = domain(Failed, now - H72, None);
        let t = transition(&failed, &checks(R::Pending, R::Pending), now, H72);
        assert_eq!((t.status, t.event), (Failed, None));
        let t = transition(&failed, &checks(R::Verified, R::Verified), now, H72);
        assert_eq!(
            (t.status, t.event),
            (Verified, Some(events::DOMAIN_VERIFIED))
        );
        // A verified domain that loses a record: temporary failure from now on ...
        let verified = domain(Verified, now - 10 * H72, None);
        let t = transition(&verified, &checks(R::Pending, R::Verified), now, H72);
        assert_eq!(
            (t.status, t.failing_since, t.event),
            (TemporaryFailure, Some(now), None)
        );
        // ... still within the grace period ...
        let failing = domain(TemporaryFailure, now - 10 * H72, Some(now - 100));
        let t = transition(&failing, &checks(R::Failed, R::Verified), now, H72);
        assert_eq!(
            (t.status, t.failing_since),
            (TemporaryFailure, Some(now - 100))
        );
        // ... back to verified (an event again) or failed after 72 h.
        let t = transition(&failing, &checks(R::Verified, R::Verified), now, H72);
        assert_eq!(
            (t.status, t.failing_since, t.event),
            (Verified, None, Some(events::DOMAIN_VERIFIED))
        );
        let long = domain(TemporaryFailure, now - 10 * H72, Some(now - H72));
        let t = transition(&long, &checks(R::Failed, R::Verified), now, H72);
        assert_eq!((t.status, t.event), (Failed, Some(events::DOMAIN_FAILED)));
        // Verified stays verified without a new event.
        let t = transition(&verified, &checks(R::Verified, R::Verified), now, H72);
        assert_eq!((t.status, t.event), (Verified, None));
    }

    #[test]
    fn bounce_addresses_match_their_email() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut conn).unwrap();
        let id = ids::new_id("msg");
        let envelope = format!("bounces+{id}@bounces.acme.test");
        conn.execute(
            "INSERT INTO emails (id, mode, type, status, from_header, from_address, envelope_from,
                subject, to_json, cc_json, bcc_json, reply_to_json, tags_json, headers_json,
                message_id, created_at)
             VALUES (?1, 'live', 'transactional', 'sent', 'a@acme.test', 'a@acme.test', ?2, 's',
                     '[]', '[]', '[]', '[]', '{}', '[]', 'm', 0)",
            params![id, envelope],
        )
        .unwrap();
        let found = |a: &str| email_for_bounce_address(&conn, a).unwrap();
        assert_eq!(found(&envelope).as_deref(), Some(id.as_str()));
        assert_eq!(
            found(&format!("<{}>", envelope.to_lowercase())).as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            found(&envelope.to_uppercase()).as_deref(),
            Some(id.as_str())
        );
        // Another domain, another token, a forged token, not a VERP address: nothing.
        assert_eq!(found(&format!("bounces+{id}@bounces.evil.test")), None);
        assert_eq!(
            found(&format!("bounces+{}@bounces.acme.test", ids::new_id("msg"))),
            None
        );
        assert_eq!(found("bounces+msg_nope@bounces.acme.test"), None);
        assert_eq!(found("postmaster@acme.test"), None);
        assert_eq!(found(&format!("other+{id}@bounces.acme.test")), None);
    }
}

//! API keys: creation, listing, revocation, lookup by hash, and when each was last used
//! (`usage`).
//!
//! A key is `mf_<mode>_sk_` + 43 base62 characters (256 bits of randomness). Only its SHA-256
//! is stored: a key is high-entropy, so a fast hash is enough (argon2 is for human passwords).

use rand::Rng;
use rand::distr::Alphanumeric;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{StoreError, ids, time};

pub mod usage;

/// Live or test: every piece of data belongs to one mode and is only seen by keys of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Live,
    Test,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "live" => Some(Mode::Live),
            "test" => Some(Mode::Test),
            _ => None,
        }
    }
}

/// What a key may do: everything, or only sending (`POST /v1/emails/send`, `/batch`,
/// `/v1/mail/send`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    FullAccess,
    SendingAccess,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::FullAccess => "full_access",
            Permission::SendingAccess => "sending_access",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "full_access" => Some(Permission::FullAccess),
            "sending_access" => Some(Permission::SendingAccess),
            _ => None,
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub mode: Mode,
    pub permission: Permission,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// The length of the random part of a key.
const SECRET_LEN: usize = 43;

/// Makes a new secret key string for `mode`.
pub fn generate_token(mode: Mode) -> String {
    let secret: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    format!("mf_{}_sk_{secret}", mode.as_str())
}

/// The mode a well-formed key claims, or None when the string cannot be a key.
pub fn token_mode(token: &str) -> Option<Mode> {
    let (mode, secret) = if let Some(s) = token.strip_prefix("mf_live_sk_") {
        (Mode::Live, s)
    } else if let Some(s) = token.strip_prefix("mf_test_sk_") {
        (Mode::Test, s)
    } else {
        return None;
    };
    (secret.len() == SECRET_LEN && secret.chars().all(|c| c.is_ascii_alphanumeric()))
        .then_some(mode)
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a key and returns it with its secret (shown once).
pub fn create(
    conn: &Connection,
    name: &str,
    mode: Mode,
    permission: Permission,
) -> Result<(ApiKey, String), StoreError> {
    let token = generate_token(mode);
    let key = ApiKey {
        id: ids::new_id("key"),
        name: name.to_string(),
        mode,
        permission,
        prefix: token[..token.len().min(18)].to_string(),
        created_at: time::now(),
        last_used_at: None,
        revoked_at: None,
    };
    conn.execute(
        "INSERT INTO api_keys (id, name, mode, permission, token_hash, prefix, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            key.id,
            key.name,
            mode.as_str(),
            permission.as_str(),
            hash_token(&token).as_slice(),
            key.prefix,
            key.created_at
        ],
    )?;
    Ok((key, token))
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let mode: String = row.get("mode")?;
    let permission: String = row.get("permission")?;
    Ok(ApiKey {
        id: row.get("id")?,
        name: row.get("name")?,
        mode: Mode::parse(&mode).unwrap_or(Mode::Test),
        permission: Permission::parse(&permission).unwrap_or(Permission::SendingAccess),
        prefix: row.get("prefix")?,
        created_at: row.get("created_at")?,
        last_used_at: row.get("last_used_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

/// All keys, newest first, revoked ones included.
pub fn list(conn: &Connection) -> Result<Vec<ApiKey>, StoreError> {
    let mut stmt = conn.prepare("SELECT * FROM api_keys ORDER BY id DESC")?;
    let keys = stmt
        .query_map([], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(keys)
}

/// True when any key exists (a first start creates one).
pub fn any(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM api_keys LIMIT 1", [], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Revokes a key; false when there is no such key or it was already revoked.
pub fn revoke(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, time::now()],
    )?;
    Ok(n == 1)
}

/// The active (not revoked) key with this hash.
pub fn find_active(conn: &Connection, hash: &[u8; 32]) -> Result<Option<ApiKey>, StoreError> {
    let key = conn
        .query_row(
            "SELECT * FROM api_keys WHERE token_hash = ?1 AND revoked_at IS NULL",
            [hash.as_slice()],
            from_row,
        )
        .optional()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = generate_token(Mode::Live);
        assert!(t.starts_with("mf_live_sk_"));
        assert_eq!(t.len(), "mf_live_sk_".len() + 43);
        assert_eq!(token_mode(&t), Some(Mode::Live));
        assert_eq!(token_mode("mf_test_sk_short"), None);
        assert_eq!(
            token_mode(&format!("mf_test_sk_{}", "x".repeat(43))),
            Some(Mode::Test)
        );
    }
}

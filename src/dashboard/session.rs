//! Dashboard sign-in: administrators with argon2 password hashes, sessions in signed,
//! HttpOnly, SameSite cookies, a CSRF token per session, and a lock-out after repeated
//! failures. Only the SHA-256 of a session id is stored, so a copy of the database does not
//! hold usable sessions.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::address::EmailAddress;
use crate::store::{StoreError, ids, time};

/// The session cookie's name.
pub const COOKIE: &str = "mf_session";
/// How long a session lasts without signing in again.
pub const SESSION_SECS: i64 = 12 * 3600;
/// Failed sign-ins allowed within [`FAILURE_WINDOW_SECS`] before the lock-out.
pub const MAX_FAILURES: i64 = 5;
pub const FAILURE_WINDOW_SECS: i64 = 15 * 60;
pub const LOCKOUT_SECS: i64 = 15 * 60;
/// Shortest password `admin create` accepts.
pub const MIN_PASSWORD_LEN: usize = 10;

/// Why an admin could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("'{0}' is not a valid email address")]
    BadEmail(String),
    #[error("the password must have at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    #[error("an administrator with the email {0} already exists")]
    Exists(String),
    #[error("hashing the password failed")]
    Hash,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hashes a password with argon2 (random salt, the crate's recommended parameters).
pub fn hash_password(password: &str) -> Result<String, AdminError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| AdminError::Hash)
}

/// Creates an administrator. CPU-heavy (argon2): call from a blocking context.
pub fn create_admin(
    conn: &Connection,
    email: &str,
    password_hash: &str,
) -> Result<String, AdminError> {
    let id = ids::new_id("adm");
    let n = conn
        .execute(
            "INSERT INTO admins (id, email, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (email) DO NOTHING",
            params![id, email.to_lowercase(), password_hash, time::now()],
        )
        .map_err(StoreError::from)?;
    if n == 0 {
        return Err(AdminError::Exists(email.to_string()));
    }
    Ok(id)
}

/// Checks what `admin create` was given, before hashing.
pub fn check_new_admin(email: &str, password: &str) -> Result<String, AdminError> {
    let email = EmailAddress::parse(email)
        .map_err(|_| AdminError::BadEmail(email.to_string()))?
        .normalized();
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AdminError::WeakPassword);
    }
    Ok(email)
}

/// What a sign-in attempt came to.
pub enum SignIn {
    Ok { admin_id: String },
    Wrong,
    Locked { until: i64 },
}

/// What a sign-in needs to know about an email.
pub struct LoginState {
    /// The admin's id and password hash; None when there is no such admin.
    pub admin: Option<(String, String)>,
    /// Set while the email is locked out.
    pub locked_until: Option<i64>,
}

/// The stored hash of an admin and whether the email is locked out now.
pub fn login_state(conn: &Connection, email: &str) -> Result<LoginState, StoreError> {
    let email = email.trim().to_lowercase();
    let admin = conn
        .query_row(
            "SELECT id, password_hash FROM admins WHERE email = ?1",
            [&email],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let locked: Option<i64> = conn
        .query_row(
            "SELECT locked_until FROM login_failures WHERE email = ?1 AND locked_until > ?2",
            params![email, time::now()],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    Ok(LoginState {
        admin,
        locked_until: locked,
    })
}

/// Verifies a password against a stored hash (constant time inside argon2). CPU-heavy.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash to verify against when the email is unknown, so both cases take as long.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not-a-real-password-at-all").unwrap_or_default())
}

/// Counts a failed sign-in; locks the email out after too many in the window.
pub fn record_failure(conn: &Connection, email: &str) -> Result<(), StoreError> {
    let email = email.trim().to_lowercase();
    let now = time::now();
    conn.execute(
        "INSERT INTO login_failures (email, failures, first_at) VALUES (?1, 1, ?2)
         ON CONFLICT (email) DO UPDATE SET
            failures = CASE WHEN first_at < ?2 - ?3 THEN 1 ELSE failures + 1 END,
            first_at = CASE WHEN first_at < ?2 - ?3 THEN ?2 ELSE first_at END",
        params![email, now, FAILURE_WINDOW_SECS],
    )?;
    conn.execute(
        "UPDATE login_failures SET locked_until = ?2 + ?3, failures = 0
         WHERE email = ?1 AND failures >= ?4",
        params![email, now, LOCKOUT_SECS, MAX_FAILURES],
    )?;
    Ok(())
}

pub fn clear_failures(conn: &Connection, email: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM login_failures WHERE email = ?1",
        [email.trim().to_lowercase()],
    )?;
    Ok(())
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    pub admin_id: String,
    pub email: String,
    pub csrf_token: String,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn id_hash(session_id: &str) -> Vec<u8> {
    Sha256::digest(session_id.as_bytes()).to_vec()
}

/// Starts a session; returns the cookie value (`<id>.<signature>`).
pub fn start(conn: &Connection, admin_id: &str, secret: &[u8]) -> Result<String, StoreError> {
    let session_id = random_token();
    let now = time::now();
    conn.execute(
        "INSERT INTO admin_sessions (id_hash, admin_id, csrf_token, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id_hash(&session_id),
            admin_id,
            random_token(),
            now,
            now + SESSION_SECS
        ],
    )?;
    conn.execute("DELETE FROM admin_sessions WHERE expires_at < ?1", [now])?;
    Ok(format!("{session_id}.{}", sign(&session_id, secret)))
}

fn sign(value: &str, secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"dashboard-session:");
    mac.update(value.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// The session id of a cookie value whose signature holds.
pub fn verify_cookie(cookie: &str, secret: &[u8]) -> Option<String> {
    let (id, signature) = cookie.split_once('.')?;
    let expected = sign(id, secret);
    let ok: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into();
    ok.then(|| id.to_string())
}

/// The live session with this id.
pub fn find(conn: &Connection, session_id: &str) -> Result<Option<Session>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT s.admin_id, a.email, s.csrf_token FROM admin_sessions s
             JOIN admins a ON a.id = s.admin_id
             WHERE s.id_hash = ?1 AND s.expires_at > ?2",
            params![id_hash(session_id), time::now()],
            |r| {
                Ok(Session {
                    admin_id: r.get(0)?,
                    email: r.get(1)?,
                    csrf_token: r.get(2)?,
                })
            },
        )
        .optional()?)
}

pub fn end(conn: &Connection, session_id: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM admin_sessions WHERE id_hash = ?1",
        [id_hash(session_id)],
    )?;
    Ok(())
}

/// True when the form's CSRF token is the session's (constant time).
pub fn csrf_ok(session: &Session, given: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(session.csrf_token.as_bytes(), given.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_signed() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let value = format!("abc.{}", sign("abc", secret));
        assert_eq!(verify_cookie(&value, secret).as_deref(), Some("abc"));
        assert_eq!(verify_cookie("abc.forged", secret), None);
        assert_eq!(verify_cookie(&value, b"another secret"), None);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong", &h));
        assert!(check_new_admin("a@b.org", "short").is_err());
        assert!(check_new_admin("nope", "long enough password").is_err());
    }
}

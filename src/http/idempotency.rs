//! `Idempotency-Key` on the sending routes, as at Stripe: the same key with the same body
//! within 24 hours replays the first answer and creates nothing; another body → 409
//! `idempotency_conflict`; while the first request is still running → 409
//! `idempotency_in_progress`. A refused request (4xx) stores nothing, so the client can fix
//! the body and retry with the same key. Keys are per mode.
//!
//! The stored answer is written in the same transaction as what the request created
//! ([`IdempotencyRecord::save`]), so a crash can never leave one without the other. Requests in
//! flight are tracked in memory: one `serve` owns the database, so no other process can
//! hold a key.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::keys::Mode;
use crate::store::{Db, StoreError, time};

/// How long answers are kept for replay.
pub const RETENTION_SECS: i64 = 24 * 3600;

/// Keys of requests being processed now.
#[derive(Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<(Mode, String)>>>);

/// The right to process a request under a key; dropping it releases the key.
pub struct IdempotencyClaim {
    in_flight: InFlight,
    mode: Mode,
    key: String,
    route: String,
    request_hash: [u8; 32],
}

/// What [`begin`] decided.
pub enum Begin {
    /// No key given: process normally.
    NoKey,
    /// Process, then save the answer with the claim.
    Claimed(IdempotencyClaim),
    /// Answer with this earlier response.
    Replay(HttpResponse),
}

/// Checks the `Idempotency-Key` header of a request to `route` with body `body`.
pub async fn begin(
    db: &Db,
    in_flight: &InFlight,
    mode: Mode,
    req: &HttpRequest,
    route: &str,
    body: &[u8],
) -> Result<Begin, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(Begin::NoKey);
    };
    let key = value.to_str().unwrap_or("").to_string();
    if key.is_empty() || key.len() > 256 || key.chars().any(|c| c.is_control()) {
        return Err(ApiError::validation(
            "The Idempotency-Key header must be 1 to 256 printable characters.",
        )
        .with_field("Idempotency-Key"));
    }
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let request_hash: [u8; 32] = hasher.finalize().into();
    {
        let mut set = in_flight.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert((mode, key.clone())) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "A request with this Idempotency-Key is still being processed. Retry when it has finished.",
            ));
        }
    }
    let claim = IdempotencyClaim {
        in_flight: in_flight.clone(),
        mode,
        key: key.clone(),
        route: route.to_string(),
        request_hash,
    };
    let since = time::now() - RETENTION_SECS;
    let stored = db
        .read(move |conn| -> Result<_, StoreError> {
            Ok(conn
                .query_row(
                    "SELECT request_hash, status, body FROM idempotency_keys
                     WHERE mode = ?1 AND key = ?2 AND created_at > ?3",
                    params![mode.as_str(), key, since],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, Vec<u8>>(2)?,
                        ))
                    },
                )
                .optional()?)
        })
        .await?;
    match stored {
        None => Ok(Begin::Claimed(claim)),
        Some((hash, status, body)) => {
            drop(claim);
            if hash.as_slice() != request_hash.as_slice() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_conflict",
                    "This Idempotency-Key was already used with a different request body. Use a new key for a new request.",
                ));
            }
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            Ok(Begin::Replay(
                HttpResponse::build(status)
                    .content_type("application/json")
                    .insert_header(("Idempotent-Replayed", "true"))
                    .body(body),
            ))
        }
    }
}

impl IdempotencyClaim {
    /// What a write job needs to store the answer (see [`IdempotencyRecord::save`]).
    pub fn record(&self) -> IdempotencyRecord {
        IdempotencyRecord {
            mode: self.mode,
            key: self.key.clone(),
            route: self.route.clone(),
            request_hash: self.request_hash,
        }
    }
}

impl Drop for IdempotencyClaim {
    fn drop(&mut self) {
        let mut set = self.in_flight.0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&(self.mode, self.key.clone()));
    }
}

/// The part of a claim a write job carries.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    mode: Mode,
    key: String,
    route: String,
    request_hash: [u8; 32],
}

impl IdempotencyRecord {
    /// Stores the answer; call it inside the write that creates the request's data.
    pub fn save(&self, conn: &Connection, status: u16, body: &[u8]) -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO idempotency_keys (mode, key, route, request_hash, status, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
                self.mode.as_str(),
                self.key,
                self.route,
                self.request_hash.as_slice(),
                status,
                body,
                time::now()
            ])?;
        Ok(())
    }
}

/// Deletes answers older than the retention (run by the maintenance loop).
pub fn purge_expired(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at <= ?1",
        [time::now() - RETENTION_SECS],
    )?)
}

//! API-key authentication for every `/v1` route: a middleware on the `/v1` scope, so a new
//! route is protected by being added there. Missing key → 401 `missing_api_key`; unknown or
//! revoked → 401 `invalid_api_key`; a `sending_access` key outside the sending routes → 403
//! `restricted_api_key`. Keys are looked up by their SHA-256 (an index lookup on a hash leaks
//! nothing about the key) and cached for at most 5 seconds, so a revoked key stops working
//! within 5 seconds without a restart.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError, web};
use futures_util::future::{Ready, ready};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::ratelimit::RateLimiter;
use crate::keys::usage::KeyUsage;
use crate::keys::{self, ApiKey, Mode, Permission};
use crate::store::Db;

/// How long a looked-up key is trusted before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(4);

/// What authentication needs from the app.
pub struct AuthState {
    pub db: Db,
    cache: moka::sync::Cache<[u8; 32], Arc<ApiKey>>,
    pub limiter: Option<RateLimiter>,
    /// When each key was last used (written by `keys::usage::run`).
    pub usage: Arc<KeyUsage>,
}

impl AuthState {
    pub fn new(db: Db, requests_per_second: u32) -> AuthState {
        AuthState {
            db,
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
            limiter: RateLimiter::new(requests_per_second),
            usage: Arc::default(),
        }
    }

    /// Drops cached keys at once (after a revoke in this process).
    pub fn forget_keys(&self) {
        self.cache.invalidate_all();
    }

    async fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Arc<ApiKey>, ApiError> {
        let Some(header) = header else {
            return Err(missing());
        };
        let value = header.to_str().map_err(|_| invalid())?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_api_key",
                    "The Authorization header must be 'Bearer <API key>'.",
                ));
            }
        };
        let Some(claimed_mode) = keys::token_mode(token) else {
            return Err(invalid());
        };
        let hash = keys::hash_token(token);
        if let Some(key) = self.cache.get(&hash) {
            return Ok(key);
        }
        let found = self
            .db
            .read(move |conn| keys::find_active(conn, &hash))
            .await
            .map_err(ApiError::from)?;
        match found {
            Some(key) if key.mode == claimed_mode => {
                let key = Arc::new(key);
                self.cache.insert(hash, key.clone());
                Ok(key)
            }
            _ => Err(invalid()),
        }
    }
}

fn missing() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
        "No API key was given. Add the header 'Authorization: Bearer <your API key>'.",
    )
}

fn invalid() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "The API key is not valid: it is unknown or was revoked. Check the key or create a new one.",
    )
}

/// The routes a `sending_access` key may call.
const SENDING_ROUTES: [&str; 3] = ["/v1/emails/send", "/v1/emails/batch", "/v1/mail/send"];

fn is_sending_route(req: &ServiceRequest) -> bool {
    let path = req.path().trim_end_matches('/');
    req.method() == actix_web::http::Method::POST
        && SENDING_ROUTES
            .iter()
            .any(|r| bool::from(r.as_bytes().ct_eq(path.as_bytes())))
}

/// The middleware on the `/v1` scope.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AuthState>>().cloned() else {
        return Ok(req.into_response(ApiError::internal().error_response()));
    };
    let key = match state.authenticate(req.headers().get(AUTHORIZATION)).await {
        Ok(key) => key,
        Err(err) => return Ok(req.into_response(err.error_response())),
    };
    state.usage.note(&key.id, crate::store::time::now());
    let limits = match &state.limiter {
        Some(limiter) => match limiter.check(&key.id) {
            Ok(headers) => Some(headers),
            Err(err) => return Ok(req.into_response(err.error_response())),
        },
        None => None,
    };
    let mut res = if key.permission == Permission::SendingAccess && !is_sending_route(&req) {
        let err = ApiError::new(
            StatusCode::FORBIDDEN,
            "restricted_api_key",
            "This API key can only send (POST /v1/emails/send, /v1/emails/batch, /v1/mail/send). Use a full_access key for this route.",
        );
        req.into_response(err.error_response())
    } else {
        req.extensions_mut().insert(Authenticated(key));
        next.call(req).await?
    };
    if let Some(limits) = limits {
        let headers = res.headers_mut();
        for (name, value) in limits.pairs() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(lower(name)), v);
            }
        }
    }
    Ok(res)
}

fn lower(name: &'static str) -> &'static str {
    match name {
        "RateLimit-Limit" => "ratelimit-limit",
        "RateLimit-Remaining" => "ratelimit-remaining",
        _ => "ratelimit-reset",
    }
}

/// The key of the request, for handlers: `async fn h(auth: Authenticated, ...)`.
#[derive(Clone)]
pub struct Authenticated(pub Arc<ApiKey>);

impl Authenticated {
    pub fn mode(&self) -> Mode {
        self.0.mode
    }

    pub fn key_id(&self) -> &str {
        &self.0.id
    }
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Authenticated>()
                .cloned()
                .ok_or_else(missing),
        )
    }
}

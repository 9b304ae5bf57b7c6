//! Per-key rate limits (`limits.requests_per_second`, 0 = off), GCRA from `governor`.
//! While a limit is set every authenticated answer carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset`; over it the answer is 429 with `Retry-After`.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

use super::error::ApiError;

type Limiter =
    Gcra<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct RateLimiter {
    limit: u32,
    limiter: Limiter,
    clock: DefaultClock,
}

/// The three header values of one decision.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

impl RateLimitHeaders {
    pub fn pairs(&self) -> [(&'static str, String); 3] {
        [
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", self.remaining.to_string()),
            ("RateLimit-Reset", self.reset_secs.to_string()),
        ]
    }
}

impl RateLimiter {
    /// None when `per_second` is 0 (no limit).
    pub fn new(per_second: u32) -> Option<RateLimiter> {
        let n = NonZeroU32::new(per_second)?;
        let limiter =
            Gcra::keyed(Quota::per_second(n)).with_middleware::<StateInformationMiddleware>();
        Some(RateLimiter {
            limit: per_second,
            limiter,
            clock: DefaultClock::default(),
        })
    }

    /// Counts one request of `key_id`: the headers to send, or the 429 to answer.
    pub fn check(&self, key_id: &str) -> Result<RateLimitHeaders, ApiError> {
        match self.limiter.check_key(&key_id.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(RateLimitHeaders {
                    limit: self.limit,
                    remaining,
                    reset_secs: u64::from(remaining < self.limit),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let secs = secs.max(1);
                let headers = RateLimitHeaders {
                    limit: self.limit,
                    remaining: 0,
                    reset_secs: secs,
                };
                let mut err = ApiError::new(
                    actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    format!(
                        "This API key is limited to {} requests per second. Retry after {secs} second(s).",
                        self.limit
                    ),
                )
                .with_header("Retry-After", secs.to_string());
                for (name, value) in headers.pairs() {
                    err = err.with_header(name, value);
                }
                Err(err)
            }
        }
    }

    /// Forgets keys that have not been seen lately (called by the maintenance loop).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

//! Live-mode delivery policy over the SMTP pool: where a group of recipients goes (the relay,
//! or the MX hosts of their domain in direct mode) and what each answer means for them.
//!
//! - accepted → `sent` (relay: the smarthost took it) or `delivered` (direct: the
//!   recipient's own mail server took it);
//! - 4xx, a session fault (connect, TLS, timeout, broken connection) or a temporary DNS
//!   failure → deferred (retried on `delivery.retry_schedule`, `failed` after the last);
//! - 5xx, a null MX (RFC 7505), a domain that does not exist or has no mail host →
//!   bounced, classified by [`super::bounce::classify`].

use hickory_resolver::TokioResolver;

use super::mx::build_resolver;
use super::queue::{AttemptResult, Bounce, Claimed, Message, Outcome};
use super::smtp::{
    self, DirectError, PoolSetupError, RcptResult, SmtpPool, SmtpSettings, StartTlsPolicy, TlsMode,
};
use crate::config::{Config, DeliveryMode, DirectStartTls, RelayTls};

/// Sends live-mode mail through one [`SmtpPool`] shared by every delivery task.
pub struct LiveTransport {
    pool: SmtpPool,
    route: Route,
}

enum Route {
    /// Everything goes to the smarthost of `[delivery.relay]`.
    Relay(smtp::Destination),
    /// MX lookup per recipient domain.
    Direct {
        /// `Err` holds why the resolver could not be set up (every attempt is deferred
        /// with that message, so the operator sees it on the email). Boxed: the resolver
        /// is large and there is one route per process.
        resolver: Result<Box<TokioResolver>, String>,
        port: u16,
        starttls: StartTlsPolicy,
    },
}

/// The pool settings for this configuration.
pub fn smtp_settings(config: &Config) -> SmtpSettings {
    let t = &config.delivery.tuning;
    SmtpSettings {
        helo_name: config.delivery.hostname.clone(),
        connect_timeout: t.connect_timeout,
        command_timeout: t.command_timeout,
        data_timeout: t.data_timeout,
        idle_timeout: t.idle_timeout,
        max_messages_per_connection: t.max_messages_per_connection,
        max_sessions_per_destination: config.delivery.sessions_per_destination(),
    }
}

impl LiveTransport {
    /// Creates the pool (call inside the worker's runtime: it starts the idle reaper) and,
    /// in direct mode, the resolver from `dns.nameservers`.
    pub fn new(config: &Config) -> Result<LiveTransport, PoolSetupError> {
        let pool = SmtpPool::new(smtp_settings(config))?;
        let route = match config.delivery.mode {
            DeliveryMode::Relay => {
                let relay = &config.delivery.relay;
                let tls = match relay.tls {
                    RelayTls::None => TlsMode::None,
                    RelayTls::Starttls => TlsMode::StartTls,
                    RelayTls::Implicit => TlsMode::Implicit,
                };
                let mut dest = smtp::Destination::relay(
                    relay.host.clone(),
                    relay.port,
                    tls,
                    Some((relay.username.clone(), relay.password.clone())),
                );
                dest.allow_invalid_certs = relay.accept_invalid_certs_for_tests;
                Route::Relay(dest)
            }
            DeliveryMode::Direct => {
                let nameservers: Vec<_> = config.dns.nameservers.iter().map(|n| n.0).collect();
                let resolver = build_resolver(&nameservers)
                    .map(Box::new)
                    .map_err(|e| e.to_string());
                if let Err(e) = &resolver {
                    tracing::error!(error = %e, "direct delivery cannot resolve MX hosts");
                }
                Route::Direct {
                    resolver,
                    port: config.delivery.direct.port,
                    starttls: match config.delivery.direct.starttls {
                        DirectStartTls::Opportunistic => StartTlsPolicy::Opportunistic,
                        DirectStartTls::Required => StartTlsPolicy::Required,
                    },
                }
            }
        };
        Ok(LiveTransport { pool, route })
    }

    /// The pool (for the `smtp_sessions_open` metric).
    pub fn pool(&self) -> &SmtpPool {
        &self.pool
    }

    /// Closes idle sessions; sessions in use finish their transaction first.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    /// Delivers `message` to every recipient of `group` (one message, one destination:
    /// the relay, or one recipient domain in direct mode) in one SMTP transaction.
    pub async fn deliver(&self, message: &Message, group: Vec<Claimed>) -> Vec<Outcome> {
        let recipients: Vec<String> = group.iter().map(|c| c.address.clone()).collect();
        match &self.route {
            Route::Relay(dest) => {
                match self
                    .pool
                    .deliver(dest, &message.envelope_from, &recipients, &message.raw)
                    .await
                {
                    Ok(results) => per_recipient(group, results, true),
                    Err(e) => all(group, AttemptResult::Deferred(e.to_string())),
                }
            }
            Route::Direct {
                resolver,
                port,
                starttls,
            } => {
                let resolver = match resolver {
                    Ok(r) => r,
                    Err(e) => return all(group, AttemptResult::Deferred(e.clone())),
                };
                let Some(domain) = group.first().map(|c| c.domain.clone()) else {
                    return Vec::new();
                };
                let result = self
                    .pool
                    .deliver_direct(
                        resolver,
                        &domain,
                        *port,
                        *starttls,
                        &message.envelope_from,
                        &recipients,
                        &message.raw,
                    )
                    .await;
                match result {
                    Ok(results) => per_recipient(group, results, false),
                    Err(DirectError::Mx(e)) if e.is_permanent() => all(
                        group,
                        AttemptResult::Bounced(Bounce::from_reply(&e.reply())),
                    ),
                    Err(DirectError::Mx(e)) => {
                        all(group, AttemptResult::Deferred(e.reply().to_string()))
                    }
                    Err(e @ DirectError::Unreachable { .. }) => {
                        all(group, AttemptResult::Deferred(e.to_string()))
                    }
                }
            }
        }
    }
}

/// The same result for every recipient of the group.
pub fn all(group: Vec<Claimed>, result: AttemptResult) -> Vec<Outcome> {
    group
        .into_iter()
        .map(|claimed| Outcome {
            claimed,
            result: result.clone(),
            retry_in: None,
        })
        .collect()
}

/// Maps the transaction's result for each recipient (same order as the group).
fn per_recipient(group: Vec<Claimed>, results: Vec<RcptResult>, relay: bool) -> Vec<Outcome> {
    let mut results = results.into_iter();
    group
        .into_iter()
        .map(|claimed| {
            let result = match results.next().map(|r| r.outcome) {
                Some(smtp::Outcome::Accepted(reply)) if relay => {
                    AttemptResult::Sent(reply.to_string())
                }
                Some(smtp::Outcome::Accepted(reply)) => AttemptResult::Delivered(reply.to_string()),
                Some(smtp::Outcome::Rejected(reply)) => {
                    AttemptResult::Bounced(Bounce::from_reply(&reply))
                }
                Some(smtp::Outcome::Deferred(reply)) => AttemptResult::Deferred(reply.to_string()),
                None => AttemptResult::Deferred("the SMTP session gave no answer".to_string()),
            };
            Outcome {
                claimed,
                result,
                retry_in: None,
            }
        })
        .collect()
}

//! Live-mode delivery: hands a message to the relay (relay mode) and maps each recipient's
//! SMTP answer to an outcome: 2xx → `sent`, 4xx and faults → deferred, 5xx → bounced.

use std::sync::Arc;
use std::time::Duration;

use mail_send::SmtpClientBuilder;
use mail_send::smtp::message::Parameters;

use super::queue::{AttemptResult, Claimed, Outcome};
use crate::config::{Config, DeliveryMode, RelayTls};
use crate::ops::metrics::Metrics;

const TIMEOUT: Duration = Duration::from_secs(60);

pub struct LiveTransport {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl LiveTransport {
    pub fn new(config: &Arc<Config>, metrics: Arc<Metrics>) -> LiveTransport {
        LiveTransport {
            config: config.clone(),
            metrics,
        }
    }

    pub async fn shutdown(&self) {}

    /// Delivers `raw` to every recipient of `group` (one email, one destination).
    pub async fn deliver(
        &self,
        envelope_from: &str,
        raw: &[u8],
        group: Vec<Claimed>,
    ) -> Vec<Outcome> {
        if self.config.delivery.mode == DeliveryMode::Direct {
            return defer_all(group, "direct delivery is not available in this build");
        }
        let relay = &self.config.delivery.relay;
        let builder = match SmtpClientBuilder::new(relay.host.clone(), relay.port) {
            Ok(b) => b,
            Err(e) => return defer_all(group, &format!("bad relay host: {e}")),
        };
        let mut builder = builder
            .helo_host(self.config.delivery.hostname.clone())
            .timeout(TIMEOUT)
            .implicit_tls(relay.tls == RelayTls::Implicit);
        if !relay.username.is_empty() {
            builder = builder.credentials((relay.username.clone(), relay.password.clone()));
        }
        self.metrics.smtp_sessions_open.inc();
        let result = if relay.tls == RelayTls::None {
            match builder.connect_plain().await {
                Ok(mut client) => transaction(&mut client, envelope_from, raw, group).await,
                Err(e) => defer_all(group, &format!("cannot connect to the relay: {e}")),
            }
        } else {
            match builder.connect().await {
                Ok(mut client) => transaction(&mut client, envelope_from, raw, group).await,
                Err(e) => defer_all(group, &format!("cannot connect to the relay: {e}")),
            }
        };
        self.metrics.smtp_sessions_open.dec();
        result
    }
}

fn defer_all(group: Vec<Claimed>, why: &str) -> Vec<Outcome> {
    group
        .into_iter()
        .map(|c| Outcome {
            claimed: c,
            result: AttemptResult::Deferred(why.to_string()),
            retry_in: None,
        })
        .collect()
}

fn reply_of(err: &mail_send::Error) -> Option<(u16, String)> {
    match err {
        mail_send::Error::UnexpectedReply(r) => {
            Some((r.code(), format!("{} {}", r.code(), r.message())))
        }
        _ => None,
    }
}

async fn transaction<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    client: &mut mail_send::SmtpClient<T>,
    envelope_from: &str,
    raw: &[u8],
    group: Vec<Claimed>,
) -> Vec<Outcome> {
    if let Err(e) = client
        .mail_from(envelope_from, &Parameters::default())
        .await
    {
        return match reply_of(&e) {
            Some((code, text)) if code >= 500 => group
                .into_iter()
                .map(|c| Outcome {
                    claimed: c,
                    result: AttemptResult::Bounced {
                        reply: text.clone(),
                        hard: false,
                    },
                    retry_in: None,
                })
                .collect(),
            Some((_, text)) => defer_all(group, &text),
            None => defer_all(group, &e.to_string()),
        };
    }
    let mut accepted = Vec::new();
    let mut outcomes = Vec::new();
    for c in group {
        match client.rcpt_to(&c.address, &Parameters::default()).await {
            Ok(()) => accepted.push(c),
            Err(e) => {
                let result = match reply_of(&e) {
                    Some((code, text)) if code >= 500 => AttemptResult::Bounced {
                        reply: text,
                        hard: true,
                    },
                    Some((_, text)) => AttemptResult::Deferred(text),
                    None => AttemptResult::Deferred(e.to_string()),
                };
                outcomes.push(Outcome {
                    claimed: c,
                    result,
                    retry_in: None,
                });
            }
        }
    }
    if accepted.is_empty() {
        let _ = client.rset().await;
        return outcomes;
    }
    let data = client.data(raw).await;
    for c in accepted {
        let result = match &data {
            Ok(()) => AttemptResult::Sent("250 2.0.0 Ok".into()),
            Err(e) => match reply_of(e) {
                Some((code, text)) if code >= 500 => AttemptResult::Bounced {
                    reply: text,
                    hard: true,
                },
                Some((_, text)) => AttemptResult::Deferred(text),
                None => AttemptResult::Deferred(e.to_string()),
            },
        };
        outcomes.push(Outcome {
            claimed: c,
            result,
            retry_in: None,
        });
    }
    let _ = client.rset().await;
    outcomes
}

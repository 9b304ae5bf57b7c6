//! Where mail for a domain goes: MX lookup with the RFC 5321 §5.1 rules.
//!
//! `resolve_mx` returns the mail hosts in the order to try them, each with its addresses.
//! It reports *why* nothing can be delivered (null MX, no such domain, DNS trouble) and
//! leaves retry decisions to the worker: [`MxError::is_permanent`] says which answers
//! will not change by waiting.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig},
    net::{NetError, runtime::TokioRuntimeProvider},
    proto::rr::RData,
};
use rand::seq::SliceRandom;

use super::smtp::Reply;

/// One mail exchanger for a domain, with the addresses to connect to (IPv4 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The exchange's host name without the trailing dot (also the TLS server name).
    pub host: String,
    /// MX preference; 0 for the implicit MX (the domain's own A/AAAA records).
    pub preference: u16,
    /// The host's addresses; never empty in a successful answer.
    pub addrs: Vec<IpAddr>,
}

/// Why a domain has no usable mail host.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MxError {
    /// The domain publishes `MX 0 .` (RFC 7505): it accepts no mail at all. Permanent.
    #[error("{domain} does not accept mail (null MX)")]
    NullMx { domain: String },
    /// NXDOMAIN: the domain does not exist. Permanent.
    #[error("domain {domain} does not exist")]
    NoSuchDomain { domain: String },
    /// The domain exists but neither its MX hosts nor the domain itself have an address.
    /// Permanent (RFC 5321 §5.1: nothing to connect to).
    #[error("no mail host with an address for {domain}")]
    NoAddresses { domain: String },
    /// The name is not a valid domain name. Permanent.
    #[error("invalid domain name {domain:?}: {message}")]
    InvalidDomain { domain: String, message: String },
    /// SERVFAIL, timeouts, unreachable name servers: try again later.
    #[error("temporary DNS failure for {domain}: {message}")]
    Temporary { domain: String, message: String },
}

impl MxError {
    /// True when waiting will not help (bounce now); false for [`MxError::Temporary`].
    pub fn is_permanent(&self) -> bool {
        !matches!(self, MxError::Temporary { .. })
    }

    /// A reply standing for this failure (made up here, no server sent it), so the
    /// recipient's event and [`super::bounce::classify`] read like any other refusal:
    /// null MX is `556 5.1.10`, no such domain `550 5.1.2`, no address `550 5.4.4`,
    /// temporary trouble `451 4.4.3`.
    pub fn reply(&self) -> Reply {
        let (code, enhanced) = match self {
            MxError::NullMx { .. } => (556, (5, 1, 10)),
            MxError::NoSuchDomain { .. } => (550, (5, 1, 2)),
            MxError::NoAddresses { .. } => (550, (5, 4, 4)),
            MxError::InvalidDomain { .. } => (553, (5, 1, 2)),
            MxError::Temporary { .. } => (451, (4, 4, 3)),
        };
        Reply {
            code,
            enhanced: Some(enhanced),
            text: self.to_string(),
        }
    }
}

/// Errors building a resolver (an unreadable system configuration).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverSetupError(String);

/// Builds the resolver for MX lookups and domain checks.
///
/// `nameservers` is `dns.nameservers`: empty means the system's configuration
/// (`/etc/resolv.conf`); otherwise those servers over UDP with TCP fallback, without the
/// hosts file. Both query A and AAAA for hosts. Records are cached for their TTL only, so
/// a test DNS server answering with TTL 0 is asked every time.
pub fn build_resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver, ResolverSetupError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| ResolverSetupError(e.to_string()))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        let config = ResolverConfig::from_name_servers(servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = Duration::from_secs(3);
        builder
    };
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| ResolverSetupError(e.to_string()))
}

/// Resolves the mail hosts for `domain` (an ASCII/punycode domain, without `@`).
///
/// MX records come in preference order, equal preferences shuffled (RFC 5321 §5.1 load
/// spreading). A domain without MX records but with A/AAAA records is its own mail host
/// (implicit MX, preference 0). MX hosts that do not resolve are left out; if none is
/// left the answer is [`MxError::NoAddresses`], or [`MxError::Temporary`] when a lookup
/// failed temporarily.
pub async fn resolve_mx(resolver: &TokioResolver, domain: &str) -> Result<Vec<MxHost>, MxError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || domain.contains(['@', ' ', '[', ']']) {
        return Err(MxError::InvalidDomain {
            message: "not a host name".to_string(),
            domain,
        });
    }
    let fqdn = format!("{domain}.");

    let exchanges = match resolver.mx_lookup(fqdn.as_str()).await {
        Ok(lookup) => {
            let mut exchanges: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect();
            // RFC 7505: a null MX is the single record `0 .`; any other MX wins over it.
            let is_null = |(_, host): &(u16, String)| host.trim_end_matches('.').is_empty();
            if !exchanges.is_empty() && exchanges.iter().all(is_null) {
                return Err(MxError::NullMx { domain });
            }
            exchanges.retain(|e| !is_null(e));
            exchanges
        }
        Err(e) => classify_lookup_error(&domain, e)?,
    };

    if exchanges.is_empty() {
        // Implicit MX (RFC 5321 §5.1): the domain exists (the MX answer was NOERROR).
        return match lookup_addrs(resolver, &fqdn).await {
            Ok(addrs) if !addrs.is_empty() => Ok(vec![MxHost {
                host: domain,
                preference: 0,
                addrs,
            }]),
            Ok(_) => Err(MxError::NoAddresses { domain }),
            Err(message) => Err(MxError::Temporary { domain, message }),
        };
    }

    let mut hosts = order_exchanges(exchanges);
    let mut temporary = None;
    let mut resolved = Vec::with_capacity(hosts.len());
    for (preference, host) in hosts.drain(..) {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        match lookup_addrs(resolver, &format!("{name}.")).await {
            Ok(addrs) if !addrs.is_empty() => resolved.push(MxHost {
                host: name,
                preference,
                addrs,
            }),
            Ok(_) => {}
            Err(message) => temporary = Some(message),
        }
    }
    match (resolved.is_empty(), temporary) {
        (false, _) => Ok(resolved),
        (true, Some(message)) => Err(MxError::Temporary { domain, message }),
        (true, None) => Err(MxError::NoAddresses { domain }),
    }
}

/// Maps a failed MX lookup: NXDOMAIN is permanent, "no records" means fall back to the
/// implicit MX (an empty list), anything else is temporary.
fn classify_lookup_error(domain: &str, e: NetError) -> Result<Vec<(u16, String)>, MxError> {
    if e.is_nx_domain() {
        Err(MxError::NoSuchDomain {
            domain: domain.to_string(),
        })
    } else if e.is_no_records_found() {
        Ok(Vec::new())
    } else {
        Err(MxError::Temporary {
            domain: domain.to_string(),
            message: e.to_string(),
        })
    }
}

/// Sorts by preference and shuffles hosts of equal preference.
fn order_exchanges(mut exchanges: Vec<(u16, String)>) -> Vec<(u16, String)> {
    let mut rng = rand::rng();
    exchanges.shuffle(&mut rng);
    // A stable sort keeps the shuffled order within each preference.
    exchanges.sort_by_key(|(preference, _)| *preference);
    exchanges.dedup_by(|a, b| a.1.eq_ignore_ascii_case(&b.1));
    exchanges
}

/// A and AAAA addresses of a host, IPv4 first; `Ok(empty)` when the host has none or does
/// not exist, `Err` for a temporary failure.
async fn lookup_addrs(resolver: &TokioResolver, fqdn: &str) -> Result<Vec<IpAddr>, String> {
    match resolver.lookup_ip(fqdn).await {
        Ok(lookup) => {
            let mut addrs: Vec<IpAddr> = lookup.iter().collect();
            addrs.sort_by_key(|ip| ip.is_ipv6());
            addrs.dedup();
            Ok(addrs)
        }
        Err(e) if e.is_no_records_found() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_sorted_by_preference() {
        let ordered = order_exchanges(vec![
            (20, "c.".into()),
            (10, "a.".into()),
            (10, "b.".into()),
            (5, "z.".into()),
        ]);
        let prefs: Vec<u16> = ordered.iter().map(|(p, _)| *p).collect();
        assert_eq!(prefs, [5, 10, 10, 20]);
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let input: Vec<(u16, String)> = (0..8).map(|i| (10, format!("mx{i}."))).collect();
        let first_hosts: std::collections::HashSet<String> = (0..64)
            .map(|_| order_exchanges(input.clone())[0].1.clone())
            .collect();
        assert!(
            first_hosts.len() > 1,
            "equal preferences were never shuffled"
        );
    }

    #[test]
    fn replies_classify_as_domain_bounces() {
        use super::super::bounce::{BounceCategory, BounceKind, classify};
        let null = MxError::NullMx {
            domain: "x.test".into(),
        };
        assert_eq!(
            null.reply().to_string(),
            "556 5.1.10 x.test does not accept mail (null MX)"
        );
        let c = classify(&null.reply());
        assert_eq!(
            (c.kind, c.category),
            (BounceKind::Hard, BounceCategory::Domain)
        );
        let temporary = MxError::Temporary {
            domain: "x.test".into(),
            message: "timeout".into(),
        };
        assert_eq!(classify(&temporary.reply()).kind, BounceKind::Soft);
    }

    #[test]
    fn permanence() {
        assert!(MxError::NullMx { domain: "x".into() }.is_permanent());
        assert!(
            !MxError::Temporary {
                domain: "x".into(),
                message: "timeout".into()
            }
            .is_permanent()
        );
    }
}

//! Where a webhook may be delivered: the URL rules and the SSRF guard.
//!
//! Only `http` and `https` URLs with a host. Unless `webhooks.allow_private_targets` is on,
//! a host that is, or resolves to, an address a server should never be made to call for a
//! stranger (loopback, private, link-local, CGNAT, multicast, unspecified, reserved, and
//! the IPv6 forms that embed such an IPv4 address) is refused: at registration and again at
//! every delivery. The delivery connects to the address that was checked: the HTTP client
//! resolves names only through [`VettedResolver`], which hands out vetted addresses alone,
//! so a DNS answer that changes between the check and the connection (DNS rebinding)
//! changes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use url::{Host, Url};

/// Longest URL accepted.
const MAX_URL_LEN: usize = 2048;

/// A URL that passed the syntax rules (not yet the address rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a URL is refused. The messages are shown to the user as they are.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("'url' is not a valid URL ({0}); write it like \"https://example.com/webhooks\".")]
    Malformed(String),
    #[error("'url' must be an http or https URL (got '{0}:').")]
    Scheme(String),
    #[error("'url' is longer than {MAX_URL_LEN} characters.")]
    TooLong,
    #[error(
        "'url' must not contain a user name or password; authenticate the calls with the signature instead."
    )]
    Credentials,
    #[error(
        "The webhook host {host} is {reason} ({ip}); webhooks may only call public addresses (the server setting webhooks.allow_private_targets allows private ones)."
    )]
    Forbidden {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("The webhook host {0} does not resolve to any address.")]
    NoAddress(String),
    #[error("The webhook host {host} could not be resolved: {message}.")]
    Dns { host: String, message: String },
}

impl WebhookUrl {
    /// Checks the syntax: a parseable absolute `http(s)` URL with a host and no credentials.
    pub fn parse(raw: &str) -> Result<WebhookUrl, TargetError> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_LEN {
            return Err(TargetError::TooLong);
        }
        let url = Url::parse(raw).map_err(|e| TargetError::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme(url.scheme().to_string()));
        }
        match url.host() {
            None => return Err(TargetError::Malformed("it has no host".into())),
            Some(Host::Domain("")) => {
                return Err(TargetError::Malformed("it has no host".into()));
            }
            _ => {}
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        Ok(WebhookUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host as an IP address when the URL names one directly.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        match self.0.host()? {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        }
    }

    /// The host name to resolve, when it is a name.
    pub fn domain(&self) -> Option<&str> {
        match self.0.host()? {
            Host::Domain(d) => Some(d),
            _ => None,
        }
    }
}

/// Why `ip` may not be called, or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified ('this network') address",
        (127, _, _) => "a loopback address",
        (10, _, _) | (192, 168, _) => "a private address",
        (172, b, _) if (16..=31).contains(&b) => "a private address",
        (169, 254, _) => "a link-local address",
        (100, b, _) if (64..=127).contains(&b) => "a shared (CGNAT) address",
        (192, 0, 0) | (192, 88, 99) => "a reserved address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18 | 19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // ::ffff:a.b.c.d reaches a.b.c.d: judge the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    // ::a.b.c.d (IPv4-compatible, deprecated): never a legitimate destination.
    if s[..6] == [0; 6] {
        return Some("an IPv4-compatible IPv6 address");
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s[0] {
        // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address; 64:ff9b:1::/48 is local.
        0x0064 if s[1] == 0xff9b => {
            if s[2..6] == [0; 4] {
                return v4_reason(embedded(s[6], s[7]));
            }
            return Some("a local NAT64 address");
        }
        0x0100 if s[1..4] == [0; 3] => return Some("a discard-only address"),
        // 6to4 (2002::/16) reaches the IPv4 address in bits 16..48.
        0x2002 => return v4_reason(embedded(s[1], s[2])),
        0x2001 => {
            return match s[1] {
                0x0000 => Some("a Teredo tunnel address"),
                0x0002 if s[2] == 0 => Some("a benchmarking address"),
                0x0db8 => Some("a documentation address"),
                0x0010..=0x002f => Some("a reserved address"),
                _ => None,
            };
        }
        0x3fff if s[1] <= 0x0fff => return Some("a documentation address"),
        _ => {}
    }
    match s[0] & 0xffc0 {
        0xfe80 => return Some("a link-local address"),
        0xfec0 => return Some("a site-local address"),
        _ => {}
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("a private (unique local) address");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some("a multicast address");
    }
    None
}

/// Resolves webhook hosts with the server's resolver (`dns.nameservers`) and applies the
/// address rule.
pub struct Guard {
    resolver: TokioResolver,
    allow_private: bool,
}

impl Guard {
    pub fn new(resolver: TokioResolver, allow_private: bool) -> Guard {
        Guard {
            resolver,
            allow_private,
        }
    }

    /// True when `webhooks.allow_private_targets` is on.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Checks one address against the rule.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), TargetError> {
        if self.allow_private {
            return Ok(());
        }
        match forbidden_reason(ip) {
            Some(reason) => Err(TargetError::Forbidden {
                host: host.to_string(),
                ip,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// The addresses of `host`, all of them vetted: one forbidden address refuses the host
    /// (a name that mixes public and private answers is not to be trusted).
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, TargetError> {
        let host = host.trim_end_matches('.');
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            self.check_ip(host, ip)?;
            return Ok(vec![ip]);
        }
        let fqdn = format!("{host}.");
        let lookup = match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                return Err(TargetError::NoAddress(host.to_string()));
            }
            Err(e) => {
                return Err(TargetError::Dns {
                    host: host.to_string(),
                    message: e.to_string(),
                });
            }
        };
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.sort_by_key(|ip| ip.is_ipv6());
        addrs.dedup();
        if addrs.is_empty() {
            return Err(TargetError::NoAddress(host.to_string()));
        }
        for ip in &addrs {
            self.check_ip(host, *ip)?;
        }
        Ok(addrs)
    }

    /// The check made when an endpoint is registered. With private targets allowed there is
    /// nothing to check (and no DNS lookup: the host may not exist yet).
    pub async fn check_url(&self, url: &WebhookUrl) -> Result<(), TargetError> {
        if self.allow_private {
            return Ok(());
        }
        match (url.ip_literal(), url.domain()) {
            (Some(ip), _) => self.check_ip(&ip.to_string(), ip),
            (None, Some(domain)) => self.resolve(domain).await.map(|_| ()),
            (None, None) => Err(TargetError::Malformed("it has no host".into())),
        }
    }
}

/// The HTTP client's only resolver: every address it returns passed [`Guard::resolve`].
/// (URLs with an IP address as host are checked before the request: the client does not
/// resolve those.)
pub struct VettedResolver(pub Arc<Guard>);

impl reqwest::dns::Resolve for VettedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = guard.resolve(&host).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(s: &str) -> bool {
        forbidden_reason(s.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001::1",
            "2001:db8::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
        ] {
            assert!(forbidden(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn url_syntax() {
        assert!(WebhookUrl::parse("https://example.com/hook").is_ok());
        assert!(WebhookUrl::parse("http://[::1]:8080/").is_ok());
        assert!(matches!(
            WebhookUrl::parse("ftp://example.com/"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            WebhookUrl::parse("not a url"),
            Err(TargetError::Malformed(_))
        ));
        assert!(matches!(
            WebhookUrl::parse("https://u:p@example.com/"),
            Err(TargetError::Credentials)
        ));
        assert!(WebhookUrl::parse("file:///etc/passwd").is_err());
        let long = format!("https://example.com/{}", "a".repeat(3000));
        assert_eq!(WebhookUrl::parse(&long), Err(TargetError::TooLong));
    }
}

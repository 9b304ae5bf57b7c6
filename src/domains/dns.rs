//! A domain's DNS records: what to publish ([`records`]) and whether it is published
//! ([`check`]), looked up with hickory-resolver through `dns.nameservers`.
//!
//! Comparison rules (README "Sending domains"):
//! - TXT records may be split into several character-strings; the strings of one record are
//!   joined with nothing between them (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
//! - DKIM: a tag list, so tag order and whitespace do not matter; the record matches when
//!   its `p=` is our public key, `k=` is absent or `rsa`, `v=` absent or `DKIM1`, `h=` absent
//!   or naming sha256. Other tags (`t=`, `n=`, `s=`) are allowed. A repeated tag makes the
//!   record invalid (RFC 6376 §3.2).
//! - SPF: exactly one `v=spf1` record at the name (two are a permanent error, RFC 7208
//!   §4.5), and every mechanism of the expected value other than `all` appears in it with a
//!   pass qualifier before its `all` term. So `v=spf1 include:_spf.google.com a:mail.acme.test
//!   -all` is fine when `a:mail.acme.test` is expected.
//! - DMARC: exactly one `v=DMARC1` record at `_dmarc.<name>` with a `p=` of `none`,
//!   `quarantine` or `reject` (RFC 7489 §6.6.3). Any policy counts.
//! - RETURN_PATH: an MX of the bounce subdomain whose exchange is `delivery.hostname`, any
//!   preference.
//!
//! A record with nothing published is `pending`; with something else published, `failed`
//! and `found` lists what is there. A lookup that fails (timeout, SERVFAIL) leaves the record
//! `pending`: nothing is known.

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;

use super::BOUNCE_SUBDOMAIN;
use super::store::{Check, Checks, DomainRow, RecordStatus};
use crate::config::Config;

/// The MX preference suggested for the return-path record.
pub const RETURN_PATH_PRIORITY: u16 = 10;

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    /// `DKIM`, `SPF`, `DMARC` or `RETURN_PATH`.
    pub record: &'static str,
    /// `TXT` or `MX`.
    pub kind: &'static str,
    pub name: String,
    pub value: String,
    pub priority: Option<u16>,
}

/// The SPF value to publish: `domains.spf` with `{hostname}` = `delivery.hostname`.
pub fn spf_value(config: &Config) -> String {
    config
        .domains
        .spf
        .replace("{hostname}", &config.delivery.hostname)
}

/// The DMARC record to start with: monitoring only (see the README on tightening it).
pub const DMARC_VALUE: &str = "v=DMARC1; p=none; adkim=r; aspf=r;";

/// The records of a domain, in the API's order: DKIM, SPF, DMARC, RETURN_PATH.
pub fn records(row: &DomainRow, config: &Config) -> [RecordSpec; 4] {
    [
        RecordSpec {
            record: "DKIM",
            kind: "TXT",
            name: format!("{}._domainkey.{}", row.selector, row.name),
            value: format!("v=DKIM1; k=rsa; p={}", row.public_key),
            priority: None,
        },
        RecordSpec {
            record: "SPF",
            kind: "TXT",
            name: row.name.clone(),
            value: spf_value(config),
            priority: None,
        },
        RecordSpec {
            record: "DMARC",
            kind: "TXT",
            name: format!("_dmarc.{}", row.name),
            value: DMARC_VALUE.to_string(),
            priority: None,
        },
        RecordSpec {
            record: "RETURN_PATH",
            kind: "MX",
            name: format!("{BOUNCE_SUBDOMAIN}.{}", row.name),
            value: config.delivery.hostname.to_ascii_lowercase(),
            priority: Some(RETURN_PATH_PRIORITY),
        },
    ]
}

/// What a lookup found.
enum Answer {
    /// The records (TXT: each one's strings joined; MX: `preference exchange`).
    Records(Vec<String>),
    /// No such name, or no record of that type.
    Nothing,
    /// The lookup failed; nothing is known.
    Error,
}

async fn lookup_txt(resolver: &TokioResolver, name: &str) -> Answer {
    match resolver.txt_lookup(format!("{name}.")).await {
        Ok(lookup) => {
            let records: Vec<String> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                Answer::Nothing
            } else {
                Answer::Records(records)
            }
        }
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Answer::Nothing,
        Err(e) => {
            tracing::warn!(name, error = %e, "TXT lookup failed");
            Answer::Error
        }
    }
}

async fn lookup_mx(resolver: &TokioResolver, name: &str) -> (Answer, Vec<String>) {
    match resolver.mx_lookup(format!("{name}.")).await {
        Ok(lookup) => {
            let mut shown = Vec::new();
            let mut hosts = Vec::new();
            for r in lookup.answers() {
                if let RData::MX(mx) = &r.data {
                    let host = mx.exchange.to_ascii();
                    let host = host.trim_end_matches('.').to_ascii_lowercase();
                    shown.push(format!("{} {host}", mx.preference));
                    hosts.push(host);
                }
            }
            if shown.is_empty() {
                (Answer::Nothing, hosts)
            } else {
                (Answer::Records(shown), hosts)
            }
        }
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => (Answer::Nothing, Vec::new()),
        Err(e) => {
            tracing::warn!(name, error = %e, "MX lookup failed");
            (Answer::Error, Vec::new())
        }
    }
}

fn judge(answer: Answer, matches: impl Fn(&[String]) -> bool) -> Check {
    match answer {
        Answer::Records(found) if matches(&found) => Check {
            status: RecordStatus::Verified,
            found: None,
        },
        Answer::Records(found) => Check {
            status: RecordStatus::Failed,
            found: Some(found),
        },
        Answer::Nothing | Answer::Error => Check::default(),
    }
}

/// Looks every record of `row` up now and judges it.
pub async fn check(resolver: &TokioResolver, row: &DomainRow, config: &Config) -> Checks {
    let [dkim, spf, dmarc, return_path] = records(row, config);
    let (dkim_answer, spf_answer, dmarc_answer, (mx_answer, mx_hosts)) = tokio::join!(
        lookup_txt(resolver, &dkim.name),
        lookup_txt(resolver, &spf.name),
        lookup_txt(resolver, &dmarc.name),
        lookup_mx(resolver, &return_path.name),
    );
    let spf_records = |answer: Answer| match answer {
        // Only v=spf1 records are SPF; other TXT records at the name are none of our business.
        Answer::Records(all) => {
            let spf: Vec<String> = all.into_iter().filter(|r| is_spf(r)).collect();
            if spf.is_empty() {
                Answer::Nothing
            } else {
                Answer::Records(spf)
            }
        }
        other => other,
    };
    Checks {
        dkim: judge(dkim_answer, |found| {
            found.iter().any(|r| dkim_matches(r, &row.public_key))
        }),
        spf: judge(spf_records(spf_answer), |found| {
            found.len() == 1 && spf_matches(&found[0], &spf.value)
        }),
        dmarc: judge(dmarc_answer, dmarc_valid),
        return_path: judge(mx_answer, |_| {
            mx_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&return_path.value))
        }),
    }
}

/// Parses a DKIM/DMARC tag list (`tag=value; ...`): names trimmed, values with every
/// whitespace removed. None when a tag repeats or a part has no `=`.
fn tag_list(record: &str) -> Option<Vec<(String, String)>> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for part in record.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part.split_once('=')?;
        let name = name.trim().to_string();
        if name.is_empty() || tags.iter().any(|(n, _)| *n == name) {
            return None;
        }
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        tags.push((name, value));
    }
    Some(tags)
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Whether a published DKIM record carries `public_key` (base64) for rsa-sha256.
pub fn dkim_matches(record: &str, public_key: &str) -> bool {
    let Some(tags) = tag_list(record) else {
        return false;
    };
    let want: String = public_key.chars().filter(|c| !c.is_whitespace()).collect();
    tag(&tags, "p") == Some(want.as_str())
        && tag(&tags, "v").is_none_or(|v| v == "DKIM1")
        && tag(&tags, "k").is_none_or(|k| k.eq_ignore_ascii_case("rsa"))
        && tag(&tags, "h").is_none_or(|h| h.split(':').any(|a| a.eq_ignore_ascii_case("sha256")))
}

fn is_spf(record: &str) -> bool {
    let r = record.trim_start();
    r.len() >= 6
        && r[..6].eq_ignore_ascii_case("v=spf1")
        && r[6..].chars().next().is_none_or(|c| c == ' ')
}

/// Normalises an SPF term: lower case, the default `+` qualifier dropped.
fn spf_term(term: &str) -> String {
    let t = term.to_ascii_lowercase();
    t.strip_prefix('+').map(str::to_string).unwrap_or(t)
}

fn is_all(term: &str) -> bool {
    term.trim_start_matches(['+', '-', '~', '?']) == "all"
}

/// Whether the published SPF record authorises what `expected` does: each mechanism of
/// `expected` other than `all` appears with a pass qualifier before the record's `all`.
pub fn spf_matches(published: &str, expected: &str) -> bool {
    if !is_spf(published) {
        return false;
    }
    let live: Vec<String> = published
        .split_whitespace()
        .skip(1)
        .map(spf_term)
        .take_while(|t| !is_all(t))
        .collect();
    expected
        .split_whitespace()
        .skip(1)
        .map(spf_term)
        .filter(|t| !is_all(t) && !t.contains('='))
        .all(|t| live.contains(&t))
}

/// Whether the published DMARC records are one valid policy record.
pub fn dmarc_valid(found: &[String]) -> bool {
    let records: Vec<Vec<(String, String)>> = found
        .iter()
        .filter_map(|r| tag_list(r))
        .filter(|tags| {
            tags.first()
                .is_some_and(|(n, v)| n == "v" && v.eq_ignore_ascii_case("DMARC1"))
        })
        .collect();
    records.len() == 1
        && tag(&records[0], "p").is_some_and(|p| {
            ["none", "quarantine", "reject"]
                .iter()
                .any(|x| p.eq_ignore_ascii_case(x))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_tags_in_any_order_and_spacing() {
        let key = "MIIBIjANBgkq+/AB==";
        assert!(dkim_matches("v=DKIM1; k=rsa; p=MIIBIjANBgkq+/AB==", key));
        assert!(dkim_matches("p=MIIBIjANBgkq+/AB==;k=rsa;v=DKIM1;", key));
        assert!(dkim_matches(
            " k = rsa ;\tp=MIIBIj ANBgkq +/AB== ; t=s; n=hello world",
            key
        ));
        assert!(dkim_matches("p=MIIBIjANBgkq+/AB==", key));
        assert!(dkim_matches(
            "v=DKIM1; h=sha1:sha256; p=MIIBIjANBgkq+/AB==",
            key
        ));
        assert!(!dkim_matches("v=DKIM1; k=rsa; p=MIIBIjANBgkq+/AC==", key));
        assert!(!dkim_matches(
            "v=DKIM1; k=ed25519; p=MIIBIjANBgkq+/AB==",
            key
        ));
        assert!(!dkim_matches("v=DKIM1; h=sha1; p=MIIBIjANBgkq+/AB==", key));
        assert!(!dkim_matches("v=DKIM1; p=MIIBIjANBgkq+/AB==; p=other", key));
        assert!(!dkim_matches("v=DKIM1; k=rsa; p=", key));
        assert!(!dkim_matches("google-site-verification=abc", key));
    }

    #[test]
    fn spf_must_authorise_the_expected_mechanisms() {
        let expected = "v=spf1 a:mail.example.net ~all";
        assert!(spf_matches("v=spf1 a:mail.example.net ~all", expected));
        assert!(spf_matches("V=SPF1 +a:MAIL.example.net -all", expected));
        assert!(spf_matches(
            "v=spf1 include:_spf.google.com a:mail.example.net mx -all",
            expected
        ));
        assert!(!spf_matches(
            "v=spf1 include:_spf.google.com ~all",
            expected
        ));
        assert!(!spf_matches("v=spf1 ~a:mail.example.net ~all", expected));
        assert!(!spf_matches("v=spf1 -all a:mail.example.net", expected));
        assert!(!spf_matches("v=spf10 a:mail.example.net", expected));
        assert!(spf_matches(
            "v=spf1 ip4:192.0.2.1 -all",
            "v=spf1 ip4:192.0.2.1 ~all"
        ));
        assert!(spf_matches("v=spf1 mx -all", "v=spf1 ~all"));
    }

    #[test]
    fn dmarc_needs_one_policy_record() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(dmarc_valid(&r(&["v=DMARC1; p=none;"])));
        assert!(dmarc_valid(&r(&[
            "v=DMARC1;p=reject;rua=mailto:d@acme.test",
            "other"
        ])));
        assert!(!dmarc_valid(&r(&[
            "v=DMARC1; p=none",
            "v=DMARC1; p=reject"
        ])));
        assert!(!dmarc_valid(&r(&["v=DMARC1; rua=mailto:d@acme.test"])));
        assert!(!dmarc_valid(&r(&["p=none; v=DMARC1"])));
        assert!(!dmarc_valid(&r(&["v=DMARC1; p=maybe"])));
    }
}

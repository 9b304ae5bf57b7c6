//! Sending domains: the routes (`routes`), storage and the status machine (`store`), DKIM
//! keys and signing (`dkim`), the DNS records and their checks (`dns`), reputation
//! (`reputation`) and the background re-check (`worker`).
//!
//! Sending uses [`Senders`]: for each accepted email it finds the From domain, refuses a
//! live send from an unverified one (`delivery.require_verified_domain`), signs the message
//! with the domain's key and gives the VERP envelope sender on the bounce subdomain.

pub mod dkim;
pub mod dns;
pub mod reputation;
pub mod routes;
pub mod store;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use actix_web::http::StatusCode;
use hickory_resolver::TokioResolver;

use crate::config::Config;
use crate::http::ApiError;
use crate::keys::Mode;
use crate::store::{Db, StoreError, time};
use dkim::{DkimError, DomainKey};
use store::{Checks, DomainRow};

/// The subdomain that receives bounces: `bounces.<domain>`, with an MX to
/// `delivery.hostname` (the RETURN_PATH record).
pub const BOUNCE_SUBDOMAIN: &str = "bounces";
/// The local part of VERP envelope senders: `bounces+<email id>@bounces.<domain>`.
pub const BOUNCE_LOCAL_PART: &str = "bounces";

/// A checked domain name: ASCII (IDNA), lower case, no trailing dot, at least two labels of
/// letters, digits and hyphens, not an IP address, no wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainName(String);

impl DomainName {
    /// Parses what a client sends as `name`; the error is a sentence for the API.
    pub fn parse(input: &str) -> Result<DomainName, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("The domain name is empty; send it like \"acme.com\".".into());
        }
        if s.contains('*') {
            return Err(format!(
                "'{s}' is a wildcard; add each domain you send from by its name, like \"acme.com\"."
            ));
        }
        if s.contains(['@', '/', ':', ' ', '\t']) {
            return Err(format!(
                "'{s}' is not a bare domain name: send only the domain, like \"acme.com\" (no address, scheme, path, port or spaces)."
            ));
        }
        let ascii = crate::address::email::parse_domain(s)
            .map_err(|why| format!("The domain name is not valid: {why}."))?;
        if s.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!("'{s}' is an IP address, not a domain name."));
        }
        Ok(DomainName(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What sending from one domain needs, found per email.
pub struct Sender {
    pub domain_id: String,
    pub name: String,
    selector: String,
    key: DomainKey,
    /// `bounces.<domain>` when its MX is published (else bounces could not come back there,
    /// and some servers refuse an envelope sender whose domain has no MX).
    bounce_domain: Option<String>,
}

impl Sender {
    /// The VERP envelope sender of `email_id`, when the bounce subdomain is set up.
    pub fn envelope_from(&self, email_id: &str) -> Option<String> {
        self.bounce_domain
            .as_ref()
            .map(|d| format!("{BOUNCE_LOCAL_PART}+{email_id}@{d}"))
    }

    /// `raw` with a DKIM signature of this domain in front. CPU work: off the async threads.
    pub fn sign(&self, raw: &[u8]) -> Result<Vec<u8>, DkimError> {
        self.key.sign(raw, &self.name, &self.selector)
    }
}

/// The senders' side of domains: what each From domain resolves to, kept in memory.
///
/// A single send read the domain's row from the database on every request (a pooled
/// connection, a query and the JSON of its checks: 4% of a send's CPU), for an answer that
/// changes only when a domain is added, deleted or checked. Those three writes go through
/// [`Domains::write`], which empties the cache once they have committed.
pub struct Senders {
    db: Db,
    require_verified: bool,
    known: Arc<RwLock<Known>>,
}

/// The answers kept by [`Senders`], by mode and lowercase domain name.
#[derive(Default)]
struct Known {
    /// Bumped by every domain change. An answer read from the database is kept only if no
    /// change came between its read and its keeping, so a read that raced a change can
    /// never outlive it.
    generation: u64,
    answers: HashMap<(Mode, String), Resolved>,
}

/// What a From domain resolves to. Database failures are answered but never kept.
#[derive(Clone)]
enum Resolved {
    Signed(Arc<Sender>),
    /// Not a sending domain of that mode: the email goes out unsigned.
    Unsigned,
    /// A live send from a domain that is missing or not verified (`domain_not_verified`).
    Refused(ApiError),
}

/// Domains kept in [`Senders`] before it starts over: a test-mode key may send from any
/// number of made-up domains, and each would otherwise stay in memory.
const MAX_KNOWN_DOMAINS: usize = 10_000;

impl Senders {
    pub fn new(db: Db, require_verified: bool) -> Senders {
        Senders {
            db,
            require_verified,
            known: Arc::new(RwLock::new(Known::default())),
        }
    }

    /// The sender for an email of `mode` from `from_domain` (ASCII): None when no domain of
    /// that name exists in that mode (the email goes out unsigned), `403
    /// domain_not_verified` for a live send from a domain that is missing or not verified
    /// while `delivery.require_verified_domain` is on. Test-mode sends are never refused.
    ///
    /// Blocking on a cache miss (reads the database, parses the key): call it off the async
    /// threads, as `emails::prepare` is.
    /// The emails of a batch mostly share their From domain: after the first, each is one
    /// map lookup.
    pub fn for_email(&self, mode: Mode, from_domain: &str) -> SenderAnswer {
        let key = (mode, from_domain.to_ascii_lowercase());
        let generation = {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(resolved) = known.answers.get(&key) {
                return resolved.clone().into_answer();
            }
            known.generation
        };
        let resolved = self.resolve(mode, &key.1)?;
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if known.generation == generation {
            if known.answers.len() >= MAX_KNOWN_DOMAINS {
                known.answers.clear();
            }
            known.answers.insert(key, resolved.clone());
        }
        resolved.into_answer()
    }

    /// Whether emails of `mode` from `from_domain` (ASCII) are known to go out unsigned or
    /// refused, from the kept answers alone: never reads the database, so the async threads
    /// may ask. False for a signing domain and for one not asked about yet.
    pub fn known_unsigned(&self, mode: Mode, from_domain: &str) -> bool {
        let key = (mode, from_domain.to_ascii_lowercase());
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        matches!(
            known.answers.get(&key),
            Some(Resolved::Unsigned | Resolved::Refused(_))
        )
    }

    /// Reads and judges the domain's row (`name` in lowercase).
    fn resolve(&self, mode: Mode, name: &str) -> Result<Resolved, ApiError> {
        let row = {
            let conn = self.db.read_blocking().map_err(ApiError::from)?;
            store::signing_row(&conn, mode, name).map_err(ApiError::from)?
        };
        let enforce = mode == Mode::Live && self.require_verified;
        let Some(row) = row else {
            if enforce {
                return Ok(Resolved::Refused(not_verified(format!(
                    "The domain '{name}' is not a verified sending domain, so live emails cannot be sent from it. Add it with POST /v1/domains {{\"name\": \"{name}\"}}, publish the DNS records that answer lists, then call GET /v1/domains/{{id}}/verify."
                ))));
            }
            return Ok(Resolved::Unsigned);
        };
        if enforce && !row.status.may_send() {
            return Ok(Resolved::Refused(not_verified(format!(
                "The domain '{name}' ({}) is {}, so live emails cannot be sent from it yet. Publish the DNS records listed by GET /v1/domains/{}, then call GET /v1/domains/{}/verify.",
                row.id,
                row.status.as_str().replace('_', " "),
                row.id,
                row.id
            ))));
        }
        let key = DomainKey::from_pkcs1_der(&row.private_der).map_err(|e| {
            tracing::error!(domain = %row.name, error = %e, "a stored DKIM key is unreadable");
            ApiError::internal()
        })?;
        Ok(Resolved::Signed(Arc::new(Sender {
            domain_id: row.id,
            bounce_domain: row
                .return_path_verified
                .then(|| format!("{BOUNCE_SUBDOMAIN}.{}", row.name)),
            name: row.name,
            selector: row.selector,
            key,
        })))
    }
}

/// What [`Senders::for_email`] answers: the sender, none (not a sending domain), or the
/// refusal of an unverified one.
type SenderAnswer = Result<Option<Arc<Sender>>, ApiError>;

/// Forgets every answer of [`Senders`]: a domain was added, deleted or checked (and that
/// has committed).
fn domains_changed(known: &RwLock<Known>) {
    let mut known = known.write().unwrap_or_else(PoisonError::into_inner);
    known.generation += 1;
    known.answers.clear();
}

impl Resolved {
    fn into_answer(self) -> SenderAnswer {
        match self {
            Resolved::Signed(sender) => Ok(Some(sender)),
            Resolved::Unsigned => Ok(None),
            Resolved::Refused(error) => Err(error),
        }
    }
}

fn not_verified(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "domain_not_verified", message).with_field("from")
}

/// What the domain routes and the background check share.
pub struct Domains {
    pub db: Db,
    pub config: Arc<Config>,
    /// None when the system's DNS configuration could not be read (checks then find
    /// nothing, and say so in the logs).
    resolver: Option<TokioResolver>,
    pub senders: Senders,
}

impl Domains {
    pub fn new(db: Db, config: Arc<Config>) -> Domains {
        let nameservers: Vec<_> = config.dns.nameservers.iter().map(|n| n.0).collect();
        let resolver = match crate::delivery::mx::build_resolver(&nameservers) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "domain checks cannot look up DNS");
                None
            }
        };
        Domains {
            senders: Senders::new(db.clone(), config.delivery.require_verified_domain),
            db,
            config,
            resolver,
        }
    }

    /// Looks `row`'s records up now, saves the outcome (status, events) and returns the
    /// domain as saved (None when it was deleted meanwhile). The resolver's cache is emptied
    /// first: a record published a minute ago must count now, not after the negative answer
    /// of an earlier check expires.
    pub async fn check(&self, row: DomainRow) -> Result<Option<DomainRow>, StoreError> {
        let checks = match &self.resolver {
            Some(resolver) => {
                resolver.clear_cache();
                dns::check(resolver, &row, &self.config).await
            }
            None => Checks::default(),
        };
        let give_up = self.config.domains.timings.give_up_after.as_secs() as i64;
        let now = time::now();
        self.write(move |conn| store::save_check(conn, &row, &checks, now, give_up))
            .await
    }

    /// Runs a write that adds, deletes or changes domains, then lets [`Senders`] know once
    /// it has committed (or failed). Every write to the domains table goes through here.
    ///
    /// The write and the notice run in a task of their own: a request dropped while it
    /// waits (the client went away) must not leave a committed change unannounced.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, E> + Send + 'static,
    {
        let db = self.db.clone();
        let known = self.senders.known.clone();
        tokio::spawn(async move {
            let outcome = db.write(f).await;
            domains_changed(&known);
            outcome
        })
        .await
        .unwrap_or_else(|e| {
            Err(E::from(StoreError::Task(format!(
                "a domain write did not finish: {e}"
            ))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names() {
        let ok = |s: &str| DomainName::parse(s).map(|d| d.0);
        assert_eq!(ok("Acme.COM").unwrap(), "acme.com");
        assert_eq!(ok(" mail.acme.com. ").unwrap(), "mail.acme.com");
        assert_eq!(ok("bücher.example").unwrap(), "xn--bcher-kva.example");
        for bad in [
            "",
            "acme",
            "*.acme.com",
            "hello@acme.com",
            "https://acme.com",
            "acme.com/path",
            "acme.com:25",
            "acme.com extra",
            "192.168.0.1",
            "[::1]",
            "::1",
            "-acme.com",
            "acme..com",
            "acme_mail.com",
        ] {
            assert!(DomainName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}

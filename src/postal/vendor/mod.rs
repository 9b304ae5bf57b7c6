//! Postal vendors: adapters behind one trait, [`PostalVendor`], and the registry that picks
//! one per piece ([`Vendors`]).
//!
//! A vendor submits a piece, cancels it while it still can, reports what happened since the
//! last look ([`PostalVendor::refresh`]: new tracking nodes, each with the neutral
//! [`MailStatus`] and the vendor's own word), and may verify addresses. Adding a vendor means
//! writing its file and one line in [`Vendors::new`]; routes, store and worker only see the
//! trait.

pub mod easypost;
pub mod lob;
pub mod simulator;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::request::PrintOptions;
use super::{MailAddress, MailKind, MailStatus};
use crate::address::postal::AddressInput;
use crate::config::{Config, ParcelVendorName, PostalVendorName};
use crate::keys::Mode;

/// Everything a vendor may need about a piece.
#[derive(Debug, Clone)]
pub struct Piece {
    pub id: String,
    pub mode: Mode,
    pub kind: MailKind,
    pub status: MailStatus,
    pub to: MailAddress,
    pub from: MailAddress,
    pub description: Option<String>,
    pub options: PrintOptions,
    /// The rendered HTML of a letter (variables already applied).
    pub html: Option<String>,
    pub front_html: Option<String>,
    pub back_html: Option<String>,
    pub pdf: Option<Vec<u8>>,
    pub send_date: Option<i64>,
    pub metadata: BTreeMap<String, String>,
    pub vendor_id: Option<String>,
    /// Vendor-specific references kept between calls (e.g. EasyPost's tracker id).
    pub vendor_data: Value,
    pub created_at: i64,
}

/// What a vendor answered to a submission.
#[derive(Debug, Clone, Default)]
pub struct Submitted {
    pub vendor_id: String,
    pub vendor_status: String,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    /// `YYYY-MM-DD`.
    pub expected_delivery_date: Option<String>,
    pub vendor_data: Value,
}

/// One step in a piece's journey as a vendor reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingNode {
    pub status: MailStatus,
    pub vendor_status: String,
    pub description: String,
    pub location: Option<String>,
    /// Unix seconds.
    pub occurred_at: i64,
    /// The vendor's id for this report, so seeing it twice records it once.
    pub vendor_event_id: Option<String>,
}

/// What a vendor reported on a refresh.
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    pub nodes: Vec<TrackingNode>,
    pub tracking_number: Option<String>,
    pub expected_delivery_date: Option<String>,
}

/// Whether a vendor canceled a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelResult {
    Canceled,
    /// The vendor no longer allows it; the text says why.
    NotAllowed(String),
}

/// A vendor's verdict on an address.
#[derive(Debug, Clone)]
pub struct VerifiedAddress {
    /// Lob's values: `deliverable`, `deliverable_unnecessary_unit`,
    /// `deliverable_incorrect_unit`, `deliverable_missing_unit`, `undeliverable`.
    pub deliverability: String,
    /// The vendor's standardized lines, when it gave them.
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
}

/// Why a vendor call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VendorError {
    /// Worth retrying later: network trouble, timeouts, 429 and 5xx answers.
    #[error("{0}")]
    Temporary(String),
    /// The vendor refused the request for good (4xx): retrying cannot help.
    #[error("{0}")]
    Rejected(String),
}

impl VendorError {
    /// Maps a reqwest failure: every transport problem is temporary.
    pub fn transport(vendor: &str, err: reqwest::Error) -> VendorError {
        VendorError::Temporary(format!("{vendor} could not be reached: {err}"))
    }

    /// Maps a non-2xx answer.
    pub fn from_status(vendor: &str, status: reqwest::StatusCode, body: &str) -> VendorError {
        let detail = vendor_message(body).unwrap_or_else(|| body.chars().take(300).collect());
        let text = format!("{vendor} answered {}: {detail}", status.as_u16());
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            VendorError::Temporary(text)
        } else {
            VendorError::Rejected(text)
        }
    }
}

/// The `error.message` of a vendor's JSON error body (Lob and EasyPost both use it).
fn vendor_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// A future returned by a vendor call.
pub type VendorFuture<'a, T> = BoxFuture<'a, Result<T, VendorError>>;

/// A postal vendor. Implementations are stateless apart from configuration: everything about
/// a piece lives in the database and arrives as a [`Piece`].
pub trait PostalVendor: Send + Sync {
    /// The name stored with each piece (`simulator`, `lob`, `easypost`).
    fn name(&self) -> &'static str;

    /// Hands a piece over for printing and mailing (or a parcel for shipping).
    fn submit<'a>(&'a self, piece: &'a Piece) -> VendorFuture<'a, Submitted>;

    /// Cancels a submitted piece while the vendor allows it.
    fn cancel<'a>(&'a self, piece: &'a Piece) -> VendorFuture<'a, CancelResult>;

    /// What happened to a submitted piece since it was last seen, at `now` (Unix seconds).
    fn refresh<'a>(&'a self, piece: &'a Piece, now: i64) -> VendorFuture<'a, Refreshed>;

    /// How long the worker waits between two refreshes of one piece.
    fn refresh_interval(&self) -> Duration;

    /// Verifies an address, for vendors that can.
    fn verify_address<'a>(
        &'a self,
        _address: &'a AddressInput,
    ) -> Option<VendorFuture<'a, VerifiedAddress>> {
        None
    }
}

/// The registry: every vendor this build knows, and which one takes a new piece.
pub struct Vendors {
    all: Vec<Arc<dyn PostalVendor>>,
    letters: &'static str,
    parcels: &'static str,
}

impl Vendors {
    /// Builds every adapter from the configuration (cheap: no connection is made). All are
    /// kept, so pieces made before a configuration change are still followed.
    pub fn new(config: &Config) -> Vendors {
        // HTTPS uses ring (as everywhere in mailsflux); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("mailsflux/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let all: Vec<Arc<dyn PostalVendor>> = vec![
            Arc::new(simulator::Simulator::new(config.postal.simulator.step.0)),
            Arc::new(lob::Lob::new(config.postal.lob.clone(), client.clone())),
            Arc::new(easypost::EasyPost::new(
                config.postal.easypost.clone(),
                client,
            )),
        ];
        let letters = match config.postal.vendor {
            PostalVendorName::Simulator => simulator::NAME,
            PostalVendorName::Lob => lob::NAME,
        };
        let parcels = match config.postal.parcel_vendor {
            ParcelVendorName::Simulator => simulator::NAME,
            ParcelVendorName::Easypost => easypost::NAME,
        };
        Vendors {
            all,
            letters,
            parcels,
        }
    }

    /// The vendor stored under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn PostalVendor>> {
        self.all.iter().find(|v| v.name() == name).cloned()
    }

    /// The vendor that takes a new piece: the simulator for test keys, else the configured
    /// one for its kind.
    pub fn name_for_new(&self, mode: Mode, kind: MailKind) -> &'static str {
        match (mode, kind) {
            (Mode::Test, _) => simulator::NAME,
            (Mode::Live, MailKind::Parcel) => self.parcels,
            (Mode::Live, _) => self.letters,
        }
    }

    /// The vendor that verifies addresses in `mode`: the letters vendor in live mode when it
    /// can verify; in test mode the simulator's phrases are handled by [`super::verify`].
    pub fn verifier(&self, mode: Mode) -> Option<Arc<dyn PostalVendor>> {
        match mode {
            Mode::Live if self.letters != simulator::NAME => self.get(self.letters),
            _ => None,
        }
    }
}

/// Basic auth header value for an API key used as the user name with an empty password
/// (how both Lob and EasyPost authenticate).
pub(crate) fn basic_auth(api_key: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{api_key}:"));
    format!("Basic {token}")
}

/// Joins a configured base URL and a path without doubling or losing the slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_auth() {
        assert_eq!(
            join_url("https://api.lob.com/", "/v1/letters"),
            "https://api.lob.com/v1/letters"
        );
        assert_eq!(basic_auth("test_abc"), "Basic dGVzdF9hYmM6");
    }

    #[test]
    fn vendor_errors_split_temporary_from_rejected() {
        let e = VendorError::from_status(
            "Lob",
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":{"message":"address_zip is invalid","status_code":422}}"#,
        );
        assert!(matches!(e, VendorError::Rejected(ref m) if m.contains("address_zip is invalid")));
        let e = VendorError::from_status("Lob", reqwest::StatusCode::BAD_GATEWAY, "oops");
        assert!(matches!(e, VendorError::Temporary(_)));
    }

    #[test]
    fn test_keys_always_use_the_simulator() {
        let mut config = Config::default();
        config.postal.vendor = PostalVendorName::Lob;
        config.postal.parcel_vendor = ParcelVendorName::Easypost;
        let v = Vendors::new(&config);
        assert_eq!(v.name_for_new(Mode::Test, MailKind::Letter), "simulator");
        assert_eq!(v.name_for_new(Mode::Test, MailKind::Parcel), "simulator");
        assert_eq!(v.name_for_new(Mode::Live, MailKind::Postcard), "lob");
        assert_eq!(v.name_for_new(Mode::Live, MailKind::Parcel), "easypost");
        assert!(v.verifier(Mode::Test).is_none());
        assert_eq!(v.verifier(Mode::Live).unwrap().name(), "lob");
    }
}

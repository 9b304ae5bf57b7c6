//! Physical mail: letters, postcards and parcels.
//!
//! A send is checked and normalized here ([`request`]), stored as a row that is also the
//! postal worker's queue ([`store`]), handed to a vendor by the background [`worker`], and
//! followed through a vendor-neutral status model ([`MailStatus`]) with the vendor's own
//! status kept beside it. Vendors are adapters behind one trait ([`vendor::PostalVendor`]):
//! the built-in simulator (the default, and always for test keys), Lob for letters and
//! postcards, EasyPost for parcels. Address checks ([`verify`]) use the built-in
//! normalizer (`crate::address::postal`), the simulator's answers to Lob's test phrases in
//! test mode, and Lob's US verification in live mode when Lob is the vendor.

pub mod request;
pub mod routes;
pub mod store;
pub mod vendor;
pub mod verify;
pub mod worker;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::address::postal::NormalizedAddress;
use crate::config::Config;

/// The kinds of mail piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    Letter,
    Postcard,
    Parcel,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Letter => "letter",
            MailKind::Postcard => "postcard",
            MailKind::Parcel => "parcel",
        }
    }

    pub fn parse(s: &str) -> Option<MailKind> {
        match s {
            "letter" => Some(MailKind::Letter),
            "postcard" => Some(MailKind::Postcard),
            "parcel" => Some(MailKind::Parcel),
            _ => None,
        }
    }
}

/// The vendor-neutral status of a piece (API.md). Statuses only move forward: a late or
/// repeated vendor report never takes a piece back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    Queued,
    Submitted,
    Printing,
    InTransit,
    InLocalArea,
    OutForDelivery,
    Delivered,
    ReturnedToSender,
    Failed,
    Canceled,
}

impl MailStatus {
    pub const ALL: [MailStatus; 10] = [
        MailStatus::Queued,
        MailStatus::Submitted,
        MailStatus::Printing,
        MailStatus::InTransit,
        MailStatus::InLocalArea,
        MailStatus::OutForDelivery,
        MailStatus::Delivered,
        MailStatus::ReturnedToSender,
        MailStatus::Failed,
        MailStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MailStatus::Queued => "queued",
            MailStatus::Submitted => "submitted",
            MailStatus::Printing => "printing",
            MailStatus::InTransit => "in_transit",
            MailStatus::InLocalArea => "in_local_area",
            MailStatus::OutForDelivery => "out_for_delivery",
            MailStatus::Delivered => "delivered",
            MailStatus::ReturnedToSender => "returned_to_sender",
            MailStatus::Failed => "failed",
            MailStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<MailStatus> {
        MailStatus::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Position along the way; every final status shares the last place.
    pub fn rank(self) -> u8 {
        match self {
            MailStatus::Queued => 0,
            MailStatus::Submitted => 1,
            MailStatus::Printing => 2,
            MailStatus::InTransit => 3,
            MailStatus::InLocalArea => 4,
            MailStatus::OutForDelivery => 5,
            _ => 6,
        }
    }

    /// Nothing happens to a piece after these.
    pub fn is_final(self) -> bool {
        self.rank() == 6
    }
}

/// A checked, normalized postal address as stored with a piece and sent to vendors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAddress {
    pub name: Option<String>,
    pub company: Option<String>,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub state: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// The envelope lines in the destination country's layout (what the simulator prints).
    #[serde(default)]
    pub formatted: Vec<String>,
}

impl MailAddress {
    /// From a normalized address that passed validation (required fields are present).
    pub fn from_normalized(n: &NormalizedAddress) -> MailAddress {
        MailAddress {
            name: n.name.clone(),
            company: n.company.clone(),
            line1: n.line1.clone().unwrap_or_default(),
            line2: n.line2.clone(),
            city: n.city.clone().unwrap_or_default(),
            state: n.state.clone(),
            postal_code: n.postal_code.clone().unwrap_or_default(),
            country: n.country.clone().unwrap_or_default(),
            formatted: n.formatted.clone(),
        }
    }

    /// "SAN FRANCISCO, CA 94107" (for tracking locations).
    pub fn locality(&self) -> String {
        let mut s = self.city.clone();
        if let Some(state) = self.state.as_deref().filter(|s| !s.is_empty()) {
            s.push_str(", ");
            s.push_str(state);
        }
        if !self.postal_code.is_empty() {
            s.push(' ');
            s.push_str(&self.postal_code);
        }
        if self.country != "US" && !self.country.is_empty() {
            s.push_str(", ");
            s.push_str(&self.country);
        }
        s
    }
}

/// What routes and the worker share: the vendors and a way to wake the worker.
#[derive(Clone)]
pub struct PostalHandle {
    pub vendors: Arc<vendor::Vendors>,
    wake: Arc<Notify>,
}

impl PostalHandle {
    pub fn new(config: &Config) -> PostalHandle {
        PostalHandle {
            vendors: Arc::new(vendor::Vendors::new(config)),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Tells the worker there is new work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_order() {
        for s in MailStatus::ALL {
            assert_eq!(MailStatus::parse(s.as_str()), Some(s));
        }
        assert!(MailStatus::Submitted.rank() < MailStatus::Printing.rank());
        assert!(MailStatus::Delivered.is_final());
        assert!(MailStatus::Canceled.is_final());
        assert!(!MailStatus::OutForDelivery.is_final());
    }
}

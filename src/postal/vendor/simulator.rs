//! The simulator: a vendor that prints nothing and mails nothing, but moves each piece one
//! step along the way every `postal.simulator.step`, with tracking nodes located at the sender's
//! and the recipient's city and postal code, and an expected delivery date from the mail
//! class. What it would print (the rendered HTML or the PDF) stays with the piece.
//!
//! Letters and postcards: submitted → printing → in_transit → in_local_area →
//! out_for_delivery → delivered. Parcels skip printing. A recipient `line1` of
//! `returned to sender` ends `returned_to_sender` after reaching the local area. Canceling
//! is allowed until printing starts.

use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime, Weekday};

use super::{CancelResult, Piece, PostalVendor, Refreshed, Submitted, TrackingNode, VendorFuture};
use crate::postal::verify::is_return_to_sender;
use crate::postal::{MailKind, MailStatus};
use crate::store::{ids, time as clock};

pub const NAME: &str = "simulator";

pub struct Simulator {
    step: Duration,
}

impl Simulator {
    pub fn new(step: Duration) -> Simulator {
        Simulator { step }
    }
}

/// The step after `current` for `piece`, with its vendor word and description.
pub fn next_step(piece: &Piece) -> Option<(MailStatus, &'static str, String, Option<String>)> {
    let from = piece.from.locality();
    let to = piece.to.locality();
    let returned = is_return_to_sender(&piece.to.line1);
    let step = match (piece.status, piece.kind) {
        (MailStatus::Submitted, MailKind::Parcel) => (
            MailStatus::InTransit,
            "in_transit",
            "Picked up by the carrier and in transit.".to_string(),
            Some(from),
        ),
        (MailStatus::Submitted, _) => (
            MailStatus::Printing,
            "rendered",
            "Printing at the production facility.".to_string(),
            Some(from),
        ),
        (MailStatus::Printing, _) => (
            MailStatus::InTransit,
            "mailed",
            "Mailed: accepted by USPS and in transit.".to_string(),
            Some(from),
        ),
        (MailStatus::InTransit, _) => (
            MailStatus::InLocalArea,
            "in_local_area",
            "Arrived at the postal facility serving the recipient.".to_string(),
            Some(to),
        ),
        (MailStatus::InLocalArea, _) if returned => (
            MailStatus::ReturnedToSender,
            "returned_to_sender",
            "Could not be delivered as addressed; returned to the sender.".to_string(),
            Some(to),
        ),
        (MailStatus::InLocalArea, _) => (
            MailStatus::OutForDelivery,
            "processed_for_delivery",
            "Processed for delivery: out with the carrier today.".to_string(),
            Some(to),
        ),
        (MailStatus::OutForDelivery, _) => (
            MailStatus::Delivered,
            "delivered",
            "Delivered to the recipient's mailbox.".to_string(),
            Some(to),
        ),
        _ => return None,
    };
    Some(step)
}

/// A USPS-style 22-digit tracking number derived from the piece id (stable across retries).
fn tracking_number(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut n = String::from("9400");
    for b in digest.iter().take(18) {
        n.push(char::from(b'0' + b % 10));
    }
    n
}

/// `start` plus `days` business days (Saturdays and Sundays skipped), as `YYYY-MM-DD`.
pub fn add_business_days(start: i64, days: u32) -> String {
    let mut date: Date = OffsetDateTime::from_unix_timestamp(start)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    let mut left = days;
    while left > 0 {
        date = date.next_day().unwrap_or(date);
        if !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) {
            left -= 1;
        }
    }
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        date.month() as u8,
        date.day()
    )
}

impl PostalVendor for Simulator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn submit<'a>(&'a self, piece: &'a Piece) -> VendorFuture<'a, Submitted> {
        Box::pin(async move {
            let start = piece
                .send_date
                .unwrap_or(piece.created_at)
                .max(clock::now());
            let international = piece.to.country != piece.from.country;
            let days = piece.options.mail_class.business_days(international);
            Ok(Submitted {
                vendor_id: ids::new_id("sim"),
                vendor_status: "accepted".into(),
                carrier: Some("USPS".into()),
                tracking_number: (piece.kind == MailKind::Parcel)
                    .then(|| tracking_number(&piece.id)),
                expected_delivery_date: Some(add_business_days(start, days)),
                vendor_data: json!({}),
            })
        })
    }

    fn cancel<'a>(&'a self, piece: &'a Piece) -> VendorFuture<'a, CancelResult> {
        Box::pin(async move {
            Ok(if piece.status.rank() <= MailStatus::Submitted.rank() {
                CancelResult::Canceled
            } else {
                CancelResult::NotAllowed(format!(
                    "the piece is already {}; it can only be canceled before printing starts",
                    piece.status.as_str()
                ))
            })
        })
    }

    fn refresh<'a>(&'a self, piece: &'a Piece, now: i64) -> VendorFuture<'a, Refreshed> {
        Box::pin(async move {
            let nodes = next_step(piece)
                .map(|(status, vendor_status, description, location)| {
                    vec![TrackingNode {
                        status,
                        vendor_status: vendor_status.into(),
                        description,
                        location,
                        occurred_at: now,
                        vendor_event_id: None,
                    }]
                })
                .unwrap_or_default();
            Ok(Refreshed {
                nodes,
                ..Default::default()
            })
        })
    }

    fn refresh_interval(&self) -> Duration {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::keys::Mode;
    use crate::postal::MailAddress;
    use crate::postal::request::{MailClass, PrintOptions};

    fn piece(kind: MailKind, line1: &str) -> Piece {
        Piece {
            id: "mail_01".into(),
            mode: Mode::Test,
            kind,
            status: MailStatus::Submitted,
            to: MailAddress {
                line1: line1.into(),
                city: "AUSTIN".into(),
                state: Some("TX".into()),
                postal_code: "78701".into(),
                country: "US".into(),
                ..Default::default()
            },
            from: MailAddress {
                line1: "1 MARKET ST".into(),
                city: "SAN FRANCISCO".into(),
                state: Some("CA".into()),
                postal_code: "94105".into(),
                country: "US".into(),
                ..Default::default()
            },
            description: None,
            options: PrintOptions {
                size: None,
                color: None,
                double_sided: None,
                mail_class: MailClass::FirstClass,
                parcel: None,
            },
            html: None,
            front_html: None,
            back_html: None,
            pdf: None,
            send_date: None,
            metadata: BTreeMap::new(),
            vendor_id: None,
            vendor_data: json!({}),
            created_at: 0,
        }
    }

    fn walk(mut p: Piece) -> Vec<MailStatus> {
        let mut seen = Vec::new();
        while let Some((status, _, _, location)) = next_step(&p) {
            assert!(location.is_some());
            seen.push(status);
            p.status = status;
        }
        seen
    }

    #[test]
    fn letters_print_parcels_do_not() {
        use MailStatus::*;
        assert_eq!(
            walk(piece(MailKind::Letter, "1 MAIN ST")),
            [Printing, InTransit, InLocalArea, OutForDelivery, Delivered]
        );
        assert_eq!(
            walk(piece(MailKind::Parcel, "1 MAIN ST")),
            [InTransit, InLocalArea, OutForDelivery, Delivered]
        );
        assert_eq!(
            walk(piece(MailKind::Postcard, "RETURNED TO SENDER")),
            [Printing, InTransit, InLocalArea, ReturnedToSender]
        );
    }

    #[test]
    fn business_days_skip_weekends() {
        // 2026-04-10 is a Friday.
        let friday = clock::parse("2026-04-10T12:00:00Z").unwrap();
        assert_eq!(add_business_days(friday, 1), "2026-04-13");
        assert_eq!(add_business_days(friday, 4), "2026-04-16");
        assert_eq!(tracking_number("mail_x").len(), 22);
    }
}

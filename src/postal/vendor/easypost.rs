//! EasyPost (<https://docs.easypost.com>): parcels. A piece becomes a shipment
//! (`POST /v2/shipments` with both addresses and the parcel in inches and ounces), the rate of
//! the configured `postal.easypost.carrier` and `service` is bought
//! (`POST /v2/shipments/:id/buy`), and the shipment's tracker is polled
//! (`GET /v2/trackers/:id`), its statuses mapped to ours. Cancel is a refund
//! (`POST /v2/shipments/:id/refund`), which carriers accept until the parcel is scanned.
//! Requests authenticate with HTTP Basic (the API key as user name).

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    CancelResult, Piece, PostalVendor, Refreshed, Submitted, TrackingNode, VendorError,
    VendorFuture, basic_auth, join_url,
};
use crate::config::EasyPostConfig;
use crate::postal::{MailAddress, MailStatus};
use crate::store::time;

pub const NAME: &str = "easypost";
const SHOWN: &str = "EasyPost";

/// How often a tracker is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30 * 60);

pub struct EasyPost {
    config: EasyPostConfig,
    client: reqwest::Client,
}

impl EasyPost {
    pub fn new(config: EasyPostConfig, client: reqwest::Client) -> EasyPost {
        EasyPost { config, client }
    }

    async fn call(&self, rb: reqwest::RequestBuilder) -> Result<Value, VendorError> {
        if self.config.api_key.is_empty() {
            return Err(VendorError::Rejected(
                "EasyPost is the configured parcel vendor but postal.easypost.api_key is empty"
                    .into(),
            ));
        }
        let res = rb
            .header("Authorization", basic_auth(&self.config.api_key))
            .send()
            .await
            .map_err(|e| VendorError::transport(SHOWN, e))?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| VendorError::transport(SHOWN, e))?;
        if !status.is_success() {
            return Err(VendorError::from_status(SHOWN, status, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            VendorError::Temporary(format!(
                "EasyPost answered with JSON we could not read: {e}"
            ))
        })
    }

    fn url(&self, path: &str) -> String {
        join_url(&self.config.base_url, path)
    }
}

/// An address in EasyPost's shape.
pub fn easypost_address(a: &MailAddress) -> Value {
    json!({
        "name": a.name,
        "company": a.company,
        "street1": a.line1,
        "street2": a.line2,
        "city": a.city,
        "state": a.state,
        "zip": a.postal_code,
        "country": a.country,
    })
}

/// Millimetres to inches, grams to ounces, rounded to a tenth (EasyPost's units).
fn inches(mm: u32) -> f64 {
    (f64::from(mm) / 25.4 * 10.0).round() / 10.0
}

fn ounces(g: u32) -> f64 {
    ((f64::from(g) / 28.349_523_125 * 10.0).round() / 10.0).max(0.1)
}

/// Maps a tracker status; `None` for `unknown` and `pre_transit` (nothing new for us).
pub fn status_for_tracker(status: &str) -> Option<MailStatus> {
    Some(match status {
        "in_transit" => MailStatus::InTransit,
        "available_for_pickup" => MailStatus::InLocalArea,
        "out_for_delivery" => MailStatus::OutForDelivery,
        "delivered" => MailStatus::Delivered,
        "return_to_sender" => MailStatus::ReturnedToSender,
        "failure" | "error" => MailStatus::Failed,
        "cancelled" => MailStatus::Canceled,
        _ => return None,
    })
}

fn location(v: &Value) -> Option<String> {
    let loc = v.get("tracking_location")?;
    let part = |k: &str| {
        loc.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut s = part("city").unwrap_or_default();
    if let Some(st) = part("state") {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(&st);
    }
    if let Some(z) = part("zip") {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&z);
    }
    (!s.is_empty()).then_some(s)
}

/// The tracking nodes of a tracker's `tracking_details`.
pub fn tracker_nodes(tracker: &Value) -> Vec<TrackingNode> {
    let details = tracker
        .get("tracking_details")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut nodes: Vec<TrackingNode> = details
        .iter()
        .filter_map(|d| {
            let status_word = d.get("status").and_then(Value::as_str)?;
            let status = status_for_tracker(status_word)?;
            let when_raw = d.get("datetime").and_then(Value::as_str).unwrap_or("");
            let message = d
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or(status_word);
            Some(TrackingNode {
                status,
                vendor_status: status_word.to_string(),
                description: message.to_string(),
                location: location(d),
                occurred_at: time::parse(when_raw).unwrap_or_else(time::now),
                vendor_event_id: Some(format!("{when_raw}|{status_word}|{message}")),
            })
        })
        .collect();
    // A tracker may report a status without a detail for it yet.
    if let Some(status_word) = tracker.get("status").and_then(Value::as_str)
        && let Some(status) = status_for_tracker(status_word)
        && !nodes.iter().any(|n| n.status == status)
    {
        nodes.push(TrackingNode {
            status,
            vendor_status: status_word.to_string(),
            description: format!("EasyPost: {}.", status_word.replace('_', " ")),
            location: None,
            occurred_at: time::now(),
            vendor_event_id: Some(format!("status|{status_word}")),
        });
    }
    nodes
}

impl PostalVendor for EasyPost {
    fn name(&self) -> &'static str {
        NAME
    }

    fn submit<'a>(&'a self, piece: &'a Piece) -> VendorFuture<'a, Submitted> {
        Box::pin(async move {
            let Some(parcel) = piece.options.parcel else {
                return Err(VendorError::Rejected(
                    "EasyPost ships parcels only; letters and postcards need postal.vendor".into(),
                ));
            };
            let body = json!({
                "shipment": {
                    "reference": piece.id,
                    "to_address": easypost_address(&piece.to),
                    "from_address": easypost_address(&piece.from),
                    "parcel": {
                        "length": inches(parcel.length_mm),
                        "width": inches(parcel.width_mm),
                        "height": inches(parcel.height_mm),
                        "weight": ounces(parcel.weight_grams),
                    },
                }
            });
            let shipment = self
                .call(self.client.post(self.url("/v2/shipments")).json(&body))
                .await?;
            let shipment_id = shipment
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| VendorError::Temporary("EasyPost's shipment has no id".into()))?
                .to_string();
            let rates = shipment
                .get("rates")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let want_carrier = &self.config.carrier;
            let want_service = &self.config.service;
            let rate = rates.iter().find(|r| {
                r.get("carrier").and_then(Value::as_str) == Some(want_carrier.as_str())
                    && r.get("service").and_then(Value::as_str) == Some(want_service.as_str())
            });
            let Some(rate_id) = rate.and_then(|r| r.get("id")).and_then(Value::as_str) else {
                let offered: Vec<String> = rates
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {}",
                            r.get("carrier").and_then(Value::as_str).unwrap_or("?"),
                            r.get("service").and_then(Value::as_str).unwrap_or("?")
                        )
                    })
                    .collect();
                return Err(VendorError::Rejected(format!(
                    "EasyPost offered no {want_carrier} {want_service} rate for this parcel (postal.easypost.carrier/service); offered: {}",
                    if offered.is_empty() {
                        "none".to_string()
                    } else {
                        offered.join(", ")
                    }
                )));
            };
            let bought = self
                .call(
                    self.client
                        .post(self.url(&format!("/v2/shipments/{shipment_id}/buy")))
                        .json(&json!({"rate": {"id": rate_id}})),
                )
                .await?;
            let s = |p: &str| {
                bought
                    .pointer(p)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let expected = s("/tracker/est_delivery_date")
                .or_else(|| s("/selected_rate/delivery_date"))
                .map(|d| d.chars().take(10).collect());
            Ok(Submitted {
                vendor_id: shipment_id,
                vendor_status: s("/tracker/status").unwrap_or_else(|| "pre_transit".into()),
                carrier: s("/selected_rate/carrier").or_else(|| Some(want_carrier.clone())),
                tracking_number: s("/tracking_code"),
                expected_delivery_date: expected,
                vendor_data: json!({
                    "tracker_id": s("/tracker/id"),
                    "rate_id": rate_id,
                    "label_url": s("/postage_label/label_url"),
                }),
            })
        })
    }

    fn cancel<'a>(&'a self, piece: &'a Piece) -> VendorFuture<'a, CancelResult> {
        Box::pin(async move {
            let Some(id) = &piece.vendor_id else {
                return Ok(CancelResult::Canceled);
            };
            if piece.status.rank() > MailStatus::Submitted.rank() {
                return Ok(CancelResult::NotAllowed(format!(
                    "the parcel is already {}; a label can only be refunded before the carrier scans it",
                    piece.status.as_str()
                )));
            }
            let url = self.url(&format!("/v2/shipments/{id}/refund"));
            match self.call(self.client.post(url)).await {
                Ok(v) if v.get("refund_status").and_then(Value::as_str) == Some("rejected") => Ok(
                    CancelResult::NotAllowed("EasyPost rejected the refund of the label".into()),
                ),
                Ok(_) => Ok(CancelResult::Canceled),
                Err(VendorError::Rejected(why)) => Ok(CancelResult::NotAllowed(why)),
                Err(e) => Err(e),
            }
        })
    }

    fn refresh<'a>(&'a self, piece: &'a Piece, _now: i64) -> VendorFuture<'a, Refreshed> {
        Box::pin(async move {
            let Some(tracker_id) = piece.vendor_data.get("tracker_id").and_then(Value::as_str)
            else {
                return Ok(Refreshed::default());
            };
            let tracker = self
                .call(
                    self.client
                        .get(self.url(&format!("/v2/trackers/{tracker_id}"))),
                )
                .await?;
            Ok(Refreshed {
                nodes: tracker_nodes(&tracker),
                tracking_number: tracker
                    .get("tracking_code")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                expected_delivery_date: tracker
                    .get("est_delivery_date")
                    .and_then(Value::as_str)
                    .map(|d| d.chars().take(10).collect()),
            })
        })
    }

    fn refresh_interval(&self) -> Duration {
        POLL_INTERVAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_statuses() {
        assert_eq!(inches(254), 10.0);
        assert_eq!(ounces(454), 16.0);
        assert_eq!(status_for_tracker("pre_transit"), None);
        assert_eq!(
            status_for_tracker("return_to_sender"),
            Some(MailStatus::ReturnedToSender)
        );
        let nodes = tracker_nodes(&json!({
            "status": "in_transit",
            "tracking_details": [
                {"status": "pre_transit", "message": "Label created", "datetime": "2026-04-10T10:00:00Z"},
                {"status": "in_transit", "message": "Arrived at facility", "datetime": "2026-04-11T10:00:00Z",
                 "tracking_location": {"city": "AUSTIN", "state": "TX", "zip": "78701"}}
            ]
        }));
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].location.as_deref(), Some("AUSTIN, TX 78701"));
    }
}

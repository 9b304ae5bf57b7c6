//! Webhooks: signed, durable, retried delivery of events to the user's HTTP endpoints.
//!
//! - `routes`: create, list, show, delete endpoints and list their recent attempts.
//! - `store`: the SQL (endpoints, subscriptions, the outbox, attempts). Its
//!   [`store::enqueue_for_event`] is called by `events::record`, so an event and its
//!   deliveries are written in one transaction: none is lost, none is invented.
//! - `dispatcher`: the background worker that drains the outbox (per-endpoint concurrency,
//!   retries, `Retry-After`, disabling dead endpoints).
//! - `signing`: secrets and Standard Webhooks signatures.
//! - `target`: the URL rules and the SSRF guard (a resolver that only hands out vetted
//!   addresses).

pub mod dispatcher;
pub mod routes;
pub mod signing;
pub mod store;
pub mod target;

pub use dispatcher::{Dispatcher, WebhooksHandle};

/// Email event types (API.md "Emails"): webhook types are `email.<type>`.
pub const EMAIL_EVENT_TYPES: [&str; 13] = [
    "queued",
    "scheduled",
    "sent",
    "delivered",
    "delivery_delayed",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
    "suppressed",
    "failed",
    "canceled",
];

/// Physical-mail statuses (API.md "Physical mail"): webhook types are `mail.<status>`.
pub const MAIL_STATUSES: [&str; 10] = [
    "queued",
    "submitted",
    "printing",
    "in_transit",
    "in_local_area",
    "out_for_delivery",
    "delivered",
    "returned_to_sender",
    "failed",
    "canceled",
];

/// Types that are neither about an email nor a mail piece.
pub const OTHER_EVENT_TYPES: [&str; 3] = ["domain.verified", "domain.failed", "suppression.added"];

/// Subscribes an endpoint to every event type.
pub const ALL_EVENTS: &str = "*";

/// True when `name` is an event type an endpoint may subscribe to (`*` aside).
pub fn is_known_event_type(name: &str) -> bool {
    if let Some(kind) = name.strip_prefix("email.") {
        return EMAIL_EVENT_TYPES.contains(&kind);
    }
    if let Some(status) = name.strip_prefix("mail.") {
        return MAIL_STATUSES.contains(&status);
    }
    OTHER_EVENT_TYPES.contains(&name)
}

/// The webhook type of an event as the events table stores it: email events are stored
/// bare (`delivered` with an email id), mail events bare with a mail id, others in full.
pub fn webhook_type(kind: &str, email_id: Option<&str>, mail_id: Option<&str>) -> String {
    if email_id.is_some() {
        format!("email.{kind}")
    } else if mail_id.is_some() {
        format!("mail.{kind}")
    } else {
        kind.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert!(is_known_event_type("email.delivered"));
        assert!(is_known_event_type("email.delivery_delayed"));
        assert!(is_known_event_type("mail.returned_to_sender"));
        assert!(is_known_event_type("domain.verified"));
        assert!(is_known_event_type("suppression.added"));
        assert!(!is_known_event_type("email.sent_ok"));
        assert!(!is_known_event_type("delivered"));
        assert!(!is_known_event_type("mail.printed"));
        assert!(!is_known_event_type("*"));
        assert_eq!(
            webhook_type("delivered", Some("msg_1"), None),
            "email.delivered"
        );
        assert_eq!(
            webhook_type("in_transit", None, Some("mail_1")),
            "mail.in_transit"
        );
        assert_eq!(
            webhook_type("suppression.added", None, None),
            "suppression.added"
        );
    }
}

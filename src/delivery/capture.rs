//! Test mode: nothing leaves the machine. The message was built and stored when it was
//! accepted; "delivery" captures it, and the magic recipients of API.md drive the lifecycle:
//! `bounced@`, `complained@` and `delayed@test.mailsflux` (a `delivery_delayed`, then
//! `delivered`); every other address is delivered.

use std::time::Duration;

use super::queue::{AttemptResult, Bounce, Claimed, Outcome};
use super::smtp::Reply;

/// The domain of the magic test recipients.
pub const TEST_DOMAIN: &str = "test.mailsflux";

/// The longest wait before the second attempt for `delayed@`: the first entry of the retry
/// schedule, but never so long that a test waits minutes.
const DELAYED_RETRY_CAP: Duration = Duration::from_secs(2);

/// The outcome of capturing the message for `rcpt`.
pub fn capture(rcpt: Claimed, retry_schedule: &[Duration]) -> Outcome {
    let lower = rcpt.address.to_ascii_lowercase();
    let local = lower.strip_suffix(&format!("@{TEST_DOMAIN}")).unwrap_or("");
    let (result, retry_in) = match local {
        "bounced" => (
            AttemptResult::Bounced(Bounce::from_reply(&Reply::new(
                550,
                [5, 1, 1],
                "The email account that you tried to reach does not exist (test mode)",
            ))),
            None,
        ),
        "complained" => (
            AttemptResult::Complained(
                "250 2.0.0 Captured (test mode); the recipient then marked it as spam".into(),
            ),
            None,
        ),
        "delayed" if rcpt.attempts == 0 => (
            AttemptResult::Deferred(
                "451 4.4.1 Temporary failure, the message will be retried (test mode)".into(),
            ),
            Some(
                retry_schedule
                    .first()
                    .copied()
                    .unwrap_or(DELAYED_RETRY_CAP)
                    .min(DELAYED_RETRY_CAP),
            ),
        ),
        _ => (
            AttemptResult::Delivered(
                "250 2.0.0 Captured (test mode): nothing left this machine".into(),
            ),
            None,
        ),
    };
    Outcome {
        claimed: rcpt,
        result,
        retry_in,
    }
}

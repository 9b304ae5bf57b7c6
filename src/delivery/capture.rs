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
    let (result, retry_in) = match at_accept(&rcpt.address) {
        Some(result) => (result, None),
        // delayed@: deferred on the first attempt, delivered on the next.
        None if rcpt.attempts == 0 => (
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
        None => (delivered(), None),
    };
    Outcome {
        claimed: rcpt,
        result,
        retry_in,
    }
}

/// The outcome of capturing the message for `address` when the email is accepted, or
/// `None` for `delayed@`, whose lifecycle needs the queue (a deferral, then a retry).
/// Test-mode emails sent now are captured in the transaction that accepts them: one write
/// instead of a claim and an outcome, and the email's final state is there at once.
pub fn at_accept(address: &str) -> Option<AttemptResult> {
    let local = address
        .rsplit_once('@')
        .filter(|(_, domain)| domain.eq_ignore_ascii_case(TEST_DOMAIN))
        .map(|(local, _)| local.to_ascii_lowercase())
        .unwrap_or_default();
    Some(match local.as_str() {
        "bounced" => AttemptResult::Bounced(Bounce::from_reply(&Reply::new(
            550,
            [5, 1, 1],
            "The email account that you tried to reach does not exist (test mode)",
        ))),
        "complained" => AttemptResult::Complained(
            "250 2.0.0 Captured (test mode); the recipient then marked it as spam".into(),
        ),
        "delayed" => return None,
        _ => delivered(),
    })
}

fn delivered() -> AttemptResult {
    AttemptResult::Delivered("250 2.0.0 Captured (test mode): nothing left this machine".into())
}

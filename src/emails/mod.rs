//! Emails: the send, batch, read, list and cancel routes (`routes`), request parsing
//! (`request`), MIME building (`mime`), storage (`store`) and the task that keeps the
//! address index of the `to` filter up to date (`indexer`).

pub mod address_index;
pub mod indexer;
pub mod mime;
pub mod recipients;
pub mod request;
pub mod routes;
pub mod store;

use crate::domains::Senders;
use crate::http::ApiError;
use crate::keys::Mode;
use crate::store::time;
use request::EmailDraft;
use store::PreparedEmail;

/// Turns a checked draft into what is stored: an id, the Message-ID on the sender's domain,
/// and the MIME bytes, DKIM-signed when the From domain is a sending domain of this mode
/// (then the envelope sender is its VERP bounce address, once its RETURN_PATH is
/// published). A live send from an unverified domain is refused here (`403
/// domain_not_verified`, see `domains::Senders`).
///
/// Blocking (reads the database, signs): run it off the async threads.
pub fn prepare(
    mode: Mode,
    api_key_id: &str,
    draft: EmailDraft,
    senders: &Senders,
    id: String,
) -> Result<PreparedEmail, ApiError> {
    let sender = senders.for_email(mode, draft.from.address.domain())?;
    let created_at = time::now();
    let message_id = mime::message_id(&id, draft.from.address.domain());
    let mut raw = mime::build(&draft, &message_id, created_at, &Vec::new()).map_err(|e| {
        tracing::error!(error = %e, "building a MIME message failed");
        ApiError::internal()
    })?;
    let mut envelope_from = draft.from.address.as_str().to_owned();
    if let Some(sender) = &sender {
        raw = sender.sign(&raw).map_err(|e| {
            tracing::error!(domain = %sender.name, error = %e, "DKIM signing failed");
            ApiError::internal()
        })?;
        if let Some(verp) = sender.envelope_from(&id) {
            envelope_from = verp;
        }
    }
    Ok(PreparedEmail {
        id,
        mode,
        envelope_from,
        columns: store::EmailColumns::of(&draft),
        draft,
        raw,
        message_id,
        created_at,
        api_key_id: api_key_id.to_string(),
        copies: Vec::new(),
        audience_id: None,
        signer: sender,
    })
}

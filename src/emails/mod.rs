//! Emails: the send, batch, read, list and cancel routes (`routes`), request parsing
//! (`request`), MIME building (`mime`) and storage (`store`).

pub mod mime;
pub mod recipients;
pub mod request;
pub mod routes;
pub mod store;

use crate::http::ApiError;
use crate::keys::Mode;
use crate::store::{ids, time};
use request::EmailDraft;
use store::PreparedEmail;

/// Turns a checked draft into what is stored: an id, the Message-ID on the sender's domain,
/// and the MIME bytes. CPU work: run it off the async threads for large bodies and batches.
pub fn prepare(mode: Mode, api_key_id: &str, draft: EmailDraft) -> Result<PreparedEmail, ApiError> {
    let id = ids::new_id("msg");
    let created_at = time::now();
    let message_id = mime::message_id(&id, draft.from.address.domain());
    let raw = mime::build(&draft, &message_id, created_at, &Vec::new()).map_err(|e| {
        tracing::error!(error = %e, "building a MIME message failed");
        ApiError::internal()
    })?;
    Ok(PreparedEmail {
        id,
        mode,
        envelope_from: draft.from.address.to_string(),
        draft,
        raw,
        message_id,
        created_at,
        api_key_id: api_key_id.to_string(),
        copies: Vec::new(),
        audience_id: None,
    })
}

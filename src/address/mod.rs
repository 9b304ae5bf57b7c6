//! Parsed value types for addresses: email addresses and mailboxes (`email`), and postal
//! addresses (`postal`, USPS Publication 28 and per-country formats from Google's address
//! metadata, CC-BY 4.0).

pub mod email;

pub use email::{AddressError, EmailAddress, Mailbox};
pub mod postal;

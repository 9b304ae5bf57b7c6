//! Secrets and Standard Webhooks signatures (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{body}"`, keyed with
//! the base64-decoded bytes of the secret after `whsec_`. Any Standard Webhooks (or Svix)
//! library verifies it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// An endpoint's signing key: the raw bytes behind `whsec_<base64>`.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A new secret: `whsec_` + base64 of 32 random bytes.
    pub fn generate() -> (SigningKey, String) {
        let bytes: [u8; 32] = rand::random();
        let text = format!("{PREFIX}{}", STANDARD.encode(bytes));
        (SigningKey(bytes.to_vec()), text)
    }

    /// Reads a stored `whsec_...` secret.
    pub fn parse(secret: &str) -> Option<SigningKey> {
        let encoded = secret.strip_prefix(PREFIX)?;
        let bytes = STANDARD.decode(encoded).ok()?;
        (!bytes.is_empty()).then_some(SigningKey(bytes))
    }

    /// The `webhook-signature` header value for one delivery attempt.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip() {
        let (key, text) = SigningKey::generate();
        assert!(text.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&text[6..]).unwrap().len(), 32);
        let parsed = SigningKey::parse(&text).unwrap();
        assert_eq!(parsed.sign("evt_1", 1, b"{}"), key.sign("evt_1", 1, b"{}"));
        assert!(SigningKey::parse("nope").is_none());
        assert!(SigningKey::parse("whsec_!!").is_none());
    }

    #[test]
    fn known_vector() {
        // The example of the Standard Webhooks specification.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}

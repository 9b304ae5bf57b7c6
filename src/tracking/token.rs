//! Signed tokens of the public links (unsubscribe, open pixel, click redirect). A token is
//! `base64url(JSON claims) "." base64url(HMAC-SHA256 tag, first 16 bytes)`, keyed with a key
//! derived from the server secret. It names the mode, the email, the recipient (and, for an
//! unsubscribe, the audience; for a click, the URL recorded at send), so nothing has to be
//! looked up to know what a link means, and nobody can make one without the secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::Mode;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the tag kept in a token: 128 bits is far beyond guessing.
const TAG_BYTES: usize = 16;
/// Longest token accepted (a click token carries its URL).
const MAX_TOKEN_CHARS: usize = 8 * 1024;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "u")]
    Unsubscribe,
    #[serde(rename = "o")]
    Open,
    #[serde(rename = "c")]
    Click,
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "k")]
    pub kind: Kind,
    #[serde(rename = "m")]
    mode: String,
    #[serde(rename = "e")]
    pub email_id: String,
    #[serde(rename = "r")]
    pub recipient: String,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub audience_id: Option<String>,
    /// The link's target, for clicks: the only place a click redirects to.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Claims {
    pub fn new(kind: Kind, mode: Mode, email_id: &str, recipient: &str) -> Claims {
        Claims {
            kind,
            mode: mode.as_str().to_string(),
            email_id: email_id.to_string(),
            recipient: recipient.to_string(),
            audience_id: None,
            url: None,
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        Mode::parse(&self.mode)
    }
}

/// Signs and checks tokens.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// A signer keyed from the server secret (a derived key, so the secret's other uses never
    /// share a MAC key with these links).
    pub fn new(server_secret: &[u8]) -> Signer {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(server_secret)
            .expect("HMAC accepts keys of any length");
        mac.update(b"mailsflux link tokens v1");
        let mut key = [0u8; 32];
        key.copy_from_slice(&mac.finalize().into_bytes());
        Signer { key }
    }

    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new_from_slice(&self.key).expect("HMAC accepts keys of any length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES]))
    }

    /// The claims of a token this server signed; `None` for anything else.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let (payload, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_truncated_left(&tag).ok()?;
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let claims: Claims = serde_json::from_slice(&json).ok()?;
        claims.mode()?;
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgeries() {
        let signer = Signer::new(b"secret");
        let mut claims = Claims::new(Kind::Click, Mode::Test, "msg_1", "ana@example.org");
        claims.url = Some("https://example.org/a?b=c".into());
        let token = signer.sign(&claims);
        assert_eq!(signer.verify(&token), Some(claims.clone()));
        assert!(Signer::new(b"other").verify(&token).is_none());
        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged = claims.clone();
        forged.url = Some("https://evil.test/".into());
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(signer.verify(&format!("{forged_payload}.{tag}")).is_none());
        assert!(signer.verify(payload).is_none());
        assert!(signer.verify("").is_none());
        assert!(signer.verify("a.b").is_none());
    }
}

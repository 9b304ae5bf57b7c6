//! DKIM keys and signing with mail-auth (ring backend).
//!
//! Keys are RSA-2048, made by mail-auth's `generate` feature (the `rsa` crate: ring cannot
//! make RSA keys) as PKCS#1 DER. ring signs from PKCS#1 DER directly, so that is what the
//! database keeps. The DKIM record publishes the public key as a SubjectPublicKeyInfo (what
//! `openssl rsa -pubout` and every DKIM tool publish; RFC 6376 verifiers accept it), built
//! here from the PKCS#1 public key with a few bytes of DER.

use std::sync::Arc;

use base64::Engine;
use mail_auth::common::crypto::{Algorithm, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

/// The headers signed when present, in this order (API.md, RFC 6376 §5.4.1, RFC 8058 §4).
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// RSA modulus size of new keys: 2048 bits fits one DNS TXT record in a few strings and is
/// what Gmail and Yahoo ask bulk senders for.
pub const KEY_BITS: usize = 2048;

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("DKIM key generation failed: {0}")]
    Generate(String),
    #[error("the stored DKIM key cannot be read: {0}")]
    BadKey(String),
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// A new key pair: what the database keeps and what the DNS record publishes.
pub struct KeyPair {
    /// PKCS#1 DER. Never leaves the server.
    pub private_der: Vec<u8>,
    /// Base64 of the SubjectPublicKeyInfo: the `p=` of the DKIM record.
    pub public_b64: String,
}

/// Makes an RSA-2048 key pair. Slow (hundreds of milliseconds in release builds, seconds in
/// debug builds): call it on a blocking thread.
pub fn generate() -> Result<KeyPair, DkimError> {
    let pair = mail_auth::dkim::generate::DkimKeyPair::generate_rsa(KEY_BITS)
        .map_err(|e| DkimError::Generate(e.to_string()))?;
    let (private_der, public_pkcs1) = pair.into_inner();
    Ok(KeyPair {
        private_der,
        public_b64: base64::engine::general_purpose::STANDARD
            .encode(spki_from_pkcs1(&public_pkcs1)),
    })
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Wraps a PKCS#1 `RSAPublicKey` in a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7):
/// `SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }`.
pub fn spki_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x03];
    der_length(pkcs1.len() + 1, &mut bits);
    bits.push(0); // no unused bits
    bits.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(RSA_ALGORITHM.len() + bits.len(), &mut out);
    out.extend_from_slice(&RSA_ALGORITHM);
    out.extend_from_slice(&bits);
    out
}

/// A parsed private key, shared by every signature of its domain (parsing is the costly
/// part; the cache in [`super::Senders`] keeps these).
pub struct DomainKey {
    key: Arc<RsaKey<Sha256>>,
}

impl DomainKey {
    /// Parses a stored PKCS#1 DER key.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<DomainKey, DkimError> {
        let key = RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(
            der.to_vec(),
        )))
        .map_err(|e| DkimError::BadKey(e.to_string()))?;
        Ok(DomainKey { key: Arc::new(key) })
    }

    /// Signs `raw` (a whole message, CRLF line endings) for `domain` with `selector`:
    /// relaxed/relaxed, rsa-sha256, the [`SIGNED_HEADERS`] the message has. Returns the
    /// message with the `DKIM-Signature` header in front. CPU work: off the async threads.
    pub fn sign(&self, raw: &[u8], domain: &str, selector: &str) -> Result<Vec<u8>, DkimError> {
        let present = present_headers(raw);
        if present.is_empty() {
            return Err(DkimError::Sign(
                "the message has none of the signed headers".into(),
            ));
        }
        let signature = DkimSigner::from_key(SharedKey(self.key.clone()))
            .domain(domain)
            .selector(selector)
            .headers(present)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(raw)
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        let header = signature.to_header();
        let mut out = Vec::with_capacity(header.len() + raw.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(raw);
        Ok(out)
    }
}

/// The key behind an `Arc`, so one parsed key serves many signers (mail-auth's signer owns
/// its key).
struct SharedKey(Arc<RsaKey<Sha256>>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// The [`SIGNED_HEADERS`] that `raw` has, each once, in the order of the list. Signing only
/// what is there keeps `h=` honest (mail-auth would otherwise list absent ones too).
fn present_headers(raw: &[u8]) -> Vec<&'static str> {
    let mut seen = [false; SIGNED_HEADERS.len()];
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header section
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // folded continuation
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        for (i, h) in SIGNED_HEADERS.iter().enumerate() {
            if name.eq_ignore_ascii_case(h.as_bytes()) {
                seen[i] = true;
            }
        }
    }
    SIGNED_HEADERS
        .iter()
        .zip(seen)
        .filter_map(|(h, s)| s.then_some(*h))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_present_headers() {
        let raw = b"From: a@x.test\r\nSubject: hi\r\n  folded\r\nX-Other: 1\r\nto: b@y.test\r\n\r\nFrom: body@x.test\r\n";
        assert_eq!(present_headers(raw), ["From", "To", "Subject"]);
    }

    #[test]
    fn spki_lengths_use_long_form() {
        let pkcs1 = vec![0x30u8; 270];
        let spki = spki_from_pkcs1(&pkcs1);
        // 30 82 01 22 | 30 0d ... 05 00 | 03 82 01 0f 00 | key
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(&spki[19..24], &[0x03, 0x82, 0x01, 0x0f, 0x00]);
        assert_eq!(spki.len(), 4 + 15 + 5 + 270);
    }

    #[test]
    fn generated_keys_publish_a_standard_spki_and_sign() {
        let pair = generate().unwrap();
        // Every RSA-2048 SubjectPublicKeyInfo with exponent 65537 starts like this.
        assert!(
            pair.public_b64
                .starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
            "{}",
            pair.public_b64
        );
        assert!(pair.public_b64.ends_with("IDAQAB"), "{}", pair.public_b64);
        let key = DomainKey::from_pkcs1_der(&pair.private_der).unwrap();
        let raw = b"From: a@acme.test\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello\r\n";
        let signed = key.sign(raw, "acme.test", "mf").unwrap();
        let text = String::from_utf8(signed).unwrap();
        assert!(
            text.starts_with(
                "DKIM-Signature: v=1; a=rsa-sha256; s=mf; d=acme.test; c=relaxed/relaxed;"
            ),
            "{text}"
        );
        assert!(
            text.contains("h=From:To:Subject") || text.contains("h=Subject:To:From"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nHello\r\n"));
        assert!(DomainKey::from_pkcs1_der(b"not a key").is_err());
    }
}

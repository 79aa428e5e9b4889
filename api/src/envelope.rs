//! Domain-separated Ed25519 signatures, for vouches, credit transfers and gossip.
//!
//! ## Signing input (what other implementations must reproduce)
//! ```text
//! "univrs-sig-v1" 0x00
//! u32-be(len(domain)) ‖ domain
//! for each field: u32-be(len(field)) ‖ field
//! ```
//! The domain names what is signed (`univrs.io/vouch/v1`, …) so a signature made for one
//! purpose can never be replayed as another, and the length prefixes make the encoding
//! unambiguous (no two field lists share an input).

use crate::identity::{IdentityError, NodeIdentity, PublicIdentity};
use serde::{Deserialize, Serialize};

/// The version tag that starts every signing input.
pub const TAG: &[u8] = b"univrs-sig-v1\0";
/// Domain of a Vouch.
pub const DOMAIN_VOUCH: &str = "univrs.io/vouch/v1";
/// Domain of a credit transfer.
pub const DOMAIN_CREDIT_TRANSFER: &str = "univrs.io/credit-transfer/v1";
/// Domain of a gossip message.
pub const DOMAIN_GOSSIP: &str = "univrs.io/gossip/v1";

/// Why an envelope or a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The envelope was signed for another purpose.
    #[error("envelope domain is {found:?}, expected {expected:?}")]
    WrongDomain {
        /// The domain the caller expected.
        expected: String,
        /// The domain in the envelope.
        found: String,
    },
    /// The signer is not a valid identity.
    #[error("envelope signer: {0}")]
    Signer(IdentityError),
    /// The signature does not verify.
    #[error("signature does not verify for this signer, domain and content")]
    BadSignature,
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    // A field longer than u32::MAX cannot be represented; saturating would make two inputs
    // collide, so such a field is clamped to an impossible length marker instead of wrapping.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The exact bytes signed for `domain` and `fields`.
pub fn signing_input(domain: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        TAG.len() + 4 + domain.len() + fields.iter().map(|f| 4 + f.len()).sum::<usize>(),
    );
    out.extend_from_slice(TAG);
    push_field(&mut out, domain.as_bytes());
    for f in fields {
        push_field(&mut out, f);
    }
    out
}

/// Signs `fields` under `domain`.
pub fn sign_fields(id: &NodeIdentity, domain: &str, fields: &[&[u8]]) -> [u8; 64] {
    id.sign(&signing_input(domain, fields))
}

/// Verifies a signature over `fields` under `domain`.
pub fn verify_fields(
    signer: &PublicIdentity,
    domain: &str,
    fields: &[&[u8]],
    signature: &[u8],
) -> Result<(), EnvelopeError> {
    signer
        .verify(&signing_input(domain, fields), signature)
        .map_err(|_| EnvelopeError::BadSignature)
}

/// A payload signed by an identity for one purpose (its domain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedEnvelope {
    /// What the payload is (one of the `DOMAIN_*` constants).
    pub domain: String,
    /// The signer's DID.
    pub signer: String,
    /// The signed bytes (base64 in JSON).
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    /// Ed25519 signature over `signing_input(domain, [signer, payload])` (base64 in JSON).
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
}

impl SignedEnvelope {
    /// Signs `payload` for `domain`.
    pub fn seal(id: &NodeIdentity, domain: &str, payload: Vec<u8>) -> Self {
        let signer = id.public().did();
        let signature = sign_fields(id, domain, &[signer.as_bytes(), &payload]).to_vec();
        Self {
            domain: domain.to_string(),
            signer,
            payload,
            signature,
        }
    }

    /// Checks the domain and the signature; returns the signer and the payload.
    pub fn open(&self, expected_domain: &str) -> Result<(PublicIdentity, &[u8]), EnvelopeError> {
        if self.domain != expected_domain {
            return Err(EnvelopeError::WrongDomain {
                expected: expected_domain.to_string(),
                found: self.domain.clone(),
            });
        }
        let signer = PublicIdentity::from_did(&self.signer).map_err(EnvelopeError::Signer)?;
        verify_fields(
            &signer,
            &self.domain,
            &[self.signer.as_bytes(), &self.payload],
            &self.signature,
        )?;
        Ok((signer, &self.payload))
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (NodeIdentity, NodeIdentity) {
        (
            NodeIdentity::from_secret_bytes([1; 32]),
            NodeIdentity::from_secret_bytes([2; 32]),
        )
    }

    #[test]
    fn the_encoding_is_length_prefixed() {
        assert_ne!(
            signing_input("d", &[b"ab", b"c"]),
            signing_input("d", &[b"a", b"bc"])
        );
        assert_ne!(signing_input("d", &[b""]), signing_input("d", &[]));
        let got = signing_input("d", &[b"xy"]);
        assert_eq!(
            got,
            [TAG, &[0, 0, 0, 1], b"d", &[0, 0, 0, 2], b"xy"].concat()
        );
    }

    #[test]
    fn an_envelope_opens_only_intact_in_its_domain() {
        let (a, b) = ids();
        let env = SignedEnvelope::seal(&a, DOMAIN_CREDIT_TRANSFER, b"pay 5".to_vec());
        let (signer, payload) = env.open(DOMAIN_CREDIT_TRANSFER).unwrap();
        assert_eq!((signer, payload), (a.public(), &b"pay 5"[..]));
        assert!(matches!(
            env.open(DOMAIN_VOUCH),
            Err(EnvelopeError::WrongDomain { .. })
        ));

        let mut e = env.clone();
        e.payload[0] ^= 1;
        assert_eq!(
            e.open(DOMAIN_CREDIT_TRANSFER),
            Err(EnvelopeError::BadSignature)
        );
        let mut e = env.clone();
        e.signature[10] ^= 1;
        assert_eq!(
            e.open(DOMAIN_CREDIT_TRANSFER),
            Err(EnvelopeError::BadSignature)
        );
        let mut e = env.clone();
        e.signer = b.public().did();
        assert_eq!(
            e.open(DOMAIN_CREDIT_TRANSFER),
            Err(EnvelopeError::BadSignature)
        );
        let mut e = env.clone();
        e.domain = DOMAIN_GOSSIP.into();
        assert_eq!(e.open(DOMAIN_GOSSIP), Err(EnvelopeError::BadSignature));
        let json = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<SignedEnvelope>(&json).unwrap(), env);
    }
}

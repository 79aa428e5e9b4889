//! Messages sealed to one node: only the holder of that node's Ed25519 key can open them.
//!
//! The controller hands a node what only that node may read (a Workload's registry
//! credentials) through objects every node can read, so the message itself must be sealed.
//! The node's Ed25519 key doubles as an X25519 key (its Montgomery form; the reuse is analysed
//! in <https://eprint.iacr.org/2021/509>), so no second key has to be registered and trusted:
//! - a fresh ephemeral X25519 key per message; the shared secret with the recipient's key;
//! - HKDF-SHA256 over it (salt: both public keys) to a ChaCha20-Poly1305 key, unique per
//!   message, so the nonce can be fixed;
//! - the `context` (what the message is for and about) is authenticated as associated data
//!   and mixed into the key: a message opened under another context fails.
//!
//! Text form: `v1.` then base64url (no padding) of the ephemeral public key (32 bytes) and
//! the ciphertext with its 16-byte tag.

use crate::identity::{NodeIdentity, PublicIdentity};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of the current format.
const PREFIX: &str = "v1.";
/// The HKDF info label; the context follows it.
const INFO: &[u8] = b"univrs sealed v1\0";
/// Bytes of an ephemeral public key.
const KEY_LEN: usize = 32;
/// Bytes of the AEAD tag.
const TAG_LEN: usize = 16;

/// Why a sealed message could not be made or opened. Never says more: a failed open is the
/// same error whatever failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// Not `v1.` followed by base64url of at least a key and a tag.
    #[error("not a sealed message (expected v1.<base64url>)")]
    Malformed,
    /// The recipient's key is not one a message can be sealed to (a low-order point).
    #[error("the recipient's key cannot receive sealed messages")]
    BadRecipient,
    /// Not sealed to this key, sealed for another context, or altered.
    #[error("the message does not open with this node's key in this context")]
    Unopenable,
}

/// The symmetric key for one message.
fn message_key(
    shared: &MontgomeryPoint,
    ephemeral: &MontgomeryPoint,
    recipient: &MontgomeryPoint,
    context: &[u8],
) -> Result<Zeroizing<[u8; 32]>, SealError> {
    // A low-order recipient key (or ephemeral key) gives the all-zero secret: refuse it
    // rather than encrypt under a key anyone knows.
    if shared.as_bytes().iter().all(|b| *b == 0) {
        return Err(SealError::BadRecipient);
    }
    let mut salt = [0u8; 2 * KEY_LEN];
    salt[..KEY_LEN].copy_from_slice(ephemeral.as_bytes());
    salt[KEY_LEN..].copy_from_slice(recipient.as_bytes());
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[INFO, context], key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Ok(key)
}

fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(key))
}

/// Seals `plaintext` to `recipient` for `context`, with randomness from the operating system.
pub fn seal(
    recipient: &PublicIdentity,
    context: &[u8],
    plaintext: &[u8],
) -> Result<String, SealError> {
    seal_with(&mut rand::rngs::OsRng, recipient, context, plaintext)
}

/// [`seal`] with the given cryptographic generator (for tests).
pub fn seal_with<R: rand::CryptoRng + rand::RngCore>(
    rng: &mut R,
    recipient: &PublicIdentity,
    context: &[u8],
    plaintext: &[u8],
) -> Result<String, SealError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(secret.as_mut());
    let ephemeral = MontgomeryPoint::mul_base_clamped(*secret);
    let to = recipient.to_montgomery();
    let shared = to.mul_clamped(*secret);
    let key = message_key(&shared, &ephemeral, &to, context)?;
    let sealed = cipher(&key)
        .encrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .expect("ChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut out = Vec::with_capacity(KEY_LEN + sealed.len());
    out.extend_from_slice(ephemeral.as_bytes());
    out.extend_from_slice(&sealed);
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
}

impl NodeIdentity {
    /// Opens a message [`seal`]ed to this node for `context`.
    pub fn open_sealed(
        &self,
        context: &[u8],
        sealed: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < KEY_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        let (eph, ciphertext) = bytes.split_at(KEY_LEN);
        let ephemeral = MontgomeryPoint(eph.try_into().expect("split at KEY_LEN"));
        let shared = ephemeral.mul_clamped(*self.x25519_scalar());
        let key = message_key(&shared, &ephemeral, &self.public().to_montgomery(), context)
            .map_err(|_| SealError::Unopenable)?;
        cipher(&key)
            .decrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Unopenable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn node(seed: u8) -> NodeIdentity {
        NodeIdentity::from_secret_bytes([seed; 32])
    }

    #[test]
    fn only_the_recipient_opens_and_only_in_its_context() {
        let (a, b) = (node(1), node(2));
        let sealed = seal(&a.public(), b"ctx", b"hunter2").unwrap();
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(&a.open_sealed(b"ctx", &sealed).unwrap()[..], b"hunter2");
        assert_eq!(b.open_sealed(b"ctx", &sealed), Err(SealError::Unopenable));
        assert_eq!(a.open_sealed(b"ctx2", &sealed), Err(SealError::Unopenable));
    }

    #[test]
    fn every_seal_differs_and_any_change_is_refused() {
        let a = node(3);
        let s1 = seal(&a.public(), b"c", b"m").unwrap();
        let s2 = seal(&a.public(), b"c", b"m").unwrap();
        assert_ne!(s1, s2, "a fresh ephemeral key per message");
        let mut bytes = URL_SAFE_NO_PAD.decode(&s1[3..]).unwrap();
        for i in [0, KEY_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let forged = format!("v1.{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(a.open_sealed(b"c", &forged), Err(SealError::Unopenable));
            bytes[i] ^= 1;
        }
        for bad in ["", "v2.AAAA", "v1.!!", "v1.AAAA"] {
            assert_eq!(a.open_sealed(b"c", bad), Err(SealError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        // The all-zero point gives the all-zero shared secret whatever the node's key.
        let zero = format!("v1.{}", URL_SAFE_NO_PAD.encode([0u8; KEY_LEN + TAG_LEN]));
        assert_eq!(node(4).open_sealed(b"c", &zero), Err(SealError::Unopenable));
    }

    #[test]
    fn deterministic_with_a_seeded_generator() {
        let a = node(5);
        let mut r1 = rand::rngs::StdRng::seed_from_u64(7);
        let mut r2 = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(
            seal_with(&mut r1, &a.public(), b"c", b"m").unwrap(),
            seal_with(&mut r2, &a.public(), b"c", b"m").unwrap()
        );
    }
}

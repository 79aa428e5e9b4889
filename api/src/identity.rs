//! One Ed25519 key, three names: NodeId (hex of the raw key), PeerId (libp2p) and DID (did:key).
//!
//! ```text
//! NodeId  = hex(pk)                                           64 lowercase hex characters
//! PeerId  = base58btc(0x00 0x24 0x08 0x01 0x12 0x20 ‖ pk)      identity multihash of the
//!                                                             protobuf PublicKey{Ed25519, pk}
//! DID     = "did:key:z" ‖ base58btc(0xed 0x01 ‖ pk)            multicodec ed25519-pub
//! ```
//! All three carry the whole key, so each parses back to it exactly: a name that truncated or
//! re-encoded the key would name a second, phantom account, and credits paid to it would be lost.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The protobuf + identity-multihash prefix of a libp2p Ed25519 PeerId.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
/// The multicodec prefix of an Ed25519 public key (0xed, varint-encoded).
const DID_KEY_PREFIX: [u8; 2] = [0xed, 0x01];
/// PKCS#8 v1 DER prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// Why a key or a name could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// A NodeId that is not 64 hex characters of a valid key.
    #[error("invalid NodeId {0:?}: expected 64 hex characters of an Ed25519 public key")]
    NodeId(String),
    /// A PeerId that is not a libp2p Ed25519 identity PeerId.
    #[error("invalid PeerId {0:?}: expected a libp2p Ed25519 PeerId (12D3KooW…)")]
    PeerId(String),
    /// A DID that is not an Ed25519 did:key.
    #[error("invalid DID {0:?}: expected an Ed25519 did:key (did:key:z6Mk…)")]
    Did(String),
    /// Not any of the three names.
    #[error("{0:?} is not a NodeId (64 hex), a PeerId (12D3KooW…) or a DID (did:key:z6Mk…)")]
    Unrecognized(String),
    /// Bytes that are not a point on the curve.
    #[error("not a valid Ed25519 public key")]
    BadKey,
    /// A key file that is not an Ed25519 PKCS#8 PEM.
    #[error("not an Ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----): {0}")]
    Pem(&'static str),
    /// A signature that does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// A node's secret key. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct NodeIdentity {
    key: SigningKey,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("did", &self.public().did())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// A new random identity from the operating system's generator.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rngs::OsRng)
    }

    /// A new identity from the given cryptographic generator.
    pub fn generate_with<R: rand::CryptoRng + rand::RngCore>(rng: &mut R) -> Self {
        Self {
            key: SigningKey::generate(rng),
        }
    }

    /// The identity with this 32-byte secret seed.
    pub fn from_secret_bytes(seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed (handle with care).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public half, with its three names.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            key: self.key.verifying_key(),
        }
    }

    /// The key's X25519 scalar (unclamped; clamp on use), for opening messages sealed to
    /// this node (see [`crate::sealed`]).
    pub(crate) fn x25519_scalar(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_scalar_bytes())
    }

    /// Signs raw bytes. Prefer the domain-separated helpers in [`crate::envelope`].
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The key as PKCS#8 v1 PEM, the format `openssl genpkey -algorithm ed25519` writes.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        use base64::Engine;
        let mut der = Zeroizing::new(Vec::with_capacity(48));
        der.extend_from_slice(&PKCS8_PREFIX);
        der.extend_from_slice(self.secret_bytes().as_ref());
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der.as_slice()));
        Zeroizing::new(format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", b64.as_str()))
    }

    /// Reads a PKCS#8 v1 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, IdentityError> {
        use base64::Engine;
        let body = pem
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|r| r.strip_suffix(PEM_END))
            .ok_or(IdentityError::Pem("missing BEGIN/END PRIVATE KEY lines"))?;
        let b64: Zeroizing<String> = Zeroizing::new(body.split_whitespace().collect());
        let der = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| IdentityError::Pem("body is not base64"))?,
        );
        if der.len() != 48 || der[..16] != PKCS8_PREFIX {
            return Err(IdentityError::Pem("not an Ed25519 PKCS#8 v1 key"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&der[16..]);
        Ok(Self::from_secret_bytes(*seed))
    }
}

/// A node's public key and its three names. Serialized as its DID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity {
    key: VerifyingKey,
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.did())
    }
}

impl PublicIdentity {
    /// The identity with this raw 32-byte public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, IdentityError> {
        VerifyingKey::from_bytes(bytes)
            .map(|key| Self { key })
            .map_err(|_| IdentityError::BadKey)
    }

    /// The raw 32-byte public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key as an X25519 public key (its Montgomery form), for sealing messages to it.
    pub(crate) fn to_montgomery(self) -> curve25519_dalek::MontgomeryPoint {
        self.key.to_montgomery()
    }

    /// NodeId: the raw public key in lowercase hex.
    pub fn node_id(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// PeerId: the libp2p identity-multihash PeerId, `12D3KooW…`.
    pub fn peer_id(&self) -> String {
        let mut bytes = PEER_ID_PREFIX.to_vec();
        bytes.extend_from_slice(self.key.as_bytes());
        bs58::encode(bytes).into_string()
    }

    /// DID: `did:key:z6Mk…`.
    pub fn did(&self) -> String {
        let mut bytes = DID_KEY_PREFIX.to_vec();
        bytes.extend_from_slice(self.key.as_bytes());
        format!("did:key:z{}", bs58::encode(bytes).into_string())
    }

    /// Parses a NodeId.
    pub fn from_node_id(s: &str) -> Result<Self, IdentityError> {
        let err = || IdentityError::NodeId(s.to_string());
        let bytes: [u8; 32] = hex::decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(err)?;
        Self::from_bytes(&bytes).map_err(|_| err())
    }

    /// Parses a PeerId.
    pub fn from_peer_id(s: &str) -> Result<Self, IdentityError> {
        let err = || IdentityError::PeerId(s.to_string());
        let bytes = bs58::decode(s).into_vec().map_err(|_| err())?;
        let key = bytes.strip_prefix(&PEER_ID_PREFIX[..]).ok_or_else(err)?;
        let key: [u8; 32] = key.try_into().map_err(|_| err())?;
        Self::from_bytes(&key).map_err(|_| err())
    }

    /// Parses a DID.
    pub fn from_did(s: &str) -> Result<Self, IdentityError> {
        let err = || IdentityError::Did(s.to_string());
        let encoded = s.strip_prefix("did:key:z").ok_or_else(err)?;
        let bytes = bs58::decode(encoded).into_vec().map_err(|_| err())?;
        let key = bytes.strip_prefix(&DID_KEY_PREFIX[..]).ok_or_else(err)?;
        let key: [u8; 32] = key.try_into().map_err(|_| err())?;
        Self::from_bytes(&key).map_err(|_| err())
    }

    /// Verifies a signature over raw bytes (strict: rejects malleable and small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        let sig = Signature::from_slice(signature).map_err(|_| IdentityError::BadSignature)?;
        self.key
            .verify_strict(message, &sig)
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl FromStr for PublicIdentity {
    type Err = IdentityError;

    /// Accepts any of the three names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("did:") {
            Self::from_did(s)
        } else if s.starts_with("12D3KooW") {
            Self::from_peer_id(s)
        } else if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Self::from_node_id(s)
        } else {
            Err(IdentityError::Unrecognized(s.to_string()))
        }
    }
}

impl fmt::Display for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.did())
    }
}

impl Serialize for PublicIdentity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.did())
    }
}

impl<'de> Deserialize<'de> for PublicIdentity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1 test 1.
    const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn rfc8032() -> NodeIdentity {
        NodeIdentity::from_secret_bytes(hex::decode(RFC8032_SECRET).unwrap().try_into().unwrap())
    }

    #[test]
    fn rfc8032_key_has_the_published_public_key() {
        assert_eq!(rfc8032().public().node_id(), RFC8032_PUBLIC);
    }

    #[test]
    fn names_parse_back_to_the_same_key() {
        let p = rfc8032().public();
        for name in [p.node_id(), p.peer_id(), p.did()] {
            assert_eq!(name.parse::<PublicIdentity>().unwrap(), p, "{name}");
        }
        assert!(p.peer_id().starts_with("12D3KooW"));
        assert!(p.did().starts_with("did:key:z6Mk"));
    }

    #[test]
    fn pem_round_trips_and_refuses_garbage() {
        let id = rfc8032();
        let pem = id.to_pkcs8_pem();
        assert!(pem.starts_with(PEM_BEGIN));
        assert_eq!(
            NodeIdentity::from_pkcs8_pem(&pem).unwrap().public(),
            id.public()
        );
        assert!(NodeIdentity::from_pkcs8_pem("hello").is_err());
        let truncated = pem.replace("PRIVATE KEY-----\nMC4", "PRIVATE KEY-----\nMC5");
        assert!(NodeIdentity::from_pkcs8_pem(&truncated).is_err());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let shown = format!("{:?}", rfc8032());
        assert!(
            !shown.contains(RFC8032_SECRET) && !shown.contains("9d61b1"),
            "{shown}"
        );
    }

    #[test]
    fn malformed_names_are_refused_with_what_was_expected() {
        for bad in ["", "12D3KooW", "did:key:z6Mk", "did:web:example.com", "zz"] {
            let err = bad.parse::<PublicIdentity>().unwrap_err().to_string();
            assert!(
                err.contains("expected") || err.contains("is not"),
                "{bad}: {err}"
            );
        }
    }
}

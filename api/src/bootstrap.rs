//! Joining a machine: the bootstrap token a new node presents once (`univrs token create`),
//! the pin on the cluster's CA it checks first (`--ca-cert-hash`), and the certificate request
//! it then makes. The formats are Kubernetes' own (bootstrap tokens as kubeadm makes them, the
//! hash as `kubeadm join` checks it), so the upstream API server authenticates the token and
//! kube-controller-manager signs the certificate.

use rand::Rng;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The signer of node client certificates: kube-controller-manager signs what is approved.
pub const NODE_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// The usages a node certificate request asks for, and the only ones approved.
pub const NODE_USAGES: [&str; 2] = ["digital signature", "client auth"];

/// How long a node certificate lives; the agent renews it at two thirds of that.
pub const NODE_CERT_SECONDS: i64 = 86_400;

/// The namespace bootstrap token Secrets live in (where the API server looks for them).
pub const TOKEN_NAMESPACE: &str = "kube-system";

/// The Secret type of a bootstrap token.
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

/// The public ConfigMap a joining machine reads before it trusts anyone: the server's address
/// and CA, in `kube-public` (as kubeadm publishes it).
pub const CLUSTER_INFO: (&str, &str) = ("kube-public", "cluster-info");

/// A bootstrap token, `<id>.<secret>`: six and sixteen characters of `[a-z0-9]`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public half, the Secret's name suffix (`bootstrap-token-<id>`).
    pub id: String,
    /// The secret half.
    pub secret: String,
}

/// Why a string is not a bootstrap token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a token is <id>.<secret>: 6 and 16 characters of a-z and 0-9 (as `univrs token create` prints it)"
)]
pub struct TokenFormatError;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn well_formed(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl BootstrapToken {
    /// A fresh random token.
    pub fn generate<R: rand::CryptoRng + rand::RngCore>(rng: &mut R) -> Self {
        let mut draw = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        let id = draw(6);
        let secret = draw(16);
        Self { id, secret }
    }

    /// The name of the Secret that holds it.
    pub fn secret_name(&self) -> String {
        token_secret_name(&self.id)
    }
}

/// The Secret name of the token with `id`.
pub fn token_secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// Whether `id` has the form of a token id.
pub fn is_token_id(id: &str) -> bool {
    well_formed(id, 6)
}

impl FromStr for BootstrapToken {
    type Err = TokenFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, secret) = s.trim().split_once('.').ok_or(TokenFormatError)?;
        if !well_formed(id, 6) || !well_formed(secret, 16) {
            return Err(TokenFormatError);
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

/// The secret half never goes to logs.
impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

/// The pin of a CA, `sha256:<hex>` of its certificate's DER SubjectPublicKeyInfo (what
/// `kubeadm join --discovery-token-ca-cert-hash` checks).
pub fn ca_cert_hash(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(spki_der)))
}

/// Normalizes a `--ca-cert-hash` argument (`sha256:` and 64 hex digits, any case).
pub fn parse_ca_cert_hash(s: &str) -> Option<String> {
    let hex = s.trim().strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let t = BootstrapToken::generate(&mut rand::thread_rng());
        assert_eq!(t.to_string().parse::<BootstrapToken>().unwrap(), t);
        assert_eq!(t.secret_name(), format!("bootstrap-token-{}", t.id));
        assert!(!format!("{t:?}").contains(&t.secret));
        assert!(is_token_id(&t.id));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdefg",
            "abc-ef.0123456789abcdef",
        ] {
            assert_eq!(
                bad.parse::<BootstrapToken>(),
                Err(TokenFormatError),
                "{bad}"
            );
        }
        assert!("abcdef.0123456789abcdef".parse::<BootstrapToken>().is_ok());
    }

    #[test]
    fn ca_hashes_are_sha256_of_the_key_info() {
        let h = ca_cert_hash(b"spki");
        // printf spki | sha256sum
        assert_eq!(
            h,
            "sha256:6feecc8c16c5551d9feb3eb5f77e2da773bf68bd9ef9c52927ceb2c86e56892b"
        );
        assert_eq!(
            parse_ca_cert_hash(&h.to_uppercase().replace("SHA256", "sha256")),
            Some(h.clone())
        );
        assert_eq!(parse_ca_cert_hash("sha256:abc"), None);
        assert_eq!(parse_ca_cert_hash(&h[7..]), None);
    }
}

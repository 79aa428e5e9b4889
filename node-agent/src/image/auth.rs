//! Registry credentials on a node: the owner's docker-style `config.json` (what `docker login`
//! and `skopeo login` write; parsed by `univrs_api::registry_auth`, which the controller shares
//! for Workloads' pull Secrets), and how a pull was authorized, which decides who may reuse
//! what it stored.

use super::error::ImageError;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;
pub use univrs_api::registry_auth::{Credentials, DockerConfig};

/// Reads a docker-style `config.json` at `path`.
pub fn load_docker_config(path: &Path) -> Result<DockerConfig, ImageError> {
    let err = |reason: String| ImageError::Credentials {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?);
    DockerConfig::parse(&bytes).map_err(|e| err(e.0))
}

/// How a pull was authorized, as the store records it with the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Anonymously, with the node owner's login (which every Workload on the node pulls
    /// with), or imported from a layout: any Workload may run what it stored.
    Shared,
    /// With credentials of one Workload's own (their key: a salted hash, see
    /// [`credential_key`]): only Workloads that hold the same credentials may run what it
    /// stored without asking the registry again.
    Private(String),
}

/// A key naming `creds` for `registry` without revealing them: SHA-256 over a secret salt
/// of the node's store, so a key on disk cannot be checked against guessed passwords
/// elsewhere.
pub fn credential_key(salt: &[u8], registry: &str, creds: &Credentials) -> String {
    let mut h = Sha256::new();
    h.update(b"univrs registry credential v1\0");
    h.update(salt);
    let registry = univrs_api::registry_auth::normalize_registry(registry);
    for part in [registry.as_str(), &creds.username, &creds.password] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_salt_registry_user_and_password() {
        let c = Credentials::new("alice", "s3cret");
        let k = credential_key(b"salt", "r:5000", &c);
        assert_eq!(k, credential_key(b"salt", "r:5000", &c.clone()));
        assert!(!k.contains("s3cret"));
        for other in [
            credential_key(b"salt2", "r:5000", &c),
            credential_key(b"salt", "r:5001", &c),
            credential_key(b"salt", "r:5000", &Credentials::new("alice", "s3cres")),
            credential_key(b"salt", "r:5000", &Credentials::new("alicE", "s3cret")),
            // Boundaries are length-prefixed: moving a character across one changes the key.
            credential_key(b"salt", "r:5000", &Credentials::new("alices", "3cret")),
        ] {
            assert_ne!(k, other);
        }
    }
}

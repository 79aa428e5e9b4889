//! The one PEM loader: a rustls server configuration (ring, as kube's client uses) from a PEM
//! certificate chain and a PEM private key, and the leaf's fingerprint to tell clients.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong, and what to give instead.
        message: String,
    },
    /// rustls refused the certificate and key.
    #[error("{cert} and its key do not make a usable TLS identity: {source}")]
    Config {
        /// The certificate file.
        cert: String,
        /// Why rustls refused them.
        source: rustls::Error,
    },
}

/// A server's TLS configuration and what to tell its clients.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The rustls configuration (HTTP/1.1 by ALPN: our servers speak nothing else).
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate's DER as colon-separated hex, as
    /// `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
}

/// The SHA-256 fingerprint of a DER certificate, `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    let pem_err = |path: &Path, message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, format!("reading the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, format!("parsing the certificate: {e}")))?;
    let leaf = chain.first().ok_or_else(|| {
        pem_err(
            cert,
            "holds no PEM CERTIFICATE block; give the server's certificate chain, leaf first"
                .into(),
        )
    })?;
    let fingerprint = fingerprint(leaf);
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        pem_err(
            key,
            format!("reading the private key (PEM: PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let config_err = |source| TlsError::Config {
        cert: cert.display().to_string(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_pair_and_refuses_what_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        let tls = server_config(&cert, &key).unwrap();
        assert_eq!(tls.fingerprint, fingerprint(pair.cert.der()));
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);

        let e = server_config(&key, &key).unwrap_err().to_string();
        assert!(e.contains("no PEM CERTIFICATE block"), "{e}");
        let e = server_config(&cert, &cert).unwrap_err().to_string();
        assert!(e.contains("private key"), "{e}");
        let e = server_config(&dir.path().join("missing"), &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }
}

//! The one PEM loader: a rustls server configuration (ring, as kube's client uses) from a PEM
//! certificate chain and a PEM private key, and the leaf's fingerprint to tell clients; and
//! the one maker of self-signed server certificates (the MCP server's, the dashboard's, each
//! node server's), kept in a private directory and made once.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
    /// A self-signed certificate could not be made or written.
    #[error("making a self-signed certificate in {dir}: {message}")]
    Generate {
        /// Where it was to be kept.
        dir: String,
        /// What failed.
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
    server_config_with(cert, key, None)
}

/// As [`server_config`], asking clients for a certificate that `clients` checks (a client
/// without one is still served, and authenticates otherwise).
pub fn server_config_with(
    cert: &Path,
    key: &Path,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<ServerTls, TlsError> {
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
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
    })
}

/// The self-signed certificate in `dir` (`tls.crt`, `tls.key` mode 0600, `dir` made 0700):
/// made first for `names` (DNS names or IP addresses) under `common_name` when missing.
/// Returns the certificate's path, its key's path, and whether it was made now.
pub fn self_signed(
    dir: &Path,
    names: Vec<String>,
    common_name: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf, bool), TlsError> {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let err = |message: String| TlsError::Generate {
        dir: dir.display().to_string(),
        message,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| err(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(825);
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| err(e.to_string()))?;
    let made = params.self_signed(&pair).map_err(|e| err(e.to_string()))?;
    // The key first: a certificate without its key would be taken for a finished pair.
    write_private(&key, &pair.serialize_pem()).map_err(|e| err(e.to_string()))?;
    write_private(&cert, &made.pem()).map_err(|e| err(e.to_string()))?;
    Ok((cert, key, true))
}

/// Writes `text` to a new file `path` that only its owner may read (mode 0600).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
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

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("tls");
        let (cert, key, made) = self_signed(&sub, vec!["localhost".into()], "test").unwrap();
        assert!(made);
        let first = server_config(&cert, &key).unwrap().fingerprint;
        let (cert, key, made) = self_signed(&sub, vec!["localhost".into()], "test").unwrap();
        assert!(!made);
        assert_eq!(server_config(&cert, &key).unwrap().fingerprint, first);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&sub), 0o700);
    }
}

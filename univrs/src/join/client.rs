//! A kube client that authenticates with the node's certificate and re-reads it when it is
//! renewed: every new TLS connection asks [`CertFiles`] for the current certificate, which
//! reloads the files when the certificate file changed. So renewal needs no restart and no
//! rebuilt client (every component holds a clone of the one client).

use anyhow::{Context, Result};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The node's certificate and key files, loaded again when the certificate changes.
#[derive(Debug)]
pub struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Option<(SystemTime, Arc<CertifiedKey>)>>,
}

impl CertFiles {
    /// Reads `cert` (PEM chain) and `key` (PKCS#8 PEM) now, so a bad pair fails early.
    pub fn new(cert: &Path, key: &Path) -> Result<Self> {
        let files = Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: Mutex::new(None),
        };
        files.current()?;
        Ok(files)
    }

    /// The certified key as the files hold it now.
    fn current(&self) -> Result<Arc<CertifiedKey>> {
        let modified = std::fs::metadata(&self.cert)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading {}", self.cert.display()))?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, key)) = loaded.as_ref()
            && *at == modified
        {
            return Ok(key.clone());
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", self.cert.display()))?;
        anyhow::ensure!(
            !chain.is_empty(),
            "{} holds no certificate",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading {}", self.key.display()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .with_context(|| format!("{} is not a key rustls can sign with", self.key.display()))?;
        let certified = Arc::new(CertifiedKey::new(chain, signer));
        *loaded = Some((modified, certified.clone()));
        Ok(certified)
    }
}

impl ResolvesClientCert for CertFiles {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        match self.current() {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "loading the node certificate");
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client for `server` (trusting only `ca_pem`) that presents the node certificate in
/// `cert` with the key in `key`, re-read whenever `cert` changes.
pub fn node_client(server: &str, ca_pem: &str, cert: &Path, key: &Path) -> Result<kube::Client> {
    let config = pinned(server, ca_pem)?;
    let mut tls = config
        .rustls_client_config()
        .context("TLS settings for the API server")?;
    tls.client_auth_cert_resolver = Arc::new(CertFiles::new(cert, key)?);
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .map_err(tower::BoxError::from)
        .service(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https));
    Ok(kube::Client::new(service, config.default_namespace))
}

/// A client that presents a bootstrap token (the first request for a certificate).
pub fn token_client(server: &str, ca_pem: &str, token: &str) -> Result<kube::Client> {
    let mut config = pinned(server, ca_pem)?;
    config.auth_info.token = Some(token.to_string().into());
    Ok(kube::Client::try_from(config)?)
}

/// Settings for `server` that trust only the cluster's CA.
fn pinned(server: &str, ca_pem: &str) -> Result<kube::Config> {
    let mut config = kube::Config::new(server.parse().context("the server URL")?);
    config.root_cert = Some(
        CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .context("parsing the cluster CA")?,
    );
    Ok(config)
}

/// A client that trusts nobody yet, for reading the public cluster-info whose CA is then
/// checked against the pin (`--ca-cert-hash`) before anything else is sent.
pub fn discovery_client(server: &str) -> Result<kube::Client> {
    let mut config = kube::Config::new(server.parse().context("the server URL")?);
    config.accept_invalid_certs = true;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use univrs_api::identity::NodeIdentity;

    /// A self-signed certificate of `identity`'s key with `serial`, PEM.
    fn cert_of(identity: &NodeIdentity, name: &str, serial: u64) -> String {
        let key = rcgen::KeyPair::from_pem(&identity.to_pkcs8_pem()).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.serial_number = Some(serial.into());
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            univrs_api::system::node_user(name),
        );
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_renewed_certificate_is_presented_from_the_next_connection_on() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let identity = NodeIdentity::generate();
        let key = dir.path().join("identity.key");
        let cert = dir.path().join("node.crt");
        crate::control_plane::pki::write_private(&key, &identity.to_pkcs8_pem()).unwrap();
        let first = cert_of(&identity, "library", 1);
        crate::join::certificate::write(&cert, &first).unwrap();
        let files = CertFiles::new(&cert, &key).unwrap();
        let presented = |f: &CertFiles| f.resolve(&[], &[]).unwrap().cert[0].to_vec();
        let before = presented(&files);
        assert_eq!(
            presented(&files),
            before,
            "unchanged files are not read again"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        crate::join::certificate::write(&cert, &cert_of(&identity, "library", 2)).unwrap();
        assert_ne!(presented(&files), before, "the renewed certificate");
        // A broken file presents nothing rather than panicking, and says why in the log.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(files.resolve(&[], &[]).is_none());
    }
}

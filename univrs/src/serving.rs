//! TLS for this binary's HTTP listeners (the MCP server, the dashboard): the given certificate
//! and key (read by `univrs_io::tls`, the one PEM loader), or a self-signed certificate made
//! once into the data directory (its SHA-256 fingerprint is printed so a client can pin it or
//! trust the file).

use anyhow::Result;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;

/// The listener's TLS configuration and what to tell clients about it.
pub struct Tls {
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate file (what a client trusts).
    pub cert_path: PathBuf,
    /// SHA-256 of the certificate's DER, as colon-separated hex (`openssl x509 -fingerprint
    /// -sha256` prints the same).
    pub fingerprint: String,
    /// Whether the certificate was made now.
    pub generated: bool,
}

/// TLS from a PEM certificate chain and a PEM private key.
pub fn from_files(cert: &Path, key: &Path) -> Result<Tls> {
    let loaded = univrs_io::tls::server_config(cert, key)?;
    Ok(Tls {
        config: loaded.config,
        cert_path: cert.to_path_buf(),
        fingerprint: loaded.fingerprint,
        generated: false,
    })
}

/// The names a self-signed certificate for `addr` carries: loopback, the host name, and the
/// listen address itself when it is a specific one.
fn names(addr: &SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if !host.trim().is_empty() {
        names.push(host.trim().to_string());
    }
    let ip = addr.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names
}

/// TLS from the self-signed certificate in `dir` (`tls.crt`, `tls.key`), made first if missing
/// (named `common_name`).
pub fn self_signed(dir: &Path, addr: &SocketAddr, common_name: &str) -> Result<Tls> {
    let (cert, key, generated) = univrs_io::tls::self_signed(dir, names(addr), common_name)?;
    let mut tls = from_files(&cert, &key)?;
    tls.generated = generated;
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let first = self_signed(dir.path(), &addr, "test").unwrap();
        assert!(first.generated);
        let again = self_signed(dir.path(), &addr, "test").unwrap();
        assert!(!again.generated);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

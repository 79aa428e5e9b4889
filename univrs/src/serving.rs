//! TLS and bearer tokens for this binary's HTTP listeners (the MCP server, the dashboard): the
//! given certificate and key (read by `univrs_io::tls`, the one PEM loader), or a self-signed
//! certificate made once into the data directory (its SHA-256 fingerprint is printed so a
//! client can pin it or trust the file); the given token file, or a token made once there.

use anyhow::Result;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls;
use univrs_io::token::Token;

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

/// TLS from `cert` and `key` when both are given, else from the self-signed certificate in
/// `dir` (named `common_name`, made first if missing).
pub fn given_or_self_signed(
    cert: Option<&Path>,
    key: Option<&Path>,
    dir: &Path,
    addr: &SocketAddr,
    common_name: &str,
) -> Result<Tls> {
    match (cert, key) {
        (Some(cert), Some(key)) => from_files(cert, key),
        _ => self_signed(dir, addr, common_name),
    }
}

/// A listener's bearer token and where it is kept.
pub struct ServerToken {
    /// The token.
    pub token: Token,
    /// Its file.
    pub path: PathBuf,
    /// Whether it was made now.
    pub made: bool,
}

/// The token in `given`, else the one in `dir/token` (made first if missing, mode 0600).
pub fn given_or_made_token(given: Option<&Path>, dir: &Path) -> Result<ServerToken> {
    Ok(match given {
        Some(path) => ServerToken {
            token: Token::load(path)?,
            path: path.to_path_buf(),
            made: false,
        },
        None => {
            let path = dir.join("token");
            let (token, made) = Token::load_or_generate(&path)?;
            ServerToken { token, path, made }
        }
    })
}

/// Tells people (on stderr) where the token is, what clients do with it (`use_it`), and the
/// certificate's file and fingerprint; never the token itself.
pub fn announce(token: Option<&ServerToken>, tls: Option<&Tls>, use_it: &str) {
    if let Some(t) = token {
        eprintln!(
            "bearer token: {} ({}); {use_it}",
            t.path.display(),
            if t.made {
                "made now, mode 0600"
            } else {
                "read"
            }
        );
    }
    if let Some(t) = tls {
        eprintln!(
            "TLS certificate: {}{}\n  SHA-256 fingerprint {}",
            t.cert_path.display(),
            if t.generated {
                " (self-signed, made now)"
            } else {
                ""
            },
            t.fingerprint
        );
    }
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

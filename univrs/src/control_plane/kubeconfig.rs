//! Kubeconfig files: the admin's and kube-controller-manager's (embedded certificates), a
//! ServiceAccount's (a token file) and a joined node's (certificate files it renews).

use super::pki::{CertFiles, write_private};
use anyhow::{Context, Result};
use base64::Engine;
use std::path::Path;

/// The server and CA (PEM) of a kubeconfig's first cluster: what the admin kubeconfig, a joined
/// node's and the public cluster-info each say of the cluster. `what` names the kubeconfig in
/// errors.
pub fn first_cluster(kc: &kube::config::Kubeconfig, what: &str) -> Result<(String, String)> {
    let cluster = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("{what} names no cluster"))?;
    let server = cluster
        .server
        .clone()
        .with_context(|| format!("{what} names no server"))?;
    let ca = cluster
        .certificate_authority_data
        .as_deref()
        .with_context(|| format!("{what} carries no certificate-authority-data"))?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .with_context(|| format!("{what}'s CA is not base64"))?;
    let pem = String::from_utf8(pem).with_context(|| format!("{what}'s CA is not PEM text"))?;
    Ok((server, pem))
}

/// [`first_cluster`] of the kubeconfig file `path`.
pub fn read_first_cluster(path: &Path) -> Result<(String, String)> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    first_cluster(&kc, &path.display().to_string())
}

/// Writes a kubeconfig (mode 0600) that reaches `server` as the holder of `client`.
pub fn write(path: &Path, server: &str, ca: &Path, client: &CertFiles, user: &str) -> Result<()> {
    let b64 = |p: &Path| -> Result<String> {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let credentials = serde_json::json!({
        "client-certificate-data": b64(&client.cert)?,
        "client-key-data": b64(&client.key)?,
    });
    write_config(path, server, &b64(ca)?, user, credentials)
}

/// Writes a kubeconfig (mode 0600) that reaches `server` (whose CA is `ca_pem`) with the bearer
/// token kept in `token_file`, which clients re-read, so the token can be renewed under
/// running processes.
pub fn write_with_token_file(
    path: &Path,
    server: &str,
    ca_pem: &str,
    token_file: &Path,
    user: &str,
) -> Result<()> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let credentials = serde_json::json!({ "tokenFile": token_file });
    write_config(path, server, &ca_data, user, credentials)
}

/// Writes a kubeconfig (mode 0600) that reaches `server` (whose CA is `ca_pem`) as the holder
/// of the certificate in the file `cert` with the key in the file `key`: files, not data, so a
/// renewed certificate is what every reader of the kubeconfig presents.
pub fn write_with_cert_files(
    path: &Path,
    server: &str,
    ca_pem: &str,
    cert: &Path,
    key: &Path,
    user: &str,
) -> Result<()> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let credentials = serde_json::json!({
        "client-certificate": cert,
        "client-key": key,
    });
    write_config(path, server, &ca_data, user, credentials)
}

fn write_config(
    path: &Path,
    server: &str,
    ca_data: &str,
    user: &str,
    credentials: serde_json::Value,
) -> Result<()> {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "univrs", "cluster": {
            "server": server,
            "certificate-authority-data": ca_data,
        }}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "univrs", "context": {"cluster": "univrs", "user": user}}],
        "current-context": "univrs",
        "preferences": {},
    });
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    write_private(path, &serde_yaml::to_string(&config)?)
}

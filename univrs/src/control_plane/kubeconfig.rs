//! Kubeconfig files for the admin and for kube-controller-manager, with embedded certificates.

use super::pki::{CertFiles, write_private};
use anyhow::{Context, Result};
use base64::Engine;
use std::path::Path;

/// Writes a kubeconfig (mode 0600) that reaches `server` as the holder of `client`.
pub fn write(path: &Path, server: &str, ca: &Path, client: &CertFiles, user: &str) -> Result<()> {
    let b64 = |p: &Path| -> Result<String> {
        let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "univrs", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca)?,
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(&client.cert)?,
            "client-key-data": b64(&client.key)?,
        }}],
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

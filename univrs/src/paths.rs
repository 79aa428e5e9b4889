//! Where univrs keeps its data and its cache by default (XDG base directories).

use anyhow::Context;
use std::path::PathBuf;

fn xdg(var: &str, fallback: &str) -> anyhow::Result<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(d) => Ok(PathBuf::from(d)),
        None => {
            Ok(PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(fallback))
        }
    }
}

/// `$XDG_DATA_HOME/univrs` (or `~/.local/share/univrs`).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("univrs"))
}

/// `$UNIVRS_CACHE_DIR`, or `$XDG_CACHE_HOME/univrs` (or `~/.cache/univrs`).
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("UNIVRS_CACHE_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    Ok(xdg("XDG_CACHE_HOME", ".cache")?.join("univrs"))
}

/// The kubeconfig admin commands use when none is given: the local control plane's admin
/// kubeconfig (`univrs up`, `univrs control-plane`), if there is one.
pub fn local_admin_kubeconfig() -> Option<PathBuf> {
    let p = data_dir().ok()?.join("control-plane/admin.kubeconfig");
    p.exists().then_some(p)
}

/// The kubeconfig a client command uses: the one given (flag or KUBECONFIG), else the local
/// control plane's when it exists (as `univrs kubectl` does), else None for kube's own
/// inference (~/.kube/config, in-cluster).
pub fn kubeconfig_or_local(given: Option<PathBuf>) -> Option<PathBuf> {
    if given.is_some() {
        return given;
    }
    let local = local_admin_kubeconfig();
    if let Some(p) = &local {
        tracing::info!(kubeconfig = %p.display(), "using the local control plane");
    }
    local
}

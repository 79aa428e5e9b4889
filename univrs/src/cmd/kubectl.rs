//! `univrs kubectl …`: the pinned kubectl, defaulting to the local control plane's kubeconfig.

use crate::control_plane::binaries::Binaries;
use crate::paths;
use anyhow::Context;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// Replaces this process with kubectl.
pub fn run(args: Vec<OsString>) -> anyhow::Result<()> {
    let bins = Binaries::resolve(None)?;
    let mut cmd = std::process::Command::new(&bins.kubectl);
    cmd.args(args);
    if std::env::var_os("KUBECONFIG").is_none() {
        cmd.env(
            "KUBECONFIG",
            paths::data_dir()?.join("control-plane/admin.kubeconfig"),
        );
    }
    Err(cmd.exec()).with_context(|| format!("running {}", bins.kubectl.display()))
}

//! Joining a machine the way a person does: `univrs token create` as the admin, then
//! `univrs join --no-start` with the line it printed (the controller must be running: it
//! approves the node's certificate).

use crate::{run, univrs_bin};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `univrs join …` line `univrs token create` prints for the cluster of `admin_kubeconfig`.
pub fn token_line(admin_kubeconfig: &Path) -> String {
    let (ok, line, err) = run(Command::new(univrs_bin())
        .args(["token", "create", "--ttl", "10m", "--kubeconfig"])
        .arg(admin_kubeconfig));
    assert!(ok, "univrs token create: {err}");
    assert!(line.starts_with("univrs join --server "), "{line}");
    line.trim().to_string()
}

/// Joins node `name` (data, key and credentials in `data_dir`) without starting its agent;
/// returns its kubeconfig.
pub fn join(admin_kubeconfig: &Path, data_dir: &Path, name: &str) -> PathBuf {
    let line = token_line(admin_kubeconfig);
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let (ok, out, err) = run(Command::new(univrs_bin())
        .args(&args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--node-name", name, "--no-start"]));
    assert!(ok, "univrs join {name}: {err}");
    let last = out.lines().last().unwrap_or_default();
    let kc = last
        .strip_prefix(&format!("joined node={name} kubeconfig="))
        .unwrap_or_else(|| panic!("no joined line: {out}"));
    PathBuf::from(kc)
}

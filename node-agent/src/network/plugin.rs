//! Running one CNI plugin, as the CNI specification (v1.0.0) describes it: the executable
//! named by the config's `type`, found in the plugin directories; the operation and its
//! arguments in `CNI_*` environment variables; the network configuration on stdin; a result
//! (ADD) or nothing (DEL, CHECK) on stdout and exit code 0, or an error object
//! (`code`, `msg`, `details`) on stdout and a non-zero exit code.

use super::error::NetworkError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Attach the container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Verify the attachment still is as the cached result says.
    Check,
}

impl Op {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Check => "CHECK",
        }
    }
}

/// The error object a plugin prints when it fails.
#[derive(Debug, Deserialize)]
struct CniErrorObject {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Where plugins are found and how long one may run.
#[derive(Debug, Clone)]
pub struct Plugins {
    /// The directories searched, in order (also passed to plugins as `CNI_PATH`, so the
    /// bridge plugin finds its IPAM plugin there).
    pub dirs: Vec<PathBuf>,
    /// How long one plugin may run before it is killed.
    pub timeout: Duration,
    /// A directory holding `iptables` (and its -save and -restore) but not `ip6tables`: the
    /// PATH of calls with [`Call::ipv4_only`].
    pub ipv4_only_path: PathBuf,
}

/// One call of one plugin.
pub struct Call<'a> {
    /// The operation.
    pub op: Op,
    /// The container id (`CNI_CONTAINERID`).
    pub container_id: &'a str,
    /// The namespace (`CNI_NETNS`); `None` on DEL when the namespace is gone.
    pub netns: Option<&'a Path>,
    /// The interface inside the namespace (`CNI_IFNAME`).
    pub ifname: &'a str,
    /// The plugin's full configuration (with `name`, `cniVersion`, `prevResult`, …).
    pub config: &'a Value,
    /// Run with only IPv4's iptables on PATH (see `Plugins::ipv4_only_path`).
    pub ipv4_only: bool,
}

impl Plugins {
    /// The executable of plugin `name`.
    pub fn find(&self, name: &str) -> Result<PathBuf, NetworkError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(NetworkError::Invalid(format!(
                "{name:?} is not a CNI plugin name"
            )));
        }
        self.dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| NetworkError::PluginNotFound {
                plugin: name.to_string(),
                dirs: self.dirs_joined(),
            })
    }

    /// Links `iptables`, `iptables-save` and `iptables-restore` from the system PATH into
    /// [`Plugins::ipv4_only_path`] (again on every start: the system's may have moved).
    pub fn prepare_ipv4_only_path(&self) -> Result<(), NetworkError> {
        for tool in ["iptables", "iptables-save", "iptables-restore"] {
            let Some(real) = crate::runtime::spec::DEFAULT_PATH
                .split(':')
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.is_file())
            else {
                continue;
            };
            let link = self.ipv4_only_path.join(tool);
            let _ = std::fs::remove_file(&link);
            match std::os::unix::fs::symlink(&real, &link) {
                // Another instance over the same state directory just made it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                other => other.map_err(super::error::io_err(format!(
                    "linking {} to {}",
                    link.display(),
                    real.display()
                )))?,
            }
        }
        Ok(())
    }

    fn dirs_joined(&self) -> String {
        self.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Runs the plugin named by the config's `type`; returns its result (ADD) or `None`.
    pub fn run(&self, call: &Call<'_>) -> Result<Option<Value>, NetworkError> {
        let plugin = call
            .config
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let exe = self.find(&plugin)?;
        let failed = |message: String| NetworkError::PluginOutput {
            plugin: plugin.clone(),
            op: call.op.as_str(),
            container_id: call.container_id.to_string(),
            message,
        };
        let stdin = serde_json::to_vec(call.config).map_err(|e| failed(e.to_string()))?;
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            // Plugins run iptables, found on PATH.
            .env(
                "PATH",
                if call.ipv4_only {
                    self.ipv4_only_path.as_os_str()
                } else {
                    std::ffi::OsStr::new(crate::runtime::spec::DEFAULT_PATH)
                },
            )
            .env("CNI_COMMAND", call.op.as_str())
            .env("CNI_CONTAINERID", call.container_id)
            .env(
                "CNI_NETNS",
                call.netns.map(Path::as_os_str).unwrap_or_default(),
            )
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_PATH", self.dirs_joined())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = std::time::Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                NetworkError::PluginNotFound {
                    plugin: plugin.clone(),
                    dirs: self.dirs_joined(),
                }
            } else {
                failed(format!("running {}: {e}", exe.display()))
            }
        })?;
        let pid = child.id() as i32;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that fails early may not read its stdin; its exit status says why.
            let _ = pipe.write_all(&stdin);
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("cni-plugin".into())
            .spawn(move || {
                let _ = tx.send(child.wait_with_output());
            })
            .map_err(|e| failed(format!("starting a thread to wait for it: {e}")))?;
        let output = match rx.recv_timeout(self.timeout) {
            Ok(out) => out.map_err(|e| failed(format!("waiting for it: {e}")))?,
            Err(_) => {
                // Not yet reaped, so the pid is still this plugin's.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = rx.recv();
                return Err(NetworkError::PluginTimeout {
                    plugin,
                    op: call.op.as_str(),
                    container_id: call.container_id.to_string(),
                    after: self.timeout,
                });
            }
        };
        tracing::debug!(
            plugin,
            op = call.op.as_str(),
            container = call.container_id,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "CNI plugin ran"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            if let Ok(e) = serde_json::from_str::<CniErrorObject>(&stdout) {
                return Err(NetworkError::Plugin {
                    plugin,
                    op: call.op.as_str(),
                    container_id: call.container_id.to_string(),
                    code: e.code,
                    msg: e.msg,
                    details: e.details,
                });
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(format!(
                "exited with {} without an error object: {}",
                output.status,
                last_words(&stdout, &stderr)
            )));
        }
        if call.op != Op::Add {
            return Ok(None);
        }
        let result: Value = serde_json::from_str(&stdout)
            .map_err(|e| failed(format!("its result is not JSON ({e}): {}", stdout.trim())))?;
        if !result.is_object() {
            return Err(failed(format!(
                "its result is not an object: {}",
                stdout.trim()
            )));
        }
        Ok(Some(result))
    }
}

/// What a plugin printed, trimmed to a readable size.
fn last_words(stdout: &str, stderr: &str) -> String {
    let text = format!("{} {}", stdout.trim(), stderr.trim());
    let text = text.trim();
    if text.is_empty() {
        return "(no output)".to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let from = chars.len().saturating_sub(500);
    chars[from..].iter().collect()
}

//! The container runtime: OCI containers through youki's `libcontainer`, one shim per container.
//!
//! `libcontainer` clones and forks, which is only safe in a single-threaded process, and the
//! agent is a multi-threaded tokio process. So `libcontainer` runs only inside a per-container
//! shim, `univrs shim run …`, that the agent spawns with [`std::process::Command`] (a fresh
//! exec, never a fork of the agent), the way containerd runs a shim per container:
//!
//! - [`spec`] builds the OCI runtime spec (`config.json`) from a [`spec::ContainerConfig`];
//! - [`shim`] is the single-threaded side: create, start, supervise, stop and delete one
//!   container with `libcontainer`, and record what happened in files;
//! - [`client`] is the agent side: plain processes and files, no `libcontainer` call, safe to
//!   use from an async process (its calls block briefly; run them on a blocking thread);
//! - [`cgroup`] reads a container's cgroup (usage, limits, OOM kills) on cgroup v1 and v2.
//!
//! Everything about a container lives in files under one state directory ([`Layout`]), so an
//! agent that restarts finds its containers again (their shims run in their own process group
//! and outlive the agent) and can stop, inspect and delete them.

pub mod cgroup;
pub mod client;
mod executor;
pub mod seccomp;
pub mod shim;
pub mod spec;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use client::{ContainerState, RuntimeClient, RuntimeError, ShimHandle};
pub use spec::ContainerConfig;

/// Where the runtime keeps its files under one state directory.
///
/// ```text
/// <root>/youki/<id>/              libcontainer's own state (created and removed by the shim)
/// <root>/containers/<id>/         the bundle, owned by the agent:
///     config.json                 the OCI runtime spec
///     container.log               the container's stdout and stderr
///     shim.log                    the shim's own messages
///     shim.pid                    the shim's pid (written by the agent and the shim)
///     pid                         the container's init pid (written once it is started)
///     stop                        a stop request: the grace period in milliseconds
///     exit.json                   the exit record (written last, atomically)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (the agent's state directory for containers).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `libcontainer`'s root directory (its per-container state lives below it).
    pub fn youki_root(&self) -> PathBuf {
        self.root.join("youki")
    }

    /// `libcontainer`'s state directory for one container.
    pub fn youki_dir(&self, id: &str) -> PathBuf {
        self.youki_root().join(id)
    }

    /// The directory holding every container's bundle.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The bundle directory of one container.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// The OCI runtime spec of one container.
    pub fn config_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("config.json")
    }

    /// The container's stdout and stderr.
    pub fn log_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("container.log")
    }

    /// The shim's own log (errors from creating or deleting the container).
    pub fn shim_log_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("shim.log")
    }

    /// The shim's pid.
    pub fn shim_pid_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("shim.pid")
    }

    /// The container's init pid, present once the container has started.
    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("pid")
    }

    /// A pending stop request (the grace period in milliseconds).
    pub fn stop_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("stop")
    }

    /// The exit record, present once the container has exited and been cleaned up.
    pub fn exit_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("exit.json")
    }
}

/// How a container ended, as the shim recorded it in `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code; `128 + n` when killed by signal `n` (as shells report it).
    pub code: i32,
    /// The signal that killed the init process, when the shim saw one.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// Whether the shim had to SIGKILL the container after the stop grace period.
    pub killed_after_grace: bool,
    /// Why the container could not be created or started (then `code` is 128).
    pub error: Option<String>,
    /// What went wrong removing the container's cgroup and state, if anything.
    pub cleanup_error: Option<String>,
    /// When the container was found exited, in milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
}

/// Checks a container id: 1 to 64 of `A-Z a-z 0-9 _ + - .`, not `.` or `..` (what
/// `libcontainer` accepts, and safe as a file name and a cgroup name).
pub fn validate_id(id: &str) -> Result<(), String> {
    validate_name("container id", id, 64)
}

/// Checks an agent name, used as a cgroup directory: same rules as [`validate_id`].
pub fn validate_agent_name(name: &str) -> Result<(), String> {
    validate_name("agent name", name, 64)
}

fn validate_name(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!(
            "{what} {name:?} must be 1 to {max} characters long"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} {name:?} is not a valid name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        return Err(format!(
            "{what} {name:?} contains {c:?}; use only letters, digits, '_', '+', '-' and '.'"
        ));
    }
    Ok(())
}

/// The cgroup path of a container: `/univrs/<agent>/<id>`, relative to each hierarchy's root,
/// so several agents on one machine keep their containers apart.
pub fn cgroup_path(agent: &str, id: &str) -> String {
    format!("/univrs/{agent}/{id}")
}

/// Writes `contents` to `path` atomically: a temporary file beside it (named after this
/// process, so two writers never share one), then a rename, so a reader sees either nothing
/// or the whole file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats an error with its chain of sources (`a: b: c`).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("web-0.abc_1+x").is_ok());
        assert!(validate_id("").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert_eq!(cgroup_path("n1", "web-0"), "/univrs/n1/web-0");
    }

    #[test]
    fn atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

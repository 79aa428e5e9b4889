//! The runtime's files: where everything about a container lives under one state directory,
//! and the exit record the shim writes there.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the runtime keeps its files under one state directory.
///
/// ```text
/// <root>/youki/<id>/              libcontainer's own state (created and removed by the shim)
/// <root>/seccomp/<sha256>.bpf      seccomp profiles compiled (see `super::seccomp_filter`)
/// <root>/containers/<id>/         the bundle, owned by the agent:
///     config.json                 the OCI runtime spec (without its seccomp profile)
///     seccomp.json                the container's seccomp profile (OCI `linux.seccomp`)
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

    /// Where the node's user namespace is pinned (see [`super::userns`]).
    pub fn userns_file(&self) -> PathBuf {
        self.root.join("userns")
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

    /// The seccomp profile of one container (installed by the shim's executor, not by
    /// `libcontainer`: see [`super::seccomp_filter`]).
    pub fn seccomp_file(&self, id: &str) -> PathBuf {
        self.bundle(id).join("seccomp.json")
    }

    /// Where compiled seccomp programs are kept.
    pub fn seccomp_cache(&self) -> PathBuf {
        self.root.join("seccomp")
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

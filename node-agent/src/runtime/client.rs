//! The agent's side of the runtime: start shims, read container state, stop, delete, tail
//! logs and read usage. Plain processes and files only (never `libcontainer`), so it is safe
//! in a multi-threaded async process; the calls block for short moments (polling files), so
//! an async agent runs them on a blocking thread (`tokio::task::spawn_blocking`).
//!
//! Shims run in their own process group, so the agent's death (or a Ctrl-C at its terminal)
//! does not reach the containers; a restarted agent finds them again with [`RuntimeClient::list`]
//! and [`RuntimeClient::state`], all of which read files under the state directory.

use super::cgroup::{self, Usage, cgroup_path};
use super::layout::{ExitRecord, Layout};
use super::shim::GATE_FD;
use super::spec::{self, ContainerConfig, SpecError};
use crate::fsutil::write_atomic;
use crate::ids::{validate_agent_name, validate_id};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`RuntimeClient::start`] waits for a shim to report the container started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RuntimeClient::stop`] waits beyond the grace period for the shim to finish.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// The longest path a unix socket may have (`libcontainer` puts one in its state directory).
const SUN_PATH_MAX: usize = 107;

/// What the runtime client reports when something fails.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container configuration is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A value given to the client is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A container with this id already has a bundle.
    #[error("container {0} already exists; delete it first")]
    Exists(String),
    /// No container with this id.
    #[error("container {0} not found")]
    NotFound(String),
    /// The shim reported that the container could not be created or started.
    #[error("container {id} failed to start: {message}")]
    StartFailed {
        /// The container id.
        id: String,
        /// Why, from the exit record or the shim's log.
        message: String,
    },
    /// The container's shim is gone without an exit record (it crashed or was killed).
    #[error("the shim of container {0} is gone without recording an exit; delete the container")]
    ShimLost(String),
    /// Waiting took too long.
    #[error("timed out after {after:?} waiting for container {id} to {what}")]
    Timeout {
        /// The container id.
        id: String,
        /// What was awaited.
        what: &'static str,
        /// How long was waited.
        after: Duration,
    },
    /// Force-deleting the container failed.
    #[error("deleting container {id}: {message}")]
    DeleteFailed {
        /// The container id.
        id: String,
        /// What `univrs shim delete` said.
        message: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let context = context.into();
    move |source| RuntimeError::Io { context, source }
}

/// Where a container is in its life, as its files show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// The shim is creating the container.
    Creating {
        /// The shim's pid.
        shim_pid: i32,
    },
    /// The container is running.
    Running {
        /// The container's init pid (in the agent's PID namespace).
        pid: i32,
        /// The shim's pid.
        shim_pid: i32,
    },
    /// The container exited and was cleaned up; the record says how.
    Exited(ExitRecord),
    /// The shim is gone without an exit record; [`RuntimeClient::delete`] cleans up.
    Lost {
        /// The container's init pid, if it had started.
        pid: Option<i32>,
        /// Whether that process still runs (unsupervised).
        alive: bool,
    },
}

/// A started container: its shim is a child of this process until reaped.
#[derive(Debug)]
pub struct ShimHandle {
    id: String,
    pid: i32,
    shim_pid: i32,
    child: Option<Child>,
}

impl ShimHandle {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's init pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The shim's pid.
    pub fn shim_pid(&self) -> i32 {
        self.shim_pid
    }

    /// Reaps the shim if it has exited (it exits once the container has).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => {
                let status = child.try_wait()?;
                if status.is_some() {
                    self.child = None;
                }
                Ok(status)
            }
            None => Ok(None),
        }
    }

    /// Waits for the shim to exit (blocking) and reaps it.
    pub fn wait(mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.take() {
            Some(mut child) => child.wait().map(Some),
            None => Ok(None),
        }
    }

    /// Hands the shim's [`Child`] to the caller, who must then reap it.
    pub fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ShimHandle {
    /// A dropped handle still reaps its shim (from a small thread), so no zombie is left.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            reap_later(&self.id, child);
        }
    }
}

/// A container its shim has created and holds before its process runs: release it
/// ([`RuntimeClient::release`]) or abandon it ([`RuntimeClient::abandon`]). Dropped, it is
/// abandoned: the gate closes, the shim deletes the container, and a small thread reaps it.
#[derive(Debug)]
pub struct Created {
    id: String,
    child: Option<Child>,
    shim_pid: i32,
    /// The gate's write end; closing it abandons the start.
    gate: Option<OwnedFd>,
}

impl Created {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its shim, for whoever consumes it (release, abandon); only `Drop` finds none.
    fn take_child(&mut self) -> Child {
        self.child
            .take()
            .expect("a Created holds its shim until it is consumed")
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        drop(self.gate.take());
        if let Some(child) = self.child.take() {
            reap_later(&self.id, child);
        }
    }
}

/// Reaps `child` from a small thread, so no zombie is left.
fn reap_later(id: &str, mut child: Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name(format!("shim-reaper-{id}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = child.wait();
        });
    if let Err(e) = spawned {
        tracing::warn!(id, "cannot reap the shim: {e}");
    }
}

/// Makes `gate` the shim's fd [`GATE_FD`] (dup2 clears close-on-exec on the copy only).
#[allow(unsafe_code)]
fn pass_gate(cmd: &mut Command, gate: OwnedFd) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = gate.as_raw_fd();
    // SAFETY: between fork and exec only dup2 or fcntl runs, both async-signal-safe; `gate`
    // lives in the closure (owned by the Command) until after the spawn.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &gate;
            let ok = if raw == GATE_FD {
                // Already fd 3: dup2 would keep close-on-exec; clear it instead.
                nix::libc::fcntl(raw, nix::libc::F_SETFD, 0)
            } else {
                nix::libc::dup2(raw, GATE_FD)
            };
            if ok < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts and manages containers through `univrs shim` processes.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    shim_bin: PathBuf,
    layout: Layout,
    agent: String,
}

impl RuntimeClient {
    /// A client running shims from `shim_bin` (the `univrs` binary; the agent passes
    /// `std::env::current_exe()`), keeping state under `state_dir`, with cgroups under
    /// `/univrs/<agent>/`.
    pub fn new(
        shim_bin: impl Into<PathBuf>,
        state_dir: impl AsRef<Path>,
        agent: &str,
    ) -> Result<Self, RuntimeError> {
        validate_agent_name(agent).map_err(RuntimeError::Invalid)?;
        let root = std::path::absolute(state_dir.as_ref()).map_err(io_err(format!(
            "resolving {}",
            state_dir.as_ref().display()
        )))?;
        Ok(Self {
            shim_bin: shim_bin.into(),
            layout: Layout::new(root),
            agent: agent.to_string(),
        })
    }

    /// The file layout under the state directory.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The agent name (the cgroup parent `/univrs/<agent>`).
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The cgroup path a new container `id` gets.
    pub fn cgroup_path(&self, id: &str) -> String {
        cgroup_path(&self.agent, id)
    }

    /// Writes the bundle of `config` and spawns its shim; returns once the container runs
    /// (its pid file is written). `grace` is the default time between SIGTERM and SIGKILL
    /// when the shim is asked to stop without one (e.g. `kill <shim pid>`). On failure the
    /// container is cleaned up and the error says why (from the shim).
    pub fn start(
        &self,
        config: &ContainerConfig,
        grace: Duration,
    ) -> Result<ShimHandle, RuntimeError> {
        let created = self.create(config, grace)?;
        self.release(created)
    }

    /// Writes the bundle of `config` and spawns its shim, which creates the container and
    /// holds it before its process runs; returns at once. [`RuntimeClient::release`] lets it
    /// run, [`RuntimeClient::abandon`] deletes it (so does the shim if this process dies).
    pub fn create(
        &self,
        config: &ContainerConfig,
        grace: Duration,
    ) -> Result<Created, RuntimeError> {
        let id = config.id.as_str();
        spec::validate(config)?;
        let socket = self.layout.youki_dir(id).join("notify.sock");
        if socket.as_os_str().len() > SUN_PATH_MAX {
            return Err(RuntimeError::Invalid(format!(
                "the state directory {} is too deep: {} must fit a unix socket path ({SUN_PATH_MAX} bytes)",
                self.layout.root().display(),
                socket.display()
            )));
        }
        let spec = spec::build_spec(config, &self.cgroup_path(id))?;

        let dirs = [
            self.layout.root().to_path_buf(),
            self.layout.containers_dir(),
        ];
        for dir in dirs {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let bundle = self.layout.bundle(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&bundle) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Exists(id.to_string()));
            }
            Err(e) => return Err(io_err(format!("creating {}", bundle.display()))(e)),
        }

        let spawned = self.spawn_shim(id, &spec, grace);
        self.cleaned_up_on_error(id, spawned)
    }

    /// `result`, having deleted container `id` first if it is an error (a failed start leaves
    /// nothing behind).
    fn cleaned_up_on_error<T>(
        &self,
        id: &str,
        result: Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        if result.is_err()
            && let Err(cleanup) = self.delete(id)
        {
            tracing::warn!(id, "cleaning up after a failed start: {cleanup}");
        }
        result
    }

    /// Lets a created container's process run; returns once it runs. On failure the
    /// container is cleaned up and the error says why (from the shim).
    pub fn release(&self, mut created: Created) -> Result<ShimHandle, RuntimeError> {
        let id = created.id.clone();
        // The shim may have failed already (its exit record says why): the write then finds
        // the pipe closed, and the wait below reads the record.
        if let Some(gate) = created.gate.take() {
            let _ = nix::unistd::write(&gate, b"1");
        }
        let running = self.wait_running(created);
        self.cleaned_up_on_error(&id, running)
    }

    /// Deletes a created container without running its process: its shim sees the gate
    /// close, deletes the container and exits; then its bundle goes.
    pub fn abandon(&self, mut created: Created) -> Result<(), RuntimeError> {
        drop(created.gate.take());
        let mut child = created.take_child();
        let started = Instant::now();
        while child
            .try_wait()
            .map_err(io_err("waiting for the shim"))?
            .is_none()
        {
            if started.elapsed() > START_TIMEOUT {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.delete(&created.id)
    }

    fn spawn_shim(
        &self,
        id: &str,
        spec: &oci_spec::runtime::Spec,
        grace: Duration,
    ) -> Result<Created, RuntimeError> {
        // The seccomp profile goes beside config.json: the shim's executor installs it,
        // compiled once (see `seccomp_filter`), where libcontainer would compile it per start.
        let mut spec = spec.clone();
        let profile = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.seccomp_mut().take());
        if let Some(profile) = profile {
            let file = self.layout.seccomp_file(id);
            let json = serde_json::to_vec(&profile).map_err(|e| {
                RuntimeError::Invalid(format!("serializing the seccomp profile: {e}"))
            })?;
            std::fs::write(&file, json).map_err(io_err(format!("writing {}", file.display())))?;
        }
        let config_file = self.layout.config_file(id);
        spec.save(&config_file).map_err(|e| {
            RuntimeError::Invalid(format!("writing {}: {e}", config_file.display()))
        })?;
        let shim_log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.layout.shim_log_file(id))
            .map_err(io_err("opening shim.log"))?;
        let shim_log_err = shim_log
            .try_clone()
            .map_err(io_err("duplicating shim.log"))?;
        // The gate: close-on-exec on both ends here, so no other child of this process ever
        // holds the write end (the shim must see it close when this process goes).
        let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("making the gate pipe")(e.into()))?;

        let mut cmd = self.shim_for("run", id);
        cmd.arg("--grace")
            .arg(format!("{}ms", grace.as_millis()))
            .arg("--gated")
            .stdout(shim_log)
            .stderr(shim_log_err)
            // Its own process group: signals for the agent's group do not reach it.
            .process_group(0);
        pass_gate(&mut cmd, gate_r);
        if let Some(filter) = std::env::var_os("UNIVRS_SHIM_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let mut child = cmd.spawn().map_err(io_err(format!(
            "spawning {} shim run",
            self.shim_bin.display()
        )))?;
        let shim_pid = child.id() as i32;
        // The shim writes it too; written here as well, a concurrent `state` never mistakes a
        // shim that has not yet written it for a lost one.
        if let Err(e) = write_atomic(
            &self.layout.shim_pid_file(id),
            shim_pid.to_string().as_bytes(),
        ) {
            let _ = kill(Pid::from_raw(shim_pid), Signal::SIGKILL);
            let _ = child.wait();
            return Err(io_err("writing shim.pid")(e));
        }
        Ok(Created {
            id: id.to_string(),
            child: Some(child),
            shim_pid,
            gate: Some(gate_w),
        })
    }

    /// Waits until a released container runs (its pid file), or its shim says why not.
    fn wait_running(&self, mut created: Created) -> Result<ShimHandle, RuntimeError> {
        let mut child = created.take_child();
        let (id, shim_pid) = (created.id.as_str(), created.shim_pid);
        let started = Instant::now();
        let mut polls = 0u32;
        loop {
            if let Some(pid) = read_pid(&self.layout.pid_file(id)) {
                return Ok(ShimHandle {
                    id: id.to_string(),
                    pid,
                    shim_pid,
                    child: Some(child),
                });
            }
            if let Some(record) = read_exit(&self.layout.exit_file(id)) {
                let _ = child.wait();
                let message = record
                    .error
                    .unwrap_or_else(|| format!("exited with code {} while starting", record.code));
                return Err(RuntimeError::StartFailed {
                    id: id.to_string(),
                    message,
                });
            }
            if let Some(status) = child.try_wait().map_err(io_err("waiting for the shim"))? {
                let log = tail_lines(&self.layout.shim_log_file(id), 20).unwrap_or_default();
                return Err(RuntimeError::StartFailed {
                    id: id.to_string(),
                    message: format!("the shim exited ({status}): {}", log.join("\n")),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = kill(Pid::from_raw(shim_pid), Signal::SIGKILL);
                let _ = child.wait();
                return Err(RuntimeError::Timeout {
                    id: id.to_string(),
                    what: "start",
                    after: START_TIMEOUT,
                });
            }
            polls += 1;
            std::thread::sleep(if polls < 500 {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(10)
            });
        }
    }

    /// The command that runs `args` inside running container `id` as the container runs
    /// (`univrs shim exec`, see [`super::exec`]); it exits with the command's status, 137
    /// when `timeout` passed. Spawn it from any thread: it is a fresh process.
    pub fn exec_command(&self, id: &str, args: &[&str], timeout: Duration) -> Command {
        let mut cmd = self.shim_for("exec", id);
        cmd.arg("--timeout")
            .arg(format!("{}ms", timeout.as_millis()))
            .arg("--")
            .args(args);
        cmd
    }

    /// `univrs shim <sub>`, with nothing of the agent's: no stdin, `/` as its directory, and
    /// only `PATH` in its environment (the agent's tokens and kubeconfigs are none of its
    /// business).
    fn shim(&self, sub: &str) -> Command {
        let mut cmd = Command::new(&self.shim_bin);
        cmd.args(["shim", sub])
            .stdin(Stdio::null())
            .current_dir("/")
            .env_clear()
            .env("PATH", spec::DEFAULT_PATH);
        cmd
    }

    /// `univrs shim <sub> --root <state dir> --id <id>`.
    fn shim_for(&self, sub: &str, id: &str) -> Command {
        let mut cmd = self.shim(sub);
        cmd.arg("--root")
            .arg(self.layout.root())
            .arg("--id")
            .arg(id);
        cmd
    }

    /// Pins the node's user namespace (container ids `0..size` are host ids `base..`) with
    /// `univrs shim userns`; returns where, for [`spec::UserNamespace::Join`].
    pub fn pin_user_namespace(&self, base: u32, size: u32) -> Result<PathBuf, RuntimeError> {
        let path = self.layout.userns_file();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.layout.root())
            .map_err(io_err(format!("creating {}", self.layout.root().display())))?;
        let out = self
            .shim("userns")
            .arg("--path")
            .arg(&path)
            .args(["--base", &base.to_string(), "--size", &size.to_string()])
            .output()
            .map_err(io_err("running univrs shim userns"))?;
        if !out.status.success() {
            return Err(RuntimeError::Invalid(format!(
                "pinning the node's user namespace (host ids {base}..{}): {}",
                u64::from(base) + u64::from(size),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(path)
    }

    /// The ids of every container with a bundle (what a restarted agent re-adopts).
    pub fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let dir = self.layout.containers_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("listing {}", dir.display()))(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The shim's pid, if the shim of `id` is alive.
    pub fn shim_pid(&self, id: &str) -> Option<i32> {
        let pid = read_pid(&self.layout.shim_pid_file(id))?;
        is_our_shim(pid, id).then_some(pid)
    }

    /// The state of container `id`, from its files.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        validate_id(id).map_err(RuntimeError::Invalid)?;
        if !self.layout.bundle(id).is_dir() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        if let Some(record) = read_exit(&self.layout.exit_file(id)) {
            return Ok(ContainerState::Exited(record));
        }
        let pid = read_pid(&self.layout.pid_file(id));
        match (self.shim_pid(id), pid) {
            (Some(shim_pid), Some(pid)) => Ok(ContainerState::Running { pid, shim_pid }),
            (Some(shim_pid), None) => Ok(ContainerState::Creating { shim_pid }),
            (None, _) => {
                // The shim may have finished between the two reads.
                if let Some(record) = read_exit(&self.layout.exit_file(id)) {
                    return Ok(ContainerState::Exited(record));
                }
                Ok(ContainerState::Lost {
                    pid,
                    alive: pid.is_some_and(process_alive),
                })
            }
        }
    }

    /// Asks the shim to stop the container: SIGTERM now, SIGKILL after `grace`. Returns at
    /// once; a container that already exited is fine.
    pub fn request_stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        validate_id(id).map_err(RuntimeError::Invalid)?;
        if !self.layout.bundle(id).is_dir() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        if self.layout.exit_file(id).exists() {
            return Ok(());
        }
        let Some(shim_pid) = self.shim_pid(id) else {
            if self.layout.exit_file(id).exists() {
                return Ok(());
            }
            return Err(RuntimeError::ShimLost(id.to_string()));
        };
        write_atomic(
            &self.layout.stop_file(id),
            grace.as_millis().to_string().as_bytes(),
        )
        .map_err(io_err("writing the stop request"))?;
        match kill(Pid::from_raw(shim_pid), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io_err("signalling the shim")(io::Error::from(e))),
        }
    }

    /// Stops the container (SIGTERM, then SIGKILL after `grace`) and waits for its exit
    /// record.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<ExitRecord, RuntimeError> {
        self.request_stop(id, grace)?;
        self.wait_exit(id, grace + STOP_MARGIN)
    }

    /// Waits up to `timeout` for the container's exit record.
    pub fn wait_exit(&self, id: &str, timeout: Duration) -> Result<ExitRecord, RuntimeError> {
        let started = Instant::now();
        loop {
            match self.state(id)? {
                ContainerState::Exited(record) => return Ok(record),
                ContainerState::Lost { .. } => {
                    return Err(RuntimeError::ShimLost(id.to_string()));
                }
                ContainerState::Creating { .. } | ContainerState::Running { .. } => {}
            }
            if started.elapsed() > timeout {
                return Err(RuntimeError::Timeout {
                    id: id.to_string(),
                    what: "exit",
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Deletes container `id` whatever its state: a running container is killed (no grace),
    /// a dead shim's leftovers are force-deleted (`univrs shim delete`), and the bundle goes
    /// last. Deleting a container that does not exist is not an error.
    pub fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        validate_id(id).map_err(RuntimeError::Invalid)?;
        if let Some(shim_pid) = self.shim_pid(id) {
            let _ = self.request_stop(id, Duration::ZERO);
            if !wait_gone(id, shim_pid, Duration::from_secs(10)) {
                tracing::warn!(id, shim_pid, "the shim did not exit; killing it");
                let _ = kill(Pid::from_raw(shim_pid), Signal::SIGKILL);
                wait_gone(id, shim_pid, Duration::from_secs(5));
            }
        }
        let cgroup = self.cgroup_of(id);
        let leftovers =
            self.layout.youki_dir(id).exists() || cgroup.as_deref().is_some_and(cgroup::exists);
        if leftovers {
            let out = self
                .shim_for("delete", id)
                .output()
                .map_err(io_err(format!(
                    "running {} shim delete",
                    self.shim_bin.display()
                )))?;
            if !out.status.success() {
                return Err(RuntimeError::DeleteFailed {
                    id: id.to_string(),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        let bundle = self.layout.bundle(id);
        match std::fs::remove_dir_all(&bundle) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", bundle.display()))(e)),
        }
    }

    /// The last `n` lines of the container's stdout and stderr.
    pub fn logs_tail(&self, id: &str, n: usize) -> Result<Vec<String>, RuntimeError> {
        validate_id(id).map_err(RuntimeError::Invalid)?;
        let path = self.layout.log_file(id);
        match tail_lines(&path, n) {
            // A log just rotated: the rest of the lines are in the older file.
            Ok(lines) if lines.len() < n => {
                let older = super::log::rotated(&path);
                let mut all = tail_lines(&older, n - lines.len()).unwrap_or_default();
                all.extend(lines);
                Ok(all)
            }
            Ok(lines) => Ok(lines),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.layout.bundle(id).is_dir() {
                    Ok(Vec::new())
                } else {
                    Err(RuntimeError::NotFound(id.to_string()))
                }
            }
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }

    /// Follows the container's log from its current end (after a [`RuntimeClient::logs_tail`]).
    pub fn follow_logs(&self, id: &str) -> Result<super::log::Follower, RuntimeError> {
        validate_id(id).map_err(RuntimeError::Invalid)?;
        if !self.layout.bundle(id).is_dir() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        Ok(super::log::Follower::from_end(&self.layout.log_file(id)))
    }

    /// Whether the container still exists on this node (its bundle is there).
    pub fn exists(&self, id: &str) -> bool {
        validate_id(id).is_ok() && self.layout.bundle(id).is_dir()
    }

    /// The cgroup path recorded in the container's spec.
    pub fn cgroup_of(&self, id: &str) -> Option<String> {
        let spec = oci_spec::runtime::Spec::load(self.layout.config_file(id)).ok()?;
        let linux = spec.linux().as_ref()?;
        linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// CPU time and memory of a running container, from its cgroup.
    pub fn usage(&self, id: &str) -> Result<Usage, RuntimeError> {
        validate_id(id).map_err(RuntimeError::Invalid)?;
        let path = self
            .cgroup_of(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        cgroup::usage(&path).map_err(io_err(format!("reading the usage of {id}")))
    }

    /// Caps all of this agent's containers together (its cgroup parent `/univrs/<agent>`) at
    /// `cpu_millis` and `memory_bytes`.
    pub fn limit_parent(&self, cpu_millis: u64, memory_bytes: u64) -> Result<(), RuntimeError> {
        cgroup::limit_agent_parent(&self.agent, cpu_millis, memory_bytes)
            .map_err(io_err("limiting the agent's cgroup parent"))
    }

    /// Removes this agent's empty cgroup parent (`/univrs/<agent>`), e.g. at shutdown once its
    /// containers are deleted; with `including_top`, `/univrs` too if no other agent uses it.
    pub fn remove_cgroup_parent(&self, including_top: bool) {
        cgroup::remove_agent_parent(&self.agent, including_top);
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_exit(path: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether `pid` is a live `… shim run … --id <id>` process (and not a recycled pid).
fn is_our_shim(pid: i32, id: &str) -> bool {
    if !process_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let has = |s: &str| args.contains(&s.as_bytes());
    has("shim")
        && has("run")
        && args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
}

/// Waits until the shim `pid` of `id` is gone; false on timeout.
fn wait_gone(id: &str, pid: i32, timeout: Duration) -> bool {
    let started = Instant::now();
    while is_our_shim(pid, id) {
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// The last `n` lines of a file (lossy UTF-8), reading backwards from its end.
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut file = std::fs::File::open(path)?;
    let len = file.seek(SeekFrom::End(0))?;
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    const CHUNK: u64 = 8192;
    loop {
        // n lines need n newlines before them (plus the file's final one).
        let newlines = buf.iter().filter(|b| **b == b'\n').count();
        if pos == 0 || newlines > n {
            break;
        }
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    // The first piece may be a partial line when the file was not read from its start.
    let skip_partial = pos > 0;
    let lines: Vec<&str> = if skip_partial && !lines.is_empty() {
        lines[1..].to_vec()
    } else {
        lines
    };
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..].iter().map(|s| s.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(tail_lines(&p, 2).unwrap(), vec!["line 4998", "line 4999"]);
        assert_eq!(tail_lines(&p, 5000).unwrap().len(), 5000);
        assert_eq!(tail_lines(&p, 9000).unwrap().len(), 5000);
        assert_eq!(tail_lines(&p, 0).unwrap().len(), 0);
        std::fs::write(&p, "a\nb").unwrap();
        assert_eq!(tail_lines(&p, 1).unwrap(), vec!["b"]);
        assert_eq!(tail_lines(&p, 5).unwrap(), vec!["a", "b"]);
        std::fs::write(&p, "").unwrap();
        assert!(tail_lines(&p, 5).unwrap().is_empty());
    }

    #[test]
    fn our_own_process_is_alive_and_not_a_shim() {
        let me = std::process::id() as i32;
        assert!(process_alive(me));
        assert!(!is_our_shim(me, "x"));
        assert!(!process_alive(i32::MAX));
    }
}

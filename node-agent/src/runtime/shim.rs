//! The shim: the single-threaded process that owns one container (`univrs shim run`).
//!
//! It is the only place `libcontainer` runs. It blocks the signals it handles (and reads them
//! from a signalfd), creates the container from the bundle with `libcontainer` (no systemd,
//! `libcontainer`'s state under `<root>/youki`), gives it a pipe as stdout and stderr, starts
//! it and writes its pid to `pid`. What comes through the pipe goes to `container.log`,
//! rotated within the cap the spec's [`LOG_CAP_ANNOTATION`] gives (see [`super::log`]). Then it waits: the container's init
//! is its child (`libcontainer` clones it with `CLONE_PARENT`), so it reaps it and writes the
//! exit record. SIGTERM or SIGINT is a stop request: the container gets SIGTERM and, if it has
//! not exited after the grace period (from the `stop` file, else `--grace`), SIGKILL for all
//! its processes. Finally it deletes the container (`libcontainer` delete with force: the
//! cgroup and `libcontainer`'s state are removed) and writes `exit.json` atomically, last.
//!
//! [`delete_container`] (`univrs shim delete`) force-deletes a container whose shim died.

use super::cgroup;
use super::executor::{FORWARDED, ShimExecutor, handled_signals};
use super::layout::{ExitRecord, Layout};
use super::log::{LOG_CAP_ANNOTATION, LogWriter};
use super::seccomp_filter::Filter;
use super::spec::wants_init;
use crate::fsutil::{error_chain, now_ms, write_atomic};
use crate::ids::validate_id;
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxSeccomp, Spec};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `univrs shim run` is given.
#[derive(Debug, Clone)]
pub struct ShimArgs {
    /// The runtime's state directory (see [`Layout`]).
    pub root: PathBuf,
    /// The container id; its bundle is `<root>/containers/<id>`.
    pub id: String,
    /// How long a stopped container gets between SIGTERM and SIGKILL, unless the stop
    /// request names its own grace period.
    pub grace: Duration,
    /// Hold the created container until the agent says go on the gate, fd [`GATE_FD`] (see
    /// [`wait_at_gate`]).
    pub gated: bool,
}

/// The descriptor a gated shim reads its go-ahead from (the agent's pipe, made fd 3).
pub const GATE_FD: i32 = 3;

/// How long a gated shim holds a created container for its go-ahead.
const GATE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the shim failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A file or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// `libcontainer` or the kernel refused.
    #[error("{0}")]
    Runtime(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
    let context = context.into();
    move |source| ShimError::Io { context, source }
}

fn rt_err<E: std::error::Error + 'static>(context: &str) -> impl FnOnce(E) -> ShimError + '_ {
    move |e| ShimError::Runtime(format!("{context}: {}", error_chain(&e)))
}

/// How the container's init ended.
#[derive(Debug, Clone, Copy)]
struct Ended {
    code: i32,
    signal: Option<i32>,
}

/// Runs one container to completion (see the module docs). Returns once the container has
/// exited, been deleted and its exit record written; an error means it could not be created
/// or started (the exit record then says why) or the shim itself failed.
pub fn run_shim(args: &ShimArgs) -> Result<(), ShimError> {
    // Before any file is opened: the gate is a descriptor number.
    let gate = args.gated.then(take_gate).transpose()?;
    validate_id(&args.id).map_err(ShimError::Runtime)?;
    let layout = Layout::new(&args.root);
    let id = args.id.as_str();

    // Block the handled signals before libcontainer clones: a stop request that arrives
    // while the container is being created waits in the signalfd. The container inherits the
    // mask; its executor resets it.
    let signals = handled_signals();
    signals
        .thread_block()
        .map_err(|e| ShimError::Runtime(format!("blocking signals: {e}")))?;
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| ShimError::Runtime(format!("signalfd: {e}")))?;
    write_atomic(
        &layout.shim_pid_file(id),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(io_err("writing shim.pid"))?;

    let spec = Spec::load(layout.config_file(id)).map_err(rt_err("loading config.json"))?;
    let cgroup_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());

    let mut log = LogWriter::open(&layout.log_file(id), log_cap(&spec))
        .map_err(io_err("opening the container's log"))?;
    let (mut container, output) = match create_and_start(&layout, id, &spec, gate) {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            tracing::error!(id, "{message}");
            let cleanup_error = delete_container(&layout, id).err().map(|e| e.to_string());
            write_exit(
                &layout,
                id,
                &ExitRecord {
                    code: 128,
                    signal: None,
                    oom_killed: false,
                    killed_after_grace: false,
                    error: Some(message),
                    cleanup_error,
                    finished_at_ms: now_ms(),
                },
            )?;
            return Err(e);
        }
    };
    let pid = container
        .pid()
        .ok_or_else(|| ShimError::Runtime("the started container has no pid".into()))?;
    write_atomic(&layout.pid_file(id), pid.to_string().as_bytes())
        .map_err(io_err("writing the pid file"))?;

    let mut output = Output {
        pipe: Some(output),
        log: &mut log,
    };
    let (ended, killed_after_grace) = supervise(
        &mut container,
        Pid::from_raw(pid.as_raw()),
        &sfd,
        &mut output,
        &layout,
        id,
        args.grace,
    )?;
    // What the container wrote last is still in the pipe.
    output.drain();

    let oom_killed = cgroup_path
        .as_deref()
        .and_then(cgroup::oom_kills)
        .is_some_and(|n| n > 0);
    let cleanup_error = container.delete(true).err().map(|e| {
        let msg = format!("deleting the container: {}", error_chain(&e));
        tracing::error!(id, "{msg}");
        msg
    });
    write_exit(
        &layout,
        id,
        &ExitRecord {
            code: ended.code,
            signal: ended.signal,
            oom_killed,
            killed_after_grace,
            error: None,
            cleanup_error,
            finished_at_ms: now_ms(),
        },
    )
}

fn write_exit(layout: &Layout, id: &str, record: &ExitRecord) -> Result<(), ShimError> {
    let json = serde_json::to_vec(record)
        .map_err(|e| ShimError::Runtime(format!("encoding the exit record: {e}")))?;
    write_atomic(&layout.exit_file(id), &json).map_err(io_err("writing exit.json"))
}

/// The log cap a spec asks for (bytes; 0: none).
fn log_cap(spec: &Spec) -> u64 {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(LOG_CAP_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The container's output: the pipe's read end (until every writer is gone) and the log.
struct Output<'a> {
    pipe: Option<OwnedFd>,
    log: &'a mut LogWriter,
}

impl Output<'_> {
    /// Moves what the pipe holds now to the log; at end of file the pipe is closed.
    fn drain(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        while let Some(pipe) = &self.pipe {
            match nix::unistd::read(pipe.as_fd(), &mut buf) {
                Ok(0) => self.pipe = None,
                Ok(n) => {
                    if let Err(e) = self.log.write(&buf[..n]) {
                        tracing::error!("writing the container's log: {e}");
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// Takes the gate, fd [`GATE_FD`], that the agent opened for this process, close-on-exec so
/// the container's process never inherits it.
#[allow(unsafe_code)]
fn take_gate() -> Result<OwnedFd, ShimError> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl on a raw descriptor number only reads its flags; a closed one fails.
    let flags = unsafe { nix::libc::fcntl(GATE_FD, nix::libc::F_GETFD) };
    if flags < 0 {
        return Err(ShimError::Runtime(format!(
            "--gated, but the gate (fd {GATE_FD}) is not open: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: the descriptor is open (above) and nothing else in this process owns it: the
    // agent placed it before exec, and the shim takes it once, before opening any file.
    let gate = unsafe { OwnedFd::from_raw_fd(GATE_FD) };
    nix::fcntl::fcntl(
        &gate,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| ShimError::Runtime(format!("setting up the gate: {e}")))?;
    Ok(gate)
}

/// Waits at the gate for the agent's go-ahead: the byte `1` lets the container's process run.
/// Anything else, the agent closing its end (it gave up on the start, or died), or
/// [`GATE_TIMEOUT`] abandons the start, and the container is deleted before it ran a thing.
/// This is what lets the agent create a container while its network is still being set up,
/// and still never run a process without its network.
fn wait_at_gate(gate: OwnedFd) -> Result<(), ShimError> {
    let abandoned = |why: String| {
        ShimError::Runtime(format!(
            "the agent abandoned the start before the container ran: {why}"
        ))
    };
    let deadline = Instant::now() + GATE_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(abandoned(format!("no go-ahead within {GATE_TIMEOUT:?}")));
        }
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(gate.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(abandoned(format!("waiting at the gate: {e}"))),
        }
    }
    let mut byte = [0u8; 1];
    match nix::unistd::read(gate.as_fd(), &mut byte) {
        Ok(1) if byte[0] == b'1' => Ok(()),
        Ok(1) => Err(abandoned(format!("it said {:?}", byte[0] as char))),
        Ok(_) => Err(abandoned("it closed the gate".into())),
        Err(e) => Err(abandoned(format!("reading the gate: {e}"))),
    }
}

/// Creates the container with `libcontainer` and starts it (after the go-ahead at `gate`,
/// when there is one); returns it with the read end of its output pipe (non-blocking).
fn create_and_start(
    layout: &Layout,
    id: &str,
    spec: &Spec,
    gate: Option<OwnedFd>,
) -> Result<(Container, OwnedFd), ShimError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(layout.youki_root())
        .map_err(io_err(format!(
            "creating {}",
            layout.youki_root().display()
        )))?;
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| ShimError::Runtime(format!("making the output pipe: {e}")))?;
    // The container's side blocks like any stdout would.
    nix::fcntl::fcntl(&write_end, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| ShimError::Runtime(format!("setting up the output pipe: {e}")))?;
    let write_err = write_end
        .try_clone()
        .map_err(io_err("duplicating the output pipe"))?;

    let mut container = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(layout.youki_root())
        .map_err(rt_err("libcontainer root"))?
        .with_executor(ShimExecutor {
            init: wants_init(spec),
            seccomp: seccomp_filter(layout, id)?,
        })
        .with_stdout(write_end)
        .with_stderr(write_err)
        .validate_id()
        .map_err(rt_err("container id"))?
        .as_init(layout.bundle(id))
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(rt_err("creating the container"))?;
    if let Some(gate) = gate {
        wait_at_gate(gate)?;
    }
    container
        .start()
        .map_err(rt_err("starting the container"))?;
    Ok((container, read_end))
}

/// The compiled seccomp program of container `id`, if its bundle has a profile.
pub(crate) fn seccomp_filter(layout: &Layout, id: &str) -> Result<Option<Filter>, ShimError> {
    let file = layout.seccomp_file(id);
    let json = match std::fs::read(&file) {
        Ok(json) => json,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("reading {}", file.display()))(e)),
    };
    let profile: LinuxSeccomp = serde_json::from_slice(&json)
        .map_err(|e| ShimError::Runtime(format!("reading {}: {e}", file.display())))?;
    Filter::cached(&layout.seccomp_cache(), &profile)
        .map(Some)
        .map_err(|e| ShimError::Runtime(e.to_string()))
}

/// Sends `signal` through `libcontainer` (to the init, or to every process with `all`).
fn lc_kill(container: &mut Container, signal: Signal, all: bool) {
    match libcontainer::signal::Signal::try_from(signal as i32) {
        Ok(s) => {
            if let Err(e) = container.kill(s, all) {
                tracing::warn!(id = container.id(), ?signal, "kill: {}", error_chain(&e));
            }
        }
        Err(e) => tracing::warn!(?signal, "unknown signal: {}", error_chain(&e)),
    }
}

/// Reaps children; returns how the init ended once it has.
fn reap(init: Pid) -> Option<Ended> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => {
                return Some(Ended { code, signal: None });
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                return Some(Ended {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                });
            }
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // ECHILD: the init is not (or no longer) our child; nothing to wait for.
                tracing::error!(%init, "waitpid: {e}");
                return Some(Ended {
                    code: 255,
                    signal: None,
                });
            }
        }
    }
}

/// The grace period of a pending stop request, if the `stop` file names one.
fn requested_grace(layout: &Layout, id: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(layout.stop_file(id)).ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_millis)
}

/// Waits for the container's init to exit, handling stop requests; returns how it ended and
/// whether it had to be killed after the grace period.
fn supervise(
    container: &mut Container,
    init: Pid,
    sfd: &SignalFd,
    output: &mut Output<'_>,
    layout: &Layout,
    id: &str,
    default_grace: Duration,
) -> Result<(Ended, bool), ShimError> {
    let mut deadline: Option<Instant> = None;
    let mut killed = false;
    loop {
        if let Some(ended) = reap(init) {
            return Ok((ended, killed));
        }
        if let Some(d) = deadline
            && Instant::now() >= d
        {
            tracing::info!(id, "grace period over; sending SIGKILL");
            lc_kill(container, Signal::SIGKILL, true);
            killed = true;
            deadline = None;
        }
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so the deadline has passed when poll returns.
                PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = &output.pipe {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(ShimError::Runtime(format!("poll: {e}"))),
        }
        let output_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        if output_ready {
            output.drain();
        }
        loop {
            let info = match sfd.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) | Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ShimError::Runtime(format!("reading signals: {e}"))),
            };
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match signal {
                Signal::SIGCHLD | Signal::SIGHUP => {}
                Signal::SIGTERM | Signal::SIGINT => {
                    if killed {
                        continue;
                    }
                    let grace = requested_grace(layout, id).unwrap_or(default_grace);
                    let requested = Instant::now() + grace;
                    if deadline.is_none() {
                        tracing::info!(id, ?grace, "stop requested; sending SIGTERM");
                        lc_kill(container, Signal::SIGTERM, false);
                    }
                    deadline = Some(deadline.map_or(requested, |d| d.min(requested)));
                }
                other if FORWARDED.contains(&other) => {
                    let _ = nix::sys::signal::kill(init, other);
                }
                _ => {}
            }
        }
    }
}

/// Force-deletes container `id` under `root`: kills its processes and removes its cgroup and
/// `libcontainer`'s state. For a container whose shim died; idempotent. The bundle is left to
/// the caller.
pub fn delete_container(layout: &Layout, id: &str) -> Result<(), ShimError> {
    validate_id(id).map_err(ShimError::Runtime)?;
    let mut errors = Vec::new();
    let dir = layout.youki_dir(id);
    if dir.exists() {
        match Container::load(dir.clone()) {
            Ok(mut c) => {
                if let Err(e) = c.delete(true) {
                    errors.push(format!("libcontainer delete: {}", error_chain(&e)));
                }
            }
            Err(e) => tracing::warn!(id, "loading the container state: {}", error_chain(&e)),
        }
    }
    // Whatever libcontainer could not remove (or never recorded): the cgroup named in the
    // bundle's spec, and the state directory.
    if let Ok(spec) = Spec::load(layout.config_file(id))
        && let Some(path) = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
    {
        let path = path.to_string_lossy();
        if cgroup::exists(&path)
            && let Err(e) = cgroup::kill_and_remove(&path)
        {
            errors.push(format!("removing cgroup {path}: {e}"));
        }
    }
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        errors.push(format!("removing {}: {e}", dir.display()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ShimError::Runtime(errors.join("; ")))
    }
}

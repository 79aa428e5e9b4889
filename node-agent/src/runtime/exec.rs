//! `univrs shim exec`: one command run inside a running container, as the container runs:
//! its namespaces, cgroup, user, capabilities, no-new-privileges and seccomp profile (exec
//! probes use it; nothing of the agent's own privileges reaches the command).
//!
//! It is `libcontainer`'s tenant exec, so it runs in a fresh single-threaded process, never in
//! the agent. The container's seccomp profile is installed by the [`ExecExecutor`] itself,
//! as the container's own executor does (see [`super::seccomp_filter`]): last, just before the
//! command is executed (no-new-privileges is set by then, so no privilege is needed for it).
//!
//! The command gets a deadline: past it, it is killed (SIGKILL) and the exit code is 137. What
//! it forked stays in the container's cgroup, under the container's limits.

use super::executor::install;
use super::layout::Layout;
use super::seccomp_filter::Filter;
use super::shim::{ShimError, seccomp_filter};
use crate::fsutil::error_chain;
use crate::ids::validate_id;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// The exit code of a command killed at its deadline (128 + SIGKILL, as a shell reports it).
pub const TIMED_OUT: i32 = 137;

/// The executor of a tenant process: the container's seccomp program, then the command.
#[derive(Clone)]
struct ExecExecutor {
    seccomp: Option<Filter>,
}

impl Executor for ExecExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_ref())
            .filter(|a| !a.is_empty())
            .ok_or(ExecutorError::InvalidArg)?;
        SigSet::empty()
            .thread_set_mask()
            .map_err(|e| ExecutorError::Other(format!("unblocking signals: {e}")))?;
        install(self.seccomp.as_ref())?;
        let err = Command::new(&args[0]).args(&args[1..]).exec();
        Err(ExecutorError::Execution(
            format!("executing {:?}: {err}", args[0]).into(),
        ))
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// Runs `args` in container `id` under `root` and waits up to `timeout`; returns the
/// command's exit code (128 + n when signal n ended it, [`TIMED_OUT`] at the deadline).
pub fn exec_in_container(
    root: &std::path::Path,
    id: &str,
    args: Vec<String>,
    timeout: Duration,
) -> Result<i32, ShimError> {
    validate_id(id).map_err(ShimError::Runtime)?;
    if args.is_empty() || args[0].is_empty() {
        return Err(ShimError::Runtime("exec needs a command".into()));
    }
    let layout = Layout::new(root);
    let spec = Spec::load(layout.config_file(id))
        .map_err(|e| ShimError::Runtime(format!("loading config.json: {e}")))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ShimError::Runtime("config.json has no process".into()))?;
    let user = process.user();
    // The bundle's profile; a container created before profiles moved out of config.json
    // still has it there.
    let seccomp = match seccomp_filter(&layout, id)? {
        Some(f) => Some(f),
        None => match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(profile) => Some(
                Filter::cached(&layout.seccomp_cache(), profile)
                    .map_err(|e| ShimError::Runtime(e.to_string()))?,
            ),
            None => None,
        },
    };
    enter_user_namespace(&layout, id)?;

    let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(layout.youki_root())
        .map_err(rt("libcontainer root"))?
        .with_executor(ExecExecutor { seccomp })
        .validate_id()
        .map_err(rt("container id"))?
        .as_tenant()
        .with_container_args(args)
        .with_cwd(Some(process.cwd().clone()))
        .with_user(Some(user.uid()))
        .with_group(Some(user.gid()))
        .with_additional_gids(user.additional_gids().clone().unwrap_or_default())
        .with_no_new_privs(true)
        .with_detach(false)
        .build()
        .map_err(rt("starting the command in the container"))?;
    Ok(wait_until(
        Pid::from_raw(pid.as_raw()),
        Instant::now() + timeout,
    ))
}

/// Enters the container's user namespace, if it has one of its own: `libcontainer` 0.7's
/// tenant exec joins every namespace of the container but that one, which would leave the
/// command root on the host. This process is single-threaded, so it may; from inside,
/// `libcontainer` joins the container's other namespaces (the user namespace owns them) and
/// cgroup (its files belong to this process's uid).
fn enter_user_namespace(layout: &Layout, id: &str) -> Result<(), ShimError> {
    use std::os::unix::fs::MetadataExt;
    let pid = std::fs::read_to_string(layout.pid_file(id))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .ok_or_else(|| ShimError::Runtime(format!("container {id} is not running")))?;
    let theirs = format!("/proc/{pid}/ns/user");
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ShimError::Io {
            context: what,
            source,
        }
    };
    let same = std::fs::metadata(&theirs)
        .map_err(io("reading the container's user namespace"))?
        .ino()
        == std::fs::metadata("/proc/self/ns/user")
            .map_err(io("reading this user namespace"))?
            .ino();
    if same {
        return Ok(());
    }
    let ns = std::fs::File::open(&theirs).map_err(io("opening the container's user namespace"))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| ShimError::Runtime(format!("entering the container's user namespace: {e}")))
}

fn rt<E: std::error::Error + 'static>(context: &str) -> impl FnOnce(E) -> ShimError + '_ {
    move |e| ShimError::Runtime(format!("{context}: {}", error_chain(&e)))
}

/// Waits for `pid` (a child, or a process `libcontainer` made this process the subreaper
/// of); kills it at `deadline`.
fn wait_until(pid: Pid, deadline: Instant) -> i32 {
    let mut killed = false;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return if killed { TIMED_OUT } else { code },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return if killed { TIMED_OUT } else { 128 + sig as i32 };
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            // Not our child after all: its status cannot be read, only its end seen.
            Err(nix::errno::Errno::ECHILD) => {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return if killed { TIMED_OUT } else { 255 };
                }
            }
            Err(_) => return 255,
        }
        if !killed && Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

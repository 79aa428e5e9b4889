//! What runs in the container's init process once `libcontainer` has set it up (namespaces,
//! cgroups, rootfs, capabilities, environment and working directory are in place): it
//! installs the container's seccomp program (see [`super::seccomp_filter`]), then runs the
//! command.
//!
//! The shim blocks the signals it handles before `libcontainer` clones, so the container's
//! init starts with them blocked, and with SIGPIPE ignored (the Rust runtime's doing). The
//! workload must start in the standard state (nothing blocked, default dispositions):
//!
//! - without the init, the init process unblocks every signal and execs the command through
//!   `std::process::Command`, which resets SIGPIPE (it becomes PID 1);
//! - with the init (`univrs.io/init: "true"`), the init process stays PID 1: it spawns the
//!   command with `posix_spawnp` (empty mask, default dispositions), forwards the stop and
//!   user signals to it, reaps every orphan, and exits with the command's status (`128 + n`
//!   if signal `n` killed it), like tini or `docker --init`. A PID 1 that installs no handler
//!   ignores SIGTERM; the command, as PID 2, does not.

use super::seccomp_filter::Filter;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Signals the shim (and the init) handle; they are forwarded to the workload.
pub(crate) const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// [`FORWARDED`] plus SIGCHLD: the set kept blocked and read from a signalfd.
pub(crate) fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// The executor the shim hands to `libcontainer`.
#[derive(Clone)]
pub(crate) struct ShimExecutor {
    /// Run the minimal init as PID 1.
    pub init: bool,
    /// The container's seccomp program, installed last, before the command or the init runs.
    pub seccomp: Option<Filter>,
}

/// Installs `filter` on the calling process, if there is one (no-new-privileges is set by
/// now: `libcontainer` sets it first when the spec asks, and every spec of ours does).
pub(crate) fn install(filter: Option<&Filter>) -> Result<(), ExecutorError> {
    match filter {
        Some(f) => f.install().map_err(|e| ExecutorError::Other(e.to_string())),
        None => Ok(()),
    }
}

fn args(spec: &Spec) -> Result<&[String], ExecutorError> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .filter(|a| !a.is_empty())
        .map(|a| a.as_slice())
        .ok_or(ExecutorError::InvalidArg)
}

impl Executor for ShimExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = args(spec)?;
        install(self.seccomp.as_ref())?;
        if self.init {
            run_init(args)
        }
        SigSet::empty()
            .thread_set_mask()
            .map_err(|e| ExecutorError::Other(format!("unblocking signals: {e}")))?;
        let err = Command::new(&args[0]).args(&args[1..]).exec();
        Err(ExecutorError::Execution(
            format!("executing {:?}: {err}", args[0]).into(),
        ))
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Spawns the command (looked up in `PATH`) with nothing blocked and every signal at its
/// default disposition, in the init's environment.
fn spawn(args: &[String]) -> nix::Result<Pid> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| nix::errno::Errno::EINVAL);
    let argv = args
        .iter()
        .map(|a| cstr(a.as_bytes()))
        .collect::<nix::Result<Vec<_>>>()?;
    let envp = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect::<nix::Result<Vec<_>>>()?;
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_sigdefault(&SigSet::all())?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    posix_spawnp(
        &argv[0],
        &PosixSpawnFileActions::init()?,
        &attr,
        &argv,
        &envp,
    )
}

/// The minimal init: never returns.
fn run_init(args: &[String]) -> ! {
    // Dumpable again, as an exec'd PID 1 would be: `univrs shim exec` reads this process's
    // namespaces from inside the container's user namespace, which the kernel allows only for
    // a dumpable process (becoming the user namespace's root made it non-dumpable).
    if let Err(e) = nix::sys::prctl::set_dumpable(true) {
        eprintln!("univrs-init: setting dumpable: {e}");
    }
    let signals = handled_signals();
    // Already blocked (inherited from the shim); make sure before anything can arrive.
    if let Err(e) = signals.thread_block() {
        eprintln!("univrs-init: blocking signals: {e}");
        std::process::exit(126);
    }
    let sfd = match SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("univrs-init: signalfd: {e}");
            std::process::exit(126);
        }
    };
    let child_pid = match spawn(args) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("univrs-init: cannot run {:?}: {e}", args[0]);
            std::process::exit(if e == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            });
        }
    };

    loop {
        let signo = match sfd.read_signal() {
            Ok(Some(info)) => info.ssi_signo as i32,
            Ok(None) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("univrs-init: reading signals: {e}");
                let _ = kill(child_pid, Signal::SIGKILL);
                std::process::exit(255);
            }
        };
        if signo == Signal::SIGCHLD as i32 {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child_pid => {
                        std::process::exit(code)
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child_pid => {
                        std::process::exit(128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        } else if let Ok(sig) = Signal::try_from(signo) {
            let _ = kill(child_pid, sig);
        }
    }
}

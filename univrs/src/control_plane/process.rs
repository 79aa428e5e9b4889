//! Child processes of a supervisor: own process group, killed with their parent, logs to a file.
#![allow(unsafe_code)]

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A supervised child process.
pub struct Supervised {
    /// A short name for messages (`etcd`, `kube-apiserver`, …).
    pub name: &'static str,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The process.
    pub child: Child,
}

/// Spawns `program args` with output appended to `log`, in its own process group (so a
/// terminal's Ctrl-C reaches only the supervisor, which then stops children in order), and with
/// SIGKILL as its parent-death signal (so a supervisor killed with -9 leaves nothing behind).
pub fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
) -> Result<Supervised> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Supervised {
        name,
        log: log.to_path_buf(),
        child,
    })
}

impl Supervised {
    /// Asks the process to stop with SIGTERM, then SIGKILLs it after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
            eprintln!("{} did not stop within {grace:?}; killing it", self.name);
        }
        let _ = self.child.kill().await;
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> Vec<String> {
        tail(&self.log, n)
    }
}

/// The last `n` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut last = VecDeque::with_capacity(n + 1);
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(line);
    }
    last.into()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a process started next).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

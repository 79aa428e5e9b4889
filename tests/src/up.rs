//! `univrs up` as a real process for end-to-end tests.

use crate::{Guarded, univrs_bin};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A running `univrs up`.
pub struct Up {
    /// The `univrs up` process.
    pub proc: Guarded,
    /// The admin kubeconfig it printed.
    pub kubeconfig: PathBuf,
    /// Its stderr (progress and supervision messages).
    pub log: PathBuf,
}

impl Up {
    /// Starts `univrs up --agents <agents>` with a 3 s Lease, a 4 s grace period and a 2 s
    /// usage interval, and waits for its ready line.
    pub fn start(dir: &Path, port: u16, agents: u32) -> Self {
        // Outside the data directory, so the test can show it after `up` removed nothing.
        let log = dir.with_extension("log");
        let mut cmd = Command::new(univrs_bin());
        cmd.arg("up")
            .arg("--data-dir")
            .arg(dir)
            .args(["--port", &port.to_string(), "--agents", &agents.to_string()])
            .args(["--lease-duration", "3s", "--node-grace-period", "4s"])
            .args(["--usage-interval", "2s"]);
        Self::spawn(cmd, log)
    }

    /// Runs `cmd` (a `univrs up` command line, perhaps wrapped, as in another network
    /// namespace), logging its stderr to `log`, and waits for its ready line.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Self {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        cmd.stdout(Stdio::piped()).stderr(err);
        let mut proc = Guarded::spawn(cmd).unwrap();
        let stdout = proc.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("ready kubeconfig=") {
                    let _ = tx.send(PathBuf::from(k));
                }
            }
        });
        let kubeconfig = rx
            .recv_timeout(Duration::from_secs(900))
            .unwrap_or_else(|_| {
                panic!(
                    "univrs up did not become ready; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Self {
            proc,
            kubeconfig,
            log,
        }
    }

    /// A client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        crate::client_from(&self.kubeconfig).await.unwrap()
    }

    /// Ctrl-C, then waits for a clean exit.
    pub fn interrupt(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.success(), "univrs up exited with {status}:\n{log}");
                assert!(log.contains("stopped control-plane"), "{log}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "univrs up did not stop after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    /// A test that failed half-way still stops `univrs up` with Ctrl-C, so it removes its
    /// agents' containers, mounts and networks instead of leaving them to the next run (whose
    /// agents reuse the same bridge names and subnets).
    fn drop(&mut self) {
        if !matches!(self.proc.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && matches!(self.proc.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Processes whose command line mentions `dir`.
pub fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

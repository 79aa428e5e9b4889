//! The processes `univrs up` runs: each is the `univrs` binary with a subcommand, logging to
//! its own file; critical ones (the control plane) end the run when they die, the others are
//! restarted with backoff.

use crate::control_plane::process::{self, Supervised};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Child {
    kind: &'static str,
    label: String,
    args: Vec<String>,
    /// Environment variables (for what must not show in the process list, like a token).
    envs: Vec<(String, String)>,
    critical: bool,
}

impl Child {
    /// A process whose death ends the run.
    pub fn critical(kind: &'static str, args: Vec<String>) -> Self {
        Self {
            kind,
            label: kind.to_string(),
            args,
            envs: Vec::new(),
            critical: true,
        }
    }

    /// A process restarted with backoff when it dies.
    pub fn restartable(kind: &'static str, args: Vec<String>) -> Self {
        Self {
            critical: false,
            ..Self::critical(kind, args)
        }
    }

    /// Names it in messages and its log file (`agent node-1`).
    pub fn named(mut self, label: &str) -> Self {
        self.label = format!("{} {label}", self.kind);
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    fn log_name(&self) -> String {
        format!("{}.log", self.label.replace(' ', "-"))
    }
}

struct Running {
    spec: Child,
    proc: Option<Supervised>,
    started: Instant,
    crashes: u32,
    restart_at: Option<Instant>,
}

/// Every process of the run.
pub struct Children {
    exe: PathBuf,
    logs: PathBuf,
    running: Vec<Running>,
}

/// A run this long resets the restart backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

impl Children {
    /// Processes of `exe`, logging under `logs`.
    pub fn new(exe: PathBuf, logs: PathBuf) -> Self {
        Self {
            exe,
            logs,
            running: Vec::new(),
        }
    }

    fn start(&self, spec: &Child) -> Result<Supervised> {
        process::spawn(
            spec.kind,
            &self.exe,
            &spec.args,
            &spec.envs,
            &self.logs.join(spec.log_name()),
        )
    }

    /// Starts `spec`.
    pub fn spawn(&mut self, spec: Child) -> Result<()> {
        let proc = self.start(&spec)?;
        self.running.push(Running {
            spec,
            proc: Some(proc),
            started: Instant::now(),
            crashes: 0,
            restart_at: None,
        });
        Ok(())
    }

    /// Fails with its log tail if a critical process died.
    pub fn check_critical(&mut self) -> Result<()> {
        for r in &mut self.running {
            if !r.spec.critical {
                continue;
            }
            if let Some(p) = r.proc.as_mut()
                && let Some(status) = p.child.try_wait()?
            {
                bail!(
                    "{} exited ({status}); its last log lines:\n{}",
                    r.spec.label,
                    p.tail(30).join("\n")
                );
            }
        }
        Ok(())
    }

    /// Restarts what died (with backoff), until SIGINT/SIGTERM (Ok) or a critical process dies.
    pub async fn supervise(&mut self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                _ = tick.tick() => {
                    self.check_critical()?;
                    self.restart_dead()?;
                }
            }
        }
    }

    fn restart_dead(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut to_start = Vec::new();
        for (i, r) in self.running.iter_mut().enumerate() {
            if r.spec.critical {
                continue;
            }
            if let Some(p) = r.proc.as_mut()
                && let Some(status) = p.child.try_wait()?
            {
                if r.started.elapsed() >= STABLE_AFTER {
                    r.crashes = 0;
                }
                let delay = Duration::from_secs(1 << r.crashes.min(5)).min(Duration::from_secs(30));
                r.crashes += 1;
                eprintln!(
                    "{} exited ({status}); restarting it in {}s. Its last log lines:\n{}",
                    r.spec.label,
                    delay.as_secs(),
                    p.tail(10).join("\n")
                );
                r.proc = None;
                r.restart_at = Some(now + delay);
            }
            if r.proc.is_none() && r.restart_at.is_some_and(|t| now >= t) {
                to_start.push(i);
            }
        }
        for i in to_start {
            let proc = self.start(&self.running[i].spec)?;
            let r = &mut self.running[i];
            r.proc = Some(proc);
            r.started = Instant::now();
            r.restart_at = None;
            eprintln!("restarted {}", r.spec.label);
        }
        Ok(())
    }

    /// Stops the restartable processes (agents, controller), newest first.
    pub async fn stop_restartable(&mut self) {
        for r in self.running.iter_mut().rev().filter(|r| !r.spec.critical) {
            if let Some(mut p) = r.proc.take() {
                p.stop(Duration::from_secs(15)).await;
                eprintln!("  stopped {}", r.spec.label);
            }
        }
    }

    /// Stops everything still running, newest first.
    pub async fn stop_all(&mut self) {
        while let Some(mut r) = self.running.pop() {
            if let Some(mut p) = r.proc.take() {
                p.stop(Duration::from_secs(30)).await;
                eprintln!("  stopped {}", r.spec.label);
            }
        }
    }
}

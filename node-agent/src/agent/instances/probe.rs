//! Liveness and readiness probes, each run from inside its container with Kubernetes'
//! thresholds: an exec probe is `univrs shim exec` (the container's namespaces, cgroup, user,
//! capabilities and seccomp; see [`crate::runtime::exec`]); HTTP GET and TCP connect probes
//! connect from the container's own network namespace, so nothing of the host's network
//! stands between them and what they probe.

use crate::runtime::RuntimeClient;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use univrs_api::resources::workload::{Probe, Scheme};

/// The most of an exec probe's error output kept for its message (kubelet keeps 10 KiB).
const OUTPUT_CAP: u64 = 4096;

/// Where a probe reaches its container.
#[derive(Debug, Clone)]
pub struct Target {
    /// The runtime and the container's id (exec probes).
    pub exec: Option<(RuntimeClient, String)>,
    /// The container's network namespace (HTTP and TCP probes connect from inside it);
    /// `None`: the caller's own.
    pub netns: Option<PathBuf>,
    /// The container's address (HTTP and TCP probes), when it has one.
    pub ip: Option<IpAddr>,
}

/// Runs `probe` once against `target`; `Err` says why it failed.
pub async fn run_once(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1) as u64);
    if let Some(exec) = &probe.exec {
        return exec_probe(&exec.command, target, timeout).await;
    }
    let (addr, http_path) = if let Some(http) = &probe.http_get {
        // Kubernetes does not verify an HTTPS probe's certificate either; the TCP handshake
        // with the port is what is checked without a TLS stack here.
        let path = (http.scheme != Scheme::HTTPS).then(|| http.path.clone());
        (addr(target, http.port)?, path)
    } else if let Some(tcp) = &probe.tcp_socket {
        (addr(target, tcp.port)?, None)
    } else {
        return Err("the probe sets none of exec, httpGet or tcpSocket".into());
    };
    let netns = target.netns.clone();
    in_netns(netns, move || match http_path {
        Some(path) => http_probe(addr, &path, timeout),
        None => tcp_probe(addr, timeout).map(drop),
    })
    .await
}

fn addr(target: &Target, port: i32) -> Result<SocketAddr, String> {
    let ip = target
        .ip
        .ok_or("the container has no network address to probe")?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Runs the command inside the container (`univrs shim exec`, a fresh process: the agent
/// never forks, and the command gets none of its privileges).
async fn exec_probe(command: &[String], target: &Target, timeout: Duration) -> Result<(), String> {
    if command.is_empty() {
        return Err("exec probe has an empty command".into());
    }
    let Some((runtime, id)) = &target.exec else {
        return Err("the container is not running".into());
    };
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut cmd = tokio::process::Command::from(runtime.exec_command(id, &args, timeout));
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running the exec probe: {e}"))?;
    // Read a bounded amount, then let the rest go (a probe that floods its output cannot
    // fill the agent's memory).
    let mut stderr = Vec::new();
    if let Some(pipe) = child.stderr.take() {
        let _ = pipe.take(OUTPUT_CAP).read_to_end(&mut stderr).await;
    }
    let status = tokio::time::timeout(timeout + Duration::from_secs(5), child.wait())
        .await
        .map_err(|_| format!("timed out after {}s", timeout.as_secs()))?
        .map_err(|e| format!("waiting for the exec probe: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(crate::runtime::exec::TIMED_OUT) => {
            Err(format!("timed out after {}s", timeout.as_secs()))
        }
        _ => Err(format!(
            "{:?} exited with {}: {}",
            command,
            status,
            String::from_utf8_lossy(&stderr).trim()
        )),
    }
}

/// Runs `f` on a thread of its own that has entered the network namespace `netns` (only
/// that thread moves; it ends with `f`).
async fn in_netns<T: Send + 'static>(
    netns: Option<PathBuf>,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("probe".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let entered = match &netns {
                Some(path) => std::fs::File::open(path)
                    .map_err(|e| format!("opening {}: {e}", path.display()))
                    .and_then(|ns| {
                        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("entering {}: {e}", path.display()))
                    }),
                None => Ok(()),
            };
            let _ = tx.send(entered.and_then(|()| f()));
        })
        .map_err(|e| format!("starting the probe thread: {e}"))?;
    rx.await
        .map_err(|_| "the probe thread ended without a result".to_string())?
}

fn tcp_probe(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    Ok(s)
}

/// A minimal HTTP/1.0 GET: success is a 2xx or 3xx status line.
fn http_probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let mut s = tcp_probe(addr, timeout)?;
    let path = if path.is_empty() { "/" } else { path };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: univrs-probe/1\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET http://{addr}{path}: no HTTP status line"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET http://{addr}{path} returned {code}"))
    }
}

/// A probe's running tally: when it is due, and whether its thresholds say success.
#[derive(Debug, Clone)]
pub struct ProbeState {
    next: Instant,
    successes: i32,
    failures: i32,
    /// The verdict so far: None until a threshold has been reached.
    pub healthy: Option<bool>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl ProbeState {
    /// A probe for a container that started at `started`.
    pub fn new(probe: &Probe, started: Instant) -> Self {
        Self {
            next: started + Duration::from_secs(probe.initial_delay_seconds.max(0) as u64),
            successes: 0,
            failures: 0,
            healthy: None,
            last_error: None,
        }
    }

    /// Whether the probe should run now.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Records one attempt made at `now`.
    pub fn record(&mut self, probe: &Probe, now: Instant, result: Result<(), String>) {
        self.next = now + Duration::from_secs(probe.period_seconds.max(1) as u64);
        match result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                self.last_error = None;
                if self.successes >= probe.success_threshold.max(1) {
                    self.healthy = Some(true);
                }
            }
            Err(e) => {
                self.successes = 0;
                self.failures += 1;
                self.last_error = Some(e);
                if self.failures >= probe.failure_threshold.max(1) {
                    self.healthy = Some(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use univrs_api::resources::workload::TcpSocketAction;

    fn tcp(port: i32) -> Probe {
        Probe {
            tcp_socket: Some(TcpSocketAction { port }),
            period_seconds: 1,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 2,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Nope"
                };
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let target = Target {
            exec: None,
            netns: None,
            ip: Some("127.0.0.1".parse().unwrap()),
        };
        run_once(&tcp(port as i32), &target).await.unwrap();
        let mut http = Probe {
            http_get: Some(univrs_api::resources::workload::HttpGetAction {
                path: "/ok".into(),
                port: port as i32,
                scheme: Scheme::HTTP,
            }),
            timeout_seconds: 1,
            ..Default::default()
        };
        run_once(&http, &target).await.unwrap();
        http.http_get.as_mut().unwrap().path = "/bad".into();
        let err = run_once(&http, &target).await.unwrap_err();
        assert!(err.contains("returned 503"), "{err}");
        // Nothing listens on port 1.
        assert!(run_once(&tcp(1), &target).await.is_err());
        let no_ip = Target {
            ip: None,
            ..target.clone()
        };
        assert!(
            run_once(&tcp(port as i32), &no_ip)
                .await
                .unwrap_err()
                .contains("no network address")
        );
    }

    #[test]
    fn thresholds() {
        let p = tcp(1);
        let t0 = Instant::now();
        let mut s = ProbeState::new(&p, t0);
        assert!(s.due(t0));
        s.record(&p, t0, Err("x".into()));
        assert_eq!(s.healthy, None);
        assert!(!s.due(t0));
        s.record(&p, t0, Err("y".into()));
        assert_eq!(s.healthy, Some(false));
        assert_eq!(s.last_error.as_deref(), Some("y"));
        s.record(&p, t0, Ok(()));
        assert_eq!(s.healthy, Some(true));
    }
}

//! Liveness and readiness probes: exec (inside the container's namespaces), HTTP GET and TCP
//! connect against the container's address, with Kubernetes' thresholds.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use univrs_api::resources::workload::{Probe, Scheme};

/// Where a probe reaches its container.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The container's init pid (exec probes enter its namespaces).
    pub pid: i32,
    /// The container's address (HTTP and TCP probes), when it has one.
    pub ip: Option<IpAddr>,
}

/// Runs `probe` once against `target`; `Err` says why it failed.
pub async fn run_once(probe: &Probe, target: Target) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1) as u64);
    let attempt = async {
        if let Some(exec) = &probe.exec {
            exec_probe(&exec.command, target.pid).await
        } else if let Some(http) = &probe.http_get {
            if http.scheme == Scheme::HTTPS {
                // Kubernetes does not verify the certificate either; a TCP handshake with the
                // port is what can be checked without a TLS stack here.
                return tcp_probe(addr(target, http.port)?).await;
            }
            http_probe(addr(target, http.port)?, &http.path).await
        } else if let Some(tcp) = &probe.tcp_socket {
            tcp_probe(addr(target, tcp.port)?).await
        } else {
            Err("the probe sets none of exec, httpGet or tcpSocket".into())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

fn addr(target: Target, port: i32) -> Result<SocketAddr, String> {
    let ip = target
        .ip
        .ok_or("the container has no network address to probe")?;
    let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Runs the command in the container's namespaces with `nsenter` (a fresh exec, never a fork
/// of the agent).
async fn exec_probe(command: &[String], pid: i32) -> Result<(), String> {
    if command.is_empty() {
        return Err("exec probe has an empty command".into());
    }
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--target={pid}"))
        .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--"])
        .args(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{:?} exited with {}: {}",
            command,
            out.status,
            stderr.trim()
        ))
    }
}

async fn tcp_probe(addr: SocketAddr) -> Result<(), String> {
    tokio::net::TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|e| format!("connecting to {addr}: {e}"))
}

/// A minimal HTTP/1.0 GET: success is a 2xx or 3xx status line.
async fn http_probe(addr: SocketAddr, path: &str) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let path = if path.is_empty() { "/" } else { path };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: univrs-probe/1\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = s
            .read(&mut chunk)
            .await
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
            pid: 0,
            ip: Some("127.0.0.1".parse().unwrap()),
        };
        run_once(&tcp(port as i32), target).await.unwrap();
        let mut http = Probe {
            http_get: Some(univrs_api::resources::workload::HttpGetAction {
                path: "/ok".into(),
                port: port as i32,
                scheme: Scheme::HTTP,
            }),
            timeout_seconds: 1,
            ..Default::default()
        };
        run_once(&http, target).await.unwrap();
        http.http_get.as_mut().unwrap().path = "/bad".into();
        let err = run_once(&http, target).await.unwrap_err();
        assert!(err.contains("returned 503"), "{err}");
        // Nothing listens on port 1.
        assert!(run_once(&tcp(1), target).await.is_err());
        let no_ip = Target { pid: 0, ip: None };
        assert!(
            run_once(&tcp(port as i32), no_ip)
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

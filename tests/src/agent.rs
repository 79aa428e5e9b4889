//! Node agents as real processes (`univrs agent`) for end-to-end tests.

use crate::cluster::eventually;
use crate::{ControlPlane, Guarded, curl, univrs_bin};
use kube::api::Api;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use univrs_api::Node;

/// The data directory [`AgentProc`] gives agent `name` (short: the runtime's socket paths
/// must fit), where a test joins it first when the agent acts on its own certificate.
pub fn data_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/ua-{}-{name}", std::process::id()))
}

/// A running `univrs agent`, killed and reset (containers, root filesystems, networks and
/// cgroups removed) when dropped.
pub struct AgentProc {
    /// The node name.
    pub name: String,
    /// Its data directory (short: the runtime's socket paths must fit).
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The process, while it runs.
    pub child: Option<Guarded>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    bin: PathBuf,
    /// The network namespace it runs in (`nsenter --net=`), if not this process's.
    netns: Option<PathBuf>,
}

impl AgentProc {
    /// Starts an agent named `name` against `cp` with a 3 s Lease, a 1 s restart backoff, a
    /// 2 s usage interval and its mesh on loopback, plus `extra` flags.
    pub fn start(cp: &ControlPlane, name: &str, extra: &[&str]) -> Self {
        Self::start_with(&cp.kubeconfig, &cp.data_dir, name, extra)
    }

    /// As [`AgentProc::start`], with the credentials of `kubeconfig` (e.g. a ServiceAccount's
    /// token) and its log in `log_dir`.
    pub fn start_with(kubeconfig: &Path, log_dir: &Path, name: &str, extra: &[&str]) -> Self {
        Self::start_bin(univrs_bin(), kubeconfig, log_dir, name, extra)
    }

    /// As [`AgentProc::start_with`], running the `univrs` binary `bin` (a benchmark's optimized
    /// build).
    pub fn start_bin(
        bin: &Path,
        kubeconfig: &Path,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let mut a = Self::unstarted(bin, kubeconfig, log_dir, name, extra);
        a.restart();
        a
    }

    /// As [`AgentProc::start_bin`] against `cp`, in the network namespace at `netns` (a
    /// machine of [`crate::nat::Internet`]); its mesh listens where `extra`'s `--listen` says
    /// (else on loopback).
    pub fn start_in(
        bin: &Path,
        cp: &ControlPlane,
        netns: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let mut a = Self::unstarted(bin, &cp.kubeconfig, &cp.data_dir, name, extra);
        a.netns = Some(netns.to_path_buf());
        a.restart();
        a
    }

    fn unstarted(
        bin: &Path,
        kubeconfig: &Path,
        log_dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let data_dir = data_dir(name);
        let log = log_dir.join(format!("agent-{name}.log"));
        let mut args: Vec<String> = [
            "--lease-duration",
            "3s",
            "--restart-backoff",
            "1s",
            "--usage-interval",
            "2s",
            "--no-mdns",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--listen") {
            args.extend(["--listen".to_string(), "/ip4/127.0.0.1/tcp/0".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self {
            name: name.to_string(),
            data_dir,
            log,
            child: None,
            args,
            kubeconfig: kubeconfig.to_path_buf(),
            bin: bin.to_path_buf(),
            netns: None,
        }
    }

    /// The command running the `univrs` binary, in the agent's network namespace.
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    /// Starts the agent process again (after [`AgentProc::kill`]), with the same data.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the agent log");
        let mut cmd = self.command();
        cmd.arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--node-name")
            .arg(&self.name)
            .args(&self.args)
            .env("RUST_LOG", "info,univrs_node_agent=debug,kube=warn")
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(Guarded::spawn(cmd).expect("starting the agent"));
    }

    /// Kills the agent with SIGKILL (its containers keep running).
    pub fn kill(&mut self) {
        self.child.take();
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- agent {} log (last 60 lines) ---", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.child.take();
        let out = self
            .command()
            .arg("reset")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--node-name")
            .arg(&self.name)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let _ = std::fs::remove_dir_all(&self.data_dir);
            }
            Ok(o) => eprintln!(
                "univrs reset of agent {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("running univrs reset: {e}"),
        }
    }
}

/// An agent's local API: its URL and the curl flags it needs (CA, token).
pub struct AgentApi {
    /// The URL the Node publishes (`univrs.io/agent-api`).
    pub url: String,
    /// curl flags: `--cacert F`, `-H "Authorization: Bearer …"`.
    pub flags: Vec<String>,
}

impl AgentApi {
    /// The plain API of `node` (no TLS, no token).
    pub fn of(node: &Node) -> Self {
        Self {
            url: api_url(node),
            flags: Vec::new(),
        }
    }

    /// GET: (HTTP status, body).
    pub fn get(&self, path: &str) -> (String, String) {
        let url = format!("{}{path}", self.url);
        let mut args: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        args.push(&url);
        curl(&args)
    }

    /// The last 100 log lines of the first container of instance `instance` (none if the
    /// agent does not run it, or cannot say).
    pub fn instance_logs(&self, instance: &str) -> Vec<String> {
        let (code, body) = self.get("/api/status");
        let Some(status) = (code == "200")
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
            .flatten()
        else {
            return Vec::new();
        };
        let Some(cid) = status["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["instance"] == instance)
            .and_then(|i| i["containers"][0].as_str().map(str::to_string))
        else {
            return Vec::new();
        };
        let (code, body) = self.get(&format!("/api/containers/{cid}/logs?tail=100"));
        if code != "200" {
            return Vec::new();
        }
        body.lines().map(str::to_string).collect()
    }

    /// GET that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, "200", "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// POSTs the JSON `body`, with the token when `token` (the CA always).
    pub fn post(&self, path: &str, body: &str, token: bool) -> (String, String) {
        let url = format!("{}{path}", self.url);
        let mut args: Vec<&str> = self
            .flags
            .iter()
            .map(String::as_str)
            .filter(|f| token || (!f.starts_with("Authorization") && *f != "-H"))
            .collect();
        args.extend([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ]);
        args.push(&url);
        curl(&args)
    }

    /// The value of a counter labelled with `reason` in /metrics (0 when absent).
    pub fn counter(&self, name: &str, reason: &str) -> u64 {
        let (_, metrics) = self.get("/metrics");
        let prefix = format!("{name}{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Waits (90 s at most) for the Node `name` to publish its mesh addresses, and returns it.
pub async fn node_of(nodes: &Api<Node>, name: &str) -> Node {
    eventually(
        &format!("Node {name} with mesh addresses"),
        Duration::from_secs(90),
        async || match nodes.get_opt(name).await {
            Ok(Some(n)) if !n.spec.multiaddrs.is_empty() => (Some(n), String::new()),
            other => (None, format!("{other:?}")),
        },
    )
    .await
}

/// The URL of the agent API a Node publishes in `univrs.io/agent-api`.
pub fn api_url(node: &Node) -> String {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("univrs.io/agent-api"))
        .cloned()
        .expect("the API annotation")
}

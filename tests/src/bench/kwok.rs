//! kwok (`sigs.k8s.io/kwok`, built from its pinned module) renewing many fake nodes' Leases as
//! kubelets do.
//!
//! [`Kwok::start`] runs kwok's controller against a kubeconfig. It manages only the core Nodes
//! labelled [`NODE_LABEL`]`=`[`NODE_LABEL_VALUE`] (kwok's own convention; a label, not an
//! annotation, so the API server filters its watch), and does for each what a kubelet does by
//! default when nothing about its node changes (kubelet 1.35's `KubeletConfiguration`
//! defaults):
//!
//! - **Lease**: creates `kube-node-lease/<node>` (holder kwok, `leaseDurationSeconds: 40`,
//!   owned by the Node), then every 10 s plus up to 4% jitter sends an update (PUT) of the Lease
//!   it last wrote with a new `renewTime`, reading nothing. That is kubelet's
//!   `nodeLeaseDurationSeconds: 40`, its renew interval (a quarter of the duration) and its
//!   jitter: kwok copies kubelet's constants (`--node-lease-duration-seconds=40`).
//! - **Node status**: a strategic merge patch of `status` (the conditions with a new
//!   `lastHeartbeatTime`, the addresses) [`STATUS_REPORT`] after the Ready condition's
//!   `lastHeartbeatTime`, so each node reports every 5 minutes at its own phase: kubelet's
//!   `nodeStatusReportFrequency: 5m` when the status does not change. (Kubelet adds a random
//!   ±2.5 min once after a real change; nothing changes here.) [`node`] sets the first phase.
//!   kwok's own stage for this (`node-heartbeat-with-lease`) waits 600–610 s; [`config`]
//!   replaces it with one whose delay is read from the node.
//!
//! Not reproduced: kubelet's reads (a GET of its Node from the watch cache every 10 s,
//! `nodeStatusUpdateFrequency`, to compare its status; its watches of its Node, its Pods,
//! Services and more), Pod status, and the size of a real Node (its `status.images`): kwok's
//! client is one process with one connection and a few watches.

use crate::{Guarded, repo_root};
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node as CoreNode;
use k8s_openapi::jiff::Timestamp;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The label kwok's nodes carry (kwok manages no other Node).
pub const NODE_LABEL: &str = "kwok.x-k8s.io/node";
/// Its value.
pub const NODE_LABEL_VALUE: &str = "fake";
/// kubelet's default `nodeLeaseDurationSeconds`; it renews every quarter of it.
pub const LEASE_DURATION: Duration = Duration::from_secs(40);
/// kubelet's default `nodeStatusReportFrequency`: how often an unchanged status is written.
pub const STATUS_REPORT: Duration = Duration::from_secs(300);
/// Leases kwok renews at once (its default of 4 falls behind at thousands of nodes under load;
/// each kubelet renews its own).
const LEASE_PARALLELISM: u32 = 256;
/// Node stages kwok plays at once (its default is 4).
const STAGE_PARALLELISM: u32 = 16;

/// The kwok binary: `UNIVRS_KWOK`, or the one `scripts/build-go-tool kwok` built for the pin
/// (built on first use; it returns at once when the pin is built, and scripts/install-deps
/// builds it).
pub fn kwok_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("UNIVRS_KWOK") {
            return PathBuf::from(p);
        }
        let script = repo_root().join("scripts/build-go-tool");
        let out = Command::new(&script)
            .arg("kwok")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {} kwok: {e}", script.display()));
        assert!(
            out.status.success(),
            "scripts/build-go-tool kwok failed (its output is above); it builds kwok once from \
             deploy/kwok/go.mod and needs Go and the Go module proxy"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build-go-tool prints a path")
                .trim(),
        )
    })
}

/// kwok's configuration: its options and the one Node stage, as a multi-document YAML file.
pub fn config() -> String {
    let options = serde_json::json!({
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "nodeLeaseDurationSeconds": LEASE_DURATION.as_secs(),
            "nodeLeaseParallelism": LEASE_PARALLELISM,
            "nodePlayStageParallelism": STAGE_PARALLELISM,
        },
    });
    // The status a kubelet reports, as kwok's node-heartbeat-with-lease stage writes it; due
    // STATUS_REPORT after the last report (a time in the past is due at once).
    let due = format!(
        r#".status.conditions[] | select(.type == "Ready") | .lastHeartbeatTime | fromdate + {} | todate"#,
        STATUS_REPORT.as_secs()
    );
    let stage = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": "node-status-report"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Node"},
            "selector": {"matchExpressions": [{"jq": {
                "key": r#".status.conditions[] | select(.type == "Ready") | .status"#,
                "operator": "In",
                "values": ["True"],
            }}]},
            "delay": {
                "durationMilliseconds": STATUS_REPORT.as_millis() as u64,
                "durationFrom": {"jq": {"expression": due}},
            },
            "next": {"statusTemplate": STATUS_TEMPLATE},
        },
    });
    [options, stage]
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// kwok's `node-heartbeat-with-lease` status template (kustomize/stage/node/heartbeat-with-lease
/// at v0.8.0).
const STATUS_TEMPLATE: &str = r#"{{ $now := Now }}
{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $lastTransitionTime | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}

addresses:
{{ with .status.addresses }}
{{ YAML . 1 }}
{{ else }}
{{ with NodeIP }}
- address: {{ . | Quote }}
  type: InternalIP
{{ end }}
{{ with NodeName }}
- address: {{ . | Quote }}
  type: Hostname
{{ end }}
{{ end }}

{{ with NodePort }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ . }}
{{ end }}
"#;

/// A Ready core Node for kwok to manage, as a kubelet registers it (4 CPUs, 8 GiB), whose last
/// status report was at `last_report`: kwok reports again [`STATUS_REPORT`] after it.
pub fn node(name: &str, last_report: Timestamp) -> CoreNode {
    // The API server keeps seconds; so does kwok's clock (`fromdate`).
    let at = last_report.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let condition = |type_: &str, status: &str, reason: &str| {
        serde_json::json!({"type": type_, "status": status, "reason": reason,
            "lastHeartbeatTime": at, "lastTransitionTime": at})
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            NODE_LABEL: NODE_LABEL_VALUE,
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "type": "kwok",
        }},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "kwok",
                "kernelVersion": "kwok", "kubeProxyVersion": "kwok", "kubeletVersion": "kwok",
                "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""},
            "phase": "Running",
        },
    }))
    .expect("a valid Node")
}

/// The delay before node `i` of `n` starts within a `period`, so that `n` nodes that started
/// together are spread evenly over it, as nodes that joined at random times would be.
pub fn phase(i: usize, n: usize, period: Duration) -> Duration {
    period.mul_f64(i as f64 / n.max(1) as f64)
}

/// A running kwok controller, killed when dropped or when the process dies.
pub struct Kwok {
    child: Guarded,
    log: PathBuf,
}

impl Kwok {
    /// Starts kwok against `kubeconfig` with [`config`], keeping its files (configuration, log)
    /// in `dir`.
    pub fn start(kubeconfig: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("kwok.yaml");
        std::fs::write(&conf, config()).with_context(|| format!("writing {}", conf.display()))?;
        let log = dir.join("kwok.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(kwok_bin());
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--config")
            .arg(&conf)
            .args([
                &format!("--manage-nodes-with-label-selector={NODE_LABEL}={NODE_LABEL_VALUE}"),
                &format!("--node-lease-duration-seconds={}", LEASE_DURATION.as_secs()),
                // Each renewal is logged at INFO.
                "--v=WARN",
            ])
            // Its work directory, where it would read ~/.kwok/kwok.yaml from.
            .env("KWOK_WORKDIR", dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        Ok(Self {
            child: Guarded::spawn(cmd).context("starting kwok")?,
            log,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Fails with its log if it has exited.
    pub fn check(&mut self) -> Result<()> {
        if let Some(status) = self.child.0.try_wait()? {
            anyhow::bail!("kwok exited ({status}):\n{}", self.log_tail(40));
        }
        Ok(())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Kwok {
    /// A failing benchmark shows kwok's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kwok log {} (last 40 lines) ---\n{}",
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_holds_kubelets_defaults_and_one_node_stage() {
        let docs: Vec<serde_json::Value> = config()
            .split("---\n")
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["options"]["nodeLeaseDurationSeconds"], 40);
        assert_eq!(docs[1]["kind"], "Stage");
        let delay = &docs[1]["spec"]["delay"];
        assert_eq!(delay["durationMilliseconds"], 300_000);
        assert!(
            delay["durationFrom"]["jq"]["expression"]
                .as_str()
                .unwrap()
                .ends_with("fromdate + 300 | todate")
        );
        assert!(
            docs[1]["spec"]["next"]["statusTemplate"]
                .as_str()
                .unwrap()
                .contains("lastHeartbeatTime: {{ $now | Quote }}")
        );
    }

    #[test]
    fn nodes_carry_the_label_and_their_last_report_in_seconds() {
        let at: Timestamp = "2026-12-01T10:00:00.750Z".parse().unwrap();
        let n = node("k00001", at);
        assert_eq!(n.metadata.labels.unwrap()[NODE_LABEL], NODE_LABEL_VALUE);
        let ready = &n.status.unwrap().conditions.unwrap()[0];
        assert_eq!(ready.type_, "Ready");
        assert_eq!(
            ready.last_heartbeat_time.as_ref().unwrap().0.to_string(),
            "2026-12-01T10:00:00Z"
        );
    }

    #[test]
    fn phases_spread_evenly_over_the_period() {
        let p = Duration::from_secs(10);
        assert_eq!(phase(0, 4, p), Duration::ZERO);
        assert_eq!(phase(2, 4, p), Duration::from_secs(5));
        assert!(phase(3, 4, p) < p);
        assert_eq!(phase(0, 0, p), Duration::ZERO);
    }
}

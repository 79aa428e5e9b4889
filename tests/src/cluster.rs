//! Helpers for tests that drive the controller: its process, its metrics, namespaces, Node
//! objects, the agents' Lease renewals, and polling until a condition holds.

use crate::{ControlPlane, Guarded, free_port, run, univrs_bin};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use univrs_api::Node;
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::lease_name;

/// Where agents keep their Leases.
pub const LEASE_NS: &str = univrs_api::resources::node::LEASE_NAMESPACE;

/// A controller process, killed when dropped or when the test binary dies.
pub struct ControllerProc {
    /// The process.
    pub child: Guarded,
    /// Its /metrics URL.
    pub metrics: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Drop for ControllerProc {
    /// A failing test shows the controller's log: CI keeps nothing else.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!(
                "--- controller log {} (last 80 lines) ---",
                self.log.display()
            );
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Starts `univrs controller` against `cp` with a 3 s node lease (what [`renew_leases`] and the
/// tests' agents renew), a 4 s node grace period and debug logs.
pub fn start_controller(cp: &ControlPlane) -> ControllerProc {
    start_controller_bin(cp, univrs_bin())
}

/// [`start_controller`] with a given `univrs` binary (a benchmark's optimized build).
pub fn start_controller_bin(cp: &ControlPlane, bin: &std::path::Path) -> ControllerProc {
    start_controller_with(cp, bin, &[])
}

/// [`start_controller_bin`] with more arguments (`--service-period`, `--trust-anchor`, …; a
/// `--node-lease-duration` or `--node-grace-period` there replaces the default).
pub fn start_controller_with(
    cp: &ControlPlane,
    bin: &std::path::Path,
    extra: &[&str],
) -> ControllerProc {
    let port = free_port();
    let log_path = cp.data_dir.join(format!("controller-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("creating the controller log");
    let mut cmd = Command::new(bin);
    cmd.arg("controller");
    // The defaults, unless `extra` sets them (the controller takes each flag once).
    for (flag, default) in [
        ("--node-lease-duration", "3s"),
        ("--node-grace-period", "4s"),
    ] {
        if !extra.contains(&flag) {
            cmd.args([flag, default]);
        }
    }
    cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .env("RUST_LOG", "info,univrs_controller=debug,kube=warn")
        .stdout(Stdio::null())
        .stderr(log);
    ControllerProc {
        child: Guarded::spawn(cmd).expect("starting the controller"),
        metrics: format!("http://127.0.0.1:{port}/metrics"),
        log: log_path,
    }
}

/// One sample of a Prometheus metric without labels, if the endpoint answers.
pub fn metric(url: &str, name: &str) -> Option<f64> {
    let (ok, out, _) = run(Command::new("curl").args(["-sf", url]));
    if !ok {
        return None;
    }
    out.lines().find_map(|l| {
        l.strip_prefix(&format!("{name} "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Creates a namespace; one that already exists is fine, any other failure panics.
pub async fn ensure_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// A Node object for `secret`'s identity with 4 CPUs and 8 GiB.
pub fn node_object(name: &str, labels: &[(&str, &str)], secret: &NodeIdentity) -> Node {
    let id = secret.public();
    let mut n: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"peerId": id.peer_id(), "did": id.did(), "capacity": {"cpu": "4", "memory": "8Gi"}}
    }))
    .expect("a valid Node");
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n
}

/// Plays the agents' part: renews each named node's Lease every second while its flag holds,
/// up to 16 at a time (one after another, fifty Leases took longer than their 3 s under load
/// and lapsed).
pub fn renew_leases(client: kube::Client, alive: Arc<BTreeMap<String, AtomicBool>>) {
    use futures::StreamExt;
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, LEASE_NS);
        loop {
            let due: Vec<String> = alive
                .iter()
                .filter(|(_, on)| on.load(Ordering::SeqCst))
                .map(|(node, _)| node.clone())
                .collect();
            let renewals = due.into_iter().map(|node| {
                let api = api.clone();
                async move {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(lease_name(&node)),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(node.clone()),
                            lease_duration_seconds: Some(3),
                            renew_time: Some(MicroTime(Timestamp::now())),
                            ..Default::default()
                        }),
                    };
                    if let Err(e) = api
                        .patch(
                            &lease_name(&node),
                            &PatchParams::apply("test-agent").force(),
                            &Patch::Apply(&lease),
                        )
                        .await
                    {
                        eprintln!("renewing {node}'s Lease failed: {e}");
                    }
                }
            });
            futures::stream::iter(renewals)
                .buffer_unordered(16)
                .collect::<()>()
                .await;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    });
}

/// Creates each CreditLine `(name, creditor, debtor)` (accounts as `node/<n>` or
/// `namespace/<n>`) with `limit`.
pub async fn credit_lines(client: &kube::Client, lines: &[(&str, &str, &str)], limit: i64) {
    let api: Api<univrs_api::CreditLine> = Api::all(client.clone());
    for (name, creditor, debtor) in lines {
        let cl: univrs_api::CreditLine = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine", "metadata": {"name": name},
            "spec": {"creditor": creditor, "debtor": debtor, "limit": limit}
        }))
        .expect("a valid CreditLine");
        api.create(&PostParams::default(), &cl)
            .await
            .unwrap_or_else(|e| panic!("creating CreditLine {name}: {e}"));
    }
}

/// Applies each transfer `(id, line, from, to, amount)` (accounts as in [`credit_lines`]) as the
/// controller does, exactly once.
pub async fn transfers(client: &kube::Client, transfers: &[(&str, &str, &str, &str, i64)]) {
    for (id, line, from, to, amount) in transfers {
        let t = univrs_api::ledger::Transfer {
            id: id.to_string(),
            from: from.parse().expect("an account"),
            to: to.parse().expect("an account"),
            amount: *amount,
        };
        univrs_controller::reconcile::credit::apply_transfer(client, line, &t)
            .await
            .unwrap_or_else(|e| panic!("transfer {id} on {line}: {e}"));
    }
}

/// Reports the cumulative usage of `instance` of the Workload `workload` placed on `node` at
/// `placed_at`, as that node's agent does (its own field manager): `cpu` millicore-seconds and
/// `mem` MiB-seconds.
pub async fn report_usage(
    api: &Api<univrs_api::Workload>,
    (workload, instance): (&str, &str),
    node: &str,
    placed_at: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    (cpu, mem): (i64, i64),
) {
    let body = serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": workload},
        "status": {"instances": [{"name": instance, "usage": {
            "node": node, "placedAt": placed_at,
            "cpuMillicoreSeconds": cpu, "memoryMibSeconds": mem, "gpuSeconds": 0}}]}
    });
    api.patch_status(
        workload,
        &PatchParams::apply(&format!("univrs-agent-{node}")).force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap_or_else(|e| panic!("reporting {instance}'s usage: {e}"));
}

/// Waits (as [`eventually`]) for an Event in `namespace` with `reason` about the object named
/// `name`, and returns it.
pub async fn event_about(
    client: &kube::Client,
    namespace: &str,
    reason: &str,
    name: &str,
    timeout: Duration,
) -> k8s_openapi::api::events::v1::Event {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("the {reason} Event about {name}"),
        timeout,
        async || {
            let e = events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                });
            (e, "no Event yet".into())
        },
    )
    .await
}

/// Polls until `check` returns Some (printing how long it took), or panics after `timeout`
/// with the last state it described.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> (Option<T>, String),
) -> T {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let (got, state) = check().await;
        if let Some(v) = got {
            eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last state: {state}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

//! Controller benchmark through the real API server (printed, never asserted): with N Ready
//! nodes (5,000 by default), 1,000 single-replica Workloads are created at once and the clock
//! runs until every one is placed; then the controller's resident memory.
//!
//! Run: `cargo bench -p univrs-tests --bench controller` (UNIVRS_BENCH_NODES and
//! UNIVRS_BENCH_WORKLOADS change the counts). The controller is an optimized build.

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::{Node, Workload};
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, metric, node_object, start_controller_bin,
};
use univrs_tests::{ControlPlane, build_univrs, rss_mib};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `n` objects with 32 requests in flight.
async fn create_all<F, Fut>(n: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    stream::iter(0..n)
        .map(make)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

fn main() {
    let nodes_n = count("UNIVRS_BENCH_NODES", 5_000);
    let workloads_n = count("UNIVRS_BENCH_WORKLOADS", 1_000);
    let bin = build_univrs(true);
    let cp = ControlPlane::start().unwrap();
    cp.install_crds().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(cp.client()).unwrap();

    rt.block_on(async {
        for ns in ["bench", LEASE_NS] {
            ensure_namespace(&client, ns).await;
        }
        // A key per node would cost seconds of key generation and nothing else: the scheduler
        // does not look at keys, so the nodes share one identity.
        let key = NodeIdentity::generate();
        let nodes: Api<Node> = Api::all(client.clone());
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
        create_all(nodes_n, |i| {
            let (nodes, leases) = (nodes.clone(), leases.clone());
            let node = node_object(&format!("n{i:05}"), &[("site", "bench")], &key);
            async move {
                nodes.create(&PostParams::default(), &node).await.unwrap();
                // Valid for an hour: the benchmark does not renew.
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(format!("univrs-node-n{i:05}")),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(format!("n{i:05}")),
                        lease_duration_seconds: Some(3600),
                        renew_time: Some(MicroTime(Timestamp::now())),
                        ..Default::default()
                    }),
                };
                leases.create(&PostParams::default(), &lease).await.unwrap();
            }
        })
        .await;
    });

    let ctl = start_controller_bin(&cp, &bin);
    let pid = ctl.child.0.id();
    // Let the controller take in every node (each gets its first status) before timing.
    let settle = Instant::now();
    rt.block_on(async {
        let nodes: Api<Node> = Api::all(client.clone());
        loop {
            // An API server this busy may drop a connection: poll again rather than fail.
            let Ok(list) = nodes.list(&ListParams::default()).await else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
                })
                .count();
            if ready == nodes_n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let settled = settle.elapsed();
    let rss_nodes = rss_mib(pid);

    let (placed_in, creates_in) = rt.block_on(async {
        let api: Api<Workload> = Api::namespaced(client.clone(), "bench");
        let t = Instant::now();
        create_all(workloads_n, |i| {
            let api = api.clone();
            async move {
                let w: Workload = serde_json::from_value(serde_json::json!({
                    "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
                    "metadata": {"name": format!("w{i:05}")},
                    "spec": {"replicas": 1, "containers": [{"name": "c", "image": "demo/busybox:latest",
                        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]}
                }))
                .unwrap();
                api.create(&PostParams::default(), &w).await.unwrap();
            }
        })
        .await;
        let creates_in = t.elapsed();
        loop {
            let Ok(list) = api.list(&ListParams::default()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let placed = list
                .items
                .iter()
                .filter(|w| {
                    w.status
                        .as_ref()
                        .is_some_and(|s| s.instances.iter().any(|i| i.node.is_some()))
                })
                .count();
            if placed == workloads_n {
                return (t.elapsed(), creates_in);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let rss_loaded = rss_mib(pid);
    let placements = metric(&ctl.metrics, "univrs_placements_total").unwrap_or(0.0);
    drop(ctl);
    cp.stop();

    println!("| measure ({nodes_n} nodes, {workloads_n} workloads) | value |");
    println!("|---|---|");
    println!(
        "| controller takes in every node (all Ready in status) | {:.1} s |",
        settled.as_secs_f64()
    );
    println!(
        "| {workloads_n} Workloads created (32 in flight) | {:.1} s |",
        creates_in.as_secs_f64()
    );
    println!(
        "| all placed, from the first create | {:.1} s |",
        placed_in.as_secs_f64()
    );
    println!(
        "| end-to-end placements/s | {:.0} |",
        workloads_n as f64 / placed_in.as_secs_f64()
    );
    println!("| placements counted by the controller | {placements} |");
    println!("| controller RSS with the nodes | {rss_nodes:.0} MiB |");
    println!("| controller RSS with nodes and placements | {rss_loaded:.0} MiB |");
}

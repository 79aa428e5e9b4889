//! Controller benchmark through the real API server (printed, never asserted): with N Ready
//! nodes (5,000 by default), 1,000 single-replica Workloads are created at once and the clock
//! runs until every one is placed; then the controller's resident memory, the CPU time each
//! process spent while placing, the requests the API server served per verb and resource (its
//! own `apiserver_request_total`), and whether any node was given more than its capacity.
//! Then 30 s idle (writes then are churn), and a backlog: with the controller stopped, as many Workloads again are created, and a
//! fresh controller is timed from taking the lead until it has placed them all.
//!
//! Run: `cargo bench -p univrs-tests --bench controller` (UNIVRS_BENCH_NODES and
//! UNIVRS_BENCH_WORKLOADS change the counts; UNIVRS_BENCH_BIN runs a given `univrs` binary
//! instead, to compare two builds on the same settings). The controller is an optimized build. The
//! benchmark itself only watches (no polling lists), so the API server's load is the
//! controller's.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::lease_name;
use univrs_api::{Node, Workload};
use univrs_tests::bench::{
    Requests, api_requests, apiserver_pid, count, cpu_seconds, create_all, print_requests,
    watch_until,
};
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, metric, node_object, start_controller_with,
};
use univrs_tests::{ControlPlane, build_univrs, quantile, rss_mib};

/// The resources whose requests the tables count.
const COUNTED: &[&str] = &[
    "nodes",
    "workloads",
    "leases",
    "events",
    "creditlines",
    "vouches",
];

/// The API server's requests for the univrs kinds, Leases and Events.
fn requests(cp: &ControlPlane) -> Requests {
    api_requests(cp, COUNTED, "univrs.io")
}

/// Creates single-replica Workloads `<prefix>00000`… in `bench`, 32 at a time, recording when
/// each create was answered.
async fn create_workloads(
    api: &Api<Workload>,
    prefix: char,
    n: usize,
    created: &Mutex<HashMap<String, Instant>>,
) {
    create_all(n, |i| async move {
        let name = format!("{prefix}{i:05}");
        let w: Workload = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "containers": [{"name": "c", "image": "demo/busybox:latest",
                "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &w).await.unwrap();
        created.lock().unwrap().insert(name, Instant::now());
    })
    .await;
}

/// Whether a workload named with `prefix` has its instance placed.
fn placed_with(prefix: char) -> impl FnMut(&Workload) -> bool {
    move |w| {
        w.name_any().starts_with(prefix)
            && w.status
                .as_ref()
                .is_some_and(|s| s.instances.iter().any(|i| i.node.is_some()))
    }
}

fn main() {
    let nodes_n = count("UNIVRS_BENCH_NODES", 5_000);
    let workloads_n = count("UNIVRS_BENCH_WORKLOADS", 1_000);
    let bin = std::env::var_os("UNIVRS_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| build_univrs(true));
    let cp = ControlPlane::start().unwrap();
    cp.install_crds().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(cp.client()).unwrap();
    let apiserver = apiserver_pid(&cp).expect("kube-apiserver runs under the supervisor");

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
                        name: Some(lease_name(&format!("n{i:05}"))),
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

    let requests_start = requests(&cp);
    let ctl = start_controller_with(&cp, &bin, &["--node-lease-duration", "1h"]);
    let pid = ctl.child.0.id();
    // Let the controller take in every node (each gets its first status) before timing.
    let settle = Instant::now();
    let _ = rt.block_on(watch_until(
        Api::<Node>::all(client.clone()),
        |n: &Node| {
            n.status
                .as_ref()
                .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
        },
        nodes_n,
    ));
    let settled = settle.elapsed();
    let rss_nodes = rss_mib(pid);
    let requests_settled = requests(&cp);

    let (cpu_api0, cpu_ctl0) = (cpu_seconds(apiserver), cpu_seconds(pid));
    let created: Mutex<HashMap<String, Instant>> = Mutex::default();
    let (placed_in, creates_in, placed_at) = rt.block_on(async {
        let api: Api<Workload> = Api::namespaced(client.clone(), "bench");
        // Watch before the first create, so no placement goes unseen.
        let placed = tokio::spawn(watch_until(api.clone(), placed_with('w'), workloads_n));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        create_workloads(&api, 'w', workloads_n, &created).await;
        let creates_in = t.elapsed();
        let placed_at = placed.await.unwrap();
        (t.elapsed(), creates_in, placed_at)
    });
    // From the create's answer to the placement's watch event, per workload.
    let mut latency: Vec<f64> = {
        let created = created.lock().unwrap();
        placed_at
            .iter()
            .filter_map(|(n, at)| {
                created
                    .get(n)
                    .map(|c| at.saturating_duration_since(*c).as_secs_f64())
            })
            .collect()
    };
    let (p50, p99, worst) = (
        quantile(&mut latency, 0.5),
        quantile(&mut latency, 0.99),
        quantile(&mut latency, 1.0),
    );
    let (cpu_api, cpu_ctl) = (
        cpu_seconds(apiserver) - cpu_api0,
        cpu_seconds(pid) - cpu_ctl0,
    );
    let requests_placed = requests(&cp);
    let placed_sampled = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let rss_loaded = rss_mib(pid);
    let rss_api = rss_mib(apiserver);
    let placements = metric(&ctl.metrics, "univrs_placements_total").unwrap_or(0.0);
    let mean = |name: &str| {
        let sum = metric(&ctl.metrics, &format!("{name}_sum")).unwrap_or(0.0);
        sum / metric(&ctl.metrics, &format!("{name}_count"))
            .unwrap_or(1.0)
            .max(1.0)
    };
    let (decision, scheduling) = (
        mean("univrs_plan_duration_seconds"),
        mean("univrs_scheduling_duration_seconds"),
    );

    // Idle: nothing changes for 30 s (elections run, requeues fire): nothing should be written.
    std::thread::sleep(Duration::from_secs(30));
    let requests_idle = requests(&cp);
    let idle = placed_sampled.elapsed();

    // A backlog: the controller stops, as many Workloads again are created, and a fresh
    // controller takes the lead (once the old Lease lapses) and places them all.
    drop(ctl);
    rt.block_on(create_workloads(
        &Api::namespaced(client.clone(), "bench"),
        'r',
        workloads_n,
        &Mutex::default(),
    ));
    let ctl = start_controller_with(&cp, &bin, &["--node-lease-duration", "1h"]);
    while metric(&ctl.metrics, "univrs_leader") != Some(1.0) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let lead = Instant::now();
    let requests_lead = requests(&cp);
    let _ = rt.block_on(watch_until(
        Api::<Workload>::namespaced(client.clone(), "bench"),
        placed_with('r'),
        workloads_n,
    ));
    let backlog_in = lead.elapsed();
    let requests_backlog = requests(&cp);

    // Every instance on a node; how full the fullest node is; nodes given more than they have.
    let (per_node, instances) = rt.block_on(async {
        // One list, after the clock stopped.
        let all = Api::<Workload>::namespaced(client.clone(), "bench")
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut per_node: BTreeMap<String, u32> = BTreeMap::new();
        for w in &all {
            for i in w.status.iter().flat_map(|s| &s.instances) {
                if let Some(n) = &i.node {
                    *per_node.entry(n.clone()).or_default() += 1;
                }
            }
        }
        (per_node, all.len())
    });
    drop(ctl);
    cp.stop();

    // Each node has 4 CPUs; each instance asks for 100m (both rounds counted).
    let over = per_node.values().filter(|&&n| n > 40).count();
    let fullest = per_node.values().max().copied().unwrap_or(0);
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
    println!(
        "| mean decision (under the node index) / mean reconcile that placed (with its write) | {:.0} µs / {:.1} ms |",
        decision * 1e6,
        scheduling * 1e3
    );
    println!(
        "| create answered → placement seen: p50 / p99 / max | {:.2} / {:.2} / {:.2} s |",
        p50, p99, worst
    );
    println!(
        "| workloads seen at the end / nodes used / most instances on one node | {instances} / {} / {fullest} |",
        per_node.len()
    );
    println!(
        "| a backlog of {workloads_n} placed by a fresh leader, from taking the lead | {:.1} s ({:.0}/s) |",
        backlog_in.as_secs_f64(),
        workloads_n as f64 / backlog_in.as_secs_f64()
    );
    println!("| nodes given more than their capacity | {over} |");
    println!("| kube-apiserver CPU while placing | {cpu_api:.1} s |");
    println!("| controller CPU while placing | {cpu_ctl:.1} s |");
    println!("| kube-apiserver RSS after placing | {rss_api:.0} MiB |");
    println!("| controller RSS with the nodes | {rss_nodes:.0} MiB |");
    println!("| controller RSS with nodes and placements | {rss_loaded:.0} MiB |");
    print_requests(
        "while taking in the nodes",
        &requests_start,
        &requests_settled,
        settled,
    );
    print_requests(
        "while placing",
        &requests_settled,
        &requests_placed,
        placed_in,
    );
    print_requests(
        "while idle after placing (30 s and more)",
        &requests_placed,
        &requests_idle,
        idle,
    );
    print_requests(
        "while placing the backlog",
        &requests_lead,
        &requests_backlog,
        backlog_in,
    );
}

//! Heartbeats at scale: API server CPU and write rate with many nodes renewing Leases.
//!
//! N nodes that stay alive and change nothing, which is what most nodes do most of the time:
//!
//! - **Kubernetes**: kwok (`univrs_tests::bench::kwok`, built from its pinned module) manages N
//!   Ready core Nodes the way kubelets do by default: an update (PUT) of its Lease every 10 s
//!   (duration 40 s) and a strategic merge patch of the Node's status every 5 minutes.
//! - **Univrs**: N Univrs Nodes, each running, in this process, the idle writers of the agent's
//!   own code: `agent::kube::lease::renew_forever` (a server-side apply of its Lease every third
//!   of `univrs agent --lease-duration`, 40 s by default, so every 13.3 s) and
//!   `agent::kube::observations::run` (its Node's `status.observations` looked at every 15 s,
//!   written only when a value changes past its rounding and jitter). An idle agent writes
//!   nothing else: its usage reports, bids and mesh addresses change only with instances,
//!   auctions or the network, and it reads Nodes from its watch cache. Not played: the mesh
//!   (without one the observations are the uptime alone, which stays 1.0 on a node that was
//!   never down; with one they also carry bandwidth and latencies, written only when one moves
//!   by more than a quarter).
//!
//! The N nodes of a side join over one renewal period (one every period / N), as nodes started
//! at random times would be spread, and each kwok node's first status report is spread over the
//! 5 minutes the same way. Once every Lease exists, the side settles for [`SETTLE`], then the
//! API server's CPU and its own request counters (`apiserver_request_total`) are read over the
//! window (`UNIVRS_BENCH_HEARTBEAT_SECS`, 60 by default).
//!
//! Each side runs on a fresh control plane of the same pinned build (CRDs installed on both),
//! one after the other, so neither pays for the other's objects: deleting 2N objects would
//! leave their history in etcd until compaction and churn the watch caches during the second
//! window. kube-controller-manager runs as in `univrs up` (its garbage collector watches both
//! sides' Leases); neither the Univrs controller nor kube-controller-manager's node lifecycle
//! controller runs, so nothing reads the Leases but the watches.

use futures::future::join;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node as CoreNode;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector;
use std::path::Path;
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::NodeAddress;
use univrs_api::{Node, Vouch};
use univrs_node_agent::agent::kube::{field_manager, lease, observations, uptime};
use univrs_node_agent::agent::peers::cluster_view::ClusterView;
use univrs_tests::bench::kwok::{self, Kwok};
use univrs_tests::bench::{
    Better, Requests, SideBySide, api_requests, apiserver_pid, component_pid, count, cpu_seconds,
    create_all, create_all_with, print_requests, writes_between,
};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, node_object};
use univrs_tests::{ControlPlane, rss_mib};

/// `univrs agent --lease-duration`'s default (univrs/src/cli.rs); the agent renews every third.
const AGENT_LEASE: Duration = Duration::from_secs(40);
/// How often the agent looks at its observations (`every` in `agent::run`).
const AGENT_OBSERVE: Duration = Duration::from_secs(15);
/// From the last node's first Lease to the window: two renewal periods of either side.
const SETTLE: Duration = Duration::from_secs(30);
/// How long every Lease may take to appear.
const JOIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Where kubelets keep their Leases.
const KUBE_LEASE_NS: &str = "kube-node-lease";
/// The resources whose requests are counted (everything a heartbeat or a reaction to one
/// could touch).
const RESOURCES: &[&str] = &[
    "leases",
    "nodes",
    "events",
    "pods",
    "namespaces",
    "configmaps",
    "secrets",
    "serviceaccounts",
    "endpointslices",
];

/// What one side measured over its window.
struct Side {
    took: Duration,
    /// CPU seconds of kube-apiserver, etcd and the heartbeats' client (kwok, or this process).
    cpu_api: f64,
    cpu_etcd: f64,
    cpu_client: f64,
    /// kube-apiserver's resident memory at the end, MiB.
    rss_api: f64,
    requests: (Requests, Requests),
}

impl Side {
    fn per_s(&self, x: f64) -> f64 {
        x / self.took.as_secs_f64()
    }

    /// Writes per second, of `resource` (and its subresources) when given.
    fn writes(&self, resource: Option<&str>) -> f64 {
        let only = |m: &Requests| -> Requests {
            m.iter()
                .filter(|((_, r, _), _)| {
                    resource.is_none_or(|want| {
                        r == want || r.strip_prefix(want).is_some_and(|s| s.starts_with('/'))
                    })
                })
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let (before, after) = &self.requests;
        self.per_s(writes_between(&only(before), &only(after)))
    }
}

/// Runs the part and prints its table.
pub fn run(_bin: &Path, nodes: usize) {
    let window = Duration::from_secs(count("UNIVRS_BENCH_HEARTBEAT_SECS", 60) as u64);
    // Built before any clock runs.
    kwok::kwok_bin();
    eprintln!("heartbeat: Kubernetes side, {nodes} kwok nodes");
    let k = kubernetes(nodes, window);
    eprintln!("heartbeat: Univrs side, {nodes} nodes");
    let u = univrs(nodes, window);

    let settings = format!(
        "{nodes} nodes per side, each side on a fresh control plane, {}-s window after every \
         Lease existed plus {} s; kubelet defaults played by kwok: Lease PUT every {} s \
         (duration {} s), Node status PATCH every {} s; Univrs agent defaults: Lease apply every \
         {:.1} s (duration {} s), observations looked at every {} s and written on change",
        window.as_secs(),
        SETTLE.as_secs(),
        kwok::LEASE_DURATION.as_secs() / 4,
        kwok::LEASE_DURATION.as_secs(),
        kwok::STATUS_REPORT.as_secs(),
        (AGENT_LEASE / 3).as_secs_f64(),
        AGENT_LEASE.as_secs(),
        AGENT_OBSERVE.as_secs(),
    );
    let mut t = SideBySide::new(
        &format!("Heartbeats: {nodes} idle nodes renewing Leases"),
        &settings,
    );
    t.row(
        "kube-apiserver CPU per second",
        u.per_s(u.cpu_api),
        k.per_s(k.cpu_api),
        "CPU-s/s",
        Better::Lower,
    );
    t.row(
        "etcd CPU per second",
        u.per_s(u.cpu_etcd),
        k.per_s(k.cpu_etcd),
        "CPU-s/s",
        Better::Lower,
    );
    t.row(
        "API server writes per second (all counted resources)",
        u.writes(None),
        k.writes(None),
        "/s",
        Better::Lower,
    );
    t.row(
        "Lease writes per second",
        u.writes(Some("leases")),
        k.writes(Some("leases")),
        "/s",
        Better::Lower,
    );
    t.row(
        "Node writes per second (status included)",
        u.writes(Some("nodes")),
        k.writes(Some("nodes")),
        "/s",
        Better::Lower,
    );
    t.row(
        "kube-apiserver RSS after the window",
        u.rss_api,
        k.rss_api,
        "MiB",
        Better::Lower,
    );
    t.note(
        "heartbeat client CPU per second (not a node's cost: one process for all N)",
        &format!("{:.2} CPU-s/s (this process)", u.per_s(u.cpu_client)),
        &format!("{:.2} CPU-s/s (kwok)", k.per_s(k.cpu_client)),
    );
    t.print();
    for (title, side) in [("Univrs", &u), ("Kubernetes (kwok)", &k)] {
        print_requests(
            &format!("{title}, heartbeat window"),
            &side.requests.0,
            &side.requests.1,
            side.took,
        );
    }
}

/// A runtime for one side: the heartbeats run on its workers while the main thread waits.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A fresh control plane with the CRDs, and a client on `rt`.
fn control_plane(rt: &tokio::runtime::Runtime) -> (ControlPlane, kube::Client) {
    let cp = ControlPlane::start().expect("starting a control plane");
    cp.install_crds().expect("installing the CRDs");
    let client = rt.block_on(cp.client()).expect("a client");
    (cp, client)
}

/// Kubernetes: kwok renewing N core Nodes' Leases and reporting their status.
fn kubernetes(n: usize, window: Duration) -> Side {
    let n = n.max(1);
    let rt = runtime();
    let (cp, client) = control_plane(&rt);
    let mut kwok = Kwok::start(&cp.kubeconfig, &cp.data_dir.join("kwok")).expect("kwok");
    let nodes: Api<CoreNode> = Api::all(client.clone());
    let start = Timestamp::now();
    // Node i reported its status last at start - i/n × 5 min: the reports are spread evenly.
    let make = |i: usize| {
        let spread = kwok::phase(i, n, kwok::STATUS_REPORT);
        let last = start - SignedDuration::try_from(spread).expect("a short duration");
        kwok::node(&format!("k{i:05}"), last)
    };
    rt.block_on(async {
        // The first node's Lease shows kwok is watching, so the others are taken in as they come.
        nodes
            .create(&PostParams::default(), &make(0))
            .await
            .expect("creating a Node");
        wait_for_leases(&client, KUBE_LEASE_NS, 1, &mut || kwok.check()).await;
        let period = kwok::LEASE_DURATION / 4;
        let t0 = tokio::time::Instant::now();
        create_all_with(n - 1, 64, |i| {
            let (nodes, node) = (nodes.clone(), make(i + 1));
            async move {
                tokio::time::sleep_until(t0 + kwok::phase(i + 1, n, period)).await;
                nodes
                    .create(&PostParams::default(), &node)
                    .await
                    .expect("creating a Node");
            }
        })
        .await;
        wait_for_leases(&client, KUBE_LEASE_NS, n, &mut || kwok.check()).await;
    });
    std::thread::sleep(SETTLE);
    kwok.check().expect("kwok is running");
    let side = measure(&cp, "", kwok.pid(), window);
    kwok.check().expect("kwok ran through the window");
    // kwok and the client stop before their control plane.
    drop(kwok);
    drop(rt);
    side
}

/// Univrs: N Univrs Nodes, each with the agent's own Lease renewal and observations.
fn univrs(n: usize, window: Duration) -> Side {
    let rt = runtime();
    let (cp, client) = control_plane(&rt);
    let uptime_dir = tempfile::tempdir().expect("a temporary directory");
    // The observations look nodes up in the cluster view only to name mesh peers; there is no
    // mesh here, so an empty view stands in for the agent's watches.
    let (node_store, _node_writer) = reflector::store::<Node>();
    let (vouch_store, _vouch_writer) = reflector::store::<Vouch>();
    let (_node_changes, node_rx) = tokio::sync::watch::channel(0u64);
    let (_vouch_changes, vouch_rx) = tokio::sync::watch::channel(0u64);
    let cluster = ClusterView::new(node_store, node_rx, vouch_store, vouch_rx);
    let names: Vec<String> = (0..n).map(|i| format!("u{i:05}")).collect();
    let renewers = rt.block_on(async {
        ensure_namespace(&client, LEASE_NS).await;
        // Registered first, as each agent registers its Node before it renews its Lease.
        let nodes: Api<Node> = Api::all(client.clone());
        create_all(n, |i| {
            let node = node_object(&names[i], &[("site", "bench")], &NodeIdentity::generate());
            let nodes = nodes.clone();
            async move {
                nodes
                    .create(&PostParams::default(), &node)
                    .await
                    .expect("creating a Node");
            }
        })
        .await;
        let t0 = tokio::time::Instant::now();
        let renewers: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let manager = field_manager(name);
                let renew = lease::renew_forever(
                    client.clone(),
                    name.clone(),
                    manager.clone(),
                    AGENT_LEASE,
                );
                let observe = observations::run(observations::Observer {
                    client: client.clone(),
                    node: name.clone(),
                    manager,
                    uptime: uptime::UptimeTracker::open(
                        uptime_dir.path().join(format!("{name}.json")),
                    ),
                    mesh: None,
                    cluster: cluster.clone(),
                    addresses: vec![NodeAddress {
                        type_: "InternalIP".into(),
                        address: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                    }],
                    every: AGENT_OBSERVE,
                });
                let at = t0 + kwok::phase(i, n, AGENT_LEASE / 3);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    join(renew, observe).await;
                })
            })
            .collect();
        wait_for_leases(&client, LEASE_NS, n, &mut || Ok(())).await;
        renewers
    });
    std::thread::sleep(SETTLE);
    let side = measure(&cp, "univrs.io", std::process::id(), window);
    for r in renewers {
        r.abort();
    }
    // The renewers stop before their control plane.
    drop(rt);
    side
}

/// Waits until `ns` holds `n` Leases, calling `alive` (which fails when their writer died)
/// between looks.
async fn wait_for_leases(
    client: &kube::Client,
    ns: &str,
    n: usize,
    alive: &mut dyn FnMut() -> anyhow::Result<()>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        alive().expect("the heartbeats' writer is running");
        let have = match leases.list_metadata(&ListParams::default()).await {
            Ok(l) => l.items.len(),
            Err(e) => {
                eprintln!("heartbeat: listing Leases in {ns}: {e}");
                0
            }
        };
        if have >= n {
            return;
        }
        assert!(
            start.elapsed() < JOIN_TIMEOUT,
            "only {have} of {n} Leases in {ns} after {JOIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The API server's CPU, etcd's, `client`'s and the API server's request counters over `window`.
fn measure(cp: &ControlPlane, group_of_nodes: &str, client: u32, window: Duration) -> Side {
    let api = apiserver_pid(cp).expect("kube-apiserver is running");
    let etcd = component_pid(cp, "etcd").expect("etcd is running");
    let cpu = || (cpu_seconds(api), cpu_seconds(etcd), cpu_seconds(client));
    let before = api_requests(cp, RESOURCES, group_of_nodes);
    let (start, cpu0) = (Instant::now(), cpu());
    std::thread::sleep(window);
    let (took, cpu1) = (start.elapsed(), cpu());
    let after = api_requests(cp, RESOURCES, group_of_nodes);
    Side {
        took,
        cpu_api: cpu1.0 - cpu0.0,
        cpu_etcd: cpu1.1 - cpu0.1,
        cpu_client: cpu1.2 - cpu0.2,
        rss_api: rss_mib(api),
        requests: (before, after),
    }
}

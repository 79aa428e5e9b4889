//! Placement throughput: the pinned kube-scheduler versus `univrs controller`, on one API server
//! holding N Ready core Nodes (no kubelet) and N Ready Univrs Nodes of the same size (4 CPUs,
//! 8 GiB). Each placer is timed twice, the same way for both:
//!
//! - **streaming**: the placer runs and has taken in every node; W single-replica items are
//!   created, 32 in flight, and one watch sees each placed (a Pod's `spec.nodeName`, a
//!   Workload's `status.instances[0].node`);
//! - **backlog**: W items wait, then the placer's process starts; the clock runs from its spawn
//!   until the watch has seen every item placed.
//!
//! kube-scheduler runs twice: with its configuration's defaults (client QPS 50, burst 100,
//! adaptive percentage of nodes to score), and with the limits lifted (QPS and burst 5,000,
//! which only `--config` sets, and `percentageOfNodesToScore: 100`). Both placers use the same
//! admin kubeconfig, so the API server's priority and fairness treats them alike. Items ask for
//! the same 100m CPU and 32 MiB each.

use k8s_openapi::api::core::v1::{Node as CoreNode, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::lease_name;
use univrs_api::{Node, Workload};
use univrs_tests::bench::{
    Better, Requests, SideBySide, Summary, api_requests, apiserver_pid, cpu_seconds, create_all,
    print_requests, watch_until, writes_between,
};
use univrs_tests::cluster::{
    ControllerProc, LEASE_NS, ensure_namespace, node_object, start_controller_with,
};
use univrs_tests::{ControlPlane, Guarded, free_port, quantile, upstream_node_bin_dir};

/// What each item asks for, Pod and Workload alike.
const CPU: &str = "100m";
const MEMORY: &str = "32Mi";
/// The image named in the Pods; no kubelet ever pulls it.
const IMAGE: &str = "registry.k8s.io/pause:3.10.1";

/// One timed run of one placer.
struct Run {
    /// From the first create (streaming) or the placer's spawn (backlog) to the last placement.
    took: Duration,
    /// How many were placed.
    placed: usize,
    /// Placements in each whole second, from the first placement's second to the last's.
    per_second: Vec<f64>,
    /// Create answered → placement seen, seconds (streaming only).
    latency: Vec<f64>,
    /// How long the creates took (streaming only).
    creates: Duration,
    /// CPU seconds of kube-apiserver and of the placer during the run.
    cpu_api: f64,
    cpu_placer: f64,
    /// The API server's write requests during the run.
    writes: f64,
    requests: (Requests, Requests),
}

impl Run {
    fn rate(&self) -> f64 {
        self.placed as f64 / self.took.as_secs_f64()
    }

    fn per_second(&self) -> Summary {
        Summary::of(&self.per_second)
    }

    fn writes_per_placement(&self) -> f64 {
        self.writes / self.placed.max(1) as f64
    }
}

/// Counts placements per whole second, from the first placement's second to the last's.
fn per_second(start: Instant, placed: &HashMap<String, Instant>) -> Vec<f64> {
    let secs: Vec<u64> = placed
        .values()
        .map(|t| t.saturating_duration_since(start).as_secs())
        .collect();
    let (Some(&lo), Some(&hi)) = (secs.iter().min(), secs.iter().max()) else {
        return Vec::new();
    };
    let mut buckets = vec![0.0; (hi - lo + 1) as usize];
    for s in secs {
        buckets[(s - lo) as usize] += 1.0;
    }
    buckets
}

/// The process whose CPU a run counts.
trait Placer {
    fn pid(&self) -> u32;
}

impl Placer for Guarded {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Placer for ControllerProc {
    fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// The bench's shared state: the control plane, a runtime and a client.
struct Bench {
    cp: ControlPlane,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    api: u32,
}

impl Bench {
    fn requests(&self) -> Requests {
        api_requests(
            &self.cp,
            &["pods", "bindings", "workloads", "events", "nodes", "leases"],
            "",
        )
    }

    /// Times `n` items made by `make` in `ns`, created while `placer` runs.
    fn stream<K>(
        &self,
        placer: &dyn Placer,
        ns: &str,
        n: usize,
        make: impl Fn(String) -> K + Sync,
        placed: fn(&K) -> bool,
    ) -> Run
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
        K: Clone
            + std::fmt::Debug
            + DeserializeOwned
            + k8s_openapi::serde::Serialize
            + Send
            + Sync
            + 'static,
    {
        let before = self.requests();
        let (cpu_api, cpu_placer) = (cpu_seconds(self.api), cpu_seconds(placer.pid()));
        let created: Mutex<HashMap<String, Instant>> = Mutex::default();
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let (start, creates, placed_at) = self.rt.block_on(async {
            // Watch before the first create, so no placement goes unseen.
            let watch = tokio::spawn(watch_until(api.clone(), named('i', placed), n));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let start = Instant::now();
            create_all(n, |i| {
                let (api, obj, created) = (api.clone(), make(format!("i{i:05}")), &created);
                async move {
                    api.create(&PostParams::default(), &obj).await.unwrap();
                    created
                        .lock()
                        .unwrap()
                        .insert(obj.name_any(), Instant::now());
                }
            })
            .await;
            let creates = start.elapsed();
            (start, creates, watch.await.unwrap())
        });
        let created = created.into_inner().unwrap();
        let latency = placed_at
            .iter()
            .filter_map(|(name, at)| {
                created
                    .get(name)
                    .map(|c| at.saturating_duration_since(*c).as_secs_f64())
            })
            .collect();
        self.finish(
            placer,
            start,
            &placed_at,
            (cpu_api, cpu_placer),
            before,
            latency,
            creates,
        )
    }

    /// Creates `n` items in `ns` with no placer running, then times `spawn`'s placer from its
    /// spawn until all are placed. Returns the run and the placer, still running.
    fn backlog<K, P: Placer>(
        &self,
        spawn: impl FnOnce() -> P,
        ns: &str,
        n: usize,
        make: impl Fn(String) -> K + Sync,
        placed: fn(&K) -> bool,
    ) -> (Run, P)
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
        K: Clone
            + std::fmt::Debug
            + DeserializeOwned
            + k8s_openapi::serde::Serialize
            + Send
            + Sync
            + 'static,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        self.rt.block_on(create_all(n, |i| {
            let (api, obj) = (api.clone(), make(format!("b{i:05}")));
            async move {
                api.create(&PostParams::default(), &obj).await.unwrap();
            }
        }));
        let watch = self.rt.spawn(watch_until(api, named('b', placed), n));
        // Let the watch list what waits before the placer starts.
        std::thread::sleep(Duration::from_secs(2));
        let before = self.requests();
        let cpu_api = cpu_seconds(self.api);
        let start = Instant::now();
        let placer = spawn();
        let placed_at = self.rt.block_on(watch).unwrap();
        let run = self.finish(
            &placer,
            start,
            &placed_at,
            (cpu_api, 0.0),
            before,
            Vec::new(),
            Duration::ZERO,
        );
        (run, placer)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        placer: &dyn Placer,
        start: Instant,
        placed_at: &HashMap<String, Instant>,
        (cpu_api, cpu_placer): (f64, f64),
        before: Requests,
        latency: Vec<f64>,
        creates: Duration,
    ) -> Run {
        let last = placed_at.values().max().copied().unwrap_or(start);
        let after = self.requests();
        Run {
            took: last.saturating_duration_since(start),
            placed: placed_at.len(),
            per_second: per_second(start, placed_at),
            latency,
            creates,
            cpu_api: cpu_seconds(self.api) - cpu_api,
            cpu_placer: cpu_seconds(placer.pid()) - cpu_placer,
            writes: writes_between(&before, &after),
            requests: (before, after),
        }
    }
}

/// `placed`, for the items of one run (named with `prefix`) only.
fn named<K: ResourceExt>(prefix: char, placed: fn(&K) -> bool) -> impl FnMut(&K) -> bool {
    move |k| k.name_any().starts_with(prefix) && placed(k)
}

/// A Pod of one pause container asking for [`CPU`] and [`MEMORY`].
fn pod(name: String) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": IMAGE,
            "resources": {"requests": {"cpu": CPU, "memory": MEMORY}}}]}
    }))
    .unwrap()
}

/// A single-replica Workload asking for [`CPU`] and [`MEMORY`].
fn workload(name: String) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": {"replicas": 1, "containers": [{"name": "c", "image": "demo/busybox:latest",
            "resources": {"requests": {"cpu": CPU, "memory": MEMORY}}}]}
    }))
    .unwrap()
}

fn pod_placed(p: &Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
}

fn workload_placed(w: &Workload) -> bool {
    w.status
        .as_ref()
        .is_some_and(|s| s.instances.iter().any(|i| i.node.is_some()))
}

/// N core Nodes, Ready, 4 CPUs and 8 GiB, untainted: what a kubelet would have registered.
async fn core_nodes(client: &kube::Client, n: usize) {
    let api: Api<CoreNode> = Api::all(client.clone());
    create_all(n, |i| {
        let api = api.clone();
        async move {
            let name = format!("k{i:05}");
            let node: CoreNode = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "site": "bench"}}
            }))
            .unwrap();
            api.create(&PostParams::default(), &node).await.unwrap();
            let now = Timestamp::now().to_string();
            let resources = serde_json::json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
            let status = serde_json::json!({"status": {
                "capacity": resources, "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "benchmark node", "lastHeartbeatTime": now, "lastTransitionTime": now}]
            }});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
            // The API server taints a new Node not-ready (TaintNodesByCondition); the node
            // lifecycle controller would lift it once Ready, and it does not run here.
            let untaint = serde_json::json!({"spec": {"taints": null}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&untaint))
                .await
                .unwrap();
        }
    })
    .await;
}

/// N Univrs Nodes of the same size, with Leases valid for an hour (nothing renews them).
async fn univrs_nodes(client: &kube::Client, n: usize) {
    // A key per node would cost seconds of key generation and nothing else: placement does not
    // look at keys, so the nodes share one identity.
    let key = NodeIdentity::generate();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), LEASE_NS);
    create_all(n, |i| {
        let (nodes, leases) = (nodes.clone(), leases.clone());
        let name = format!("n{i:05}");
        let node = node_object(&name, &[("site", "bench")], &key);
        async move {
            nodes.create(&PostParams::default(), &node).await.unwrap();
            let lease: k8s_openapi::api::coordination::v1::Lease =
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": lease_name(&name)},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 3600,
                        "renewTime": MicroTime(Timestamp::now())}
                }))
                .unwrap();
            leases.create(&PostParams::default(), &lease).await.unwrap();
        }
    })
    .await;
}

/// A kube-scheduler configuration: the defaults, or client limits lifted.
fn scheduler_config(dir: &Path, kubeconfig: &Path, lifted: bool) -> PathBuf {
    let mut cfg = format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         clientConnection:\n  kubeconfig: {}\n",
        kubeconfig.display()
    );
    if lifted {
        cfg.push_str("  qps: 5000\n  burst: 5000\npercentageOfNodesToScore: 100\n");
    }
    cfg.push_str("leaderElection:\n  leaderElect: false\n");
    let path = dir.join(format!(
        "scheduler-{}.yaml",
        if lifted { "lifted" } else { "defaults" }
    ));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Starts the pinned kube-scheduler with `config`, serving its own HTTPS on a free loopback port.
fn kube_scheduler(cp: &ControlPlane, config: &Path) -> Guarded {
    let k = cp.kubeconfig.display();
    let log = std::fs::File::create(config.with_extension("log")).unwrap();
    let mut cmd = Command::new(upstream_node_bin_dir().join("kube-scheduler"));
    cmd.arg(format!("--config={}", config.display()))
        .arg(format!("--authentication-kubeconfig={k}"))
        .arg(format!("--authorization-kubeconfig={k}"))
        .args([
            "--bind-address=127.0.0.1",
            "--authentication-skip-lookup=true",
        ])
        .arg(format!("--secure-port={}", free_port()))
        .args(["--profiling=false", "--v=1"])
        .stdout(Stdio::null())
        .stderr(log);
    Guarded::spawn(cmd).unwrap()
}

/// `univrs controller` judging nodes by hour-long Leases: nothing renews them here.
fn controller(cp: &ControlPlane, bin: &Path) -> ControllerProc {
    start_controller_with(cp, bin, &["--node-lease-duration", "1h"])
}

/// Stops a controller with SIGTERM, as a rolling update would, so it releases its Lease and the
/// next one leads at once.
fn stop_controller(ctl: ControllerProc) {
    let pid = nix::unistd::Pid::from_raw(ctl.pid() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let mut ctl = ctl;
    for _ in 0..300 {
        if !matches!(ctl.child.0.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ctl);
}

/// The results of one placer: streaming and backlog.
struct Placed {
    stream: Run,
    backlog: Run,
}

/// Runs the part and prints its tables; returns Univrs's placements/s over kube-scheduler's
/// pods/s with its limits lifted.
pub fn run(bin: &Path, nodes: usize, workloads: usize) -> f64 {
    let cp = ControlPlane::start().unwrap();
    cp.install_crds().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(cp.client()).unwrap();
    let api = apiserver_pid(&cp).expect("kube-apiserver runs under the supervisor");
    let b = Bench {
        cp,
        rt,
        client,
        api,
    };
    let t = Instant::now();
    b.rt.block_on(async {
        for ns in ["univrs", "kube-defaults", "kube-lifted", LEASE_NS] {
            ensure_namespace(&b.client, ns).await;
        }
        // Pods need their namespace's default ServiceAccount to exist (admission refuses them
        // otherwise); kube-controller-manager makes it, but not necessarily before the first
        // create.
        for ns in ["kube-defaults", "kube-lifted"] {
            let sa: ServiceAccount =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))
                    .unwrap();
            let _ = Api::<ServiceAccount>::namespaced(b.client.clone(), ns)
                .create(&PostParams::default(), &sa)
                .await;
        }
        core_nodes(&b.client, nodes).await;
        univrs_nodes(&b.client, nodes).await;
    });
    eprintln!(
        "placement: {nodes} core Nodes and {nodes} Univrs Nodes made in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // Univrs: the controller takes in every node (each Ready in its status), then places.
    let ctl = controller(&b.cp, bin);
    let settle = Instant::now();
    b.rt.block_on(watch_until(
        Api::<Node>::all(b.client.clone()),
        |n: &Node| {
            n.status
                .as_ref()
                .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
        },
        nodes,
    ));
    let univrs_settle = settle.elapsed();
    eprintln!("placement: univrs controller has every node; streaming");
    let stream = b.stream(&ctl, "univrs", workloads, workload, workload_placed);
    stop_controller(ctl);
    eprintln!("placement: univrs backlog");
    let (backlog, ctl) = b.backlog(
        || controller(&b.cp, bin),
        "univrs",
        workloads,
        workload,
        workload_placed,
    );
    let univrs_rss = univrs_tests::rss_mib(ctl.pid());
    stop_controller(ctl);
    let univrs = Placed { stream, backlog };

    // kube-scheduler, its defaults and then limits lifted. A probe Pod bound means it has
    // taken in every node.
    let mut kube = Vec::new();
    let mut kube_settle = Vec::new();
    let mut kube_rss = Vec::new();
    for (ns, lifted) in [("kube-defaults", false), ("kube-lifted", true)] {
        let config = scheduler_config(&b.cp.data_dir, &b.cp.kubeconfig, lifted);
        let settle = Instant::now();
        let sched = kube_scheduler(&b.cp, &config);
        b.rt.block_on(async {
            let api: Api<Pod> = Api::namespaced(b.client.clone(), ns);
            let watch = tokio::spawn(watch_until(api.clone(), named('p', pod_placed), 1));
            api.create(&PostParams::default(), &pod("probe".into()))
                .await
                .unwrap();
            watch.await.unwrap();
        });
        kube_settle.push(settle.elapsed());
        eprintln!("placement: kube-scheduler ({ns}) has every node; streaming");
        let stream = b.stream(&sched, ns, workloads, pod, pod_placed);
        drop(sched);
        eprintln!("placement: kube-scheduler ({ns}) backlog");
        let (backlog, sched) = b.backlog(
            || kube_scheduler(&b.cp, &config),
            ns,
            workloads,
            pod,
            pod_placed,
        );
        kube_rss.push(univrs_tests::rss_mib(sched.pid()));
        drop(sched);
        kube.push(Placed { stream, backlog });
    }
    b.cp.stop();

    print_tables(
        &univrs,
        &kube,
        nodes,
        workloads,
        (univrs_settle, &kube_settle),
        (univrs_rss, &kube_rss),
    );
    univrs.backlog.rate() / kube[1].backlog.rate()
}

fn print_tables(
    univrs: &Placed,
    kube: &[Placed],
    nodes: usize,
    workloads: usize,
    (univrs_settle, kube_settle): (Duration, &[Duration]),
    (univrs_rss, kube_rss): (f64, &[f64]),
) {
    let settings = format!(
        "{nodes} Ready core Nodes and {nodes} Ready Univrs Nodes (4 CPUs, 8 GiB each); \
         {workloads} single-replica items per run asking {CPU} CPU and {MEMORY}; creates 32 in \
         flight; both placers with the admin kubeconfig; kube-scheduler `--config` with \
         leaderElect false; optimized `univrs controller`"
    );
    for (title, k, lifted) in [
        (
            "Placement: Univrs versus kube-scheduler with client limits lifted (QPS/burst 5000, percentageOfNodesToScore 100)",
            &kube[1],
            true,
        ),
        (
            "Placement: Univrs versus kube-scheduler with its defaults (QPS 50, burst 100, adaptive nodes to score)",
            &kube[0],
            false,
        ),
    ] {
        let mut t = SideBySide::new(title, &settings);
        let (u, k_s, k_b) = (univrs, &k.stream, &k.backlog);
        t.row(
            "backlog: placed/s from the placer's start",
            u.backlog.rate(),
            k_b.rate(),
            "/s",
            Better::Higher,
        );
        t.row(
            "backlog: time to place all, from the placer's start",
            u.backlog.took.as_secs_f64(),
            k_b.took.as_secs_f64(),
            "s",
            Better::Lower,
        );
        t.row(
            "backlog: placements per second, p50 of 1-s buckets",
            u.backlog.per_second().p50,
            k_b.per_second().p50,
            "/s",
            Better::Higher,
        );
        t.row(
            "streaming: placed/s from the first create",
            u.stream.rate(),
            k_s.rate(),
            "/s",
            Better::Higher,
        );
        t.row(
            "streaming: placements per second, p50 of 1-s buckets",
            u.stream.per_second().p50,
            k_s.per_second().p50,
            "/s",
            Better::Higher,
        );
        t.row(
            "streaming: creates took (the ceiling streaming can reach)",
            u.stream.creates.as_secs_f64(),
            k_s.creates.as_secs_f64(),
            "s",
            Better::Lower,
        );
        let lat = |r: &Run, q: f64| quantile(&mut r.latency.clone(), q) * 1000.0;
        t.row(
            "streaming: create answered → placement seen, p50",
            lat(&u.stream, 0.5),
            lat(k_s, 0.5),
            "ms",
            Better::Lower,
        );
        t.row(
            "streaming: create answered → placement seen, p99",
            lat(&u.stream, 0.99),
            lat(k_s, 0.99),
            "ms",
            Better::Lower,
        );
        t.row(
            "API server writes per placement (streaming, creates included)",
            u.stream.writes_per_placement(),
            k_s.writes_per_placement(),
            "",
            Better::Lower,
        );
        t.row(
            "API server writes per placement (backlog)",
            u.backlog.writes_per_placement(),
            k_b.writes_per_placement(),
            "",
            Better::Lower,
        );
        t.row(
            "kube-apiserver CPU, backlog",
            u.backlog.cpu_api,
            k_b.cpu_api,
            "s",
            Better::Lower,
        );
        t.row(
            "placer CPU, backlog (from its start)",
            u.backlog.cpu_placer,
            k_b.cpu_placer,
            "s",
            Better::Lower,
        );
        t.row(
            "placer CPU, streaming",
            u.stream.cpu_placer,
            k_s.cpu_placer,
            "s",
            Better::Lower,
        );
        let i = usize::from(lifted);
        t.row(
            "placer RSS after the backlog",
            univrs_rss,
            kube_rss[i],
            "MiB",
            Better::Lower,
        );
        t.row(
            "first start on fresh nodes until it places (Univrs also writes each Node's status)",
            univrs_settle.as_secs_f64(),
            kube_settle[i].as_secs_f64(),
            "s",
            Better::Lower,
        );
        t.note(
            "items placed (streaming / backlog)",
            &format!("{} / {}", u.stream.placed, u.backlog.placed),
            &format!("{} / {}", k_s.placed, k_b.placed),
        );
        t.print();
    }
    for (who, r) in [
        ("Univrs backlog", &univrs.backlog),
        ("kube-scheduler (lifted) backlog", &kube[1].backlog),
        ("Univrs streaming", &univrs.stream),
        ("kube-scheduler (lifted) streaming", &kube[1].stream),
    ] {
        print_requests(who, &r.requests.0, &r.requests.1, r.took);
    }
}

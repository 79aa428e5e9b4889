//! Start latency: create → Running on the pinned kubelet with containerd versus `univrs agent`,
//! and the runtime alone.
//!
//! One control plane serves both sides: the kubelet node's (`--kubelets`: kube-scheduler too),
//! with the CRDs, `univrs controller` and one `univrs agent` added, so both run at once and each
//! side's runs have the other idle beside them. Pods and Workloads of the demo image (250m CPU,
//! 64 MiB limits, no probe, no ServiceAccount token, no service links) are created in turn, a
//! Pod then a Workload, one at a time: each timed by one watch per kind, open for the whole
//! run, from the create's answer to the watch seeing its container running (a Pod's
//! `status.phase: Running` with a running container; a Workload's `status.instances[0].phase:
//! Running`) and Ready; then deleted, and the next starts once it is gone and its containers
//! stopped. The placer (kube-scheduler, the controller) is on the path for both.
//!
//! The runtime alone, in turn too: containerd's runc shim (`ctr containers create` untimed,
//! then `ctr tasks start -d` timed until it returns with the task running: the shim's start,
//! runc's create and start, and the `ctr` process itself) versus our shim (the root filesystem
//! untimed, then `RuntimeClient::start` until the container runs). Same image, same limits.
//!
//! The first run of each of the four is shown apart and left out of the summaries: the node's
//! first Pod makes the CNI bridge and its first sandbox, the agent's first instance its bridge
//! and nat chain and its image import; the first `ctr` and shim runs warm caches.

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use univrs_api::{Node, Workload};
use univrs_node_agent::demo_image::DEMO_REFERENCE;
use univrs_node_agent::runtime::cgroup;
use univrs_tests::bench::containers::{
    ApiCreds, DemoImage, RawShim, Timed, WAIT, Watched, pod_progress, ready_node, start_agent,
    workload_once,
};
use univrs_tests::bench::{Better, SideBySide, Summary, first_line, ms};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller_bin};
use univrs_tests::kubelet::{KubeletNode, unmount_under};
use univrs_tests::{run as run_cmd, upstream_node_bin_dir};

/// Where the Pods and Workloads go.
const NS: &str = "bench-start";
/// The agent's node name (and label `bench=<name>`).
const AGENT: &str = "vk-agent";
/// The agent's container subnet (the agent benchmark uses 10.78.x, the kubelet node 10.232.0).
const AGENT_CIDR: &str = "10.79.0.0/24";

/// The scratch directory: mounts under it are undone and it is removed when dropped, also
/// when the benchmark fails half-way.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_under(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// containerd's runc shim started through `ctr`, in the node's `k8s.io` namespace (so the
/// node's clean-up covers a run that fails half-way).
struct CtrRuntime<'a> {
    node: &'a KubeletNode,
    logs: PathBuf,
}

impl CtrRuntime<'_> {
    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = self.node.ctr();
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn must(&self, args: &[&str]) {
        let out = self.ctr(args).output().unwrap();
        assert!(
            out.status.success(),
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ctr containers create` (the snapshot; untimed), `ctr tasks start -d` timed, then the
    /// task killed and both removed (untimed); milliseconds.
    fn start_once(&self, id: &str) -> f64 {
        self.must(&[
            "containers",
            "create",
            "--memory-limit",
            "67108864",
            "--cpu-quota",
            "25000",
            "--cpu-period",
            "100000",
            DEMO_REFERENCE,
            id,
        ]);
        let log = format!("file://{}", self.logs.join(format!("{id}.log")).display());
        let t = Instant::now();
        self.must(&["tasks", "start", "-d", "--log-uri", &log, id]);
        let took = ms(t.elapsed());
        let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]).status();
        // The task must have exited before it can be deleted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .ctr(&["tasks", "delete", id])
            .status()
            .is_ok_and(|s| s.success())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.must(&["containers", "delete", id]);
        took
    }

    /// One `ctr version` (a gRPC round trip to containerd): the CLI's own share of a start.
    fn round_trip(&self) -> f64 {
        let t = Instant::now();
        self.must(&["version"]);
        ms(t.elapsed())
    }
}

/// A single-replica Pod of the demo image, as [`univrs_tests::bench::containers::workload`]
/// asks of a Workload.
fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "web", "image": DEMO_REFERENCE, "imagePullPolicy": "Never",
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}],
            // A Workload gets neither a token nor Services' variables: neither does the Pod.
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            // httpd as PID 1 ignores SIGTERM: without this each delete would wait 30 s.
            "terminationGracePeriodSeconds": 1
        }
    }))
    .unwrap()
}

/// The tasks containerd runs in the node's namespace (sandboxes included).
fn running_tasks(node: &KubeletNode) -> usize {
    let (_, out, _) = run_cmd(node.ctr().args(["tasks", "ls"]));
    out.lines().filter(|l| l.contains("RUNNING")).count()
}

/// One Pod `name`: created, timed, deleted; returns once it is gone and no task runs.
async fn pod_once(
    node: &KubeletNode,
    api: &Api<Pod>,
    watched: &mut Watched<Pod>,
    name: &str,
) -> Timed {
    let t = watched
        .create_timed(api, &pod(name), pod_progress)
        .await
        .unwrap_or_else(|| {
            panic!(
                "Pod {name} did not turn Ready within {WAIT:?}:\n{}",
                node.logs(40)
            )
        });
    api.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(&format!("{name} cleaned up"), WAIT, async || {
        let gone = api.get_opt(name).await.unwrap().is_none();
        let tasks = running_tasks(node);
        (
            (gone && tasks == 0).then_some(()),
            format!("pod gone {gone}, running tasks {tasks}"),
        )
    })
    .await;
    t
}

/// Runs the part and prints its table; returns kubelet's create → Running p50 over Univrs's.
pub fn run(bin: &Path, runs: usize) -> f64 {
    let runs = runs.max(2);
    // A machine setting the agent turns on (see `cgroup::favor_dynamic_changes`); it acts on
    // every cgroup migration, runc's too, so it is on before either side runs.
    let favor = cgroup::favor_dynamic_changes();
    let favoring = match &favor {
        Ok(cgroup::Favoring::AlreadyOn) => "on (already)".to_string(),
        Ok(cgroup::Favoring::Mounted(at)) => format!("on (mounted at {})", at.display()),
        Err(e) => format!("off ({e})"),
    };
    // Taken along at the end (no agent is left by then), as the last agent's reset does.
    struct Unfavor(bool);
    impl Drop for Unfavor {
        fn drop(&mut self) {
            if self.0 {
                let _ = cgroup::release_favor(Path::new("/nonexistent"));
            }
        }
    }
    let _unfavor = Unfavor(matches!(favor, Ok(cgroup::Favoring::Mounted(_))));
    let scratch = Scratch(PathBuf::from(format!("/tmp/vks-{}", std::process::id())));
    let dir = scratch.0.clone();
    std::fs::create_dir_all(dir.join("ctr-logs")).unwrap();
    let node = KubeletNode::start("vk-start").unwrap_or_else(|e| panic!("{e:#}"));
    let demo = DemoImage::new(&dir);
    node.import(&demo.layout).unwrap();

    // The runtime alone, before anything else runs on the node.
    let (mut ctr_ms, mut shim_ms, mut trip_ms) = (Vec::new(), Vec::new(), Vec::new());
    {
        let ctr = CtrRuntime {
            node: &node,
            logs: dir.join("ctr-logs"),
        };
        let shim = RawShim::new(bin, &demo, &dir);
        for i in 0..runs {
            ctr_ms.push(ctr.start_once(&format!("vk-ctr-{i}")));
            shim_ms.push(shim.start_once(&format!("vk-shim-{i}")));
            trip_ms.push(ctr.round_trip());
        }
    }

    node.cp.install_crds().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (pods, workloads) = rt.block_on(async {
        let client = node.cp.client().await.unwrap();
        for ns in [NS, LEASE_NS] {
            ensure_namespace(&client, ns).await;
        }
        // Pods are refused until the namespace's default ServiceAccount exists.
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
        eventually("default ServiceAccount", WAIT, async || {
            let sa = sas.get_opt("default").await.ok().flatten();
            (sa.map(|_| ()), String::new())
        })
        .await;
        let _controller = start_controller_bin(&node.cp, bin);
        let creds = ApiCreds::new(&dir);
        let agent = start_agent(bin, &node.cp, AGENT, AGENT_CIDR, &creds, None);
        ready_node(&Api::<Node>::all(client.clone()), AGENT).await;

        let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);
        let wl_api: Api<Workload> = Api::namespaced(client.clone(), NS);
        let mut pod_watch = Watched::start(pod_api.clone()).await;
        let mut wl_watch = Watched::start(wl_api.clone()).await;
        let (mut pods, mut workloads) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let name = format!("start-{i:03}");
            pods.push(pod_once(&node, &pod_api, &mut pod_watch, &name).await);
            workloads.push(workload_once(&wl_api, &mut wl_watch, AGENT, &agent, &name).await);
        }
        (pods, workloads)
    });
    drop(rt);

    let k_run: Vec<f64> = pods.iter().map(Timed::answered_to_running).collect();
    let k_ready: Vec<f64> = pods.iter().map(Timed::answered_to_ready).collect();
    let u_run: Vec<f64> = workloads.iter().map(Timed::answered_to_running).collect();
    let u_ready: Vec<f64> = workloads.iter().map(Timed::answered_to_ready).collect();
    // The first of each is shown apart (bridges, first sandbox, image import, cold caches).
    let s = |v: &[f64]| Summary::of(&v[1..]);
    let (kr, kd, ur, ud) = (s(&k_run), s(&k_ready), s(&u_run), s(&u_ready));
    let (kc, us) = (s(&ctr_ms), s(&shim_ms));
    let trip = Summary::of(&trip_ms);

    let bins = upstream_node_bin_dir();
    let settings = format!(
        "{DEMO_REFERENCE} (busybox httpd), 250m CPU / 64 MiB limits, no probe; {} runs each, a \
         Pod then a Workload in turn, the first of each shown apart; one control plane for both \
         (kube-scheduler, `univrs controller`); cgroup v1, driver cgroupfs on both sides, \
         favordynmods {}; {}; {}; {}; runc {}; Univrs: `univrs agent` and `univrs shim` (youki's \
         libcontainer), {}",
        runs,
        favoring,
        first_line(Command::new(bins.join("kubelet")).arg("--version")),
        first_line(Command::new("containerd").arg("--version")),
        "containerd's CRI plugin, CNI bridge + host-local + portmap, kube-proxy (iptables)",
        first_line(Command::new("runc").arg("--version")).trim_start_matches("runc version "),
        bin.display(),
    );
    let mut t = SideBySide::new(
        "Start latency: create → Running, one at a time (kubelet + containerd vs univrs agent)",
        &settings,
    );
    t.row("create → Running p50", ur.p50, kr.p50, "ms", Better::Lower);
    t.row("create → Running p99", ur.p99, kr.p99, "ms", Better::Lower);
    t.row("create → Ready p50", ud.p50, kd.p50, "ms", Better::Lower);
    t.row("create → Ready p99", ud.p99, kd.p99, "ms", Better::Lower);
    t.row(
        "runtime alone p50 (our shim vs ctr tasks start: runc shim)",
        us.p50,
        kc.p50,
        "ms",
        Better::Lower,
    );
    t.row(
        "runtime alone p99 (our shim vs ctr tasks start: runc shim)",
        us.p99,
        kc.p99,
        "ms",
        Better::Lower,
    );
    t.note(
        "first run, create → Running (left out above)",
        &format!("{:.1} ms", u_run[0]),
        &format!("{:.1} ms", k_run[0]),
    );
    t.note(
        "first run, runtime alone (left out above)",
        &format!("{:.1} ms", shim_ms[0]),
        &format!("{:.1} ms", ctr_ms[0]),
    );
    t.note(
        "of which the `ctr` CLI itself (`ctr version` round trip, p50)",
        "–",
        &format!("{:.1} ms", trip.p50),
    );
    t.print();

    println!();
    println!("| path | runs | p50 ms | p99 ms | min ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!("{}", ur.row("Workload create → Running (univrs agent)"));
    println!("{}", kr.row("Pod create → Running (kubelet + containerd)"));
    println!("{}", ud.row("Workload create → Ready"));
    println!("{}", kd.row("Pod create → Ready"));
    let placed =
        |v: &[Timed], f: fn(&Timed) -> f64| Summary::of(&v[1..].iter().map(f).collect::<Vec<_>>());
    println!(
        "{}",
        placed(&workloads, |t| ms(t.placed - t.answered))
            .row("Workload create → placed (controller)")
    );
    println!(
        "{}",
        placed(&pods, |t| ms(t.placed - t.answered)).row("Pod create → placed (kube-scheduler)")
    );
    println!("{}", us.row("our shim create + start (libcontainer)"));
    println!(
        "{}",
        kc.row("ctr tasks start -d (containerd-shim-runc-v2 + runc)")
    );
    println!("{}", trip.row("ctr version (the CLI's round trip)"));

    drop(node);
    drop(scratch);
    kr.p50 / ur.p50
}

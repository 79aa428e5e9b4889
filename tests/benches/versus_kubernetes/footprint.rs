//! Footprint: RSS and CPU of each whole stack, idle and running the portal's three replicas.
//!
//! - **Univrs**: `univrs up --agents 2` (the first agent plus two more: three agents, as many
//!   as the portal has replicas; its defaults otherwise: 40 s Leases, 30 s usage interval),
//!   then `deploy/examples/community-portal.yaml` as it is (three replicas, probes, `expose` on
//!   port 30080).
//! - **Kubernetes**: the same control plane (`univrs control-plane --kubelets`: etcd,
//!   kube-apiserver, kube-controller-manager, kube-scheduler), the pinned kubelet, kube-proxy,
//!   Debian's containerd and its runc shims; then a Deployment of three replicas of the same
//!   image with the same resources and probes, and a NodePort Service on 30080.
//!
//! Each stack runs alone, one after the other. Each is measured over a window (30 s,
//! `UNIVRS_BENCH_WINDOW` seconds) after it settled: resident memory summed over every process
//! of the stack (sampled every 5 s, averaged), also as PSS (shared pages split between the
//! processes sharing them, so a binary mapped by three agents counts once), and CPU seconds per
//! second (user + system, with reaped children, between the window's ends). Processes are found
//! from each stack's roots: `univrs up`'s tree; the control plane's supervisor, containerd,
//! kubelet and kube-proxy and containerd's shims (which are not containerd's children). The
//! containers' own processes (another PID namespace) are a row of their own, left out of the
//! totals, as is the control plane's supervisor (`univrs control-plane`, which runs
//! Kubernetes' binaries on both sides; on the Kubernetes side it is the test harness's build).
//! Kubernetes' pause processes (the Pods' sandboxes) count in its total: they are its runtime's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use univrs_tests::bench::{Better, SideBySide, comm, count, first_line, request_totals, tree};
use univrs_tests::kubelet::KubeletNode;
use univrs_tests::up::Up;
use univrs_tests::{free_port, kubectl_with, pids_where, repo_root, rss_mib, run as run_cmd};

/// Components that are not counted in a stack's total.
const NOT_COUNTED: &[&str] = &["containers (not counted)", "supervisor (not counted)"];
/// How long a stack settles before a window.
const SETTLE: Duration = Duration::from_secs(20);
/// How long the portal may take to turn Ready.
const READY_WAIT: Duration = Duration::from_secs(300);

/// One window's measures, by component: (processes, RSS MiB, PSS MiB, CPU s/s).
type Window = BTreeMap<&'static str, (usize, f64, f64, f64)>;

/// Both windows of one stack.
struct Stack {
    idle: Window,
    portal: Window,
    /// The API server's requests per second in each window, busiest first.
    requests: [Vec<(String, f64)>; 2],
}

/// The API server's request counts (`apiserver_request_total`) by verb and resource.
fn api_requests(kubeconfig: &Path) -> BTreeMap<String, f64> {
    let (_, out, _) = run_cmd(kubectl_with(kubeconfig).args(["get", "--raw", "/metrics"]));
    let mut counts = BTreeMap::new();
    for r in request_totals(&out) {
        *counts
            .entry(format!("{} {}", r.label("verb"), r.what()))
            .or_default() += r.count;
    }
    counts
}

/// Measures a window (see [`measure`]) and the API server's requests per second meanwhile.
fn measure_with_requests(
    window: Duration,
    roots: &dyn Fn() -> Vec<u32>,
    kubeconfig: &Path,
) -> (Window, Vec<(String, f64)>) {
    let before = api_requests(kubeconfig);
    let started = Instant::now();
    let w = measure(window, roots);
    let after = api_requests(kubeconfig);
    let secs = started.elapsed().as_secs_f64();
    let mut rates: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) / secs,
            )
        })
        .filter(|(_, r)| *r > 0.0)
        .collect();
    rates.sort_by(|a, b| b.1.total_cmp(&a.1));
    (w, rates)
}

/// CPU seconds of `pid` and of its children it reaped (utime, stime, cutime, cstime).
fn cpu_with_children(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // After the command name: state, ppid, …; utime is the 12th field, cstime the 15th.
    fields.get(11..15).map_or(0.0, |f| f.iter().sum::<f64>()) / 100.0
}

/// Proportional resident memory of `pid`, MiB (0 when it is gone).
fn pss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The PID namespace of `pid`.
fn pid_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Which part of a stack `pid` is.
fn component(pid: u32, own_ns: &Option<PathBuf>) -> &'static str {
    let c = comm(pid);
    if pid_ns(pid) != *own_ns {
        // Each runtime's own process in the container's namespace counts as the runtime's:
        // Kubernetes' pause (the sandbox), our shim's minimal init (PID 1, forwarding signals).
        return if c == "pause" {
            "pause (sandboxes)"
        } else if c.starts_with("youki:") {
            "container init (our shim's)"
        } else {
            "containers (not counted)"
        };
    }
    match c.as_str() {
        "etcd" => "etcd",
        "kube-apiserver" => "kube-apiserver",
        // comm is cut at 15 characters.
        "kube-controller" => "kube-controller-manager",
        "kube-scheduler" => "kube-scheduler",
        "kubelet" => "kubelet",
        "kube-proxy" => "kube-proxy",
        "containerd" => "containerd",
        "runc" => "shims",
        c if c.starts_with("containerd-shim") => "shims",
        "univrs" => {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let sub = cmdline
                .split(|b| *b == 0)
                .nth(1)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            match sub.as_str() {
                "up" => "univrs up",
                "control-plane" => "supervisor (not counted)",
                "controller" => "univrs controller",
                // `univrs up` joins its agents as machines would (`univrs join` runs the agent).
                "agent" | "join" => "agents",
                "shim" => "shims",
                _ => "other",
            }
        }
        _ => "other",
    }
}

/// Every process of a stack, from its roots.
fn processes(roots: &[u32]) -> Vec<u32> {
    let mut seen = HashSet::new();
    roots
        .iter()
        .flat_map(|r| tree(*r))
        .filter(|p| seen.insert(*p))
        .collect()
}

/// Measures the processes `roots()` gives over `window`: RSS and PSS sampled every 5 s and
/// averaged, CPU between the window's ends.
fn measure(window: Duration, roots: &dyn Fn() -> Vec<u32>) -> Window {
    let own_ns = pid_ns(std::process::id());
    let cpu0: HashMap<u32, f64> = processes(&roots())
        .into_iter()
        .map(|p| (p, cpu_with_children(p)))
        .collect();
    let started = Instant::now();
    let mut sums: BTreeMap<&'static str, (f64, f64)> = BTreeMap::new();
    let mut samples = 0;
    loop {
        for p in processes(&roots()) {
            let e = sums.entry(component(p, &own_ns)).or_default();
            e.0 += rss_mib(p);
            e.1 += pss_mib(p);
        }
        samples += 1;
        let left = window.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_secs(5)));
    }
    let took = started.elapsed().as_secs_f64();
    let mut out = Window::new();
    for p in processes(&roots()) {
        let e = out.entry(component(p, &own_ns)).or_default();
        e.0 += 1;
        e.3 += (cpu_with_children(p) - cpu0.get(&p).copied().unwrap_or(0.0)).max(0.0) / took;
    }
    for (c, (rss, pss)) in sums {
        let e = out.entry(c).or_default();
        e.1 = rss / samples as f64;
        e.2 = pss / samples as f64;
    }
    out
}

/// A window's totals (processes, RSS, PSS, CPU) over the components that count, or only
/// over `only` when given.
fn total(w: &Window, only: Option<&[&str]>) -> (usize, f64, f64, f64) {
    w.iter()
        .filter(|(c, _)| !NOT_COUNTED.contains(c) && only.is_none_or(|o| o.contains(c)))
        .fold((0, 0.0, 0.0, 0.0), |a, (_, v)| {
            (a.0 + v.0, a.1 + v.1, a.2 + v.2, a.3 + v.3)
        })
}

/// Waits until `check` says yes, or panics with what it said last.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, said) = check();
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not after {timeout:?} ({said})"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `univrs up --agents 2`, idle then running the portal.
fn univrs_stack(bin: &Path, window: Duration) -> Stack {
    let dir = PathBuf::from(format!("/tmp/vkf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = dir.with_extension("log");
    let mut cmd = Command::new(bin);
    cmd.arg("up").arg("--data-dir").arg(&dir).args([
        "--port",
        &free_port().to_string(),
        "--agents",
        "2",
    ]);
    let up = Up::spawn(cmd, log.clone());
    let root = up.proc.0.id();
    let roots = move || vec![root];
    std::thread::sleep(SETTLE);
    let (idle, idle_requests) = measure_with_requests(window, &roots, &up.kubeconfig);

    let portal = repo_root().join("deploy/examples/community-portal.yaml");
    let (ok, _, err) = run_cmd(
        kubectl_with(&up.kubeconfig)
            .arg("apply")
            .arg("-f")
            .arg(&portal),
    );
    assert!(ok, "kubectl apply {}: {err}", portal.display());
    wait_for("the portal's three instances Ready", READY_WAIT, || {
        let (_, out, err) = run_cmd(kubectl_with(&up.kubeconfig).args([
            "get",
            "workload",
            "community-portal",
            "-n",
            "community-center",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]));
        (out.trim() == "3", format!("readyReplicas {out:?} {err}"))
    });
    std::thread::sleep(SETTLE);
    let (busy, busy_requests) = measure_with_requests(window, &roots, &up.kubeconfig);
    // Ctrl-C: the agents remove their containers, then everything stops.
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&log);
    Stack {
        idle,
        portal: busy,
        requests: [idle_requests, busy_requests],
    }
}

/// The portal as Kubernetes runs it: a Deployment of the same image, resources and probes,
/// and a NodePort Service where the Workload's `expose` serves.
const PORTAL: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: community-center
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: community-portal
  namespace: community-center
spec:
  replicas: 3
  selector:
    matchLabels: {app: portal}
  template:
    metadata:
      labels: {app: portal, tier: frontend}
    spec:
      containers:
        - name: web
          image: univrs.local/demo:latest
          imagePullPolicy: Never
          ports:
            - name: http
              containerPort: 8080
          resources:
            requests: {cpu: 250m, memory: 64Mi}
            limits: {cpu: 500m, memory: 128Mi}
          readinessProbe:
            httpGet: {path: /, port: 8080}
            periodSeconds: 5
          livenessProbe:
            tcpSocket: {port: 8080}
            periodSeconds: 10
---
apiVersion: v1
kind: Service
metadata:
  name: community-portal
  namespace: community-center
spec:
  type: NodePort
  selector: {app: portal}
  ports:
    - name: web
      port: 8080
      targetPort: http
      nodePort: 30080
"#;

/// The kubelet node, idle then running the portal.
fn kubernetes_stack(window: Duration) -> Stack {
    let node = KubeletNode::start("vk-footprint").unwrap_or_else(|e| panic!("{e:#}"));
    let socket = node.socket().display().to_string();
    let mut fixed: Vec<u32> = node.pids().into_iter().map(|(_, p)| p).collect();
    fixed.extend(node.cp.supervisor_pid());
    let roots = move || {
        // containerd's shims are reparented away from it: found by its socket.
        let mut r = fixed.clone();
        r.extend(pids_where(|p| {
            comm(p).starts_with("containerd-shim")
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&socket))
        }));
        r
    };
    std::thread::sleep(SETTLE);
    let (idle, idle_requests) = measure_with_requests(window, &roots, &node.cp.kubeconfig);

    let layout = univrs_node_agent::demo_image::build(&node.dir.join("demo-layout")).unwrap();
    node.import(&layout).unwrap();
    let file = node.dir.join("portal.yaml");
    std::fs::write(&file, PORTAL).unwrap();
    let (ok, _, err) = run_cmd(node.cp.kubectl().arg("apply").arg("-f").arg(&file));
    assert!(ok, "kubectl apply the portal: {err}");
    wait_for("the portal's three Pods Ready", READY_WAIT, || {
        let (_, out, err) = run_cmd(node.cp.kubectl().args([
            "get",
            "deployment",
            "community-portal",
            "-n",
            "community-center",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]));
        (
            out.trim() == "3",
            format!("readyReplicas {out:?} {err}\n{}", node.logs(10)),
        )
    });
    std::thread::sleep(SETTLE);
    let (busy, busy_requests) = measure_with_requests(window, &roots, &node.cp.kubeconfig);
    drop(node);
    Stack {
        idle,
        portal: busy,
        requests: [idle_requests, busy_requests],
    }
}

/// Runs the part and prints its tables.
pub fn run(bin: &Path) {
    let window = Duration::from_secs(count("UNIVRS_BENCH_WINDOW", 30) as u64);
    let u = univrs_stack(bin, window);
    let k = kubernetes_stack(window);

    let settings = format!(
        "Univrs: `univrs up --agents 2` (three agents, one controller, the local control plane) \
         with its defaults; Kubernetes: the same control plane with kube-scheduler, kubelet \
         ({}), kube-proxy, containerd ({}) and runc; each alone, idle then running \
         the portal's three replicas (Univrs: deploy/examples/community-portal.yaml; \
         Kubernetes: a Deployment of the same image, resources and probes and a NodePort \
         Service); {} s windows after {} s settling; RSS and PSS averaged over the window, CPU \
         seconds per second; containers' own processes and the control plane's supervisor not \
         counted; node side: agents, shims and their inits versus kubelet, kube-proxy, \
         containerd, shims and pause",
        first_line(
            Command::new(univrs_tests::upstream_node_bin_dir().join("kubelet")).arg("--version")
        ),
        first_line(Command::new("containerd").arg("--version")),
        window.as_secs(),
        SETTLE.as_secs(),
    );
    let node_side_u: &[&str] = &["agents", "shims", "container init (our shim's)", "other"];
    let node_side_k: &[&str] = &[
        "kubelet",
        "kube-proxy",
        "containerd",
        "shims",
        "pause (sandboxes)",
        "other",
    ];
    let mut t = SideBySide::new(
        "Footprint: the whole stack, idle and running the portal",
        &settings,
    );
    for (label, (uw, kw)) in [
        ("idle", (&u.idle, &k.idle)),
        ("portal ×3", (&u.portal, &k.portal)),
    ] {
        let (ut, kt) = (total(uw, None), total(kw, None));
        t.row(
            &format!("RSS, whole stack, {label}"),
            ut.1,
            kt.1,
            "MiB",
            Better::Lower,
        );
        t.row(
            &format!("PSS, whole stack, {label}"),
            ut.2,
            kt.2,
            "MiB",
            Better::Lower,
        );
        t.row(
            &format!("CPU, whole stack, {label}"),
            ut.3,
            kt.3,
            "CPU s/s",
            Better::Lower,
        );
        let (un, kn) = (total(uw, Some(node_side_u)), total(kw, Some(node_side_k)));
        t.row(
            &format!("RSS, node side only, {label}"),
            un.1,
            kn.1,
            "MiB",
            Better::Lower,
        );
        t.row(
            &format!("CPU, node side only, {label}"),
            un.3,
            kn.3,
            "CPU s/s",
            Better::Lower,
        );
        t.note(
            &format!("processes counted, {label}"),
            &ut.0.to_string(),
            &kt.0.to_string(),
        );
    }
    let containers = |w: &Window| w.get("containers (not counted)").map_or(0.0, |v| v.1);
    t.note(
        "the containers' own processes, RSS (not counted)",
        &format!("{:.1} MiB", containers(&u.portal)),
        &format!("{:.1} MiB", containers(&k.portal)),
    );
    t.print();

    println!();
    println!(
        "| stack | component | processes (portal) | RSS idle MiB | RSS portal MiB | PSS portal MiB | CPU idle s/s | CPU portal s/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, s) in [("Univrs", &u), ("Kubernetes", &k)] {
        let comps: std::collections::BTreeSet<&str> =
            s.idle.keys().chain(s.portal.keys()).copied().collect();
        for c in comps {
            let i = s.idle.get(c).copied().unwrap_or_default();
            let p = s.portal.get(c).copied().unwrap_or_default();
            println!(
                "| {name} | {c} | {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} |",
                p.0, i.1, p.1, p.2, i.3, p.3
            );
        }
        let (i, p) = (total(&s.idle, None), total(&s.portal, None));
        println!(
            "| {name} | **total counted** | {} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} |",
            p.0, i.1, p.1, p.2, i.3, p.3
        );
    }

    println!();
    println!("| stack | window | API requests per s | busiest (per s) |");
    println!("|---|---|---|---|");
    for (name, s) in [("Univrs", &u), ("Kubernetes", &k)] {
        for (label, r) in ["idle", "portal ×3"].iter().zip(&s.requests) {
            let all: f64 = r.iter().map(|(_, v)| v).sum();
            let top: Vec<String> = r
                .iter()
                .take(6)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            println!("| {name} | {label} | {all:.2} | {} |", top.join(", "));
        }
    }
}

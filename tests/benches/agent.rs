//! Node agent benchmark through the real API server and real containers (printed, never
//! asserted):
//!
//! 1. **Raw runtime**: the demo image's root filesystem (from the agent's own image store)
//!    started by the `youki` CLI (`create` + `start`, youki 0.7.0, the release whose
//!    libcontainer the agent uses) and by the agent's shim (`univrs shim`, libcontainer with
//!    the agent's spec: seccomp, capabilities, cgroup limits), no agent involved.
//! 2. **Placed to running**: one `univrs agent` and the controller (both optimized builds);
//!    single-replica Workloads of the same image, one at a time, each timed from the moment a
//!    watch (one, open for all runs) sees the controller's placement to the moment it sees the
//!    agent's `phase: Running` (and Ready), then deleted and cleaned up before the next. The first
//!    also makes the node's bridge and nat chain and imports the image, so it is shown apart.
//! 3. **Idle memory**: the agent's resident memory after it registered and sat idle, with no
//!    instance (and again after the runs, its caches warm).
//! 4. **Gossip across agents**: N agents (20 by default) on loopback, each on its own Node; each
//!    signs and publishes credit transfers through its TLS API in turn, and every other agent's
//!    `/api/credits` shows when it heard each one. Propagation = heard − signed, both stamped by
//!    the agents on the same clock, through real swarms and the cluster checks of every hop.
//!
//! Run: `cargo bench -p univrs-tests --bench agent` (root; `UNIVRS_BENCH_RUNS`, default 20,
//! `UNIVRS_BENCH_AGENTS`, default 20, `UNIVRS_BENCH_TRANSFERS`, default 60;
//! `UNIVRS_BENCH_BIN` runs a given `univrs` binary; `UNIVRS_BENCH_YOUKI` a given youki, which is
//! otherwise installed once into `.tools/youki` with `cargo install`).

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use univrs_api::Node;
use univrs_tests::agent::AgentProc;
use univrs_tests::bench::containers::{
    ApiCreds, DemoImage, WAIT, raw_shim, ready_node, start_agent, workloads_one_at_a_time,
};
use univrs_tests::bench::{Summary, count, ms};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller_bin};
use univrs_tests::{ControlPlane, build_univrs, repo_root, rss_mib, run};

const NS: &str = "bench-agent";

/// The youki CLI: `UNIVRS_BENCH_YOUKI`, or youki 0.7.0 (cgroups v1 and v2, seccomp) installed
/// once into `.tools/youki`.
fn youki() -> PathBuf {
    if let Some(p) = std::env::var_os("UNIVRS_BENCH_YOUKI") {
        return PathBuf::from(p);
    }
    let root = repo_root().join(".tools/youki");
    let bin = root.join("bin/youki");
    if !bin.exists() {
        eprintln!("installing youki 0.7.0 into {} (once)", root.display());
        let ok = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "install",
                "youki",
                "--version",
                "=0.7.0",
                "--locked",
                "--no-default-features",
                "--features",
                "v1,v2,seccomp",
                "--root",
            ])
            .arg(&root)
            .status()
            .expect("running cargo install youki");
        assert!(ok.success(), "cargo install youki failed");
    }
    bin
}

/// `youki create` + `youki start` of the demo image, `runs` times (each deleted after).
fn raw_youki(youki: &Path, demo: &DemoImage, dir: &Path, runs: usize) -> Vec<f64> {
    let state = dir.join("youki-state");
    let mut times = Vec::new();
    for i in 0..runs {
        let id = format!("ub-youki-{i}");
        let rootfs = demo.store.prepare_rootfs(&demo.image, &id).unwrap();
        let bundle = dir.join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        let (ok, _, err) = run(Command::new(youki).args(["spec", "--bundle"]).arg(&bundle));
        assert!(ok, "youki spec: {err}");
        let cfg_path = bundle.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = demo.args.clone().into();
        cfg["process"]["env"] = demo
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .into();
        cfg["root"] = serde_json::json!({"path": rootfs, "readonly": false});
        cfg["hostname"] = id.clone().into();
        cfg["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 64 * 1024 * 1024},
            "cpu": {"quota": 25_000, "period": 100_000}
        });
        cfg["linux"]["cgroupsPath"] = format!("/univrs-bench/{id}").into();
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let youki_cmd = |args: &[&str]| {
            let mut c = Command::new(youki);
            c.arg("--root").arg(&state).args(args);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        let t = Instant::now();
        let created = youki_cmd(&["create", "--bundle", bundle.to_str().unwrap(), &id])
            .status()
            .unwrap();
        let started = youki_cmd(&["start", &id]).status().unwrap();
        times.push(ms(t.elapsed()));
        assert!(
            created.success() && started.success(),
            "youki create/start of {id}"
        );
        let _ = youki_cmd(&["kill", &id, "KILL"]).status();
        // The container must have stopped before a forced delete can remove its cgroup.
        for _ in 0..100 {
            if youki_cmd(&["delete", &id])
                .status()
                .is_ok_and(|s| s.success())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = youki_cmd(&["delete", "--force", &id]).status();
        demo.store.remove_rootfs(&id).unwrap();
        let _ = std::fs::remove_dir_all(&bundle);
    }
    times
}

/// (anonymous, file-backed) resident memory of `pid` in MiB, from smaps_rollup: the heap and
/// stacks apart from the pages of the binary itself.
fn rss_parts(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |field: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (rss, anon) = (kib("Rss:"), kib("Anonymous:"));
    (anon / 1024.0, (rss - anon) / 1024.0)
}

fn pid_of(agent: &AgentProc) -> u32 {
    agent.child.as_ref().expect("the agent runs").0.id()
}

/// The nanoseconds an agent stamped in the default id `<node>-<nanoseconds>` it signed.
fn signed_at(id: &str) -> Option<i128> {
    id.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

/// Gossip propagation across `agents` (the first one given, the rest started here).
async fn gossip(
    bin: &Path,
    cp: &ControlPlane,
    nodes: &Api<Node>,
    first: (AgentProc, Node),
    creds: &ApiCreds,
    n_agents: usize,
    transfers: usize,
) -> (Vec<f64>, usize, usize, Vec<f64>) {
    let bootstrap = first.1.spec.multiaddrs[0].clone();
    let mut apis = vec![creds.api(&first.1)];
    let mut agents = vec![first.0];
    for i in 1..n_agents {
        let name = format!("ub-{i:02}");
        let cidr = format!("10.78.{i}.0/24");
        agents.push(start_agent(bin, cp, &name, &cidr, creds, Some(&bootstrap)));
    }
    for a in agents.iter().skip(1) {
        apis.push(creds.api(&ready_node(nodes, &a.name).await));
    }
    // Every agent has a few peers: gossipsub's mesh forms over them.
    let want = 4.min(n_agents - 1) as u64;
    for api in &apis {
        eventually(&format!("{} has {want} peers", api.url), WAIT, async || {
            let p = api.get_json("/api/peers");
            let c = p["connected"].as_u64().unwrap_or(0);
            ((c >= want).then_some(()), format!("{c} connected"))
        })
        .await;
    }
    // Let the gossipsub meshes settle (heartbeats graft peers).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss: Vec<f64> = agents.iter().map(|a| rss_mib(pid_of(a))).collect();

    let mut sent: BTreeMap<String, (usize, i128)> = BTreeMap::new();
    for k in 0..transfers {
        let from = k % n_agents;
        let to = &agents[(from + 1) % n_agents].name;
        let body = format!(r#"{{"to": "node/{to}", "amount": {}}}"#, k + 1);
        let (code, out) = apis[from].post("/api/credits/transfers", &body, true);
        assert_eq!(code, "202", "POST transfer from agent {from}: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let at = signed_at(&id).expect("a default transfer id ends in nanoseconds");
        sent.insert(id, (from, at));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut lat = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let credits = api.get_json("/api/credits");
        for t in credits["transfersHeard"].as_array().unwrap() {
            let Some((from, at)) = t["id"].as_str().and_then(|id| sent.get(id)) else {
                continue;
            };
            if *from == i {
                continue;
            }
            let heard: Timestamp = t["heardAt"].as_str().unwrap().parse().unwrap();
            lat.push((heard.as_nanosecond() - at) as f64 / 1e6);
        }
    }
    let delivered = lat.len();
    drop(agents);
    (lat, delivered, transfers * (n_agents - 1), rss)
}

fn main() {
    let runs = count("UNIVRS_BENCH_RUNS", 20);
    let n_agents = count("UNIVRS_BENCH_AGENTS", 20).max(2);
    let transfers = count("UNIVRS_BENCH_TRANSFERS", 60);
    let bin = std::env::var_os("UNIVRS_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| build_univrs(true));
    let youki = youki();
    let dir = PathBuf::from(format!("/tmp/ub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // 1. The raw runtime, before anything else loads the machine.
    let demo = DemoImage::new(&dir);
    let youki_ms = raw_youki(&youki, &demo, &dir, runs);
    let shim_ms = raw_shim(&bin, &demo, &dir, runs);

    let cp = ControlPlane::shared();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = cp.client().await.unwrap();
        for ns in [NS, LEASE_NS] {
            ensure_namespace(&client, ns).await;
        }
        let _controller = start_controller_bin(cp, &bin);
        let nodes: Api<Node> = Api::all(client.clone());
        let creds = ApiCreds::new(&dir);

        // 2 and 3: one agent, idle, then placing one Workload at a time.
        let agent = start_agent(&bin, cp, "ub-00", "10.78.0.0/24", &creds, None);
        let node = ready_node(&nodes, "ub-00").await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let idle_rss = rss_mib(pid_of(&agent));
        let (idle_anon, idle_file) = rss_parts(pid_of(&agent));
        let timed = workloads_one_at_a_time(&client, NS, "ub-00", &agent, runs).await;
        let running: Vec<f64> = timed.iter().map(|t| t.placed_to_running()).collect();
        let ready: Vec<f64> = timed.iter().map(|t| t.placed_to_ready()).collect();
        let created: Vec<f64> = timed.iter().map(|t| t.sent_to_running()).collect();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let warm_rss = rss_mib(pid_of(&agent));

        // 4. Gossip across agents.
        let (lat, delivered, expected, rss) = gossip(
            &bin,
            cp,
            &nodes,
            (agent, node),
            &creds,
            n_agents,
            transfers,
        )
        .await;

        let (y, s) = (Summary::of(&youki_ms), Summary::of(&shim_ms));
        // The node's first instance also makes its bridge and nat chain and imports the image:
        // shown apart, the rest are the steady state.
        let (r, rd) = (Summary::of(&running[1..]), Summary::of(&ready[1..]));
        println!();
        println!("| path | runs | p50 ms | p99 ms | min ms | max ms |");
        println!("|---|---|---|---|---|---|");
        println!("{}", y.row("raw youki 0.7.0 create + start"));
        println!("{}", s.row("agent's shim create + start (libcontainer)"));
        println!("{}", r.row("placed → Running (univrs agent)"));
        println!("{}", rd.row("placed → Ready (univrs agent)"));
        println!("{}", Summary::of(&created[1..]).row("created → Running"));
        println!(
            "| the node's first instance: placed → Running (bridge, nat chain, image import) | 1 | {:.1} | | | |",
            running[0]
        );
        println!();
        println!(
            "placed → Running / raw youki: p50 {:.2}×, p99 {:.2}×",
            r.p50 / y.p50,
            r.p99 / y.p99
        );
        let g = Summary::of(&lat);
        let rss_s = Summary::of(&rss);
        println!();
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| idle agent RSS, no instance | {idle_rss:.1} MiB ({idle_anon:.1} anonymous, {idle_file:.1} the binary's pages) |"
        );
        println!("| agent RSS after {runs} runs, idle again | {warm_rss:.1} MiB |");
        println!(
            "| RSS of {n_agents} idle agents in a mesh (median / max) | {:.1} / {:.1} MiB |",
            rss_s.p50, rss_s.max
        );
        println!(
            "| gossip propagation across {n_agents} agents, p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
            g.p50, g.p99, g.max
        );
        println!(
            "| deliveries | {delivered} of {expected} ({:.1}%) |",
            100.0 * delivered as f64 / expected.max(1) as f64
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

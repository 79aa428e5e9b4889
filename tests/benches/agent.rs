//! Node agent benchmark through the real API server and real containers (printed, never
//! asserted):
//!
//! 1. **Raw runtime**: the demo image's root filesystem (from the agent's own image store)
//!    started by the `youki` CLI (`create` + `start`, youki 0.7.0, the release whose
//!    libcontainer the agent uses) and by the agent's shim (`univrs shim`, libcontainer with
//!    the agent's spec: seccomp, capabilities, cgroup limits), no agent involved.
//! 2. **Placed to running**: one `univrs agent` and the controller (both optimized builds);
//!    single-replica Workloads of the same image, one at a time, each timed from the moment a
//!    watch sees the controller's placement to the moment the same watch sees the agent's
//!    `phase: Running` (and Ready), then deleted and cleaned up before the next. The first
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

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use univrs_api::resources::workload::InstancePhase;
use univrs_api::{Node, Workload};
use univrs_node_agent::image::ImageStore;
use univrs_node_agent::runtime::{ContainerConfig, RuntimeClient};
use univrs_tests::agent::{AgentApi, AgentProc, api_url};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller_bin};
use univrs_tests::bench::{Summary, count, ms};
use univrs_tests::{ControlPlane, build_univrs, repo_root, rss_mib, run};

const NS: &str = "bench-agent";
const TOKEN: &str = "bench-agent-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(120);

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

/// The demo image, imported into a store of its own, as the agent does.
struct DemoImage {
    store: ImageStore,
    image: univrs_node_agent::image::Image,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl DemoImage {
    fn new(dir: &Path) -> Self {
        let layout = univrs_node_agent::demo_image::build(&dir.join("demo-layout")).unwrap();
        let store = ImageStore::open(dir.join("images")).unwrap();
        let image = store.import_oci_layout(&layout, "latest").unwrap();
        let cfg = &image.config;
        let args: Vec<String> = cfg
            .entrypoint
            .iter()
            .chain(cfg.cmd.iter())
            .cloned()
            .collect();
        let env = cfg.env.clone();
        Self {
            store,
            image,
            args,
            env,
        }
    }
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

/// Create + start of the demo image through the agent's shim (libcontainer), `runs` times.
fn raw_shim(bin: &Path, demo: &DemoImage, dir: &Path, runs: usize) -> Vec<f64> {
    let client = RuntimeClient::new(bin, dir.join("shim-state"), "ub-shim").unwrap();
    let mut times = Vec::new();
    for i in 0..runs {
        let id = format!("ub-shim-{i}");
        let rootfs = demo.store.prepare_rootfs(&demo.image, &id).unwrap();
        let mut cfg = ContainerConfig::new(id.clone(), rootfs, demo.args.clone());
        cfg.hostname = Some(id.clone());
        cfg.env = demo.env.clone();
        cfg.cpu_millis = Some(250);
        cfg.memory_bytes = Some(64 * 1024 * 1024);
        let t = Instant::now();
        let handle = client.start(&cfg, Duration::from_secs(1)).unwrap();
        times.push(ms(t.elapsed()));
        client.delete(&id).unwrap();
        drop(handle);
        demo.store.remove_rootfs(&id).unwrap();
    }
    client.remove_cgroup_parent(true);
    times
}

/// A single-replica Workload of the demo image for the agent `node`.
fn workload(name: &str, node: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": {"replicas": 1, "nodeSelector": {"bench": node}, "containers": [{"name": "web",
            "image": univrs_node_agent::demo_image::DEMO_REFERENCE,
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

/// Times from placement seen to Running (and to Ready) seen, for `runs` Workloads one at a time.
async fn placed_to_running(
    client: &kube::Client,
    node: &str,
    agent: &AgentProc,
    runs: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let (mut running, mut ready, mut created_to_running) = (Vec::new(), Vec::new(), Vec::new());
    let containers = agent.data_dir.join("runtime/containers");
    for i in 0..runs {
        let name = format!("ptr-{i:03}");
        let mut events = std::pin::pin!(
            watcher(
                api.clone(),
                watcher::Config::default().fields(&format!("metadata.name={name}"))
            )
            .default_backoff()
            .applied_objects()
        );
        let created = Instant::now();
        api.create(&PostParams::default(), &workload(&name, node))
            .await
            .unwrap();
        let (mut placed, mut run_at) = (None, None);
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.next()).await {
            let Ok(w) = ev else { continue };
            let Some(inst) = w.status.as_ref().and_then(|s| s.instances.first()) else {
                continue;
            };
            if inst.node.is_some() && placed.is_none() {
                placed = Some(Instant::now());
            }
            if inst.phase == Some(InstancePhase::Running) && run_at.is_none() {
                run_at = Some(Instant::now());
            }
            if inst.ready == Some(true) {
                let now = Instant::now();
                let p = placed.unwrap_or(now);
                let r = run_at.unwrap_or(now);
                running.push(ms(r - p));
                ready.push(ms(now - p));
                created_to_running.push(ms(r - created));
                break;
            }
        }
        assert_eq!(
            running.len(),
            i + 1,
            "workload {name} did not turn Ready within {WAIT:?}; agent log:\n{}",
            agent.log_text()
        );
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        eventually(&format!("{name} cleaned up"), WAIT, async || {
            let gone = api.get_opt(&name).await.unwrap().is_none();
            let left = std::fs::read_dir(&containers)
                .map(|d| d.count())
                .unwrap_or(0);
            (
                (gone && left == 0).then_some(()),
                format!("workload gone {gone}, containers {left}"),
            )
        })
        .await;
    }
    (running, ready, created_to_running)
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

/// The agents' TLS and token files, shared by all.
struct ApiCreds {
    cert: PathBuf,
    key: PathBuf,
    token: PathBuf,
}

impl ApiCreds {
    fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let me = Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            token: dir.join("token"),
        };
        std::fs::write(&me.cert, c.cert.pem()).unwrap();
        std::fs::write(&me.key, c.signing_key.serialize_pem()).unwrap();
        std::fs::write(&me.token, TOKEN).unwrap();
        for f in [&me.key, &me.token] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        me
    }

    fn flags(&self) -> Vec<String> {
        [
            "--api-tls-cert",
            self.cert.to_str().unwrap(),
            "--api-tls-key",
            self.key.to_str().unwrap(),
            "--api-token-file",
            self.token.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The TLS API of the agent of `node`, with the CA and the token.
    fn api(&self, node: &Node) -> AgentApi {
        AgentApi {
            url: api_url(node),
            flags: vec![
                "--cacert".into(),
                self.cert.display().to_string(),
                "-H".into(),
                format!("Authorization: Bearer {TOKEN}"),
            ],
        }
    }
}

/// Starts an agent for the benchmark: its own pod CIDR (so twenty never collide), the label
/// `bench=<name>`, the TLS API.
fn start_agent(
    bin: &Path,
    cp: &ControlPlane,
    name: &str,
    i: usize,
    creds: &ApiCreds,
    bootstrap: Option<&str>,
) -> AgentProc {
    let mut extra = creds.flags();
    extra.extend([
        "--label".into(),
        format!("bench={name}"),
        "--pod-cidr".into(),
        format!("10.78.{i}.0/24"),
    ]);
    if let Some(b) = bootstrap {
        extra.extend(["--bootstrap".into(), b.into()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    AgentProc::start_bin(bin, &cp.kubeconfig, &cp.data_dir, name, &extra)
}

/// Waits until `name`'s Node is Ready and publishes its API and mesh address.
async fn ready_node(nodes: &Api<Node>, name: &str) -> Node {
    eventually(&format!("Node {name} Ready"), WAIT, async || {
        let n = nodes.get_opt(name).await.ok().flatten();
        let ok = n.as_ref().is_some_and(|n| {
            n.annotations().contains_key("univrs.io/agent-api")
                && !n.spec.multiaddrs.is_empty()
                && n.status
                    .as_ref()
                    .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
        });
        (n.filter(|_| ok), String::new())
    })
    .await
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
        agents.push(start_agent(bin, cp, &name, i, creds, Some(&bootstrap)));
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
        let agent = start_agent(&bin, cp, "ub-00", 0, &creds, None);
        let node = ready_node(&nodes, "ub-00").await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let idle_rss = rss_mib(pid_of(&agent));
        let (idle_anon, idle_file) = rss_parts(pid_of(&agent));
        let (running, ready, created) = placed_to_running(&client, "ub-00", &agent, runs).await;
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

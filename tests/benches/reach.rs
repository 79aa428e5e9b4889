//! Reaching a Workload through its exposed port (printed, never asserted).
//!
//! Four machines as network namespaces (`univrs_tests::nat`): a public center and three homes
//! behind routers, two port-preserving (hole punching gets through) and one symmetric (it
//! stays relayed through the center). Each runs a real `univrs agent` (optimized build) with
//! one Workload of the demo image (busybox httpd) pinned to it, each exposing its own port.
//! From home1, one request at a time (a new TCP connection each, `GET /`, read to the end):
//!
//! - **direct**: to home1's container at its own address (no agent in the way);
//! - **same node**: home1's exposed port, its replica on home1;
//! - **cross-node, direct**: the center's Workload's port, on home1 (home1 dialed the center);
//! - **cross-node, hole-punched**: home2's, over the connection DCUtR punched;
//! - **cross-node, relayed**: home3's (symmetric NAT), through the center's relay.
//!
//! Each row: requests, requests per second (one at a time), p50 and p99, and p50 over direct.
//! Run: `cargo bench -p univrs-tests --bench reach` (root; `UNIVRS_BENCH_REQUESTS`, default
//! 1000 per path; `UNIVRS_BENCH_BIN` runs a given `univrs` binary).

use kube::api::{Api, PostParams};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use univrs_api::{Node, Workload};
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller_bin};
use univrs_tests::nat::{Internet, Nat, WAN};
use univrs_tests::{ControlPlane, build_univrs, quantile};

const NS: &str = "bench-reach";
const WAIT: Duration = Duration::from_secs(180);
const MACHINES: [&str; 4] = ["center", "home1", "home2", "home3"];

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One request (`univrs_tests::http_get`: connect, `GET /`, read to the end), timed.
fn request(to: std::net::SocketAddr) -> Result<Duration, String> {
    let t = Instant::now();
    let body = univrs_tests::http_get(&to.to_string())?;
    if !body.contains("served by") {
        return Err(format!("not the portal: {body:?}"));
    }
    Ok(t.elapsed())
}

/// A path measured: its name, the connection it rides, and its latencies (ms) and wall time.
struct Measured {
    what: &'static str,
    connection: String,
    ms: Vec<f64>,
    wall: Duration,
}

fn workload(machine: &str, port: u16) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": format!("on-{machine}")},
        "spec": {"replicas": 1, "nodeSelector": {"bench-machine": machine},
            "expose": [{"name": "web", "port": port, "targetPort": 8080}],
            "containers": [{"name": "web", "image": "univrs.local/demo:latest",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]},
    }))
    .unwrap()
}

/// How home1 is connected to `machine`'s node, once it is connected at all.
async fn connection(nodes: &Api<Node>, machine: &str, want: &str) -> String {
    let node = format!("rb-{machine}");
    let r = tokio::time::timeout(WAIT, async {
        loop {
            let k = nodes
                .get("rb-home1")
                .await
                .ok()
                .and_then(|n| n.status?.observations)
                .map(|o| o.peers)
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.node == node && p.connected)
                .and_then(|p| p.connection)
                .map(|k| format!("{k:?}"));
            if let Some(k) = k.filter(|k| k == want) {
                return k;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    r.unwrap_or_else(|_| format!("not {want} after {WAIT:?}"))
}

fn main() {
    let n = count("UNIVRS_BENCH_REQUESTS", 1000).max(10);
    let bin = std::env::var_os("UNIVRS_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| build_univrs(true));
    let mut net = Internet::build(&[Nat::PortPreserving, Nat::PortPreserving, Nat::Symmetric]);
    net.add_public("visitor", 9);
    let cp = ControlPlane::shared();
    let api_server: std::net::SocketAddr = format!("127.0.0.1:{}", cp.port).parse().unwrap();
    for m in MACHINES {
        net.forward(m, cp.port, api_server);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let client = cp.client().await.unwrap();
        for ns in [NS, LEASE_NS] {
            ensure_namespace(&client, ns).await;
        }
        let label: Vec<String> = MACHINES
            .iter()
            .map(|m| format!("bench-machine={m}"))
            .collect();
        let agents: Vec<AgentProc> = MACHINES
            .iter()
            .zip(&label)
            .map(|(m, l)| {
                AgentProc::start_in(
                    &bin,
                    cp,
                    &net.netns_path(m),
                    &format!("rb-{m}"),
                    &[
                        "--cpu",
                        "2",
                        "--memory",
                        "2Gi",
                        "--label",
                        l,
                        "--listen",
                        "/ip4/0.0.0.0/tcp/0",
                    ],
                )
            })
            .collect();
        let _controller = start_controller_bin(cp, &bin);
        let api: Api<Workload> = Api::namespaced(client.clone(), NS);
        let base = univrs_tests::free_host_port().min(32760);
        let ports: Vec<u16> = (0..MACHINES.len() as u16).map(|i| base + i).collect();
        for (m, port) in MACHINES.iter().zip(&ports) {
            api.create(&PostParams::default(), &workload(m, *port))
                .await
                .unwrap();
        }
        let mut home1_ip = String::new();
        for m in MACHINES {
            let ip = eventually(&format!("on-{m} ready"), WAIT, async || {
                let w = api.get(&format!("on-{m}")).await.unwrap();
                let i = w.status.and_then(|s| s.instances.into_iter().next());
                let ready = i
                    .clone()
                    .filter(|i| i.ready == Some(true))
                    .and_then(|i| i.ip);
                (ready, format!("{i:?}"))
            })
            .await;
            if m == "home1" {
                home1_ip = ip;
            }
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let kinds = [
            connection(&nodes, "center", "Direct").await,
            connection(&nodes, "home2", "HolePunched").await,
            connection(&nodes, "home3", "Relayed").await,
        ];
        let home1 = "192.168.1.2";
        let at = |p: u16| -> std::net::SocketAddr { format!("{home1}:{p}").parse().unwrap() };
        let paths: Vec<(&'static str, String, std::net::SocketAddr)> = vec![
            (
                "direct to the container",
                "-".into(),
                format!("{home1_ip}:8080").parse().unwrap(),
            ),
            ("same node", "-".into(), at(ports[1])),
            ("cross-node, direct", kinds[0].clone(), at(ports[0])),
            ("cross-node, hole-punched", kinds[1].clone(), at(ports[2])),
            ("cross-node, relayed", kinds[2].clone(), at(ports[3])),
        ];
        let measured = net
            .run_on("home1", move || {
                let mut out = Vec::new();
                for (what, connection, to) in paths {
                    // Warm up: the mesh streams' first use, the replica's page cache.
                    for _ in 0..20 {
                        let _ = request(to);
                    }
                    let start = Instant::now();
                    let mut ms = Vec::with_capacity(n);
                    let mut errors = 0;
                    for _ in 0..n {
                        match request(to) {
                            Ok(d) => ms.push(d.as_secs_f64() * 1000.0),
                            Err(e) => {
                                errors += 1;
                                if errors <= 3 {
                                    eprintln!("{what}: {e}");
                                }
                            }
                        }
                    }
                    out.push(Measured {
                        what,
                        connection: if errors > 0 {
                            format!("{connection} ({errors} failed)")
                        } else {
                            connection
                        },
                        ms,
                        wall: start.elapsed(),
                    });
                }
                out
            })
            .join()
            .expect("the measuring thread");
        drop(agents);
        measured
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n## Reaching a Workload through its exposed port (from home1; {n} requests per path, one at a time)"
    );
    println!(
        "machine: {} cores, load {}; center {WAN}.10, homes behind routers (home1, home2 port-preserving; home3 symmetric)\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| path | connection | requests | req/s | p50 ms | p99 ms | p50 over direct |");
    println!("|---|---|---|---|---|---|---|");
    let mut direct = None;
    for m in &results {
        let mut v = m.ms.clone();
        let (p50, p99) = (quantile(&mut v, 0.5), quantile(&mut v, 0.99));
        let base = *direct.get_or_insert(p50);
        println!(
            "| {} | {} | {} | {:.0} | {:.3} | {:.3} | {:+.3} ms |",
            m.what,
            m.connection,
            m.ms.len(),
            m.ms.len() as f64 / m.wall.as_secs_f64(),
            p50,
            p99,
            p50 - base
        );
    }
}

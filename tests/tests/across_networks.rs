//! Across networks with real agents: three machines as network namespaces (a public "center",
//! two homes behind their own NAT routers, one port-preserving and one symmetric) and a
//! visitor on the internet who can reach only the center. Each machine runs a real
//! `univrs agent` (its containers on its own bridge, its mesh through its router); the portal
//! example (`deploy/examples/community-portal.yaml`, applied with kubectl) exposes port 30080
//! with three replicas, one per machine.
//!
//! - Every machine answers on its own address, and the visitor through the center.
//! - With the center's and home1's replicas frozen (their containers' cgroups), new
//!   connections go to home2's replica: from the visitor through the center (a direct mesh
//!   connection) and from home1 through its relayed connection to home2.
//! - With home2's whole machine frozen (its agent stopped) as well, a connection to the center
//!   waits for it once, then goes to home1's replica, and later ones do not wait.
//! - At zero replicas, a connection is closed at once.

use kube::api::{Api, Patch, PatchParams};
use std::time::{Duration, Instant};
use univrs_api::Workload;
use univrs_tests::ControlPlane;
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller};
use univrs_tests::nat::{Internet, Nat, WAN};

const NS: &str = "community-center";
const PORTAL: &str = "community-portal";
const WAIT: Duration = Duration::from_secs(120);
const MACHINES: [&str; 3] = ["center", "home1", "home2"];

/// Where each machine serves exposed ports.
fn address(machine: &str) -> String {
    match machine {
        "center" => format!("{WAN}.10"),
        "home1" => "192.168.1.2".into(),
        "home2" => "192.168.2.2".into(),
        other => panic!("no machine {other}"),
    }
}

/// `GET /` at `target` from `machine`: the replica that served it, or why none did, and how
/// long it took.
fn served_from(net: &Internet, machine: &str, target: &str) -> (Result<String, String>, Duration) {
    let target = target.to_string();
    net.run_on(machine, move || {
        let t = Instant::now();
        let r = univrs_tests::http_get(&target).and_then(|body| {
            body.split("served by ")
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .map(str::to_string)
                .ok_or_else(|| format!("no replica named in {body:?}"))
        });
        (r, t.elapsed())
    })
    .join()
    .expect("the request's thread")
}

/// Freezes (or thaws) every container of node `node` (its parent cgroup).
fn freeze_containers(node: &str, frozen: bool) {
    let v1 = format!("/sys/fs/cgroup/freezer/univrs/{node}/freezer.state");
    let v2 = format!("/sys/fs/cgroup/univrs/{node}/cgroup.freeze");
    let (path, value) = if std::path::Path::new(&v1).exists() {
        (v1, if frozen { "FROZEN" } else { "THAWED" })
    } else {
        (v2, if frozen { "1" } else { "0" })
    };
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// Thaws every machine's containers when dropped (a failed test leaves none frozen: the next
/// run's agents would start theirs under a frozen parent).
struct Thaw;

impl Drop for Thaw {
    fn drop(&mut self) {
        for m in MACHINES {
            let _ = std::panic::catch_unwind(|| freeze_containers(&format!("nat-{m}"), false));
        }
    }
}

/// Stops (or continues) a process.
fn signal(pid: u32, stop: bool) {
    let sig = if stop {
        nix::sys::signal::Signal::SIGSTOP
    } else {
        nix::sys::signal::Signal::SIGCONT
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// The replica (instance name) on each machine, once all three are ready.
async fn replicas_ready(api: &Api<Workload>, want_ready: &[&str]) -> Vec<(String, String)> {
    let want: Vec<String> = want_ready.iter().map(|m| format!("nat-{m}")).collect();
    eventually("the replicas' readiness", WAIT, async || {
        let w = api.get(PORTAL).await.unwrap();
        let inst = w.status.map(|s| s.instances).unwrap_or_default();
        let placed: Vec<(String, String)> = inst
            .iter()
            .filter_map(|i| Some((i.node.clone()?, i.name.clone())))
            .collect();
        let ready: Vec<String> = inst
            .iter()
            .filter(|i| i.ready == Some(true))
            .filter_map(|i| i.node.clone())
            .collect();
        let mut sorted = ready.clone();
        sorted.sort();
        (
            (sorted == want).then(|| placed.clone()),
            format!("{placed:?}, ready on {ready:?}"),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_answers_on_every_machine_behind_any_router() {
    let mut net = Internet::build(&[Nat::PortPreserving, Nat::Symmetric]);
    net.add_public("visitor", 9);
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, LEASE_NS).await;
    // Every machine reaches the API server as if it were on the internet.
    let api_server: std::net::SocketAddr = format!("127.0.0.1:{}", cp.port).parse().unwrap();
    for m in MACHINES {
        net.forward(m, cp.port, api_server);
    }
    let agents: Vec<AgentProc> = MACHINES
        .iter()
        .map(|m| {
            AgentProc::start_in(
                univrs_tests::univrs_bin(),
                cp,
                &net.netns_path(m),
                &format!("nat-{m}"),
                &[
                    "--cpu",
                    "2",
                    "--memory",
                    "2Gi",
                    "--label",
                    "site=nat",
                    "--listen",
                    "/ip4/0.0.0.0/tcp/0",
                ],
            )
        })
        .collect();
    let _controller = start_controller(cp);
    // Dropped before the agents (which reset their machines), after the test's freezes.
    let _thaw = Thaw;

    // The portal example as it is: three replicas, port 30080 (every machine's own: each is
    // a namespace of its own here).
    let example = univrs_tests::repo_root().join("deploy/examples/community-portal.yaml");
    let (ok, _, err) = univrs_tests::run(cp.kubectl().args(["apply", "-f"]).arg(&example));
    assert!(ok, "kubectl apply: {err}");
    let port = 30080;
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let placed = replicas_ready(&api, &MACHINES).await;
    let replica_on = |m: &str| {
        placed
            .iter()
            .find(|(n, _)| *n == format!("nat-{m}"))
            .map(|(_, i)| i.clone())
            .unwrap()
    };

    // Every machine on its own address (its own replica), the visitor through the center.
    for m in MACHINES {
        let target = format!("{}:{port}", address(m));
        let got = eventually(&format!("the portal on {m}"), WAIT, async || {
            let (r, _) = served_from(&net, m, &target);
            (r.clone().ok(), format!("{r:?}"))
        })
        .await;
        assert_eq!(got, replica_on(m), "{m} serves its own replica first");
    }
    let center = format!("{}:{port}", address("center"));
    let (r, _) = served_from(&net, "visitor", &center);
    assert_eq!(r.unwrap(), replica_on("center"));
    // The visitor reaches nothing at home.
    let (r, _) = served_from(&net, "visitor", &format!("{WAN}.11:{port}"));
    assert!(r.is_err(), "home1's router lets nobody in: {r:?}");

    // The center's and home1's replicas freeze: new connections go to home2's, through the
    // mesh, from the visitor (via the center) and from home1 (relayed to the symmetric home).
    freeze_containers("nat-center", true);
    freeze_containers("nat-home1", true);
    replicas_ready(&api, &["home2"]).await;
    for (who, target) in [
        ("visitor", center.clone()),
        ("home1", format!("{}:{port}", address("home1"))),
    ] {
        for _ in 0..3 {
            let got = eventually(&format!("{who} served by home2"), WAIT, async || {
                let (r, _) = served_from(&net, who, &target);
                (r.clone().ok(), format!("{r:?}"))
            })
            .await;
            assert_eq!(got, replica_on("home2"), "{who} through {target}");
        }
    }
    let nodes: Api<univrs_api::Node> = Api::all(client.clone());
    let kind = eventually("home1's report of home2", WAIT, async || {
        let k = nodes
            .get("nat-home1")
            .await
            .unwrap()
            .status
            .and_then(|s| s.observations)
            .map(|o| o.peers)
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.node == "nat-home2" && p.connected)
            .and_then(|p| p.connection);
        (k.map(Some), format!("{k:?}"))
    })
    .await;
    assert_eq!(
        kind.map(|k| format!("{k:?}")).as_deref(),
        Some("Relayed"),
        "home1 reaches the symmetric home through the center's relay"
    );

    // home1's replica thaws; home2's whole machine freezes: the center waits for home2 once,
    // then sends every connection to home1 without waiting.
    freeze_containers("nat-home1", false);
    replicas_ready(&api, &["home1", "home2"]).await;
    let home2_agent = agents[2].pid().unwrap();
    signal(home2_agent, true);
    let mut slow = 0;
    for _ in 0..6 {
        let (r, took) = served_from(&net, "visitor", &center);
        // (home1's replica, or one the controller placed there instead of home2's.)
        assert_ne!(r.unwrap(), replica_on("home2"), "home2 is frozen");
        if took > Duration::from_secs(2) {
            slow += 1;
        }
    }
    assert!(
        slow <= 1,
        "{slow} connections waited for the frozen machine"
    );
    signal(home2_agent, false);
    freeze_containers("nat-center", false);

    // No replica: a connection is closed at once, everywhere.
    api.patch(
        PORTAL,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    for m in ["visitor", "home1"] {
        let target = if m == "visitor" {
            center.clone()
        } else {
            format!("{}:{port}", address(m))
        };
        let took = eventually(&format!("{m} refused at zero replicas"), WAIT, async || {
            let (r, took) = served_from(&net, m, &target);
            (r.is_err().then_some(took), format!("{r:?}"))
        })
        .await;
        assert!(
            took < Duration::from_secs(1),
            "refused at once, not after {took:?}"
        );
    }
    drop(agents);
}

//! The controller against the real API server: spreading, a lost node's instance moving,
//! explaining why nothing fits, cordon and drain, and leader hand-over after kill -9.
//!
//! The test plays the agents' part by renewing each node's Lease.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::DRAIN_ANNOTATION;
use univrs_api::{Node, Workload};
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, eventually, metric, node_object, renew_leases, start_controller,
};
use univrs_tests::{ControlPlane, run};

const NS: &str = "ctl";

fn workload(name: &str, replicas: i32, selector: Option<(&str, &str)>) -> Workload {
    let mut spec = serde_json::json!({
        "replicas": replicas,
        "containers": [{"name": "web", "image": "demo/busybox:latest",
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]
    });
    if let Some((k, v)) = selector {
        spec["nodeSelector"] = serde_json::json!({ k: v });
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// A workload whose container publishes hostPort 8080.
fn with_host_port(name: &str, replicas: i32) -> Workload {
    let mut w = serde_json::to_value(workload(name, replicas, None)).unwrap();
    w["spec"]["containers"][0]["ports"] =
        serde_json::json!([{"containerPort": 8080, "hostPort": 8080}]);
    serde_json::from_value(w).unwrap()
}

/// The message of a workload's Scheduled condition once it is False.
async fn unschedulable_message(api: &Api<Workload>, name: &str) -> String {
    eventually(
        &format!("Scheduled=False on {name}"),
        Duration::from_secs(30),
        async || {
            let w = api.get(name).await.unwrap();
            let c = w
                .status
                .as_ref()
                .and_then(|s| univrs_api::conditions::find(&s.conditions, "Scheduled").cloned());
            (
                c.clone().filter(|c| c.status == "False").map(|c| c.message),
                format!("{c:?}"),
            )
        },
    )
    .await
}

fn placements(w: &Workload) -> BTreeMap<String, String> {
    w.status
        .as_ref()
        .map(|s| {
            s.instances
                .iter()
                .filter_map(|i| i.node.clone().map(|n| (i.name.clone(), n)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_moves_explains_cordons_drains_and_hands_over() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    let names = ["alpha", "bravo", "charlie"];
    let keys: Vec<NodeIdentity> = names.iter().map(|_| NodeIdentity::generate()).collect();
    for (i, n) in names.iter().enumerate() {
        let labels: Vec<(&str, &str)> = if i == 2 {
            vec![("site", "school")]
        } else {
            vec![("site", "library")]
        };
        nodes_api
            .create(&PostParams::default(), &node_object(n, &labels, &keys[i]))
            .await
            .unwrap();
    }
    let alive: Arc<BTreeMap<String, AtomicBool>> = Arc::new(
        names
            .iter()
            .map(|n| (n.to_string(), AtomicBool::new(true)))
            .collect(),
    );
    renew_leases(client.clone(), alive.clone());
    // Every agent is up before the controller starts: a node whose Lease does not exist yet is
    // not Ready, and placements are not rebalanced later.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), LEASE_NS);
    eventually("3 Leases", Duration::from_secs(30), async || {
        let n = leases.list(&Default::default()).await.unwrap().items.len();
        ((n >= 3).then_some(()), format!("{n} Leases"))
    })
    .await;

    let first = start_controller(cp);
    let wl_api: Api<Workload> = Api::namespaced(client.clone(), NS);
    wl_api
        .create(&PostParams::default(), &workload("portal", 3, None))
        .await
        .unwrap();

    // 3 replicas spread over the 3 nodes.
    let spread = eventually(
        "3 instances on 3 nodes",
        Duration::from_secs(60),
        async || {
            let w = wl_api.get("portal").await.unwrap();
            let p = placements(&w);
            let nodes: BTreeSet<&String> = p.values().collect();
            (
                (p.len() == 3 && nodes.len() == 3).then(|| p.clone()),
                format!("{p:?}, status {:?}", w.status),
            )
        },
    )
    .await;
    let on_bravo = spread
        .iter()
        .find(|(_, n)| *n == "bravo")
        .map(|(i, _)| i.clone())
        .unwrap();

    // Nodes report Ready and what is allocated on them.
    eventually(
        "bravo Ready with 1 instance",
        Duration::from_secs(30),
        async || {
            let n = nodes_api.get("bravo").await.unwrap();
            let s = n.status.clone().unwrap_or_default();
            let ok =
                univrs_api::conditions::is_true(&s.conditions, "Ready") && s.instances == Some(1);
            (ok.then_some(()), format!("{s:?}"))
        },
    )
    .await;

    // bravo's agent stops renewing: Ready turns False, then its instance moves.
    alive["bravo"].store(false, Ordering::SeqCst);
    let started = Instant::now();
    let moved = eventually(
        "bravo's instance placed elsewhere",
        Duration::from_secs(40),
        async || {
            let w = wl_api.get("portal").await.unwrap();
            let p = placements(&w);
            let ok = p.len() == 3 && p.get(&on_bravo).is_some_and(|n| n != "bravo");
            (ok.then(|| p.clone()), format!("{p:?}"))
        },
    )
    .await;
    eprintln!(
        "instance moved off the lost node {:.1}s after its agent stopped",
        started.elapsed().as_secs_f64()
    );
    assert!(moved.values().all(|n| n != "bravo"));
    let bravo = nodes_api.get("bravo").await.unwrap();
    let ready = univrs_api::conditions::find(&bravo.status.unwrap().conditions, "Ready")
        .cloned()
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "LeaseExpired")
    );

    // An unschedulable workload explains itself, per reason and count, and in describe.
    wl_api
        .create(
            &PostParams::default(),
            &workload("gpu-job", 1, Some(("gpu", "true"))),
        )
        .await
        .unwrap();
    let msg = unschedulable_message(&wl_api, "gpu-job").await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 not ready, 2 didn't match the nodeSelector"
    );
    let describe = eventually(
        "FailedScheduling in describe",
        Duration::from_secs(20),
        async || {
            let (_, out, _) =
                run(cp
                    .kubectl()
                    .args(["describe", "workloads.univrs.io", "gpu-job", "-n", NS]));
            (out.contains("FailedScheduling").then(|| out.clone()), out)
        },
    )
    .await;
    assert!(
        describe.contains("didn't match the nodeSelector"),
        "{describe}"
    );

    // A hostPort is one per node: three replicas on the two Ready nodes place two.
    wl_api
        .create(&PostParams::default(), &with_host_port("web", 3))
        .await
        .unwrap();
    assert_eq!(
        unschedulable_message(&wl_api, "web").await,
        "0/3 nodes are available: 1 not ready, 2 didn't have free host ports (8080/TCP)"
    );
    let web = placements(&wl_api.get("web").await.unwrap());
    let web_nodes: BTreeSet<&String> = web.values().collect();
    assert_eq!((web.len(), web_nodes.len()), (2, 2), "{web:?}");
    // Another workload wanting the same port waits, and is placed once web gives one up.
    wl_api
        .create(&PostParams::default(), &with_host_port("web2", 1))
        .await
        .unwrap();
    assert_eq!(
        unschedulable_message(&wl_api, "web2").await,
        "0/3 nodes are available: 1 not ready, 2 didn't have free host ports (8080/TCP)"
    );
    wl_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let (web, web2) = eventually(
        "web2 placed where web left",
        Duration::from_secs(30),
        async || {
            let web = placements(&wl_api.get("web").await.unwrap());
            let web2 = placements(&wl_api.get("web2").await.unwrap());
            let ok = web.len() == 1 && web2.len() == 1;
            (
                ok.then(|| (web.clone(), web2.clone())),
                format!("{web:?} {web2:?}"),
            )
        },
    )
    .await;
    assert_ne!(web.values().next(), web2.values().next());
    for name in ["web", "web2"] {
        wl_api.delete(name, &Default::default()).await.unwrap();
    }

    // A forged vouch (signed by a stranger, claiming alpha's DID) is refused with a reason; a
    // genuine one verifies.
    let vouches: Api<univrs_api::Vouch> = Api::all(client.clone());
    let expires = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        Timestamp::now() + Duration::from_secs(3600),
    );
    let mallory = NodeIdentity::generate();
    let mut forged = univrs_api::resources::vouch::VouchSpec::signed(
        &mallory,
        &keys[2].public(),
        0.9,
        "trust me",
        expires.clone(),
    )
    .unwrap();
    forged.voucher = keys[0].public().did();
    let genuine = univrs_api::resources::vouch::VouchSpec::signed(
        &keys[0],
        &keys[2].public(),
        0.9,
        "ran our jobs",
        expires,
    )
    .unwrap();
    vouches
        .create(
            &PostParams::default(),
            &univrs_api::Vouch::new("forged", forged),
        )
        .await
        .unwrap();
    vouches
        .create(
            &PostParams::default(),
            &univrs_api::Vouch::new("genuine", genuine),
        )
        .await
        .unwrap();
    for (name, verified, reason) in [
        ("forged", false, "BadSignature"),
        ("genuine", true, "Verified"),
    ] {
        eventually(
            &format!("vouch {name} judged"),
            Duration::from_secs(30),
            async || {
                let s = vouches.get(name).await.unwrap().status.unwrap_or_default();
                let ok = s.verified == verified
                    && s.reason.as_deref() == Some(reason)
                    && s.voucher_node.as_deref() == Some("alpha");
                (ok.then_some(()), format!("{s:?}"))
            },
        )
        .await;
    }
    let (_, out, _) = run(cp.kubectl().args(["get", "uvouch"]));
    assert!(
        out.contains("forged") && out.contains("False") && out.contains("alpha"),
        "{out}"
    );

    // Verified vouches feed reputation, weighted by the voucher's service record. Give alpha
    // a long good record (as months of service would): its vouch for charlie then counts
    // 0.9 × 0.9 × (0.9 − 0.6)/0.4 = 0.6075, a boost of 0.2 × 0.6075, so charlie's reputation
    // is 0.5 + 0.5 × 0.1215 = 0.561. The forged vouch adds nothing. bravo, whose Lease lapsed
    // once, has one failure on its record: 0.9 × 0.5 = 0.45.
    // alpha's service record, as a history of `base` would leave it.
    let alpha_record = async |base: f64| {
        let record = serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": "alpha"},
            "status": {"serviceRecord": {"base": base, "updatedAt": Timestamp::now().to_string()}}
        });
        nodes_api
            .patch_status(
                "alpha",
                &PatchParams::apply("test-history").force(),
                &Patch::Apply(&record),
            )
            .await
            .unwrap();
    };
    alpha_record(0.9).await;
    eventually(
        "charlie's reputation boosted",
        Duration::from_secs(30),
        async || {
            let rep = |n: &Node| n.status.as_ref().and_then(|s| s.reputation);
            let c = rep(&nodes_api.get("charlie").await.unwrap());
            let b = rep(&nodes_api.get("bravo").await.unwrap());
            let ok = c.is_some_and(|r| (r - 0.561).abs() < 1e-9) && b == Some(0.45);
            (ok.then_some(()), format!("charlie {c:?}, bravo {b:?}"))
        },
    )
    .await;
    // One voucher's word about one subject counts once: a second vouch by alpha for charlie
    // and a copy of the first under another name add nothing. With alpha's record at 0.95 its
    // vouch counts 0.9 × 0.95 × 0.35/0.4 = 0.748125, so charlie is 0.5 + 0.5 × 0.2 × 0.748125
    // = 0.5748, shown as 0.575 (stacked three times it would be 0.598).
    let again = univrs_api::resources::vouch::VouchSpec::signed(
        &keys[0],
        &keys[2].public(),
        0.9,
        "still running our jobs",
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now() + Duration::from_secs(3600),
        ),
    )
    .unwrap();
    let copy = vouches.get("genuine").await.unwrap().spec;
    for (name, spec) in [("again", again), ("copy", copy)] {
        vouches
            .create(&PostParams::default(), &univrs_api::Vouch::new(name, spec))
            .await
            .unwrap();
        eventually(
            &format!("vouch {name} verified"),
            Duration::from_secs(30),
            async || {
                let s = vouches.get(name).await.unwrap().status.unwrap_or_default();
                (s.verified.then_some(()), format!("{s:?}"))
            },
        )
        .await;
    }
    alpha_record(0.95).await;
    eventually(
        "charlie's reputation from one voucher",
        Duration::from_secs(30),
        async || {
            let c = nodes_api
                .get("charlie")
                .await
                .unwrap()
                .status
                .and_then(|s| s.reputation);
            let ok = c.is_some_and(|r| (r - 0.575).abs() < 1e-9);
            (ok.then_some(()), format!("charlie {c:?}"))
        },
    )
    .await;
    // Every node holds a role from the nexus election, and there is at least one hub.
    let roles: Vec<Option<univrs_api::resources::node::NexusRole>> = nodes_api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.status.as_ref().and_then(|s| s.nexus_role))
        .collect();
    assert!(roles.iter().all(Option::is_some), "{roles:?}");
    assert!(
        roles
            .iter()
            .any(|r| *r != Some(univrs_api::resources::node::NexusRole::Leaf)),
        "{roles:?}"
    );

    // Cordon alpha: scaling up places nothing new there.
    nodes_api
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let before = placements(&wl_api.get("portal").await.unwrap());
    let (ok, out, err) = run(cp.kubectl().args([
        "scale",
        "-n",
        NS,
        "workloads.univrs.io/portal",
        "--replicas=5",
    ]));
    assert!(ok, "{out}{err}");
    let after = eventually("5 instances", Duration::from_secs(30), async || {
        let p = placements(&wl_api.get("portal").await.unwrap());
        ((p.len() == 5).then(|| p.clone()), format!("{p:?}"))
    })
    .await;
    for (inst, node) in &after {
        if !before.contains_key(inst) {
            assert_eq!(
                node, "charlie",
                "a new instance went to a cordoned or lost node: {after:?}"
            );
        }
    }
    for (inst, node) in &before {
        assert_eq!(
            after.get(inst),
            Some(node),
            "cordon must not move running instances"
        );
    }

    // Drain alpha: its instances move off.
    nodes_api
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {DRAIN_ANNOTATION: "true"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("alpha drained", Duration::from_secs(30), async || {
        let p = placements(&wl_api.get("portal").await.unwrap());
        (
            (p.len() == 5 && p.values().all(|n| n == "charlie")).then_some(()),
            format!("{p:?}"),
        )
    })
    .await;

    // A second controller waits; kill -9 the leader and it takes over within 15 s.
    let second = start_controller(cp);
    eventually(
        "first leads, second waits",
        Duration::from_secs(20),
        async || {
            let a = metric(&first.metrics, "univrs_leader");
            let b = metric(&second.metrics, "univrs_leader");
            (
                (a == Some(1.0) && b == Some(0.0)).then_some(()),
                format!("{a:?} {b:?}"),
            )
        },
    )
    .await;
    let mut first = first;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = first.child.0.wait();
    let killed = Instant::now();
    eventually("second leads", Duration::from_secs(15), async || {
        let b = metric(&second.metrics, "univrs_leader");
        ((b == Some(1.0)).then_some(()), format!("{b:?}"))
    })
    .await;
    eprintln!(
        "leadership handed over {:.1}s after kill -9",
        killed.elapsed().as_secs_f64()
    );
    // The new leader keeps working and duplicates nothing.
    alive["alpha"].store(true, Ordering::SeqCst);
    nodes_api
        .patch("alpha", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"unschedulable": false}, "metadata": {"annotations": {DRAIN_ANNOTATION: null}}})))
        .await
        .unwrap();
    wl_api
        .create(&PostParams::default(), &workload("after-handover", 2, None))
        .await
        .unwrap();
    eventually(
        "after-handover placed",
        Duration::from_secs(30),
        async || {
            let p = placements(&wl_api.get("after-handover").await.unwrap());
            ((p.len() == 2).then_some(()), format!("{p:?}"))
        },
    )
    .await;
    let portal = wl_api.get("portal").await.unwrap();
    let names: Vec<String> = portal
        .status
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.name)
        .collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        names.len(),
        unique.len(),
        "no duplicated instance: {names:?}"
    );
    assert_eq!(names.len(), 5);
    drop(second);
}

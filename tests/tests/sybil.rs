//! Reputation that a ring of fake identities cannot earn, against the real API server and
//! controller, with time compressed (`--service-period 2s`: two seconds of witnessed Ready
//! service count as an hour would).
//!
//! One party runs 50 fresh identities: each renews its Lease, reports the other 49 connected
//! with perfect uptime and a gigabit of bandwidth, and vouches for five others. An honest node
//! with the same Lease history is seen connected by an established node (the trust anchor
//! `elder`), which also vouches for it. The honest node's reputation rises; the ring gains less
//! than 1% of what it gains (nothing, in fact), its vouches count 0, and the nexus election
//! makes none of them a hub. A fourth kind, `sloppy`, is witnessed like the honest node but its
//! agent reports its instance of a Workload not ready while the honest node runs the other
//! ready: it loses standing, with a `PlacementsFailing` Event.
//!
//! The test plays every agent's part (Leases, observations, instance status) with the
//! administrator's credentials: what an agent may write is tested in `rogue_node.rs`; this is
//! about what the controller makes of what they write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::NexusRole;
use univrs_api::resources::vouch::VouchSpec;
use univrs_api::{Node, Vouch, Workload};
use univrs_tests::cluster::{
    ensure_namespace, event_about, eventually, node_object, renew_leases, start_controller_with,
};
use univrs_tests::{ControlPlane, univrs_bin};

const RING: usize = 50;
const NS: &str = "sybil";
const WAIT: Duration = Duration::from_secs(120);

fn ring_name(i: usize) -> String {
    format!("ring-{i:02}")
}

/// Writes a node's observations as its agent would (its own field manager).
async fn observe(nodes: &Api<Node>, name: &str, connected: &[String], uptime: f64, bps: i64) {
    let peers: Vec<serde_json::Value> = connected
        .iter()
        .map(|p| serde_json::json!({"node": p, "connected": true}))
        .collect();
    let status = serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
        "status": {"observations": {
            "connectedPeers": connected.len(), "uptime": uptime, "bandwidthBps": bps,
            "peers": peers,
        }}
    });
    nodes
        .patch_status(
            name,
            &PatchParams::apply(&format!("agent-{name}")).force(),
            &Patch::Apply(&status),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}'s observations: {e}"));
}

fn status_of(n: &Node) -> (f64, f64, Option<NexusRole>) {
    let s = n.status.clone().unwrap_or_default();
    (
        s.reputation.unwrap_or(0.5),
        s.service_record.map_or(0.5, |r| r.base),
        s.nexus_role,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_fake_identities_gains_nothing_and_a_sloppy_node_loses_standing() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let vouches: Api<Vouch> = Api::all(client.clone());
    ensure_namespace(&client, NS).await;
    ensure_namespace(&client, univrs_tests::cluster::LEASE_NS).await;

    let elder = NodeIdentity::generate();
    let honest = NodeIdentity::generate();
    let sloppy = NodeIdentity::generate();
    let ring: Vec<NodeIdentity> = (0..RING).map(|_| NodeIdentity::generate()).collect();
    let worker = [("role", "worker")];
    type Labels<'a> = &'a [(&'a str, &'a str)];
    let mut all: Vec<(String, &NodeIdentity, Labels)> = vec![
        ("elder".into(), &elder, &[]),
        ("honest".into(), &honest, &worker),
        ("sloppy".into(), &sloppy, &worker),
    ];
    all.extend(
        ring.iter()
            .enumerate()
            .map(|(i, k)| (ring_name(i), k, &[][..])),
    );
    for (name, key, labels) in &all {
        nodes
            .create(&PostParams::default(), &node_object(name, labels, key))
            .await
            .unwrap();
    }
    let alive: BTreeMap<String, AtomicBool> = all
        .iter()
        .map(|(n, _, _)| (n.clone(), AtomicBool::new(true)))
        .collect();
    renew_leases(client.clone(), Arc::new(alive));

    let elder_did = elder.public().did();
    let _controller = start_controller_with(
        cp,
        univrs_bin(),
        &["--service-period", "2s", "--trust-anchor", &elder_did],
    );

    // What each agent reports. The elder sees the honest and the sloppy node; they see it. Each
    // ring member sees the 49 others and claims perfect uptime and a gigabit.
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    observe(
        &nodes,
        "elder",
        &names(&["honest", "sloppy"]),
        1.0,
        100_000_000,
    )
    .await;
    for n in ["honest", "sloppy"] {
        observe(&nodes, n, &names(&["elder"]), 1.0, 100_000_000).await;
    }
    for i in 0..RING {
        let others: Vec<String> = (0..RING).filter(|j| *j != i).map(ring_name).collect();
        observe(&nodes, &ring_name(i), &others, 1.0, 1_000_000_000).await;
    }

    // The vouches: the elder for the honest node; each ring member for the next five.
    let expires = Time(Timestamp::now() + Duration::from_secs(3600));
    let vouch = async |name: String, spec: VouchSpec| {
        vouches
            .create(&PostParams::default(), &Vouch::new(&name, spec))
            .await
            .unwrap_or_else(|e| panic!("vouch {name}: {e}"));
    };
    vouch(
        "elder-for-honest".into(),
        VouchSpec::signed(
            &elder,
            &honest.public(),
            0.9,
            "runs our jobs",
            expires.clone(),
        )
        .unwrap(),
    )
    .await;
    for i in 0..RING {
        for k in 1..=5 {
            let j = (i + k) % RING;
            let spec = VouchSpec::signed(
                &ring[i],
                &ring[j].public(),
                1.0,
                "my friend",
                expires.clone(),
            )
            .unwrap();
            vouch(format!("ring-{i:02}-for-{j:02}"), spec).await;
        }
    }

    // A Workload on the two workers, one instance each (the host port spreads them).
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let job: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "job"},
        "spec": {"replicas": 2, "nodeSelector": {"role": "worker"},
            "containers": [{"name": "web", "image": "demo/busybox:latest",
                "ports": [{"containerPort": 8080, "hostPort": 31080}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap();
    workloads
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let placed = eventually("job placed on both workers", WAIT, async || {
        let w = workloads.get("job").await.unwrap();
        let p: BTreeMap<String, String> = w
            .status
            .iter()
            .flat_map(|s| s.instances.iter())
            .filter_map(|i| Some((i.node.clone()?, i.name.clone())))
            .collect();
        let both = p.contains_key("honest") && p.contains_key("sloppy");
        (both.then(|| p.clone()), format!("{p:?}"))
    })
    .await;
    // Each worker's agent reports its instance: the honest one ready, the sloppy one not (its
    // readiness probe keeps failing).
    for (node, ready) in [("honest", true), ("sloppy", false)] {
        let status = serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": "job", "namespace": NS},
            "status": {"instances": [{"name": placed[node], "phase": "Running", "ready": ready,
                "message": if ready { "ready" } else { "readiness probe failed" }}]}
        });
        workloads
            .patch_status(
                "job",
                &PatchParams::apply(&format!("agent-{node}")).force(),
                &Patch::Apply(&status),
            )
            .await
            .unwrap();
    }

    // The honest node earns standing: witnessed service and the elder's vouch.
    let honest_rep = eventually("the honest node's reputation past 0.75", WAIT, async || {
        let n = nodes.get("honest").await.unwrap();
        let lapses = n
            .status
            .as_ref()
            .and_then(|s| s.septal.as_ref())
            .map(|g| g.failures);
        let (rep, base, _) = status_of(&n);
        (
            (rep >= 0.75).then_some(rep),
            format!("reputation {rep}, record {base}, lapses {lapses:?}"),
        )
    })
    .await;
    let gain = honest_rep - 0.5;

    // The ring gained less than 1% of that: its service was never witnessed by anyone of
    // standing and its vouches count nothing.
    let mut worst = f64::MIN;
    for i in 0..RING {
        let (rep, base, _) = status_of(&nodes.get(&ring_name(i)).await.unwrap());
        assert!(
            base <= 0.5,
            "{}'s service record rose to {base}",
            ring_name(i)
        );
        worst = worst.max(rep - 0.5);
    }
    assert!(
        worst < 0.01 * gain,
        "a ring member gained {worst}, the honest node {gain}"
    );
    let ring_vouch = vouches.get("ring-00-for-01").await.unwrap();
    let vs = ring_vouch.status.unwrap_or_default();
    assert!(vs.verified && vs.effective_weight == 0.0, "{vs:?}");
    let view = nodes
        .get(&ring_name(0))
        .await
        .unwrap()
        .status
        .and_then(|s| s.peer_view)
        .unwrap_or_default();
    assert_eq!((view.connected_by, view.witnessed), (49, 0.0), "{view:?}");

    // The sloppy node lost standing, and was told why.
    let warned = event_about(&client, "default", "PlacementsFailing", "sloppy", WAIT).await;
    assert!(
        warned.note.unwrap_or_default().contains("1 of 1 instances"),
        "the Event names the count"
    );
    let sloppy_base = eventually("the sloppy node's record under 0.5", WAIT, async || {
        let (rep, base, _) = status_of(&nodes.get("sloppy").await.unwrap());
        (
            (base < 0.5).then_some(base),
            format!("reputation {rep}, record {base}"),
        )
    })
    .await;
    let (_, honest_base, _) = status_of(&nodes.get("honest").await.unwrap());
    assert!(
        honest_base > 0.6,
        "the honest node kept its record: {honest_base}"
    );

    // The nexus election (every 30 s) believes claims only as far as they are witnessed: the
    // hubs are the elder and the honest node, never a ring member.
    let roles = eventually(
        "the elder and the honest node elected hubs",
        WAIT,
        async || {
            let list = nodes.list(&Default::default()).await.unwrap().items;
            let hubs: Vec<String> = list
                .iter()
                .filter(|n| status_of(n).2.is_some_and(|r| r != NexusRole::Leaf))
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            let ok = hubs.len() == 2 && hubs.iter().all(|h| h == "elder" || h == "honest");
            (ok.then(|| hubs.clone()), format!("hubs {hubs:?}"))
        },
    )
    .await;
    eprintln!(
        "honest reputation {honest_rep} (gain {gain:.3}); the best ring member gained {worst}; sloppy's record {sloppy_base}; hubs {roles:?}"
    );
}

//! What agents report about each other over the mesh, end to end: two real `univrs agent`
//! processes and the real controller, and a raw mesh holding the key of a registered Node that
//! gossips what the cluster contradicts. (A test binary of its own: its agents must not share a
//! mesh with other tests' agents, whose counts they would change.)

use kube::api::{Api, PostParams};
use std::time::Duration;
use univrs_api::Node;
use univrs_api::account::Account;
use univrs_api::gossip::{GossipBody, SignedTransfer};
use univrs_api::identity::NodeIdentity;
use univrs_api::ledger::Transfer;
use univrs_node_agent::mesh::{Mesh, MeshConfig, MeshError, Multiaddr};
use univrs_tests::ControlPlane;
use univrs_tests::agent::{AgentApi, AgentProc, node_of};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually};

const WAIT: Duration = Duration::from_secs(90);

/// A registered Node whose mesh gossips what the cluster contradicts: the agents that drop its
/// messages report it in their observations, and the controller, seeing two reporters agree,
/// counts a failure in its service record and says so in a Warning Event. The honest nodes keep
/// their record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_from_a_node_costs_it_reputation() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, LEASE_NS).await;
    let _controller = univrs_tests::cluster::start_controller(cp);
    let nodes: Api<Node> = Api::all(client.clone());
    let c = AgentProc::start(cp, "gsp-c", &[]);
    let node_c = node_of(&nodes, "gsp-c").await;
    let d = AgentProc::start(cp, "gsp-d", &["--bootstrap", &node_c.spec.multiaddrs[0]]);
    let node_d = node_of(&nodes, "gsp-d").await;
    let (api_c, api_d) = (AgentApi::of(&node_c), AgentApi::of(&node_d));

    // The rogue is a Node of the cluster, with its own key.
    let rogue_key = NodeIdentity::generate();
    nodes
        .create(
            &PostParams::default(),
            &univrs_tests::cluster::node_object("gsp-rogue", &[], &rogue_key),
        )
        .await
        .unwrap();
    let mut config = MeshConfig::new(rogue_key.clone());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.heartbeat = Duration::from_millis(300);
    config.bootstrap = [&node_c, &node_d]
        .iter()
        .map(|n| n.spec.multiaddrs[0].parse::<Multiaddr>().unwrap())
        .collect();
    let rogue = Mesh::spawn(config).await.unwrap();

    // It spends from gsp-c's account with its own key, again and again, until both agents have
    // dropped some.
    let dropped =
        |api: &AgentApi| api.counter("univrs_mesh_invalid_messages_total", "PayerNotOwner");
    let mut n = 0;
    eventually("both agents drop the rogue's transfers", WAIT, async || {
        n += 1;
        let t = SignedTransfer::sign(
            &rogue_key,
            Transfer {
                id: format!("rogue-{n}"),
                from: Account::node("gsp-c"),
                to: Account::node("gsp-rogue"),
                amount: 1_000,
            },
        );
        match rogue.publish(GossipBody::from(t)).await {
            Ok(()) | Err(MeshError::NoPeers { .. }) => {}
            Err(e) => panic!("publishing: {e}"),
        }
        let (at_c, at_d) = (dropped(&api_c), dropped(&api_d));
        (
            (at_c > 0 && at_d > 0).then_some(()),
            format!("dropped by gsp-c {at_c}, by gsp-d {at_d}"),
        )
    })
    .await;

    // Both report it; the controller counts one corroborated failure against its record.
    let rogue_node = eventually("the rogue's peer view and record", WAIT, async || {
        let n = nodes.get("gsp-rogue").await.unwrap();
        let st = n.status.clone().unwrap_or_default();
        let ok = st
            .peer_view
            .as_ref()
            .is_some_and(|v| v.reporters == 2 && v.reporters_of_invalid == 2)
            && st.service_record.as_ref().is_some_and(|r| r.base < 0.5)
            && st.reputation.is_some_and(|r| r < 0.5);
        let reports = nodes
            .get("gsp-c")
            .await
            .unwrap()
            .status
            .map(|s| (s.observations.map(|o| o.peers), s.conditions));
        (
            ok.then_some(n),
            format!(
                "view {:?}, record {:?}, reputation {:?}; gsp-c reports {reports:?}",
                st.peer_view, st.service_record, st.reputation
            ),
        )
    })
    .await;
    let status = rogue_node.status.unwrap();
    let view = status.peer_view.unwrap();
    assert!(view.invalid_messages >= 2, "{view:?}");
    eprintln!(
        "the rogue: {view:?}, reputation {:?}",
        status.reputation.unwrap()
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let warned = eventually("the InvalidGossip Event", WAIT, async || {
        let e = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidGossip")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("gsp-rogue")
            });
        (e, "no Event yet".into())
    })
    .await;
    let note = warned.note.unwrap_or_default();
    assert!(note.contains("2 of 2 peers"), "{note}");

    // The honest agents see each other connected and clean, and nobody reports them.
    for name in ["gsp-c", "gsp-d"] {
        eventually(&format!("{name}'s peer view"), WAIT, async || {
            let st = nodes.get(name).await.unwrap().status.unwrap_or_default();
            let ok = st
                .peer_view
                .as_ref()
                .is_some_and(|v| v.connected_by >= 1 && v.invalid_messages == 0);
            (ok.then_some(()), format!("{:?}", st.peer_view))
        })
        .await;
    }
    let all = events.list(&Default::default()).await.unwrap().items;
    assert!(
        !all.iter()
            .any(|e| e.reason.as_deref() == Some("InvalidGossip")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) != Some("gsp-rogue")),
        "only the rogue is reported"
    );
    rogue.shutdown().await;
    drop((c, d));
}

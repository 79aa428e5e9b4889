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
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, event_about, eventually};

const WAIT: Duration = Duration::from_secs(90);

/// A mesh of its own (no agent) holding `key`, on loopback, bootstrapped to the agents of
/// `nodes`.
async fn raw_mesh(key: NodeIdentity, nodes: &[&Node]) -> univrs_node_agent::mesh::MeshHandle {
    let mut config = MeshConfig::new(key);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.heartbeat = Duration::from_millis(300);
    config.bootstrap = nodes
        .iter()
        .map(|n| n.spec.multiaddrs[0].parse::<Multiaddr>().unwrap())
        .collect();
    Mesh::spawn(config).await.unwrap()
}

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
    let rogue = raw_mesh(rogue_key.clone(), &[&node_c, &node_d]).await;

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
    let warned = event_about(&client, "default", "InvalidGossip", "gsp-rogue", WAIT).await;
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

    // Another Node, honest so far (the rogue is graylisted by now: nothing it says reaches
    // validation), gossips news both agents accept. Then its septal gate trips (written here as
    // the controller writes it after five lapses; an isolated gate stays so for 60 s): both
    // agents now drop everything it says, true or not, without holding it against it, and so
    // relay none of it.
    let quiet_key = NodeIdentity::generate();
    nodes
        .create(
            &PostParams::default(),
            &univrs_tests::cluster::node_object("gsp-quiet", &[], &quiet_key),
        )
        .await
        .unwrap();
    let quiet = raw_mesh(quiet_key, &[&node_c, &node_d]).await;
    let received = |api: &AgentApi| {
        let (_, metrics) = api.get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("univrs_mesh_messages_received_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let refused =
        |api: &AgentApi| api.counter("univrs_mesh_ignored_messages_total", "SenderIsolated");
    let mut k = 0;
    let mut say = async |what: &str| {
        k += 1;
        let news = univrs_api::gossip::ClusterEvent {
            node: "gsp-quiet".into(),
            reason: "Hello".into(),
            message: format!("{what} {k}"),
        };
        match quiet.publish(GossipBody::from(news)).await {
            Ok(()) | Err(MeshError::NoPeers { .. }) => {}
            Err(e) => panic!("publishing: {e}"),
        }
    };
    let heard_before = (received(&api_c), received(&api_d));
    eventually(
        "both agents accept the quiet node's gossip",
        WAIT,
        async || {
            say("hello").await;
            let now = (received(&api_c), received(&api_d));
            (
                (now.0 > heard_before.0 && now.1 > heard_before.1).then_some(()),
                format!("received by gsp-c and gsp-d: {now:?} (from {heard_before:?})"),
            )
        },
    )
    .await;
    let isolated = serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": "gsp-quiet"},
        "status": {"septal": {"state": "Isolated", "failures": 5, "healthScore": 0.0,
            "traffic": 0.0, "since": k8s_openapi::jiff::Timestamp::now().to_string()}}
    });
    nodes
        .patch_status(
            "gsp-quiet",
            &kube::api::PatchParams::apply("test-septal").force(),
            &kube::api::Patch::Apply(&isolated),
        )
        .await
        .unwrap();
    let invalid_before = (dropped(&api_c), dropped(&api_d));
    eventually(
        "both agents ignore the isolated node's gossip",
        WAIT,
        async || {
            say("still here").await;
            let (at_c, at_d) = (refused(&api_c), refused(&api_d));
            (
                (at_c > 0 && at_d > 0).then_some(()),
                format!("ignored by gsp-c {at_c}, by gsp-d {at_d}"),
            )
        },
    )
    .await;
    // Nothing it says is accepted any more (a message already held when the status arrived
    // may still land: count from here).
    let accepted = (received(&api_c), received(&api_d));
    let ignored = (refused(&api_c), refused(&api_d));
    for _ in 0..5 {
        say("anyone?").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually("five more ignored by each", WAIT, async || {
        let now = (refused(&api_c), refused(&api_d));
        (
            (now.0 >= ignored.0 + 5 && now.1 >= ignored.1 + 5).then_some(()),
            format!("{now:?} from {ignored:?}"),
        )
    })
    .await;
    assert_eq!(
        (received(&api_c), received(&api_d)),
        accepted,
        "an isolated node's gossip was accepted"
    );
    assert_eq!(
        (dropped(&api_c), dropped(&api_d)),
        invalid_before,
        "isolation is not counted as invalid gossip"
    );
    quiet.shutdown().await;
    rogue.shutdown().await;
    drop((c, d));
}

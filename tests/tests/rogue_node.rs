//! A node that lies, played for real: `univrs up` with two honest agents runs the portal
//! example, then a third machine joins the way every machine does (`univrs token create`,
//! `univrs join`) and, with its own valid credentials, tries every attack of issue #13 through
//! the API server. Each is refused (403, the message naming the rule), the honest path for the
//! same identity still works (its own Node, its own Lease), and afterwards the controller's
//! Lease, the placements, the ledger's writers and the other nodes' objects are as they were.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use univrs_api::resources::creditline::CreditLine;
use univrs_api::{Node, Workload};
use univrs_tests::cluster::eventually;
use univrs_tests::up::Up;
use univrs_tests::{client_from, free_port, repo_root, run, univrs_bin, upstream_bin_dir};

const NS: &str = "community-center";
const PORTAL: &str = "community-portal";
const ROGUE: &str = "rogue";

/// Asserts `r` was refused with 403 and a message containing `rule`.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>, rule: &str) {
    match r {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{what}: {}", e.message);
            assert!(
                e.message.contains(rule),
                "{what}: refused, but not by the rule {rule:?}: {}",
                e.message
            );
            eprintln!("refused as it should be: {what}: {}", e.message);
        }
        other => panic!("{what} was not refused: {other:?}"),
    }
}

fn apply() -> PatchParams {
    PatchParams::apply(&format!("univrs-agent-{ROGUE}")).force()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joined_node_can_change_only_what_is_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_port(), 1);
    let admin = up.client().await;
    let examples = repo_root().join("deploy/examples");
    let (ok, out, err) = run(Command::new(upstream_bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(&up.kubeconfig)
        .args(["apply", "-f"])
        .arg(examples.join("community-portal.yaml")));
    assert!(ok, "{out}{err}");
    let workloads: Api<Workload> = Api::namespaced(admin.clone(), NS);
    let placed = eventually(
        "the portal placed and metered",
        Duration::from_secs(120),
        async || {
            let w = workloads.get(PORTAL).await.unwrap();
            let all = w
                .status
                .as_ref()
                .map(|s| s.instances.clone())
                .unwrap_or_default();
            let ok = all.len() == 3 && all.iter().all(|i| i.node.is_some() && i.usage.is_some());
            (ok.then_some(w.clone()), format!("{:?}", w.status))
        },
    )
    .await;
    let honest_node = placed.status.as_ref().unwrap().instances[0]
        .node
        .clone()
        .unwrap();

    // The rogue joins like anyone, with its own key and certificate.
    let rogue_dir = tmp.path().join("rogue");
    let rogue_kc = univrs_tests::join::join(&up.kubeconfig, &rogue_dir, ROGUE);
    let rogue = client_from(&rogue_kc).await.unwrap();
    let me = univrs_node_agent::keyfile::load(&rogue_dir.join("identity.key"))
        .unwrap()
        .public();
    let other = univrs_api::identity::NodeIdentity::generate().public();
    let nodes: Api<Node> = Api::all(rogue.clone());
    let leases: Api<Lease> = Api::namespaced(rogue.clone(), "univrs-system");
    let node_body = |name: &str, peer: &univrs_api::identity::PublicIdentity| {
        json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node",
            "metadata": {"name": name},
            "spec": {"peerId": peer.peer_id(), "did": peer.did(),
                     "capacity": {"cpu": "1", "memory": "1Gi"}},
        })
    };

    // Registering under another name, or its own name with another key: refused.
    refused(
        "create a Node under another machine's name",
        nodes
            .patch("node-9", &apply(), &Patch::Apply(node_body("node-9", &me)))
            .await,
        "may change only its own Node",
    );
    refused(
        "register its own name with another key",
        nodes
            .patch(ROGUE, &apply(), &Patch::Apply(node_body(ROGUE, &other)))
            .await,
        "registers only its own key",
    );
    // The honest path: its own Node with its own key, its own Lease.
    nodes
        .patch(ROGUE, &apply(), &Patch::Apply(node_body(ROGUE, &me)))
        .await
        .expect("a node registers itself");
    let own_lease = |seconds: i32| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("univrs-node-{ROGUE}"), "namespace": "univrs-system"},
            "spec": {"holderIdentity": ROGUE, "leaseDurationSeconds": seconds,
                     "renewTime": MicroTime(Timestamp::now())},
        })
    };
    // A day-long Lease is accepted (it is its own) and then counts for nothing: below.
    leases
        .patch(
            &format!("univrs-node-{ROGUE}"),
            &apply(),
            &Patch::Apply(own_lease(86_400)),
        )
        .await
        .expect("a node renews its own Lease");
    let status = |s: serde_json::Value| json!({"apiVersion": "univrs.io/v1alpha1", "kind": "Node", "status": s});
    nodes
        .patch_status(
            ROGUE,
            &apply(),
            &Patch::Apply(status(json!({"observations": {"connectedPeers": 1}}))),
        )
        .await
        .expect("a node reports its own observations");

    // The controller's Lease, with a day's duration.
    let controller_lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "univrs-controller", "namespace": "univrs-system"},
        "spec": {"holderIdentity": ROGUE, "leaseDurationSeconds": 86_400},
    });
    refused(
        "take the controller's Lease",
        leases
            .patch(
                "univrs-controller",
                &apply(),
                &Patch::Apply(controller_lease),
            )
            .await,
        "may hold only its own Lease",
    );
    refused(
        "renew another node's Lease",
        leases
            .patch(
                &format!("univrs-node-{honest_node}"),
                &apply(),
                &Patch::Apply(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": format!("univrs-node-{honest_node}"), "namespace": "univrs-system"},
                    "spec": {"holderIdentity": honest_node},
                })),
            )
            .await,
        "may hold only its own Lease",
    );
    // Its own service record, septal gate and reputation.
    refused(
        "write its own service record",
        nodes
            .patch_status(
                ROGUE,
                &apply(),
                &Patch::Apply(status(json!({"serviceRecord": {"base": 1.0, "updatedAt": Timestamp::now().to_string()}}))),
            )
            .await,
        "status.serviceRecord is written by the controller only",
    );
    refused(
        "reset its own septal gate",
        nodes
            .patch_status(
                ROGUE,
                &apply(),
                &Patch::Apply(status(
                    json!({"septal": {"state": "Connected", "failures": 0, "healthScore": 1.0}}),
                )),
            )
            .await,
        "status.septal is written by the controller only",
    );
    refused(
        "raise its own reputation",
        nodes
            .patch_status(
                ROGUE,
                &apply(),
                &Patch::Apply(status(json!({"reputation": 1.0}))),
            )
            .await,
        "status.reputation is written by the controller only",
    );
    // Another node's observations, spec and annotations.
    refused(
        "write fake peer observations on another node",
        nodes
            .patch_status(
                &honest_node,
                &apply(),
                &Patch::Apply(status(
                    json!({"observations": {"peers": [{"node": ROGUE, "connected": true}]}}),
                )),
            )
            .await,
        "may change only its own Node",
    );
    for (what, patch) in [
        (
            "cordon another node",
            json!({"spec": {"unschedulable": true}}),
        ),
        (
            "drain another node",
            json!({"metadata": {"annotations": {"univrs.io/drain": "true"}}}),
        ),
        (
            "re-price another node",
            json!({"spec": {"pricing": {"model": "Fixed", "cpuCoreHour": 1}}}),
        ),
    ] {
        refused(
            what,
            nodes
                .patch(&honest_node, &PatchParams::default(), &Patch::Merge(patch))
                .await,
            "may change only its own Node",
        );
    }
    refused(
        "delete another node",
        nodes.delete(&honest_node, &DeleteParams::default()).await,
        "cannot delete",
    );
    // The revival pool pays out what a revival-plan annotation says.
    refused(
        "write a revival plan on its own Node",
        nodes
            .patch(
                ROGUE,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"univrs.io/revival-plan": "{\"pays\":{\"node/rogue\":1000000}}"}}})),
            )
            .await,
        // Both policies refuse it; either may answer first.
        "univrs.io/",
    );
    // Placements, usage, billing and budgets of a Workload.
    let rogue_workloads: Api<Workload> = Api::namespaced(rogue.clone(), NS);
    let first = &placed.status.as_ref().unwrap().instances[0];
    let instance = |fields: serde_json::Value| {
        let mut i = json!({"name": first.name});
        i.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        json!({"apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
               "status": {"instances": [i]}})
    };
    let placed_at = first.placed_at.clone().unwrap();
    for (what, body) in [
        ("steal a placement", instance(json!({"node": ROGUE}))),
        (
            "report usage of another node's instance",
            instance(json!({"usage": {"node": ROGUE, "placedAt": placed_at,
                "cpuMillicoreSeconds": 1_000_000_000_i64, "memoryMibSeconds": 1}})),
        ),
        (
            "rewrite what was billed",
            instance(
                json!({"billed": {"node": honest_node, "placedAt": placed_at,
                "cpuMillicoreSeconds": 0, "memoryMibSeconds": 0}}),
            ),
        ),
    ] {
        refused(
            what,
            rogue_workloads
                .patch_status(PORTAL, &apply(), &Patch::Apply(body))
                .await,
            "ValidatingAdmissionPolicy",
        );
    }
    refused(
        "escape a budget (creditSpent)",
        rogue_workloads
            .patch_status(
                PORTAL,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"creditSpent": 0}})),
            )
            .await,
        "status.creditSpent is written by the controller only",
    );
    // Credit from nothing: a line of its own.
    let line: CreditLine = serde_json::from_value(json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
        "metadata": {"name": "rogue-gift"},
        "spec": {"debtor": "namespace/community-center", "creditor": format!("node/{ROGUE}"), "limit": 1_000_000},
    }))
    .unwrap();
    refused(
        "create a CreditLine",
        Api::<CreditLine>::all(rogue.clone())
            .create(&PostParams::default(), &line)
            .await,
        "cannot create",
    );

    // Afterwards: nothing the rogue aimed at changed.
    let admin_leases: Api<Lease> = Api::namespaced(admin.clone(), "univrs-system");
    let holder = admin_leases
        .get("univrs-controller")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert_ne!(holder, ROGUE, "the controller's Lease");
    let admin_nodes: Api<Node> = Api::all(admin.clone());
    let honest = admin_nodes.get(&honest_node).await.unwrap();
    assert!(!honest.spec.unschedulable, "cordoned");
    assert!(
        honest.spec.pricing.is_none(),
        "re-priced: {:?}",
        honest.spec.pricing
    );
    assert!(
        !honest.annotations().contains_key("univrs.io/drain"),
        "drained"
    );
    let peers = honest
        .status
        .as_ref()
        .and_then(|s| s.observations.as_ref())
        .map(|o| o.peers.clone())
        .unwrap_or_default();
    assert!(
        !peers.iter().any(|p| p.node == ROGUE),
        "fake peers: {peers:?}"
    );
    let mine = admin_nodes.get(ROGUE).await.unwrap();
    assert!(!mine.annotations().contains_key("univrs.io/revival-plan"));
    assert!(
        mine.status
            .as_ref()
            .and_then(|s| s.service_record.as_ref())
            .is_none_or(|r| r.base < 1.0),
        "its own service record"
    );
    let w = workloads.get(PORTAL).await.unwrap();
    let nodes_now: Vec<_> = w
        .status
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .map(|i| i.node.clone())
        .collect();
    let nodes_then: Vec<_> = placed
        .status
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .map(|i| i.node.clone())
        .collect();
    assert_eq!(nodes_now, nodes_then, "placements");
    assert!(!nodes_now.contains(&Some(ROGUE.to_string())));
    assert!(
        w.status.as_ref().unwrap().credit_spent >= placed.status.as_ref().unwrap().credit_spent,
        "credit spent went down"
    );
    // The ledger: no line of the rogue's, and no status field written by anyone but the
    // controller.
    for l in Api::<CreditLine>::all(admin.clone())
        .list(&Default::default())
        .await
        .unwrap()
    {
        assert_ne!(l.name_any(), "rogue-gift");
        for m in l.managed_fields() {
            if m.subresource.as_deref() == Some("status") {
                assert_eq!(
                    m.manager.as_deref(),
                    Some("univrs-controller"),
                    "{}",
                    l.name_any()
                );
            }
        }
    }

    // Its own day-long Lease counts for nothing: once it stops renewing, the cluster's 3 s
    // lease and 4 s grace make it NotReady.
    eventually(
        "the rogue NotReady despite its day-long Lease",
        Duration::from_secs(60),
        async || {
            let n = admin_nodes.get(ROGUE).await.unwrap();
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status.clone());
            (
                (ready.as_deref() == Some("False")).then_some(()),
                format!("Ready={ready:?}"),
            )
        },
    )
    .await;

    // Removed, its certificate stops working.
    let (ok, _, err) = run(Command::new(univrs_bin())
        .args(["node", "remove", ROGUE, "--kubeconfig"])
        .arg(&up.kubeconfig));
    assert!(ok, "{err}");
    refused(
        "act after removal",
        leases
            .patch(
                &format!("univrs-node-{ROGUE}"),
                &apply(),
                &Patch::Apply(own_lease(40)),
            )
            .await,
        "cannot",
    );
    up.interrupt();
}

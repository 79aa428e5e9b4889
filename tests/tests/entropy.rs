//! Entropy in a Node's status moves with load, and a Dynamic-priced node's quotes follow it,
//! against the real API server and controller (the test renews the node's Lease as its agent
//! would).
//!
//! One node of 4 CPUs, Dynamic at 1000 milli-credits a core-hour. Idle, its entropy is 0 and its
//! multiplier 1. A Workload taking 3 CPUs lifts its compute entropy to 6 × 0.75² = 3.4, the total
//! to 1.0 and the multiplier to 1.05. A second Workload of 0.5 CPU that will pay at most 900 an
//! hour is then too expensive: 0.5 × 1000 × (1 + 0.875²) × 1.05 = 927, where the multiplier alone
//! would ask 883. When the first Workload goes, entropy falls back to 0 and the second is placed.

use kube::api::{Api, DeleteParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::EntropyStatus;
use univrs_api::{Node, Workload};
use univrs_tests::ControlPlane;
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, eventually, node_object, renew_leases, start_controller,
};

const NS: &str = "entropy";
const WAIT: Duration = Duration::from_secs(60);

fn workload(name: &str, cpu: &str, max_price: Option<i64>) -> Workload {
    let mut spec = serde_json::json!({
        "replicas": 1,
        "containers": [{"name": "c", "image": "demo/busybox:latest",
            "resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]
    });
    if let Some(max) = max_price {
        spec["credit"] = serde_json::json!({"maxPricePerHour": max});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": spec
    }))
    .unwrap()
}

async fn entropy_of(nodes: &Api<Node>) -> Option<EntropyStatus> {
    nodes.get("busy").await.unwrap().status?.entropy
}

fn placed(w: &Workload) -> bool {
    w.status
        .as_ref()
        .is_some_and(|s| s.instances.iter().any(|i| i.node.is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entropy_rises_with_load_and_dynamic_prices_follow() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, NS).await;
    ensure_namespace(&client, LEASE_NS).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node = node_object("busy", &[], &NodeIdentity::generate());
    node.spec.pricing = Some(
        serde_json::from_value(
            serde_json::json!({"model": "Dynamic", "cpuCoreHour": 1000, "memoryGibHour": 0}),
        )
        .unwrap(),
    );
    nodes.create(&PostParams::default(), &node).await.unwrap();
    renew_leases(
        client.clone(),
        Arc::new(BTreeMap::from([(
            "busy".to_string(),
            AtomicBool::new(true),
        )])),
    );
    let _ctl = start_controller(cp);

    let idle = eventually("the idle node's entropy", WAIT, async || {
        let e = entropy_of(&nodes).await;
        (e.clone(), format!("{e:?}"))
    })
    .await;
    assert_eq!(
        (idle.total, idle.price_multiplier_milli),
        (0.0, 1000),
        "{idle:?}"
    );

    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    workloads
        .create(&PostParams::default(), &workload("load", "3", None))
        .await
        .unwrap();
    let loaded = eventually("entropy with 3 of 4 CPUs taken", WAIT, async || {
        let e = entropy_of(&nodes).await;
        let ok = e.as_ref().is_some_and(|e| e.compute == 3.4);
        (ok.then(|| e.clone().unwrap()), format!("{e:?}"))
    })
    .await;
    assert_eq!(
        (loaded.total, loaded.price_multiplier_milli),
        (1.0, 1050),
        "{loaded:?}"
    );

    // 927 at this entropy, over the 900 the owner pays.
    workloads
        .create(
            &PostParams::default(),
            &workload("thrifty", "500m", Some(900)),
        )
        .await
        .unwrap();
    let why = eventually("thrifty refused as too expensive", WAIT, async || {
        let w = workloads.get("thrifty").await.unwrap();
        let c = w
            .status
            .as_ref()
            .and_then(|s| univrs_api::conditions::find(&s.conditions, "Scheduled").cloned());
        let msg = c.filter(|c| c.status == "False").map(|c| c.message);
        (msg.clone(), format!("{msg:?}"))
    })
    .await;
    assert!(why.contains("price") || why.contains("expensive"), "{why}");
    assert!(!placed(&workloads.get("thrifty").await.unwrap()));

    // The load leaves: entropy falls back, and the price with it (0.5 × 1000 × 1.016 = 508).
    workloads
        .delete("load", &DeleteParams::default())
        .await
        .unwrap();
    eventually("entropy back to 0 and thrifty placed", WAIT, async || {
        let e = entropy_of(&nodes).await;
        let w = workloads.get("thrifty").await.unwrap();
        let ok = e.as_ref().is_some_and(|e| e.price_multiplier_milli == 1000) && placed(&w);
        (
            ok.then_some(()),
            format!("{e:?}, thrifty placed {}", placed(&w)),
        )
    })
    .await;
}

//! An organization's own node pays for its Workloads, against the real API server and
//! controller (the test renews the nodes' Leases and reports usage as their agents would).
//!
//! The school has no credit line of its own. Its machine `school-pc` is annotated
//! `univrs.io/pays-for: school` by its owner, and the community center's `center` lends
//! `school-pc` up to 1000. A school Workload placed on `center` is paid from `school-pc`'s
//! account along that line; a school Workload on `school-pc` itself costs nothing. Without the
//! annotation the school would be an unmetered namespace and nothing would be paid.

use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::PAYS_FOR_ANNOTATION;
use univrs_api::{CreditLine, Node, Workload};
use univrs_tests::ControlPlane;
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, eventually, node_object, renew_leases, report_usage,
    start_controller,
};

const NS: &str = "school";
const WAIT: Duration = Duration::from_secs(60);

fn lesson(name: &str, on: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": {"replicas": 1, "nodeSelector": {"machine": on},
            "containers": [{"name": "c", "image": "demo/busybox:latest",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizations_node_pays_for_its_workloads_and_runs_them_free() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, NS).await;
    ensure_namespace(&client, LEASE_NS).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["center", "school-pc"] {
        let mut n = node_object(name, &[("machine", name)], &NodeIdentity::generate());
        n.spec.pricing = Some(
            serde_json::from_value(
                serde_json::json!({"model": "Fixed", "cpuCoreHour": 3600, "memoryGibHour": 0}),
            )
            .unwrap(),
        );
        if name == "school-pc" {
            n.metadata.annotations = Some(BTreeMap::from([(
                PAYS_FOR_ANNOTATION.to_string(),
                NS.to_string(),
            )]));
        }
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    renew_leases(
        client.clone(),
        Arc::new(BTreeMap::from([
            ("center".to_string(), AtomicBool::new(true)),
            ("school-pc".to_string(), AtomicBool::new(true)),
        ])),
    );
    let lines: Api<CreditLine> = Api::all(client.clone());
    let line: CreditLine = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine", "metadata": {"name": "center-school-pc"},
        "spec": {"creditor": "node/center", "debtor": "node/school-pc", "limit": 1000}
    }))
    .unwrap();
    lines.create(&PostParams::default(), &line).await.unwrap();
    let _ctl = start_controller(cp);

    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    for (name, on) in [("away", "center"), ("home", "school-pc")] {
        workloads
            .create(&PostParams::default(), &lesson(name, on))
            .await
            .unwrap();
    }
    let mut placed = BTreeMap::new();
    for (name, on) in [("away", "center"), ("home", "school-pc")] {
        let at = eventually(&format!("{name} placed on {on}"), WAIT, async || {
            let w = workloads.get(name).await.unwrap();
            let i = w.status.as_ref().and_then(|s| s.instances.first().cloned());
            let at = i
                .as_ref()
                .filter(|i| i.node.as_deref() == Some(on))
                .and_then(|i| i.placed_at.clone());
            (at, format!("{i:?}"))
        })
        .await;
        placed.insert(name, at);
    }

    // 10 core-seconds on each (within what 4 CPUs can do since placement; more would be
    // clamped): the one on center is paid by school-pc, 10 at 3600/core-hour; the one at home
    // costs nothing, its mark moves all the same.
    for (name, on) in [("away", "center"), ("home", "school-pc")] {
        let instance = format!("{name}-0");
        report_usage(
            &workloads,
            (name, &instance),
            on,
            &placed[name],
            (10_000, 0),
        )
        .await;
    }
    eventually("away paid by school-pc", WAIT, async || {
        let l = lines.get("center-school-pc").await.unwrap();
        let w = workloads.get("away").await.unwrap();
        let balance = l.status.as_ref().map(|s| s.balance);
        let spent = w.status.as_ref().and_then(|s| s.credit_spent);
        let from = l
            .status
            .as_ref()
            .and_then(|s| s.last_transfer.as_ref())
            .map(|t| t.from.to_string());
        let ok =
            balance == Some(10) && spent == Some(10) && from.as_deref() == Some("node/school-pc");
        (
            ok.then_some(()),
            format!("line {balance:?} (last from {from:?}), spent {spent:?}"),
        )
    })
    .await;
    eventually("home billed for nothing", WAIT, async || {
        let w = workloads.get("home").await.unwrap();
        let i = w.status.as_ref().and_then(|s| s.instances.first().cloned());
        let billed = i
            .as_ref()
            .and_then(|i| i.billed.as_ref())
            .map(|b| b.cpu_millicore_seconds);
        let spent = w.status.as_ref().and_then(|s| s.credit_spent).unwrap_or(0);
        (
            (billed == Some(10_000) && spent == 0).then_some(()),
            format!("billed {billed:?}, spent {spent}"),
        )
    })
    .await;
    assert_eq!(
        lines
            .get("center-school-pc")
            .await
            .unwrap()
            .status
            .map(|s| s.balance),
        Some(10),
        "nothing paid for the home lesson"
    );
}

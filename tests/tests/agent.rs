//! The node agent end to end: a real `univrs agent` process against the real API server, with
//! the real controller placing Workloads on it.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use std::time::Duration;
use univrs_api::{Node, Workload};
use univrs_tests::ControlPlane;
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller};

const NS: &str = "agent-e2e";

fn workload(name: &str, replicas: i32, image: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": {"replicas": replicas, "containers": [{"name": "app", "image": image,
            "command": ["sh", "-c", "echo hello from $HOSTNAME; sleep 3600"],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_renews_and_refuses_a_taken_name() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }
    let agent = AgentProc::start(
        cp,
        "reg-a",
        &[
            "--cpu",
            "2",
            "--memory",
            "2Gi",
            "--label",
            "univrs.io/org=library",
        ],
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually(
        "the agent's Node object",
        Duration::from_secs(60),
        async || match nodes.get_opt("reg-a").await {
            Ok(Some(n)) => (Some(n), String::new()),
            other => (None, format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(node.spec.capacity.cpu.0, "2");
    assert_eq!(node.spec.capacity.memory.0, "2Gi");
    assert!(
        node.spec.peer_id.starts_with("12D3KooW"),
        "{}",
        node.spec.peer_id
    );
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("univrs.io/org").map(String::as_str),
        Some("library")
    );
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );

    // The Lease is renewed: its renewTime moves.
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let renew = async || {
        leases
            .get_opt("univrs-node-reg-a")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
    };
    let first = eventually("the agent's Lease", Duration::from_secs(30), async || {
        (renew().await, "no Lease yet".into())
    })
    .await;
    eventually("a Lease renewal", Duration::from_secs(10), async || {
        let now = renew().await;
        (now.clone().filter(|t| *t != first), format!("{now:?}"))
    })
    .await;

    // Another identity claiming the same name is refused, with a message saying what to do.
    let mut impostor = std::process::Command::new(univrs_tests::univrs_bin());
    impostor
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .arg("--data-dir")
        .arg(format!("/tmp/ua-{}-imp", std::process::id()))
        .args(["--node-name", "reg-a"]);
    let out = impostor.output().unwrap();
    let _ = std::fs::remove_dir_all(format!("/tmp/ua-{}-imp", std::process::id()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to another identity") && err.contains("--node-name"),
        "{err}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_instances_placed_on_it() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }
    let _agent = AgentProc::start(cp, "rep-a", &["--cpu", "2", "--memory", "2Gi"]);
    let _controller = start_controller(cp);
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    api.create(
        &PostParams::default(),
        &workload("rep", 1, "127.0.0.1:1/missing/image:latest"),
    )
    .await
    .unwrap();
    // The agent owns phase and message of its instance: an image it cannot pull is reported.
    let inst = eventually("the agent's report", Duration::from_secs(90), async || {
        let w = api.get("rep").await.unwrap();
        let inst = w.status.as_ref().and_then(|s| s.instances.first().cloned());
        let state = format!("{inst:?}");
        (
            inst.filter(|i| i.node.as_deref() == Some("rep-a") && i.message.is_some()),
            state,
        )
    })
    .await;
    assert!(
        inst.message
            .as_deref()
            .unwrap_or_default()
            .contains("pulling image"),
        "{inst:?}"
    );
    assert_eq!(inst.ready, Some(false));
    let usage = inst.usage.expect("usage reported from the start");
    assert_eq!(usage.node, "rep-a");
    assert_eq!(Some(&usage.placed_at), inst.placed_at.as_ref());
}

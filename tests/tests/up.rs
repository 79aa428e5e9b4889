//! `univrs up` end to end: the whole system from one command, stopped with Ctrl-C (SIGINT)
//! and started again with its data.

use kube::api::{Api, PostParams};
use std::path::PathBuf;
use std::time::Duration;
use univrs_api::{Node, Workload};
use univrs_tests::cluster::eventually;
use univrs_tests::free_port;
use univrs_tests::up::{Up, processes_using};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_system_and_ctrl_c_stops_it_keeping_the_data() {
    let dir = PathBuf::from(format!("/tmp/uu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let up = Up::start(&dir, port, 1);
    let client = up.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        "both agents' Nodes Ready",
        Duration::from_secs(120),
        async || {
            let list = nodes.list(&Default::default()).await.unwrap();
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
                })
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            (
                (ready.len() == 2).then_some(()),
                format!("ready: {ready:?}"),
            )
        },
    )
    .await;
    // The two agents found each other through their Node objects and formed a mesh.
    eventually("the agents' mesh", Duration::from_secs(90), async || {
        let list = nodes.list(&Default::default()).await.unwrap();
        let peers: Vec<i32> = list
            .items
            .iter()
            .map(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.observations.as_ref())
                    .map_or(0, |o| o.connected_peers)
            })
            .collect();
        (
            (peers == [1, 1]).then_some(()),
            format!("connected peers per node: {peers:?}"),
        )
    })
    .await;
    let api: Api<Workload> = Api::namespaced(client.clone(), "default");
    let wl: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "keep"},
        "spec": {"replicas": 1, "containers": [{"name": "app", "image": "univrs.local/demo:latest"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &wl).await.unwrap();
    eventually("the workload placed", Duration::from_secs(60), async || {
        let w = api.get("keep").await.unwrap();
        let placed = w
            .status
            .as_ref()
            .is_some_and(|s| s.instances.iter().any(|i| i.node.is_some()));
        (placed.then_some(()), format!("{:?}", w.status))
    })
    .await;
    up.interrupt();
    let left = processes_using(&dir);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:?}");

    // Starting again keeps the data.
    let up = Up::start(&dir, port, 1);
    let client = up.client().await;
    let api: Api<Workload> = Api::namespaced(client, "default");
    assert!(api.get_opt("keep").await.unwrap().is_some());
    up.interrupt();
    assert!(processes_using(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
}

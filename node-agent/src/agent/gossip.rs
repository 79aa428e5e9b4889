//! The agent's part in the mesh: it starts the swarm, finds peers from the other Node
//! objects' addresses (the API server is the directory; mDNS and Kademlia find the rest), and
//! announces what happens to its instances on the workload/status topic. What peers see of
//! each other (peers, latency, invalid messages) becomes Node observations (see `observe`).

use super::report::Reports;
use crate::mesh::{Mesh, MeshConfig, MeshError, MeshHandle, Multiaddr};
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::time::Duration;
use univrs_api::gossip::{ClusterEvent, WorkloadStatusReport};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::Node;

/// Parses multiaddresses from flags, saying which one is wrong.
pub fn parse_addrs(flag: &str, addrs: &[String]) -> Result<Vec<Multiaddr>, String> {
    addrs
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|e| format!("{flag} {a:?} is not a multiaddress: {e}"))
        })
        .collect()
}

/// Starts the mesh: `listen` (default: every IPv4 interface, TCP and QUIC, free ports),
/// `bootstrap` peers, mDNS unless disabled.
pub async fn start(
    identity: NodeIdentity,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    mdns: bool,
) -> Result<MeshHandle, MeshError> {
    let mut config = MeshConfig::new(identity);
    if !listen.is_empty() {
        config.listen = listen;
    }
    config.bootstrap = bootstrap;
    config.mdns = mdns;
    Mesh::spawn(config).await
}

/// Every 15 s, adds the other Nodes' published addresses as bootstrap peers (once each).
pub async fn bootstrap_from_nodes(client: kube::Client, node: String, mesh: MeshHandle) {
    let api: Api<Node> = Api::all(client);
    let mut added: BTreeSet<String> = BTreeSet::new();
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for n in list.items {
                    if n.metadata.name.as_deref() == Some(node.as_str()) {
                        continue;
                    }
                    for a in &n.spec.multiaddrs {
                        if added.contains(a) {
                            continue;
                        }
                        let Ok(addr) = a.parse::<Multiaddr>() else {
                            tracing::debug!(address = %a, "a Node publishes an address that is not a multiaddress");
                            continue;
                        };
                        if mesh.add_bootstrap(addr).await.is_ok() {
                            added.insert(a.clone());
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("listing Nodes for mesh peers: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}

/// Announces the agent's start, then every change of an instance's phase or readiness.
pub async fn announce(node: String, mesh: MeshHandle, reports: Reports) {
    let mut changes = reports.subscribe();
    let _ = mesh
        .publish(ClusterEvent {
            node: node.clone(),
            reason: "AgentStarted".into(),
            message: format!("the agent of {node} joined the mesh"),
        })
        .await;
    let mut last: std::collections::BTreeMap<String, (String, bool)> = Default::default();
    loop {
        let (id, report) = match changes.recv().await {
            Ok(c) => c,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let Some(r) = report else {
            last.remove(&id);
            continue;
        };
        let key = (format!("{:?}", r.phase), r.ready);
        if last.get(&id) == Some(&key) {
            continue;
        }
        last.insert(id, key);
        let msg = WorkloadStatusReport {
            namespace: r.namespace,
            workload: r.workload,
            instance: r.instance,
            node: node.clone(),
            phase: r.phase,
            ready: Some(r.ready),
            message: r.message,
        };
        if let Err(e) = mesh.publish(msg).await {
            tracing::debug!("publishing an instance report: {e}");
        }
    }
}

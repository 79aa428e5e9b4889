//! How the agent joins the mesh: it starts the swarm on the addresses its flags give, and finds
//! peers from the other Node objects' published addresses (the API server is the directory;
//! mDNS and Kademlia find the rest).

use super::cluster_view::ClusterView;
use crate::mesh::{ClaimCheck, Mesh, MeshConfig, MeshError, MeshHandle, Multiaddr};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;

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
/// `bootstrap` peers, mDNS unless disabled, a relay for peers behind NAT unless disabled,
/// claims checked by `claims`.
pub async fn start(
    identity: NodeIdentity,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    mdns: bool,
    relay: bool,
    claims: Arc<dyn ClaimCheck>,
) -> Result<MeshHandle, MeshError> {
    let mut config = MeshConfig::new(identity);
    if !listen.is_empty() {
        config.listen = listen;
    }
    config.bootstrap = bootstrap;
    config.mdns = mdns;
    if !relay {
        config.relay = None;
    }
    config.claims = Some(claims);
    Mesh::spawn(config).await
}

/// How long after a change of the Node cache the addresses are looked at: a cluster's Nodes
/// change many times a second (status, observations), and one look covers them all.
const COALESCE: Duration = Duration::from_secs(5);
/// When an address could not be added, how soon it is tried again without a change.
const RETRY: Duration = Duration::from_secs(15);

/// Adds the other Nodes' published addresses as bootstrap peers (once each), from the agent's
/// Node cache whenever it changed. Reading the cache, not the API server: every agent listing
/// every Node every 15 s was, at 5,000 nodes, 333 LISTs of 5,000 Nodes a second.
pub async fn bootstrap_from_nodes(cluster: ClusterView, node: String, mesh: MeshHandle) {
    let mut changes = cluster.node_changes();
    let mut added: BTreeSet<String> = BTreeSet::new();
    cluster.nodes_ready().await;
    loop {
        changes.borrow_and_update();
        let mut failed = false;
        for a in cluster.addresses_of_others(&node) {
            if added.contains(&a) {
                continue;
            }
            let Ok(addr) = a.parse::<Multiaddr>() else {
                tracing::debug!(address = %a, "a Node publishes an address that is not a multiaddress");
                continue;
            };
            if mesh.add_bootstrap(addr).await.is_ok() {
                added.insert(a);
            } else {
                failed = true;
            }
        }
        let changed = async {
            let ok = changes.changed().await.is_ok();
            tokio::time::sleep(COALESCE).await;
            ok
        };
        if failed {
            if let Ok(false) = tokio::time::timeout(RETRY, changed).await {
                return;
            }
        } else if !changed.await {
            // The cache's writer is gone: the agent is stopping.
            return;
        }
    }
}

//! How the agent joins the mesh: it starts the swarm on the addresses its flags give, and finds
//! peers from the other Node objects' published addresses (the API server is the directory;
//! mDNS and Kademlia find the rest).

use crate::mesh::{ClaimCheck, Mesh, MeshConfig, MeshError, MeshHandle, Multiaddr};
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
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

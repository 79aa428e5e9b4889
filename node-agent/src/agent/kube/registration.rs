//! The agent's own Node object: identity, capacity, labels and addresses, applied with the
//! agent's field manager, so cordoning (`spec.unschedulable`), pricing and labels set by people
//! stay theirs.

use kube::api::Api;
use std::collections::BTreeMap;
use univrs_api::identity::PublicIdentity;
use univrs_api::resources::node::{HostPortRange, Node, NodeCapacity};
use univrs_io::apply::Apply;

use crate::agent::error::AgentError;

/// What the agent declares about its node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The Node's name.
    pub name: String,
    /// The node's public identity.
    pub identity: PublicIdentity,
    /// What it offers.
    pub capacity: NodeCapacity,
    /// Labels the agent sets (from flags, plus the machine's OS and architecture).
    pub labels: BTreeMap<String, String>,
    /// Where peers reach it.
    pub multiaddrs: Vec<String>,
    /// Annotations the agent sets (where its API listens).
    pub annotations: BTreeMap<String, String>,
    /// The host ports its owner lets Workloads publish.
    pub host_ports: HostPortRange,
}

/// Creates or updates the Node object. Refuses a Node of that name that belongs to another
/// identity: two machines must not share a name.
pub async fn register(
    api: &Api<Node>,
    manager: &str,
    facts: &NodeFacts,
) -> Result<Node, AgentError> {
    let peer_id = facts.identity.peer_id();
    let existing = api
        .get_opt(&facts.name)
        .await
        .map_err(AgentError::kube(format!("reading Node {}", facts.name)))?;
    if let Some(n) = existing
        && !n.spec.peer_id.is_empty()
        && n.spec.peer_id != peer_id
    {
        return Err(AgentError::NameTaken {
            name: facts.name.clone(),
            peer_id: n.spec.peer_id,
        });
    }
    Apply::<Node>::new(&facts.name)
        .meta("labels", serde_json::json!(facts.labels))
        .meta("annotations", serde_json::json!(facts.annotations))
        .spec(serde_json::json!({
            "peerId": peer_id,
            "did": facts.identity.did(),
            "multiaddrs": facts.multiaddrs,
            "capacity": facts.capacity,
            "hostPorts": facts.host_ports,
        }))
        .apply(api, manager)
        .await
        .map_err(AgentError::kube(format!("applying Node {}", facts.name)))
}

/// The labels every agent sets: the machine's OS and architecture, as Kubernetes names them.
pub fn machine_labels() -> BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    BTreeMap::from([
        (
            "kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        ("kubernetes.io/arch".to_string(), arch.to_string()),
    ])
}

/// Keeps the Node's `spec.multiaddrs` in line with where the mesh can be dialed, checking
/// every `every`: addresses come and go after start-up (a relay reservation gives a peer
/// behind NAT a relayed address, which is how the others reach it; a new interface another).
pub async fn keep_multiaddrs(
    api: Api<Node>,
    manager: String,
    mut facts: NodeFacts,
    mesh: crate::mesh::MeshHandle,
    every: std::time::Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let Ok(addrs) = mesh.dial_addrs().await else {
            continue;
        };
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        if addrs == facts.multiaddrs {
            continue;
        }
        let before = std::mem::replace(&mut facts.multiaddrs, addrs);
        match register(&api, &manager, &facts).await {
            Ok(_) => {
                tracing::info!(addresses = ?facts.multiaddrs, "the Node's mesh addresses changed")
            }
            Err(e) => {
                tracing::warn!("publishing the mesh addresses: {e}");
                facts.multiaddrs = before;
            }
        }
    }
}

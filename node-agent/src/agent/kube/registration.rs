//! The agent's own Node object: identity, capacity, labels and addresses, applied with the
//! agent's field manager, so cordoning (`spec.unschedulable`), pricing and labels set by people
//! stay theirs.

use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;
use univrs_api::identity::PublicIdentity;
use univrs_api::resources::node::{Node, NodeCapacity};

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
    let body = serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1",
        "kind": "Node",
        "metadata": {"name": facts.name, "labels": facts.labels, "annotations": facts.annotations},
        "spec": {
            "peerId": peer_id,
            "did": facts.identity.did(),
            "multiaddrs": facts.multiaddrs,
            "capacity": facts.capacity,
        },
    });
    api.patch(
        &facts.name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
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

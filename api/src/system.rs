//! Where Univrs keeps its own objects, and whom the API server knows a node as. A leaf module, so the resource types and the economics
//! can name it without importing the crate root that re-exports them.

/// The namespace of Univrs's own objects: the node and controller Leases, and the revival
/// pool's account. `univrs up` and the Helm chart create it.
pub const SYSTEM_NAMESPACE: &str = "univrs-system";

/// The API server user name of a node's own credentials is this prefix and the Node's name
/// (`univrs:node:library`): what the admission policies compare object names against.
pub const NODE_USER_PREFIX: &str = "univrs:node:";

/// The group every node's credentials carry (`O=` of their client certificate).
pub const NODES_GROUP: &str = "univrs:nodes";

/// The API server user name of the node `name`.
pub fn node_user(name: &str) -> String {
    format!("{NODE_USER_PREFIX}{name}")
}

/// A node's credentials also carry the group of its key, this prefix and its PeerId
/// (`univrs:peer:12D3KooW…`): the join approver signs only a certificate whose key is that
/// PeerId's, so a policy can check a Node's `spec.peerId` against who sends it.
pub const PEER_GROUP_PREFIX: &str = "univrs:peer:";

/// The group a node's credentials carry for its key.
pub fn peer_group(peer_id: &str) -> String {
    format!("{PEER_GROUP_PREFIX}{peer_id}")
}

/// The group of bootstrap tokens made by `univrs token create`: they may ask for a node
/// certificate and nothing else.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers:univrs";

/// The ClusterRole every joined node is bound to, one ClusterRoleBinding of the same name and
/// the node's (`univrs-node-<name>`) each, so removing a node revokes its rights at once.
pub const NODE_CLUSTER_ROLE: &str = "univrs-node";

/// The name of the ClusterRoleBinding that grants node `name` its rights.
pub fn node_binding(name: &str) -> String {
    format!("{NODE_CLUSTER_ROLE}-{name}")
}

/// The annotation on a node's ClusterRoleBinding naming the PeerId its name is bound to, so a
/// later join under that name with another key is refused even before the Node exists.
pub const PEER_ID_ANNOTATION: &str = "univrs.io/peer-id";

/// The Node annotation holding the URL of the node's server (instance logs for callers from
/// anywhere, authenticated and authorized by the API server), written by the node's agent.
pub const NODE_SERVER_ANNOTATION: &str = "univrs.io/node-server";

/// The Node annotation holding the SHA-256 fingerprint of the node server's certificate
/// (`AB:CD:…`), which callers pin: they trust the API server, and through it this value.
pub const NODE_SERVER_CERT_ANNOTATION: &str = "univrs.io/node-server-sha256";

/// The audience a bearer token must carry for node `name`'s server (`kubectl create token SA
/// --audience univrs.io/node/NAME`): a token bound to one node cannot be replayed against
/// the API server or another node by the node that received it.
pub fn node_audience(name: &str) -> String {
    format!("univrs.io/node/{name}")
}

/// The subresource whose `get` permits reading a Workload's logs (as `pods/log` does).
pub const WORKLOAD_LOG_SUBRESOURCE: &str = "log";

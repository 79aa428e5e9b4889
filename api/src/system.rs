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

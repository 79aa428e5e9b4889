//! Where Univrs keeps its own objects. A leaf module, so the resource types and the economics
//! can name it without importing the crate root that re-exports them.

/// The namespace of Univrs's own objects: the node and controller Leases, and the revival
/// pool's account. `univrs up` and the Helm chart create it.
pub const SYSTEM_NAMESPACE: &str = "univrs-system";

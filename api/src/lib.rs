//! Univrs API: the custom resource types of group `univrs.io`, the node identity (one Ed25519
//! key, three names), signed envelopes, the mutual-credit ledger and the ENR economics.
//!
//! This crate does no I/O: the controller, the node agent and the MCP server share it, and
//! everything in it is a pure function of its inputs, which is what makes it testable with
//! property tests.

pub mod account;
pub mod bid;
pub mod bootstrap;
pub mod conditions;
pub mod crds;
pub mod enr;
pub mod envelope;
pub mod expose;
pub mod gossip;
pub mod identity;
pub mod ledger;
pub mod quantity;
pub mod registry_auth;
pub mod resources;
pub mod sealed;
pub mod system;

pub use account::Account;
pub use resources::{creditline::CreditLine, node::Node, vouch::Vouch, workload::Workload};
pub use system::SYSTEM_NAMESPACE;

/// The API group of every Univrs resource.
pub const GROUP: &str = "univrs.io";
/// The served and stored version of every Univrs resource.
pub const VERSION: &str = "v1alpha1";

//! What the agent keeps in the cluster's API: its Node object, its Lease, its instances' part of
//! their Workloads' status and its Node's observations, and the caches it reads them from.
//!
//! Writers: every write is a server-side apply with the agent's own field manager
//! ([`field_manager`], `univrs-agent-<node>`), so people's and the controller's fields, and
//! other agents', are never touched.
//!
//! - [`registration`]: the Node's `spec.peerId`, `did`, `multiaddrs` and `capacity`, the agent's
//!   labels (the machine's OS and architecture, `--label`) and its API annotation;
//! - [`lease`]: the Lease `univrs-system/univrs-node-<node>` (holder, duration, renew time);
//! - [`workload_status`]: in each Workload's `status.instances`, for the instances on this
//!   node, `phase`, `ready`, `restarts`, `startedAt`, `message`, `usage` and `ip`;
//! - [`observations`]: the Node's `status.observations` (uptime, what the mesh sees, a report
//!   on each peer);
//! - [`bids`]: the Node's `status.bids`, its sealed asks in open auctions (with a field manager
//!   of their own, `univrs-agent-<node>-bids`).
//!
//! [`capacity`] detects what the machine offers, [`uptime`] keeps the agent's uptime on disk
//! (`<data>/uptime.json`) for the observations, and [`watch`] keeps the caches of Workloads,
//! Nodes and Vouches. Everything else belongs to people (cordoning, pricing, their own labels)
//! or to the controller (the rest of the Node's status and of each Workload's status).

pub mod bids;
pub mod capacity;
pub mod lease;
pub mod observations;
pub mod registration;
pub mod uptime;
pub mod watch;
pub mod workload_status;

/// The field manager of the agent of `node`.
pub fn field_manager(node: &str) -> String {
    format!("univrs-agent-{node}")
}

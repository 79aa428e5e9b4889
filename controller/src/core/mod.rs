//! The pure core: every decision the controller makes, as functions of plain values (resource
//! objects, Leases, node views, times). No kube I/O, no shared state, no clock: whoever calls
//! passes `now`. So each decision is unit-tested with values built in the test.
//!
//! May import: the `api` crate and its sibling modules here. Never `state`, `reconcile` or the
//! crate root; nothing here knows a client, a cache or a queue exists.
//!
//! - [`approval`]: whether a node's certificate request is approved (the join).
//! - [`exposed`]: the `Exposed` condition of a Workload that exposes ports.
//! - [`resources`]: CPU, memory, GPUs and host ports, shared by pricing and placement.
//! - [`quote`]: what a node charges, at its market (pricing for both placement and billing).
//! - [`scheduler`]: which node gets an instance (filter, score, spread).
//! - [`auction`]: when an instance goes to auction among Auction-priced nodes, and who wins.
//! - [`billing`]: metered usage into charges with exactly-once transfer ids.
//! - [`snapshot`]: what the reconcilers derive from cached objects (liveness, requests, credit).
//! - [`peers`]: the agents' reports about each other, gathered per node.
//! - [`notice`]: what a reconcile announces once its write landed.
//! - [`pull_credentials`]: a Workload's registry logins sealed to the nodes it runs on.
//! - [`plan`]: the plan step of each reconciler, one module per resource.

pub mod approval;
pub mod auction;
pub mod billing;
pub mod exposed;
pub mod notice;
pub mod peers;
pub mod plan;
pub mod pull_credentials;
pub mod quote;
pub mod resources;
pub mod scheduler;
pub mod snapshot;

//! The plan step of each reconciler: given what the reconciler read (the object, the cached
//! objects it depends on, the time), what its status should be, whether that is a change worth
//! writing, what to announce once written and when to look again. One module per resource,
//! named like its reconciler in `reconcile`.
//!
//! May import: the rest of `core` and the `api` crate.

pub mod credit;
pub mod nexus;
pub mod node;
pub mod revival;
pub mod vouch;
pub mod workload;

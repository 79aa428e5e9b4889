//! Univrs controller: reconciles Workload, Node, CreditLine and Vouch.
//!
//! `scheduler` is the pure placement core (no I/O); the reconcilers that feed it from reflector
//! caches and write status arrive with the rest of the controller issue.

pub mod scheduler;

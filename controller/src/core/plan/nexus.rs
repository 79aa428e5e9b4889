//! The nexus election's inputs and outcome: each node as a candidate (from its Lease and what
//! its agent observes), and which nodes' roles an election changed. The election itself is
//! `univrs_api::enr::nexus::elect`; `reconcile::nexus` runs it periodically.

use crate::core::snapshot::Liveness;
use kube::ResourceExt;
use univrs_api::Node;
use univrs_api::enr::nexus::{Candidate, Election};

/// `n` as a candidate, given its Lease's liveness and how many nodes there are.
pub fn candidate(n: &Node, live: Liveness, nodes: usize) -> Candidate {
    let others = nodes.saturating_sub(1).max(1) as f64;
    let status = n.status.clone().unwrap_or_default();
    let obs = status.observations.unwrap_or_default();
    Candidate {
        ready: matches!(live, Liveness::Fresh { .. }),
        uptime: obs.uptime,
        bandwidth_bps: obs.bandwidth_bps.max(0) as u64,
        reputation: status.reputation.unwrap_or(0.5),
        connectivity: (f64::from(obs.connected_peers.max(0)) / others).min(1.0),
        name: n.name_any(),
    }
}

/// The nodes whose role differs between the `before` and `after` elections (those that took
/// part in `after`).
pub fn changed_roles(before: &Election, after: &Election) -> Vec<String> {
    after
        .roles
        .iter()
        .filter(|(n, r)| before.roles.get(*n) != Some(r))
        .map(|(n, _)| n.clone())
        .collect()
}

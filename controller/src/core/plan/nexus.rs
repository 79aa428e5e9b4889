//! The nexus election's inputs and outcome: each node as a candidate (from its Lease and what
//! its agent observes), and which nodes' roles an election changed. The election itself is
//! `univrs_api::enr::nexus::elect`; `reconcile::nexus` runs it periodically.

use crate::core::snapshot::Liveness;
use kube::ResourceExt;
use univrs_api::Node;
use univrs_api::enr::nexus::{Candidate, Election};

/// `n` as a candidate, given its Lease's liveness, how many nodes there are, and whether it is
/// a trust anchor. What the node says of itself counts only as far as peers of standing witness
/// it (`peerView.witnessed`; an anchor is believed): its uptime at most that far, its bandwidth
/// in that proportion. Connectivity is how many others its peers say are connected to it, not
/// how many it claims.
pub fn candidate(n: &Node, live: Liveness, nodes: usize, anchor: bool) -> Candidate {
    let others = nodes.saturating_sub(1).max(1) as f64;
    let status = n.status.clone().unwrap_or_default();
    let obs = status.observations.unwrap_or_default();
    let view = status.peer_view.unwrap_or_default();
    let believed = if anchor {
        1.0
    } else {
        view.witnessed.clamp(0.0, 1.0)
    };
    let claimed = obs.connected_peers.max(0);
    Candidate {
        ready: matches!(live, Liveness::Fresh { .. }),
        uptime: obs.uptime.clamp(0.0, 1.0).min(believed),
        bandwidth_bps: (obs.bandwidth_bps.max(0) as f64 * believed) as u64,
        reputation: status.reputation.unwrap_or(0.5),
        connectivity: (f64::from(claimed.min(view.connected_by.max(0))) / others).min(1.0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use univrs_api::resources::node::{NodeObservations, NodeStatus, PeerView};

    fn node(name: &str, witnessed: f64, connected_by: i32) -> Node {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node",
            "metadata": {"name": name},
            "spec": {"peerId": "p", "did": "d", "capacity": {"cpu": "1", "memory": "1Gi"}}
        }))
        .unwrap();
        n.status = Some(NodeStatus {
            reputation: Some(0.8),
            observations: Some(NodeObservations {
                uptime: 1.0,
                bandwidth_bps: 1_000_000_000,
                connected_peers: 50,
                ..Default::default()
            }),
            peer_view: Some(PeerView {
                connected_by,
                witnessed,
                ..Default::default()
            }),
            ..Default::default()
        });
        n
    }

    #[test]
    fn claims_count_as_far_as_they_are_witnessed() {
        let fresh = Liveness::Fresh {
            until: Timestamp::now(),
        };
        let ring = candidate(&node("ring-0", 0.0, 49), fresh, 51, false);
        assert_eq!((ring.uptime, ring.bandwidth_bps), (0.0, 0));
        let honest = candidate(&node("honest", 0.4, 1), fresh, 51, false);
        assert_eq!((honest.uptime, honest.bandwidth_bps), (0.4, 400_000_000));
        assert!(
            (honest.connectivity - 0.02).abs() < 1e-9,
            "one witness, not its 50 claims"
        );
        let anchor = candidate(&node("anchor", 0.0, 0), fresh, 51, true);
        assert_eq!((anchor.uptime, anchor.bandwidth_bps), (1.0, 1_000_000_000));
    }
}

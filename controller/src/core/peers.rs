//! What the agents report about each other over the mesh (`status.observations.peers`, each
//! agent's own field), gathered per node into its `status.peerView`, and when those reports
//! count against the node's service record. Pure: no I/O.
//!
//! Only peers see whether a node gossips honestly: a message with a bad signature or an
//! impossible claim is dropped by the first agent that receives it and never travels further.
//! So a node's own observations cannot tell on it, its peers' can. New invalid gossip from a
//! node counts as one failed outcome in its service record per reconcile that sees it, when it
//! is corroborated: at least two reporters dropped some (or one, when the node has only one
//! other Ready node to report on it), so one lying agent alone cannot sink another node's
//! record. Reports arrive one agent at a time, so the bar is the number of Ready nodes that
//! could report, not the number that have reported so far.
//!
//! Good news needs witnesses of standing: that a node is connected counts only as far as the
//! reporters who say so have standing ([`witness_weight`]), so a ring of fresh identities that
//! report each other connected establishes nothing (`PeerView::witnessed` stays 0).

use univrs_api::enr::reputation;
use univrs_api::resources::node::{NodeObservations, PeerConnection, PeerView};

/// How much a reporter's word counts as a witness, 0 to 1, from its standing (its service
/// record, or 1 for a trust anchor): the rule a vouch of full weight follows.
pub fn witness_weight(standing: f64) -> f64 {
    reputation::vouch_contribution(1.0, standing, &reputation::Config::default())
}

/// The view of `node` in the reports of `reporters` (the observations of the other Ready
/// Nodes, each with its [`witness_weight`]); `None` when none of them reports on it.
pub fn view_of<'a>(
    node: &str,
    reporters: impl IntoIterator<Item = (&'a NodeObservations, f64)>,
) -> Option<PeerView> {
    let mut view = PeerView::default();
    let mut witnesses = Vec::new();
    for (obs, weight) in reporters {
        let Some(r) = obs.peers.iter().find(|p| p.node == node) else {
            continue;
        };
        view.reporters += 1;
        view.connected_by += i32::from(r.connected);
        view.relayed_by += i32::from(r.connected && r.connection == Some(PeerConnection::Relayed));
        if r.connected {
            witnesses.push(weight);
        }
        let invalid = r.invalid_messages.max(0);
        view.invalid_messages = view.invalid_messages.saturating_add(invalid);
        view.reporters_of_invalid += i32::from(invalid > 0);
    }
    // Rounded, so a witness's slowly moving record does not rewrite the view.
    view.witnessed = (reputation::corroboration(witnesses) * 100.0).round() / 100.0;
    (view.reporters > 0).then_some(view)
}

/// Whether `now` shows invalid gossip from the node that `before` (the view last written) did
/// not, dropped by at least two reporters, or by one when `others` (the other Ready nodes, who
/// could report) is one. A reporter that restarts starts counting from zero again, which lowers
/// the total; only growth past what was written counts.
pub fn new_invalid_gossip(before: Option<&PeerView>, now: &PeerView, others: usize) -> bool {
    let seen = before.map_or(0, |b| b.invalid_messages);
    let needed = i32::try_from(others.clamp(1, 2)).unwrap_or(2);
    now.invalid_messages > seen && now.reporters_of_invalid >= needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use univrs_api::resources::node::PeerReport;

    fn obs(reports: &[(&str, bool, i64)]) -> NodeObservations {
        NodeObservations {
            peers: reports
                .iter()
                .map(|(node, connected, invalid)| PeerReport {
                    node: node.to_string(),
                    connected: *connected,
                    invalid_messages: *invalid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_view_adds_up_what_each_reporter_says() {
        let a = obs(&[("x", true, 0), ("y", true, 0)]);
        let b = obs(&[("x", false, 3)]);
        let c = obs(&[("y", true, 0)]);
        let all = || [(&a, 0.4), (&b, 1.0), (&c, 1.0)];
        let view = view_of("x", all()).unwrap();
        assert_eq!(
            view,
            PeerView {
                reporters: 2,
                connected_by: 1,
                invalid_messages: 3,
                reporters_of_invalid: 1,
                witnessed: 0.4,
                relayed_by: 0,
            }
        );
        assert_eq!(view_of("nobody", all()), None);
        // A negative count (the schema refuses it, a mock could send it) adds nothing.
        let liar = obs(&[("x", true, -50)]);
        assert_eq!(view_of("x", [(&liar, 0.0)]).unwrap().invalid_messages, 0);
    }

    #[test]
    fn only_corroborated_growth_counts() {
        let view = |reporters, invalid, of_invalid| PeerView {
            reporters,
            connected_by: reporters,
            invalid_messages: invalid,
            reporters_of_invalid: of_invalid,
            witnessed: 0.0,
            relayed_by: 0,
        };
        // Two of three dropped new invalid gossip: a failure.
        assert!(new_invalid_gossip(None, &view(3, 4, 2), 3));
        // One of three alone: not corroborated.
        assert!(!new_invalid_gossip(None, &view(3, 4, 1), 3));
        // The first report of two that may come: wait for the second.
        assert!(!new_invalid_gossip(None, &view(1, 4, 1), 2));
        // The only other node of a mesh of two is believed.
        assert!(new_invalid_gossip(None, &view(1, 1, 1), 1));
        // Nothing new since the view written last.
        assert!(!new_invalid_gossip(Some(&view(3, 4, 2)), &view(3, 4, 2), 3));
        // A reporter restarted (its count fell to zero), then dropped one more: that one is new
        // only if the total passes what was written.
        assert!(!new_invalid_gossip(Some(&view(3, 4, 2)), &view(3, 3, 2), 3));
        assert!(new_invalid_gossip(Some(&view(3, 4, 2)), &view(3, 5, 2), 3));
        // Clean.
        assert!(!new_invalid_gossip(None, &view(3, 0, 0), 3));
    }

    #[test]
    fn a_ring_of_fresh_identities_witnesses_nothing() {
        let ring: Vec<NodeObservations> = (0..50)
            .map(|i| {
                let peers: Vec<(String, bool, i64)> = (0..50)
                    .filter(|j| *j != i)
                    .map(|j| (format!("ring-{j}"), true, 0))
                    .collect();
                let refs: Vec<(&str, bool, i64)> =
                    peers.iter().map(|(n, c, i)| (n.as_str(), *c, *i)).collect();
                obs(&refs)
            })
            .collect();
        let fresh = witness_weight(0.5);
        let view = view_of("ring-0", ring.iter().map(|o| (o, fresh))).unwrap();
        assert_eq!((view.connected_by, view.witnessed), (49, 0.0));
        let anchor = obs(&[("ring-0", true, 0)]);
        let seen = view_of(
            "ring-0",
            ring.iter()
                .map(|o| (o, fresh))
                .chain([(&anchor, witness_weight(1.0))]),
        )
        .unwrap();
        assert_eq!(seen.witnessed, 1.0, "one anchor is a full witness");
    }
}

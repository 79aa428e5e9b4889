//! The node's own observations in its Node status (`status.observations`, this agent's field
//! manager, with `status.addresses`, where it serves exposed ports): uptime over the last
//! day, what the mesh sees, and a report on each peer that is a Node (connected, invalid
//! gossip dropped from it), which the controller gathers into that Node's `peerView`. Written only when a value changes after rounding, never for a timestamp
//! alone.

use kube::api::Api;
use std::time::Duration;
use univrs_api::resources::node::{Node, NodeAddress, NodeObservations};
use univrs_io::apply::Apply;

use super::uptime::UptimeTracker;
use crate::agent::peers::cluster_view::ClusterView;
use crate::mesh::MeshHandle;

/// Rounds what jitters (uptime to 1%, latency to 1 ms) so small changes do not cause writes.
pub fn rounded(mut o: NodeObservations) -> NodeObservations {
    o.uptime = (o.uptime * 100.0).round() / 100.0;
    o.median_latency_ms = o.median_latency_ms.map(|l| l.round());
    o
}

/// How far a jittery measure moves before it is worth a write: a quarter of what was written.
const JITTER: f64 = 0.25;
/// Below this change in bits per second, bandwidth has not changed (pings and gossip alone
/// move an idle node's figure by a few kbit/s).
const BANDWIDTH_FLOOR_BPS: f64 = 16_000.0;
/// Below this change in milliseconds, a latency has not changed.
const LATENCY_FLOOR_MS: f64 = 2.0;

/// Whether `b` is `a` give or take jitter: within [`JITTER`] of `a`, or within `floor`.
fn near(a: f64, b: f64, floor: f64) -> bool {
    (a - b).abs() <= floor.max(a.abs() * JITTER)
}

/// Whether `new` says something the `last` written observations do not. Bandwidth and
/// latencies jitter while a node is idle: they count as changed only past [`JITTER`] of what
/// was last written, so an idle node's status is not rewritten every look (measured under
/// `univrs up`: every agent wrote every 15 s, as each write moved the bandwidth figure).
pub fn worth_writing(last: &NodeObservations, new: &NodeObservations) -> bool {
    let mut steady = new.clone();
    if near(
        last.bandwidth_bps as f64,
        new.bandwidth_bps as f64,
        BANDWIDTH_FLOOR_BPS,
    ) {
        steady.bandwidth_bps = last.bandwidth_bps;
    }
    let keep = |was: Option<f64>, now: &mut Option<f64>| {
        if let (Some(a), Some(b)) = (was, *now)
            && near(a, b, LATENCY_FLOOR_MS)
        {
            *now = Some(a);
        }
    };
    keep(last.median_latency_ms, &mut steady.median_latency_ms);
    for p in &mut steady.peers {
        if let Some(was) = last.peers.iter().find(|q| q.node == p.node) {
            keep(was.latency_ms, &mut p.latency_ms);
        }
    }
    steady != *last
}

/// What the node writes about itself in its Node status, and where it learns it.
pub struct Observer {
    /// The API client.
    pub client: kube::Client,
    /// The Node's name.
    pub node: String,
    /// The agent's field manager.
    pub manager: String,
    /// Its uptime record.
    pub uptime: UptimeTracker,
    /// Its mesh, if it has one.
    pub mesh: Option<MeshHandle>,
    /// The other Nodes (to name peers).
    pub cluster: ClusterView,
    /// Where it serves exposed ports.
    pub addresses: Vec<NodeAddress>,
    /// How often it looks.
    pub every: Duration,
}

/// Writes observations (and the addresses) every `every`, when they changed.
pub async fn run(o: Observer) {
    let Observer {
        client,
        node,
        manager,
        mut uptime,
        mesh,
        cluster,
        addresses,
        every,
    } = o;
    let api: Api<Node> = Api::all(client);
    let mut last: Option<NodeObservations> = None;
    loop {
        let stats = match &mesh {
            Some(m) => m.stats().await.ok(),
            None => None,
        };
        let mut obs = stats
            .as_ref()
            .map(crate::mesh::observations)
            .unwrap_or_default();
        if let Some(s) = &stats {
            let name_of = |p: &crate::mesh::PeerId| {
                cluster
                    .node_with_peer_id(&p.to_string())
                    .filter(|n| *n != node)
            };
            obs.peers = crate::mesh::peer_reports(s, name_of);
            obs.relays = s.relays.iter().filter_map(name_of).collect();
        }
        // The agent's own record survives restarts; the mesh's covers only this run.
        obs.uptime = uptime.tick();
        let obs = rounded(obs);
        if last.as_ref().is_none_or(|l| worth_writing(l, &obs)) {
            let body = Apply::<Node>::new(&node)
                .status(serde_json::json!({"observations": obs, "addresses": addresses}));
            match body.apply_status(&api, &manager).await {
                Ok(_) => last = Some(obs),
                Err(e) => tracing::warn!("writing the node's observations: {e}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_hides_jitter() {
        let a = NodeObservations {
            uptime: 0.99612,
            median_latency_ms: Some(1.21),
            ..Default::default()
        };
        let b = NodeObservations {
            uptime: 0.99588,
            median_latency_ms: Some(0.93),
            ..Default::default()
        };
        assert_eq!(rounded(a), rounded(b));
    }

    fn idle(bandwidth_bps: i64, latency: f64) -> NodeObservations {
        NodeObservations {
            connected_peers: 2,
            uptime: 0.5,
            bandwidth_bps,
            median_latency_ms: Some(latency),
            peers: vec![univrs_api::resources::node::PeerReport {
                node: "b".into(),
                connected: true,
                latency_ms: Some(latency),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_idle_nodes_jitter_is_not_worth_a_write() {
        let last = idle(5_200, 1.0);
        assert!(!worth_writing(&last, &idle(9_800, 2.0)));
        assert!(!worth_writing(&last, &idle(4_100, 0.0)));
        assert!(!worth_writing(&last, &last.clone()));
    }

    #[test]
    fn real_changes_are_written() {
        let last = idle(100_000, 40.0);
        assert!(worth_writing(&last, &idle(140_000, 40.0)), "bandwidth +40%");
        assert!(worth_writing(&last, &idle(100_000, 60.0)), "latency +50%");
        let mut more = last.clone();
        more.connected_peers = 3;
        assert!(worth_writing(&last, &more), "a peer joined");
        let mut up = last.clone();
        up.uptime = 0.51;
        assert!(worth_writing(&last, &up), "uptime moved a percent");
        let mut bad = last.clone();
        bad.invalid_messages = 1;
        assert!(worth_writing(&last, &bad), "invalid gossip is never jitter");
    }
}

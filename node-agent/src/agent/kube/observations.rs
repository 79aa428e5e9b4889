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
        if last.as_ref() != Some(&obs) {
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
}

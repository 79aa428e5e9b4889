//! Nexus elections: every `Settings::nexus_interval` the leader elects the hubs from what the
//! caches say of the nodes and keeps the result in the context; it wakes the Node controller
//! for each node whose role changed, whose write carries the new `nexusRole` (an external event
//! fed into the controller's queue, not a write from here). Nodes whose role stayed are not
//! woken: waking all 5,000 every 30 s only to find nothing to write was a burst of work.

use crate::core::plan::nexus::{candidate, changed_roles};
use crate::core::snapshot;
use crate::state::context::Context;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use univrs_api::Node;
use univrs_api::enr::nexus::{self, Candidate, Election};
use univrs_api::resources::node::NexusRole;

/// The candidates as the caches see them at `now`.
pub fn candidates(ctx: &Context, now: Timestamp) -> Vec<Candidate> {
    let nodes = ctx.nodes.state();
    nodes
        .iter()
        .map(|n| {
            let lease = ctx.lease_of(&n.name_any());
            candidate(
                n,
                snapshot::liveness(lease.as_deref(), now, ctx.settings.node_lease_duration),
                nodes.len(),
                ctx.settings.trust_anchors.contains(&n.spec.did),
            )
        })
        .collect()
}

/// Runs one election and returns the nodes whose role changed.
pub fn elect_once(ctx: &Context, now: Timestamp) -> Vec<String> {
    let result = nexus::elect(&candidates(ctx, now), &nexus::Config::default());
    let mut current = ctx.election.write().unwrap_or_else(|e| e.into_inner());
    let changed = changed_roles(&current, &result);
    *current = result;
    changed
}

/// Elects every interval until the controller stops.
pub async fn run_elections(ctx: Arc<Context>, wake_nodes: UnboundedSender<ObjectRef<Node>>) {
    ctx.synced().await;
    loop {
        for node in elect_once(&ctx, Timestamp::now()) {
            if wake_nodes.unbounded_send(ObjectRef::new(&node)).is_err() {
                return;
            }
        }
        tokio::time::sleep(ctx.settings.nexus_interval).await;
    }
}

/// The role a node holds after the latest election, if it took part.
pub fn role_of(ctx: &Context, node: &str) -> Option<NexusRole> {
    let e: &Election = &ctx.election.read().unwrap_or_else(|e| e.into_inner());
    e.roles.get(node).copied()
}

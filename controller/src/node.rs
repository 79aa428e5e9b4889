//! The Node reconciler: Ready from the agent's Lease, what is allocated there, and whether the
//! node's names really are one key.

use crate::context::{Context, apply_status, lease_name};
use crate::error::Error;
use crate::snapshot::{self, Liveness};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use univrs_api::Node;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::identity::PublicIdentity;
use univrs_api::quantity::Quantity;
use univrs_api::resources::node::{CONDITION_ISOLATED, CONDITION_READY, SeptalState};

/// Whether the node's PeerId and DID name the same key.
fn identity_consistent(node: &Node) -> Result<(), String> {
    let from_peer = PublicIdentity::from_peer_id(&node.spec.peer_id).map_err(|e| e.to_string())?;
    let from_did = PublicIdentity::from_did(&node.spec.did).map_err(|e| e.to_string())?;
    if from_peer == from_did {
        Ok(())
    } else {
        Err("spec.peerId and spec.did are different keys".into())
    }
}

/// Reconciles one Node.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Timestamp::now();
    let name = node.name_any();
    let lease = ctx
        .leases
        .state()
        .into_iter()
        .find(|l| l.name_any() == lease_name(&name));
    let live = snapshot::liveness(lease.as_deref(), now);
    let ready = match (&live, identity_consistent(&node)) {
        (_, Err(why)) => DesiredCondition::new(CONDITION_READY, false, "IdentityMismatch", why),
        (Liveness::Fresh { .. }, Ok(())) => DesiredCondition::new(
            CONDITION_READY,
            true,
            "LeaseRenewed",
            "the agent renews its Lease",
        ),
        (Liveness::Lapsed { since }, Ok(())) => DesiredCondition::new(
            CONDITION_READY,
            false,
            "LeaseExpired",
            format!("the agent's Lease lapsed at {since}"),
        ),
        (Liveness::Missing, Ok(())) => DesiredCondition::new(
            CONDITION_READY,
            false,
            "NoLease",
            format!("no Lease univrs-system/{}", lease_name(&name)),
        ),
    };
    let isolated = node
        .status
        .as_ref()
        .and_then(|s| s.septal.as_ref())
        .is_some_and(|s| s.state == SeptalState::Isolated);
    let isolated = if isolated {
        DesiredCondition::new(
            CONDITION_ISOLATED,
            true,
            "SeptalGateTripped",
            "the septal gate isolates this node",
        )
    } else {
        DesiredCondition::new(
            CONDITION_ISOLATED,
            false,
            "Connected",
            "the septal gate lets traffic through",
        )
    };
    let generation = node.metadata.generation;
    let current = node.status.clone().unwrap_or_default();
    let mut conditions = current.conditions.clone();
    let was_ready = univrs_api::conditions::is_true(&conditions, CONDITION_READY);
    let mut changed = false;
    for c in [ready.clone(), isolated] {
        changed |= set_condition(&mut conditions, c.at_generation(generation), Time(now));
    }
    let allocations = snapshot::allocations(&ctx.workloads.state(), None);
    let (used, count) = allocations.get(&name).copied().unwrap_or_default();
    let allocated = serde_json::json!({
        "cpu": Quantity::from_millicores(used.cpu_millis),
        "memory": Quantity::from_bytes(used.memory_bytes),
        "gpu": used.gpus,
    });
    changed |= current.observed_generation != generation
        || current.instances != Some(count as i32)
        || serde_json::to_value(&current.allocated).ok() != Some(allocated.clone());
    if changed {
        let status = serde_json::json!({
            "observedGeneration": generation,
            "allocated": allocated,
            "instances": count,
            "conditions": conditions,
        });
        apply_status(&Api::<Node>::all(ctx.client.clone()), &name, None, status).await?;
        let now_ready = ready.status == univrs_api::conditions::TRUE;
        if now_ready != was_ready {
            let (type_, reason) = if now_ready {
                (EventType::Normal, "NodeReady")
            } else {
                (EventType::Warning, "NodeNotReady")
            };
            crate::workload::publish(
                &ctx,
                &node.object_ref(&()),
                type_,
                reason,
                ready.message.clone(),
            )
            .await;
        }
    }
    // Look again just after the Lease would lapse, so Ready turns False on time.
    let requeue = match live {
        Liveness::Fresh { until } => {
            until.duration_since(now).unsigned_abs() + Duration::from_millis(500)
        }
        _ => ctx.settings.resync,
    };
    Ok(Action::requeue(requeue.min(ctx.settings.resync)))
}

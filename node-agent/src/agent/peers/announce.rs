//! What the agent tells its peers: its start and every change of an instance's phase or
//! readiness on workload/status, and the vouches its own key signed on vouch/attestation. What
//! peers claim is checked against the cluster (`cluster_view`); what they see of each other
//! (peers, latency, invalid messages) becomes Node observations (`kube::observations`).

use super::cluster_view::ClusterView;
use crate::agent::instances::reports::Reports;
use crate::mesh::{MeshError, MeshHandle};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeSet;
use std::time::Duration;
use univrs_api::gossip::{ClusterEvent, GossipBody, WorkloadStatusReport};
use univrs_api::resources::vouch::VouchSpec;

/// How soon a vouch that found no subscribed peer is tried again.
const VOUCH_RETRY: Duration = Duration::from_secs(5);

/// The vouches this node may announce: Vouch objects signed by its key (`did`) that verify now
/// and whose voucher and subject the cluster knows (peers reject anything else, and would
/// penalize us for it).
pub fn own_vouches(view: &ClusterView, did: &str, now: &Time) -> Vec<VouchSpec> {
    view.vouches()
        .iter()
        .map(|v| &v.spec)
        .filter(|spec| spec.voucher == did && spec.verify(now).is_ok())
        .filter(|spec| {
            view.check_now(&GossipBody::VouchAttestation((*spec).clone()))
                .is_ok()
        })
        .cloned()
        .collect()
}

/// Publishes on vouch/attestation every vouch of [`own_vouches`]: each new one as soon as the
/// Vouch cache shows it (retried every few seconds while no peer subscribes), and all of them
/// again every `interval`, so peers that join later hear them too.
pub async fn vouches(did: String, mesh: MeshHandle, view: ClusterView, interval: Duration) {
    view.ready().await;
    let mut changes = view.vouch_changes();
    // Signatures published since the last round.
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let mut round = tokio::time::interval(interval);
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = round.tick() => announced.clear(),
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(VOUCH_RETRY) => {}
        }
        let now = Time(Timestamp::now());
        for spec in own_vouches(&view, &did, &now) {
            if announced.contains(&spec.signature) {
                continue;
            }
            let signature = spec.signature.clone();
            match mesh.publish(spec).await {
                Ok(()) => {
                    tracing::debug!(%signature, "announced a vouch");
                    announced.insert(signature);
                }
                Err(MeshError::NoPeers { .. }) => {}
                Err(e) => tracing::warn!("announcing a vouch: {e}"),
            }
        }
    }
}

/// Announces the agent's start, then every change of an instance's phase or readiness.
pub async fn instance_reports(node: String, mesh: MeshHandle, reports: Reports) {
    let mut changes = reports.subscribe();
    let _ = mesh
        .publish(ClusterEvent {
            node: node.clone(),
            reason: "AgentStarted".into(),
            message: format!("the agent of {node} joined the mesh"),
        })
        .await;
    let mut last: std::collections::BTreeMap<String, (String, bool)> = Default::default();
    loop {
        let (id, report) = match changes.recv().await {
            Ok(c) => c,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let Some(r) = report else {
            last.remove(&id);
            continue;
        };
        let key = (format!("{:?}", r.phase), r.ready);
        if last.get(&id) == Some(&key) {
            continue;
        }
        last.insert(id, key);
        let msg = WorkloadStatusReport {
            namespace: r.namespace,
            workload: r.workload,
            instance: r.instance,
            node: node.clone(),
            phase: r.phase,
            ready: Some(r.ready),
            message: r.message,
        };
        if let Err(e) = mesh.publish(msg).await {
            tracing::debug!("publishing an instance report: {e}");
        }
    }
}

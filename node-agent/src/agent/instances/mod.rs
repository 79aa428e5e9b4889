//! The instances the controller places on this node, run as containers: from what should run
//! to what runs, and what the agent remembers and reports of each.
//!
//! - [`desired`]: what should run here, a pure function of the Workload cache ([`Placement`]s
//!   and specs), with the names of containers and network namespaces;
//! - `supervisor`: one task per instance — images, network, containers, restarts with
//!   backoff, probes, usage, Events, and the graceful stop and clean-up;
//! - [`sandbox`]: what a container needs around it (image, root filesystem, network);
//! - [`policy`]: the node owner's terms (limits every container gets, host ports);
//! - [`probe`]: liveness and readiness probes;
//! - [`records`]: what the agent remembers of each instance on disk, so a restarted agent
//!   re-adopts its containers;
//! - [`reports`]: what each supervisor tells the rest of the agent.
//!
//! Who writes what: each instance's supervisor alone writes its record
//! (`<data>/instances/<id>.json`) and its report; [`Supervisors`] writes only the first record
//! of a new placement, before its supervisor starts. The reports are read by the Workload status
//! writer (`kube::workload_status`), the announcer on the mesh (`peers::announce`) and the API.
//!
//! [`Placement`]: desired::Placement

pub mod desired;
pub mod policy;
pub mod probe;
pub mod records;
pub mod reports;
pub mod sandbox;
mod supervisor;

pub use supervisor::Deps;

use desired::DesiredInstance;
use kube::runtime::reflector::Store;
use records::InstanceRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;
use univrs_api::resources::workload::Workload;

/// The supervisors of this node's instances, by instance id; each learns what should run
/// through its own channel (`None`: stop and clean up).
pub struct Supervisors {
    deps: Arc<Deps>,
    running: BTreeMap<String, watch::Sender<Option<DesiredInstance>>>,
}

impl Supervisors {
    /// No supervisors yet.
    pub fn new(deps: Arc<Deps>) -> Self {
        Self {
            deps,
            running: BTreeMap::new(),
        }
    }

    /// How many supervisors run.
    pub fn count(&self) -> usize {
        self.running.len()
    }

    /// Starts supervisors for the instances recorded on disk (re-adoption) and removes
    /// containers that no record claims (orphans of a crash between starting a container and
    /// saving its record cannot happen: the record is saved first; these are leftovers of
    /// removed records).
    pub async fn adopt(&mut self, store: &Store<Workload>) {
        let desired = desired::desired_on(&self.deps.node, store.state().iter());
        let records = self.deps.records.load_all();
        let mut claimed: BTreeSet<String> = BTreeSet::new();
        for rec in records {
            for c in rec.containers.values() {
                claimed.insert(c.id.clone());
            }
            let want = desired.get(&rec.placement.id).cloned();
            tracing::info!(instance = %rec.placement.id, keep = want.is_some(), "re-adopting");
            self.spawn(rec, want);
        }
        let rt = self.deps.runtime.clone();
        let orphans = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for id in rt.list().unwrap_or_default() {
                if !claimed.contains(&id) {
                    if let Err(e) = rt.delete(&id) {
                        tracing::warn!(container = %id, "removing an orphan container: {e}");
                    } else {
                        removed.push(id);
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or_default();
        for id in orphans {
            tracing::info!(container = %id, "removed an orphan container");
        }
    }

    /// Starts, updates and stops supervisors to match the instances placed on this node.
    pub fn sync(&mut self, store: &Store<Workload>) {
        let desired = desired::desired_on(&self.deps.node, store.state().iter());
        // Finished supervisors (their instance was cleaned up) are forgotten.
        self.running.retain(|_, tx| !tx.is_closed());
        for (id, tx) in self.running.iter() {
            let want = desired.get(id).cloned();
            tx.send_if_modified(|cur| {
                if *cur != want {
                    *cur = want;
                    true
                } else {
                    false
                }
            });
        }
        for (id, d) in desired {
            if self.running.contains_key(&id) {
                continue;
            }
            let rec = InstanceRecord::from(&d);
            // Saved before anything is created, so a crash right after leaves nothing unclaimed.
            if let Err(e) = self.deps.records.save(&rec) {
                tracing::warn!(instance = %rec.placement.id, "saving the instance record: {e}");
                continue;
            }
            tracing::info!(instance = %rec.placement.id, workload = %format!("{}/{}", d.placement.namespace, d.placement.workload), "starting an instance");
            self.spawn(rec, Some(d));
        }
    }

    fn spawn(&mut self, rec: InstanceRecord, want: Option<DesiredInstance>) {
        let (tx, rx) = watch::channel(want);
        self.running.insert(rec.placement.id.clone(), tx);
        tokio::spawn(supervisor::supervise(self.deps.clone(), rec, rx));
    }
}

//! What each instance's supervisor tells the status writer: the agent's view of one instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast};
use univrs_api::resources::workload::{InstancePhase, InstanceUsage};

/// The agent's observations of one instance, as written into the Workload's status.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReport {
    /// The Workload's namespace.
    pub namespace: String,
    /// The Workload's name.
    pub workload: String,
    /// The instance name.
    pub instance: String,
    /// Where it is in its life.
    pub phase: InstancePhase,
    /// Whether every container runs and passes its readiness probe.
    pub ready: bool,
    /// Restarts of all its containers.
    pub restarts: i32,
    /// When its containers last all started.
    pub started_at: Option<Time>,
    /// What is going on, for people (`pulling image …`, `back-off …`).
    pub message: Option<String>,
    /// Cumulative usage of this placement.
    pub usage: InstanceUsage,
    /// The runtime ids of its containers (for logs).
    pub containers: Vec<String>,
    /// Its address on the node's container network, once it has one.
    pub ip: Option<String>,
}

/// A change: an instance id and its new report, or None when it left the node.
pub type Change = (String, Option<InstanceReport>);

/// Reports by instance id, shared by the supervisors (writers), the status writer and the API.
#[derive(Debug, Clone)]
pub struct Reports {
    inner: Arc<Mutex<BTreeMap<String, InstanceReport>>>,
    changed: Arc<Notify>,
    changes: broadcast::Sender<Change>,
}

impl Default for Reports {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changed: Arc::default(),
            changes: broadcast::channel(256).0,
        }
    }
}

impl Reports {
    /// Sets the report of instance `id`, waking the status writer when it changed.
    pub fn set(&self, id: &str, report: InstanceReport) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id) != Some(&report) {
            map.insert(id.to_string(), report.clone());
            self.changed.notify_one();
            let _ = self.changes.send((id.to_string(), Some(report)));
        }
    }

    /// Drops the report of instance `id` (it left this node).
    pub fn remove(&self, id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(id).is_some() {
            self.changed.notify_one();
            let _ = self.changes.send((id.to_string(), None));
        }
    }

    /// A copy of every report.
    pub fn snapshot(&self) -> BTreeMap<String, InstanceReport> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every change from now on (for the API's event stream).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Resolves when a report changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

//! What each instance's supervisor tells the status writer: the agent's view of one instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
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
}

/// Reports by instance id, shared by the supervisors (writers) and the status writer.
#[derive(Debug, Default, Clone)]
pub struct Reports {
    inner: Arc<Mutex<BTreeMap<String, InstanceReport>>>,
    changed: Arc<Notify>,
}

impl Reports {
    /// Sets the report of instance `id`, waking the status writer when it changed.
    pub fn set(&self, id: &str, report: InstanceReport) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id) != Some(&report) {
            map.insert(id.to_string(), report);
            self.changed.notify_one();
        }
    }

    /// Drops the report of instance `id` (it left this node).
    pub fn remove(&self, id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.remove(id).is_some() {
            self.changed.notify_one();
        }
    }

    /// A copy of every report.
    pub fn snapshot(&self) -> BTreeMap<String, InstanceReport> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resolves when a report changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

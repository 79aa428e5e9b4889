//! Writes the agent's observations of its instances into their Workloads' status: phase,
//! readiness, restarts, start time, message and metered usage, with this agent's own
//! server-side-apply field manager, so the controller's fields and other agents' instances are
//! never touched.
//!
//! Each write carries the resourceVersion it was computed from: if the controller moved an
//! instance away meanwhile, the write is refused (409) instead of re-creating an entry the
//! controller removed. Nothing is written when nothing changed; usage alone is written at most
//! once per usage interval (it is cumulative, so nothing is lost by waiting).

use crate::agent::instances::reports::{InstanceReport, Reports};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use univrs_api::resources::workload::{Instance, Workload};
use univrs_io::apply::Apply;

/// The status writer of one agent.
pub struct StatusWriter {
    client: kube::Client,
    node: String,
    manager: String,
    store: Store<Workload>,
    reports: Reports,
    usage_interval: Duration,
    last_usage_write: BTreeMap<(String, String), Instant>,
    /// Changes of the Workload cache.
    store_changes: tokio::sync::watch::Receiver<u64>,
    /// A write of the last round was refused (409): retry as soon as the cache changes.
    conflicted: bool,
}

impl StatusWriter {
    /// A writer for `node`'s agent, applying with the field manager `manager`.
    pub fn new(
        client: kube::Client,
        node: &str,
        manager: String,
        store: Store<Workload>,
        store_changes: tokio::sync::watch::Receiver<u64>,
        reports: Reports,
        usage_interval: Duration,
    ) -> Self {
        Self {
            client,
            node: node.to_string(),
            manager,
            store,
            reports,
            usage_interval,
            last_usage_write: BTreeMap::new(),
            store_changes,
            conflicted: false,
        }
    }

    /// Writes whenever a report changes, and looks again every second (usage, retries). After
    /// a refused write (the Workload changed meanwhile, e.g. the controller's own status write)
    /// it also looks again as soon as the cache has the new version, instead of a second later.
    pub async fn run(mut self) {
        loop {
            let retry = self.conflicted;
            tokio::select! {
                _ = self.reports.changed() => {}
                r = self.store_changes.changed(), if retry => {
                    if r.is_err() {
                        // The cache is gone: the agent is stopping.
                        return;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.round().await;
        }
    }

    async fn round(&mut self) {
        self.store_changes.borrow_and_update();
        self.conflicted = false;
        let reports = self.reports.snapshot();
        let mut by_workload: BTreeMap<(String, String), Vec<&InstanceReport>> = BTreeMap::new();
        for r in reports.values() {
            by_workload
                .entry((r.namespace.clone(), r.workload.clone()))
                .or_default()
                .push(r);
        }
        // Workloads where this agent still owns status fields but none of whose instances the
        // controller places here any more. (Not merely "no report yet": a restarted agent's
        // supervisors report a moment after it starts, and its fields must not blink out.)
        let mut release: BTreeSet<(String, String)> = BTreeSet::new();
        for wl in self.store.state() {
            let key = (wl.namespace().unwrap_or_default(), wl.name_any());
            if !by_workload.contains_key(&key) && !self.placed_here(&wl) && self.owns_status(&wl) {
                release.insert(key);
            }
        }
        for (key, reps) in by_workload {
            let Some(wl) = self.store.get(&ObjectRef::new(&key.1).within(&key.0)) else {
                continue;
            };
            let current: BTreeMap<&str, &Instance> = wl
                .status
                .iter()
                .flat_map(|s| s.instances.iter())
                .map(|i| (i.name.as_str(), i))
                .collect();
            // Only instances the controller still places here, at this placement.
            let ours: Vec<&InstanceReport> = reps
                .into_iter()
                .filter(|r| {
                    current.get(r.instance.as_str()).is_some_and(|i| {
                        i.node.as_deref() == Some(self.node.as_str())
                            && i.placed_at.as_ref() == Some(&r.usage.placed_at)
                    })
                })
                .collect();
            let mut usage_only = true;
            let mut changed = false;
            for r in &ours {
                let cur = current.get(r.instance.as_str());
                let same_state = cur.is_some_and(|c| {
                    c.phase == Some(r.phase)
                        && c.ready == Some(r.ready)
                        && c.restarts == Some(r.restarts)
                        && c.started_at == r.started_at
                        && c.message == r.message
                        && c.ip == r.ip
                });
                let same_usage = cur.is_some_and(|c| c.usage.as_ref() == Some(&r.usage));
                changed |= !same_state || !same_usage;
                usage_only &= same_state;
            }
            if ours.is_empty() {
                if !self.placed_here(&wl) && self.owns_status(&wl) {
                    release.insert(key);
                }
                continue;
            }
            if !changed {
                continue;
            }
            if usage_only
                && self
                    .last_usage_write
                    .get(&key)
                    .is_some_and(|t| t.elapsed() < self.usage_interval)
            {
                continue;
            }
            let entries: Vec<serde_json::Value> = ours.iter().map(|r| entry(r)).collect();
            if self
                .apply(
                    &key,
                    wl.resource_version(),
                    serde_json::json!({"instances": entries}),
                )
                .await
            {
                self.last_usage_write.insert(key, Instant::now());
            }
        }
        for key in release {
            let rv = self
                .store
                .get(&ObjectRef::new(&key.1).within(&key.0))
                .and_then(|w| w.resource_version());
            self.apply(&key, rv, serde_json::json!({})).await;
            self.last_usage_write.remove(&key);
        }
    }

    /// Whether the controller places any instance of `wl` on this node.
    fn placed_here(&self, wl: &Workload) -> bool {
        wl.status
            .iter()
            .flat_map(|s| s.instances.iter())
            .any(|i| i.node.as_deref() == Some(self.node.as_str()))
    }

    /// Whether this agent's field manager owns anything in `wl`'s status.
    fn owns_status(&self, wl: &Workload) -> bool {
        wl.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some(self.manager.as_str())
                && m.subresource.as_deref() == Some("status")
                && m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.to_string().contains("f:instances"))
        })
    }

    /// Applies this agent's part of the status; returns whether it was written.
    async fn apply(
        &mut self,
        (ns, name): &(String, String),
        resource_version: Option<String>,
        status: serde_json::Value,
    ) -> bool {
        let api: Api<Workload> = Api::namespaced(self.client.clone(), ns);
        let body = Apply::<Workload>::new(name)
            .resource_version(resource_version)
            .status(status);
        let t = Instant::now();
        let written = body.apply_status(&api, &self.manager).await;
        tracing::debug!(workload = %format!("{ns}/{name}"), ms = t.elapsed().as_secs_f64() * 1e3, ok = written.is_ok(), "status write");
        match written {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                // Changed or gone meanwhile: the next round sees the new version.
                tracing::debug!(workload = %format!("{ns}/{name}"), "status write skipped: {}", e.message);
                self.conflicted |= e.code == 409;
                false
            }
            Err(e) => {
                tracing::warn!(workload = %format!("{ns}/{name}"), "writing instance status: {e}");
                false
            }
        }
    }
}

/// One instance entry as this agent applies it.
fn entry(r: &InstanceReport) -> serde_json::Value {
    let mut v = serde_json::json!({
        "name": r.instance,
        "phase": r.phase,
        "ready": r.ready,
        "restarts": r.restarts,
        "usage": r.usage,
    });
    if let Some(t) = &r.started_at {
        v["startedAt"] = serde_json::to_value(t).unwrap_or_default();
    }
    if let Some(m) = &r.message {
        v["message"] = m.clone().into();
    }
    if let Some(ip) = &r.ip {
        v["ip"] = ip.clone().into();
    }
    v
}

//! What every reconcile gets: the client, the reflector caches, the node index, the queues,
//! the settings, the Event publisher and the metrics.

use crate::state::index::NodeIndex;
use crate::state::queues::Queues;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::reflector::Store;
use std::collections::BTreeSet;
use std::time::Duration;
use univrs_api::resources::node::{LEASE_NAMESPACE, lease_name};
use univrs_api::{CreditLine, Node, Vouch, Workload};

/// The field manager of every controller write, and the reporter of its Events.
pub const FIELD_MANAGER: &str = "univrs-controller";

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a node may be NotReady before its instances move elsewhere.
    pub node_grace_period: Duration,
    /// How long a node's Lease counts as fresh after its last renewal (the node's own
    /// `leaseDurationSeconds` is ignored: it is the node's to write).
    pub node_lease_duration: Duration,
    /// How often every object is reconciled even without a change.
    pub resync: Duration,
    /// How often the nexus hubs are elected.
    pub nexus_interval: Duration,
    /// DIDs whose vouches count with a perfect standing (the community's founding machines).
    pub trust_anchors: BTreeSet<String>,
    /// How much witnessed Ready service counts as one successful outcome in a node's service
    /// record (an hour; tests compress it).
    pub service_period: Duration,
    /// How often the revival pool pays a tenth of what it holds back out.
    pub revival_interval: Duration,
    /// How long a node may stay lost (its Lease lapsed) before its credit is settled through
    /// the revival pool, as if it had left (it stays a Node and may come back).
    pub revival_grace: Duration,
    /// The ClusterRole a joined node is bound to on approval (the chart's `<release>-node`).
    pub node_cluster_role: String,
    /// How long an auction for an instance takes bids (see `core::auction`).
    pub auction_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_grace_period: Duration::from_secs(40),
            node_lease_duration: Duration::from_secs(40),
            resync: Duration::from_secs(300),
            nexus_interval: Duration::from_secs(30),
            trust_anchors: BTreeSet::new(),
            service_period: Duration::from_secs(3600),
            revival_interval: Duration::from_secs(3600),
            revival_grace: Duration::from_secs(3 * 24 * 3600),
            node_cluster_role: univrs_api::system::NODE_CLUSTER_ROLE.to_string(),
            auction_window: Duration::from_secs(3),
        }
    }
}

impl Settings {
    /// The node-health rules the plans apply.
    pub fn node_health(&self) -> crate::core::plan::workload::NodeHealth {
        crate::core::plan::workload::NodeHealth {
            lease_duration: self.node_lease_duration,
            grace: self.node_grace_period,
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Every Node.
    pub nodes: Store<Node>,
    /// Every Workload.
    pub workloads: Store<Workload>,
    /// The node Leases.
    pub leases: Store<Lease>,
    /// Every CreditLine.
    pub credit_lines: Store<CreditLine>,
    /// Every Vouch.
    pub vouches: Store<Vouch>,
    /// The scheduler's node views and per-node allocations, kept by the watch feeds.
    pub index: std::sync::Mutex<NodeIndex>,
    /// The controllers' queues, for reconcilers that learn of a change by their own write.
    pub queues: Queues,
    /// Settings.
    pub settings: Settings,
    /// Publishes Events (as [`FIELD_MANAGER`], from this pod).
    pub events: univrs_io::events::Publisher,
    /// Prometheus metrics.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// True once every cache has its first full list (see [`Context::synced`]).
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The latest nexus election.
    pub election: std::sync::RwLock<univrs_api::enr::nexus::Election>,
    /// Per node, since when a change of what is allocated there waits to be written.
    pub allocation_pending: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Consecutive failures per object (`Kind/namespace/name`), for exponential backoff.
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The secret keys of the auctions this controller opened, by auction id (memory only: a
    /// restarted or new leader cannot open their bids, and opens new auctions instead).
    pub auction_keys: std::sync::Mutex<crate::core::auction::Keys>,
}

impl Context {
    /// The node index, locked. Hold it only for in-memory work: never across an await.
    pub fn index(&self) -> std::sync::MutexGuard<'_, NodeIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The nodes whose allocation report waits (see `reconcile::node`), locked.
    pub fn allocation_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.allocation_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The keys of open auctions, locked. Never held across an await.
    pub fn auction_keys(&self) -> std::sync::MutexGuard<'_, crate::core::auction::Keys> {
        self.auction_keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Lease of `node`, from the cache (a keyed lookup, not a scan).
    pub fn lease_of(&self, node: &str) -> Option<std::sync::Arc<Lease>> {
        self.leases.get(
            &kube::runtime::reflector::ObjectRef::new(&lease_name(node)).within(LEASE_NAMESPACE),
        )
    }

    /// Waits until every cache has its first full list, so no decision is made on a partial
    /// view (an empty node cache would read as "no nodes exist").
    pub async fn synced(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Marks the caches synced once each has listed. Run once, in one task: a store's own
    /// `wait_until_ready` wakes only the last of several concurrent waiters, which hung
    /// reconciles forever; a watch channel wakes them all.
    pub async fn mark_synced_when_listed(&self, ready: tokio::sync::watch::Sender<bool>) {
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.workloads.wait_until_ready().await;
        let _ = self.leases.wait_until_ready().await;
        let _ = self.credit_lines.wait_until_ready().await;
        let _ = self.vouches.wait_until_ready().await;
        let _ = ready.send(true);
    }
}

//! The node's sealed asks in open auctions: its own Node's `status.bids` (see
//! `univrs_api::bid`, and the rules in the controller's `core::auction`).
//!
//! For every Workload whose `status.auction` names this node, before its close, the agent asks
//! its rates' price for an hour of the instance's request (`univrs_api::bid::reserve`: in a
//! second-price auction, asking what the work costs is the best strategy), signed with the
//! node's key and sealed to the auction's, so no other node reads it. Each ask is sealed once
//! per auction and kept until the auction leaves the Workload's status. The bids are applied with their own field manager (`<agent's>-bids`), so that
//! applying the current set withdraws the bids of auctions that are over and touches nothing
//! else of the status.

use crate::agent::peers::cluster_view::ClusterView;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::reflector::Store;
use std::collections::BTreeMap;
use std::time::Duration;
use univrs_api::bid::{Terms, reserve};
use univrs_api::identity::{NodeIdentity, PublicIdentity};
use univrs_api::resources::node::{Node, SealedBid};
use univrs_api::resources::workload::Workload;
use univrs_io::apply::Apply;

/// What the bidder needs.
pub struct Bidder {
    /// The API client.
    pub client: kube::Client,
    /// This node.
    pub node: String,
    /// The agent's field manager (the bids are written as `<manager>-bids`).
    pub manager: String,
    /// The node's key.
    pub identity: NodeIdentity,
    /// Every Workload.
    pub workloads: Store<Workload>,
    /// The Nodes (for this node's rates).
    pub cluster: ClusterView,
}

/// This node's bids for the auctions among `workloads` that name it: those already sealed (by
/// auction id) are kept as they are until the auction leaves the Workload's status (the
/// controller opens them a moment after the close), and new ones are sealed by `seal` (None:
/// no ask to make) only before the close, at `now`.
pub fn wanted(
    node: &str,
    workloads: &[std::sync::Arc<Workload>],
    now: Timestamp,
    sealed: &BTreeMap<String, SealedBid>,
    mut seal: impl FnMut(&Workload, &univrs_api::resources::workload::Auction) -> Option<SealedBid>,
) -> BTreeMap<String, SealedBid> {
    let mut out = BTreeMap::new();
    for wl in workloads {
        let Some(a) = wl.status.as_ref().and_then(|s| s.auction.as_ref()) else {
            continue;
        };
        if !a.nodes.iter().any(|n| n == node) {
            continue;
        }
        let bid = match sealed.get(&a.id) {
            Some(b) => Some(b.clone()),
            None if now < a.closes_at.0 => seal(wl, a),
            None => None,
        };
        if let Some(b) = bid {
            out.insert(a.id.clone(), b);
        }
    }
    out
}

impl Bidder {
    /// Bids in every auction that names this node, until the agent stops.
    pub async fn run(self, mut changes: tokio::sync::watch::Receiver<u64>) {
        let api: Api<Node> = Api::all(self.client.clone());
        let manager = format!("{}-bids", self.manager);
        let mut written: Option<BTreeMap<String, SealedBid>> = None;
        loop {
            let current = written.clone().unwrap_or_default();
            let bids = wanted(
                &self.node,
                &self.workloads.state(),
                Timestamp::now(),
                &current,
                |wl, a| self.seal(wl, a),
            );
            if written.as_ref() != Some(&bids) {
                let list: Vec<&SealedBid> = bids.values().collect();
                let body = Apply::<Node>::new(&self.node).status(serde_json::json!({"bids": list}));
                match body.apply_status(&api, &manager).await {
                    Ok(_) => written = Some(bids),
                    Err(e) => tracing::warn!("writing the node's bids: {e}"),
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                // A failed write, or rates not yet in the cache, is retried.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    /// This node's sealed ask in auction `a` of `wl`, or None when it cannot make one.
    fn seal(
        &self,
        wl: &Workload,
        a: &univrs_api::resources::workload::Auction,
    ) -> Option<SealedBid> {
        let workload = univrs_api::bid::workload_name(wl);
        // Only Auction-priced nodes are named, so this node has rates (unless they changed).
        let rates = self.cluster.pricing_of(&self.node)?;
        let result = PublicIdentity::from_did(&a.seal_key)
            .map_err(|e| e.to_string())
            .and_then(|key| {
                let amount = reserve(&wl.spec, &rates).map_err(|e| e.to_string())?;
                let terms = Terms {
                    auction: &a.id,
                    workload: &workload,
                    instance: &a.instance,
                };
                let sealed = terms
                    .seal(&self.identity, &key, amount)
                    .map_err(|e| e.to_string())?;
                tracing::info!(%workload, instance = %a.instance, auction = %a.id, amount, "bidding");
                Ok(sealed)
            });
        match result {
            Ok(sealed) => Some(SealedBid {
                auction: a.id.clone(),
                workload,
                instance: a.instance.clone(),
                sealed,
            }),
            Err(e) => {
                tracing::warn!(%workload, auction = %a.id, "cannot bid: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn workload(name: &str, nodes: &[&str], closes_at: i64) -> Arc<Workload> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
                "status": {"auction": {"id": format!("{name}-auction"), "instance": format!("{name}-0"),
                    "nodes": nodes, "closesAt": Timestamp::from_second(closes_at).unwrap().to_string(),
                    "sealKey": "did:key:x"}}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn bids_only_in_open_auctions_that_name_the_node_each_sealed_once() {
        let all = [
            workload("web", &["alpha", "beta"], 100),
            workload("db", &["beta"], 100),
            workload("old", &["alpha"], 50),
        ];
        let now = Timestamp::from_second(60).unwrap();
        let sealed = std::cell::Cell::new(0);
        let seal = |wl: &Workload, a: &univrs_api::resources::workload::Auction| {
            sealed.set(sealed.get() + 1);
            Some(SealedBid {
                auction: a.id.clone(),
                workload: wl.metadata.name.clone().unwrap(),
                instance: a.instance.clone(),
                sealed: format!("v1.{}", sealed.get()),
            })
        };
        let first = wanted("alpha", &all, now, &BTreeMap::new(), seal);
        assert_eq!(first.keys().collect::<Vec<_>>(), ["web-auction"]);
        // Kept as sealed the first time, not sealed again (a new ciphertext each time would
        // rewrite the status for nothing).
        let again = wanted("alpha", &all, now, &first, seal);
        assert_eq!(again, first);
        assert_eq!(sealed.get(), 1);
        // After the close nothing new is sealed, but what was is kept until the controller has
        // opened it (the auction leaves the status), then withdrawn.
        let later = Timestamp::from_second(100).unwrap();
        assert_eq!(wanted("alpha", &all, later, &first, seal), first);
        assert!(wanted("beta", &all, later, &BTreeMap::new(), seal).is_empty());
        assert!(wanted("alpha", &all[1..], later, &first, seal).is_empty());
        assert_eq!(sealed.get(), 1);
    }
}

//! The agent's cached view of the cluster for the mesh: Nodes (who is a member, under which
//! DID) and Vouches, each watched once. It checks what gossip claims against the cluster (the
//! mesh's [`ClaimCheck`]): the API server stays the source of truth, and a peer that claims
//! what the cluster contradicts is treated like one that forges signatures.
//!
//! What is impossible:
//! - a vouch whose voucher, or whose subject, is no Node's DID (`UnknownVoucher`,
//!   `UnknownSubject`);
//! - a transfer whose `from` is not `node/<name>` of a Node whose `spec.did` is the payer
//!   (`PayerNotOwner`): the payer's signature proves who authorised it, the cluster says whether
//!   that key may spend for the account. No key can spend for a namespace account over gossip.
//!
//! And whose gossip is not heard at all: a Node whose septal gate isolates it
//! (`status.septal.state: Isolated`, written by the controller). Its messages, whatever they
//! say, are dropped without penalty (`SenderIsolated`) and so never forwarded: peers stop
//! relaying an isolated node's gossip, whatever its own agent does, until the gate recovers.
//!
//! The cache may lag the API server by a moment (a Node that registered just now), so a claim
//! that looks impossible is decided only after the cache has had [`CLAIM_GRACE`] to catch up.

use crate::mesh::{ClaimCheck, ClaimVerdict, IgnoreReason, InboundMessage, InvalidReason};
use futures::future::BoxFuture;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use univrs_api::account::AccountKind;
use univrs_api::gossip::GossipBody;
use univrs_api::resources::node::{Node, SeptalState};
use univrs_api::resources::vouch::{Vouch, VouchSpec};

/// How long a claim that looks impossible waits for the Node cache to catch up before it is
/// judged impossible (well inside the mesh's claim timeout).
pub const CLAIM_GRACE: Duration = Duration::from_secs(2);

/// Cached Nodes and Vouches, and a counter of changes to each.
#[derive(Clone, Debug)]
pub struct ClusterView {
    nodes: Store<Node>,
    vouches: Store<Vouch>,
    node_changes: watch::Receiver<u64>,
    vouch_changes: watch::Receiver<u64>,
}

impl ClusterView {
    /// A view over caches of every Node and every Vouch, with receivers that wake on each
    /// change of either cache.
    pub fn new(
        nodes: Store<Node>,
        node_changes: watch::Receiver<u64>,
        vouches: Store<Vouch>,
        vouch_changes: watch::Receiver<u64>,
    ) -> Self {
        Self {
            nodes,
            vouches,
            node_changes,
            vouch_changes,
        }
    }

    /// The name of the Node whose DID is `did`, if any.
    pub fn node_with_did(&self, did: &str) -> Option<String> {
        self.nodes
            .find(|n| n.spec.did == did)
            .and_then(|n| n.metadata.name.clone())
    }

    /// The name of the Node whose PeerId is `peer_id`, if any.
    pub fn node_with_peer_id(&self, peer_id: &str) -> Option<String> {
        self.nodes
            .find(|n| n.spec.peer_id == peer_id)
            .and_then(|n| n.metadata.name.clone())
    }

    /// Whether the Node whose PeerId is `peer_id` is isolated by its septal gate.
    pub fn is_isolated(&self, peer_id: &str) -> bool {
        self.nodes
            .find(|n| n.spec.peer_id == peer_id)
            .is_some_and(|n| isolated(&n))
    }

    /// The PeerId of the Node named `name`, if it exists.
    pub fn peer_id_of(&self, name: &str) -> Option<String> {
        self.nodes
            .get(&ObjectRef::new(name))
            .map(|n| n.spec.peer_id.clone())
    }

    /// The DID of the Node named `name`, if it exists.
    pub fn did_of(&self, name: &str) -> Option<String> {
        self.nodes
            .get(&ObjectRef::new(name))
            .map(|n| n.spec.did.clone())
    }

    /// The rates of the Node named `name` (`spec.pricing`), if it exists and sets them.
    pub fn pricing_of(&self, name: &str) -> Option<univrs_api::resources::node::NodePricing> {
        self.nodes
            .get(&ObjectRef::new(name))
            .and_then(|n| n.spec.pricing.clone())
    }

    /// Every cached Vouch.
    pub fn vouches(&self) -> Vec<Arc<Vouch>> {
        self.vouches.state()
    }

    /// The name of a Vouch object with exactly this signed spec, if one exists.
    pub fn vouch_object(&self, spec: &VouchSpec) -> Option<String> {
        self.vouches
            .find(|v| {
                v.spec.signature == spec.signature
                    && v.spec.voucher == spec.voucher
                    && v.spec.subject == spec.subject
            })
            .and_then(|v| v.metadata.name.clone())
    }

    /// The addresses every Node but `me` publishes (`spec.multiaddrs`), as written.
    pub fn addresses_of_others(&self, me: &str) -> Vec<String> {
        self.nodes
            .state()
            .iter()
            .filter(|n| n.metadata.name.as_deref() != Some(me))
            .flat_map(|n| n.spec.multiaddrs.iter().cloned())
            .collect()
    }

    /// A receiver that sees every change of the Node cache.
    pub fn node_changes(&self) -> watch::Receiver<u64> {
        self.node_changes.clone()
    }

    /// Waits until the Node cache has listed every Node once.
    pub async fn nodes_ready(&self) {
        // Fails only when the writer is dropped, i.e. the agent is stopping.
        let _ = self.nodes.wait_until_ready().await;
    }

    /// A receiver that sees every change of the Vouch cache.
    pub fn vouch_changes(&self) -> watch::Receiver<u64> {
        self.vouch_changes.clone()
    }

    /// Waits until both caches have listed everything once.
    pub async fn ready(&self) {
        self.nodes_ready().await;
        // Fails only when the writer is dropped, i.e. the agent is stopping.
        let _ = self.vouches.wait_until_ready().await;
    }

    /// What the cluster says of `body` now.
    pub fn check_now(&self, body: &GossipBody) -> Result<(), InvalidReason> {
        check_claim(
            body,
            |name| self.did_of(name),
            |did| self.node_with_did(did).is_some(),
        )
    }

    /// Judges `body`, giving the Node cache up to [`CLAIM_GRACE`] to show what would make it
    /// possible; a cache that has not listed the Nodes by then cannot judge.
    pub async fn judge(&self, body: &GossipBody) -> ClaimVerdict {
        let deadline = tokio::time::Instant::now() + CLAIM_GRACE;
        if tokio::time::timeout_at(deadline, self.nodes.wait_until_ready())
            .await
            .is_err()
        {
            return ClaimVerdict::Unknown;
        }
        let mut changes = self.node_changes.clone();
        loop {
            changes.borrow_and_update();
            match self.check_now(body) {
                Ok(()) => return ClaimVerdict::Possible,
                Err(reason) => match tokio::time::timeout_at(deadline, changes.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return ClaimVerdict::Impossible(reason),
                },
            }
        }
    }
}

impl ClaimCheck for ClusterView {
    fn check(&self, message: &InboundMessage) -> Option<BoxFuture<'static, ClaimVerdict>> {
        if self.is_isolated(&message.source.to_string()) {
            return Some(Box::pin(futures::future::ready(ClaimVerdict::Ignore(
                IgnoreReason::SenderIsolated,
            ))));
        }
        match &message.body {
            GossipBody::VouchAttestation(_) | GossipBody::CreditTransaction(_) => {
                let view = self.clone();
                let body = message.body.clone();
                Some(Box::pin(async move { view.judge(&body).await }))
            }
            GossipBody::ClusterEvent(_) | GossipBody::WorkloadStatus(_) => None,
        }
    }
}

/// Whether a Node's septal gate isolates it now.
pub fn isolated(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.septal.as_ref())
        .is_some_and(|g| g.state == SeptalState::Isolated)
}

/// Whether what `body` claims is possible given the Nodes: `did_of(name)` is the DID of the
/// Node named `name`, `is_member(did)` whether some Node has that DID. Pure.
pub fn check_claim(
    body: &GossipBody,
    did_of: impl Fn(&str) -> Option<String>,
    is_member: impl Fn(&str) -> bool,
) -> Result<(), InvalidReason> {
    match body {
        GossipBody::VouchAttestation(v) => {
            if !is_member(&v.voucher) {
                return Err(InvalidReason::UnknownVoucher);
            }
            if !is_member(&v.subject) {
                return Err(InvalidReason::UnknownSubject);
            }
            Ok(())
        }
        GossipBody::CreditTransaction(t) => {
            let from = &t.transfer.from;
            let owner = match from.kind {
                AccountKind::Node => did_of(&from.name),
                AccountKind::Namespace => None,
            };
            if owner.as_deref() == Some(t.payer.as_str()) {
                Ok(())
            } else {
                Err(InvalidReason::PayerNotOwner)
            }
        }
        GossipBody::ClusterEvent(_) | GossipBody::WorkloadStatus(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::{reflector, watcher};
    use univrs_api::account::Account;
    use univrs_api::gossip::SignedTransfer;
    use univrs_api::identity::NodeIdentity;
    use univrs_api::ledger::Transfer;

    fn id(n: u8) -> NodeIdentity {
        NodeIdentity::from_secret_bytes([n; 32])
    }

    /// Nodes a and b, with the identities 1 and 2.
    fn check(body: GossipBody) -> Result<(), InvalidReason> {
        let nodes = [("a", id(1).public().did()), ("b", id(2).public().did())];
        check_claim(
            &body,
            |name| {
                nodes
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, d)| d.clone())
            },
            |did| nodes.iter().any(|(_, d)| d == did),
        )
    }

    fn vouch(voucher: u8, subject: u8) -> GossipBody {
        let until = Time(Timestamp::from_second(4_000_000_000).unwrap());
        VouchSpec::signed(&id(voucher), &id(subject).public(), 0.5, "ok", until)
            .unwrap()
            .into()
    }

    fn transfer(payer: u8, from: Account) -> GossipBody {
        let t = Transfer {
            id: "t1".into(),
            from,
            to: Account::node("b"),
            amount: 5,
        };
        SignedTransfer::sign(&id(payer), t).into()
    }

    #[tokio::test]
    async fn the_cache_has_a_grace_to_show_what_makes_a_claim_possible() {
        let (nodes, mut node_writer) = reflector::store::<Node>();
        let (vouches, _vouch_writer) = reflector::store::<Vouch>();
        let (node_tx, node_changes) = watch::channel(0u64);
        let (_vouch_tx, vouch_changes) = watch::channel(0u64);
        let view = ClusterView::new(nodes, node_changes, vouches, vouch_changes);
        let node = |name: &str, n: u8| univrs_tests::cluster::node_object(name, &[], &id(n));
        // Before the Nodes are listed nothing can be judged.
        assert_eq!(view.judge(&vouch(1, 2)).await, ClaimVerdict::Unknown);
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(node("a", 1)),
            watcher::Event::InitDone,
        ] {
            node_writer.apply_watcher_event(&e);
        }
        node_tx.send_modify(|n| *n += 1);
        // b registers while a vouch for it is being judged.
        let judging = {
            let view = view.clone();
            tokio::spawn(async move { view.judge(&vouch(1, 2)).await })
        };
        // The judge takes its own receiver of the Node changes before it first looks at the
        // cache, and waits on it once it has found no b there: b must register only then.
        let waiting = node_tx.receiver_count() + 1;
        let deadline = tokio::time::Instant::now() + CLAIM_GRACE / 2;
        while node_tx.receiver_count() < waiting {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the judge never started waiting for the Node cache"
            );
            tokio::task::yield_now().await;
        }
        assert!(!judging.is_finished());
        node_writer.apply_watcher_event(&watcher::Event::Apply(node("b", 2)));
        node_tx.send_modify(|n| *n += 1);
        assert_eq!(judging.await.unwrap(), ClaimVerdict::Possible);
        // What the cache never shows stays impossible.
        assert_eq!(
            view.judge(&vouch(1, 3)).await,
            ClaimVerdict::Impossible(InvalidReason::UnknownSubject)
        );
        assert_eq!(view.node_with_did(&id(2).public().did()), Some("b".into()));
        assert_eq!(view.did_of("a"), Some(id(1).public().did()));
    }

    #[test]
    fn vouches_need_a_member_voucher_and_subject() {
        assert_eq!(check(vouch(1, 2)), Ok(()));
        assert_eq!(check(vouch(3, 2)), Err(InvalidReason::UnknownVoucher));
        assert_eq!(check(vouch(1, 3)), Err(InvalidReason::UnknownSubject));
    }

    #[test]
    fn only_the_owner_of_a_node_account_pays_from_it() {
        assert_eq!(check(transfer(1, Account::node("a"))), Ok(()));
        // b's key paying from a's account.
        assert_eq!(
            check(transfer(2, Account::node("a"))),
            Err(InvalidReason::PayerNotOwner)
        );
        // A node that does not exist, and a namespace: nobody's key spends for them here.
        assert_eq!(
            check(transfer(1, Account::node("zed"))),
            Err(InvalidReason::PayerNotOwner)
        );
        assert_eq!(
            check(transfer(1, Account::namespace("library"))),
            Err(InvalidReason::PayerNotOwner)
        );
    }
}

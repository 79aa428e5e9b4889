//! What this agent heard over gossip: vouches and credit transfers that passed every check (the
//! mesh's signatures and dates, then the cluster's: see `cluster_view`).
//!
//! It is a bounded, peer-side view, served by `/api/reputation` and `/api/credits`. It is never
//! the truth: reputation is what the controller derives from verified Vouch objects, balances
//! are the CreditLines' status written by the controller's ledger. A transfer heard here has
//! been authorised by its payer, not applied to any line.

use crate::mesh::{InboundMessage, MeshHandle};
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use univrs_api::gossip::{GossipBody, SignedTransfer};
use univrs_api::resources::vouch::VouchSpec;

/// The most vouches kept; beyond it the one heard least recently is forgotten.
pub const MAX_VOUCHES: usize = 1024;
/// The most transfers kept; beyond it the oldest is forgotten.
pub const MAX_TRANSFERS: usize = 256;

/// A vouch heard over gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct HeardVouch {
    /// The signed vouch.
    pub spec: VouchSpec,
    /// The peer that last published it (its author on the mesh, not necessarily the voucher).
    pub source: String,
    /// When it was first heard.
    pub first_heard: Timestamp,
    /// When it was last heard (vouches are re-announced).
    pub last_heard: Timestamp,
    /// How many times it was heard.
    pub times: u64,
}

/// A credit transfer heard over gossip.
#[derive(Clone, Debug, PartialEq)]
pub struct HeardTransfer {
    /// The signed transfer.
    pub transfer: SignedTransfer,
    /// The peer that published it.
    pub source: String,
    /// When it was first heard.
    pub heard_at: Timestamp,
}

#[derive(Debug, Default)]
struct Inner {
    /// By (subject, voucher, signature): sorted by subject.
    vouches: BTreeMap<(String, String, String), HeardVouch>,
    /// Oldest first.
    transfers: VecDeque<HeardTransfer>,
}

/// The heard vouches and transfers, shared by the listener and the API.
#[derive(Clone, Debug, Default)]
pub struct Heard {
    inner: Arc<Mutex<Inner>>,
}

impl Heard {
    /// Records one accepted message (other topics are not kept here).
    pub fn record(&self, m: &InboundMessage) {
        let at = Timestamp::try_from(m.received_at).unwrap_or_else(|_| Timestamp::now());
        let source = m.source.to_string();
        match &m.body {
            GossipBody::VouchAttestation(v) => self.record_vouch(v, source, at),
            GossipBody::CreditTransaction(t) => self.record_transfer(t, source, at),
            GossipBody::ClusterEvent(_) | GossipBody::WorkloadStatus(_) => {}
        }
    }

    fn record_vouch(&self, spec: &VouchSpec, source: String, at: Timestamp) {
        let mut inner = self.inner.lock().expect("heard lock");
        // Expired vouches say nothing any more.
        inner.vouches.retain(|_, v| v.spec.expires_at.0 > at);
        let key = (
            spec.subject.clone(),
            spec.voucher.clone(),
            spec.signature.clone(),
        );
        let entry = inner.vouches.entry(key).or_insert_with(|| HeardVouch {
            spec: spec.clone(),
            source: source.clone(),
            first_heard: at,
            last_heard: at,
            times: 0,
        });
        entry.source = source;
        entry.last_heard = at;
        entry.times += 1;
        if inner.vouches.len() > MAX_VOUCHES
            && let Some(oldest) = inner
                .vouches
                .iter()
                .min_by_key(|(_, v)| v.last_heard)
                .map(|(k, _)| k.clone())
        {
            inner.vouches.remove(&oldest);
        }
    }

    fn record_transfer(&self, transfer: &SignedTransfer, source: String, at: Timestamp) {
        let mut inner = self.inner.lock().expect("heard lock");
        // A transfer id applies at most once, so the same signed transfer heard again is the
        // same transfer.
        if inner.transfers.iter().any(|h| {
            h.transfer.transfer.id == transfer.transfer.id && h.transfer.payer == transfer.payer
        }) {
            return;
        }
        inner.transfers.push_back(HeardTransfer {
            transfer: transfer.clone(),
            source,
            heard_at: at,
        });
        while inner.transfers.len() > MAX_TRANSFERS {
            inner.transfers.pop_front();
        }
    }

    /// The vouches that have not expired by `now`, by subject.
    pub fn vouches(&self, now: Timestamp) -> Vec<HeardVouch> {
        let inner = self.inner.lock().expect("heard lock");
        inner
            .vouches
            .values()
            .filter(|v| v.spec.expires_at.0 > now)
            .cloned()
            .collect()
    }

    /// The transfers, newest first.
    pub fn transfers(&self) -> Vec<HeardTransfer> {
        let inner = self.inner.lock().expect("heard lock");
        inner.transfers.iter().rev().cloned().collect()
    }
}

/// Records every accepted vouch and transfer until the mesh stops.
pub async fn listen(mesh: MeshHandle, heard: Heard) {
    let mut inbound = mesh.subscribe();
    loop {
        match inbound.recv().await {
            Ok(m) => heard.record(&m),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "the gossip view fell behind the mesh");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{PeerId, Topic};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::time::{Duration, SystemTime};
    use univrs_api::account::Account;
    use univrs_api::identity::NodeIdentity;
    use univrs_api::ledger::Transfer;

    fn id(n: u8) -> NodeIdentity {
        NodeIdentity::from_secret_bytes([n; 32])
    }

    fn message(body: GossipBody, at: SystemTime) -> InboundMessage {
        let signer = id(9);
        InboundMessage {
            source: crate::mesh::peer_id_of(&signer.public()),
            signer: signer.public(),
            topic: body.topic(),
            body,
            sent_at_ms: 0,
            received_at: at,
        }
    }

    fn transfer(n: usize) -> GossipBody {
        let t = Transfer {
            id: format!("t{n}"),
            from: Account::node("a"),
            to: Account::node("b"),
            amount: 5,
        };
        SignedTransfer::sign(&id(1), t).into()
    }

    #[test]
    fn transfers_are_kept_once_newest_first_and_bounded() {
        let heard = Heard::default();
        let now = SystemTime::now();
        for n in 0..MAX_TRANSFERS + 10 {
            heard.record(&message(transfer(n), now));
        }
        heard.record(&message(transfer(MAX_TRANSFERS + 9), now));
        let got = heard.transfers();
        assert_eq!(got.len(), MAX_TRANSFERS);
        assert_eq!(
            got[0].transfer.transfer.id,
            format!("t{}", MAX_TRANSFERS + 9)
        );
        assert_eq!(got.last().unwrap().transfer.transfer.id, "t10");
        assert_eq!(
            got[0].source,
            PeerId::to_string(&crate::mesh::peer_id_of(&id(9).public()))
        );
    }

    #[test]
    fn vouches_are_counted_by_subject_and_forgotten_when_expired() {
        let heard = Heard::default();
        let now = SystemTime::now();
        let secs =
            |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        let until = |s| Time(Timestamp::from_second(s).unwrap());
        let long =
            VouchSpec::signed(&id(1), &id(3).public(), 0.5, "x", until(secs(now) + 3600)).unwrap();
        let short =
            VouchSpec::signed(&id(2), &id(2).public(), 0.5, "y", until(secs(now) + 60)).unwrap();
        heard.record(&message(long.clone().into(), now));
        heard.record(&message(long.clone().into(), now + Duration::from_secs(1)));
        heard.record(&message(short.into(), now));
        let ts = |t: SystemTime| Timestamp::try_from(t).unwrap();
        let got = heard.vouches(ts(now));
        assert_eq!(got.len(), 2);
        let l = got.iter().find(|v| v.spec == long).unwrap();
        assert_eq!(l.times, 2);
        assert!(l.last_heard > l.first_heard);
        // Two minutes on, only the long one is left.
        let later = heard.vouches(ts(now + Duration::from_secs(120)));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].spec, long);
        assert_eq!(Topic::VouchAttestation, GossipBody::from(long).topic());
    }
}

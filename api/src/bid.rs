//! A node's ask in an auction: signed by the node's key and sealed to the auction's key.
//!
//! Bids travel through objects every node can read (the bidder's own Node status), so they are
//! sealed ([`crate::sealed`]) to the ephemeral key the controller names in the auction, which
//! only it holds: no bidder sees another's ask before the award. Inside, the ask is signed by
//! the bidder's Ed25519 key over the auction, the Workload, the instance and the amount, so an
//! opened bid proves who asked what, whoever carried it. The sealing context names the bidder
//! too: a bid copied into another node's status does not open.

use crate::enr::pricing::{self, PricingError};
use crate::identity::{IdentityError, NodeIdentity, PublicIdentity};
use crate::resources::node::NodePricing;
use crate::resources::workload::{Workload, WorkloadSpec};
use crate::sealed::{SealError, seal};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The least a node may ask for an instance-hour of `spec` at `rates`: its rates' price for an
/// hour of one instance's request. An honest agent asks exactly this (in a second-price auction,
/// asking what the work costs is the best strategy); the controller refuses asks below it.
pub fn reserve(spec: &WorkloadSpec, rates: &NodePricing) -> Result<i64, PricingError> {
    pricing::fixed(&spec.request_hour(), rates)
}

/// How bids name a Workload: `namespace/name` (the controller and the agents must agree, or
/// no bid opens).
pub fn workload_name(wl: &Workload) -> String {
    format!(
        "{}/{}",
        wl.metadata.namespace.as_deref().unwrap_or_default(),
        wl.metadata.name.as_deref().unwrap_or_default()
    )
}

/// What an ask is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms<'a> {
    /// The auction's id (from the Workload's status).
    pub auction: &'a str,
    /// The Workload, `namespace/name`.
    pub workload: &'a str,
    /// The instance being placed.
    pub instance: &'a str,
}

/// Why a bid could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BidError {
    /// Not sealed to this auction's key for this bidder and these terms, or altered.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Opened, but not the payload of a bid.
    #[error("the opened bid is not a bid: {0}")]
    Malformed(String),
    /// The signature is not the bidder's.
    #[error("the bid is not signed by the bidder: {0}")]
    Signature(#[from] IdentityError),
}

/// The sealed payload.
#[derive(Serialize, Deserialize)]
struct Payload {
    amount: i64,
    signature: String,
}

impl Terms<'_> {
    /// What the bidder's sealed bid is bound to.
    fn context(&self, bidder: &PublicIdentity) -> Vec<u8> {
        format!(
            "univrs-bid/v1\n{}\n{}\n{}\n{}",
            self.auction,
            self.workload,
            self.instance,
            bidder.did()
        )
        .into_bytes()
    }

    /// What the bidder signs: the context and the amount.
    fn signed(&self, bidder: &PublicIdentity, amount: i64) -> Vec<u8> {
        let mut m = self.context(bidder);
        m.extend_from_slice(format!("\n{amount}").as_bytes());
        m
    }

    /// `bidder`'s ask of `amount`, signed and sealed to the auction's key.
    pub fn seal(
        &self,
        bidder: &NodeIdentity,
        auction_key: &PublicIdentity,
        amount: i64,
    ) -> Result<String, SealError> {
        let me = bidder.public();
        let payload = Payload {
            amount,
            signature: URL_SAFE_NO_PAD.encode(bidder.sign(&self.signed(&me, amount))),
        };
        let json = serde_json::to_vec(&payload).expect("a bid serializes");
        seal(auction_key, &self.context(&me), &json)
    }

    /// Opens `bidder`'s sealed bid with the auction's key and checks its signature: the amount.
    pub fn open(
        &self,
        auction: &NodeIdentity,
        bidder: &PublicIdentity,
        sealed: &str,
    ) -> Result<i64, BidError> {
        let plain = auction.open_sealed(&self.context(bidder), sealed)?;
        let payload: Payload =
            serde_json::from_slice(&plain).map_err(|e| BidError::Malformed(e.to_string()))?;
        let signature = URL_SAFE_NO_PAD
            .decode(&payload.signature)
            .map_err(|e| BidError::Malformed(e.to_string()))?;
        bidder.verify(&self.signed(bidder, payload.amount), &signature)?;
        Ok(payload.amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERMS: Terms<'static> = Terms {
        auction: "a1",
        workload: "shop/web",
        instance: "web-0",
    };

    #[test]
    fn only_the_auction_opens_a_bid_and_only_as_the_bidders() {
        let auction = NodeIdentity::generate();
        let (alice, bob) = (NodeIdentity::generate(), NodeIdentity::generate());
        let sealed = TERMS.seal(&alice, &auction.public(), 1200).unwrap();
        assert_eq!(
            TERMS.open(&auction, &alice.public(), &sealed).unwrap(),
            1200
        );
        // Another bidder cannot open it, nor can it pass as bob's (copied into his status).
        assert!(TERMS.open(&bob, &alice.public(), &sealed).is_err());
        assert!(TERMS.open(&auction, &bob.public(), &sealed).is_err());
        // Nor does it count for another instance or auction.
        let other = Terms {
            instance: "web-1",
            ..TERMS
        };
        assert!(other.open(&auction, &alice.public(), &sealed).is_err());
    }

    #[test]
    fn a_bid_sealed_by_someone_else_in_the_bidders_name_is_refused() {
        let auction = NodeIdentity::generate();
        let (alice, mallory) = (NodeIdentity::generate(), NodeIdentity::generate());
        // Mallory seals a payload under alice's context, signed with her own key.
        let me = alice.public();
        let payload = Payload {
            amount: 1,
            signature: URL_SAFE_NO_PAD.encode(mallory.sign(&TERMS.signed(&me, 1))),
        };
        let forged = seal(
            &auction.public(),
            &TERMS.context(&me),
            &serde_json::to_vec(&payload).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            TERMS.open(&auction, &me, &forged),
            Err(BidError::Signature(_))
        ));
    }
}

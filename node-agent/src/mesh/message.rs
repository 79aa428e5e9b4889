//! What the mesh delivers: a message from a peer that passed every check.

use libp2p::PeerId;
use std::time::SystemTime;
use univrs_api::gossip::{GossipBody, Topic};
use univrs_api::identity::PublicIdentity;

/// A validated message from a peer.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundMessage {
    /// The peer that authored and signed it (gossipsub source = envelope signer).
    pub source: PeerId,
    /// The same identity, with its NodeId and DID.
    pub signer: PublicIdentity,
    /// The topic it came on.
    pub topic: Topic,
    /// What it says.
    pub body: GossipBody,
    /// When the author says it sent it, in milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    /// When this node accepted it.
    pub received_at: SystemTime,
}

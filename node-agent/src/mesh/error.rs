//! Why the mesh could not start or do what was asked.

use libp2p::Multiaddr;
use std::time::Duration;
use univrs_api::gossip::Topic;

/// Why the mesh could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A listen address the transports cannot use.
    #[error(
        "cannot listen on {addr}: {reason} (use /ip4/<ip>/tcp/<port> or /ip4/<ip>/udp/<port>/quic-v1)"
    )]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// What the transport said.
        reason: String,
    },
    /// A listener that did not report an address in time.
    #[error("listening on {addr}: no address was bound within {timeout:?}")]
    ListenTimeout {
        /// The address.
        addr: Multiaddr,
        /// How long we waited.
        timeout: Duration,
    },
    /// A bootstrap address without the peer's id, which Kademlia needs.
    #[error("bootstrap address {0} does not end in /p2p/<peer id>: append the peer's PeerId")]
    BootstrapWithoutPeerId(Multiaddr),
    /// A swarm part that could not be built.
    #[error("building the mesh's {what}: {reason}")]
    Build {
        /// Which part.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No connected peer subscribes to the topic yet, so nobody would receive the message.
    #[error("publishing on {topic}: no connected peer subscribes to it yet")]
    NoPeers {
        /// The topic.
        topic: Topic,
    },
    /// The signed message is larger than [`MeshConfig::max_message_bytes`](crate::mesh::MeshConfig::max_message_bytes).
    #[error("publishing on {topic}: the signed message is {size} bytes, over the {max}-byte cap")]
    TooLarge {
        /// The topic.
        topic: Topic,
        /// The message's size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// Gossipsub refused the message.
    #[error("publishing on {topic}: {reason}")]
    Publish {
        /// The topic.
        topic: Topic,
        /// What gossipsub said.
        reason: String,
    },
    /// The mesh's task has stopped.
    #[error("the mesh has shut down")]
    Closed,
}

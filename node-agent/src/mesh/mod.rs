//! The node agent's peer-to-peer mesh: one libp2p swarm per agent, keyed by the node identity.
//!
//! ## What runs
//! - Transports: TCP (Noise, Yamux) and QUIC v1; the swarm key is the node's Ed25519 key, so
//!   the swarm's PeerId is the Node object's `spec.peerId`.
//! - Discovery: Kademlia (protocol `/univrs/kad/1.0.0`, server mode) seeded from the bootstrap
//!   addresses, with a bootstrap/random walk every [`MeshConfig::discovery_interval`]; peers it
//!   finds, and peers mDNS finds on the local links (when enabled), are dialed until
//!   [`MeshConfig::target_peers`] are connected. Identify tells Kademlia each peer's listen
//!   addresses; ping measures latency and closes connections that stop answering, so a cut
//!   link shows up as lost peers and the mesh re-forms when the link comes back.
//! - Gossip: gossipsub on the four [`Topic`]s, signed by libp2p with the node key
//!   (`ValidationMode::Strict`), every message validated by [`validate`] before it is
//!   forwarded or delivered; rejected messages lower the sender's peer score, which graylists
//!   a peer that keeps sending them. What a message claims about the world outside the mesh
//!   (is the voucher a member? does the payer own the account?) is checked by the
//!   [`ClaimCheck`] the owner gives ([`MeshConfig::claims`]), asynchronously, before the
//!   message is delivered or forwarded (see `claims`).
//!
//! ## Architecture
//! One task owns the `Swarm` and runs an event loop that only dispatches (see `event_loop`);
//! [`MeshHandle`] is a cloneable front that talks to it over channels. Dropping every handle,
//! or [`MeshHandle::shutdown`], stops the task and closes the swarm.
//!
//! ```no_run
//! # async fn demo(identity: univrs_api::identity::NodeIdentity) -> Result<(), univrs_node_agent::mesh::MeshError> {
//! use univrs_node_agent::mesh::{Mesh, MeshConfig};
//! use univrs_api::gossip::ClusterEvent;
//! let mut config = MeshConfig::new(identity);
//! config.listen = vec!["/ip4/0.0.0.0/tcp/4001".parse().unwrap()];
//! let mesh = Mesh::spawn(config).await?;
//! let mut inbound = mesh.subscribe();
//! mesh.publish(ClusterEvent { node: "n1".into(), reason: "NodeJoined".into(), message: String::new() }).await?;
//! while let Ok(msg) = inbound.recv().await {
//!     println!("{} said {:?}", msg.source, msg.body);
//! }
//! # Ok(()) }
//! ```

mod behaviour;
pub mod claims;
mod event_loop;
mod stats;
mod transport;
pub mod validate;

pub use claims::{ClaimCheck, ClaimVerdict};
pub use libp2p::{Multiaddr, PeerId};
pub use stats::{MeshStats, PeerInfo, observations, peer_reports};
pub use univrs_api::gossip::{GossipBody, Topic};
pub use validate::{IgnoreReason, InvalidReason};

use event_loop::{Command, EventLoop};
use libp2p::multiaddr::Protocol;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, mpsc, oneshot};
use univrs_api::identity::{NodeIdentity, PublicIdentity};

/// How many validated inbound messages a slow subscriber may fall behind before it lags.
const INBOUND_CAPACITY: usize = 1024;
/// How many commands may wait for the event loop.
const COMMAND_CAPACITY: usize = 256;

/// How to run a mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The node's key: the swarm's PeerId and the gossip envelopes' signer.
    pub identity: NodeIdentity,
    /// Where to listen: `/ip4/…/tcp/<port>` and/or `/ip4/…/udp/<port>/quic-v1` (port 0 lets the
    /// OS choose; the chosen addresses are in [`MeshStats::listen_addrs`]).
    pub listen: Vec<Multiaddr>,
    /// Peers to start from, each ending in `/p2p/<peer id>`; redialed while disconnected.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover and dial peers on the local links by mDNS.
    pub mdns: bool,
    /// How often to run a Kademlia bootstrap (a random walk) and redial lost peers.
    pub discovery_interval: Duration,
    /// Stop dialing newly discovered peers once this many are connected.
    pub target_peers: usize,
    /// How often to ping each peer.
    pub ping_interval: Duration,
    /// Close a connection after this many consecutive failed pings.
    pub ping_failures: u32,
    /// The gossipsub heartbeat (mesh maintenance and lazy gossip).
    pub heartbeat: Duration,
    /// Largest gossip message accepted or published, in bytes (the signed envelope's JSON).
    pub max_message_bytes: usize,
    /// A message dated further than this in the future is an impossible claim (rejected).
    pub max_clock_skew: Duration,
    /// A message dated further than this in the past is ignored as a possible replay.
    pub replay_window: Duration,
    /// How long a connection with nothing to do stays open.
    pub idle_connection_timeout: Duration,
    /// Checks what messages claim against a source of truth outside the mesh (the cluster);
    /// `None` delivers every message that passes the mesh's own validation.
    pub claims: Option<Arc<dyn ClaimCheck>>,
    /// How long a claim check may take before the message is dropped without penalty
    /// (gossipsub keeps unvalidated messages for as many heartbeats as this needs).
    pub claim_timeout: Duration,
}

impl MeshConfig {
    /// Defaults for a production agent: listen on every IPv4 interface (TCP and QUIC, ports
    /// chosen by the OS), mDNS on, no bootstrap peers.
    pub fn new(identity: NodeIdentity) -> Self {
        Self {
            identity,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            discovery_interval: Duration::from_secs(30),
            target_peers: 32,
            ping_interval: Duration::from_secs(15),
            ping_failures: 2,
            heartbeat: Duration::from_secs(1),
            max_message_bytes: 64 * 1024,
            max_clock_skew: Duration::from_secs(5 * 60),
            replay_window: Duration::from_secs(10 * 60),
            idle_connection_timeout: Duration::from_secs(10 * 60),
            claims: None,
            claim_timeout: Duration::from_secs(4),
        }
    }
}

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
    /// The signed message is larger than [`MeshConfig::max_message_bytes`].
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

/// Starts meshes.
pub struct Mesh;

impl Mesh {
    /// Builds the swarm, starts listening, waits until every listen address is bound, then runs
    /// the event loop on the current tokio runtime and returns its handle.
    pub async fn spawn(config: MeshConfig) -> Result<MeshHandle, MeshError> {
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (inbound, _) = broadcast::channel(INBOUND_CAPACITY);
        let mut event_loop = EventLoop::new(config, command_rx, inbound.clone())?;
        event_loop.wait_listening().await?;
        let peer_id = event_loop.local_peer_id();
        tokio::spawn(event_loop.run());
        Ok(MeshHandle {
            peer_id,
            commands,
            inbound,
        })
    }
}

/// A cloneable handle on a running mesh.
#[derive(Clone, Debug)]
pub struct MeshHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    inbound: broadcast::Sender<InboundMessage>,
}

impl MeshHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `body` and publishes it on its topic.
    pub async fn publish(&self, body: impl Into<GossipBody>) -> Result<(), MeshError> {
        let body = body.into();
        self.ask(|reply| Command::Publish { body, reply }).await?
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, MeshError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Counters and gauges of the mesh.
    pub async fn stats(&self) -> Result<MeshStats, MeshError> {
        self.ask(|reply| Command::Stats { reply }).await
    }

    /// The addresses peers can dial, each ending in `/p2p/<this node's id>`.
    pub async fn dial_addrs(&self) -> Result<Vec<Multiaddr>, MeshError> {
        let peer = self.peer_id;
        Ok(self
            .stats()
            .await?
            .listen_addrs
            .into_iter()
            .map(|a| a.with(Protocol::P2p(peer)))
            .collect())
    }

    /// Adds a bootstrap peer (`…/p2p/<peer id>`): Kademlia learns it and it is dialed now and
    /// whenever it is disconnected.
    pub async fn add_bootstrap(&self, addr: Multiaddr) -> Result<(), MeshError> {
        self.ask(|reply| Command::AddBootstrap { addr, reply })
            .await?
    }

    /// A receiver of every message accepted from now on (a subscriber that falls more than
    /// 1024 messages behind gets `RecvError::Lagged` and continues with newer ones).
    pub fn subscribe(&self) -> broadcast::Receiver<InboundMessage> {
        self.inbound.subscribe()
    }

    /// Stops the event loop and closes every connection; returns once the swarm is gone.
    pub async fn shutdown(&self) {
        // Already stopped is as good as stopped.
        let _ = self.ask(|reply| Command::Shutdown { reply }).await;
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| MeshError::Closed)?;
        rx.await.map_err(|_| MeshError::Closed)
    }
}

/// The libp2p PeerId of an identity (the same key; never fails for an Ed25519 identity).
pub fn peer_id_of(identity: &PublicIdentity) -> PeerId {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&identity.to_bytes())
        .expect("a PublicIdentity is always a valid Ed25519 key");
    PeerId::from_public_key(&key.into())
}

/// The identity behind a PeerId, if it is an Ed25519 PeerId.
pub fn identity_of(peer: &PeerId) -> Option<PublicIdentity> {
    PublicIdentity::from_peer_id(&peer.to_base58()).ok()
}

/// The swarm keypair of a node identity.
fn keypair_of(identity: &NodeIdentity) -> libp2p::identity::Keypair {
    let mut seed = identity.secret_bytes();
    // ed25519_from_bytes zeroizes the seed it is given; `seed` zeroizes itself on drop too.
    libp2p::identity::Keypair::ed25519_from_bytes(&mut *seed)
        .expect("32 bytes are always a valid Ed25519 seed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_swarm_key_is_the_node_key_under_all_its_names() {
        let id = NodeIdentity::from_secret_bytes([7; 32]);
        let swarm_peer = keypair_of(&id).public().to_peer_id();
        assert_eq!(swarm_peer.to_base58(), id.public().peer_id());
        assert_eq!(peer_id_of(&id.public()), swarm_peer);
        assert_eq!(identity_of(&swarm_peer), Some(id.public()));
        // A PeerId that is not an Ed25519 identity has no NodeIdentity behind it.
        let sha_peer =
            PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &[0; 32]).unwrap())
                .unwrap();
        assert_eq!(identity_of(&sha_peer), None);
    }
}

//! The node agent's peer-to-peer mesh: one libp2p swarm per agent, keyed by the node identity.
//!
//! ## What runs
//! - Transports: TCP (Noise, Yamux) and QUIC v1; the swarm key is the node's Ed25519 key, so
//!   the swarm's PeerId is the Node object's `spec.peerId`.
//! - Discovery: Kademlia (protocol `/univrs/kad/1.0.0`, server mode) seeded from the bootstrap
//!   addresses, with a bootstrap/random walk every [`MeshConfig::discovery_interval`]; peers it
//!   finds, and peers mDNS finds on the local links (when enabled), are dialed until
//!   [`MeshConfig::target_peers`] are connected. A peer is dialed at every address it is
//!   known by at once (a Node publishes its loopback and home addresses beside the one that
//!   reaches it). Identify tells Kademlia each peer's listen
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
mod config;
mod error;
mod event_loop;
mod keys;
mod message;
mod stats;
mod transport;
pub mod validate;

pub use claims::{ClaimCheck, ClaimVerdict};
pub use config::MeshConfig;
pub use error::MeshError;
pub use keys::{identity_of, peer_id_of};
pub use libp2p::{Multiaddr, PeerId};
pub use message::InboundMessage;
pub use stats::{MeshStats, PeerInfo, observations, peer_reports};
pub use univrs_api::gossip::{GossipBody, Topic};
pub use validate::{IgnoreReason, InvalidReason};

use event_loop::{Command, EventLoop};
use libp2p::multiaddr::Protocol;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many validated inbound messages a slow subscriber may fall behind before it lags.
const INBOUND_CAPACITY: usize = 1024;
/// How many commands may wait for the event loop.
const COMMAND_CAPACITY: usize = 256;

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
        let streams = event_loop.stream_control();
        tokio::spawn(event_loop.run());
        Ok(MeshHandle {
            peer_id,
            commands,
            inbound,
            streams,
        })
    }
}

/// A cloneable handle on a running mesh.
#[derive(Clone)]
pub struct MeshHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    inbound: broadcast::Sender<InboundMessage>,
    streams: libp2p_stream::Control,
}

impl std::fmt::Debug for MeshHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl MeshHandle {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Opens and accepts raw streams to and from peers (dialing a peer that is not
    /// connected), for protocols of the agent's own.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
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
            // A relayed address (`…/p2p-circuit/p2p/<self>`) names this peer already.
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(peer)),
            })
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

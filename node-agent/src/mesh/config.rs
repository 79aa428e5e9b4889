//! How a mesh runs: its key, addresses, discovery, gossip limits and the claim check.

use super::claims::ClaimCheck;
use libp2p::Multiaddr;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;

/// How to run a mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The node's key: the swarm's PeerId and the gossip envelopes' signer.
    pub identity: NodeIdentity,
    /// Where to listen: `/ip4/…/tcp/<port>` and/or `/ip4/…/udp/<port>/quic-v1` (port 0 lets the
    /// OS choose; the chosen addresses are in [`MeshStats::listen_addrs`](crate::mesh::MeshStats::listen_addrs)).
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
    /// Serve as a circuit relay (libp2p relay v2) for peers behind NAT, within these limits;
    /// `None` relays for nobody. Only peers that could dial this node directly reserve on it.
    pub relay: Option<RelayLimits>,
    /// How many relays a node that AutoNAT finds unreachable reserves a slot on.
    pub relay_reservations: usize,
    /// How often AutoNAT asks a peer to dial this node back while its reachability is not
    /// settled (once settled, every ten times as long).
    pub autonat_interval: Duration,
}

/// What a relay lends to peers behind NAT.
#[derive(Clone, Copy, Debug)]
pub struct RelayLimits {
    /// Peers holding a slot at once.
    pub max_reservations: usize,
    /// Circuits through this node at once.
    pub max_circuits: usize,
    /// Circuits at once to or from one peer.
    pub max_circuits_per_peer: usize,
    /// A circuit is closed after this long (its peers then reconnect, or punch a hole).
    pub max_circuit_duration: Duration,
    /// A circuit is closed after carrying this many bytes.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    /// Enough for the mesh's own traffic (gossip, DHT, pings) between a few dozen homes: a
    /// circuit lasts an hour or 64 MiB, whichever comes first.
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(60 * 60),
            max_circuit_bytes: 64 << 20,
        }
    }
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
            relay: Some(RelayLimits::default()),
            relay_reservations: 2,
            autonat_interval: Duration::from_secs(30),
        }
    }
}

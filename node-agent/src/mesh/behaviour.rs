//! The composed behaviour: gossipsub, Kademlia, identify, ping, (optionally) mDNS, and what
//! lets machines behind home routers in: AutoNAT (am I reachable?), the relay client (a slot on
//! a reachable peer), the relay server (optionally, a slot for others) and DCUtR (a direct
//! connection punched through both routers, once connected through a relay).

use super::config::MeshConfig;
use super::error::MeshError;
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, MessageId, PeerScoreParams, PeerScoreThresholds,
    TopicScoreParams, ValidationMode, score_parameter_decay,
};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{StreamProtocol, autonat, dcutr, identify, identity::Keypair, kad, mdns, ping, relay};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use univrs_api::gossip::Topic;

/// Our Kademlia protocol: a private DHT of univrs nodes, not the public IPFS one.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/univrs/kad/1.0.0");
/// What identify announces as the protocol family.
const IDENTIFY_PROTOCOL: &str = "/univrs/1.0.0";

/// Every behaviour of a mesh node.
#[derive(NetworkBehaviour)]
pub(crate) struct MeshBehaviour {
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
    /// Raw streams for protocols outside the mesh's own (exposed ports between nodes).
    pub(crate) streams: libp2p_stream::Behaviour,
}

fn build_err(what: &'static str) -> impl FnOnce(String) -> MeshError {
    move |reason| MeshError::Build { what, reason }
}

impl MeshBehaviour {
    /// The behaviour for `config`, subscribed to every topic, with the relay client's
    /// behaviour half (its transport half is in the swarm's transport).
    pub(crate) fn new(
        keypair: &Keypair,
        config: &MeshConfig,
        relay_client: relay::client::Behaviour,
    ) -> Result<Self, MeshError> {
        let peer_id = keypair.public().to_peer_id();

        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(ValidationMode::Strict)
            .validate_messages()
            // Content-addressed ids: the same signed message relayed by anyone is one message.
            .message_id_fn(|m| MessageId::from(hex::encode(Sha256::digest(&m.data))))
            .max_transmit_size(config.max_message_bytes)
            .heartbeat_interval(config.heartbeat)
            // A replay inside the window is a duplicate; outside it, the validator's
            // replay-window check ignores it.
            .duplicate_cache_time(config.replay_window + config.max_clock_skew)
            // A message waiting for its claim check stays in the message cache, which forgets
            // it after `history_length` heartbeats; after that a late verdict could neither
            // forward it nor penalize its sender.
            .history_length(history_length(config))
            .build()
            .map_err(|e| build_err("gossipsub config")(e.to_string()))?;
        let mut gossipsub =
            gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), gossip_config)
                .map_err(|e| build_err("gossipsub")(e.to_string()))?;
        gossipsub
            .with_peer_score(score_params(), PeerScoreThresholds::default())
            .map_err(build_err("gossipsub peer scoring"))?;
        for topic in Topic::ALL {
            gossipsub
                .subscribe(&IdentTopic::new(topic.as_str()))
                .map_err(|e| build_err("gossipsub subscription")(e.to_string()))?;
        }

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // The event loop runs the walks on its own schedule (discovery_interval).
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Without confirmed external addresses Kademlia would stay a client and never be put in
        // others' routing tables; every agent is a full member of the cluster's DHT.
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), keypair.public())
                .with_agent_version(format!("univrs-node-agent/{}", env!("CARGO_PKG_VERSION")))
                .with_push_listen_addr_updates(true),
        );
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_interval.max(Duration::from_secs(1))),
        );
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                    .map_err(|e| build_err("mDNS")(e.to_string()))?,
            )
        } else {
            None
        };
        let autonat = autonat::Behaviour::new(
            peer_id,
            autonat::Config {
                boot_delay: config.autonat_interval.min(Duration::from_secs(5)),
                retry_interval: config.autonat_interval,
                refresh_interval: config.autonat_interval * 10,
                throttle_server_period: config.autonat_interval,
                // A community cloud's machines may all be on private addresses (a school's
                // LAN, a VPN): reachable is what counts, not globally routable.
                only_global_ips: false,
                ..Default::default()
            },
        );
        let relay = config.relay.map(|l| {
            relay::Behaviour::new(
                peer_id,
                relay::Config {
                    max_reservations: l.max_reservations,
                    max_circuits: l.max_circuits,
                    max_circuits_per_peer: l.max_circuits_per_peer,
                    max_circuit_duration: l.max_circuit_duration,
                    max_circuit_bytes: l.max_circuit_bytes,
                    ..Default::default()
                },
            )
        });
        Ok(Self {
            gossipsub,
            kad,
            identify,
            ping,
            mdns: mdns.into(),
            autonat,
            relay_client,
            relay: relay.into(),
            dcutr: dcutr::Behaviour::new(peer_id),
            streams: libp2p_stream::Behaviour::new(),
        })
    }
}

/// Heartbeats the message cache keeps a message: the default 5, or enough to outlast a claim
/// check plus two heartbeats of slack.
fn history_length(config: &MeshConfig) -> usize {
    let heartbeat = config.heartbeat.as_secs_f64().max(0.001);
    let needed = (config.claim_timeout.as_secs_f64() / heartbeat).ceil() as usize + 2;
    needed.max(5)
}

/// Peer scoring: an invalid message costs its sender dearly (three graylist it), quiet topics
/// cost nothing, and nodes sharing an address are fine on loopback (one machine, many
/// agents) but limited elsewhere.
fn score_params() -> PeerScoreParams {
    let mut params = PeerScoreParams {
        topic_score_cap: 100.0,
        ..PeerScoreParams::default()
    };
    params.ip_colocation_factor_whitelist.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    for topic in Topic::ALL {
        params
            .topics
            .insert(IdentTopic::new(topic.as_str()).hash(), topic_params());
    }
    params
}

fn topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        // P1: up to +36 for an hour in the mesh.
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        // P2: up to +50 for delivering messages first.
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: score_parameter_decay(Duration::from_secs(3600)),
        first_message_deliveries_cap: 50.0,
        // P3/P3b off: cluster topics are quiet for long stretches, and a quiet honest peer
        // must not be pruned for delivering nothing.
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        // P4: -10 × count²: one invalid message takes a new peer to the gossip threshold
        // (-10), three past the graylist threshold (-80); it is forgiven over about an hour.
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: score_parameter_decay(Duration::from_secs(3600)),
        ..TopicScoreParams::default()
    }
}

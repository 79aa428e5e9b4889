//! The task that owns the swarm. `run` only dispatches: swarm events, commands from handles and
//! timer ticks each go to one small handler.

use super::behaviour::{KAD_PROTOCOL, MeshBehaviour, MeshBehaviourEvent};
use super::claims::ClaimVerdict;
use super::config::MeshConfig;
use super::error::MeshError;
use super::keys::keypair_of;
use super::message::InboundMessage;
use super::stats::{MeshStats, PeerInfo, RateMeter, median};
use super::transport::{self, ByteCounters};
use super::validate::{self, IgnoreReason, InvalidReason, Limits, Verdict};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, PublishError};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, core::transport::ListenerId, dcutr, identify, kad, mdns,
    ping, relay,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use univrs_api::gossip::{GossipBody, Topic};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::{PeerConnection, Reachability};

/// How long `Mesh::spawn` waits for the listeners to bind.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dial plus the Noise/TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two Kademlia walks. Walks are the costliest thing an idle mesh
/// does (every peer answers with its closest peers), so the pause doubles from the discovery
/// interval up to this, and drops back when the node loses every connection. (Kademlia also
/// walks by itself, throttled, whenever its routing table gains a peer.)
const MAX_WALK_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How often the bandwidth meter samples the byte counters.
const METER_INTERVAL: Duration = Duration::from_secs(5);
/// How many messages may wait for their claim check; beyond that new ones are dropped without
/// penalty, so a flood cannot make the node hold unbounded work.
const MAX_PENDING_CLAIMS: usize = 1024;

/// A claim check's verdict on a message gossipsub holds.
#[derive(Debug)]
pub(crate) struct ClaimChecked {
    message_id: MessageId,
    propagation_source: PeerId,
    message: InboundMessage,
    verdict: ClaimVerdict,
}

/// What a handle asks of the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        body: GossipBody,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Stats {
        reply: oneshot::Sender<MeshStats>,
    },
    AddBootstrap {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The swarm and everything the loop keeps about it.
pub(crate) struct EventLoop {
    swarm: Swarm<MeshBehaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: broadcast::Sender<InboundMessage>,
    identity: NodeIdentity,
    config: MeshConfig,
    limits: Limits,
    started: Instant,
    /// The bootstrap peers, each with every address it was given (in the order given).
    bootstrap: BTreeMap<PeerId, Vec<Multiaddr>>,
    /// Peers whose dial was refused while another was under way: dialed again, at every
    /// address known by then, once that dial fails (it may have lacked the address that works).
    redial: HashSet<PeerId>,
    /// The latest Kademlia walk and when it started.
    walk: Option<(kad::QueryId, Instant)>,
    /// The pause before the next walk.
    walk_every: Duration,
    /// Listeners that have not bound an address yet, with the address asked for.
    pending_listeners: HashMap<ListenerId, Multiaddr>,
    listen_addrs: Vec<Multiaddr>,
    connections: HashMap<PeerId, HashMap<ConnectionId, Multiaddr>>,
    latency: HashMap<PeerId, Duration>,
    ping_failures: HashMap<ConnectionId, u32>,
    invalid: BTreeMap<InvalidReason, u64>,
    invalid_from: BTreeMap<PeerId, u64>,
    ignored: BTreeMap<IgnoreReason, u64>,
    /// Messages held by gossipsub while their claims are checked.
    pending_claims: usize,
    /// Where claim checks send their verdicts (the loop holds both ends, so it never closes).
    claim_results: mpsc::Sender<ClaimChecked>,
    claim_verdicts: mpsc::Receiver<ClaimChecked>,
    received: u64,
    published: u64,
    bytes: ByteCounters,
    meter: RateMeter,
    /// How each open connection came about.
    kinds: HashMap<ConnectionId, PeerConnection>,
    /// Whether peers can dial this node, as AutoNAT last found.
    reachability: Reachability,
    /// Where this node dialed peers directly (so they are reachable): relay candidates once
    /// identify says they relay.
    dialed: HashMap<PeerId, Multiaddr>,
    /// Peers that relay and that this node reached directly, with the address it used.
    relay_candidates: BTreeMap<PeerId, Multiaddr>,
    /// The circuit listeners on relays, and whether the relay accepted the reservation.
    reservations: BTreeMap<PeerId, (ListenerId, bool)>,
    hole_punches: u64,
    hole_punch_failures: u64,
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The peer id an address ends in, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// The address without its `/p2p/<peer>` parts.
fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Whether an address is on the loopback network.
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

impl EventLoop {
    /// Builds the swarm and starts its listeners.
    pub(crate) fn new(
        config: MeshConfig,
        commands: mpsc::Receiver<Command>,
        inbound: broadcast::Sender<InboundMessage>,
    ) -> Result<Self, MeshError> {
        let keypair = keypair_of(&config.identity);
        let bytes = ByteCounters::default();
        let (relay_transport, relay_client) = relay::client::new(keypair.public().to_peer_id());
        let transport =
            transport::build(&keypair, relay_transport, bytes.clone(), HANDSHAKE_TIMEOUT)?;
        let behaviour = MeshBehaviour::new(&keypair, &config, relay_client)?;
        let swarm = Swarm::new(
            transport,
            behaviour,
            keypair.public().to_peer_id(),
            libp2p::swarm::Config::with_tokio_executor()
                .with_idle_connection_timeout(config.idle_connection_timeout),
        );
        let limits = Limits {
            max_message_bytes: config.max_message_bytes,
            max_clock_skew: config.max_clock_skew,
            replay_window: config.replay_window,
        };
        let (claim_results, claim_verdicts) = mpsc::channel(MAX_PENDING_CLAIMS);
        let mut this = Self {
            swarm,
            commands,
            inbound,
            identity: config.identity.clone(),
            limits,
            started: Instant::now(),
            bootstrap: BTreeMap::new(),
            redial: HashSet::new(),
            walk: None,
            walk_every: config.discovery_interval,
            pending_listeners: HashMap::new(),
            listen_addrs: Vec::new(),
            connections: HashMap::new(),
            latency: HashMap::new(),
            ping_failures: HashMap::new(),
            invalid: BTreeMap::new(),
            invalid_from: BTreeMap::new(),
            ignored: BTreeMap::new(),
            pending_claims: 0,
            claim_results,
            claim_verdicts,
            received: 0,
            published: 0,
            bytes,
            meter: RateMeter::default(),
            kinds: HashMap::new(),
            reachability: Reachability::Unknown,
            dialed: HashMap::new(),
            relay_candidates: BTreeMap::new(),
            reservations: BTreeMap::new(),
            hole_punches: 0,
            hole_punch_failures: 0,
            config,
        };
        for addr in this.config.listen.clone() {
            let id = this
                .swarm
                .listen_on(addr.clone())
                .map_err(|e| MeshError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            this.pending_listeners.insert(id, addr);
        }
        for addr in this.config.bootstrap.clone() {
            this.add_bootstrap(addr)?;
        }
        Ok(this)
    }

    /// Opens and accepts raw streams over this swarm's connections.
    pub(crate) fn stream_control(&self) -> libp2p_stream::Control {
        self.swarm.behaviour().streams.new_control()
    }

    /// This node's PeerId.
    pub(crate) fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Drives the swarm until every listener has bound an address (or failed).
    pub(crate) async fn wait_listening(&mut self) -> Result<(), MeshError> {
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while let Some(addr) = self.pending_listeners.values().next().cloned() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| MeshError::ListenTimeout {
                    addr,
                    timeout: LISTEN_TIMEOUT,
                })?;
            match event {
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason: Err(e),
                    ..
                }
                | SwarmEvent::ListenerError {
                    listener_id,
                    error: e,
                } if self.pending_listeners.contains_key(&listener_id) => {
                    return Err(MeshError::Listen {
                        addr: self.pending_listeners[&listener_id].clone(),
                        reason: e.to_string(),
                    });
                }
                event => self.on_swarm_event(event),
            }
        }
        Ok(())
    }

    /// The loop: one event at a time, each to its handler.
    pub(crate) async fn run(mut self) {
        let mut discovery = tokio::time::interval(self.config.discovery_interval);
        discovery.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut meter = tokio::time::interval(METER_INTERVAL);
        meter.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                    // Every handle is gone: nobody can use the mesh any more.
                    None => break None,
                },
                Some(done) = self.claim_verdicts.recv() => self.on_claim_checked(done),
                _ = discovery.tick() => self.discover(),
                _ = meter.tick() => self.sample_bandwidth(),
            }
        };
        tracing::info!(peer = %self.local_peer_id(), "mesh shutting down");
        drop(self.swarm);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { body, reply } => {
                let _ = reply.send(self.publish(body));
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers());
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::AddBootstrap { addr, reply } => {
                let result = self.add_bootstrap(addr);
                if result.is_ok() {
                    self.discover();
                }
                let _ = reply.send(result);
            }
            // Handled by `run`, which owns the loop.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Ping(e)) => self.on_ping(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Mdns(e)) => self.on_mdns(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Autonat(e)) => self.on_autonat(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::RelayClient(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Relay(e)) => {
                tracing::debug!(?e, "relay");
            }
            SwarmEvent::Behaviour(MeshBehaviourEvent::Dcutr(e)) => self.on_dcutr(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Streams(())) => {}
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!(%address, "mesh listening");
                self.pending_listeners.remove(&listener_id);
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                tracing::warn!(?listener_id, ?reason, "mesh listener closed");
                self.pending_listeners.remove(&listener_id);
                self.listen_addrs.retain(|a| !addresses.contains(a));
                // A relay that dropped the reservation: another (or the same, later) is asked.
                self.reservations.retain(|_, (id, _)| *id != listener_id);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let kind = if endpoint.is_relayed() {
                    PeerConnection::Relayed
                } else {
                    PeerConnection::Direct
                };
                tracing::debug!(peer = %peer_id, %addr, ?kind, "connected");
                self.redial.remove(&peer_id);
                if endpoint.is_dialer() && kind == PeerConnection::Direct {
                    self.dialed.insert(peer_id, addr.clone());
                }
                self.kinds.insert(connection_id, kind);
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, addr);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                self.ping_failures.remove(&connection_id);
                self.kinds.remove(&connection_id);
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.remove(&connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                        self.latency.remove(&peer_id);
                        self.dialed.remove(&peer_id);
                        self.relay_candidates.remove(&peer_id);
                        if self.connections.is_empty() {
                            self.walk_soon();
                        }
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id
                    && self.redial.remove(&peer)
                {
                    self.dial_known(peer);
                }
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        let now = SystemTime::now();
        let verdict = validate::check(
            &self.limits,
            message.source.as_ref(),
            message.topic.as_str(),
            &message.data,
            unix_millis(now),
        );
        let acceptance = match verdict {
            Verdict::Accept(accepted) => {
                let accepted = *accepted;
                let inbound = InboundMessage {
                    source: message.source.unwrap_or(propagation_source),
                    signer: accepted.signer,
                    topic: accepted.topic,
                    body: accepted.message.body,
                    sent_at_ms: accepted.message.sent_at_ms,
                    received_at: now,
                };
                let check = self.config.claims.as_ref().and_then(|c| c.check(&inbound));
                match check {
                    None => self.deliver(inbound),
                    Some(_) if self.pending_claims >= MAX_PENDING_CLAIMS => {
                        self.drop_ignored(IgnoreReason::ClaimBacklog)
                    }
                    Some(check) => {
                        // Gossipsub holds the message until the verdict comes back through
                        // `claim_results` (see `on_claim_checked`).
                        self.pending_claims += 1;
                        let results = self.claim_results.clone();
                        let timeout = self.config.claim_timeout;
                        tokio::spawn(async move {
                            let verdict = tokio::time::timeout(timeout, check)
                                .await
                                .unwrap_or(ClaimVerdict::Unknown);
                            // Fails only when the loop has stopped.
                            let _ = results
                                .send(ClaimChecked {
                                    message_id,
                                    propagation_source,
                                    message: inbound,
                                    verdict,
                                })
                                .await;
                        });
                        return;
                    }
                }
            }
            Verdict::Ignore(reason) => self.drop_ignored(reason),
            Verdict::Reject(reason) => self.drop_invalid(reason, &propagation_source),
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
    }

    /// The verdict of a claim check: the held message is delivered and forwarded, dropped, or
    /// dropped with its sender (and every peer that sent it too) penalized.
    fn on_claim_checked(&mut self, done: ClaimChecked) {
        self.pending_claims = self.pending_claims.saturating_sub(1);
        let acceptance = match done.verdict {
            ClaimVerdict::Possible => self.deliver(done.message),
            ClaimVerdict::Unknown => self.drop_ignored(IgnoreReason::ClaimUnchecked),
            ClaimVerdict::Ignore(reason) => self.drop_ignored(reason),
            ClaimVerdict::Impossible(reason) => self.drop_invalid(reason, &done.propagation_source),
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(
                &done.message_id,
                &done.propagation_source,
                acceptance,
            );
    }

    /// Hands an accepted message to the subscribers.
    fn deliver(&mut self, message: InboundMessage) -> MessageAcceptance {
        self.received += 1;
        // A send error only means nobody subscribes right now.
        let _ = self.inbound.send(message);
        MessageAcceptance::Accept
    }

    fn drop_ignored(&mut self, reason: IgnoreReason) -> MessageAcceptance {
        *self.ignored.entry(reason).or_default() += 1;
        MessageAcceptance::Ignore
    }

    fn drop_invalid(&mut self, reason: InvalidReason, from: &PeerId) -> MessageAcceptance {
        tracing::warn!(%from, ?reason, "rejected gossip message");
        *self.invalid.entry(reason).or_default() += 1;
        if self.invalid_from.len() < super::stats::MAX_INVALID_PEERS
            || self.invalid_from.contains_key(from)
        {
            *self.invalid_from.entry(*from).or_default() += 1;
        }
        MessageAcceptance::Reject
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::RoutingUpdated {
            peer, is_new_peer, ..
        } = event
            && is_new_peer
        {
            // Kademlia itself walks again (throttled) when its table gains a peer.
            self.dial_if_wanted(peer);
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if !info.protocols.contains(&KAD_PROTOCOL) {
            return;
        }
        // A relay must be reachable by others: this node dialed it at an address it listens
        // on (not at a hole punched through its router).
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
            && let Some(addr) = self.dialed.get(&peer_id)
            && info
                .listen_addrs
                .iter()
                .any(|l| without_p2p(l) == without_p2p(addr))
        {
            self.relay_candidates.insert(peer_id, without_p2p(addr));
            self.ensure_reservations();
        }
        // A peer reached over the network cannot be reached on its loopback addresses.
        let via_loopback = self
            .connections
            .get(&peer_id)
            .is_some_and(|c| c.values().any(is_loopback));
        for addr in info.listen_addrs {
            if via_loopback || !is_loopback(&addr) {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
    }

    fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(rtt) => {
                self.latency.insert(event.peer, rtt);
                self.ping_failures.remove(&event.connection);
            }
            Err(ping::Failure::Unsupported) => {}
            Err(error) => {
                let failures = self.ping_failures.entry(event.connection).or_default();
                *failures += 1;
                tracing::debug!(peer = %event.peer, %error, failures = *failures, "ping failed");
                // A connection that stopped answering is gone in all but name: closing it lets
                // the mesh notice the loss and re-form when the peer is reachable again.
                if *failures >= self.config.ping_failures {
                    tracing::info!(peer = %event.peer, "closing unresponsive connection");
                    self.swarm.close_connection(event.connection);
                }
            }
        }
    }

    fn on_mdns(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            for (peer, addr) in found {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                self.dial_if_wanted(peer);
            }
        }
    }

    fn on_autonat(&mut self, event: autonat::Event) {
        let autonat::Event::StatusChanged { old, new } = event else {
            return;
        };
        tracing::info!(?old, ?new, "reachability changed");
        self.reachability = match new {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        };
        self.ensure_reservations();
    }

    fn on_relay_client(&mut self, event: relay::client::Event) {
        if let relay::client::Event::ReservationReqAccepted { relay_peer_id, .. } = event {
            tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
            if let Some((_, accepted)) = self.reservations.get_mut(&relay_peer_id) {
                *accepted = true;
            }
        }
    }

    fn on_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(connection) => {
                tracing::info!(peer = %event.remote_peer_id, "hole punched");
                self.hole_punches += 1;
                self.kinds.insert(connection, PeerConnection::HolePunched);
            }
            Err(error) => {
                tracing::info!(peer = %event.remote_peer_id, %error, "hole punching failed; staying relayed");
                self.hole_punch_failures += 1;
            }
        }
    }

    /// Behind NAT, holds reservations on up to `relay_reservations` relays this node reached
    /// directly (so others reach it through them); reachable, holds none.
    fn ensure_reservations(&mut self) {
        match self.reachability {
            Reachability::Public => {
                for (_, (id, _)) in std::mem::take(&mut self.reservations) {
                    self.swarm.remove_listener(id);
                }
            }
            Reachability::Unknown => {}
            Reachability::Private => {
                let wanted: Vec<(PeerId, Multiaddr)> = self
                    .relay_candidates
                    .iter()
                    .filter(|(p, _)| !self.reservations.contains_key(p))
                    .map(|(p, a)| (*p, a.clone()))
                    .take(
                        self.config
                            .relay_reservations
                            .saturating_sub(self.reservations.len()),
                    )
                    .collect();
                for (relay, addr) in wanted {
                    let circuit = addr
                        .with_p2p(relay)
                        .unwrap_or_else(|a| a)
                        .with(Protocol::P2pCircuit);
                    match self.swarm.listen_on(circuit.clone()) {
                        Ok(id) => {
                            tracing::info!(%circuit, "asking for a relay reservation");
                            self.reservations.insert(relay, (id, false));
                        }
                        Err(error) => {
                            tracing::warn!(%circuit, %error, "cannot listen through relay")
                        }
                    }
                }
            }
        }
    }

    /// Dials `peer` (see [`Self::dial_known`]) unless it is us or connected, or enough peers
    /// are connected.
    fn dial_if_wanted(&mut self, peer: PeerId) {
        if peer == self.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.connections.len() >= self.config.target_peers
        {
            return;
        }
        self.dial_known(peer);
    }

    /// Dials `peer` at once at every address it is known by: those it was bootstrapped with
    /// and those Kademlia knows. A peer publishes addresses unreachable from here (its
    /// loopback, its home network) beside the one that works, and a dial at only one of them
    /// would fail while blocking the others. A peer being dialed already is dialed again when
    /// that dial fails.
    fn dial_known(&mut self, peer: PeerId) {
        let opts = DialOpts::peer_id(peer)
            .addresses(self.bootstrap.get(&peer).cloned().unwrap_or_default())
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {}
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_))
                if !self.swarm.is_connected(&peer) =>
            {
                self.redial.insert(peer);
            }
            Err(error) => tracing::debug!(%peer, %error, "not dialing"),
        }
    }

    /// The periodic walk: redial lost bootstrap peers and known peers, and ask the DHT for more
    /// while short of peers (and now and then when not, to keep the routing table fresh).
    fn discover(&mut self) {
        let lost: Vec<PeerId> = self
            .bootstrap
            .keys()
            .filter(|p| !self.swarm.is_connected(p))
            .copied()
            .collect();
        for peer in lost {
            self.dial_known(peer);
        }
        let short = self.connections.len() < self.config.target_peers;
        if short {
            let known: HashSet<PeerId> = self
                .swarm
                .behaviour_mut()
                .kad
                .kbuckets()
                .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                .collect();
            for peer in known {
                self.dial_if_wanted(peer);
            }
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        let walking = self.walk.is_some_and(|(id, _)| kad.query(&id).is_some());
        let due = self
            .walk
            .is_none_or(|(_, at)| at.elapsed() >= self.walk_every);
        if !walking && due {
            // Fails only while the routing table is empty; the next tick tries again.
            if let Ok(id) = kad.bootstrap() {
                self.walk = Some((id, Instant::now()));
                self.walk_every = (self.walk_every * 2).min(MAX_WALK_INTERVAL);
            }
        }
    }

    /// Walks again at the next discovery tick (and backs off from there).
    fn walk_soon(&mut self) {
        self.walk_every = self.config.discovery_interval;
    }

    fn sample_bandwidth(&mut self) {
        let (rx, tx) = self.bytes.totals();
        self.meter.sample(Instant::now(), rx + tx);
    }

    fn add_bootstrap(&mut self, addr: Multiaddr) -> Result<(), MeshError> {
        let peer = peer_of(&addr).ok_or_else(|| MeshError::BootstrapWithoutPeerId(addr.clone()))?;
        // An agent given every node's address, its own included, skips itself.
        if peer == self.local_peer_id() {
            return Ok(());
        }
        self.swarm
            .behaviour_mut()
            .kad
            .add_address(&peer, addr.clone());
        let known = self.bootstrap.entry(peer).or_default();
        if !known.contains(&addr) {
            known.push(addr);
        }
        Ok(())
    }

    fn publish(&mut self, body: GossipBody) -> Result<(), MeshError> {
        let topic = body.topic();
        let data = validate::seal(
            &self.identity,
            body,
            unix_millis(SystemTime::now()),
            self.config.max_message_bytes,
        )?;
        let size = data.len();
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(topic.as_str()), data)
            .map_err(|e| publish_error(topic, size, self.config.max_message_bytes, e))?;
        self.published += 1;
        Ok(())
    }

    /// How `peer` is connected: the best of its connections.
    fn connection_of(&self, peer: &PeerId) -> PeerConnection {
        self.connections
            .get(peer)
            .into_iter()
            .flat_map(|c| c.keys())
            .filter_map(|id| self.kinds.get(id).copied())
            .min()
            .unwrap_or(PeerConnection::Direct)
    }

    fn peers(&mut self) -> Vec<PeerInfo> {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        self.connections
            .iter()
            .map(|(peer, conns)| PeerInfo {
                peer_id: *peer,
                addresses: conns.values().cloned().collect(),
                latency: self.latency.get(peer).copied(),
                score: gossipsub.peer_score(peer),
                connection: self.connection_of(peer),
            })
            .collect()
    }

    fn stats(&mut self) -> MeshStats {
        let (bytes_in, bytes_out) = self.bytes.totals();
        MeshStats {
            peer_id: self.local_peer_id(),
            connected_peers: self.connections.len(),
            median_latency: median(self.latency.values().copied().collect()),
            invalid: self.invalid.clone(),
            invalid_from: self.invalid_from.clone(),
            connected: self
                .connections
                .keys()
                .map(|p| (*p, self.connection_of(p)))
                .collect(),
            latencies: self
                .latency
                .iter()
                .filter(|(p, _)| self.connections.contains_key(p))
                .map(|(p, d)| (*p, *d))
                .collect(),
            reachability: self.reachability,
            relays: self
                .reservations
                .iter()
                .filter(|(_, (_, accepted))| *accepted)
                .map(|(p, _)| *p)
                .collect(),
            hole_punches: self.hole_punches,
            hole_punch_failures: self.hole_punch_failures,
            ignored: self.ignored.clone(),
            received: self.received,
            published: self.published,
            uptime: self.started.elapsed(),
            listen_addrs: self.listen_addrs.clone(),
            bytes_in,
            bytes_out,
            bandwidth_bps: self
                .meter
                .bits_per_second(Instant::now(), bytes_in + bytes_out),
        }
    }
}

fn publish_error(topic: Topic, size: usize, max: usize, e: PublishError) -> MeshError {
    match e {
        PublishError::NoPeersSubscribedToTopic => MeshError::NoPeers { topic },
        PublishError::MessageTooLarge => MeshError::TooLarge { topic, size, max },
        other => MeshError::Publish {
            topic,
            reason: other.to_string(),
        },
    }
}

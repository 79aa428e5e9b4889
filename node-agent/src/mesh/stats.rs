//! What the mesh reports about itself, and how that becomes a Node's observations.

use super::validate::{IgnoreReason, InvalidReason};
use libp2p::{Multiaddr, PeerId};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use univrs_api::resources::node::{NodeObservations, PeerConnection, PeerReport, Reachability};

/// The period `NodeObservations.uptime` is a fraction of.
const UPTIME_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// The period the bandwidth figure averages over.
pub(crate) const BANDWIDTH_WINDOW: Duration = Duration::from_secs(60);

/// A connected peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerInfo {
    /// Its PeerId.
    pub peer_id: PeerId,
    /// The remote addresses of its connections.
    pub addresses: Vec<Multiaddr>,
    /// Its latest ping round trip.
    pub latency: Option<Duration>,
    /// Its gossipsub peer score (negative after invalid messages; below -80 it is graylisted).
    pub score: Option<f64>,
    /// How it is connected: the best of its connections.
    pub connection: PeerConnection,
}

/// The most peers whose rejected messages are counted one by one (a flood of fresh identities
/// cannot grow the table without bound; the totals by reason still count them all).
pub const MAX_INVALID_PEERS: usize = 1024;

/// Counters and gauges of a running mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshStats {
    /// This node's PeerId.
    pub peer_id: PeerId,
    /// Peers with at least one open connection.
    pub connected_peers: usize,
    /// The median of the connected peers' latest ping round trips.
    pub median_latency: Option<Duration>,
    /// Messages rejected, by reason (their senders were penalized).
    pub invalid: BTreeMap<InvalidReason, u64>,
    /// Messages rejected, by the peer they came from (at most `MAX_INVALID_PEERS` peers).
    pub invalid_from: BTreeMap<PeerId, u64>,
    /// The peers with at least one open connection, and how (the best of their connections).
    pub connected: BTreeMap<PeerId, PeerConnection>,
    /// The connected peers' latest ping round trips.
    pub latencies: BTreeMap<PeerId, Duration>,
    /// Whether peers can dial this node (AutoNAT).
    pub reachability: Reachability,
    /// The relays holding a reservation for this node (it listens through them).
    pub relays: Vec<PeerId>,
    /// Direct connections punched through NAT (DCUtR) since the start.
    pub hole_punches: u64,
    /// Hole punches that failed (the peers stay connected through the relay).
    pub hole_punch_failures: u64,
    /// Messages dropped without penalty, by reason.
    pub ignored: BTreeMap<IgnoreReason, u64>,
    /// Messages accepted from peers.
    pub received: u64,
    /// Messages this node published.
    pub published: u64,
    /// Since the mesh started.
    pub uptime: Duration,
    /// The bound listen addresses (without `/p2p/`; see `MeshHandle::dial_addrs`).
    pub listen_addrs: Vec<Multiaddr>,
    /// Application bytes received over all connections since the start.
    pub bytes_in: u64,
    /// Application bytes sent over all connections since the start.
    pub bytes_out: u64,
    /// Bits per second moved in both directions, averaged over the last minute.
    pub bandwidth_bps: u64,
}

impl MeshStats {
    /// All rejected messages.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.values().sum()
    }
}

/// The mesh's part of a Node's status: connected peers, uptime as the fraction of the last day
/// this agent has been up (an agent up for a day or more reports 1), the bandwidth it moved,
/// the median latency and the invalid messages received.
pub fn observations(stats: &MeshStats) -> NodeObservations {
    NodeObservations {
        connected_peers: i32::try_from(stats.connected_peers).unwrap_or(i32::MAX),
        uptime: (stats.uptime.as_secs_f64() / UPTIME_PERIOD.as_secs_f64()).min(1.0),
        bandwidth_bps: i64::try_from(stats.bandwidth_bps).unwrap_or(i64::MAX),
        median_latency_ms: stats.median_latency.map(|d| d.as_secs_f64() * 1000.0),
        invalid_messages: i64::try_from(stats.invalid_total()).unwrap_or(i64::MAX),
        peers: Vec::new(),
        reachability: Some(stats.reachability),
        relays: Vec::new(),
    }
}

/// The most peer reports in a Node's observations.
pub const MAX_PEER_REPORTS: usize = 256;

/// This agent's reports on the peers that are Nodes (`name_of` maps a PeerId to its Node's
/// name): every connected one and every one it dropped invalid gossip from, the most invalid
/// first, then by name, at most `MAX_PEER_REPORTS`.
pub fn peer_reports(
    stats: &MeshStats,
    name_of: impl Fn(&PeerId) -> Option<String>,
) -> Vec<PeerReport> {
    let mut by_node: BTreeMap<String, PeerReport> = BTreeMap::new();
    let peers = stats
        .connected
        .iter()
        .map(|(p, how)| (p, Some(*how), 0))
        .chain(stats.invalid_from.iter().map(|(p, n)| (p, None, *n)));
    for (peer, connection, invalid) in peers {
        let Some(node) = name_of(peer) else { continue };
        let r = by_node.entry(node.clone()).or_insert_with(|| PeerReport {
            node,
            ..Default::default()
        });
        if connection.is_some() {
            r.connected = true;
            r.connection = connection;
            r.latency_ms = stats.latencies.get(peer).map(|d| coarse_ms(*d));
        }
        r.invalid_messages = r
            .invalid_messages
            .saturating_add(i64::try_from(invalid).unwrap_or(i64::MAX));
    }
    let mut reports: Vec<PeerReport> = by_node.into_values().collect();
    // Stable: by name already; the worst first.
    reports.sort_by_key(|r| std::cmp::Reverse(r.invalid_messages));
    reports.truncate(MAX_PEER_REPORTS);
    reports
}

/// A round trip in milliseconds, coarse enough that jitter does not rewrite the status: to
/// the millisecond below 10 ms, to two significant digits above.
pub fn coarse_ms(d: Duration) -> f64 {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        return ms.round();
    }
    let scale = 10f64.powi(ms.log10().floor() as i32 - 1);
    (ms / scale).round() * scale
}

/// The median of some durations (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2),
    }
}

/// Byte totals sampled over time, for a moving-average rate.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Records the running total `bytes` at `now`, forgetting samples older than the window.
    pub(crate) fn sample(&mut self, now: Instant, bytes: u64) {
        self.samples.push_back((now, bytes));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > BANDWIDTH_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bits per second between the oldest sample in the window and (`now`, `bytes`).
    pub(crate) fn bits_per_second(&self, now: Instant, bytes: u64) -> u64 {
        let Some(&(t0, b0)) = self.samples.front() else {
            return 0;
        };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return 0;
        }
        // Float to integer saturates: a rate cannot overflow.
        (bytes.saturating_sub(b0) as f64 * 8.0 / secs) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> MeshStats {
        MeshStats {
            latencies: BTreeMap::new(),
            peer_id: PeerId::random(),
            connected_peers: 3,
            median_latency: Some(Duration::from_micros(1500)),
            invalid: BTreeMap::from([
                (InvalidReason::BadSignature, 2),
                (InvalidReason::Malformed, 1),
            ]),
            invalid_from: BTreeMap::new(),
            connected: BTreeMap::new(),
            reachability: Reachability::Private,
            relays: vec![],
            hole_punches: 0,
            hole_punch_failures: 0,
            ignored: BTreeMap::new(),
            received: 10,
            published: 4,
            uptime: Duration::from_secs(6 * 3600),
            listen_addrs: vec![],
            bytes_in: 0,
            bytes_out: 0,
            bandwidth_bps: 8000,
        }
    }

    #[test]
    fn peer_reports_name_nodes_and_put_the_worst_first() {
        let (a, b, c, stranger) = (
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
            PeerId::random(),
        );
        let mut s = stats();
        s.connected = BTreeMap::from([
            (a, PeerConnection::Direct),
            (b, PeerConnection::Relayed),
            (stranger, PeerConnection::Direct),
        ]);
        s.invalid_from = BTreeMap::from([(c, 4), (b, 1), (stranger, 9)]);
        let names = BTreeMap::from([(a, "alpha"), (b, "beta"), (c, "gamma")]);
        let reports = peer_reports(&s, |p| names.get(p).map(|n| n.to_string()));
        let got: Vec<(&str, bool, Option<PeerConnection>, i64)> = reports
            .iter()
            .map(|r| {
                (
                    r.node.as_str(),
                    r.connected,
                    r.connection,
                    r.invalid_messages,
                )
            })
            .collect();
        // The stranger is no Node: nothing to report it against.
        assert_eq!(
            got,
            vec![
                ("gamma", false, None, 4),
                ("beta", true, Some(PeerConnection::Relayed), 1),
                ("alpha", true, Some(PeerConnection::Direct), 0)
            ]
        );
    }

    #[test]
    fn observations_carry_the_mesh_figures() {
        let o = observations(&stats());
        assert_eq!(o.connected_peers, 3);
        assert_eq!(o.uptime, 0.25);
        assert_eq!(o.bandwidth_bps, 8000);
        assert_eq!(o.median_latency_ms, Some(1.5));
        assert_eq!(o.invalid_messages, 3);
        assert_eq!(o.reachability, Some(Reachability::Private));
        let mut s = stats();
        s.uptime = Duration::from_secs(3 * 24 * 3600);
        s.median_latency = None;
        let o = observations(&s);
        assert_eq!((o.uptime, o.median_latency_ms), (1.0, None));
    }

    #[test]
    fn median_of_odd_even_and_none() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), Some(ms(3)));
        assert_eq!(median(vec![ms(4), ms(1), ms(2), ms(100)]), Some(ms(3)));
    }

    #[test]
    fn the_rate_is_a_moving_average_over_the_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut m = RateMeter::default();
        assert_eq!(m.bits_per_second(t0, 0), 0);
        m.sample(t0, 0);
        m.sample(t0 + s(10), 1000);
        assert_eq!(m.bits_per_second(t0 + s(10), 1000), 800);
        // Two minutes later the first samples have left the window.
        m.sample(t0 + s(130), 1000);
        m.sample(t0 + s(140), 2000);
        assert_eq!(m.bits_per_second(t0 + s(140), 2000), 800);
    }

    #[test]
    fn round_trips_are_coarse_enough_to_stay_put() {
        let ms = |m: f64| coarse_ms(Duration::from_secs_f64(m / 1000.0));
        assert_eq!(ms(0.4), 0.0);
        assert_eq!(ms(3.6), 4.0);
        assert_eq!(ms(23.4), 23.0);
        assert_eq!(ms(187.0), 190.0);
        assert_eq!(ms(1234.0), 1200.0);
    }
}

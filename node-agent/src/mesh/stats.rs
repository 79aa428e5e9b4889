//! What the mesh reports about itself, and how that becomes a Node's observations.

use super::validate::{IgnoreReason, InvalidReason};
use super::{Multiaddr, PeerId};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use univrs_api::resources::node::NodeObservations;

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
}

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
    }
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
            peer_id: PeerId::random(),
            connected_peers: 3,
            median_latency: Some(Duration::from_micros(1500)),
            invalid: BTreeMap::from([
                (InvalidReason::BadSignature, 2),
                (InvalidReason::Malformed, 1),
            ]),
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
    fn observations_carry_the_mesh_figures() {
        let o = observations(&stats());
        assert_eq!(o.connected_peers, 3);
        assert_eq!(o.uptime, 0.25);
        assert_eq!(o.bandwidth_bps, 8000);
        assert_eq!(o.median_latency_ms, Some(1.5));
        assert_eq!(o.invalid_messages, 3);
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
}

//! Nexus election: which nodes act as gossip and aggregation hubs.
//!
//! Eligibility: uptime ≥ 0.95, bandwidth ≥ 10 Mbps, reputation ≥ 0.7;
//! score = 0.3·uptime + 0.3·min(bandwidth / 100 Mbps, 1) + 0.2·reputation + 0.2·connectivity,
//! where connectivity is the share of the other candidates the node is connected to (a count of
//! a hub's leaves would need a topology that only exists after an election). The election is a
//! deterministic function of its input: ties break by reputation, then by node name. One hub is
//! elected per [`Config::leaves_per_nexus`] nodes (at least one); with several, the best is the
//! PoteauMitan. When nobody is eligible, the fallback elects the Ready candidates with the
//! highest reputation and says so, so the mesh always has a hub.

use super::bounds::clamp;
use crate::resources::node::NexusRole;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// What the election knows of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// The node's name (the tie-breaker of last resort).
    pub name: String,
    /// Fraction of time up, 0 to 1.
    pub uptime: f64,
    /// Bits per second.
    pub bandwidth_bps: u64,
    /// Reputation, 0 to 1.
    pub reputation: f64,
    /// Share of the other candidates it is connected to, 0 to 1.
    pub connectivity: f64,
    /// Whether the node is Ready (fresh Lease).
    pub ready: bool,
}

/// Election thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Minimum uptime.
    pub min_uptime: f64,
    /// Minimum bandwidth, bits per second.
    pub min_bandwidth_bps: u64,
    /// Minimum reputation.
    pub min_reputation: f64,
    /// Nodes per hub: ceil(n / this) hubs are elected.
    pub leaves_per_nexus: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            min_uptime: 0.95,
            min_bandwidth_bps: 10_000_000,
            min_reputation: 0.7,
            leaves_per_nexus: 27,
        }
    }
}

/// The outcome of an election.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Election {
    /// Every candidate's role.
    pub roles: BTreeMap<String, NexusRole>,
    /// The hubs, best first.
    pub hubs: Vec<String>,
    /// True when nobody was eligible and the fallback picked the hubs.
    pub fallback: bool,
}

/// Whether a candidate meets the thresholds (a node that is not Ready never does).
pub fn eligible(c: &Candidate, cfg: &Config) -> bool {
    c.ready
        && c.uptime >= cfg.min_uptime
        && c.bandwidth_bps >= cfg.min_bandwidth_bps
        && c.reputation >= cfg.min_reputation
}

/// The candidate's score, in `[0, 1]`.
pub fn score(c: &Candidate) -> f64 {
    let bw = (c.bandwidth_bps as f64 / 100_000_000.0).min(1.0);
    0.3 * clamp(c.uptime, 0.0, 1.0)
        + 0.3 * bw
        + 0.2 * clamp(c.reputation, 0.0, 1.0)
        + 0.2 * clamp(c.connectivity, 0.0, 1.0)
}

fn by_score(a: &Candidate, b: &Candidate) -> Ordering {
    score(b)
        .total_cmp(&score(a))
        .then_with(|| clamp(b.reputation, 0.0, 1.0).total_cmp(&clamp(a.reputation, 0.0, 1.0)))
        .then_with(|| a.name.cmp(&b.name))
}

fn by_reputation(a: &Candidate, b: &Candidate) -> Ordering {
    clamp(b.reputation, 0.0, 1.0)
        .total_cmp(&clamp(a.reputation, 0.0, 1.0))
        .then_with(|| by_score(a, b))
}

/// Elects hubs among `candidates`; every candidate gets a role.
pub fn elect(candidates: &[Candidate], cfg: &Config) -> Election {
    let wanted = candidates
        .len()
        .div_ceil(cfg.leaves_per_nexus.max(1))
        .max(1);
    let mut pool: Vec<&Candidate> = candidates.iter().filter(|c| eligible(c, cfg)).collect();
    let fallback = pool.is_empty();
    if fallback {
        pool = candidates.iter().filter(|c| c.ready).collect();
        pool.sort_by(|a, b| by_reputation(a, b));
    } else {
        pool.sort_by(|a, b| by_score(a, b));
    }
    let hubs: Vec<String> = pool.iter().take(wanted).map(|c| c.name.clone()).collect();
    let mut roles: BTreeMap<String, NexusRole> = candidates
        .iter()
        .map(|c| (c.name.clone(), NexusRole::Leaf))
        .collect();
    for (i, h) in hubs.iter().enumerate() {
        let role = if i == 0 && hubs.len() > 1 {
            NexusRole::PoteauMitan
        } else {
            NexusRole::Nexus
        };
        roles.insert(h.clone(), role);
    }
    Election {
        roles,
        hubs,
        fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, uptime: f64, mbps: u64, rep: f64) -> Candidate {
        Candidate {
            name: name.into(),
            uptime,
            bandwidth_bps: mbps * 1_000_000,
            reputation: rep,
            connectivity: 1.0,
            ready: true,
        }
    }

    #[test]
    fn elects_the_best_eligible_and_breaks_ties_by_name() {
        let cs = vec![
            c("b", 0.99, 100, 0.8),
            c("a", 0.99, 100, 0.8),
            c("slow", 0.99, 5, 1.0),
        ];
        let e = elect(&cs, &Config::default());
        assert_eq!(e.hubs, vec!["a"]);
        assert!(!e.fallback);
        assert_eq!(e.roles["slow"], NexusRole::Leaf);
        assert_eq!(e.roles["a"], NexusRole::Nexus);
    }

    #[test]
    fn falls_back_to_reputation_when_nobody_is_eligible() {
        let mut cs = vec![
            c("x", 0.5, 1, 0.6),
            c("y", 0.5, 1, 0.9),
            c("z", 0.5, 1, 0.95),
        ];
        cs[2].ready = false;
        let e = elect(&cs, &Config::default());
        assert!(e.fallback);
        assert_eq!(e.hubs, vec!["y"]);
    }

    #[test]
    fn several_hubs_have_a_poteau_mitan() {
        let cs: Vec<_> = (0..60)
            .map(|i| c(&format!("n{i:02}"), 0.99, 50 + i, 0.8))
            .collect();
        let e = elect(&cs, &Config::default());
        assert_eq!(e.hubs.len(), 3);
        assert_eq!(e.roles[&e.hubs[0]], NexusRole::PoteauMitan);
        assert_eq!(e.roles[&e.hubs[1]], NexusRole::Nexus);
        assert!(elect(&[], &Config::default()).hubs.is_empty());
    }
}

//! The revival pool: what a departed or defaulting account leaves goes back to the network.
//!
//! The pool takes an entropy tax of 2% (in basis points, integer arithmetic, rounded down) of
//! what the account leaves and pays it out at once; then, every round (hourly), it pays out a
//! tenth ([`Config::round_bps`]) of what it holds, so nothing it takes over stays there
//! forever. Each payout splits 40/25/20/15 between network maintenance (nexus hubs with uptime
//! ≥ 0.95), new-node subsidy (nodes younger than 7 days), low-balance support (nodes under 100
//! credits with reputation ≥ 0.5) and the reserve; only healthy nodes (Ready, not isolated) are
//! paid. Each share is split equally among its recipients. Nothing is created or destroyed: the remainder of every integer division,
//! and every share that has no recipient, goes to the reserve, so a plan always sums to exactly
//! its input.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The namespace whose account (`namespace/univrs-system`) is the revival pool.
pub const POOL_NAMESPACE: &str = crate::system::SYSTEM_NAMESPACE;

/// Where revival credit goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Payee {
    /// A node, by name, for a reason.
    Node {
        /// The node.
        name: String,
        /// The share it is paid from.
        share: Share,
    },
    /// The pool's reserve, kept for later rounds.
    Reserve,
}

/// The four shares of a redistribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Share {
    /// Network maintenance: nexus hubs with high uptime.
    Maintenance,
    /// New-node subsidy.
    Subsidy,
    /// Low-balance support.
    Support,
}

/// Split and eligibility settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The entropy tax in basis points (200 = 2%).
    pub tax_bps: u32,
    /// What share of its balance the pool pays out each round, in basis points (1000 = 10%).
    pub round_bps: u32,
    /// Maintenance share, percent.
    pub maintenance_pct: u8,
    /// Subsidy share, percent.
    pub subsidy_pct: u8,
    /// Support share, percent (the reserve gets the rest of 100).
    pub support_pct: u8,
    /// A node younger than this (ms) counts as new.
    pub new_node_age_ms: u64,
    /// Below this balance (milli-credits) a node may get support.
    pub support_balance_below: i64,
    /// Reputation a node needs to get support, in thousandths.
    pub support_min_reputation_milli: u16,
    /// Uptime a hub needs for maintenance, in thousandths.
    pub maintenance_min_uptime_milli: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tax_bps: 200,
            round_bps: 1000,
            maintenance_pct: 40,
            subsidy_pct: 25,
            support_pct: 20,
            new_node_age_ms: 7 * 24 * 3600 * 1000,
            support_balance_below: 100_000,
            support_min_reputation_milli: 500,
            maintenance_min_uptime_milli: 950,
        }
    }
}

/// What the pool knows of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// Whether it is a nexus hub.
    pub nexus: bool,
    /// Uptime, 0 to 1.
    pub uptime: f64,
    /// Age in milliseconds.
    pub age_ms: u64,
    /// Whether it is healthy (Ready and not isolated).
    pub healthy: bool,
    /// Its credit balance, milli-credits.
    pub balance: i64,
    /// Reputation, 0 to 1.
    pub reputation: f64,
}

/// The entropy tax on an amount: ⌊amount · bps / 10000⌋ for a positive amount, else 0.
pub fn tax(amount: i64, tax_bps: u32) -> i64 {
    if amount <= 0 {
        return 0;
    }
    // i128 cannot overflow here: |amount| < 2^63 and bps < 2^32.
    let t = i128::from(amount) * i128::from(tax_bps.min(10_000)) / 10_000;
    t as i64
}

/// What one round pays out of the pool's `balance` (what it is owed net of what it owes):
/// ⌊balance · round_bps / 10000⌋, nothing when it holds nothing.
pub fn round_amount(balance: i64, cfg: &Config) -> i64 {
    tax(balance, cfg.round_bps)
}

/// How `amount` milli-credits are redistributed: (payee, amount) pairs summing to `amount`.
pub fn plan(amount: i64, nodes: &[NodeInfo], cfg: &Config) -> Vec<(Payee, i64)> {
    let amount = amount.max(0);
    let milli = |x: f64| (super::bounds::clamp(x, 0.0, 1.0) * 1000.0).round() as u16;
    let mut groups: [(Share, Vec<&str>, u8); 3] = [
        (Share::Maintenance, Vec::new(), cfg.maintenance_pct),
        (Share::Subsidy, Vec::new(), cfg.subsidy_pct),
        (Share::Support, Vec::new(), cfg.support_pct),
    ];
    let mut sorted: Vec<&NodeInfo> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted.dedup_by(|a, b| a.name == b.name);
    for n in sorted.into_iter().filter(|n| n.healthy) {
        if n.nexus && milli(n.uptime) >= cfg.maintenance_min_uptime_milli {
            groups[0].1.push(&n.name);
        }
        if n.age_ms < cfg.new_node_age_ms {
            groups[1].1.push(&n.name);
        }
        if n.balance < cfg.support_balance_below
            && milli(n.reputation) >= cfg.support_min_reputation_milli
        {
            groups[2].1.push(&n.name);
        }
    }
    let mut paid: BTreeMap<Payee, i64> = BTreeMap::new();
    let mut given = 0i64;
    for (share, names, pct) in &groups {
        let budget = (i128::from(amount) * i128::from((*pct).min(100)) / 100) as i64;
        if names.is_empty() || budget == 0 {
            continue;
        }
        let each = budget / names.len() as i64;
        if each == 0 {
            continue;
        }
        for name in names {
            *paid
                .entry(Payee::Node {
                    name: name.to_string(),
                    share: *share,
                })
                .or_default() += each;
            given += each;
        }
    }
    let mut out: Vec<(Payee, i64)> = paid.into_iter().collect();
    // Everything not given (the reserve's own share, rounding, empty groups) is kept.
    out.push((Payee::Reserve, amount - given));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, nexus: bool, young: bool, balance: i64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            nexus,
            uptime: 0.99,
            age_ms: if young { 1000 } else { u64::MAX },
            healthy: true,
            balance,
            reputation: 0.8,
        }
    }

    #[test]
    fn tax_is_two_percent_rounded_down() {
        assert_eq!(tax(50, 200), 1);
        assert_eq!(tax(100, 200), 2);
        assert_eq!(tax(49, 200), 0);
        assert_eq!(tax(-100, 200), 0);
        assert_eq!(tax(i64::MAX, 200), i64::MAX / 50);
    }

    #[test]
    fn splits_forty_twenty_five_twenty_fifteen() {
        let nodes = [
            node("hub", true, false, 1_000_000),
            node("new", false, true, 1_000_000),
            node("poor", false, false, 0),
        ];
        let p = plan(1000, &nodes, &Config::default());
        let get = |payee: Payee| p.iter().find(|(x, _)| *x == payee).map(|(_, a)| *a);
        assert_eq!(
            get(Payee::Node {
                name: "hub".into(),
                share: Share::Maintenance
            }),
            Some(400)
        );
        assert_eq!(
            get(Payee::Node {
                name: "new".into(),
                share: Share::Subsidy
            }),
            Some(250)
        );
        assert_eq!(
            get(Payee::Node {
                name: "poor".into(),
                share: Share::Support
            }),
            Some(200)
        );
        assert_eq!(get(Payee::Reserve), Some(150));
    }

    #[test]
    fn only_healthy_nodes_are_paid_and_a_round_pays_a_tenth() {
        let lost = NodeInfo {
            healthy: false,
            ..node("lost", true, true, 0)
        };
        let p = plan(1000, &[lost], &Config::default());
        assert_eq!(p, vec![(Payee::Reserve, 1000)]);
        assert_eq!(round_amount(4960, &Config::default()), 496);
        assert_eq!(round_amount(-5, &Config::default()), 0);
    }

    #[test]
    fn remainders_and_empty_groups_go_to_the_reserve() {
        let nodes = [
            node("a", true, false, 1_000_000),
            node("b", true, false, 1_000_000),
            node("c", true, false, 1_000_000),
        ];
        let p = plan(100, &nodes, &Config::default());
        assert_eq!(p.iter().map(|(_, a)| a).sum::<i64>(), 100);
        assert_eq!(p.last(), Some(&(Payee::Reserve, 100 - 3 * 13)));
    }
}

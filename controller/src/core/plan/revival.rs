//! The revival plan: what a departed node leaves goes back to the network.
//!
//! Every Node carries the finalizer `univrs.io/credit-settlement`. When a Node object is
//! deleted, its lines are settled before it goes (`reconcile::revival` runs the plan made here);
//! so are those of a node lost (its Lease lapsed) for longer than the revival grace, which
//! stays a Node and may come back, with nothing owed either way (each lapse is settled once,
//! under its own key):
//! - **Claims** (lines where the node is the creditor: others owe it) pass to the pool, the
//!   account `namespace/univrs-system`: the debtor now owes the pool (line
//!   `revival-<debtor>`), and its debt to the departed node is released. Two transfers, the
//!   pool's first, so a crash between them never lets a debt vanish.
//! - **Debts** (lines where the node is the debtor) are written off by their creditors.
//! - The pool takes the entropy tax (2%) of the claims it collected and pays it out by
//!   `enr::revival::plan`: maintenance to nexus hubs, subsidy to new nodes, support to
//!   low-balance nodes (lines `revival-pays-<node>`, where the pool owes the node); the rest is
//!   the pool's reserve.
//! - **Rounds**: every revival interval the pool pays out a tenth of what it holds by the same
//!   split ([`round`]), so what it takes over flows back to the nodes that keep the network.
//!
//! The plan is written to the Node as the annotation `univrs.io/revival-plan` before any
//! credit moves, and every transfer has an id derived from the node's uid, so a settlement
//! interrupted at any point resumes exactly where it stopped and pays nothing twice. Every
//! step is a ledger transfer, so balances still sum to zero.

use crate::core::notice::Notice;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use univrs_api::enr::revival::{self, NodeInfo, POOL_NAMESPACE, Payee};
use univrs_api::resources::node::{CONDITION_READY, NexusRole, SeptalState};
use univrs_api::{Account, CreditLine, Node};

/// The pool's account.
pub fn pool() -> Account {
    Account::namespace(POOL_NAMESPACE)
}

/// What settling a departed node will do, fixed before anything moves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Which settlement this is: `departed` (the Node was deleted) or `lost-<ms>` (its Lease
    /// lapsed at that time and stayed so past the grace).
    #[serde(default)]
    pub key: String,
    /// Whether every step has been made (a lost node's settlement is then not looked at again).
    #[serde(default)]
    pub settled: bool,
    /// (line, debtor, amount) claims that pass to the pool.
    pub claims: Vec<(String, Account, i64)>,
    /// (line, creditor, amount) debts written off.
    pub debts: Vec<(String, Account, i64)>,
    /// (node, share, amount) the pool pays out of its tax.
    pub payouts: Vec<(String, String, i64)>,
}

/// The key of a deleted node's settlement.
pub const DEPARTED: &str = "departed";

/// The key of the settlement of a node lost since `since`.
pub fn lost_key(since: Timestamp) -> String {
    format!("lost-{}", since.as_millisecond())
}

/// The settlement plan `key` of `node` given every line and the other nodes. Pure.
pub fn plan(key: &str, node: &str, lines: &[CreditLine], others: &[NodeInfo]) -> Plan {
    let me = Account::node(node);
    let mut out = Plan {
        key: key.to_string(),
        ..Plan::default()
    };
    let mut sorted: Vec<&CreditLine> = lines.iter().collect();
    sorted.sort_by_key(|l| l.name_any());
    for l in sorted {
        let balance = l.status.as_ref().map_or(0, |s| s.balance);
        if balance <= 0 {
            continue;
        }
        if l.spec.creditor == me {
            out.claims
                .push((l.name_any(), l.spec.debtor.clone(), balance));
        } else if l.spec.debtor == me {
            out.debts
                .push((l.name_any(), l.spec.creditor.clone(), balance));
        }
    }
    let collected: i64 = out
        .claims
        .iter()
        .filter(|(_, debtor, _)| *debtor != pool())
        .map(|(_, _, a)| *a)
        .fold(0i64, |s, a| s.saturating_add(a));
    let cfg = revival::Config::default();
    out.payouts = payouts(revival::tax(collected, cfg.tax_bps), others);
    out
}

/// (node, share, amount) paid out of `amount` by the 40/25/20/15 split.
fn payouts(amount: i64, others: &[NodeInfo]) -> Vec<(String, String, i64)> {
    revival::plan(amount, others, &revival::Config::default())
        .into_iter()
        .filter_map(|(payee, amount)| match payee {
            Payee::Node { name, share } if amount > 0 => Some((name, format!("{share:?}"), amount)),
            _ => None,
        })
        .collect()
}

/// What one round pays out of the pool holding `balance` (owed to it net of what it owes):
/// a tenth of it by the split, to `nodes`. Pure.
pub fn round(balance: i64, nodes: &[NodeInfo]) -> Vec<(String, String, i64)> {
    payouts(
        revival::round_amount(balance, &revival::Config::default()),
        nodes,
    )
}

/// What the plan needs to know of a node.
pub fn info(n: &Node, now: Timestamp) -> NodeInfo {
    let s = n.status.clone().unwrap_or_default();
    let age_ms = n
        .creation_timestamp()
        .map_or(0, |t| now.duration_since(t.0).as_millis().max(0) as u64);
    NodeInfo {
        name: n.name_any(),
        nexus: s.nexus_role.is_some_and(|r| r != NexusRole::Leaf),
        uptime: s.observations.as_ref().map_or(0.0, |o| o.uptime),
        age_ms,
        healthy: univrs_api::conditions::is_true(&s.conditions, CONDITION_READY)
            && s.septal
                .as_ref()
                .is_none_or(|g| g.state != SeptalState::Isolated),
        balance: s.credit_balance.unwrap_or(0),
        reputation: s.reputation.unwrap_or(0.5),
    }
}

/// A DNS-label-safe name for a line of the pool with `account`.
pub fn pool_line_name(prefix: &str, account: &Account) -> String {
    let slug: String = account
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{slug}")
}

impl Plan {
    /// What to announce once the settlement is done.
    pub fn notice(&self) -> Notice {
        Notice::normal(
            "CreditSettled",
            format!(
                "{} claim(s) passed to the revival pool, {} debt(s) written off, {} payout(s) from its tax",
                self.claims.len(),
                self.debts.len(),
                self.payouts.len()
            ),
        )
    }
}

//! The revival pool: what a departed node leaves goes back to the network.
//!
//! Every Node carries the finalizer `univrs.io/credit-settlement`. When a Node object is
//! deleted, its lines are settled before it goes:
//! - **Claims** (lines where the node is the creditor: others owe it) pass to the pool, the
//!   account `namespace/univrs-system`: the debtor now owes the pool (line
//!   `revival-<debtor>`), and its debt to the departed node is released. Two transfers, the
//!   pool's first, so a crash between them never lets a debt vanish.
//! - **Debts** (lines where the node is the debtor) are written off by their creditors.
//! - The pool takes the entropy tax (2%) of the claims it collected and pays it out by
//!   `enr::revival::plan`: maintenance to nexus hubs, subsidy to new nodes, support to
//!   low-balance nodes (lines `revival-pays-<node>`, where the pool owes the node); the rest is
//!   the pool's reserve.
//!
//! The plan is written to the Node as the annotation `univrs.io/revival-plan` before any
//! credit moves, and every transfer has an id derived from the node's uid, so a settlement
//! interrupted at any point resumes exactly where it stopped and pays nothing twice. Every
//! step is a ledger transfer, so balances still sum to zero.

use crate::context::Context;
use crate::credit::{TransferError, apply_transfer};
use crate::error::Error;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use univrs_api::enr::revival::{self, NodeInfo, Payee};
use univrs_api::ledger::Transfer;
use univrs_api::resources::node::{NexusRole, SeptalState};
use univrs_api::{Account, CreditLine, Node};

/// The finalizer that holds a Node until its credit is settled.
pub const FINALIZER: &str = "univrs.io/credit-settlement";
/// The annotation that records the settlement plan before it runs.
pub const PLAN_ANNOTATION: &str = "univrs.io/revival-plan";
/// The namespace whose account is the revival pool.
pub const POOL_NAMESPACE: &str = "univrs-system";

/// The pool's account.
pub fn pool() -> Account {
    Account::namespace(POOL_NAMESPACE)
}

/// What settling a departed node will do, fixed before anything moves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// (line, debtor, amount) claims that pass to the pool.
    pub claims: Vec<(String, Account, i64)>,
    /// (line, creditor, amount) debts written off.
    pub debts: Vec<(String, Account, i64)>,
    /// (node, share, amount) the pool pays out of its tax.
    pub payouts: Vec<(String, String, i64)>,
}

/// The settlement plan of `node` given every line and the other nodes. Pure.
pub fn plan(node: &str, lines: &[CreditLine], others: &[NodeInfo]) -> Plan {
    let me = Account::node(node);
    let mut out = Plan::default();
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
    for (payee, amount) in revival::plan(revival::tax(collected, cfg.tax_bps), others, &cfg) {
        if let (Payee::Node { name, share }, true) = (payee, amount > 0) {
            out.payouts.push((name, format!("{share:?}"), amount));
        }
    }
    out
}

/// What the plan needs to know of a node.
fn info(n: &Node, now: Timestamp) -> NodeInfo {
    let s = n.status.clone().unwrap_or_default();
    let age_ms = n
        .creation_timestamp()
        .map_or(0, |t| now.duration_since(t.0).as_millis().max(0) as u64);
    NodeInfo {
        name: n.name_any(),
        nexus: s.nexus_role.is_some_and(|r| r != NexusRole::Leaf),
        uptime: s.observations.as_ref().map_or(0.0, |o| o.uptime),
        age_ms,
        healthy: univrs_api::conditions::is_true(&s.conditions, "Ready")
            && s.septal
                .as_ref()
                .is_none_or(|g| g.state != SeptalState::Isolated),
        balance: s.credit_balance.unwrap_or(0),
        reputation: s.reputation.unwrap_or(0.5),
    }
}

/// A DNS-label-safe name for a line of the pool with `account`.
fn pool_line_name(prefix: &str, account: &Account) -> String {
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

/// Makes sure the line `name` from `creditor` to `debtor` exists and can carry `more`.
async fn ensure_line(
    api: &Api<CreditLine>,
    name: &str,
    creditor: &Account,
    debtor: &Account,
    more: i64,
) -> Result<(), kube::Error> {
    match api.get_opt(name).await? {
        None => {
            let cl: CreditLine = serde_json::from_value(serde_json::json!({
                "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
                "metadata": {"name": name, "labels": {"univrs.io/revival": "true"}},
                "spec": {"creditor": creditor, "debtor": debtor, "limit": more}
            }))
            .map_err(kube::Error::SerdeError)?;
            match api.create(&PostParams::default(), &cl).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Some(cl) => {
            let needed = cl
                .status
                .as_ref()
                .map_or(0, |s| s.balance)
                .saturating_add(more);
            if cl.spec.limit < needed {
                let patch = serde_json::json!({"spec": {"limit": needed}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Ok(())
        }
    }
}

/// Applies a settlement transfer; a refusal of an already-settled step is not an error.
async fn transfer(
    ctx: &Context,
    line: &str,
    id: String,
    from: &Account,
    to: &Account,
    amount: i64,
) -> Result<(), Error> {
    let t = Transfer {
        id,
        from: from.clone(),
        to: to.clone(),
        amount,
    };
    match apply_transfer(&ctx.client, line, &t).await {
        Ok(_) => Ok(()),
        Err(TransferError::Kube(e)) => Err(e.into()),
        Err(e) => Err(Error::Settlement(e.to_string())),
    }
}

/// Settles the departed `node`'s credit (see the module docs). Idempotent.
pub async fn settle(node: &Node, ctx: &Context) -> Result<(), Error> {
    let name = node.name_any();
    let uid = node.uid().unwrap_or_default();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let lines_api: Api<CreditLine> = Api::all(ctx.client.clone());
    // The plan is fixed once, before anything moves, so a resumed settlement is the same one.
    let plan: Plan = match node
        .annotations()
        .get(PLAN_ANNOTATION)
        .and_then(|p| serde_json::from_str(p).ok())
    {
        Some(p) => p,
        None => {
            let lines = lines_api.list(&ListParams::default()).await?.items;
            let now = Timestamp::now();
            let others: Vec<NodeInfo> = ctx
                .nodes
                .state()
                .iter()
                .filter(|n| n.name_any() != name && n.metadata.deletion_timestamp.is_none())
                .map(|n| info(n, now))
                .collect();
            let p = plan(&name, &lines, &others);
            let text = serde_json::to_string(&p).map_err(|e| Error::Settlement(e.to_string()))?;
            let patch = serde_json::json!({"metadata": {"annotations": {PLAN_ANNOTATION: text}}});
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            p
        }
    };
    let me = Account::node(&name);
    let pool = pool();
    for (line, debtor, amount) in &plan.claims {
        if *debtor != pool {
            let pool_line = pool_line_name("revival", debtor);
            ensure_line(&lines_api, &pool_line, &pool, debtor, *amount).await?;
            let id = format!("revival/{uid}/{line}/assign");
            transfer(ctx, &pool_line, id, debtor, &pool, *amount).await?;
        }
        let id = format!("revival/{uid}/{line}/release");
        settle_step(ctx, line, id, &me, debtor).await?;
    }
    for (line, creditor, _) in &plan.debts {
        let id = format!("revival/{uid}/{line}/writeoff");
        settle_step(ctx, line, id, creditor, &me).await?;
    }
    for (payee, share, amount) in &plan.payouts {
        let to = Account::node(payee);
        let line = pool_line_name("revival-pays", &to);
        ensure_line(&lines_api, &line, &to, &pool, *amount).await?;
        let id = format!("revival/{uid}/pays/{payee}/{share}");
        transfer(ctx, &line, id, &pool, &to, *amount).await?;
    }
    crate::workload::publish(
        ctx,
        &kube::Resource::object_ref(node, &()),
        kube::runtime::events::EventType::Normal,
        "CreditSettled",
        format!(
            "{} claim(s) passed to the revival pool, {} debt(s) written off, {} payout(s) from its tax",
            plan.claims.len(),
            plan.debts.len(),
            plan.payouts.len()
        ),
    )
    .await;
    Ok(())
}

/// A release or write-off: clears what the departed node's line still carries (its balance
/// now, which is the planned amount unless someone paid in between). A line already at zero,
/// or gone, is settled.
async fn settle_step(
    ctx: &Context,
    line: &str,
    id: String,
    from: &Account,
    to: &Account,
) -> Result<(), Error> {
    let api: Api<CreditLine> = Api::all(ctx.client.clone());
    let Some(cl) = api.get_opt(line).await? else {
        return Ok(());
    };
    let balance = cl.status.as_ref().map_or(0, |s| s.balance);
    if balance <= 0 {
        return Ok(());
    }
    transfer(ctx, line, id, from, to, balance).await
}

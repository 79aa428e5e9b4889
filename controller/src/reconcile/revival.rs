//! The revival pool's writes: settling a departed Node's credit before its finalizer goes, or a
//! lost one's once it stays lost past the grace, by the plan `core::plan::revival` makes (and
//! says the why of); and the pool's rounds, which pay a tenth of what it holds back out.
//!
//! The plan is written to the Node as the annotation `univrs.io/revival-plan` before any
//! credit moves, and every transfer has an id derived from the node's uid, so a settlement
//! interrupted at any point resumes exactly where it stopped and pays nothing twice. Every
//! step is a ledger transfer, so balances still sum to zero.

use crate::core::plan::revival::{
    DEPARTED, Plan, info, lost_key, plan, pool, pool_line_name, round,
};
use crate::core::snapshot;
use crate::error::Error;
use crate::reconcile::credit::{TransferError, apply_transfer};
use crate::state::context::Context;
use crate::state::events;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use univrs_api::enr::revival::NodeInfo;
use univrs_api::ledger::Transfer;
use univrs_api::resources::creditline::CreditLineSpec;
use univrs_api::resources::node::REVIVAL_PLAN_ANNOTATION;
use univrs_api::{Account, CreditLine, Node};

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
            let mut cl = CreditLine::new(
                name,
                CreditLineSpec {
                    creditor: creditor.clone(),
                    debtor: debtor.clone(),
                    limit: more,
                    limit_policy: Default::default(),
                },
            );
            cl.labels_mut()
                .insert("univrs.io/revival".into(), "true".into());
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

/// The healthy-or-not view the pool pays by: every Node but `except` and those being deleted.
fn recipients(ctx: &Context, except: Option<&str>, now: Timestamp) -> Vec<NodeInfo> {
    ctx.nodes
        .state()
        .iter()
        .filter(|n| {
            Some(n.name_any().as_str()) != except && n.metadata.deletion_timestamp.is_none()
        })
        .map(|n| info(n, now))
        .collect()
}

/// The plan of settlement `key` written on `node`, if that is the one there.
pub fn written_plan(node: &Node, key: &str) -> Option<Plan> {
    node.annotations()
        .get(REVIVAL_PLAN_ANNOTATION)
        .and_then(|p| serde_json::from_str::<Plan>(p).ok())
        .filter(|p| p.key == key || (key == DEPARTED && p.key.is_empty()))
}

/// Settles `node`'s credit under `key` (`DEPARTED`, or `lost_key` of its lapse; see the module
/// docs). Idempotent.
pub async fn settle(node: &Node, ctx: &Context, key: &str) -> Result<(), Error> {
    let name = node.name_any();
    let uid = node.uid().unwrap_or_default();
    // A departure keeps the ids it always had; a lost node's settlements are told apart by key.
    let ids = if key == DEPARTED {
        format!("revival/{uid}")
    } else {
        format!("revival/{uid}/{key}")
    };
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let lines_api: Api<CreditLine> = Api::all(ctx.client.clone());
    // The plan is fixed once, before anything moves, so a resumed settlement is the same one.
    let plan: Plan = match written_plan(node, key) {
        Some(p) => p,
        None => {
            let lines = lines_api.list(&ListParams::default()).await?.items;
            let others = recipients(ctx, Some(&name), Timestamp::now());
            let p = plan(key, &name, &lines, &others);
            write_plan(&nodes, &name, &p).await?;
            p
        }
    };
    let me = Account::node(&name);
    let pool = pool();
    for (line, debtor, amount) in &plan.claims {
        if *debtor != pool {
            let pool_line = pool_line_name("revival", debtor);
            ensure_line(&lines_api, &pool_line, &pool, debtor, *amount).await?;
            let id = format!("{ids}/{line}/assign");
            transfer(ctx, &pool_line, id, debtor, &pool, *amount).await?;
        }
        let id = format!("{ids}/{line}/release");
        settle_step(ctx, line, id, &me, debtor).await?;
    }
    for (line, creditor, _) in &plan.debts {
        let id = format!("{ids}/{line}/writeoff");
        settle_step(ctx, line, id, creditor, &me).await?;
    }
    pay(ctx, &plan.payouts, &format!("{ids}/pays")).await?;
    if key != DEPARTED {
        // A lost node stays: record that this lapse is settled, so it is not looked at again.
        write_plan(
            &nodes,
            &name,
            &Plan {
                settled: true,
                ..plan.clone()
            },
        )
        .await?;
    }
    events::announce(
        ctx,
        &kube::Resource::object_ref(node, &()),
        &[plan.notice()],
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

/// Writes `plan` as the node's revival-plan annotation.
async fn write_plan(nodes: &Api<Node>, name: &str, plan: &Plan) -> Result<(), Error> {
    let text = serde_json::to_string(plan).map_err(|e| Error::Settlement(e.to_string()))?;
    let patch = serde_json::json!({"metadata": {"annotations": {REVIVAL_PLAN_ANNOTATION: text}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Settles the credit of `node` when its Lease has lapsed for longer than the revival grace
/// (once per lapse). Returns how long until a lapsed, unsettled node is due, if it is not yet.
pub async fn settle_if_lost(
    node: &Node,
    ctx: &Context,
    now: Timestamp,
) -> Result<Option<std::time::Duration>, Error> {
    let lease = ctx.lease_of(&node.name_any());
    let snapshot::Liveness::Lapsed { since } =
        snapshot::liveness(lease.as_deref(), now, ctx.settings.node_lease_duration)
    else {
        return Ok(None);
    };
    let key = lost_key(since);
    if written_plan(node, &key).is_some_and(|p| p.settled) {
        return Ok(None);
    }
    let lost_for = now.duration_since(since).unsigned_abs();
    if let Some(left) = ctx.settings.revival_grace.checked_sub(lost_for)
        && !left.is_zero()
    {
        return Ok(Some(left));
    }
    settle(node, ctx, &key).await?;
    Ok(None)
}

/// Pays `payouts` (node, share, amount) from the pool, each along its `revival-pays-<node>` line
/// under the id `<ids>/<node>/<share>`.
async fn pay(ctx: &Context, payouts: &[(String, String, i64)], ids: &str) -> Result<(), Error> {
    let lines_api: Api<CreditLine> = Api::all(ctx.client.clone());
    let pool = pool();
    for (payee, share, amount) in payouts {
        let to = Account::node(payee);
        let line = pool_line_name("revival-pays", &to);
        ensure_line(&lines_api, &line, &to, &pool, *amount).await?;
        transfer(
            ctx,
            &line,
            format!("{ids}/{payee}/{share}"),
            &pool,
            &to,
            *amount,
        )
        .await?;
    }
    Ok(())
}

/// Pays round `r` (the interval's slot since the epoch): a tenth of what the pool holds now, by
/// the split. Read from the API server, not the cache, so a round never pays from a balance a
/// previous one already spent. Each payment's id names the round, so a round resumed after a
/// crash pays nobody twice (what is left of it is split anew from the balance left).
pub async fn pay_round(ctx: &Context, r: u64) -> Result<i64, Error> {
    let lines: Vec<std::sync::Arc<CreditLine>> = Api::<CreditLine>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(std::sync::Arc::new)
        .collect();
    let pool = pool();
    let holds = snapshot::ledger_of(&lines, Some(&pool))
        .balance(&pool)
        .clamp(0, i128::from(i64::MAX)) as i64;
    let payouts = round(holds, &recipients(ctx, None, Timestamp::now()));
    pay(ctx, &payouts, &format!("revival/round/{r}")).await?;
    let paid = payouts.iter().map(|(_, _, a)| *a).sum();
    if paid > 0 {
        tracing::info!(
            round = r,
            holds,
            paid,
            payees = payouts.len(),
            "revival round paid"
        );
    }
    Ok(paid)
}

/// Pays a round when the controller starts leading and every `Settings::revival_interval`
/// after, until it stops. A round's id is the interval's slot since the epoch, so a leader that
/// restarts within a slot pays nobody twice.
pub async fn run_rounds(ctx: std::sync::Arc<Context>) {
    ctx.synced().await;
    let every = ctx
        .settings
        .revival_interval
        .max(std::time::Duration::from_secs(1));
    loop {
        let now = Timestamp::now().as_millisecond().max(0) as u64;
        let r = now / every.as_millis() as u64;
        if let Err(e) = pay_round(&ctx, r).await {
            tracing::warn!(round = r, error = %e, "revival round failed; the next one pays from what is left");
        }
        tokio::time::sleep(every).await;
    }
}

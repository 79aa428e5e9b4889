//! The revival pool's writes: settling a departed Node's credit before its finalizer goes, by
//! the plan `core::plan::revival` makes (and says the why of).
//!
//! The plan is written to the Node as the annotation `univrs.io/revival-plan` before any
//! credit moves, and every transfer has an id derived from the node's uid, so a settlement
//! interrupted at any point resumes exactly where it stopped and pays nothing twice. Every
//! step is a ledger transfer, so balances still sum to zero.

use crate::core::plan::revival::{Plan, info, plan, pool, pool_line_name};
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

/// Settles the departed `node`'s credit (see the module docs). Idempotent.
pub async fn settle(node: &Node, ctx: &Context) -> Result<(), Error> {
    let name = node.name_any();
    let uid = node.uid().unwrap_or_default();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let lines_api: Api<CreditLine> = Api::all(ctx.client.clone());
    // The plan is fixed once, before anything moves, so a resumed settlement is the same one.
    let plan: Plan = match node
        .annotations()
        .get(REVIVAL_PLAN_ANNOTATION)
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
            let patch =
                serde_json::json!({"metadata": {"annotations": {REVIVAL_PLAN_ANNOTATION: text}}});
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

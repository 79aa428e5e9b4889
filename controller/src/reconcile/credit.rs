//! The CreditLine reconciler (Ready and utilization, planned by `core::plan::credit`), and
//! applying transfers to lines exactly once under concurrency (`pay`, for the Workload
//! reconciler's billing; `apply_transfer`, for it and the revival pool).
//!
//! Both writers here (the reconcile and a transfer) write the *whole* status with server-side
//! apply under one field manager, carrying the resourceVersion they read; so neither can drop
//! what the other wrote, and a stale write is refused with 409 and retried.
//!
//! A transfer is applied by reading the line, running the `api` crate's ledger on it (limits,
//! replay refusal from `recentTransferIds`) and writing the new status with server-side apply
//! *carrying the resourceVersion it read*: a concurrent writer makes the API server answer 409
//! and the transfer is retried on fresh state, so two writers can never both apply on the same
//! balance, and an id is applied at most once.

use crate::core::billing::{self, Charge};
use crate::core::plan::credit::{self, Refusal};
use crate::core::snapshot;
use crate::error::Error;
use crate::state::context::{Context, FIELD_MANAGER};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use std::sync::Arc;
use univrs_api::account::AccountKind;
use univrs_api::ledger::{Applied, LedgerError, Transfer};
use univrs_api::resources::creditline::{CreditLineStatus, LimitPolicy, reputation_limit};
use univrs_api::resources::workload::InstanceUsage;
use univrs_api::{Account, CreditLine};
use univrs_io::apply::Apply;

/// Why a transfer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The ledger refused it (limit, sign, self-payment); nothing changed.
    #[error(transparent)]
    Refused(#[from] LedgerError),
    /// The API server failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The line does not join the two accounts.
    #[error("credit line {0} does not join {1} and {2}")]
    WrongLine(String, Account, Account),
}

impl From<Refusal> for TransferError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Ledger(e) => Self::Refused(e),
            Refusal::WrongLine(line, from, to) => Self::WrongLine(line, from, to),
        }
    }
}

/// Applies `t` to the CreditLine `line` at most once, retrying on write conflicts.
pub async fn apply_transfer(
    client: &Client,
    line: &str,
    t: &Transfer,
) -> Result<Applied, TransferError> {
    let api: Api<CreditLine> = Api::all(client.clone());
    loop {
        let cl = api.get(line).await?;
        let (applied, next) = credit::transfer(line, &cl, t, Timestamp::now())?;
        let Some(next) = next else {
            return Ok(applied);
        };
        match write_status(&api, &cl, next).await {
            Ok(_) => return Ok(applied),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Why a charge could not be paid.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// No line can carry it: the owner's credit is exhausted towards that node.
    #[error("{0}")]
    Exhausted(String),
    /// The API server failed (retried).
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Pays `charge` to the charge's node from the first of `payers` (the owner, then the nodes
/// that pay for it) along the first of their lines with it (by name) that can carry it.
/// Returns the new billed mark and the amount it accounts for: if an earlier attempt at the
/// same charge was already applied along any of those lines (found by its id prefix), that
/// attempt's, so a charge is paid once whoever paid it.
pub async fn pay(
    ctx: &Context,
    payers: &[Account],
    charge: &Charge,
) -> Result<(InstanceUsage, i64), PayError> {
    let node = Account::node(&charge.node);
    let all = ctx.credit_lines.state();
    let mut lines: Vec<(String, &Account)> = Vec::new();
    for payer in payers.iter().filter(|p| **p != node) {
        let mut mine: Vec<String> = all
            .iter()
            .filter(|cl| {
                (cl.spec.creditor == *payer && cl.spec.debtor == node)
                    || (cl.spec.creditor == node && cl.spec.debtor == *payer)
            })
            .map(|cl| cl.name_any())
            .collect();
        mine.sort();
        lines.extend(mine.into_iter().map(|l| (l, payer)));
    }
    if lines.is_empty() {
        let names: Vec<String> = payers.iter().map(ToString::to_string).collect();
        return Err(PayError::Exhausted(format!(
            "no CreditLine joins {} and {node}",
            names.join(" or ")
        )));
    }
    // Fresh reads, not the cache: an attempt that landed just now must be seen.
    let api: Api<CreditLine> = Api::all(ctx.client.clone());
    for (name, _) in &lines {
        let Some(cl) = api.get_opt(name).await? else {
            continue;
        };
        let earlier = cl.status.iter().flat_map(|s| &s.recent_transfer_ids);
        for id in earlier {
            if let Some(done) = billing::mark_from_id(id, &charge.id_prefix, &charge.from) {
                return Ok(done);
            }
        }
    }
    let mut refusals = Vec::new();
    for (name, payer) in &lines {
        let transfer = Transfer {
            id: charge.id.clone(),
            from: (*payer).clone(),
            to: node.clone(),
            amount: charge.amount,
        };
        match apply_transfer(&ctx.client, name, &transfer).await {
            Ok(_) => return Ok((charge.to.clone(), charge.amount)),
            Err(TransferError::Kube(e)) => return Err(e.into()),
            Err(e) => refusals.push(format!("{name}: {e}")),
        }
    }
    Err(PayError::Exhausted(refusals.join("; ")))
}

/// Writes the whole status, on the condition that the line is still at the version read.
async fn write_status(
    api: &Api<CreditLine>,
    cl: &CreditLine,
    status: CreditLineStatus,
) -> Result<CreditLine, kube::Error> {
    let status = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    Apply::<CreditLine>::new(&cl.name_any())
        .resource_version(cl.resource_version())
        .status(status)
        .apply_status(api, FIELD_MANAGER)
        .await
}

/// Whether an account's party exists.
async fn account_exists(ctx: &Context, a: &Account) -> Result<bool, Error> {
    Ok(match a.kind {
        AccountKind::Node => ctx
            .nodes
            .get(&kube::runtime::reflector::ObjectRef::new(&a.name))
            .is_some(),
        AccountKind::Namespace => Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&a.name)
            .await?
            .is_some(),
    })
}

/// Reconciles one CreditLine: read (do both accounts exist?), plan, write.
pub async fn reconcile(cl: Arc<CreditLine>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let now = Timestamp::now();
    let mut missing = Vec::new();
    for a in [&cl.spec.creditor, &cl.spec.debtor] {
        if !account_exists(&ctx, a).await? {
            missing.push(a.to_string());
        }
    }
    // Under the Reputation policy the debtor node's reputation sets what it may owe now (an
    // unknown node nothing; one the controller has not rated yet stands at the prior, as the
    // scheduler sees it). A move of it wakes this line (`Wake::node_change`); each minute too.
    let reputation_bound = cl.spec.limit_policy == LimitPolicy::Reputation;
    let effective = reputation_bound.then(|| {
        let rep = (cl.spec.debtor.kind == AccountKind::Node)
            .then(|| {
                ctx.nodes.get(&kube::runtime::reflector::ObjectRef::new(
                    &cl.spec.debtor.name,
                ))
            })
            .flatten()
            .map_or(0.0, |n| snapshot::reputation_of(&n));
        reputation_limit(cl.spec.limit, rep)
    });
    if let Some(next) = credit::status(&cl, &missing, effective, now) {
        let api: Api<CreditLine> = Api::all(ctx.client.clone());
        match write_status(&api, &cl, next).await {
            Ok(_) => {}
            // A transfer landed in between: the watch brings the new state back here.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(std::time::Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let again = if reputation_bound {
        ctx.settings.resync.min(REPUTATION_RECHECK)
    } else {
        ctx.settings.resync
    };
    Ok(Action::requeue(again))
}

/// How often a line under the Reputation policy follows its debtor's reputation.
const REPUTATION_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

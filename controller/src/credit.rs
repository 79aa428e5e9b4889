//! CreditLines: their Ready condition and utilization, and applying transfers to them exactly
//! once under concurrency.
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

use crate::billing::Charge;
use crate::context::{Context, apply_status};
use crate::error::Error;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use std::sync::Arc;
use univrs_api::account::AccountKind;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::ledger::{Applied, Ledger, LedgerError, Line, Transfer};
use univrs_api::resources::creditline::{
    CONDITION_READY, CreditLineStatus, RECENT_TRANSFERS, TransferRecord,
};
use univrs_api::resources::workload::InstanceUsage;
use univrs_api::{Account, CreditLine};

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

/// `42%`-style utilization of a line.
pub fn utilization(balance: i64, limit: i64) -> String {
    if limit <= 0 {
        return "0%".into();
    }
    format!(
        "{}%",
        (i128::from(balance) * 100 / i128::from(limit)).clamp(0, 100)
    )
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
        let joins = (cl.spec.creditor == t.from && cl.spec.debtor == t.to)
            || (cl.spec.creditor == t.to && cl.spec.debtor == t.from);
        if !joins {
            return Err(TransferError::WrongLine(
                line.into(),
                t.from.clone(),
                t.to.clone(),
            ));
        }
        let status = cl.status.clone().unwrap_or_default();
        let mut ledger = Ledger::new();
        ledger.upsert_line(
            line,
            Line {
                creditor: cl.spec.creditor.clone(),
                debtor: cl.spec.debtor.clone(),
                limit: cl.spec.limit,
                balance: status.balance,
            },
        )?;
        for id in &status.recent_transfer_ids {
            ledger.remember(id.clone());
        }
        let applied = ledger.apply(t)?;
        if applied == Applied::Duplicate {
            return Ok(applied);
        }
        let balance = ledger.line(line).map_or(status.balance, |l| l.balance);
        let mut recent = status.recent_transfer_ids.clone();
        recent.push(t.id.clone());
        let excess = recent.len().saturating_sub(RECENT_TRANSFERS);
        recent.drain(..excess);
        let record = TransferRecord {
            id: t.id.clone(),
            from: t.from.clone(),
            to: t.to.clone(),
            amount: t.amount,
            at: Time(Timestamp::now()),
        };
        let next = CreditLineStatus {
            balance,
            utilization: Some(utilization(balance, cl.spec.limit)),
            last_transfer: Some(record),
            recent_transfer_ids: recent,
            ..status
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

/// Pays `charge` from `owner` to the charge's node along the first of their lines (by name)
/// that can carry it. Returns the new billed mark and the amount it accounts for: if an earlier
/// attempt at the same charge was already applied (found by its id prefix), that attempt's.
pub async fn pay(
    ctx: &Context,
    owner: &Account,
    charge: &Charge,
) -> Result<(InstanceUsage, i64), PayError> {
    let node = Account::node(&charge.node);
    let mut lines: Vec<String> = ctx
        .credit_lines
        .state()
        .iter()
        .filter(|cl| {
            (cl.spec.creditor == *owner && cl.spec.debtor == node)
                || (cl.spec.creditor == node && cl.spec.debtor == *owner)
        })
        .map(|cl| cl.name_any())
        .collect();
    lines.sort();
    if lines.is_empty() {
        return Err(PayError::Exhausted(format!(
            "no CreditLine joins {owner} and {node}"
        )));
    }
    // Fresh reads, not the cache: an attempt that landed just now must be seen.
    let api: Api<CreditLine> = Api::all(ctx.client.clone());
    for name in &lines {
        let Some(cl) = api.get_opt(name).await? else {
            continue;
        };
        let earlier = cl.status.iter().flat_map(|s| &s.recent_transfer_ids);
        for id in earlier {
            if let Some(done) = crate::billing::mark_from_id(id, &charge.id_prefix, &charge.from) {
                return Ok(done);
            }
        }
    }
    let transfer = Transfer {
        id: charge.id.clone(),
        from: owner.clone(),
        to: node.clone(),
        amount: charge.amount,
    };
    let mut refusals = Vec::new();
    for name in &lines {
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
    apply_status(api, &cl.name_any(), cl.resource_version(), status).await
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

/// Reconciles one CreditLine: Ready when both accounts exist; utilization kept current.
pub async fn reconcile(cl: Arc<CreditLine>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let now = Time(Timestamp::now());
    let mut missing = Vec::new();
    for a in [&cl.spec.creditor, &cl.spec.debtor] {
        if !account_exists(&ctx, a).await? {
            missing.push(a.to_string());
        }
    }
    let status = cl.status.clone().unwrap_or_default();
    let ready = if missing.is_empty() {
        DesiredCondition::new(
            CONDITION_READY,
            true,
            "AccountsExist",
            format!(
                "{} extends up to {} milli-credits to {}",
                cl.spec.creditor, cl.spec.limit, cl.spec.debtor
            ),
        )
    } else {
        DesiredCondition::new(
            CONDITION_READY,
            false,
            "UnknownAccount",
            format!("no such account: {}", missing.join(", ")),
        )
    };
    let mut conditions = status.conditions.clone();
    let generation = cl.metadata.generation;
    let mut changed = set_condition(&mut conditions, ready.at_generation(generation), now);
    let util = utilization(status.balance, cl.spec.limit);
    changed |= status.utilization.as_deref() != Some(util.as_str())
        || status.observed_generation != generation;
    if changed {
        let next = CreditLineStatus {
            observed_generation: generation,
            utilization: Some(util),
            conditions,
            ..status
        };
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
    Ok(Action::requeue(ctx.settings.resync))
}

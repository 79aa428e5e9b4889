//! The credit tools: every account's balance and the credit lines, read from the CreditLines'
//! status (the controller is their only writer). Balances come from the `api` crate's ledger,
//! the same arithmetic the controller uses, so they always sum to zero.

use super::args::CreditLinesArgs;
use super::error::{ToolError, ToolResult};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use univrs_api::ledger::{Ledger, Line};
use univrs_api::resources::creditline::CONDITION_READY;
use univrs_api::{Account, CreditLine};

/// Every CreditLine object.
pub async fn all(client: &Client) -> Result<Vec<CreditLine>, ToolError> {
    Api::<CreditLine>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(ToolError::api("list credit lines"))
}

/// The ledger of `lines` as their status records them, and the lines it could not take
/// (an impossible balance), with why.
pub fn ledger(lines: &[CreditLine]) -> (Ledger, Vec<String>) {
    let mut ledger = Ledger::new();
    let mut refused = Vec::new();
    for l in lines {
        let line = Line {
            creditor: l.spec.creditor.clone(),
            debtor: l.spec.debtor.clone(),
            limit: l.spec.limit,
            balance: l.status.as_ref().map_or(0, |s| s.balance),
        };
        if let Err(e) = ledger.upsert_line(l.name_any(), line) {
            refused.push(e.to_string());
        }
    }
    (ledger, refused)
}

/// A sum as a JSON number, or as a string when it does not fit one (never in practice: lines
/// are capped at 10^15, but the ledger sums in i128 so nothing can overflow).
pub fn int(v: i128) -> Value {
    i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from)
}

/// `credit_balances`: what every account is owed minus what it owes, in milli-credits.
pub async fn balances(client: &Client) -> ToolResult {
    let lines = all(client).await?;
    let (ledger, refused) = ledger(&lines);
    let balances = ledger.balances();
    let items: Vec<Value> = balances
        .iter()
        .map(|(account, balance)| {
            let (mut owed, mut owes) = (0i128, 0i128);
            for (_, l) in ledger.lines() {
                if &l.creditor == account {
                    owed += i128::from(l.balance);
                }
                if &l.debtor == account {
                    owes += i128::from(l.balance);
                }
            }
            json!({
                "account": account.to_string(),
                "balance": int(*balance),
                "owedToIt": int(owed),
                "itOwes": int(owes),
            })
        })
        .collect();
    let sum: i128 = balances.values().sum();
    Ok(json!({
        "unit": "milli-credits",
        "lines": lines.len(),
        "balances": items,
        "sum": int(sum),
        "note": "mutual credit: balances always sum to zero",
        "unreadableLines": refused,
    }))
}

/// `credit_lines`: every line (or those naming one account) with limit, balance and state.
pub async fn lines(client: &Client, args: CreditLinesArgs) -> ToolResult {
    let filter: Option<Account> = match args.account.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(a.parse().map_err(|e| {
            ToolError::Invalid(format!(
                "account: {e}, such as node/library-1 or namespace/shop"
            ))
        })?),
        None => None,
    };
    let lines = all(client).await?;
    let items: Vec<Value> = lines
        .iter()
        .filter(|l| {
            filter
                .as_ref()
                .is_none_or(|a| &l.spec.creditor == a || &l.spec.debtor == a)
        })
        .map(|l| {
            let status = l.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .find(|c| c.type_ == CONDITION_READY);
            json!({
                "name": l.name_any(),
                "creditor": l.spec.creditor.to_string(),
                "debtor": l.spec.debtor.to_string(),
                "limit": l.spec.limit,
                "balance": status.balance,
                "utilization": status.utilization,
                "ready": ready.map(|c| c.status.clone()),
                "readyReason": ready.map(|c| c.reason.clone()),
                "lastTransfer": status.last_transfer,
            })
        })
        .collect();
    Ok(json!({"unit": "milli-credits", "count": items.len(), "creditLines": items}))
}

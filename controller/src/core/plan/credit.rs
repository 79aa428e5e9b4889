//! The CreditLine plan: the Ready condition and utilization of a line, and the status a line
//! has once a transfer is applied to it (the `api` crate's ledger: limits, and replay refusal
//! from `recentTransferIds`). `reconcile::credit` reads the line and writes the result.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::ledger::{Applied, Ledger, LedgerError, Line, Transfer};
use univrs_api::resources::creditline::{
    CONDITION_READY, CreditLineStatus, RECENT_TRANSFERS, TransferRecord,
};
use univrs_api::{Account, CreditLine};

/// Why a transfer cannot be applied to a line, whatever the API server says.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The ledger refused it (limit, sign, self-payment).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
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

/// Applies `t` to the line `cl` (named `line`) at `now`: whether it was new or a replay, and
/// for a new one the line's next status (its balance, utilization, last transfer and the
/// transfer ids it remembers).
pub fn transfer(
    line: &str,
    cl: &CreditLine,
    t: &Transfer,
    now: Timestamp,
) -> Result<(Applied, Option<CreditLineStatus>), Refusal> {
    let joins = (cl.spec.creditor == t.from && cl.spec.debtor == t.to)
        || (cl.spec.creditor == t.to && cl.spec.debtor == t.from);
    if !joins {
        return Err(Refusal::WrongLine(
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
            limit: cl.limit_now(),
            balance: status.balance,
        },
    )?;
    for id in &status.recent_transfer_ids {
        ledger.remember(id.clone());
    }
    let applied = ledger.apply(t)?;
    if applied == Applied::Duplicate {
        return Ok((applied, None));
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
        at: Time(now),
    };
    let next = CreditLineStatus {
        balance,
        utilization: Some(utilization(balance, cl.limit_now())),
        last_transfer: Some(record),
        recent_transfer_ids: recent,
        ..status
    };
    Ok((applied, Some(next)))
}

/// The line's next status: Ready when both accounts exist (`missing` names those that do
/// not), the limit the Reputation policy allows now (`effective`, None under the Fixed one),
/// utilization kept current; None when nothing changes.
pub fn status(
    cl: &CreditLine,
    missing: &[String],
    effective: Option<i64>,
    now: Timestamp,
) -> Option<CreditLineStatus> {
    let mut status = cl.status.clone().unwrap_or_default();
    let effective_changed = status.effective_limit != effective;
    status.effective_limit = effective;
    let ready = if missing.is_empty() {
        DesiredCondition::new(
            CONDITION_READY,
            true,
            "AccountsExist",
            match effective {
                Some(now) => format!(
                    "{} extends up to {} milli-credits to {}, {now} of them by its reputation now",
                    cl.spec.creditor, cl.spec.limit, cl.spec.debtor
                ),
                None => format!(
                    "{} extends up to {} milli-credits to {}",
                    cl.spec.creditor, cl.spec.limit, cl.spec.debtor
                ),
            },
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
    let mut changed = set_condition(&mut conditions, ready.at_generation(generation), Time(now));
    let util = utilization(status.balance, cl.limit_with(Some(&status)));
    changed |= effective_changed
        || status.utilization.as_deref() != Some(util.as_str())
        || status.observed_generation != generation;
    changed.then_some(CreditLineStatus {
        observed_generation: generation,
        utilization: Some(util),
        conditions,
        ..status
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(limit: i64, balance: i64) -> CreditLine {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
            "metadata": {"name": "l", "generation": 1},
            "spec": {"creditor": "node/a", "debtor": "namespace/shop", "limit": limit},
            "status": {"balance": balance}
        }))
        .unwrap()
    }

    fn at() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    #[test]
    fn utilization_is_a_clamped_percentage() {
        assert_eq!(utilization(50, 200), "25%");
        assert_eq!(utilization(500, 200), "100%");
        assert_eq!(utilization(-5, 200), "0%");
        assert_eq!(utilization(5, 0), "0%");
    }

    #[test]
    fn a_transfer_is_applied_once_and_only_along_its_line() {
        let t = Transfer {
            id: "t1".into(),
            from: "namespace/shop".parse().unwrap(),
            to: "node/a".parse().unwrap(),
            amount: 30,
        };
        let cl = line(100, 0);
        let (applied, next) = transfer("l", &cl, &t, at()).unwrap();
        assert_eq!(applied, Applied::Moved(vec![("l".into(), 30)]));
        let next = next.unwrap();
        assert_eq!(
            (next.balance, next.utilization.as_deref()),
            (30, Some("30%"))
        );
        assert_eq!(next.recent_transfer_ids, ["t1"]);
        let mut again = cl.clone();
        again.status = Some(next);
        assert!(matches!(
            transfer("l", &again, &t, at()),
            Ok((Applied::Duplicate, None))
        ));
        let stranger = Transfer {
            from: "namespace/other".parse().unwrap(),
            ..t.clone()
        };
        assert!(matches!(
            transfer("l", &cl, &stranger, at()),
            Err(Refusal::WrongLine(..))
        ));
        let too_much = Transfer { amount: 101, ..t };
        assert!(matches!(
            transfer("l", &cl, &too_much, at()),
            Err(Refusal::Ledger(_))
        ));
    }

    #[test]
    fn a_line_is_ready_when_both_accounts_exist_and_written_only_on_change() {
        let cl = line(200, 50);
        let next = status(&cl, &[], None, at()).unwrap();
        assert_eq!(next.utilization.as_deref(), Some("25%"));
        assert!(univrs_api::conditions::is_true(
            &next.conditions,
            CONDITION_READY
        ));
        let mut settled = cl.clone();
        settled.status = Some(next);
        assert_eq!(status(&settled, &[], None, at()), None);
        let unknown = status(&settled, &["node/a".into()], None, at()).unwrap();
        assert!(!univrs_api::conditions::is_true(
            &unknown.conditions,
            CONDITION_READY
        ));
    }

    #[test]
    fn under_the_reputation_policy_a_node_owes_what_its_reputation_allows() {
        use univrs_api::resources::creditline::{LimitPolicy, reputation_limit};
        assert_eq!(reputation_limit(900, 0.3), 0);
        assert_eq!(reputation_limit(900, 0.5), 300);
        assert_eq!(reputation_limit(900, 0.95), 900);
        let mut cl: CreditLine = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
            "metadata": {"name": "l", "generation": 1},
            "spec": {"creditor": "node/a", "debtor": "node/b", "limit": 900,
                "limitPolicy": "Reputation"},
            "status": {"balance": 0}
        }))
        .unwrap();
        assert_eq!(cl.spec.limit_policy, LimitPolicy::Reputation);
        assert_eq!(
            cl.limit_now(),
            0,
            "nothing until the controller has computed it"
        );
        cl.status = status(&cl, &[], Some(300), at());
        assert_eq!(cl.limit_now(), 300);
        let t = |id: &str, amount| Transfer {
            id: id.into(),
            from: "node/b".parse().unwrap(),
            to: "node/a".parse().unwrap(),
            amount,
        };
        assert!(matches!(
            transfer("l", &cl, &t("t1", 301), at()),
            Err(Refusal::Ledger(_))
        ));
        let (_, next) = transfer("l", &cl, &t("t2", 300), at()).unwrap();
        cl.status = next;
        // Its reputation falls: it may owe no more, and can still pay back.
        cl.status = status(&cl, &[], Some(100), at());
        assert_eq!(cl.limit_now(), 300, "never below what it owes");
        let back = Transfer {
            id: "t3".into(),
            from: "node/a".parse().unwrap(),
            to: "node/b".parse().unwrap(),
            amount: 250,
        };
        let (_, next) = transfer("l", &cl, &back, at()).unwrap();
        cl.status = next;
        assert_eq!(cl.limit_now(), 100);
        assert!(matches!(
            transfer("l", &cl, &t("t4", 51), at()),
            Err(Refusal::Ledger(_))
        ));
    }
}

//! The mutual-credit ledger: transfers along credit lines, with limits, exactly once.
//!
//! A line lets its debtor owe its creditor up to `limit` milli-credits; its `balance` (what the
//! debtor owes) stays within `[0, limit]`. A transfer of `amount` from `from` to `to` moves along
//! the direct lines between the two:
//! 1. first it repays what `to` owes `from` (lines with creditor `from`, debtor `to`: balance
//!    down, never below 0);
//! 2. then it draws on credit `to` extends to `from` (lines with creditor `to`, debtor `from`:
//!    balance up, never above the limit).
//!
//! Lines are visited in name order, so the result is deterministic. A transfer that does not fit
//! changes nothing (it is atomic), and a transfer id that was applied before is reported as a
//! duplicate and changes nothing. An account's balance is what it is owed minus what it owes,
//! so the balances of all accounts always sum to zero: mutual credit is neither created nor
//! destroyed. All arithmetic is checked; nothing overflows or panics.

use crate::account::Account;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A credit line as the ledger sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// The account extending credit.
    pub creditor: Account,
    /// The account that may owe.
    pub debtor: Account,
    /// The most the debtor may owe, in milli-credits (≥ 0).
    pub limit: i64,
    /// What the debtor owes the creditor, in `[0, limit]`.
    pub balance: i64,
}

/// A payment from one account to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    /// Unique id; a transfer with an id already applied is a duplicate.
    pub id: String,
    /// The paying account.
    pub from: Account,
    /// The paid account.
    pub to: Account,
    /// Milli-credits, > 0.
    pub amount: i64,
}

/// What applying a transfer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The transfer moved these (line name, balance change) amounts.
    Moved(Vec<(String, i64)>),
    /// The id was applied before; nothing changed.
    Duplicate,
}

/// Why a transfer or a line was refused. Nothing changes when one is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LedgerError {
    /// The amount is zero or negative.
    #[error("transfer {id}: amount must be positive, got {amount}")]
    NonPositive {
        /// The transfer id.
        id: String,
        /// The amount given.
        amount: i64,
    },
    /// Paying oneself.
    #[error("transfer {0}: from and to are the same account")]
    SelfTransfer(String),
    /// The lines between the two accounts cannot carry the amount.
    #[error("transfer {id}: {from} can pay {to} at most {headroom} milli-credits, not {amount}")]
    InsufficientCredit {
        /// The transfer id.
        id: String,
        /// The payer.
        from: Account,
        /// The payee.
        to: Account,
        /// What the transfer asked for.
        amount: i64,
        /// What the lines allow.
        headroom: i64,
    },
    /// A line whose limit, balance or accounts are impossible.
    #[error("line {name}: {reason}")]
    InvalidLine {
        /// The line name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Lines, and the ids of the transfers applied to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    lines: BTreeMap<String, Line>,
    applied: BTreeSet<String>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a line, checking it is possible (limit ≥ 0, balance in [0, limit],
    /// creditor ≠ debtor). Changing a limit below the balance is refused.
    pub fn upsert_line(&mut self, name: impl Into<String>, line: Line) -> Result<(), LedgerError> {
        let name = name.into();
        let reason = if line.limit < 0 {
            Some("limit must not be negative")
        } else if line.balance < 0 || line.balance > line.limit {
            Some("balance must be within [0, limit]")
        } else if line.creditor == line.debtor {
            Some("creditor and debtor must differ")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(LedgerError::InvalidLine { name, reason });
        }
        self.lines.insert(name, line);
        Ok(())
    }

    /// Marks a transfer id as already applied (as recorded on a line's status).
    pub fn remember(&mut self, id: impl Into<String>) {
        self.applied.insert(id.into());
    }

    /// Whether a transfer id has been applied.
    pub fn was_applied(&self, id: &str) -> bool {
        self.applied.contains(id)
    }

    /// The line with this name.
    pub fn line(&self, name: &str) -> Option<&Line> {
        self.lines.get(name)
    }

    /// Every line, by name.
    pub fn lines(&self) -> impl Iterator<Item = (&String, &Line)> {
        self.lines.iter()
    }

    /// How much `from` can pay `to` now: repayable debt plus unused credit. Saturates at i64::MAX.
    pub fn headroom(&self, from: &Account, to: &Account) -> i64 {
        self.lines.values().fold(0i64, |acc, l| {
            let room = if l.creditor == *from && l.debtor == *to {
                l.balance
            } else if l.creditor == *to && l.debtor == *from {
                l.limit - l.balance
            } else {
                0
            };
            acc.saturating_add(room)
        })
    }

    /// Applies a transfer atomically and at most once.
    pub fn apply(&mut self, t: &Transfer) -> Result<Applied, LedgerError> {
        if self.applied.contains(&t.id) {
            return Ok(Applied::Duplicate);
        }
        if t.amount <= 0 {
            return Err(LedgerError::NonPositive {
                id: t.id.clone(),
                amount: t.amount,
            });
        }
        if t.from == t.to {
            return Err(LedgerError::SelfTransfer(t.id.clone()));
        }
        let headroom = self.headroom(&t.from, &t.to);
        if headroom < t.amount {
            return Err(LedgerError::InsufficientCredit {
                id: t.id.clone(),
                from: t.from.clone(),
                to: t.to.clone(),
                amount: t.amount,
                headroom,
            });
        }
        let mut left = t.amount;
        let mut moves = Vec::new();
        // Repay first: lines where `to` owes `from`.
        for (name, l) in self.lines.iter_mut() {
            if left == 0 {
                break;
            }
            if l.creditor == t.from && l.debtor == t.to && l.balance > 0 {
                let step = left.min(l.balance);
                l.balance -= step;
                left -= step;
                moves.push((name.clone(), -step));
            }
        }
        // Then draw on credit `to` extends to `from`.
        for (name, l) in self.lines.iter_mut() {
            if left == 0 {
                break;
            }
            if l.creditor == t.to && l.debtor == t.from && l.balance < l.limit {
                let step = left.min(l.limit - l.balance);
                l.balance += step;
                left -= step;
                moves.push((name.clone(), step));
            }
        }
        debug_assert_eq!(left, 0, "headroom was checked");
        self.applied.insert(t.id.clone());
        Ok(Applied::Moved(moves))
    }

    /// Every account's balance: what it is owed minus what it owes. Computed in i128, so it
    /// cannot overflow however many lines there are.
    pub fn balances(&self) -> BTreeMap<Account, i128> {
        let mut out: BTreeMap<Account, i128> = BTreeMap::new();
        for l in self.lines.values() {
            *out.entry(l.creditor.clone()).or_default() += i128::from(l.balance);
            *out.entry(l.debtor.clone()).or_default() -= i128::from(l.balance);
        }
        out
    }

    /// One account's balance.
    pub fn balance(&self, account: &Account) -> i128 {
        self.balances().get(account).copied().unwrap_or(0)
    }

    /// Closes every line of a departed account. Returns what it is owed by others (claims the
    /// revival pool may collect) and what it owes others (debts written off against its
    /// creditors), and removes its lines, which keeps the sum of balances at zero.
    pub fn settle_departed(&mut self, account: &Account) -> Settlement {
        let mut s = Settlement::default();
        self.lines.retain(|name, l| {
            if l.creditor == *account {
                s.owed_to_it
                    .push((name.clone(), l.debtor.clone(), l.balance));
                false
            } else if l.debtor == *account {
                s.owed_by_it
                    .push((name.clone(), l.creditor.clone(), l.balance));
                false
            } else {
                true
            }
        });
        s
    }
}

/// What closing a departed account's lines left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    /// (line, debtor, amount) the departed account was owed.
    pub owed_to_it: Vec<(String, Account, i64)>,
    /// (line, creditor, amount) the departed account owed.
    pub owed_by_it: Vec<(String, Account, i64)>,
}

impl Settlement {
    /// The net the departed account leaves: owed to it minus owed by it (i128: cannot overflow).
    pub fn net(&self) -> i128 {
        let to: i128 = self.owed_to_it.iter().map(|(_, _, a)| i128::from(*a)).sum();
        let by: i128 = self.owed_by_it.iter().map(|(_, _, a)| i128::from(*a)).sum();
        to - by
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(creditor: &Account, debtor: &Account, limit: i64) -> Line {
        Line {
            creditor: creditor.clone(),
            debtor: debtor.clone(),
            limit,
            balance: 0,
        }
    }

    fn pay(id: &str, from: &Account, to: &Account, amount: i64) -> Transfer {
        Transfer {
            id: id.into(),
            from: from.clone(),
            to: to.clone(),
            amount,
        }
    }

    #[test]
    fn pays_repays_and_refuses_past_the_limit() {
        let (ns, node) = (Account::namespace("portal"), Account::node("library"));
        let mut l = Ledger::new();
        l.upsert_line("library-portal", line(&node, &ns, 1000))
            .unwrap();
        assert_eq!(l.headroom(&ns, &node), 1000);
        assert_eq!(
            l.apply(&pay("t1", &ns, &node, 600)),
            Ok(Applied::Moved(vec![("library-portal".into(), 600)]))
        );
        assert_eq!(l.balance(&node), 600);
        assert_eq!(l.balance(&ns), -600);
        let err = l.apply(&pay("t2", &ns, &node, 500)).unwrap_err();
        assert!(err.to_string().contains("at most 400"), "{err}");
        assert_eq!(l.apply(&pay("t1", &ns, &node, 600)), Ok(Applied::Duplicate));
        // The node pays the namespace back: repays the debt.
        l.apply(&pay("t3", &node, &ns, 100)).unwrap();
        assert_eq!(l.line("library-portal").unwrap().balance, 500);
        assert!(
            l.apply(&pay("t4", &node, &ns, 501)).is_err(),
            "cannot repay more than owed"
        );
    }

    #[test]
    fn refuses_impossible_lines_and_transfers() {
        let a = Account::node("a");
        let mut l = Ledger::new();
        assert!(l.upsert_line("x", line(&a, &a, 10)).is_err());
        assert!(
            l.upsert_line("x", line(&a, &Account::node("b"), -50))
                .is_err()
        );
        assert!(l.apply(&pay("n", &a, &Account::node("b"), -20)).is_err());
        assert!(l.apply(&pay("z", &a, &Account::node("b"), 0)).is_err());
        assert!(l.apply(&pay("s", &a, &a, 1)).is_err());
    }

    #[test]
    fn departure_removes_lines_and_reports_what_was_left() {
        let (a, b, c) = (Account::node("a"), Account::node("b"), Account::node("c"));
        let mut l = Ledger::new();
        l.upsert_line("ab", line(&a, &b, 100)).unwrap();
        l.upsert_line("ca", line(&c, &a, 100)).unwrap();
        l.apply(&pay("1", &b, &a, 70)).unwrap();
        l.apply(&pay("2", &a, &c, 20)).unwrap();
        let s = l.settle_departed(&a);
        assert_eq!(s.net(), 50);
        assert_eq!(l.lines().count(), 0);
        assert_eq!(l.balances().values().sum::<i128>(), 0);
    }
}

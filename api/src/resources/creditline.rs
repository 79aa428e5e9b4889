//! `CreditLine` (cluster-scoped): mutual credit that one account extends to another.
//!
//! The line's `balance` is what the debtor owes the creditor, always within `[0, limit]`.
//! Paying along a line moves the balance: the debtor paying the creditor draws on the line
//! (balance up), the creditor paying the debtor repays it (balance down). An account's balance is
//! the sum over its lines of what it is owed minus what it owes, so the balances of all accounts
//! sum to zero: credit is neither created nor destroyed (see `crate::ledger`).
//!
//! Writer of status: the controller (`univrs-controller`) only, which applies transfers with
//! optimistic concurrency (resourceVersion) so that each transfer id applies at most once.

use crate::account::Account;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the line is in force (accounts exist, within limit).
pub const CONDITION_READY: &str = "Ready";

/// How many recent transfer ids a line remembers to refuse replays.
pub const RECENT_TRANSFERS: usize = 64;

/// Credit that a creditor account extends to a debtor account, up to a limit.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "univrs.io",
    version = "v1alpha1",
    kind = "CreditLine",
    status = "CreditLineStatus",
    derive = "PartialEq",
    shortname = "ucl",
    category = "univrs",
    doc = "A CreditLine is mutual credit: the creditor lets the debtor owe it up to limit milli-credits.",
    printcolumn(
        name = "Creditor",
        type_ = "string",
        json_path = ".spec.creditor",
        description = "Who extends credit"
    ),
    printcolumn(
        name = "Debtor",
        type_ = "string",
        json_path = ".spec.debtor",
        description = "Who may owe"
    ),
    printcolumn(
        name = "Limit",
        type_ = "integer",
        json_path = ".spec.limit",
        description = "Milli-credits"
    ),
    printcolumn(
        name = "Balance",
        type_ = "integer",
        json_path = ".status.balance",
        description = "Milli-credits the debtor owes"
    ),
    printcolumn(
        name = "Used",
        type_ = "string",
        json_path = ".status.utilization",
        description = "Balance as a share of the limit"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self.creditor != self.debtor").message("creditor and debtor must be different accounts").field_path(".debtor"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.limitPolicy) || self.limitPolicy != 'Reputation' || self.debtor.startsWith('node/')").message("the Reputation limit policy needs a node debtor (a namespace has no reputation)").field_path(".limitPolicy"))]
#[serde(rename_all = "camelCase")]
pub struct CreditLineSpec {
    /// The account extending credit: node/<name> or namespace/<name>.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("creditor is immutable; create a new line instead"))]
    pub creditor: Account,
    /// The account that may owe: node/<name> or namespace/<name>.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("debtor is immutable; create a new line instead"))]
    pub debtor: Account,
    /// The most the debtor may owe, in milli-credits.
    #[schemars(range(min = 0, max = 1_000_000_000_000_000i64))]
    pub limit: i64,
    /// Fixed (the default): `limit` applies as written. Reputation: a node debtor may owe
    /// only part of it, by its reputation (see [`reputation_limit`]).
    #[serde(default, skip_serializing_if = "LimitPolicy::is_fixed")]
    pub limit_policy: LimitPolicy,
}

/// How a line's limit applies.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// The limit as written.
    #[default]
    Fixed,
    /// The limit scaled by the debtor node's reputation (a node debtor only).
    Reputation,
}

impl LimitPolicy {
    /// Whether this is the default policy.
    pub fn is_fixed(&self) -> bool {
        *self == LimitPolicy::Fixed
    }
}

/// What a node of `reputation` may owe on a line of `limit` under the Reputation policy:
/// nothing at 0.3 or below, all of it from 0.9, linear between (a fresh node at 0.5 a third).
pub fn reputation_limit(limit: i64, reputation: f64) -> i64 {
    // In thousandths of reputation, so the share is exact: (r − 300) / 600.
    let above = ((reputation.clamp(0.0, 1.0) * 1000.0).round() as i128 - 300).clamp(0, 600);
    (i128::from(limit.max(0)) * above / 600) as i64
}

impl CreditLine {
    /// The most the debtor may owe now: the limit, or under the Reputation policy what the
    /// controller last computed (`status.effectiveLimit`, nothing until it has); never less
    /// than what it owes already, so paying back always works.
    pub fn limit_now(&self) -> i64 {
        self.limit_with(self.status.as_ref())
    }

    /// What [`CreditLine::limit_now`] would be with `status` as the line's status.
    pub fn limit_with(&self, status: Option<&CreditLineStatus>) -> i64 {
        let balance = status.map_or(0, |s| s.balance);
        match self.spec.limit_policy {
            LimitPolicy::Fixed => self.spec.limit,
            LimitPolicy::Reputation => status
                .and_then(|s| s.effective_limit)
                .unwrap_or(0)
                .clamp(0, self.spec.limit)
                .max(balance.min(self.spec.limit)),
        }
    }
}

/// The state of a credit line.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CreditLineStatus {
    /// The metadata.generation this status was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Milli-credits the debtor owes the creditor, within [0, limit].
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub balance: i64,
    /// Under the Reputation policy, what the debtor node may owe by its reputation now
    /// (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub effective_limit: Option<i64>,
    /// balance / limit as a percentage string, such as `42%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<String>,
    /// The last transfer applied to this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transfer: Option<TransferRecord>,
    /// Ids of the most recent transfers applied (newest last), so a replay is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub recent_transfer_ids: Vec<String>,
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A transfer as recorded on a line.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TransferRecord {
    /// The transfer id (applied at most once).
    pub id: String,
    /// The paying account.
    pub from: Account,
    /// The paid account.
    pub to: Account,
    /// Milli-credits moved.
    pub amount: i64,
    /// When it was applied.
    pub at: Time,
}

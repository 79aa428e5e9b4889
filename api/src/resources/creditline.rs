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

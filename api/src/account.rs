//! What an *account* is in the mutual-credit economy.
//!
//! Two kinds of party hold credit:
//! - a **Node** (`node/<name>`, the cluster-scoped `nodes.univrs.io` object): it earns credit by
//!   running instances and may extend credit to others;
//! - a **Namespace** (`namespace/<name>`): the owner of the Workloads in it, which pays for the
//!   instances they run.
//!
//! Every CreditLine, transfer and balance names accounts this way and nothing else; the string
//! form `kind/name` is what appears in printer columns, logs and transfer ids.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of party an account belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountKind {
    /// A contributing machine: a `nodes.univrs.io` object.
    Node,
    /// A namespace, as the owner (and payer) of the Workloads in it.
    Namespace,
}

/// A party that holds credit: a Node, or a Namespace as the owner of workloads.
///
/// In manifests and on the wire an account is the string `node/<name>` or `namespace/<name>`,
/// so that `kubectl get creditlines` can print it and CEL rules can compare it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Account {
    /// Node or Namespace.
    pub kind: AccountKind,
    /// The name of the nodes.univrs.io object or of the namespace (a DNS-1123 name).
    pub name: String,
}

/// The schema pattern of an account string.
pub const ACCOUNT_PATTERN: &str = r"^(node|namespace)/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$";

impl JsonSchema for Account {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Account".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An account: node/<name> (a nodes.univrs.io object) or namespace/<name> (the owner of the workloads in that namespace).",
            "pattern": ACCOUNT_PATTERN,
            "maxLength": 263,
        })
    }
}

impl TryFrom<String> for Account {
    type Error = ParseAccountError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Account> for String {
    fn from(a: Account) -> Self {
        a.to_string()
    }
}

impl Account {
    /// The account of a node.
    pub fn node(name: impl Into<String>) -> Self {
        Self {
            kind: AccountKind::Node,
            name: name.into(),
        }
    }

    /// The account of a namespace (the owner of its workloads).
    pub fn namespace(name: impl Into<String>) -> Self {
        Self {
            kind: AccountKind::Namespace,
            name: name.into(),
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            AccountKind::Node => "node",
            AccountKind::Namespace => "namespace",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// Why a string is not an account.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid account {0:?}: expected node/<name> or namespace/<name>")]
pub struct ParseAccountError(String);

impl FromStr for Account {
    type Err = ParseAccountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseAccountError(s.to_string());
        let (kind, name) = s.split_once('/').ok_or_else(err)?;
        if name.is_empty() || name.contains('/') {
            return Err(err());
        }
        match kind {
            "node" => Ok(Self::node(name)),
            "namespace" => Ok(Self::namespace(name)),
            _ => Err(err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_string_form() {
        for a in [
            Account::node("library-1"),
            Account::namespace("community-portal"),
        ] {
            assert_eq!(a.to_string().parse::<Account>(), Ok(a));
        }
        assert!("pod/x".parse::<Account>().is_err());
        assert!("node/".parse::<Account>().is_err());
        assert!("node".parse::<Account>().is_err());
    }

    #[test]
    fn serializes_as_a_string() {
        let a = Account::node("library");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"node/library\"");
        let back: Account = serde_json::from_str("\"namespace/shop\"").unwrap();
        assert_eq!(back, Account::namespace("shop"));
        assert!(serde_json::from_str::<Account>("\"bank/x\"").is_err());
    }
}

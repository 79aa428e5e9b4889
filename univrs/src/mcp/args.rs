//! The arguments of every tool, as Rust types: their JSON schemas (schemars) are the tools'
//! input schemas, and their names are Kubernetes' (`name`, `namespace`, `replicas`, `image`,
//! `nodeSelector`, `hostPort`, …) so an agent that knows Kubernetes knows these.
//!
//! Unknown fields are refused (a typo such as `replica` gets "unknown field", not silence).

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;
use univrs_api::resources::workload::{
    ContainerPort, CreditPolicy, EnvVar, ResourceRequirements, RestartPolicy,
};

/// The namespace used when a tool is not given one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `workload_deploy`: the whole desired state of a Workload: its containers (`containers`,
/// as in the spec), or one container described by `image` and its companions.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeployArgs {
    /// The Workload's name: lowercase letters, digits, '-' and '.' (a DNS subdomain).
    pub name: String,
    /// Its namespace, which owns (and pays for) it. Default: "default".
    #[serde(default)]
    pub namespace: Option<String>,
    /// The OCI image of a single-container Workload, such as
    /// `registry.example:5000/demo/busybox:1.36` (with `container`, `command`, `args`, `env`,
    /// `ports` and `resources` for that container). Give this or `containers`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// The Workload's containers as its spec holds them: `[{"name": "web", "image": "…",
    /// "ports": [{"containerPort": 8080}], "resources": {"requests": {"cpu": "250m"}}}]`
    /// (`"resources": {"cpu": "500m", "memory": "256Mi"}` is read as requests). Give this or
    /// `image`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<univrs_api::resources::workload::Container>>")]
    pub containers: Option<Vec<serde_json::Value>>,
    /// The Workload's labels (`metadata.labels`), such as `{"app": "portal"}`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How many instances to run (0 to 1000). Default: 1 for a new Workload; left as it is
    /// when updating one.
    #[serde(default)]
    pub replicas: Option<i32>,
    /// The container's name (a DNS label). Default: the existing container's name when the
    /// Workload has exactly one, else "main".
    #[serde(default)]
    pub container: Option<String>,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables: `[{"name": "MODE", "value": "fast"}]`.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Ports the container listens on; `hostPort` publishes one on the node's address:
    /// `[{"containerPort": 8080, "hostPort": 30080, "protocol": "TCP"}]`.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Requests (used for placement) and limits (enforced):
    /// `{"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}`.
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    /// Only nodes whose labels include all of these are eligible.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Only nodes whose reputation is at least this (0 to 1) are eligible.
    #[serde(default)]
    pub min_reputation: Option<f64>,
    /// Always (default), OnFailure or Never.
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    /// What the namespace is willing to pay, in milli-credits: `{"budget": 100000}`,
    /// `{"maxPricePerHour": 2000}` or both.
    #[serde(default)]
    pub credit: Option<CreditPolicy>,
}

/// A Workload by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRef {
    /// The Workload's name.
    pub name: String,
    /// Its namespace. Default: "default".
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `workload_logs`: which instance's output, and how much.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsArgs {
    /// The Workload's name.
    pub name: String,
    /// Its namespace. Default: "default".
    #[serde(default)]
    pub namespace: Option<String>,
    /// The instance's index (the N of NAME-N, as workload_get lists them). Default: the
    /// first placed instance.
    #[serde(default)]
    pub instance: Option<u32>,
    /// The container's name. Default: the first.
    #[serde(default)]
    pub container: Option<String>,
    /// How many of the last lines (1 to 1000). Default: 100.
    #[serde(default)]
    pub tail_lines: Option<usize>,
}

/// `workload_list`: which namespace to list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListArgs {
    /// Only this namespace. Default: every namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `workload_scale`: the new replica count.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleArgs {
    /// The Workload's name.
    pub name: String,
    /// Its namespace. Default: "default".
    #[serde(default)]
    pub namespace: Option<String>,
    /// How many instances to run (0 to 1000).
    pub replicas: i32,
}

/// A node (`nodes.univrs.io`) by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRef {
    /// The node's name, as `cluster_nodes` lists it.
    pub name: String,
}

/// `credit_lines`: whose lines to list.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreditLinesArgs {
    /// Only lines naming this account (`node/<name>` or `namespace/<name>`) as creditor or
    /// debtor. Default: every line.
    #[serde(default)]
    pub account: Option<String>,
}

/// `reputation`: which node.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReputationArgs {
    /// Only this node. Default: every node.
    #[serde(default)]
    pub node: Option<String>,
}

/// `vouch_create`: whom this server's identity vouches for, and how strongly.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VouchArgs {
    /// The node vouched for: its name (as `cluster_nodes` lists it) or its DID (`did:key:z6Mk…`).
    pub subject: String,
    /// How strongly to trust it, 0 to 1 (signed to three decimals).
    pub weight: f64,
    /// Why, for people (at most 256 characters).
    #[serde(default)]
    pub reason: Option<String>,
    /// How long the vouch holds, such as `720h` or `30days`. Default: 30 days.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// The namespace an argument names, or the default one.
pub fn namespace_or_default(ns: &Option<String>) -> &str {
    ns.as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

//! `Workload` (namespaced): containers to run somewhere in the community cloud.
//!
//! Writers of status (each with its own server-side-apply field manager):
//! - the controller (`univrs-controller`): `observedGeneration`, `replicas`, `readyReplicas`,
//!   `selector`, `creditSpent`, the conditions, and each instance's `name`, `node` and
//!   `placedAt`;
//!   and the registry logins sealed to each node (`imagePullCredentials`);
//! - the agent of the node an instance is placed on (`univrs-agent/<node>`): that instance's
//!   `phase`, `ready`, `restarts`, `message` and `startedAt`.

use crate::quantity::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Condition type: every replica has a node.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Condition type: at least the desired number of replicas are ready.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type: the workload is converging on its spec (placing, starting or moving instances).
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the owner's credit headroom or budget ran out, so the workload stops growing.
pub const CONDITION_CREDIT_EXHAUSTED: &str = "CreditExhausted";
/// Condition type: some reported usage cannot be priced at its node's rates (the price would
/// overflow); it stays unbilled, and is billed once it can be priced.
pub const CONDITION_PRICING_FAILED: &str = "PricingFailed";
/// Condition type: the Workload holds every port it exposes (`spec.expose`); False with
/// reason PortTaken when another Workload exposed one of them first.
pub const CONDITION_EXPOSED: &str = "Exposed";
/// The label every instance of a workload carries (`univrs.io/workload=<name>`), as
/// `status.selector` reports it for the scale subresource.
pub const WORKLOAD_LABEL: &str = "univrs.io/workload";

/// A set of containers run as `replicas` instances on nodes of the community cloud.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "univrs.io",
    version = "v1alpha1",
    kind = "Workload",
    namespaced,
    status = "WorkloadStatus",
    derive = "PartialEq",
    shortname = "uwl",
    category = "univrs",
    doc = "A Workload runs its containers as `replicas` instances on nodes of the community cloud, placed by resources, labels, reputation and credit.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Replicas wanted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Replicas running and ready"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status",
        description = "Whether enough replicas are ready"
    ),
    printcolumn(
        name = "Scheduled",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Scheduled\")].reason",
        description = "Placement outcome"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.containers[0].image",
        priority = 1,
        description = "Image of the first container"
    ),
    printcolumn(
        name = "Spent",
        type_ = "integer",
        json_path = ".status.creditSpent",
        priority = 1,
        description = "Milli-credits paid so far"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.expose) || self.expose.all(e, type(e.targetPort) == int || self.containers.exists(c, has(c.ports) && c.ports.exists(p, has(p.name) && p.name == e.targetPort)))").message("an exposed targetPort given by name must name a port of one of the containers").field_path(".expose"))]
pub struct WorkloadSpec {
    /// The containers every instance runs, in order. Names are unique.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.all(c, !has(c.ports) || c.ports.all(p, !has(p.hostPort) || self.map(d, has(d.ports) ? d.ports.filter(q, has(q.hostPort) && q.hostPort == p.hostPort && q.protocol == p.protocol).size() : 0).sum() == 1))").message("a hostPort/protocol pair may be used by only one port of one container").reason(kube::core::Reason::FieldValueDuplicate))]
    pub containers: Vec<Container>,

    /// How many instances to run. Scaled with `kubectl scale workloads.univrs.io/NAME --replicas=N`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Only nodes whose labels include all of these are eligible.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,

    /// Only nodes whose reputation is at least this (0 to 1) are eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_reputation: Option<f64>,

    /// What the owner (this namespace) is willing to pay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<CreditPolicy>,

    /// What to do when a container exits: Always (default), OnFailure or Never.
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// Seconds between SIGTERM and SIGKILL when an instance stops.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: i64,

    /// Secrets of this namespace (type `kubernetes.io/dockerconfigjson` or
    /// `kubernetes.io/dockercfg`) with logins for the registries of its images, tried before
    /// the node owner's. The controller seals the logins the images need to each node an
    /// instance is placed on; only that node can open them, and an image pulled with them is
    /// run by no other Workload that does not hold them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Ports served to the community, as a NodePort Service serves them: every member node
    /// accepts connections on `port` and sends each to a ready instance, on that node when
    /// one runs there, else on another node through the mesh (so it works across NAT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, self.exists_one(q, q.port == p.port))").message("each port is exposed once").reason(kube::core::Reason::FieldValueDuplicate))]
    pub expose: Vec<ExposedPort>,
}

/// A port of a Workload served on every member node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.protocol == 'TCP'").message("only TCP ports are exposed so far").field_path(".protocol"))]
pub struct ExposedPort {
    /// Its name, unique in the Workload.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The port every member node serves it on, from the range each node's owner allows
    /// (Node `spec.hostPorts`, by default 30000-32767); unique among the cluster's Workloads
    /// (the first to expose it keeps it).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The container's port: its number, or the name of one of its `ports`.
    #[schemars(extend("x-kubernetes-int-or-string" = true))]
    pub target_port: IntOrString,
    /// TCP (the default; UDP is not exposed yet).
    #[serde(default)]
    pub protocol: Protocol,
}

/// A reference to an object of the same namespace, by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LocalObjectReference {
    /// The object's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

fn default_replicas() -> i32 {
    1
}

fn default_grace() -> i64 {
    30
}

/// What a workload's owner is willing to pay, in integer milli-credits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.budget) || has(self.maxPricePerHour)").message("set budget, maxPricePerHour or both"))]
pub struct CreditPolicy {
    /// The most the workload may spend in total, in milli-credits; when spent it stops growing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub budget: Option<i64>,

    /// The highest price per instance-hour, in milli-credits, that a node may charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_price_per_hour: Option<i64>,
}

/// When a container that exited is started again.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Always restart, with backoff.
    #[default]
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

/// One container of a workload instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Unique within the workload; a DNS label.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// OCI image reference, such as `registry.example:5000/demo/busybox:1.36` or `oci:/path:tag`.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub args: Vec<String>,

    /// Environment variables, unique by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Ports the container listens on, unique by containerPort and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["containerPort".into(), "protocol".into()]))]
    pub ports: Vec<ContainerPort>,

    /// CPU, memory and GPU requests (used for placement) and limits (enforced by cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Restart the container when this probe fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,

    /// Count the instance as ready only while this probe succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
}

/// An environment variable.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    )]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// A port a container listens on, optionally published on the node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// An IANA-style service name for the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// Port number inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Port on the node's address that forwards to containerPort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<i32>,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[allow(clippy::upper_case_acronyms)]
pub enum Protocol {
    /// TCP.
    #[default]
    TCP,
    /// UDP.
    UDP,
}

/// Requests and limits of a container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || !isQuantity(string(self.requests.cpu)) || !isQuantity(string(self.limits.cpu)) || quantity(string(self.limits.cpu)).compareTo(quantity(string(self.requests.cpu))) >= 0").message("limits.cpu must be at least requests.cpu").field_path(".limits.cpu"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || !isQuantity(string(self.requests.memory)) || !isQuantity(string(self.limits.memory)) || quantity(string(self.limits.memory)).compareTo(quantity(string(self.requests.memory))) >= 0").message("limits.memory must be at least requests.memory").field_path(".limits.memory"))]
pub struct ResourceRequirements {
    /// What placement reserves on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ComputeResources>,
    /// The most the container may use (cgroup limits). A limit without a request also requests it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ComputeResources>,
}

/// Amounts of CPU, memory and GPUs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// CPU in cores: `500m`, `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory in bytes: `256Mi`, `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Whole GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub gpu: Option<i32>,
}

/// A health check: exactly one of exec, httpGet or tcpSocket.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.exec), has(self.httpGet), has(self.tcpSocket)].filter(x, x).size() == 1").message("set exactly one of exec, httpGet or tcpSocket"))]
pub struct Probe {
    /// Run a command in the container; exit 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// GET a path on the container; 200–399 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// Open a TCP connection to the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds after start before the first probe.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: i32,
    /// Seconds between probes.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    /// Seconds before a probe times out.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Consecutive successes that count as success.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// Consecutive failures that count as failure.
    #[serde(default = "default_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
}

fn default_period() -> i32 {
    10
}

fn default_one() -> i32 {
    1
}

fn default_failures() -> i32 {
    3
}

/// A command run inside the container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct ExecAction {
    /// The command and its arguments.
    #[schemars(length(min = 1, max = 64))]
    pub command: Vec<String>,
}

/// An HTTP GET against the container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct HttpGetAction {
    /// The path to request.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^/"))]
    pub path: String,
    /// The container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP (default) or HTTPS.
    #[serde(default)]
    pub scheme: Scheme,
}

fn default_path() -> String {
    "/".into()
}

/// The scheme of an HTTP probe.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[allow(clippy::upper_case_acronyms)]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    HTTP,
    /// HTTPS without certificate verification, as kubelet does.
    HTTPS,
}

/// A TCP connection attempt to the container.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct TcpSocketAction {
    /// The container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// What the controller and agents observe of a workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// The metadata.generation this status was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Instances that exist (placed on a node), whatever their phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Instances running and ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the instances, in string form, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Milli-credits paid for this workload so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_spent: Option<i64>,
    /// Each instance: where it is placed and how it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub instances: Vec<Instance>,
    /// Scheduled, Available, Progressing and CreditExhausted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// An auction among Auction-priced nodes for an instance waiting to be placed (written by
    /// the controller; see `univrs_api::enr::pricing::procure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auction: Option<Auction>,
    /// The registry logins of `spec.imagePullSecrets`, sealed to each node an instance is
    /// placed on (written by the controller; only that node's key opens its entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["node".into()]))]
    pub image_pull_credentials: Vec<SealedCredentials>,
}

/// An open auction for one instance: the nodes asked to bid, until when, and the key to seal
/// bids to (ephemeral: only the controller that opened the auction holds its secret half).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    /// Names this auction (bids are bound to it).
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    /// The instance being placed.
    pub instance: String,
    /// The Auction-priced nodes that may bid.
    #[schemars(length(max = 256))]
    pub nodes: Vec<String>,
    /// When the bids are opened and the award made (agents make no new bid after it).
    pub closes_at: Time,
    /// The did:key to seal bids to (`univrs_api::bid`).
    pub seal_key: String,
}

/// A Workload's registry logins for one node, sealed to the node's Ed25519 key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SealedCredentials {
    /// The node they are sealed to.
    pub node: String,
    /// Names what was sealed (the Secrets' versions, the registries, the node's key) without
    /// revealing it: the controller seals again only when it changes.
    #[schemars(length(max = 64))]
    pub fingerprint: String,
    /// A `config.json` with the logins for the registries of the Workload's images, sealed
    /// (`v1.<base64url>`; see `univrs_api::sealed`).
    #[schemars(length(max = 65536))]
    pub sealed: String,
}

/// One replica of a workload: its placement and its phase.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// `<workload>-<ordinal>`, stable for the life of the replica.
    pub name: String,
    /// The nodes.univrs.io object it is placed on (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it was placed on that node (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<Time>,
    /// Pending, Starting, Running, Succeeded, Failed or Terminating (written by the node's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InstancePhase>,
    /// Whether every container passes its readiness probe (written by the node's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// How many times its containers were restarted (written by the node's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i32>,
    /// When its containers last started (written by the node's agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Its address on its node's container network, where its ports answer (written by the
    /// node's agent; like a Pod's podIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Why it is in its phase, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Resources used so far by this placement, metered from its cgroups (written by the node's
    /// agent; cumulative, so a lost report loses nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<InstanceUsage>,
    /// How much of `usage` has been paid for (written by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed: Option<InstanceUsage>,
    /// The clearing price of the auction that placed it, per instance-hour in milli-credits
    /// (written by the controller); billing charges at it instead of the node's rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub awarded_price_per_hour: Option<i64>,
}

/// Cumulative resource use of one placement of an instance. A placement is a node and the
/// `placedAt` the controller gave it: counters restart at zero when the instance moves.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceUsage {
    /// The node the usage was metered on.
    pub node: String,
    /// The placement's `placedAt`.
    pub placed_at: Time,
    /// CPU time, in millicore-seconds (1000 = one core busy for one second).
    #[schemars(range(min = 0))]
    pub cpu_millicore_seconds: i64,
    /// Memory held over time, in MiB-seconds.
    #[schemars(range(min = 0))]
    pub memory_mib_seconds: i64,
    /// GPU time, in GPU-seconds.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub gpu_seconds: i64,
}

/// The lifecycle phase of an instance on its node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstancePhase {
    /// Placed, not yet started (image pulling, rootfs preparing).
    Pending,
    /// Containers created and starting.
    Starting,
    /// Containers running.
    Running,
    /// Exited with success and not restarted (restartPolicy Never or OnFailure).
    Succeeded,
    /// Exited with failure and not restarted, or could not be started.
    Failed,
    /// Stopping on its way off the node.
    Terminating,
}

impl InstanceUsage {
    /// Whether this usage belongs to the placement on `node` at `placed_at`.
    pub fn is_for(&self, node: Option<&String>, placed_at: Option<&Time>) -> bool {
        node == Some(&self.node) && placed_at == Some(&self.placed_at)
    }

    /// Nothing used yet by the placement on `node` at `placed_at`.
    pub fn zero(node: impl Into<String>, placed_at: Time) -> Self {
        Self {
            node: node.into(),
            placed_at,
            cpu_millicore_seconds: 0,
            memory_mib_seconds: 0,
            gpu_seconds: 0,
        }
    }
}

impl ComputeResources {
    /// CPU in millicores (absent counts as zero).
    pub fn cpu_millis(&self) -> Result<u64, crate::quantity::QuantityError> {
        self.cpu.as_ref().map_or(Ok(0), Quantity::to_milli)
    }

    /// Memory in bytes (absent counts as zero).
    pub fn memory_bytes(&self) -> Result<u64, crate::quantity::QuantityError> {
        self.memory.as_ref().map_or(Ok(0), Quantity::to_units)
    }
}

/// The name of a Workload's instance `index`: `<workload>-<index>`, as the controller places
/// it and every client (logs, the dashboard) names it.
pub fn instance_name(workload: &str, index: u32) -> String {
    format!("{workload}-{index}")
}

/// The index of `instance` if it is an instance of `workload` (the reverse of
/// [`instance_name`]).
pub fn instance_index(workload: &str, instance: &str) -> Option<u32> {
    instance
        .strip_prefix(workload)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

impl WorkloadSpec {
    /// What one instance reserves for an hour: per container its requests (or its limits where
    /// it gives no request), summed. The scheduler reserves it; an auction prices it.
    pub fn request_hour(&self) -> crate::enr::pricing::Usage {
        let mut total = crate::enr::pricing::Usage {
            duration_ms: 3_600_000,
            ..Default::default()
        };
        for r in self.containers.iter().filter_map(|c| c.resources.as_ref()) {
            let (req, lim) = (r.requests.as_ref(), r.limits.as_ref());
            let pick = |f: fn(&ComputeResources) -> Option<&Quantity>, milli: bool| {
                req.and_then(f).or(lim.and_then(f)).map_or(0, |q| {
                    if milli { q.to_milli() } else { q.to_units() }.unwrap_or(0)
                })
            };
            total.cpu_millis = total
                .cpu_millis
                .saturating_add(pick(|x| x.cpu.as_ref(), true));
            total.memory_bytes = total
                .memory_bytes
                .saturating_add(pick(|x| x.memory.as_ref(), false));
            let gpus = req.and_then(|x| x.gpu).or(lim.and_then(|x| x.gpu));
            total.gpus = total.gpus.saturating_add(gpus.unwrap_or(0).max(0) as u32);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_name_and_its_index_round_trip() {
        assert_eq!(instance_name("web", 3), "web-3");
        assert_eq!(instance_index("web", "web-3"), Some(3));
        assert_eq!(instance_index("web", "web-x"), None);
        assert_eq!(instance_index("web", "webapp-3"), None);
        assert_eq!(instance_index("web-1", "web-1-2"), Some(2));
    }
}

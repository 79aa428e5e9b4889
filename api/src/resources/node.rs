//! `Node` (cluster-scoped, `nodes.univrs.io`): a machine that contributes resources.
//!
//! The agent on the machine creates the object and owns its spec. Writers of status, each with
//! its own server-side-apply field manager:
//! - the node's agent (`univrs-agent/<node>`): `observations` (what it sees over the mesh:
//!   connected peers, uptime, bandwidth, latency, invalid gossip, and a report on each peer
//!   Node) and the `Reachable` condition;
//! - the controller (`univrs-controller`): `observedGeneration`, `reputation`, `allocated`,
//!   `instances`, `nexusRole`, `creditBalance`, `septal`, `peerView` (what the other Nodes'
//!   agents report about this one) and the `Ready` and `Isolated` conditions.
//!
//! Heartbeats are not status: the agent renews the Lease `univrs-node-<name>` in the
//! `univrs-system` namespace, as kubelets do, and the controller derives `Ready` from it.

use crate::quantity::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type: the agent's Lease is being renewed and the node accepts work.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: peers reach the node over the mesh.
pub const CONDITION_REACHABLE: &str = "Reachable";
/// Condition type: the septal gate has cut the node off (True means isolated).
pub const CONDITION_ISOLATED: &str = "Isolated";

/// Annotation asking the controller to move the node's instances elsewhere (`"true"`: drain).
pub const DRAIN_ANNOTATION: &str = "univrs.io/drain";
/// Finalizer that holds a deleted Node until its credit is settled through the revival pool.
pub const CREDIT_SETTLEMENT_FINALIZER: &str = "univrs.io/credit-settlement";
/// Annotation recording a departed node's settlement plan before any credit moves, so an
/// interrupted settlement resumes the same plan.
pub const REVIVAL_PLAN_ANNOTATION: &str = "univrs.io/revival-plan";
/// Annotation by which a node's owner lets the node's earnings pay for the Workloads of the
/// listed namespaces (comma-separated: its own organization's), and runs them for free. Only
/// people write it (nodes may write no `univrs.io/` annotation).
pub const PAYS_FOR_ANNOTATION: &str = "univrs.io/pays-for";

/// The namespaces whose Workloads `node`'s earnings pay for ([`PAYS_FOR_ANNOTATION`]), sorted.
pub fn pays_for(node: &Node) -> Vec<String> {
    let mut out: Vec<String> = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PAYS_FOR_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Where the agents keep their node Leases (and the controllers their leader Lease).
pub const LEASE_NAMESPACE: &str = crate::system::SYSTEM_NAMESPACE;
/// What every node Lease's name starts with.
const LEASE_PREFIX: &str = "univrs-node-";

/// The Lease of a node: `univrs-node-<name>` in [`LEASE_NAMESPACE`].
pub fn lease_name(node: &str) -> String {
    format!("{LEASE_PREFIX}{node}")
}

/// The node a Lease belongs to, if it is a node Lease.
pub fn node_of_lease(lease: &str) -> Option<&str> {
    lease.strip_prefix(LEASE_PREFIX)
}

/// The schema pattern of a libp2p Ed25519 PeerId.
pub const PEER_ID_PATTERN: &str = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$";
/// The schema pattern of an Ed25519 did:key.
pub const DID_KEY_PATTERN: &str = r"^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{44}$";

/// A machine contributing CPU, memory and GPUs to the community cloud.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "univrs.io",
    version = "v1alpha1",
    kind = "Node",
    status = "NodeStatus",
    derive = "PartialEq",
    shortname = "unode",
    category = "univrs",
    doc = "A Node is a machine that contributes resources; its agent keeps this object and renews a Lease.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the agent's Lease is fresh"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".status.nexusRole",
        description = "Leaf, Nexus or PoteauMitan"
    ),
    printcolumn(
        name = "Reputation",
        type_ = "number",
        json_path = ".status.reputation",
        description = "0 to 1"
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".spec.capacity.cpu",
        description = "CPU capacity"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".spec.capacity.memory",
        description = "Memory capacity"
    ),
    printcolumn(
        name = "Balance",
        type_ = "integer",
        json_path = ".status.creditBalance",
        description = "Milli-credits: owed to it minus owed by it"
    ),
    printcolumn(
        name = "Entropy",
        type_ = "number",
        json_path = ".status.entropy.total",
        priority = 1,
        description = "0 (orderly) to 10; dynamic prices rise with it"
    ),
    printcolumn(
        name = "Septal",
        type_ = "string",
        json_path = ".status.septal.state",
        priority = 1,
        description = "Circuit breaker state"
    ),
    printcolumn(
        name = "Cordoned",
        type_ = "boolean",
        json_path = ".spec.unschedulable",
        priority = 1,
        description = "True when cordoned (spec.unschedulable): nothing new is placed there"
    ),
    printcolumn(
        name = "PeerID",
        type_ = "string",
        json_path = ".spec.peerId",
        priority = 1,
        description = "libp2p PeerId"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// The node's libp2p PeerId (`12D3KooW…`), derived from its Ed25519 key.
    #[schemars(regex(pattern = r"^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("peerId is immutable: a new key is a new node"))]
    pub peer_id: String,

    /// The node's DID (`did:key:z6Mk…`), the same Ed25519 key as peerId.
    #[schemars(regex(pattern = r"^did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{44}$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("did is immutable: a new key is a new node"))]
    pub did: String,

    /// Addresses where peers reach the node's swarm, as multiaddrs (`/ip4/…/tcp/…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 2, max = 256), regex(pattern = r"^/"))
    )]
    pub multiaddrs: Vec<String>,

    /// What the node contributes.
    pub capacity: NodeCapacity,

    /// Cordon: when true no new instance is placed here (existing ones stay until drained).
    #[serde(default)]
    pub unschedulable: bool,

    /// How the node prices its resources; the fixed default rates when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<NodePricing>,

    /// The host ports the node's owner lets Workloads publish (`hostPort`), set by its agent;
    /// the scheduler places a Workload with host ports only where they are all in range.
    /// Absent: the node does not say (any port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ports: Option<HostPortRange>,
}

/// A range of host ports, both ends included.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[x_kube(validation = kube::core::Rule::new("self.min <= self.max").message("hostPorts.min must not be above hostPorts.max"))]
pub struct HostPortRange {
    /// The lowest port.
    #[schemars(range(min = 1, max = 65535))]
    pub min: i32,
    /// The highest port.
    #[schemars(range(min = 1, max = 65535))]
    pub max: i32,
}

impl HostPortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: i32) -> bool {
        (self.min..=self.max).contains(&port)
    }
}

/// Resources a node contributes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    /// CPU cores offered: `4`, `3500m`.
    pub cpu: Quantity,
    /// Memory offered: `8Gi`.
    pub memory: Quantity,
    /// Whole GPUs offered.
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    pub gpu: i32,
}

/// How a node prices an instance-hour, in milli-credits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodePricing {
    /// Fixed rates, rates scaled by utilization and entropy (default), or a sealed-bid auction.
    #[serde(default)]
    pub model: PricingModel,
    /// Milli-credits per CPU core-hour at multiplier 1.
    #[serde(default = "default_cpu_rate")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub cpu_core_hour: i64,
    /// Milli-credits per GiB-hour of memory at multiplier 1.
    #[serde(default = "default_memory_rate")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub memory_gib_hour: i64,
    /// Milli-credits per GPU-hour at multiplier 1.
    #[serde(default = "default_gpu_rate")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub gpu_hour: i64,
}

fn default_cpu_rate() -> i64 {
    1000
}

fn default_memory_rate() -> i64 {
    250
}

fn default_gpu_rate() -> i64 {
    10_000
}

/// A node's pricing model.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PricingModel {
    /// The rates as written.
    Fixed,
    /// The rates times a multiplier from 1 to 5 set by utilization and entropy.
    #[default]
    Dynamic,
    /// Capacity sold by sealed-bid second-price auction; the rates are the reserve price.
    Auction,
}

/// What the controller and the node's agent observe of a node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The metadata.generation this status was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the node serves Workloads' exposed ports, as on a core Node (agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["address".into()]))]
    pub addresses: Vec<NodeAddress>,
    /// Reputation from 0 to 1: service history and verified vouches (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub reputation: Option<f64>,
    /// The sum of the requests of the instances placed here (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<AllocatedResources>,
    /// Instances placed here (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    /// The service record behind `reputation`, so it survives controller restarts (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_record: Option<ServiceRecord>,
    /// Leaf, Nexus or PoteauMitan, from the latest nexus election (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexus_role: Option<NexusRole>,
    /// Milli-credits owed to this node minus milli-credits it owes, over all its lines (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_balance: Option<i64>,
    /// The septal gate: the node's circuit breaker (controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub septal: Option<SeptalStatus>,
    /// What the other Nodes' agents report about this node over the mesh (controller, from
    /// their `observations.peers`); invalid gossip they report counts against its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_view: Option<PeerView>,
    /// How disordered the node's situation is, from what the cluster measures of it
    /// (controller); dynamic prices are multiplied by its `priceMultiplier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyStatus>,
    /// What the agent observes over the mesh (agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observations: Option<NodeObservations>,
    /// Its sealed asks in open auctions (agent; see `univrs_api::bid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["auction".into()]))]
    pub bids: Vec<SealedBid>,
    /// Ready (controller), Reachable (agent) and Isolated (controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A node's ask in one auction, sealed to the auction's key.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SealedBid {
    /// The auction's id.
    #[schemars(length(min = 1, max = 64))]
    pub auction: String,
    /// The Workload, `namespace/name`.
    #[schemars(length(max = 317))]
    pub workload: String,
    /// The instance.
    #[schemars(length(max = 253))]
    pub instance: String,
    /// The signed ask, sealed (`v1.<base64url>`).
    #[schemars(length(max = 1024))]
    pub sealed: String,
}

/// A node's entropy (see `univrs_api::enr::entropy` for each formula), rounded to 0.01.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EntropyStatus {
    /// Sn: peers not connected to it, relayed connections, latency.
    #[schemars(range(min = 0.0, max = 10.0))]
    pub network: f64,
    /// Sc: how full it is, instances not running and ready, restarts.
    #[schemars(range(min = 0.0, max = 10.0))]
    pub compute: f64,
    /// Sl: how near its fullest credit line is to its limit.
    #[schemars(range(min = 0.0, max = 10.0))]
    pub ledger: f64,
    /// St: Lease lapses on record, clock skew against the API server.
    #[schemars(range(min = 0.0, max = 10.0))]
    pub temporal: f64,
    /// The weighted total, 0 to 10.
    #[schemars(range(min = 0.0, max = 10.0))]
    pub total: f64,
    /// What a Dynamic-priced node's rates are multiplied by for it, in thousandths (1000 to
    /// 5000: money and what multiplies it are never floats).
    #[schemars(range(min = 1000, max = 5000))]
    pub price_multiplier_milli: i64,
}

/// A node's service record: an average of outcomes that decays toward the prior.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRecord {
    /// The average of outcomes, 0 (always failed) to 1 (always served).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub base: f64,
    /// When it last took in an outcome.
    pub updated_at: Time,
}

/// Resources reserved on a node by the instances placed there.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedResources {
    /// CPU requested.
    pub cpu: Quantity,
    /// Memory requested.
    pub memory: Quantity,
    /// GPUs requested.
    #[serde(default)]
    pub gpu: i32,
}

/// A node's role in the nexus topology.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NexusRole {
    /// An ordinary node; gossips through its nexus.
    Leaf,
    /// A hub elected for uptime, bandwidth, reputation and connectivity.
    Nexus,
    /// The highest-scoring hub, connecting the other hubs.
    PoteauMitan,
}

/// The state of a node's septal gate (circuit breaker).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SeptalStatus {
    /// Connected (traffic flows), Isolated (cut off) or Recovering (probing, traffic ramping up).
    pub state: SeptalState,
    /// Consecutive failures counted toward tripping.
    #[serde(default)]
    pub failures: i32,
    /// Health score from 0 (healthy) to 1; the gate trips at 0.7.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub health_score: f64,
    /// Share of traffic let through, 0 (Isolated) to 1 (Connected); ramps up while Recovering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub traffic: Option<f64>,
    /// When the gate last changed state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// The state of a septal gate, named for what traffic does.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SeptalState {
    /// Traffic flows normally.
    #[default]
    Connected,
    /// The node is cut off: nothing is placed there and its transfers are refused.
    Isolated,
    /// Probing after isolation: traffic ramps up as probes succeed.
    Recovering,
}

/// What a node's agent observes over the mesh; input to the nexus election, and (its reports
/// on peers, gathered by the controller into their `peerView`) to their reputation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeObservations {
    /// Peers currently connected over the mesh.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub connected_peers: i32,
    /// Fraction of the last day the agent was up, 0 to 1.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub uptime: f64,
    /// Measured bandwidth in bits per second.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub bandwidth_bps: i64,
    /// Median round-trip time to peers in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub median_latency_ms: Option<f64>,
    /// Gossip messages dropped for a bad signature or an impossible claim.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub invalid_messages: i64,
    /// Each other Node this agent is connected to or has dropped invalid gossip from, by name
    /// (at most 256, the worst first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["node".into()]))]
    pub peers: Vec<PeerReport>,
    /// Whether other machines can dial this one (AutoNAT: peers were asked to dial it back):
    /// Public, Private (behind NAT or a firewall: it is reached through relays) or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<Reachability>,
    /// The Nodes that relay connections to this one while it is Private (where it holds a
    /// circuit relay reservation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub relays: Vec<String>,
}

/// One address of a node, as core Nodes list them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP` or `Hostname`.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = r"^(InternalIP|ExternalIP|Hostname)$"))]
    pub type_: String,
    /// The address.
    #[schemars(length(min = 1, max = 253))]
    pub address: String,
}

/// Whether a machine can be dialed by others.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reachability {
    /// Peers dialed it back at an address it was seen at.
    Public,
    /// Peers could not: it is behind NAT or a firewall.
    Private,
    /// Not known yet.
    Unknown,
}

/// How an agent is connected to a peer.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum PeerConnection {
    /// One dialed the other at an address it listens on.
    Direct,
    /// A direct connection punched through both sides' NAT (DCUtR) after meeting through a
    /// relay.
    HolePunched,
    /// Only through a circuit on a relay.
    Relayed,
}

/// What one agent sees of one other Node over the mesh.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// The other Node's name.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// Whether this agent is connected to it now.
    #[serde(default)]
    pub connected: bool,
    /// How, when connected (the best of its connections: Direct, HolePunched, Relayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<PeerConnection>,
    /// The latest ping round trip to it in milliseconds, when connected (whole below 10 ms,
    /// two significant digits above, so jitter does not rewrite the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub latency_ms: Option<f64>,
    /// Gossip messages from it that this agent dropped (bad signature, impossible claim)
    /// since this agent started.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub invalid_messages: i64,
}

/// What the other Nodes' agents report about a node (written by the controller).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// Ready Nodes whose agents report on this one.
    #[schemars(range(min = 0))]
    pub reporters: i32,
    /// How many of them are connected to it.
    #[schemars(range(min = 0))]
    pub connected_by: i32,
    /// Invalid gossip messages from it that they dropped, in all.
    #[schemars(range(min = 0))]
    pub invalid_messages: i64,
    /// How many of them dropped any.
    #[schemars(range(min = 0))]
    pub reporters_of_invalid: i32,
    /// How many of those connected reach it only through a relay.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub relayed_by: i32,
    /// How far those connected to it establish that it is in the mesh, 0 to 1: each counts by
    /// its standing as a vouch would (nothing below a service record of 0.6; a trust anchor
    /// fully). Its hours of service and its self-reported uptime and bandwidth count only this
    /// far, so identities that only each other see count for nothing.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub witnessed: f64,
}

impl NodeCapacity {
    /// CPU capacity in millicores.
    pub fn cpu_millis(&self) -> Result<u64, crate::quantity::QuantityError> {
        self.cpu.to_milli()
    }

    /// Memory capacity in bytes.
    pub fn memory_bytes(&self) -> Result<u64, crate::quantity::QuantityError> {
        self.memory.to_units()
    }
}

//! Placement: which node gets an instance. A pure function of a snapshot; no I/O.
//!
//! **Filter** (each failure counted by reason, as kube-scheduler does): the node is Ready, not
//! cordoned, not isolated by its septal gate; the request fits its capacity minus what is already
//! placed; none of the request's host ports is taken there (by another workload, or by an
//! instance of the same workload: like kube-scheduler's NodePorts filter, a hostPort makes
//! replicas one per node); its labels match the nodeSelector; its reputation is at least minReputation; its
//! price for an hour of the request (`quote::hourly`, at its utilization) is within the
//! workload's maxPricePerHour; the owner has credit headroom for an hour at that price.
//!
//! **Score** (higher is better), after a hard preference for the nodes that hold the fewest
//! instances of the same workload (replicas spread by default):
//! `0.35·free + 0.25·reputation + 0.15·credit + 0.10·nexus + 0.15·price`, where `free` is the
//! share of CPU and memory left after placing, `credit` favours nodes that have earned less
//! (a low balance), `nexus` favours hubs, and `price` favours cheaper nodes. Ties go to the node
//! name, so the same snapshot always gives the same answer.
//!
//! The node views are long-lived (the `index` keeps them current from the watches): a view's
//! `allocated` leaves out the workload being placed, whose instances are counted by `spread`,
//! so placing never has to copy or change a view.

use crate::core::quote;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use crate::core::resources::{HostPort, Resources};
use univrs_api::resources::node::NodePricing;

/// What the scheduler knows of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether its Lease is fresh.
    pub ready: bool,
    /// Whether it is cordoned.
    pub unschedulable: bool,
    /// Whether its septal gate isolates it.
    pub isolated: bool,
    /// The share of its capacity open to new placements: 1, or its septal gate's traffic
    /// while Recovering (the ramp: at 0.25 it is filled to a quarter at most).
    pub traffic: f64,
    /// Capacity.
    pub capacity: Resources,
    /// Requests of the instances placed there, except those of the workload being placed.
    pub allocated: Resources,
    /// Host ports taken there (sorted, unique), except by the workload being placed.
    pub host_ports: Vec<HostPort>,
    /// The host ports its owner allows (both ends included); `None`: any.
    pub host_port_range: Option<(u16, u16)>,
    /// The namespaces whose Workloads its earnings pay for (`univrs.io/pays-for`).
    pub pays_for: Vec<String>,
    /// Reputation, 0 to 1.
    pub reputation: f64,
    /// Whether it is a nexus hub.
    pub nexus: bool,
    /// Its credit balance, milli-credits.
    pub credit_balance: i64,
    /// Its rates (priced through `quote`).
    pub pricing: NodePricing,
    /// Its entropy's price multiplier (`status.entropy.priceMultiplier`, 1 without one).
    pub price_multiplier: f64,
    /// Its last price, reused while neither the request's shape nor its allocation changes.
    pub price_memo: PriceMemo,
}

/// A node's last price: for which request and allocation, and what it was. A burst of
/// decisions for requests of one shape (the usual burst) prices each node once instead of once
/// per decision; a view whose rates change is a new view with an empty memo. It never changes
/// a result, so it takes no part in comparing views.
#[derive(Clone, Debug, Default)]
pub struct PriceMemo(Cell<Option<(Resources, Resources, i64)>>);

impl PriceMemo {
    /// The price for `request` at `allocated`, computed by `price` unless memoized.
    fn get(&self, request: Resources, allocated: Resources, price: impl FnOnce() -> i64) -> i64 {
        match self.0.get() {
            Some((r, a, p)) if r == request && a == allocated => p,
            _ => {
                let p = price();
                self.0.set(Some((request, allocated, p)));
                p
            }
        }
    }
}

impl PartialEq for PriceMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What an instance asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    /// Resources per instance.
    pub resources: Resources,
    /// Host ports each instance publishes (sorted, unique).
    pub host_ports: Vec<HostPort>,
    /// Required node labels.
    pub node_selector: BTreeMap<String, String>,
    /// Minimum node reputation.
    pub min_reputation: f64,
    /// Highest acceptable price per hour, if any.
    pub max_price_per_hour: Option<i64>,
    /// How much the owner can still pay each node (credit-line headroom), by the nodes'
    /// positions in the slice being placed on, or None when the owner's namespace is not
    /// metered. Positional, like `spread`, so no node is looked up by name while placing.
    pub owner_headroom: Option<Vec<i64>>,
}

/// Why a node was filtered out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Lease lapsed.
    NotReady,
    /// Cordoned.
    Unschedulable,
    /// Isolated by its septal gate.
    Isolated,
    /// Recovering from isolation, and the share of its capacity its gate opens is taken.
    Recovering,
    /// Not enough CPU left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
    /// Not enough GPUs left.
    InsufficientGpu,
    /// A requested host port is outside the range the node's owner allows.
    HostPortNotAllowed,
    /// A requested host port is taken.
    HostPortInUse,
    /// Labels do not match the nodeSelector.
    NodeSelectorMismatch,
    /// Reputation below minReputation.
    ReputationTooLow,
    /// Price above maxPricePerHour.
    TooExpensive,
    /// The owner cannot pay an hour at this node's price.
    InsufficientCredit,
}

impl Reason {
    /// Every reason, in order (the order the filters run).
    pub const ALL: [Reason; 13] = [
        Self::NotReady,
        Self::Unschedulable,
        Self::Isolated,
        Self::Recovering,
        Self::InsufficientCpu,
        Self::InsufficientMemory,
        Self::InsufficientGpu,
        Self::HostPortNotAllowed,
        Self::HostPortInUse,
        Self::NodeSelectorMismatch,
        Self::ReputationTooLow,
        Self::TooExpensive,
        Self::InsufficientCredit,
    ];

    /// How the reason reads in a message, given the request.
    fn describe(self, req: &Request) -> String {
        match self {
            Self::NotReady => "not ready".into(),
            Self::Unschedulable => "unschedulable (cordoned)".into(),
            Self::Isolated => "isolated by the septal gate".into(),
            Self::Recovering => {
                "recovering from isolation (the share of capacity it opens is taken)".into()
            }
            Self::InsufficientCpu => "insufficient cpu".into(),
            Self::InsufficientMemory => "insufficient memory".into(),
            Self::InsufficientGpu => "insufficient gpu".into(),
            Self::HostPortNotAllowed => format!(
                "didn't allow host ports ({}) (outside the node's spec.hostPorts)",
                ports(req)
            ),
            Self::HostPortInUse => format!("didn't have free host ports ({})", ports(req)),
            Self::NodeSelectorMismatch => "didn't match the nodeSelector".into(),
            Self::ReputationTooLow => format!("reputation below {:.2}", req.min_reputation),
            Self::TooExpensive => format!(
                "price above {} milli-credits/h",
                req.max_price_per_hour.unwrap_or(0)
            ),
            Self::InsufficientCredit => "owner lacks credit for an hour at its price".into(),
        }
    }
}

fn ports(req: &Request) -> String {
    req.host_ports
        .iter()
        .map(HostPort::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// No node fits: how many nodes there were and why each was refused (its first failing filter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    /// Nodes considered.
    pub nodes: usize,
    /// Count of nodes per reason.
    pub reasons: BTreeMap<Reason, usize>,
    /// The message, in kube-scheduler's style.
    pub message: String,
}

impl Unschedulable {
    /// Whether every node was refused for `reason` alone (and there were nodes): nothing but
    /// a change of the Workload or of those nodes can place it.
    pub fn only(&self, reason: Reason) -> bool {
        self.nodes > 0 && self.reasons.len() == 1 && self.reasons.contains_key(&reason)
    }
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The first filter node `i` of `nodes` fails, if any, as it stands (no instance of the
/// request's workload on it).
pub fn filter(nodes: &[NodeView], i: usize, req: &Request) -> Option<Reason> {
    check(&nodes[i], i, 0, nodes[i].allocated, req).err()
}

/// Filters node `i`, which holds `own` instances of the request's workload and whose
/// `allocated` counts everything placed there; Ok carries its price for an hour of the request.
fn check(
    node: &NodeView,
    i: usize,
    own: u32,
    allocated: Resources,
    req: &Request,
) -> Result<i64, Reason> {
    if !node.ready {
        return Err(Reason::NotReady);
    }
    if node.unschedulable {
        return Err(Reason::Unschedulable);
    }
    if node.isolated {
        return Err(Reason::Isolated);
    }
    if node.traffic < 1.0 {
        let open = |c: u64| (c as f64 * node.traffic.clamp(0.0, 1.0)) as u64;
        if allocated
            .cpu_millis
            .saturating_add(req.resources.cpu_millis)
            > open(node.capacity.cpu_millis)
            || allocated
                .memory_bytes
                .saturating_add(req.resources.memory_bytes)
                > open(node.capacity.memory_bytes)
        {
            return Err(Reason::Recovering);
        }
    }
    let free = node.capacity.minus(allocated);
    if req.resources.cpu_millis > free.cpu_millis {
        return Err(Reason::InsufficientCpu);
    }
    if req.resources.memory_bytes > free.memory_bytes {
        return Err(Reason::InsufficientMemory);
    }
    if req.resources.gpus > free.gpus {
        return Err(Reason::InsufficientGpu);
    }
    if let Some((lo, hi)) = node.host_port_range
        && req.host_ports.iter().any(|p| p.port < lo || p.port > hi)
    {
        return Err(Reason::HostPortNotAllowed);
    }
    if !req.host_ports.is_empty()
        && (own > 0
            || req
                .host_ports
                .iter()
                .any(|p| node.host_ports.binary_search(p).is_ok()))
    {
        return Err(Reason::HostPortInUse);
    }
    if !req
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Err(Reason::NodeSelectorMismatch);
    }
    if node.reputation < req.min_reputation {
        return Err(Reason::ReputationTooLow);
    }
    // Rates too large to price an hour make the node as dear as can be.
    let price = node.price_memo.get(req.resources, allocated, || {
        quote::hourly(
            &node.pricing,
            node.capacity,
            allocated,
            req.resources,
            node.price_multiplier,
        )
        .unwrap_or(i64::MAX)
    });
    if req.max_price_per_hour.is_some_and(|max| price > max) {
        return Err(Reason::TooExpensive);
    }
    if let Some(headroom) = &req.owner_headroom
        && price > headroom.get(i).copied().unwrap_or(0)
    {
        return Err(Reason::InsufficientCredit);
    }
    Ok(price)
}

fn share_free(capacity: u64, allocated: u64, request: u64) -> f64 {
    if capacity == 0 {
        return 0.0;
    }
    capacity.saturating_sub(allocated.saturating_add(request)) as f64 / capacity as f64
}

/// The score of a node that passed the filters, in `[0, 1]`, given what is allocated there,
/// its price for the request and the highest price among the nodes that passed.
fn score(node: &NodeView, allocated: Resources, price: i64, req: &Request, max_price: i64) -> f64 {
    let free =
        0.5 * share_free(
            node.capacity.cpu_millis,
            allocated.cpu_millis,
            req.resources.cpu_millis,
        ) + 0.5
            * share_free(
                node.capacity.memory_bytes,
                allocated.memory_bytes,
                req.resources.memory_bytes,
            );
    let rep = node.reputation.clamp(0.0, 1.0);
    // 0 balance scores 0.5; owed a lot scores toward 0, owing toward 1.
    let credit = 0.5 - (node.credit_balance as f64 / 2_000_000.0).clamp(-0.5, 0.5);
    let nexus = if node.nexus { 1.0 } else { 0.0 };
    let price = if max_price > 0 {
        1.0 - price.max(0) as f64 / max_price as f64
    } else {
        1.0
    };
    0.35 * free + 0.25 * rep + 0.15 * credit + 0.10 * nexus + 0.15 * price
}

/// What `spread` instances of `per` add to a node's allocation.
fn times(per: Resources, n: u32) -> Resources {
    Resources {
        cpu_millis: per.cpu_millis.saturating_mul(u64::from(n)),
        memory_bytes: per.memory_bytes.saturating_mul(u64::from(n)),
        gpus: per.gpus.saturating_mul(n),
    }
}

/// A node that passed the filters for one instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Standing {
    /// Its position in the views.
    pub index: usize,
    /// How many instances of the workload it holds.
    pub own: u32,
    /// Its price for an hour of the request.
    pub price: i64,
    /// Its score, in `[0, 1]`.
    pub score: f64,
}

/// Every node that passes the filters for one instance, scored, or why none does. `spread[i]`
/// is how many instances of the same workload node `i` already holds (each taking
/// `req.resources` on top of the node's `allocated`, which leaves them out).
pub fn standings(
    nodes: &[NodeView],
    spread: &[u32],
    req: &Request,
) -> Result<Vec<Standing>, Unschedulable> {
    // Counted in an array, not a map: most of thousands of nodes fail some filter.
    let mut refused = [0usize; Reason::ALL.len()];
    // (node, instances of this workload there, what is allocated there, its price)
    let mut feasible: Vec<(usize, u32, Resources, i64)> = Vec::new();
    let mut max_price = 0i64;
    for (i, n) in nodes.iter().enumerate() {
        let own = spread.get(i).copied().unwrap_or(0);
        let allocated = if own == 0 {
            n.allocated
        } else {
            n.allocated.plus(times(req.resources, own))
        };
        match check(n, i, own, allocated, req) {
            Err(r) => refused[r as usize] += 1,
            Ok(price) => {
                max_price = max_price.max(price);
                feasible.push((i, own, allocated, price));
            }
        }
    }
    if feasible.is_empty() {
        let reasons = Reason::ALL
            .iter()
            .zip(refused)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
            .collect();
        return Err(unschedulable(nodes.len(), reasons, req));
    }
    Ok(feasible
        .into_iter()
        .map(|(index, own, allocated, price)| Standing {
            index,
            own,
            price,
            score: score(&nodes[index], allocated, price, req, max_price),
        })
        .collect())
}

/// The best of `standings` (not empty): the fewest instances of the workload, then the best
/// score, then the name, so the same snapshot always gives the same answer.
pub fn best(nodes: &[NodeView], standings: &[Standing]) -> Standing {
    let mut best = standings[0];
    for s in &standings[1..] {
        let better = s
            .own
            .cmp(&best.own)
            .reverse()
            .then_with(|| s.score.total_cmp(&best.score))
            .then_with(|| nodes[best.index].name.cmp(&nodes[s.index].name))
            .is_gt();
        if better {
            best = *s;
        }
    }
    best
}

/// Picks a node for one instance (see [`standings`] and [`best`]).
pub fn place(nodes: &[NodeView], spread: &[u32], req: &Request) -> Result<usize, Unschedulable> {
    standings(nodes, spread, req).map(|s| best(nodes, &s).index)
}

/// Why nothing fits, in kube-scheduler's words.
fn unschedulable(nodes: usize, reasons: BTreeMap<Reason, usize>, req: &Request) -> Unschedulable {
    let parts: Vec<String> = reasons
        .iter()
        .map(|(r, n)| format!("{n} {}", r.describe(req)))
        .collect();
    let message = if nodes == 0 {
        "0/0 nodes are available: no nodes.univrs.io exist".to_string()
    } else {
        format!("0/{nodes} nodes are available: {}", parts.join(", "))
    };
    Unschedulable {
        nodes,
        reasons,
        message,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GI: u64 = 1 << 30;

    /// A Ready node of `cpu` millicores and `mem` bytes at fixed rates of 1000 per core-hour.
    pub(crate) fn node(name: &str, cpu: u64, mem: u64) -> NodeView {
        NodeView {
            name: name.into(),
            labels: BTreeMap::new(),
            ready: true,
            unschedulable: false,
            isolated: false,
            traffic: 1.0,
            capacity: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
                gpus: 0,
            },
            allocated: Resources::default(),
            host_ports: Vec::new(),
            host_port_range: None,
            pays_for: Vec::new(),
            reputation: 0.5,
            nexus: false,
            credit_balance: 0,
            pricing: NodePricing {
                model: univrs_api::resources::node::PricingModel::Fixed,
                cpu_core_hour: 1000,
                memory_gib_hour: 250,
                gpu_hour: 0,
            },
            price_multiplier: 1.0,
            price_memo: PriceMemo::default(),
        }
    }

    /// A request of `cpu` millicores and `mem` bytes.
    pub(crate) fn req(cpu: u64, mem: u64) -> Request {
        Request {
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
                gpus: 0,
            },
            ..Default::default()
        }
    }

    #[test]
    fn spreads_replicas_across_nodes() {
        let nodes = vec![
            node("a", 4000, 8 * GI),
            node("b", 4000, 8 * GI),
            node("c", 4000, 8 * GI),
        ];
        let mut spread = vec![0u32; 3];
        let mut placed = Vec::new();
        for _ in 0..3 {
            let i = place(&nodes, &spread, &req(100, GI)).unwrap();
            spread[i] += 1;
            placed.push(nodes[i].name.clone());
        }
        placed.sort();
        assert_eq!(placed, vec!["a", "b", "c"]);
    }

    #[test]
    fn explains_why_nothing_fits_per_reason_and_count() {
        let mut nodes = vec![
            node("a", 4000, GI),
            node("b", 4000, GI),
            node("c", 4000, GI),
            node("d", 4000, 8 * GI),
            node("e", 4000, 8 * GI),
        ];
        nodes[3].reputation = 0.3;
        nodes[4].reputation = 0.4;
        let r = Request {
            min_reputation: 0.6,
            ..req(100, 2 * GI)
        };
        let err = place(&nodes, &[], &r).unwrap_err();
        assert_eq!(
            err.message,
            "0/5 nodes are available: 3 insufficient memory, 2 reputation below 0.60"
        );
    }

    #[test]
    fn filters_cordon_isolation_readiness_selector_price_and_credit() {
        let mut n = node("a", 4000, 8 * GI);
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &req(5000, 0)),
            Some(Reason::InsufficientCpu)
        );
        n.allocated = Resources {
            cpu_millis: 3950,
            memory_bytes: 0,
            gpus: 0,
        };
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &req(100, 0)),
            Some(Reason::InsufficientCpu)
        );
        n.allocated = Resources::default();
        n.unschedulable = true;
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &req(1, 1)),
            Some(Reason::Unschedulable)
        );
        n.unschedulable = false;
        n.isolated = true;
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &req(1, 1)),
            Some(Reason::Isolated)
        );
        n.isolated = false;
        // Recovering at a quarter of its traffic: filled to a quarter of its capacity at most
        // (the node has 4000m; 600m placed).
        n.traffic = 0.25;
        n.allocated.cpu_millis = 600;
        assert_eq!(filter(std::slice::from_ref(&n), 0, &req(400, 1)), None);
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &req(401, 1)),
            Some(Reason::Recovering)
        );
        n.traffic = 1.0;
        n.allocated = Resources::default();
        n.ready = false;
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &req(1, 1)),
            Some(Reason::NotReady)
        );
        n.ready = true;
        let mut r = req(1, 1);
        r.node_selector.insert("gpu".into(), "true".into());
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &r),
            Some(Reason::NodeSelectorMismatch)
        );
        n.labels.insert("gpu".into(), "true".into());
        assert_eq!(filter(std::slice::from_ref(&n), 0, &r), None);
        let price = quote::hourly(
            &n.pricing,
            n.capacity,
            n.allocated,
            r.resources,
            n.price_multiplier,
        )
        .unwrap();
        r.max_price_per_hour = Some(price - 1);
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &r),
            Some(Reason::TooExpensive)
        );
        r.max_price_per_hour = Some(price);
        assert_eq!(filter(std::slice::from_ref(&n), 0, &r), None);
        r.owner_headroom = Some(vec![price - 1]);
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &r),
            Some(Reason::InsufficientCredit)
        );
        r.owner_headroom = Some(vec![]);
        assert_eq!(
            filter(std::slice::from_ref(&n), 0, &r),
            Some(Reason::InsufficientCredit),
            "no line to this node"
        );
        r.owner_headroom = Some(vec![price]);
        assert_eq!(filter(std::slice::from_ref(&n), 0, &r), None);
    }

    #[test]
    fn the_workloads_own_instances_count_through_spread() {
        // 250m left for instances of 100m: two fit, a third does not.
        let nodes = vec![node("a", 250, 8 * GI)];
        let r = req(100, 0);
        assert_eq!(place(&nodes, &[1], &r), Ok(0));
        let err = place(&nodes, &[2], &r).unwrap_err();
        assert_eq!(err.message, "0/1 nodes are available: 1 insufficient cpu");
    }

    #[test]
    fn host_ports_are_one_per_node() {
        let port = |port, udp| HostPort { port, udp };
        let mut nodes = vec![
            node("a", 4000, 8 * GI),
            node("b", 4000, 8 * GI),
            node("c", 4000, 8 * GI),
        ];
        // Another workload holds 8080/TCP on a; 8080/UDP on b is another port.
        nodes[0].host_ports = vec![port(8080, false)];
        nodes[1].host_ports = vec![port(53, true), port(8080, true)];
        let r = Request {
            host_ports: vec![port(8080, false)],
            ..req(100, GI)
        };
        assert_eq!(filter(&nodes, 0, &r), Some(Reason::HostPortInUse));
        assert_eq!(filter(&nodes, 1, &r), None);
        // The workload's own replica on b holds the port too: only c is left, then nothing,
        // however much room there is.
        assert_eq!(place(&nodes, &[0, 1, 0], &r), Ok(2));
        let err = place(&nodes, &[0, 1, 1], &r).unwrap_err();
        assert_eq!(
            err.message,
            "0/3 nodes are available: 3 didn't have free host ports (8080/TCP)"
        );
        // Without host ports, replicas share nodes as room allows.
        assert_eq!(place(&nodes, &[0, 1, 1], &req(100, GI)), Ok(0));
    }

    #[test]
    fn host_ports_outside_every_owners_range_are_explained() {
        let port = |port| HostPort { port, udp: false };
        let mut nodes = vec![node("a", 4000, 8 * GI), node("b", 4000, 8 * GI)];
        nodes[0].host_port_range = Some((30000, 32767));
        nodes[1].host_port_range = Some((30000, 30010));
        let ssh = Request {
            host_ports: vec![port(22)],
            ..req(100, GI)
        };
        let err = place(&nodes, &[0, 0], &ssh).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 2 didn't allow host ports (22/TCP) (outside the node's spec.hostPorts)"
        );
        assert!(err.only(Reason::HostPortNotAllowed));
        // 30080 is in a's range only; both ends are included.
        let web = Request {
            host_ports: vec![port(30080)],
            ..req(100, GI)
        };
        assert_eq!(place(&nodes, &[0, 0], &web), Ok(0));
        assert_eq!(filter(&nodes, 1, &web), Some(Reason::HostPortNotAllowed));
        let edge = Request {
            host_ports: vec![port(30010)],
            ..req(100, GI)
        };
        assert_eq!(filter(&nodes, 1, &edge), None);
    }

    #[test]
    fn dynamic_prices_follow_utilization_and_steer_placement() {
        let dynamic = NodePricing {
            model: univrs_api::resources::node::PricingModel::Dynamic,
            ..node("x", 1, 1).pricing
        };
        let mut nodes = vec![node("a", 4000, 8 * GI), node("b", 4000, 8 * GI)];
        for n in &mut nodes {
            n.pricing = dynamic.clone();
        }
        // a is half full: once placed it is 75% used (×1.563) against b's 25% (×1.063).
        nodes[0].allocated = Resources {
            cpu_millis: 2000,
            memory_bytes: 0,
            gpus: 0,
        };
        let r = Request {
            max_price_per_hour: Some(1100),
            ..req(1000, 0)
        };
        assert_eq!(filter(&nodes, 0, &r), Some(Reason::TooExpensive));
        assert_eq!(filter(&nodes, 1, &r), None);
        assert_eq!(nodes[place(&nodes, &[], &r).unwrap()].name, "b");
    }

    #[test]
    fn is_deterministic_and_prefers_free_reputable_nodes() {
        let mut nodes = vec![node("b", 4000, 8 * GI), node("a", 4000, 8 * GI)];
        assert_eq!(
            nodes[place(&nodes, &[], &req(100, GI)).unwrap()].name,
            "a",
            "ties go to the name"
        );
        nodes[0].reputation = 0.9;
        assert_eq!(nodes[place(&nodes, &[], &req(100, GI)).unwrap()].name, "b");
        nodes[0].allocated = Resources {
            cpu_millis: 3500,
            memory_bytes: 7 * GI,
            gpus: 0,
        };
        assert_eq!(
            nodes[place(&nodes, &[], &req(100, GI / 2)).unwrap()].name,
            "a"
        );
    }
}

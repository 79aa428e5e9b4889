//! The Workload plan: where every instance goes, moving instances off lost or drained nodes,
//! and the controller's part of the status (Scheduled, Available, Progressing,
//! CreditExhausted, PricingFailed).
//!
//! Instances are named `<workload>-<ordinal>` for ordinals `0..replicas`; scaling down removes
//! the highest ordinals, so scale and spec changes never duplicate or lose an instance. The
//! controller owns each instance's `node`, `placedAt` and `billed`, and `creditSpent`; the
//! node's agent owns the rest (phase, readiness, restarts, usage). A workload whose owner's
//! credit is exhausted does not grow.

use crate::core::auction::{self, Step};
use crate::core::notice::Notice;
use crate::core::resources::{HostPort, Resources};
use crate::core::scheduler::{self, NodeView, Request};
use crate::core::snapshot::{self, Liveness};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::resources::node::{DRAIN_ANNOTATION, SeptalState};
use univrs_api::resources::workload::{
    Auction, CONDITION_AVAILABLE, CONDITION_CREDIT_EXHAUSTED, CONDITION_EXPOSED,
    CONDITION_PRICING_FAILED, CONDITION_PROGRESSING, CONDITION_SCHEDULED, Instance, InstanceUsage,
    SealedCredentials, WORKLOAD_LABEL, instance_name,
};
use univrs_api::{Node, Workload};

/// How soon a workload that did not fit is tried again without any event.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);

/// What placement decided for one reconcile.
#[derive(Debug, Default)]
pub struct Plan {
    /// Every desired instance that has a node, in ordinal order.
    pub instances: Vec<Instance>,
    /// (instance, node) newly placed.
    pub placed: Vec<(String, String)>,
    /// (instance, node, why) leaving their node.
    pub moved: Vec<(String, String, String)>,
    /// Why some instance has no node, if one has not.
    pub unschedulable: Option<String>,
    /// Whether nothing but a change of the Workload or of the nodes can place it (every node
    /// refused a host port outside its owner's range): no timed retry then.
    pub unschedulable_until_changed: bool,
    /// When a kept instance's node passes its grace period, if one is lapsing.
    pub requeue: Option<Duration>,
    /// The auction this reconcile leaves open, if one (see `core::auction`).
    pub auction: Option<AuctionPlan>,
    /// (instance, node, clearing price, valid asks) awarded by an auction.
    pub awarded: Vec<(String, String, i64, usize)>,
    /// Instances whose auction closed without a valid ask (placed as usual).
    pub no_bid: Vec<String>,
}

/// An auction a plan leaves open.
#[derive(Debug, Clone, PartialEq)]
pub enum AuctionPlan {
    /// Open one for this instance among these nodes.
    Open {
        /// The instance.
        instance: String,
        /// The nodes asked to bid.
        nodes: Vec<String>,
    },
    /// The one in the Workload's status still takes bids.
    Wait,
}

/// The cluster's rules for node health: how long a Lease stays fresh after a renewal, and how
/// long a node may then be NotReady before its instances move.
#[derive(Clone, Copy, Debug)]
pub struct NodeHealth {
    /// `--node-lease-duration`.
    pub lease_duration: Duration,
    /// `--node-grace-period`.
    pub grace: Duration,
}

/// Why an instance must leave its node, if it must.
pub fn must_move(
    node: Option<&Node>,
    lease: Option<&Lease>,
    now: Timestamp,
    health: NodeHealth,
) -> Option<String> {
    let grace = health.grace;
    let Some(node) = node.filter(|n| n.metadata.deletion_timestamp.is_none()) else {
        return Some("its node is gone or being deleted".into());
    };
    if node
        .annotations()
        .get(DRAIN_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        return Some("its node is being drained".into());
    }
    if node
        .status
        .as_ref()
        .and_then(|s| s.septal.as_ref())
        .is_some_and(|s| s.state == SeptalState::Isolated)
    {
        return Some("its node is isolated by the septal gate".into());
    }
    match snapshot::liveness(lease, now, health.lease_duration) {
        Liveness::Fresh { .. } => None,
        Liveness::Missing => Some("its node has no Lease".into()),
        Liveness::Lapsed { since } => {
            let down = now.duration_since(since).unsigned_abs();
            (down >= grace).then(|| format!("its node's Lease lapsed {}s ago", down.as_secs()))
        }
    }
}

/// A placement in the making: first the instances that may stay ([`Placement::new`]), then a
/// node for each of the others ([`Placement::decide`], run under the node index), then the
/// [`Plan`].
pub struct Placement {
    plan: Plan,
    request: Request,
    headroom: Option<BTreeMap<String, i64>>,
    /// The desired instance names, in ordinal order (taken by `decide`).
    desired: Vec<String>,
    replicas: usize,
    /// How many instances need a node.
    to_place: usize,
    /// Placed instances that may stay where they are.
    keep: BTreeMap<String, Instance>,
    /// How many new instances may be placed.
    new_allowed: usize,
    now: Timestamp,
    /// Where the Workload's auction stands.
    auction: auction::State,
}

impl Placement {
    /// Starts planning `wl` at `now`: keeps each placed instance whose node (looked up with
    /// `node_of`: the Node and its Lease) may keep it, and marks the others to move.
    /// `headroom` is the owner's credit towards each node (None when unmetered); a `frozen`
    /// workload (credit exhausted) only replaces instances that must move.
    pub fn new<N, L>(
        wl: &Workload,
        headroom: Option<BTreeMap<String, i64>>,
        frozen: bool,
        now: Timestamp,
        health: NodeHealth,
        node_of: impl Fn(&str) -> (Option<N>, Option<L>),
    ) -> Self
    where
        N: std::ops::Deref<Target = Node>,
        L: std::ops::Deref<Target = Lease>,
    {
        let name = wl.name_any();
        let request = Request {
            resources: snapshot::instance_request(&wl.spec),
            host_ports: snapshot::host_ports(&wl.spec),
            node_selector: wl.spec.node_selector.clone(),
            min_reputation: wl.spec.min_reputation.unwrap_or(0.0),
            max_price_per_hour: wl.spec.credit.as_ref().and_then(|c| c.max_price_per_hour),
            owner_headroom: None,
        };
        let current: BTreeMap<String, Instance> = wl
            .status
            .as_ref()
            .map(|s| {
                s.instances
                    .iter()
                    .map(|i| (i.name.clone(), i.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut plan = Plan::default();
        // Keep what may stay, so spreading accounts for it.
        let desired: Vec<String> = (0..wl.spec.replicas.max(0))
            .map(|i| instance_name(&name, i.unsigned_abs()))
            .collect();
        let mut keep: BTreeMap<String, Instance> = BTreeMap::new();
        for inst_name in &desired {
            let Some(inst) = current.get(inst_name).filter(|i| i.node.is_some()) else {
                continue;
            };
            let node = inst.node.clone().unwrap_or_default();
            let (n, lease) = node_of(&node);
            let lease = lease.as_deref();
            match must_move(n.as_deref(), lease, now, health) {
                Some(why) => plan.moved.push((inst_name.clone(), node, why)),
                None => {
                    if let Liveness::Lapsed { since } =
                        snapshot::liveness(lease, now, health.lease_duration)
                    {
                        // Not yet past the grace period: look again when it is.
                        let left = health
                            .grace
                            .saturating_sub(now.duration_since(since).unsigned_abs())
                            + Duration::from_secs(1);
                        plan.requeue = Some(plan.requeue.map_or(left, |r| r.min(left)));
                    }
                    keep.insert(inst_name.clone(), inst.clone());
                }
            }
        }
        // A frozen workload does not grow: it may only replace what had to move.
        let new_allowed = if frozen { plan.moved.len() } else { usize::MAX };
        Self {
            plan,
            request,
            headroom,
            replicas: desired.len(),
            to_place: desired.len() - keep.len(),
            desired,
            keep,
            new_allowed,
            now,
            auction: auction::State::None,
        }
    }

    /// Places with the Workload's auction at `state` (see `core::auction`).
    pub fn with_auction(mut self, state: auction::State) -> Self {
        self.auction = state;
        self
    }

    /// What one instance reserves.
    pub fn per_instance(&self) -> Resources {
        self.request.resources
    }

    /// The host ports each instance publishes.
    pub fn host_ports(&self) -> Vec<HostPort> {
        self.request.host_ports.clone()
    }

    /// Desired instances.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// How many instances need a node.
    pub fn to_place(&self) -> usize {
        self.to_place
    }

    /// Places every instance not kept, on `views` (with their positions by name, each
    /// `allocated` leaving this workload out, as the node index hands them), and returns the
    /// node of every instance the workload keeps or gets.
    pub fn decide(&mut self, views: &[NodeView], position: &HashMap<String, usize>) -> Vec<String> {
        let mut spread = Vec::new();
        if self.to_place > 0 {
            spread = vec![0u32; views.len()];
            for inst in self.keep.values() {
                if let Some(&i) = inst.node.as_ref().and_then(|n| position.get(n)) {
                    spread[i] += 1;
                }
            }
            // A node the owner has no line to gets 0.
            self.request.owner_headroom = self.headroom.take().map(|h| {
                let mut by_position = vec![0; views.len()];
                for (node, room) in h {
                    if let Some(&i) = position.get(&node) {
                        by_position[i] = room;
                    }
                }
                by_position
            });
        }
        let out = &mut self.plan;
        for inst_name in std::mem::take(&mut self.desired) {
            if let Some(inst) = self.keep.remove(&inst_name) {
                out.instances.push(inst);
                continue;
            }
            // One instance at auction at a time: the ones after it wait for it.
            if out.auction.is_some() {
                continue;
            }
            if self.new_allowed == 0 {
                out.unschedulable.get_or_insert_with(|| {
                    "credit exhausted: no new instances until the owner has credit".into()
                });
                continue;
            }
            let step = scheduler::standings(views, &spread, &self.request).map(|st| {
                let best = scheduler::best(views, &st);
                let max = self.request.max_price_per_hour;
                auction::step(&self.auction, &inst_name, views, &st, best, max)
            });
            match step {
                Ok(Step::Place {
                    index: i,
                    awarded,
                    no_bid,
                }) => {
                    self.new_allowed -= 1;
                    spread[i] += 1;
                    let node = views[i].name.clone();
                    out.placed.push((inst_name.clone(), node.clone()));
                    if let Some((price, asks)) = awarded {
                        out.awarded
                            .push((inst_name.clone(), node.clone(), price, asks));
                    }
                    if no_bid {
                        out.no_bid.push(inst_name.clone());
                    }
                    out.instances.push(Instance {
                        name: inst_name,
                        node: Some(node),
                        placed_at: Some(Time(self.now)),
                        awarded_price_per_hour: awarded.map(|(price, _)| price),
                        ..Default::default()
                    });
                }
                Ok(Step::Open(nodes)) => {
                    out.auction = Some(AuctionPlan::Open {
                        instance: inst_name,
                        nodes,
                    });
                }
                Ok(Step::Wait) => out.auction = Some(AuctionPlan::Wait),
                Err(e) => {
                    if out.unschedulable.is_none() {
                        out.unschedulable_until_changed =
                            e.only(scheduler::Reason::HostPortNotAllowed);
                    }
                    out.unschedulable.get_or_insert(e.message);
                }
            }
        }
        out.instances
            .iter()
            .filter_map(|i| i.node.clone())
            .collect()
    }

    /// The plan decided.
    pub fn finish(self) -> Plan {
        self.plan
    }
}

/// What billing did in one reconcile.
#[derive(Debug, Default)]
pub struct Billing {
    /// Whether the owner's namespace has credit lines at all.
    pub metered: bool,
    /// The new billed mark per instance.
    pub marks: BTreeMap<String, InstanceUsage>,
    /// Milli-credits spent so far, after this round.
    pub spent: i64,
    /// (instance, node, amount) paid in this round.
    pub paid: Vec<(String, String, i64)>,
    /// Why the workload may not grow: (reason, message).
    pub exhausted: Option<(&'static str, String)>,
    /// Usage that could not be priced (it stays unbilled, its mark where it was).
    pub unpriced: Vec<String>,
    /// Reports beyond what an instance can use, clamped (the excess is never billed).
    pub clamped: Vec<String>,
}

/// The instance fields the controller owns, as it applies them.
fn owned_fields(i: &Instance) -> serde_json::Value {
    let mut v = serde_json::json!({"name": i.name, "node": i.node, "placedAt": i.placed_at});
    if let Some(b) = &i.billed {
        v["billed"] = serde_json::to_value(b).unwrap_or_default();
    }
    if let Some(p) = i.awarded_price_per_hour {
        v["awardedPricePerHour"] = p.into();
    }
    v
}

/// The controller's part of the status, as applied with server-side apply.
pub fn status_patch(
    wl: &Workload,
    plan: &Plan,
    bills: &Billing,
    pull_credentials: &[SealedCredentials],
    exposed: Option<DesiredCondition>,
    auction: Option<&Auction>,
    now: Timestamp,
) -> serde_json::Value {
    let desired = wl.spec.replicas.max(0);
    let current = wl.status.clone().unwrap_or_default();
    let agent_view: BTreeMap<&str, &Instance> = current
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    let ready = plan
        .instances
        .iter()
        .filter(|i| {
            agent_view
                .get(i.name.as_str())
                // The agent's report must be about this placement: after a move, the old
                // node's agent may not have withdrawn its fields yet.
                .is_some_and(|a| {
                    a.ready == Some(true)
                        && a.usage
                            .as_ref()
                            .is_some_and(|u| u.is_for(i.node.as_ref(), i.placed_at.as_ref()))
                })
        })
        .count() as i32;
    let placed = plan.instances.len() as i32;
    let generation = wl.metadata.generation;
    let mut conditions = current.conditions.clone();
    let scheduled = match (&plan.unschedulable, auction) {
        (None, Some(a)) => DesiredCondition::new(
            CONDITION_SCHEDULED,
            false,
            "AtAuction",
            format!(
                "{placed}/{desired} instances placed; {} is at auction among {} nodes until {}",
                a.instance,
                a.nodes.len(),
                a.closes_at.0
            ),
        ),
        (None, None) => DesiredCondition::new(
            CONDITION_SCHEDULED,
            true,
            "AllPlaced",
            format!("{placed}/{desired} instances placed"),
        ),
        (Some(msg), _) => {
            DesiredCondition::new(CONDITION_SCHEDULED, false, "Unschedulable", msg.clone())
        }
    };
    let available = if ready >= desired {
        DesiredCondition::new(
            CONDITION_AVAILABLE,
            true,
            "MinimumReplicasReady",
            format!("{ready}/{desired} instances ready"),
        )
    } else {
        DesiredCondition::new(
            CONDITION_AVAILABLE,
            false,
            "ReplicasNotReady",
            format!("{ready}/{desired} instances ready"),
        )
    };
    let progressing = if ready >= desired && placed == desired {
        DesiredCondition::new(
            CONDITION_PROGRESSING,
            false,
            "Converged",
            "every instance is placed and ready",
        )
    } else {
        DesiredCondition::new(
            CONDITION_PROGRESSING,
            true,
            "Converging",
            format!("{placed}/{desired} placed, {ready} ready"),
        )
    };
    let credit = match (&bills.exhausted, bills.metered) {
        (Some((reason, msg)), _) => {
            DesiredCondition::new(CONDITION_CREDIT_EXHAUSTED, true, *reason, msg.clone())
        }
        (None, true) => DesiredCondition::new(
            CONDITION_CREDIT_EXHAUSTED,
            false,
            "WithinCredit",
            format!("{} milli-credits paid so far", bills.spent),
        ),
        (None, false) => DesiredCondition::new(
            CONDITION_CREDIT_EXHAUSTED,
            false,
            "Unmetered",
            "no CreditLine names this namespace: usage is not billed",
        ),
    };
    for c in [scheduled, available, progressing, credit] {
        set_condition(&mut conditions, c.at_generation(generation), Time(now));
    }
    match exposed {
        Some(c) => {
            set_condition(&mut conditions, c.at_generation(generation), Time(now));
        }
        None => conditions.retain(|c| c.type_ != CONDITION_EXPOSED),
    }
    // Only on workloads that ever had usage it could not price, so the others do not churn.
    let had_unpriced =
        univrs_api::conditions::find(&conditions, CONDITION_PRICING_FAILED).is_some();
    if !bills.unpriced.is_empty() || had_unpriced {
        let c = if bills.unpriced.is_empty() {
            DesiredCondition::new(
                CONDITION_PRICING_FAILED,
                false,
                "UsagePriced",
                "all reported usage could be priced",
            )
        } else {
            DesiredCondition::new(
                CONDITION_PRICING_FAILED,
                true,
                "UsageNotPriced",
                format!(
                    "{}; it stays unbilled until the node's rates can price it",
                    bills.unpriced.join("; ")
                ),
            )
        };
        set_condition(&mut conditions, c.at_generation(generation), Time(now));
    }
    let instances: Vec<serde_json::Value> = plan
        .instances
        .iter()
        .map(|i| {
            // Keep the billed mark of a placement that stays; a new placement starts unbilled.
            let billed = bills
                .marks
                .get(&i.name)
                .cloned()
                .or_else(|| {
                    agent_view
                        .get(i.name.as_str())
                        .and_then(|a| a.billed.clone())
                })
                .filter(|b| b.is_for(i.node.as_ref(), i.placed_at.as_ref()));
            owned_fields(&Instance {
                billed,
                ..i.clone()
            })
        })
        .collect();
    let mut status = serde_json::json!({
        "observedGeneration": generation,
        "replicas": placed,
        "readyReplicas": ready,
        "selector": format!("{WORKLOAD_LABEL}={}", wl.name_any()),
        "instances": instances,
        "conditions": conditions,
    });
    if bills.spent > 0 || current.credit_spent.is_some() {
        status["creditSpent"] = bills.spent.into();
    }
    if !pull_credentials.is_empty() {
        status["imagePullCredentials"] =
            serde_json::to_value(pull_credentials).expect("sealed credentials serialize");
    }
    if let Some(a) = auction {
        status["auction"] = serde_json::to_value(a).expect("an auction serializes");
    }
    status
}

/// Whether applying `s` (the status part) would change anything the controller owns.
pub fn unchanged(wl: &Workload, s: &serde_json::Value) -> bool {
    let Some(cur) = wl.status.as_ref() else {
        return false;
    };
    let cur_instances: Vec<serde_json::Value> = cur
        .instances
        .iter()
        .filter(|i| i.node.is_some())
        .map(owned_fields)
        .collect();
    cur.observed_generation == s["observedGeneration"].as_i64()
        && cur.credit_spent == s["creditSpent"].as_i64()
        && cur.replicas == s["replicas"].as_i64().map(|v| v as i32)
        && cur.ready_replicas == s["readyReplicas"].as_i64().map(|v| v as i32)
        && cur.selector.as_deref() == s["selector"].as_str()
        && serde_json::to_value(&cur.conditions).ok().as_ref() == Some(&s["conditions"])
        && serde_json::Value::Array(cur_instances) == s["instances"]
        && serde_json::to_value(&cur.image_pull_credentials)
            .ok()
            .as_ref()
            == Some(
                s.get("imagePullCredentials")
                    .unwrap_or(&serde_json::json!([])),
            )
        && serde_json::to_value(&cur.auction).ok().as_ref()
            == Some(s.get("auction").unwrap_or(&serde_json::Value::Null))
}

/// How many placements one Scheduled note names: five `instance on node` pairs of 63-character
/// names stay well inside an Event's 1 KiB note.
const PLACED_NAMED: usize = 5;

/// The note of the one Scheduled Event a status write gets for all the instances it placed (as
/// a Pod gets one per binding): a Workload of many replicas costs the API server one Event per
/// write, not one per replica.
fn placed_note(placed: &[(String, String)]) -> String {
    let named: Vec<String> = placed
        .iter()
        .take(PLACED_NAMED)
        .map(|(inst, node)| format!("{inst} on {node}"))
        .collect();
    match placed.len().saturating_sub(PLACED_NAMED) {
        0 => format!("placed {}", named.join(", ")),
        more => format!("placed {} and {more} more", named.join(", ")),
    }
}

/// What to announce once the status is written: moves, placements, payments, and credit,
/// pricing and scheduling trouble (credit and pricing only when they start).
pub fn notices(wl: &Workload, plan: &Plan, bills: &Billing) -> Vec<Notice> {
    let mut out = Vec::new();
    for (inst, node, why) in &plan.moved {
        out.push(Notice::normal(
            "Rescheduling",
            format!("moving {inst} off {node}: {why}"),
        ));
    }
    if let Some(AuctionPlan::Open { instance, nodes }) = &plan.auction {
        out.push(Notice::normal(
            "AuctionOpened",
            format!(
                "{instance} is at auction among {}: sealed asks are taken until the close",
                nodes.join(", ")
            ),
        ));
    }
    for (inst, node, price, asks) in &plan.awarded {
        out.push(Notice::normal(
            "Awarded",
            format!("{inst} awarded to {node} at {price} milli-credits/h, the clearing price of {asks} valid asks"),
        ));
    }
    for inst in &plan.no_bid {
        out.push(Notice::warning(
            "NoValidBid",
            format!(
                "{inst}'s auction closed without a valid ask; placed as usual, at the node's rates"
            ),
        ));
    }
    if !plan.placed.is_empty() {
        out.push(Notice::normal("Scheduled", placed_note(&plan.placed)));
    }
    for (inst, node, amount) in &bills.paid {
        out.push(Notice::normal(
            "Paid",
            format!("paid {node} {amount} milli-credits for {inst}'s usage"),
        ));
    }
    let was_exhausted = wl.status.as_ref().is_some_and(|s| {
        univrs_api::conditions::is_true(&s.conditions, CONDITION_CREDIT_EXHAUSTED)
    });
    if let (Some((_, why)), false) = (&bills.exhausted, was_exhausted) {
        out.push(Notice::warning(
            "CreditExhausted",
            format!("{why}; the workload stops growing"),
        ));
    }
    let was_unpriced = wl
        .status
        .as_ref()
        .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, CONDITION_PRICING_FAILED));
    if !bills.unpriced.is_empty() && !was_unpriced {
        out.push(Notice::warning(
            "PricingFailed",
            format!("{}: left unbilled", bills.unpriced.join("; ")),
        ));
    }
    for why in &bills.clamped {
        out.push(Notice::warning(
            "UsageClamped",
            format!("{why}: the excess is not billed"),
        ));
    }
    if let Some(msg) = &plan.unschedulable {
        out.push(Notice::warning("FailedScheduling", msg.clone()));
    }
    out
}

/// When to look again. Cluster events (a node appearing, freeing up, turning Ready) requeue a
/// waiting workload; the 30 s retry is only the safety net for changes no watch sees (credit,
/// for instance), and is left out when only such events can help.
pub fn requeue(plan: &Plan, resync: Duration) -> Duration {
    let retry = plan
        .unschedulable
        .as_ref()
        .filter(|_| !plan.unschedulable_until_changed)
        .map(|_| UNSCHEDULABLE_RETRY)
        .into_iter()
        .chain(plan.requeue)
        .min();
    retry.unwrap_or(resync)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("web-{i}"), format!("n{i}")))
            .collect()
    }

    #[test]
    fn one_scheduled_note_names_every_placement_of_a_write() {
        assert_eq!(placed_note(&placed(1)), "placed web-0 on n0");
        assert_eq!(
            placed_note(&placed(3)),
            "placed web-0 on n0, web-1 on n1, web-2 on n2"
        );
    }

    #[test]
    fn a_large_write_names_a_few_and_counts_the_rest() {
        let note = placed_note(&placed(100));
        assert!(note.starts_with("placed web-0 on n0, "), "{note}");
        assert!(note.ends_with("web-4 on n4 and 95 more"), "{note}");
        let long = |c: char, i: usize| format!("{}{i}", c.to_string().repeat(60));
        let widest: Vec<_> = (0..50).map(|i| (long('w', i), long('n', i))).collect();
        assert!(placed_note(&widest).len() < 1024);
    }
}

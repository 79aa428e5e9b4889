//! The Node status plan: Ready from the agent's Lease, what is allocated there, reputation, the
//! septal gate, the nexus role and the credit balance, and whether the node's names really are
//! one key. The controller's part of `status` (see `univrs_api::resources::node` for the other
//! writer) is decided here; `reconcile::node` reads its inputs and writes the result.
//!
//! - **Reputation** = the service record (an average of outcomes that decays toward 0.5, kept in
//!   `status.serviceRecord`) boosted by verified vouches. Outcomes are what the node cannot fake
//!   alone: a Lease that lapses is a failure; so is new invalid gossip from the node that its
//!   peers corroborate (`peers`, gathered into `status.peerView`). Each service period (an
//!   hour) of Ready service is a success only as far as peers of standing witness the node
//!   connected (`peerView.witnessed`; a trust anchor needs no witness), so a ring of fresh
//!   identities renewing their Leases and reporting each other gains nothing. In the same
//!   period, its instances that are not running and ready while their Workloads run ready on
//!   other nodes count as a failure in proportion (its own agent's word is believed against it,
//!   and the comparison clears it of a Workload that fails everywhere).
//! - **Septal gate**: each lapse is a failure; five without an hour of clean service between
//!   them (a flapping node) isolate it, as does a health score of 0.7 (silence, low
//!   reputation). After 60 s it recovers a quarter of its traffic per Ready reconcile.
//! - **Nexus role** comes from the periodic election (`reconcile::nexus`).
//! - **Entropy** (`status.entropy`) from what peers report of it, what is placed there and how it
//!   fares, its fullest credit line, its Lease lapses and its clock's skew; written with the
//!   allocation (a report that may settle), and it sets a Dynamic-priced node's multiplier.
//! - **Credit balance** sums the node's credit lines: owed to it minus owed by it.
//!
//! A write is worth it only when something other than a timestamp changes; figures are rounded
//! (reputation to 0.001, health to 0.01) so slow decay does not churn the store.

use crate::core::notice::Notice;
use crate::core::peers;
use crate::core::resources::Resources;
use crate::core::snapshot::Liveness;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::time::Duration;
use univrs_api::Node;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::enr::{entropy, reputation, septal};
use univrs_api::identity::PublicIdentity;
use univrs_api::quantity::Quantity;
use univrs_api::resources::node::{
    CONDITION_ISOLATED, CONDITION_READY, EntropyStatus, LEASE_NAMESPACE, NexusRole, NodeStatus,
    PeerView, SeptalState, SeptalStatus, ServiceRecord, lease_name,
};

/// How long after its placement an instance may take to run and turn ready before its node is
/// held to it (at most the service period).
const START_GRACE: Duration = Duration::from_secs(300);

/// How a node ran what was placed on it, as its agent reports (see [`Placements::failing`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Placements {
    /// Instances placed there longer than the start grace, whose Workload runs a ready
    /// instance on another node.
    pub compared: u32,
    /// Of those, the instances not running and ready.
    pub failing: u32,
    /// Every instance placed there longer than the start grace and not finished.
    pub settled_due: u32,
    /// Of those, the instances not running and ready.
    pub unsettled: u32,
    /// Their container restarts per hour since placement (an hour at least), summed.
    pub restart_rate_sum: f64,
}

impl Placements {
    /// Counts the instances of one Workload on `node` at `now`, with `grace` to start.
    pub fn add(&mut self, w: &univrs_api::Workload, node: &str, now: Timestamp, grace: Duration) {
        use univrs_api::resources::workload::InstancePhase;
        let Some(status) = &w.status else { return };
        let fine = |i: &univrs_api::resources::workload::Instance| {
            i.phase == Some(InstancePhase::Running) && i.ready != Some(false)
        };
        let elsewhere = status.instances.iter().any(|i| {
            i.node.as_deref().is_some_and(|n| n != node)
                && i.phase == Some(InstancePhase::Running)
                && i.ready == Some(true)
        });
        let grace_ms = grace.as_millis() as u64;
        let hour_ms = 3_600_000u64;
        for i in status.instances.iter().filter(|i| {
            i.node.as_deref() == Some(node)
                && i.phase != Some(InstancePhase::Succeeded)
                && i.phase != Some(InstancePhase::Terminating)
        }) {
            let Some(age) = i
                .placed_at
                .as_ref()
                .map(|t| ms(now).saturating_sub(ms(t.0)))
            else {
                continue;
            };
            if age < grace_ms {
                continue;
            }
            self.settled_due += 1;
            self.unsettled += u32::from(!fine(i));
            self.restart_rate_sum += f64::from(i.restarts.unwrap_or(0).max(0)) * hour_ms as f64
                / age.max(hour_ms) as f64;
            if elsewhere {
                self.compared += 1;
                self.failing += u32::from(!fine(i));
            }
        }
    }

    /// The share of its due instances not running and ready, and their mean restart rate.
    pub fn unsettled(&self) -> (f64, f64) {
        if self.settled_due == 0 {
            (0.0, 0.0)
        } else {
            let n = f64::from(self.settled_due);
            (f64::from(self.unsettled) / n, self.restart_rate_sum / n)
        }
    }

    /// The share of compared instances failing, 0 to 1.
    pub fn failing_share(&self) -> f64 {
        if self.compared == 0 {
            0.0
        } else {
            f64::from(self.failing) / f64::from(self.compared)
        }
    }
}

/// How long an instance may take to start before its node is held to it, given the service
/// period.
pub fn start_grace(service_period: Duration) -> Duration {
    START_GRACE.min(service_period)
}

/// Whether the node's PeerId and DID name the same key.
fn identity_consistent(node: &Node) -> Result<(), String> {
    let from_peer = PublicIdentity::from_peer_id(&node.spec.peer_id).map_err(|e| e.to_string())?;
    let from_did = PublicIdentity::from_did(&node.spec.did).map_err(|e| e.to_string())?;
    if from_peer == from_did {
        Ok(())
    } else {
        Err("spec.peerId and spec.did are different keys".into())
    }
}

/// A time in milliseconds since the epoch, as the `enr` functions count it.
fn ms(t: Timestamp) -> u64 {
    t.as_millisecond().max(0) as u64
}

/// `x` rounded to `places` decimals.
fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// A node's service record (the prior when it has none yet), never boosted by vouches.
pub fn service_base(node: &Node) -> f64 {
    node.status
        .as_ref()
        .and_then(|s| s.service_record.as_ref())
        .map_or(reputation::Config::default().prior, |r| r.base)
}

/// What one service period of a Ready node comes to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Period {
    /// How far its service is witnessed, 0 to 1 (1 for a trust anchor).
    witnessed: f64,
    /// The share of its compared instances failing, 0 to 1.
    failing: f64,
}

/// The next service record: a failure when the node just lost its Lease; per `period` of Ready
/// service, a failure as large as the share of its instances failing and a success as far as
/// the rest is witnessed. A period in which nothing counts is not consumed (no write): the next
/// witnessed reconcile counts it. Returns the record and whether a success was credited.
fn next_record(
    current: Option<&ServiceRecord>,
    was_ready: bool,
    ready: bool,
    now: Timestamp,
    period: Duration,
    served: Period,
) -> (ServiceRecord, bool) {
    let cfg = reputation::Config::default();
    let Some(cur) = current else {
        let fresh = ServiceRecord {
            base: cfg.prior,
            updated_at: Time(now),
        };
        return (fresh, false);
    };
    let rec = reputation::Record {
        base: cur.base,
        updated_ms: ms(cur.updated_at.0),
    };
    let period = period.as_millis() as u64;
    let (rec, credited) = if was_ready && !ready {
        (reputation::observe(rec, 0.0, ms(now), &cfg), false)
    } else if ready
        && ms(now).saturating_sub(rec.updated_ms) >= period
        && (served.witnessed > 0.0 || served.failing > 0.0)
    {
        let failing = served.failing.clamp(0.0, 1.0);
        let success = served.witnessed.clamp(0.0, 1.0) * (1.0 - failing);
        let rec = reputation::observe_weighted(rec, 0.0, failing, ms(now), &cfg);
        let rec = reputation::observe_weighted(rec, 1.0, success, ms(now), &cfg);
        (rec, success > 0.0 && failing == 0.0)
    } else {
        return (cur.clone(), false);
    };
    let record = ServiceRecord {
        base: round(rec.base, 4),
        updated_at: Time(now),
    };
    (record, credited)
}

/// The septal gate after this reconcile's events.
fn next_gate(
    current: Option<&SeptalStatus>,
    events: &[septal::Event],
    now: Timestamp,
) -> SeptalStatus {
    let cfg = septal::Config::default();
    let mut gate = current.map_or(septal::Gate::default(), |s| septal::Gate {
        state: s.state,
        failures: s.failures.max(0) as u32,
        since_ms: s.since.as_ref().map_or(0, |t| ms(t.0)),
        traffic: s.traffic.unwrap_or(match s.state {
            SeptalState::Connected => 1.0,
            SeptalState::Isolated => 0.0,
            SeptalState::Recovering => cfg.recovery_step,
        }),
    });
    let mut health = current.map_or(0.0, |s| s.health_score);
    for e in events {
        if let septal::Event::Health(h) = e {
            health = septal::health_score(h, &cfg);
        }
        gate = septal::step(gate, *e, ms(now), &cfg);
    }
    SeptalStatus {
        state: gate.state,
        failures: gate.failures as i32,
        health_score: round(health, 2),
        traffic: Some(round(gate.traffic, 2)),
        since: (gate.since_ms > 0)
            .then(|| Timestamp::from_millisecond(gate.since_ms as i64).ok())
            .flatten()
            .map(Time),
    }
}

/// `x` rounded to a tenth: entropy moves in steps a dashboard can plot, and a few milliseconds
/// of latency do not rewrite the status.
fn tenth(x: f64) -> f64 {
    round(x, 1)
}

/// The node's entropy from what the cluster measures of it (`univrs_api::enr::entropy`).
fn entropy_of(
    o: &Observed<'_>,
    used: Resources,
    view: Option<&PeerView>,
    gate: &SeptalStatus,
) -> EntropyStatus {
    let ratio = |part: i32, whole: i32| {
        if whole <= 0 {
            0.0
        } else {
            f64::from(part.max(0)) / f64::from(whole)
        }
    };
    let network = view.map_or_else(entropy::NetworkInputs::default, |v| {
        entropy::NetworkInputs {
            unreachable: 1.0 - ratio(v.connected_by, v.reporters),
            relayed: ratio(v.relayed_by, v.connected_by),
            latency_ms: 0.0,
        }
    });
    let latency_ms = o
        .node
        .status
        .as_ref()
        .and_then(|s| s.observations.as_ref())
        .and_then(|obs| obs.median_latency_ms)
        .unwrap_or(0.0);
    let network = entropy::NetworkInputs {
        latency_ms,
        ..network
    };
    let cap = &o.node.spec.capacity;
    let share = |used: u64, cap: Option<u64>| match cap {
        Some(c) if c > 0 => used as f64 / c as f64,
        _ => 1.0,
    };
    let (unsettled, restart_rate) = o.placements.unsettled();
    let compute = entropy::ComputeInputs {
        utilization: share(used.cpu_millis, cap.cpu_millis().ok())
            .max(share(used.memory_bytes, cap.memory_bytes().ok())),
        unsettled,
        restart_rate,
    };
    let ledger = entropy::LedgerInputs {
        line_utilization: o.credit_use,
    };
    let temporal = entropy::TemporalInputs {
        lapses: f64::from(gate.failures.max(0)),
        clock_skew_s: o.clock_skew_s,
    };
    let e = entropy::Entropy::from_inputs(&network, &compute, &ledger, &temporal);
    let e = entropy::Entropy {
        network: tenth(e.network),
        compute: tenth(e.compute),
        ledger: tenth(e.ledger),
        temporal: tenth(e.temporal),
    };
    let total = tenth(e.total(&entropy::Weights::default()));
    EntropyStatus {
        network: e.network,
        compute: e.compute,
        ledger: e.ledger,
        temporal: e.temporal,
        total,
        price_multiplier_milli: (entropy::price_multiplier(total) * 1000.0).round() as i64,
    }
}

/// What the Node reconciler read for one node.
pub struct Observed<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its Lease's liveness at `now`.
    pub live: Liveness,
    /// The status of the other Ready nodes whose agents report on this one, each with its
    /// weight as a witness (`peers::witness_weight`).
    pub others: &'a [(&'a NodeStatus, f64)],
    /// How many other nodes are Ready (who could report on this one).
    pub ready_others: usize,
    /// Whether the node is a trust anchor (its service needs no witness).
    pub anchor: bool,
    /// How it runs what is placed on it.
    pub placements: Placements,
    /// How near its fullest credit line is to its limit, 0 to 1.
    pub credit_use: f64,
    /// How far its agent's clock is from the API server's, seconds (from its Lease).
    pub clock_skew_s: f64,
    /// The effective weights of the verified vouches for this node.
    pub vouches: &'a [f64],
    /// What is observed placed there: resources and instance count.
    pub placed: (Resources, u32),
    /// Its role in the latest nexus election, if it took part.
    pub elected: Option<NexusRole>,
    /// Its credit balance over all its lines.
    pub balance: i64,
    /// The time of the reconcile.
    pub now: Timestamp,
}

/// The controller's part of a Node's status, and what follows from it.
pub struct Plan {
    generation: Option<i64>,
    allocated: serde_json::Value,
    count: u32,
    reputation: f64,
    record: ServiceRecord,
    balance: i64,
    gate: SeptalStatus,
    conditions: Vec<Condition>,
    role: Option<NexusRole>,
    peer_view: Option<PeerView>,
    entropy: EntropyStatus,
    /// Something other than what is allocated changed: write now.
    pub changed: bool,
    /// What is allocated there, or its entropy, changed (a report: it may wait to settle).
    pub allocation_changed: bool,
    /// What to announce once written.
    pub notices: Vec<Notice>,
    /// When to look again: just after the Lease would lapse (so Ready turns False on time),
    /// when an isolated gate may start recovering, and at the latest after `resync`.
    pub requeue: Duration,
}

impl Plan {
    /// The status to apply.
    pub fn status(&self) -> serde_json::Value {
        let mut status = serde_json::json!({
            "observedGeneration": self.generation,
            "allocated": self.allocated,
            "instances": self.count,
            "reputation": self.reputation,
            "serviceRecord": self.record,
            "creditBalance": self.balance,
            "septal": self.gate,
            "entropy": self.entropy,
            "conditions": self.conditions,
        });
        if let Some(role) = self.role {
            status["nexusRole"] = serde_json::to_value(role).unwrap_or_default();
        }
        if let Some(view) = &self.peer_view {
            status["peerView"] = serde_json::to_value(view).unwrap_or_default();
        }
        status
    }
}

/// Plans a Node's status from what the reconciler read; `resync` bounds the requeue and
/// `service_period` is how much Ready time one outcome stands for.
pub fn plan(o: &Observed<'_>, resync: Duration, service_period: Duration) -> Plan {
    let now = o.now;
    let node = o.node;
    let name = node.name_any();
    let ready = match (&o.live, identity_consistent(node)) {
        (_, Err(why)) => DesiredCondition::new(CONDITION_READY, false, "IdentityMismatch", why),
        (Liveness::Fresh { .. }, Ok(())) => DesiredCondition::new(
            CONDITION_READY,
            true,
            "LeaseRenewed",
            "the agent renews its Lease",
        ),
        (Liveness::Lapsed { since }, Ok(())) => DesiredCondition::new(
            CONDITION_READY,
            false,
            "LeaseExpired",
            format!("the agent's Lease lapsed at {since}"),
        ),
        (Liveness::Missing, Ok(())) => DesiredCondition::new(
            CONDITION_READY,
            false,
            "NoLease",
            format!("no Lease {LEASE_NAMESPACE}/{}", lease_name(&name)),
        ),
    };
    let generation = node.metadata.generation;
    let current = node.status.clone().unwrap_or_default();
    let was_ready = univrs_api::conditions::is_true(&current.conditions, CONDITION_READY);
    let now_ready = ready.status == univrs_api::conditions::TRUE;

    // What the other Ready nodes' agents report about this one.
    let peer_view = peers::view_of(
        &name,
        o.others
            .iter()
            .filter_map(|(s, w)| Some((s.observations.as_ref()?, *w))),
    );
    let invalid_gossip = peer_view
        .as_ref()
        .is_some_and(|v| peers::new_invalid_gossip(current.peer_view.as_ref(), v, o.ready_others));

    // Reputation: the service record, plus what verified vouches for this node add.
    let period = Period {
        witnessed: if o.anchor {
            1.0
        } else {
            peer_view.as_ref().map_or(0.0, |v| v.witnessed)
        },
        failing: o.placements.failing_share(),
    };
    let (mut record, served) = next_record(
        current.service_record.as_ref(),
        was_ready,
        now_ready,
        now,
        service_period,
        period,
    );
    let counted_failing = period.failing > 0.0
        && now_ready
        && current
            .service_record
            .as_ref()
            .is_some_and(|r| r != &record);
    let cfg = reputation::Config::default();
    if invalid_gossip {
        let failed = reputation::observe(
            reputation::Record {
                base: record.base,
                updated_ms: ms(record.updated_at.0),
            },
            0.0,
            ms(now),
            &cfg,
        );
        record = ServiceRecord {
            base: round(failed.base, 4),
            updated_at: Time(now),
        };
    }
    let decayed = reputation::decay(
        reputation::Record {
            base: record.base,
            updated_ms: ms(record.updated_at.0),
        },
        ms(now),
        &cfg,
    );
    let rep = round(
        reputation::effective(decayed.base, reputation::vouch_boost(o.vouches, &cfg)),
        3,
    );

    // The septal gate.
    let mut events = Vec::new();
    if was_ready && !now_ready {
        events.push(septal::Event::Failure);
    }
    if served {
        events.push(septal::Event::Success);
    }
    let silent_ms = match o.live {
        Liveness::Lapsed { since } => ms(now).saturating_sub(ms(since)),
        Liveness::Missing => 0,
        Liveness::Fresh { .. } => 0,
    };
    events.push(septal::Event::Health(septal::HealthInputs {
        silent_ms,
        defaulted: 0,
        reputation: rep,
    }));
    events.push(septal::Event::Tick);
    if now_ready
        && current
            .septal
            .as_ref()
            .is_some_and(|s| s.state == SeptalState::Recovering)
    {
        // Each Ready reconcile while recovering is a successful probe.
        events.push(septal::Event::Success);
    }
    let gate = next_gate(current.septal.as_ref(), &events, now);
    let isolated = match gate.state {
        SeptalState::Isolated => DesiredCondition::new(
            CONDITION_ISOLATED,
            true,
            "SeptalGateTripped",
            "the septal gate isolates this node: nothing is placed here",
        ),
        SeptalState::Recovering => DesiredCondition::new(
            CONDITION_ISOLATED,
            false,
            "Recovering",
            "the septal gate is letting traffic back through",
        ),
        SeptalState::Connected => DesiredCondition::new(
            CONDITION_ISOLATED,
            false,
            "Connected",
            "the septal gate lets traffic through",
        ),
    };
    let mut conditions = current.conditions.clone();
    let mut changed = false;
    for c in [ready.clone(), isolated] {
        changed |= set_condition(&mut conditions, c.at_generation(generation), Time(now));
    }
    let (used, count) = o.placed;
    let allocated = serde_json::json!({
        "cpu": Quantity::from_millicores(used.cpu_millis),
        "memory": Quantity::from_bytes(used.memory_bytes),
        "gpu": used.gpus,
    });
    let role = o.elected.or(current.nexus_role);
    let balance = o.balance;
    let gate_changed = current.septal.as_ref().is_none_or(|s| {
        s.state != gate.state
            || s.failures != gate.failures
            || s.traffic != gate.traffic
            || (s.health_score - gate.health_score).abs() > 1e-9
    });
    let entropy = entropy_of(o, used, peer_view.as_ref(), &gate);
    let allocation_changed = current.instances != Some(count as i32)
        || serde_json::to_value(&current.allocated).ok() != Some(allocated.clone())
        || current.entropy.as_ref() != Some(&entropy);
    changed |= current.observed_generation != generation
        || current.service_record.as_ref() != Some(&record)
        || current.reputation != Some(rep)
        || current.nexus_role != role
        || current.credit_balance != Some(balance)
        || current.peer_view != peer_view
        || gate_changed;

    let mut notices = Vec::new();
    if invalid_gossip && let Some(view) = &peer_view {
        let new =
            view.invalid_messages - current.peer_view.as_ref().map_or(0, |v| v.invalid_messages);
        notices.push(Notice::warning(
            "InvalidGossip",
            format!(
                "{} of {} peers dropped {new} more invalid gossip message(s) from this node (bad signature or impossible claim); its service record counts a failure",
                view.reporters_of_invalid, view.reporters
            ),
        ));
    }
    if counted_failing {
        notices.push(Notice::warning(
            "PlacementsFailing",
            format!(
                "{} of {} instances here are not running and ready while their Workloads run ready on other nodes; its service record counts a failure",
                o.placements.failing, o.placements.compared
            ),
        ));
    }
    let was_isolated = current
        .septal
        .as_ref()
        .is_some_and(|s| s.state == SeptalState::Isolated);
    if (gate.state == SeptalState::Isolated) != was_isolated {
        notices.push(if was_isolated {
            Notice::normal(
                "SeptalRecovering",
                "the septal gate starts letting traffic through again",
            )
        } else {
            Notice::warning(
                "SeptalIsolated",
                format!(
                    "the septal gate isolates this node ({} failures, health {:.2})",
                    current.septal.as_ref().map_or(0, |s| s.failures) + 1,
                    gate.health_score
                ),
            )
        });
    }
    if now_ready != was_ready {
        notices.push(if now_ready {
            Notice::normal("NodeReady", ready.message.clone())
        } else {
            Notice::warning("NodeNotReady", ready.message.clone())
        });
    }

    let mut requeue = match o.live {
        Liveness::Fresh { until } => {
            until.duration_since(now).unsigned_abs() + Duration::from_millis(500)
        }
        _ => resync,
    };
    if gate.state == SeptalState::Isolated {
        let cfg = septal::Config::default();
        let since = gate.since.as_ref().map_or(ms(now), |t| ms(t.0));
        let left = (since + cfg.recovery_timeout_ms).saturating_sub(ms(now));
        requeue = requeue.min(Duration::from_millis(left + 500));
    }
    Plan {
        generation,
        allocated,
        count,
        reputation: rep,
        record,
        balance,
        gate,
        conditions,
        role,
        peer_view,
        entropy,
        changed,
        allocation_changed,
        notices,
        requeue: requeue.min(resync),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn witnessed(w: f64) -> Period {
        Period {
            witnessed: w,
            failing: 0.0,
        }
    }

    #[test]
    fn lapses_are_failures_and_witnessed_hours_of_service_successes() {
        let next =
            |cur: Option<&ServiceRecord>, was, is, t, p| next_record(cur, was, is, at(t), HOUR, p);
        let (fresh, served) = next(None, false, true, 0, witnessed(1.0));
        assert_eq!((fresh.base, served), (0.5, false));
        // Within the hour and no lapse: nothing changes (no write).
        assert_eq!(
            next(Some(&fresh), true, true, 600, witnessed(1.0)),
            (fresh.clone(), false)
        );
        let (after_hour, served) = next(Some(&fresh), true, true, 3600, witnessed(1.0));
        assert!(
            served && (after_hour.base - 0.55).abs() < 1e-9,
            "{after_hour:?}"
        );
        let (lapsed, served) = next(Some(&fresh), true, false, 60, witnessed(1.0));
        assert!(!served && lapsed.base < 0.5, "{lapsed:?}");
        // Nobody of standing saw it: the hour counts nothing and is not consumed.
        assert_eq!(
            next(Some(&fresh), true, true, 7200, witnessed(0.0)),
            (fresh.clone(), false)
        );
        // A weak witness: a partial success.
        let (half, served) = next(Some(&fresh), true, true, 3600, witnessed(0.5));
        assert!(served && (half.base - 0.525).abs() < 1e-9, "{half:?}");
    }

    #[test]
    fn failing_placements_cost_even_an_unwitnessed_node() {
        let (fresh, _) = next_record(None, false, true, at(0), HOUR, witnessed(0.0));
        let all_failing = Period {
            witnessed: 0.0,
            failing: 1.0,
        };
        let (bad, served) = next_record(Some(&fresh), true, true, at(3600), HOUR, all_failing);
        assert!(!served && (bad.base - 0.45).abs() < 1e-9, "{bad:?}");
        // Half its instances failing under a full witness: a half failure, then half a success.
        let half = Period {
            witnessed: 1.0,
            failing: 0.5,
        };
        let (mixed, served) = next_record(Some(&fresh), true, true, at(3600), HOUR, half);
        let expect = 0.5 * 0.95;
        let expect = expect + 0.05 * (1.0 - expect);
        assert!(!served && (mixed.base - expect).abs() < 1e-4, "{mixed:?}");
    }

    fn workload(instances: &[(&str, InstancePhase, Option<bool>, i64)]) -> univrs_api::Workload {
        let mut w: univrs_api::Workload = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        w.status = Some(univrs_api::resources::workload::WorkloadStatus {
            instances: instances
                .iter()
                .enumerate()
                .map(|(i, (node, phase, ready, placed))| {
                    univrs_api::resources::workload::Instance {
                        name: format!("w-{i}"),
                        node: Some(node.to_string()),
                        placed_at: Some(Time(at(*placed))),
                        phase: Some(*phase),
                        ready: *ready,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        });
        w
    }

    use univrs_api::resources::workload::InstancePhase;

    #[test]
    fn a_node_is_held_to_what_runs_ready_elsewhere() {
        let grace = Duration::from_secs(300);
        let count = |w: &univrs_api::Workload, node: &str, now: i64| {
            let mut p = Placements::default();
            p.add(w, node, at(now), grace);
            p
        };
        let w = workload(&[
            ("good", InstancePhase::Running, Some(true), 0),
            ("bad", InstancePhase::Running, Some(false), 0),
            ("bad", InstancePhase::Starting, None, 0),
        ]);
        let bad = count(&w, "bad", 600);
        assert_eq!((bad.compared, bad.failing), (2, 2));
        assert_eq!(bad.unsettled(), (1.0, 0.0));
        assert_eq!(count(&w, "bad", 600).failing_share(), 1.0);
        assert_eq!(
            count(&w, "bad", 100),
            Placements::default(),
            "within the grace"
        );
        let good = count(&w, "good", 600);
        assert_eq!(
            (good.compared, good.settled_due, good.unsettled),
            (0, 1, 0),
            "no ready instance elsewhere to compare good with"
        );
        let everywhere = workload(&[
            ("a", InstancePhase::Running, Some(false), 0),
            ("b", InstancePhase::Failed, None, 0),
        ]);
        let b = count(&everywhere, "b", 600);
        assert_eq!(
            (b.compared, b.failing, b.unsettled),
            (0, 0, 1),
            "a Workload failing everywhere is its own fault (and b's disorder)"
        );
    }

    #[test]
    fn a_flapping_node_is_isolated_then_recovers_gradually() {
        let mut gate = next_gate(None, &[septal::Event::Tick], at(0));
        assert_eq!(gate.state, SeptalState::Connected);
        for i in 1..=5 {
            gate = next_gate(Some(&gate), &[septal::Event::Failure], at(i));
        }
        assert_eq!(
            (gate.state, gate.traffic),
            (SeptalState::Isolated, Some(0.0))
        );
        gate = next_gate(Some(&gate), &[septal::Event::Tick], at(30));
        assert_eq!(gate.state, SeptalState::Isolated, "not before 60 s");
        gate = next_gate(Some(&gate), &[septal::Event::Tick], at(70));
        assert_eq!(
            (gate.state, gate.traffic),
            (SeptalState::Recovering, Some(0.25))
        );
        for i in 0..3 {
            gate = next_gate(Some(&gate), &[septal::Event::Success], at(71 + i));
        }
        assert_eq!(
            (gate.state, gate.traffic),
            (SeptalState::Connected, Some(1.0))
        );
    }

    #[test]
    fn silence_and_low_reputation_together_trip_the_gate() {
        let health = |silent_ms, reputation| {
            septal::Event::Health(septal::HealthInputs {
                silent_ms,
                defaulted: 0,
                reputation,
            })
        };
        let quiet = next_gate(None, &[health(60_000, 0.5)], at(0));
        assert_eq!(
            quiet.state,
            SeptalState::Connected,
            "silence alone scores 0.4"
        );
        let bad = next_gate(None, &[health(60_000, 0.0)], at(0));
        assert_eq!((bad.state, bad.health_score), (SeptalState::Isolated, 0.7));
    }
}

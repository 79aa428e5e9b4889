//! The Node status plan: Ready from the agent's Lease, what is allocated there, reputation, the
//! septal gate, the nexus role and the credit balance, and whether the node's names really are
//! one key. The controller's part of `status` (see `univrs_api::resources::node` for the other
//! writer) is decided here; `reconcile::node` reads its inputs and writes the result.
//!
//! - **Reputation** = the service record (an average of outcomes that decays toward 0.5, kept in
//!   `status.serviceRecord`) boosted by verified vouches. Outcomes: a Lease that lapses is a
//!   failure; so is new invalid gossip from the node that its peers corroborate (`peers`,
//!   gathered into `status.peerView`); every hour of Ready service is a success.
//! - **Septal gate**: each lapse is a failure; five without an hour of clean service between
//!   them (a flapping node) isolate it, as does a health score of 0.7 (silence, low
//!   reputation). After 60 s it recovers a quarter of its traffic per Ready reconcile.
//! - **Nexus role** comes from the periodic election (`reconcile::nexus`).
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
use univrs_api::enr::{reputation, septal};
use univrs_api::identity::PublicIdentity;
use univrs_api::quantity::Quantity;
use univrs_api::resources::node::{
    CONDITION_ISOLATED, CONDITION_READY, LEASE_NAMESPACE, NexusRole, NodeStatus, PeerView,
    SeptalState, SeptalStatus, ServiceRecord, lease_name,
};

/// How much Ready time counts as one successful outcome.
const SERVICE_PERIOD: Duration = Duration::from_secs(3600);

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

/// The next service record: a failure when the node just lost its Lease, a success per hour of
/// Ready service. Returns the record and whether an hour of service was credited.
fn next_record(
    current: Option<&ServiceRecord>,
    was_ready: bool,
    ready: bool,
    now: Timestamp,
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
    let period = SERVICE_PERIOD.as_millis() as u64;
    let (rec, served) = if was_ready && !ready {
        (reputation::observe(rec, 0.0, ms(now), &cfg), false)
    } else if ready && ms(now).saturating_sub(rec.updated_ms) >= period {
        (reputation::observe(rec, 1.0, ms(now), &cfg), true)
    } else {
        return (cur.clone(), false);
    };
    let record = ServiceRecord {
        base: round(rec.base, 4),
        updated_at: Time(now),
    };
    (record, served)
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

/// What the Node reconciler read for one node.
pub struct Observed<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its Lease's liveness at `now`.
    pub live: Liveness,
    /// The status of every other Ready node (their agents report on this one).
    pub others: &'a [&'a NodeStatus],
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
    /// Something other than what is allocated changed: write now.
    pub changed: bool,
    /// What is allocated there changed (a report: it may wait to settle).
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

/// Plans a Node's status from what the reconciler read; `resync` bounds the requeue.
pub fn plan(o: &Observed<'_>, resync: Duration) -> Plan {
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
        o.others.iter().filter_map(|s| s.observations.as_ref()),
    );
    let invalid_gossip = peer_view
        .as_ref()
        .is_some_and(|v| peers::new_invalid_gossip(current.peer_view.as_ref(), v, o.others.len()));

    // Reputation: the service record, plus what verified vouches for this node add.
    let (mut record, served) =
        next_record(current.service_record.as_ref(), was_ready, now_ready, now);
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
    let allocation_changed = current.instances != Some(count as i32)
        || serde_json::to_value(&current.allocated).ok() != Some(allocated.clone());
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

    #[test]
    fn lapses_are_failures_and_hours_of_service_successes() {
        let (fresh, served) = next_record(None, false, true, at(0));
        assert_eq!((fresh.base, served), (0.5, false));
        // Within the hour and no lapse: nothing changes (no write).
        assert_eq!(
            next_record(Some(&fresh), true, true, at(600)),
            (fresh.clone(), false)
        );
        let (after_hour, served) = next_record(Some(&fresh), true, true, at(3600));
        assert!(served && after_hour.base > 0.5, "{after_hour:?}");
        let (lapsed, served) = next_record(Some(&fresh), true, false, at(60));
        assert!(!served && lapsed.base < 0.5, "{lapsed:?}");
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

//! The Node reconciler: Ready from the agent's Lease, what is allocated there, reputation, the
//! septal gate, the nexus role and the credit balance, and whether the node's names really are
//! one key.
//!
//! - **Reputation** = the service record (an average of outcomes that decays toward 0.5, kept in
//!   `status.serviceRecord`) boosted by verified vouches. Outcomes: a Lease that lapses is a
//!   failure; so is new invalid gossip from the node that its peers corroborate (`peers`,
//!   gathered into `status.peerView`); every hour of Ready service is a success.
//! - **Septal gate**: each lapse is a failure; five without an hour of clean service between
//!   them (a flapping node) isolate it, as does a health score of 0.7 (silence, low
//!   reputation). After 60 s it recovers a quarter of its traffic per Ready reconcile.
//! - **Nexus role** comes from the periodic election (`nexus`).
//! - **Credit balance** sums the node's credit lines: owed to it minus owed by it.
//!
//! A write happens only when something other than a timestamp changes; figures are rounded
//! (reputation to 0.001, health to 0.01) so slow decay does not churn the store.

use crate::context::{Context, apply_status, lease_name};
use crate::error::Error;
use crate::revival::FINALIZER;
use crate::snapshot::{self, Liveness};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::enr::{reputation, septal};
use univrs_api::identity::PublicIdentity;
use univrs_api::quantity::Quantity;
use univrs_api::resources::node::{
    CONDITION_ISOLATED, CONDITION_READY, SeptalState, SeptalStatus, ServiceRecord,
};
use univrs_api::{Account, Node};

/// The field manager that owns the finalizer entry.
const FINALIZER_MANAGER: &str = "univrs-controller-finalizer";

/// How soon a node whose cached copy is older than the controller's own last write of it is
/// looked at again (the watch normally delivers that write within milliseconds).
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

/// How long a change of only what is allocated on a node waits before it is written, so the
/// placements of a burst are reported together.
const ALLOCATION_SETTLE: Duration = Duration::from_secs(5);

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

fn ms(t: Timestamp) -> u64 {
    t.as_millisecond().max(0) as u64
}

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

/// Reconciles one Node under the credit-settlement finalizer: a deleted Node's credit goes
/// through the revival pool before the object goes.
///
/// The finalizer is added and removed with server-side apply (it is a set: applying it twice is
/// harmless), not with a JSON patch that tests the cached list: under load the cache lags the
/// server, such tests fail, and their retries only add load.
pub async fn reconcile_with_finalizer(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let name = node.name_any();
    if ctx
        .index()
        .node_is_newer_than(&name, node.metadata.resource_version.as_deref())
    {
        // The cache has not caught up with this controller's own last write: deciding from it
        // would write (and announce) again what was just written.
        return Ok(Action::requeue(CACHE_CATCH_UP));
    }
    let has = node.finalizers().iter().any(|f| f == FINALIZER);
    if node.metadata.deletion_timestamp.is_some() {
        if has {
            ctx.synced().await;
            crate::revival::settle(&node, &ctx).await?;
            set_finalizer(&ctx, &api, &name, false).await?;
        }
        return Ok(Action::await_change());
    }
    if !has {
        set_finalizer(&ctx, &api, &name, true).await?;
    }
    reconcile(node, ctx).await
}

/// Adds (`on`) or drops the controller's finalizer with server-side apply.
async fn set_finalizer(
    ctx: &Context,
    api: &Api<Node>,
    name: &str,
    on: bool,
) -> Result<(), kube::Error> {
    let finalizers: &[&str] = if on { &[FINALIZER] } else { &[] };
    let body = serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Node",
        "metadata": {"name": name, "finalizers": finalizers},
    });
    let params = kube::api::PatchParams::apply(FINALIZER_MANAGER).force();
    match api
        .patch(name, &params, &kube::api::Patch::Apply(&body))
        .await
    {
        Ok(n) => {
            written(ctx, &n);
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes the answer to one of this controller's writes of a Node into the index at once (the
/// watch brings the same version later, which then wakes nothing), and wakes whom it concerns.
fn written(ctx: &Context, n: &Node) {
    let (change, _) = ctx.index().upsert_node(n);
    let mut wake = crate::feeds::Wake::default();
    wake.node_change(ctx, n, change);
    wake.send(&ctx.queues);
}

/// Reconciles one Node.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let now = Timestamp::now();
    let name = node.name_any();
    let lease = ctx.lease_of(&name);
    let live = snapshot::liveness(lease.as_deref(), now);
    let ready = match (&live, identity_consistent(&node)) {
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
            format!("no Lease univrs-system/{}", lease_name(&name)),
        ),
    };
    let generation = node.metadata.generation;
    let current = node.status.clone().unwrap_or_default();
    let was_ready = univrs_api::conditions::is_true(&current.conditions, CONDITION_READY);
    let now_ready = ready.status == univrs_api::conditions::TRUE;

    // What the other Ready nodes' agents report about this one.
    let all = ctx.nodes.state();
    let others: Vec<&univrs_api::resources::node::NodeStatus> = all
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(name.as_str()))
        .filter_map(|n| n.status.as_ref())
        .filter(|s| univrs_api::conditions::is_true(&s.conditions, CONDITION_READY))
        .collect();
    let peer_view =
        crate::peers::view_of(&name, others.iter().filter_map(|s| s.observations.as_ref()));
    let invalid_gossip = peer_view.as_ref().is_some_and(|v| {
        crate::peers::new_invalid_gossip(current.peer_view.as_ref(), v, others.len())
    });

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
    let contributions: Vec<f64> = ctx
        .vouches
        .state()
        .iter()
        .filter_map(|v| v.status.as_ref())
        .filter(|s| s.verified && s.subject_node.as_deref() == Some(name.as_str()))
        .map(|s| s.effective_weight)
        .collect();
    let decayed = reputation::decay(
        reputation::Record {
            base: record.base,
            updated_ms: ms(record.updated_at.0),
        },
        ms(now),
        &cfg,
    );
    let rep = round(
        reputation::effective(decayed.base, reputation::vouch_boost(&contributions, &cfg)),
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
    let silent_ms = match live {
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
    let (used, count) = ctx.index().observed_on(&name);
    let allocated = serde_json::json!({
        "cpu": Quantity::from_millicores(used.cpu_millis),
        "memory": Quantity::from_bytes(used.memory_bytes),
        "gpu": used.gpus,
    });
    let role = crate::nexus::role_of(&ctx, &name).or(current.nexus_role);
    let account = Account::node(&name);
    let balance = snapshot::ledger_of(&ctx.credit_lines.state(), Some(&account))
        .balance(&account)
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
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
    // What is allocated is a report (placement reads the index): a change of it alone waits
    // until it has settled, so a burst of placements on a node is one write, not one each.
    let mut settle_in = None;
    if changed || !allocation_changed {
        ctx.allocation_pending().remove(&name);
    } else {
        let since = *ctx
            .allocation_pending()
            .entry(name.clone())
            .or_insert_with(std::time::Instant::now);
        match ALLOCATION_SETTLE.checked_sub(since.elapsed()) {
            Some(left) if !left.is_zero() => settle_in = Some(left),
            _ => {
                ctx.allocation_pending().remove(&name);
                changed = true;
            }
        }
    }
    if changed {
        let mut status = serde_json::json!({
            "observedGeneration": generation,
            "allocated": allocated,
            "instances": count,
            "reputation": rep,
            "serviceRecord": record,
            "creditBalance": balance,
            "septal": gate,
            "conditions": conditions,
        });
        if let Some(role) = role {
            status["nexusRole"] = serde_json::to_value(role).unwrap_or_default();
        }
        if let Some(view) = &peer_view {
            status["peerView"] = serde_json::to_value(view).unwrap_or_default();
        }
        let n = apply_status(&Api::<Node>::all(ctx.client.clone()), &name, None, status).await?;
        written(&ctx, &n);
        if invalid_gossip && let Some(view) = &peer_view {
            let new = view.invalid_messages
                - current.peer_view.as_ref().map_or(0, |v| v.invalid_messages);
            crate::workload::publish(
                &ctx,
                &node.object_ref(&()),
                EventType::Warning,
                "InvalidGossip",
                format!(
                    "{} of {} peers dropped {new} more invalid gossip message(s) from this node (bad signature or impossible claim); its service record counts a failure",
                    view.reporters_of_invalid, view.reporters
                ),
            )
            .await;
        }
        let was_isolated = current
            .septal
            .as_ref()
            .is_some_and(|s| s.state == SeptalState::Isolated);
        if (gate.state == SeptalState::Isolated) != was_isolated {
            let (type_, reason, note) = if was_isolated {
                (
                    EventType::Normal,
                    "SeptalRecovering",
                    "the septal gate starts letting traffic through again".to_string(),
                )
            } else {
                (
                    EventType::Warning,
                    "SeptalIsolated",
                    format!(
                        "the septal gate isolates this node ({} failures, health {:.2})",
                        current.septal.as_ref().map_or(0, |s| s.failures) + 1,
                        gate.health_score
                    ),
                )
            };
            crate::workload::publish(&ctx, &node.object_ref(&()), type_, reason, note).await;
        }
        if now_ready != was_ready {
            let (type_, reason) = if now_ready {
                (EventType::Normal, "NodeReady")
            } else {
                (EventType::Warning, "NodeNotReady")
            };
            crate::workload::publish(
                &ctx,
                &node.object_ref(&()),
                type_,
                reason,
                ready.message.clone(),
            )
            .await;
        }
    }
    // Look again just after the Lease would lapse, so Ready turns False on time, and when an
    // isolated gate may start recovering.
    let mut requeue = match live {
        Liveness::Fresh { until } => {
            until.duration_since(now).unsigned_abs() + Duration::from_millis(500)
        }
        _ => ctx.settings.resync,
    };
    if gate.state == SeptalState::Isolated {
        let cfg = septal::Config::default();
        let since = gate.since.as_ref().map_or(ms(now), |t| ms(t.0));
        let left = (since + cfg.recovery_timeout_ms).saturating_sub(ms(now));
        requeue = requeue.min(Duration::from_millis(left + 500));
    }
    if let Some(left) = settle_in {
        requeue = requeue.min(left);
    }
    Ok(Action::requeue(requeue.min(ctx.settings.resync)))
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

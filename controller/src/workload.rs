//! The Workload reconciler: places instances, moves them off lost or drained nodes, and reports
//! Scheduled, Available, Progressing and CreditExhausted.
//!
//! Instances are named `<workload>-<ordinal>` for ordinals `0..replicas`; scaling down removes
//! the highest ordinals, so scale and spec changes never duplicate or lose an instance. The
//! controller owns each instance's `node`, `placedAt` and `billed`, and `creditSpent`; the
//! node's agent owns the rest (phase, readiness, restarts, usage). Before placing, the usage
//! agents reported is paid for (`billing`, `credit::pay`); a workload whose owner's credit is
//! exhausted does not grow.

use crate::billing;
use crate::context::{Context, apply_status};
use crate::credit;
use crate::error::Error;
use crate::scheduler::{self, Request};
use crate::snapshot::{self, Liveness};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::conditions::{DesiredCondition, set_condition};
use univrs_api::resources::workload::{
    CONDITION_AVAILABLE, CONDITION_CREDIT_EXHAUSTED, CONDITION_PROGRESSING, CONDITION_SCHEDULED,
    Instance, InstanceUsage,
};
use univrs_api::{Account, Workload};

/// Annotation on a Node asking the controller to move its instances elsewhere (drain).
pub const DRAIN_ANNOTATION: &str = "univrs.io/drain";
/// Condition: some reported usage cannot be priced at its node's rates (the price would
/// overflow); it stays unbilled, and is billed once it can be priced.
pub const CONDITION_PRICING_FAILED: &str = "PricingFailed";
/// The label every instance of a workload carries, as the scale subresource's selector reports.
pub const WORKLOAD_LABEL: &str = "univrs.io/workload";

/// How soon a workload planned from a stale cache is planned again without an event. The
/// watch event of the newer version triggers the next plan anyway; retrying sooner only adds
/// refused writes to an API server whose watch is already lagging (measured at 5,000 nodes).
const STALE_RETRY: Duration = Duration::from_secs(5);

/// How soon a workload whose cached copy is older than the controller's own last write of it
/// is looked at again (the watch normally delivers that write within milliseconds).
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

/// How soon a workload that did not fit is tried again without any event.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);

/// What placement decided for one reconcile.
struct Plan {
    instances: Vec<Instance>,
    placed: Vec<(String, String)>,
    moved: Vec<(String, String, String)>,
    unschedulable: Option<String>,
    requeue: Option<Duration>,
}

/// Why an instance must leave its node, if it must.
fn must_move(
    node: Option<&Arc<univrs_api::Node>>,
    lease: Option<&Lease>,
    now: Timestamp,
    grace: Duration,
) -> Option<String> {
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
        .is_some_and(|s| s.state == univrs_api::resources::node::SeptalState::Isolated)
    {
        return Some("its node is isolated by the septal gate".into());
    }
    match snapshot::liveness(lease, now) {
        Liveness::Fresh { .. } => None,
        Liveness::Missing => Some("its node has no Lease".into()),
        Liveness::Lapsed { since } => {
            let down = now.duration_since(since).unsigned_abs();
            (down >= grace).then(|| format!("its node's Lease lapsed {}s ago", down.as_secs()))
        }
    }
}

/// Where every instance goes. `headroom` is the owner's credit towards each node (None when
/// unmetered); a `frozen` workload (credit exhausted) only replaces instances that must move.
/// The placement is decided under the node index and assumed there (see `index`) until the
/// caller confirms or releases it.
fn plan(
    wl: &Workload,
    ctx: &Context,
    headroom: Option<BTreeMap<String, i64>>,
    frozen: bool,
    now: Timestamp,
) -> Plan {
    let name = wl.name_any();
    let per_instance = snapshot::instance_request(&wl.spec);
    let host_ports = snapshot::host_ports(&wl.spec);
    let mut request = Request {
        resources: per_instance,
        host_ports: host_ports.clone(),
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

    let grace = ctx.settings.node_grace_period;
    let mut out = Plan {
        instances: Vec::new(),
        placed: Vec::new(),
        moved: Vec::new(),
        unschedulable: None,
        requeue: None,
    };
    // Keep what may stay, so spreading accounts for it.
    let desired: Vec<String> = (0..wl.spec.replicas.max(0))
        .map(|i| format!("{name}-{i}"))
        .collect();
    let mut keep: BTreeMap<String, Instance> = BTreeMap::new();
    for inst_name in &desired {
        let Some(inst) = current.get(inst_name).filter(|i| i.node.is_some()) else {
            continue;
        };
        let node = inst.node.clone().unwrap_or_default();
        let lease = ctx.lease_of(&node);
        let lease = lease.as_deref();
        match must_move(
            ctx.nodes.get(&ObjectRef::new(&node)).as_ref(),
            lease,
            now,
            grace,
        ) {
            Some(why) => out.moved.push((inst_name.clone(), node, why)),
            None => {
                if let Liveness::Lapsed { since } = snapshot::liveness(lease, now) {
                    // Not yet past the grace period: look again when it is.
                    let left = grace.saturating_sub(now.duration_since(since).unsigned_abs())
                        + Duration::from_secs(1);
                    out.requeue = Some(out.requeue.map_or(left, |r| r.min(left)));
                }
                keep.insert(inst_name.clone(), inst.clone());
            }
        }
    }
    // A frozen workload does not grow: it may only replace what had to move.
    let mut new_allowed = if frozen { out.moved.len() } else { usize::MAX };
    let to_place = desired.len() - keep.len();
    let key = ObjectRef::from_obj(wl);
    let started = std::time::Instant::now();
    let ((), freed) = ctx.index().assume(
        &key,
        per_instance,
        host_ports,
        desired.len(),
        now,
        |views, position| {
            let mut spread = Vec::new();
            if to_place > 0 {
                spread = vec![0u32; views.len()];
                for inst in keep.values() {
                    if let Some(&i) = inst.node.as_ref().and_then(|n| position.get(n)) {
                        spread[i] += 1;
                    }
                }
                // A node the owner has no line to gets 0.
                request.owner_headroom = headroom.map(|h| {
                    let mut by_position = vec![0; views.len()];
                    for (node, room) in h {
                        if let Some(&i) = position.get(&node) {
                            by_position[i] = room;
                        }
                    }
                    by_position
                });
            }
            for inst_name in desired {
                if let Some(inst) = keep.remove(&inst_name) {
                    out.instances.push(inst);
                    continue;
                }
                if new_allowed == 0 {
                    out.unschedulable.get_or_insert_with(|| {
                        "credit exhausted: no new instances until the owner has credit".into()
                    });
                    continue;
                }
                match scheduler::place(views, &spread, &request) {
                    Ok(i) => {
                        new_allowed -= 1;
                        spread[i] += 1;
                        let node = views[i].name.clone();
                        out.placed.push((inst_name.clone(), node.clone()));
                        out.instances.push(Instance {
                            name: inst_name,
                            node: Some(node),
                            placed_at: Some(Time(now)),
                            ..Default::default()
                        });
                    }
                    Err(e) => {
                        out.unschedulable.get_or_insert(e.message);
                    }
                }
            }
            let nodes = out
                .instances
                .iter()
                .filter_map(|i| i.node.clone())
                .collect();
            ((), nodes)
        },
    );
    if freed {
        wake(
            ctx,
            &crate::index::WorkloadChange {
                nodes: Vec::new(),
                freed: true,
            },
        );
    }
    if to_place > 0 {
        ctx.metrics.observe_plan(started.elapsed());
    }
    out
}

/// A placement assumed in the node index: released when dropped unless the write that
/// carries it was answered, so a failed, refused or abandoned (timed-out) reconcile never
/// leaves room held.
struct Assumed<'a> {
    ctx: &'a Context,
    key: ObjectRef<Workload>,
    settled: bool,
}

impl Assumed<'_> {
    /// The write was answered with `written`.
    fn confirm(mut self, written: &Workload) {
        self.settled = true;
        let change = self.ctx.index().confirm(written);
        wake(self.ctx, &change);
    }
}

impl Drop for Assumed<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let change = self.ctx.index().release(&self.key);
            wake(self.ctx, &change);
        }
    }
}

/// Wakes the nodes (and waiting workloads) a change of this controller's own making concerns:
/// the watch will bring the same version back, which then wakes nothing.
fn wake(ctx: &Context, change: &crate::index::WorkloadChange) {
    let mut w = crate::feeds::Wake::default();
    w.workload_change(ctx, change);
    w.send(&ctx.queues);
}

/// What billing did in one reconcile.
#[derive(Default)]
struct Billing {
    /// Whether the owner's namespace has credit lines at all.
    metered: bool,
    /// The new billed mark per instance.
    marks: BTreeMap<String, InstanceUsage>,
    /// Milli-credits spent so far, after this round.
    spent: i64,
    /// (instance, node, amount) paid in this round.
    paid: Vec<(String, String, i64)>,
    /// Why the workload may not grow: (reason, message).
    exhausted: Option<(&'static str, String)>,
    /// Usage that could not be priced (it stays unbilled, its mark where it was).
    unpriced: Vec<String>,
}

/// Pays for the usage agents reported beyond each instance's billed mark (see `billing`).
/// A refused payment leaves its mark where it was, so it is retried once credit is there.
async fn bill(wl: &Workload, ctx: &Context, metered: bool) -> Result<Billing, Error> {
    let ns = wl.namespace().unwrap_or_default();
    let owner = Account::namespace(&ns);
    let uid = wl.uid().unwrap_or_default();
    let status = wl.status.clone().unwrap_or_default();
    let mut out = Billing {
        metered,
        spent: status.credit_spent.unwrap_or(0),
        ..Default::default()
    };
    for inst in &status.instances {
        let Some(node) = inst
            .node
            .as_ref()
            .and_then(|n| ctx.nodes.get(&ObjectRef::new(n)))
        else {
            continue;
        };
        let rates = node
            .spec
            .pricing
            .clone()
            .unwrap_or_else(snapshot::default_pricing);
        // The market the scheduler quoted in (`quote`), as it stands now.
        let market = ctx.index().market_of(&node);
        let charge = match billing::charge(&uid, inst, &rates, &market) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(instance = %inst.name, error = %e, "usage cannot be priced");
                out.unpriced
                    .push(format!("{}'s usage on {}: {e}", inst.name, node.name_any()));
                continue;
            }
        };
        // Unmetered namespaces run as contributions: the mark moves, nothing is paid.
        if !metered || charge.amount == 0 {
            out.marks.insert(inst.name.clone(), charge.to);
            continue;
        }
        if out.exhausted.is_some() {
            continue;
        }
        match credit::pay(ctx, &owner, &charge).await {
            Ok((mark, amount)) => {
                out.marks.insert(inst.name.clone(), mark);
                out.spent = out.spent.saturating_add(amount);
                out.paid
                    .push((inst.name.clone(), charge.node.clone(), amount));
            }
            Err(credit::PayError::Exhausted(why)) => {
                out.exhausted = Some(("CreditLimitReached", why));
            }
            Err(credit::PayError::Kube(e)) => return Err(e.into()),
        }
    }
    let budget = wl.spec.credit.as_ref().and_then(|c| c.budget);
    if let Some(b) = budget.filter(|b| out.spent >= *b)
        && out.exhausted.is_none()
    {
        out.exhausted = Some((
            "BudgetExhausted",
            format!("spent {} of its budget of {b} milli-credits", out.spent),
        ));
    }
    Ok(out)
}

/// The instance fields the controller owns, as it applies them.
fn owned_fields(i: &Instance) -> serde_json::Value {
    let mut v = serde_json::json!({"name": i.name, "node": i.node, "placedAt": i.placed_at});
    if let Some(b) = &i.billed {
        v["billed"] = serde_json::to_value(b).unwrap_or_default();
    }
    v
}

/// The controller's part of the status, as applied with server-side apply.
fn status_patch(wl: &Workload, plan: &Plan, bills: &Billing, now: Timestamp) -> serde_json::Value {
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
    let scheduled = match &plan.unschedulable {
        None => DesiredCondition::new(
            CONDITION_SCHEDULED,
            true,
            "AllPlaced",
            format!("{placed}/{desired} instances placed"),
        ),
        Some(msg) => {
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
    status
}

/// Whether applying `s` (the status part) would change anything the controller owns.
fn unchanged(wl: &Workload, s: &serde_json::Value) -> bool {
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
}

/// Reconciles one Workload.
pub async fn reconcile(wl: Arc<Workload>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let started = std::time::Instant::now();
    let key = ObjectRef::from_obj(wl.as_ref());
    if ctx
        .index()
        .is_newer_than(&key, wl.metadata.resource_version.as_deref())
    {
        // The cache has not caught up with this controller's own last write: a plan made
        // from it would only be refused (409). The watch is a moment behind.
        return Ok(Action::requeue(CACHE_CATCH_UP));
    }
    let now = Timestamp::now();
    let ns = wl.namespace().ok_or(Error::MissingNamespace)?;
    let owner = Account::namespace(&ns);
    let headroom = snapshot::owner_headroom(&ctx.credit_lines.state(), &owner);
    let bills = bill(&wl, &ctx, headroom.is_some()).await?;
    let plan = plan(&wl, &ctx, headroom, bills.exhausted.is_some(), now);
    let assumed = Assumed {
        ctx: &ctx,
        key,
        settled: false,
    };
    let status = status_patch(&wl, &plan, &bills, now);
    if unchanged(&wl, &status) {
        drop(assumed);
    } else {
        let api: Api<Workload> = Api::namespaced(ctx.client.clone(), &ns);
        // Conditional on the version planned from: a plan made from a stale cache must not
        // overwrite a newer placement (it would move an instance for nothing).
        match apply_status(&api, &wl.name_any(), wl.resource_version(), status).await {
            Ok(written) => assumed.confirm(&written),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(STALE_RETRY));
            }
            Err(e) => return Err(e.into()),
        }
        ctx.metrics.observe_scheduling(
            started.elapsed(),
            plan.placed.len(),
            plan.unschedulable.is_some(),
        );
        let reference = wl.object_ref(&());
        for (inst, node, why) in &plan.moved {
            publish(
                &ctx,
                &reference,
                EventType::Normal,
                "Rescheduling",
                format!("moving {inst} off {node}: {why}"),
            )
            .await;
        }
        for (inst, node) in &plan.placed {
            publish(
                &ctx,
                &reference,
                EventType::Normal,
                "Scheduled",
                format!("placed {inst} on {node}"),
            )
            .await;
        }
        for (inst, node, amount) in &bills.paid {
            publish(
                &ctx,
                &reference,
                EventType::Normal,
                "Paid",
                format!("paid {node} {amount} milli-credits for {inst}'s usage"),
            )
            .await;
        }
        let was_exhausted = wl.status.as_ref().is_some_and(|s| {
            univrs_api::conditions::is_true(&s.conditions, CONDITION_CREDIT_EXHAUSTED)
        });
        if let (Some((_, why)), false) = (&bills.exhausted, was_exhausted) {
            publish(
                &ctx,
                &reference,
                EventType::Warning,
                "CreditExhausted",
                format!("{why}; the workload stops growing"),
            )
            .await;
        }
        let was_unpriced = wl.status.as_ref().is_some_and(|s| {
            univrs_api::conditions::is_true(&s.conditions, CONDITION_PRICING_FAILED)
        });
        if !bills.unpriced.is_empty() && !was_unpriced {
            publish(
                &ctx,
                &reference,
                EventType::Warning,
                "PricingFailed",
                format!("{}: left unbilled", bills.unpriced.join("; ")),
            )
            .await;
        }
        if let Some(msg) = &plan.unschedulable {
            publish(
                &ctx,
                &reference,
                EventType::Warning,
                "FailedScheduling",
                msg.clone(),
            )
            .await;
        }
    }
    // Cluster events (a node appearing, freeing up, turning Ready) requeue a waiting workload;
    // the 30 s retry is only the safety net for changes no watch sees (credit, for instance).
    let retry = plan
        .unschedulable
        .as_ref()
        .map(|_| UNSCHEDULABLE_RETRY)
        .into_iter()
        .chain(plan.requeue)
        .min();
    Ok(Action::requeue(retry.unwrap_or(ctx.settings.resync)))
}

/// Publishes an Event, logging (not failing) when the API refuses it.
pub async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

//! The Node reconciler: keeps the controller's part of each Node's status (planned by
//! `core::plan::node`, which says what each field means) and settles a deleted Node's credit
//! (`revival`) before its finalizer goes.
//!
//! Each reconcile reads (the node's Lease, the other Ready nodes' reports, the vouches for it,
//! what the index has placed there, the latest election, its credit lines), plans, writes the
//! status when something other than a timestamp changed, and announces what the plan says.

use crate::core::peers;
use crate::core::plan::node::{Observed, Placements, plan, start_grace};
use crate::core::plan::revival::DEPARTED;
use crate::core::plan::vouch::standing;
use crate::core::snapshot;
use crate::error::Error;
use crate::reconcile::{nexus, revival};
use crate::state::context::{Context, FIELD_MANAGER};
use crate::state::events;
use crate::state::wake::Wake;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use univrs_api::resources::node::{CONDITION_READY, CREDIT_SETTLEMENT_FINALIZER, NodeStatus};
use univrs_api::{Account, Node};
use univrs_io::apply::Apply;

/// The field manager that owns the finalizer entry.
const FINALIZER_MANAGER: &str = "univrs-controller-finalizer";

/// How soon a node whose cached copy is older than the controller's own last write of it is
/// looked at again (the watch normally delivers that write within milliseconds).
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

/// How long a change of only what is allocated on a node waits before it is written, so the
/// placements of a burst are reported together.
const ALLOCATION_SETTLE: Duration = Duration::from_secs(5);

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
    let has = node
        .finalizers()
        .iter()
        .any(|f| f == CREDIT_SETTLEMENT_FINALIZER);
    if node.metadata.deletion_timestamp.is_some() {
        if has {
            ctx.synced().await;
            revival::settle(&node, &ctx, DEPARTED).await?;
            set_finalizer(&ctx, &api, &name, false).await?;
        }
        return Ok(Action::await_change());
    }
    if !has {
        set_finalizer(&ctx, &api, &name, true).await?;
    }
    ctx.synced().await;
    let due = revival::settle_if_lost(&node, &ctx, Timestamp::now()).await?;
    reconcile(node, ctx, due).await
}

/// Adds (`on`) or drops the controller's finalizer with server-side apply.
async fn set_finalizer(
    ctx: &Context,
    api: &Api<Node>,
    name: &str,
    on: bool,
) -> Result<(), kube::Error> {
    let finalizers: &[&str] = if on {
        &[CREDIT_SETTLEMENT_FINALIZER]
    } else {
        &[]
    };
    match Apply::<Node>::new(name)
        .meta("finalizers", finalizers)
        .apply(api, FINALIZER_MANAGER)
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
    let mut wake = Wake::default();
    wake.node_change(ctx, n, change);
    wake.send(ctx);
}

/// Reconciles one Node: read, plan, write, announce; looks again within `due` at the latest
/// (when a lost node's settlement falls due).
pub async fn reconcile(
    node: Arc<Node>,
    ctx: Arc<Context>,
    due: Option<Duration>,
) -> Result<Action, Error> {
    ctx.synced().await;
    let now = Timestamp::now();
    let name = node.name_any();

    // Read.
    let lease = ctx.lease_of(&name);
    // Only the nodes whose agents report on this one (the index knows which): reading every
    // Node here made a reconcile cost as much as the cluster is large.
    let (reporter_names, ready_others) = {
        let index = ctx.index();
        (index.reporters_on(&name), index.ready_others(&name))
    };
    let reporters: Vec<Arc<Node>> = reporter_names
        .iter()
        .filter_map(|r| ctx.nodes.get(&ObjectRef::new(r)))
        .collect();
    let anchors = &ctx.settings.trust_anchors;
    let others: Vec<(&NodeStatus, f64)> = reporters
        .iter()
        .filter_map(|n| Some((n.status.as_ref()?, standing(n, anchors))))
        .filter(|(s, _)| univrs_api::conditions::is_true(&s.conditions, CONDITION_READY))
        .map(|(s, standing)| (s, peers::witness_weight(standing)))
        .collect();
    // One voucher's word counts once (its strongest vouch), and nobody vouches for itself.
    let all_vouches = ctx.vouches.state();
    let vouches = univrs_api::enr::reputation::one_per_voucher(
        all_vouches
            .iter()
            .filter_map(|v| Some((v.spec.voucher.as_str(), v.status.as_ref()?)))
            .filter(|(_, s)| {
                s.verified
                    && s.subject_node.as_deref() == Some(name.as_str())
                    && s.voucher_node.as_deref() != Some(name.as_str())
            })
            .map(|(voucher, s)| (voucher, s.effective_weight)),
    );
    let (placed, holders) = {
        let index = ctx.index();
        (index.observed_on(&name), index.holders_of(&name))
    };
    let grace = start_grace(ctx.settings.service_period);
    let mut placements = Placements::default();
    for w in holders.iter().filter_map(|key| ctx.workloads.get(key)) {
        placements.add(&w, &name, now, grace);
    }
    let account = Account::node(&name);
    let ledger = snapshot::ledger_of(&ctx.credit_lines.state(), Some(&account));
    let balance = ledger
        .balance(&account)
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;

    // Plan.
    let plan = plan(
        &Observed {
            node: &node,
            live: snapshot::liveness(lease.as_deref(), now, ctx.settings.node_lease_duration),
            others: &others,
            ready_others,
            anchor: anchors.contains(&node.spec.did),
            placements,
            credit_use: snapshot::credit_use(&ledger, &account),
            clock_skew_s: snapshot::clock_skew_s(lease.as_deref()),
            vouches: &vouches,
            placed,
            elected: nexus::role_of(&ctx, &name),
            balance,
            now,
        },
        ctx.settings.resync,
        ctx.settings.service_period,
    );

    // What is allocated is a report (placement reads the index): a change of it alone waits
    // until it has settled, so a burst of placements on a node is one write, not one each.
    let mut changed = plan.changed;
    let mut settle_in = None;
    if changed || !plan.allocation_changed {
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

    // Write, then announce.
    if changed {
        let api = Api::<Node>::all(ctx.client.clone());
        let n = Apply::<Node>::new(&name)
            .status(plan.status())
            .apply_status(&api, FIELD_MANAGER)
            .await?;
        written(&ctx, &n);
        events::announce(&ctx, &node.object_ref(&()), &plan.notices).await;
    }
    let requeue = settle_in.map_or(plan.requeue, |left| plan.requeue.min(left));
    let requeue = due.map_or(requeue, |d| requeue.min(d + Duration::from_millis(500)));
    Ok(Action::requeue(requeue))
}

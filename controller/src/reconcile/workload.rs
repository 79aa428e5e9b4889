//! The Workload reconciler: places instances, moves them off lost or drained nodes, pays for
//! the usage agents reported, and reports Scheduled, Available, Progressing and
//! CreditExhausted (all planned by `core::plan::workload`, which says what the controller owns
//! of the status).
//!
//! Before placing, the usage agents reported is paid for (`core::billing`, `credit::pay`). The
//! placement is decided under the node index and assumed there (see `state::index`) until the
//! write that carries it is answered, so concurrent plans never give the same room twice.

use crate::core::auction;
use crate::core::billing;
use crate::core::notice::Notice;
use crate::core::plan::workload::{self, AuctionPlan, Billing, Placement, Plan};
use crate::core::pull_credentials::{self, PullSecrets};
use crate::core::snapshot;
use crate::error::Error;
use crate::reconcile::credit;
use crate::state::context::{Context, FIELD_MANAGER};
use crate::state::events;
use crate::state::index::WorkloadChange;
use crate::state::wake::Wake;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::registry_auth::DockerConfig;
use univrs_api::resources::workload::{Auction, SealedCredentials};
use univrs_api::{Account, Workload};
use univrs_io::apply::Apply;

/// How soon a workload planned from a stale cache is planned again without an event. The
/// watch event of the newer version triggers the next plan anyway; retrying sooner only adds
/// refused writes to an API server whose watch is already lagging (measured at 5,000 nodes).
const STALE_RETRY: Duration = Duration::from_secs(5);

/// How soon a workload whose cached copy is older than the controller's own last write of it
/// is looked at again (the watch normally delivers that write within milliseconds).
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

/// How long after an auction's close it is awarded: bids written in its last moments have
/// time to reach the cache.
const AUCTION_CLOSE_SLACK: Duration = Duration::from_millis(250);

/// Counts what the reconcile did with auctions (see `metrics`).
fn count_auction(ctx: &Context, plan: &Plan, refused: usize) {
    if matches!(plan.auction, Some(AuctionPlan::Open { .. })) {
        ctx.metrics.auction("opened");
    }
    for _ in &plan.awarded {
        ctx.metrics.auction("awarded");
    }
    for _ in &plan.no_bid {
        ctx.metrics.auction("no_valid_bid");
    }
    ctx.metrics.bids_refused(refused);
}

/// Where every instance goes (see `core::plan::workload`). The placement is decided under the
/// node index and assumed there (see `state::index`) until the caller confirms or releases it.
fn plan(
    wl: &Workload,
    ctx: &Context,
    headroom: Option<BTreeMap<String, i64>>,
    frozen: bool,
    auction: auction::State,
    now: Timestamp,
) -> Plan {
    let mut placement = Placement::new(
        wl,
        headroom,
        frozen,
        now,
        ctx.settings.node_health(),
        |node| (ctx.nodes.get(&ObjectRef::new(node)), ctx.lease_of(node)),
    )
    .with_auction(auction);
    let key = ObjectRef::from_obj(wl);
    let started = std::time::Instant::now();
    let ((), freed) = ctx.index().assume(
        &key,
        placement.per_instance(),
        placement.host_ports(),
        placement.replicas(),
        now,
        |views, position| ((), placement.decide(views, position)),
    );
    if freed {
        wake(
            ctx,
            &WorkloadChange {
                nodes: Vec::new(),
                freed: true,
            },
        );
    }
    if placement.to_place() > 0 {
        ctx.metrics.observe_plan(started.elapsed());
    }
    placement.finish()
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
fn wake(ctx: &Context, change: &WorkloadChange) {
    let mut w = Wake::default();
    w.workload_change(change);
    w.send(ctx);
}

/// Pays for the usage agents reported beyond each instance's billed mark (see `core::billing`):
/// from the namespace's account, else from the nodes whose earnings pay for it (`payers`), and
/// nothing for an instance on one of those. A refused payment leaves its mark where it was, so
/// it is retried once credit is there.
async fn bill(
    wl: &Workload,
    ctx: &Context,
    metered: bool,
    payers: &[String],
) -> Result<Billing, Error> {
    let ns = wl.namespace().unwrap_or_default();
    let accounts: Vec<Account> = std::iter::once(Account::namespace(&ns))
        .chain(payers.iter().map(Account::node))
        .collect();
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
        // The market the scheduler quoted in (`core::quote`), as it stands now.
        let market = ctx.index().market_of(&node);
        // A node's report counts at most up to what the instance could use since placed.
        let ceiling = billing::Ceiling::of(&wl.spec, &node.spec.capacity);
        // An auction's winner is paid its clearing price (see `core::auction`).
        let clearing = inst.awarded_price_per_hour.map(|price| billing::Clearing {
            price,
            reserve: univrs_api::bid::reserve(&wl.spec, &rates).unwrap_or(0),
        });
        let tariff = (&rates, &market, clearing);
        let charge = match billing::charge(&uid, inst, tariff, &ceiling, &Timestamp::now()) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(instance = %inst.name, error = %e, "usage cannot be priced");
                out.unpriced
                    .push(format!("{}'s usage on {}: {e}", inst.name, node.name_any()));
                continue;
            }
        };
        if let Some(why) = &charge.clamped {
            tracing::warn!(instance = %inst.name, node = %charge.node, "usage report clamped: {why}");
            out.clamped.push(why.clone());
        }
        // Unmetered namespaces run as contributions, and an organization's Workloads on its own
        // paying node cost it nothing: the mark moves, nothing is paid.
        if !metered || charge.amount == 0 || payers.contains(&charge.node) {
            out.marks.insert(inst.name.clone(), charge.to);
            continue;
        }
        if out.exhausted.is_some() {
            continue;
        }
        match credit::pay(ctx, &accounts, &charge).await {
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

/// Reads the Secrets `spec.imagePullSecrets` names (the controller may `get` Secrets, never
/// list them) and seals the logins the Workload's images need to the nodes of `plan` (see
/// `core::pull_credentials`). A Secret that is missing, unreadable or of the wrong type is
/// reported and skipped, as the kubelet does: the pull then goes on without it.
async fn pull_credentials(
    wl: &Workload,
    ctx: &Context,
    ns: &str,
    plan: &Plan,
) -> Result<(Vec<SealedCredentials>, Vec<String>), Error> {
    if wl.spec.image_pull_secrets.is_empty() || plan.instances.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut secrets = PullSecrets::default();
    for r in &wl.spec.image_pull_secrets {
        let name = &r.name;
        match api.get_opt(name).await {
            Ok(Some(secret)) => {
                let version = format!(
                    "{name}={}/{}",
                    secret.uid().unwrap_or_default(),
                    secret.resource_version().unwrap_or_default()
                );
                let data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                match DockerConfig::from_secret(secret.type_.as_deref(), &data) {
                    Ok(c) => secrets.config.merge(&c),
                    Err(e) => secrets
                        .problems
                        .push(format!("Secret {ns}/{name} holds no registry logins: {e}")),
                }
                secrets.versions.push(version);
            }
            Ok(None) => {
                secrets
                    .problems
                    .push(format!("Secret {ns}/{name} does not exist"));
                secrets.versions.push(format!("{name}=missing"));
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                secrets.problems.push(format!(
                    "the controller may not read Secret {ns}/{name}: {}",
                    e.message
                ));
                secrets.versions.push(format!("{name}=forbidden"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let peers: Vec<(String, String)> = plan
        .instances
        .iter()
        .filter_map(|i| {
            let n = i.node.as_ref()?;
            let node = ctx.nodes.get(&ObjectRef::new(n))?;
            Some((n.clone(), node.spec.peer_id.clone()))
        })
        .collect();
    let (entries, mut problems) = pull_credentials::entries(
        wl,
        &secrets,
        peers.iter().map(|(n, p)| (n.as_str(), p.as_str())),
        univrs_api::sealed::seal,
    );
    problems.splice(0..0, secrets.problems);
    Ok((entries, problems))
}

/// Reconciles one Workload: bill, plan, write, announce.
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
    let payers = ctx.index().payers_for(&ns);
    let headroom = snapshot::owner_headroom(&ctx.credit_lines.state(), &owner, &payers);
    let bills = bill(&wl, &ctx, headroom.is_some(), &payers).await?;
    let current_auction = wl.status.as_ref().and_then(|s| s.auction.as_ref());
    let (auction_state, refused) = auction::state(
        &univrs_api::bid::workload_name(&wl),
        current_auction,
        &ctx.auction_keys(),
        now,
        |n| ctx.nodes.get(&ObjectRef::new(n)),
    );
    if let auction::State::Closed(a, asks) = &auction_state {
        tracing::info!(auction = %a.id, instance = %a.instance, ?asks, refused = refused.len(), "auction closed");
    }
    let plan = plan(
        &wl,
        &ctx,
        headroom,
        bills.exhausted.is_some(),
        auction_state,
        now,
    );
    let auction = match &plan.auction {
        Some(AuctionPlan::Open { instance, nodes }) => {
            let (id, key) = ctx.auction_keys().open(std::time::Instant::now());
            let window = SignedDuration::try_from(ctx.settings.auction_window).unwrap_or_default();
            Some(Auction {
                id,
                instance: instance.clone(),
                nodes: nodes.clone(),
                closes_at: Time(auction::close_after(now, window)),
                seal_key: key.did(),
            })
        }
        Some(AuctionPlan::Wait) => current_auction.cloned(),
        None => None,
    };
    let assumed = Assumed {
        ctx: &ctx,
        key,
        settled: false,
    };
    let (pull, pull_problems) = pull_credentials(&wl, &ctx, &ns, &plan).await?;
    let exposed = (!wl.spec.expose.is_empty()).then(|| {
        let all = ctx.workloads.state();
        let holders = univrs_api::expose::holders(all.iter().map(|w| w.as_ref()));
        crate::core::exposed::condition(&wl, &holders, &ctx.nodes.state())
    });
    let status = workload::status_patch(
        &wl,
        &plan,
        &bills,
        &pull,
        exposed.flatten(),
        auction.as_ref(),
        now,
    );
    if workload::unchanged(&wl, &status) {
        drop(assumed);
    } else {
        let api: Api<Workload> = Api::namespaced(ctx.client.clone(), &ns);
        // Conditional on the version planned from: a plan made from a stale cache must not
        // overwrite a newer placement (it would move an instance for nothing).
        let write = Apply::<Workload>::new(&wl.name_any())
            .resource_version(wl.resource_version())
            .status(status);
        match write.apply_status(&api, FIELD_MANAGER).await {
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
        let mut notices = workload::notices(&wl, &plan, &bills);
        notices.extend(refused.iter().map(|r| {
            Notice::warning(
                "BidRefused",
                format!(
                    "{}'s bid in auction {} was refused: {}",
                    r.node,
                    current_auction.map_or("", |a| a.id.as_str()),
                    r.why
                ),
            )
        }));
        if !pull_problems.is_empty() {
            notices.push(Notice::warning(
                "FailedToRetrieveImagePullSecret",
                format!(
                    "{}; its images are pulled without those logins",
                    pull_problems.join("; ")
                ),
            ));
        }
        events::announce(&ctx, &wl.object_ref(&()), &notices).await;
        count_auction(&ctx, &plan, refused.len());
        // The auction this write ended is over: its key can go.
        if let Some(old) = current_auction.filter(|a| auction.as_ref().is_none_or(|n| n.id != a.id))
        {
            ctx.auction_keys().close(&old.id);
        }
    }
    let mut after = workload::requeue(&plan, ctx.settings.resync);
    if let Some(a) = &auction {
        // Look again as the auction closes.
        let left = a.closes_at.0.duration_since(Timestamp::now());
        let left = Duration::try_from(left).unwrap_or_default() + AUCTION_CLOSE_SLACK;
        after = after.min(left);
    }
    Ok(Action::requeue(after))
}

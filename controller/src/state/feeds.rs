//! One watch per kind feeds everything the reconcilers read: the reflector caches (with
//! `managedFields` and kubectl's last-applied annotation stripped before anything is stored),
//! the node index, and the controllers' queues, which get exactly the objects a change
//! concerns. Each object is watched once, however many controllers care about it.
//!
//! Every event updates the index first and the cache next, and wakes reconcilers last, so a
//! reconcile never finds its object missing from the cache, nor the index behind the cache.
//! During a (re)list the wake-ups are collected and sent once the list is complete, so a list
//! of thousands of nodes wakes each waiting workload once, not once per node.

use crate::state::context::Context;
use crate::state::wake::Wake;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use univrs_api::account::AccountKind;
use univrs_api::resources::node::{LEASE_NAMESPACE, node_of_lease};
use univrs_api::{CreditLine, Node, Vouch, Workload};

/// kubectl's copy of the last applied manifest: large, and never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconciler reads before an object is stored.
fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// What a feed does with each event of its kind.
trait Handler<K> {
    /// An object was added or changed (`listing`: as part of a (re)list).
    fn applied(&mut self, ctx: &Context, obj: &K, wake: &mut Wake);
    /// An object was deleted (or found missing by a relist).
    fn deleted(&mut self, ctx: &Context, obj: &K, wake: &mut Wake);
}

/// Drives one watch: strip, index, cache, wake.
async fn feed<K, H>(api: Api<K>, mut writer: Writer<K>, ctx: Arc<Context>, mut h: H)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    H: Handler<K>,
{
    let mut events = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(strip::<K>)
    );
    let mut wake = Wake::default();
    // While (re)listing: the objects listed so far.
    let mut listing: Option<HashSet<ObjectRef<K>>> = None;
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                continue;
            }
        };
        match &ev {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                h.applied(&ctx, obj, &mut wake);
                if let Some(l) = listing.as_mut() {
                    l.insert(ObjectRef::from_obj(obj));
                }
            }
            watcher::Event::InitDone => {
                // What the cache holds but the list no longer has was deleted meanwhile.
                let listed = listing.take().unwrap_or_default();
                for gone in writer
                    .as_reader()
                    .state()
                    .iter()
                    .filter(|o| !listed.contains(&ObjectRef::from_obj(o.as_ref())))
                {
                    h.deleted(&ctx, gone, &mut wake);
                }
            }
            watcher::Event::Apply(obj) => h.applied(&ctx, obj, &mut wake),
            watcher::Event::Delete(obj) => h.deleted(&ctx, obj, &mut wake),
        }
        writer.apply_watcher_event(&ev);
        if listing.is_none() {
            wake.send(&ctx);
        }
    }
}

struct Nodes;

impl Nodes {
    /// The nodes `name`'s agent reports on, as the index has it: their peer views include its
    /// reports.
    fn reported(ctx: &Context, name: &str) -> Vec<ObjectRef<Node>> {
        let subjects = ctx.index().reported_by(name);
        subjects.iter().map(|s| ObjectRef::new(s)).collect()
    }
}

impl Handler<Node> for Nodes {
    fn applied(&mut self, ctx: &Context, n: &Node, wake: &mut Wake) {
        let name = n.name_any();
        // Whom it reported on before as well: a node it stopped reporting on must hear of it.
        let before = Self::reported(ctx, &name);
        let (change, news) = ctx.index().upsert_node(n);
        // The version the controller itself wrote wakes nothing new.
        if news {
            wake.nodes.insert(ObjectRef::from_obj(n));
            wake.nodes.extend(before);
            wake.nodes.extend(Self::reported(ctx, &name));
        }
        wake.node_change(ctx, n, change);
    }

    fn deleted(&mut self, ctx: &Context, n: &Node, wake: &mut Wake) {
        wake.nodes.extend(Self::reported(ctx, &n.name_any()));
        let change = ctx.index().remove_node(n);
        wake.node_change(ctx, n, change);
    }
}

struct Workloads;

impl Workloads {
    /// The other Workloads exposing a port `w` exposes or exposed (the cache still holds its
    /// previous version): who holds a port may have changed for them (their `Exposed`
    /// condition: a port freed by a deleted holder goes to the next at once).
    fn port_sharers(ctx: &Context, w: &Workload, gone: bool, wake: &mut Wake) {
        let me = ObjectRef::from_obj(w);
        let before = ctx.workloads.get(&me);
        let claim = |w: &Workload| {
            (
                w.spec.expose.clone(),
                w.metadata.deletion_timestamp.is_some(),
            )
        };
        // A status write of a holder changes no claim: nobody else need look again.
        if !gone && before.as_deref().is_some_and(|b| claim(b) == claim(w)) {
            return;
        }
        let ports: HashSet<i32> = w
            .spec
            .expose
            .iter()
            .chain(before.iter().flat_map(|b| b.spec.expose.iter()))
            .map(|p| p.port)
            .collect();
        if ports.is_empty() {
            return;
        }
        wake.workloads.extend(
            ctx.workloads
                .state()
                .iter()
                .filter(|o| o.spec.expose.iter().any(|p| ports.contains(&p.port)))
                .map(|o| ObjectRef::from_obj(o.as_ref()))
                .filter(|o| *o != me),
        );
    }
}

impl Handler<Workload> for Workloads {
    fn applied(&mut self, ctx: &Context, w: &Workload, wake: &mut Wake) {
        let (change, news) = ctx.index().observe_workload(w);
        // The version the controller itself wrote (and planned) wakes nothing new.
        if news {
            wake.workloads.insert(ObjectRef::from_obj(w));
            Self::port_sharers(ctx, w, false, wake);
        }
        wake.workload_change(&change);
    }

    fn deleted(&mut self, ctx: &Context, w: &Workload, wake: &mut Wake) {
        let change = ctx.index().forget_workload(w);
        Self::port_sharers(ctx, w, true, wake);
        wake.workload_change(&change);
    }
}

struct Leases;

impl Handler<Lease> for Leases {
    fn applied(&mut self, ctx: &Context, l: &Lease, wake: &mut Wake) {
        if let Some(node) = node_of_lease(&l.name_any())
            && ctx.index().set_lease(
                node,
                Some(l),
                Timestamp::now(),
                ctx.settings.node_lease_duration,
            )
        {
            wake.nodes.insert(ObjectRef::new(node));
        }
    }

    fn deleted(&mut self, ctx: &Context, l: &Lease, wake: &mut Wake) {
        if let Some(node) = node_of_lease(&l.name_any()) {
            ctx.index().set_lease(
                node,
                None,
                Timestamp::now(),
                ctx.settings.node_lease_duration,
            );
            wake.nodes.insert(ObjectRef::new(node));
        }
    }
}

struct CreditLines;

impl CreditLines {
    /// A line of a namespace may unblock (or exhaust) its workloads; balances show in each
    /// node's status.
    fn parties(ctx: &Context, cl: &CreditLine, wake: &mut Wake) {
        let accounts = [&cl.spec.creditor, &cl.spec.debtor];
        let namespaces: Vec<&str> = accounts
            .iter()
            .filter(|a| a.kind == AccountKind::Namespace)
            .map(|a| a.name.as_str())
            .collect();
        if !namespaces.is_empty() {
            wake.workloads.extend(
                ctx.workloads
                    .state()
                    .iter()
                    .filter(|w| {
                        w.metadata
                            .namespace
                            .as_deref()
                            .is_some_and(|ns| namespaces.contains(&ns))
                    })
                    .map(|w| ObjectRef::from_obj(w.as_ref())),
            );
        }
        wake.nodes.extend(
            accounts
                .iter()
                .filter(|a| a.kind == AccountKind::Node)
                .map(|a| ObjectRef::new(&a.name)),
        );
    }
}

impl Handler<CreditLine> for CreditLines {
    fn applied(&mut self, ctx: &Context, cl: &CreditLine, wake: &mut Wake) {
        wake.credit_lines.insert(ObjectRef::from_obj(cl));
        Self::parties(ctx, cl, wake);
    }

    fn deleted(&mut self, ctx: &Context, cl: &CreditLine, wake: &mut Wake) {
        Self::parties(ctx, cl, wake);
    }
}

struct Vouches;

impl Vouches {
    /// A vouch's verdict changes its subject's reputation.
    fn subject(v: &Vouch, wake: &mut Wake) {
        if let Some(n) = v.status.as_ref().and_then(|s| s.subject_node.as_deref()) {
            wake.nodes.insert(ObjectRef::new(n));
        }
    }
}

impl Handler<Vouch> for Vouches {
    fn applied(&mut self, _: &Context, v: &Vouch, wake: &mut Wake) {
        wake.vouches.insert(ObjectRef::from_obj(v));
        Self::subject(v, wake);
    }

    fn deleted(&mut self, _: &Context, v: &Vouch, wake: &mut Wake) {
        Self::subject(v, wake);
    }
}

/// The caches' writers, one per kind.
pub struct Writers {
    /// Nodes.
    pub nodes: Writer<Node>,
    /// Workloads.
    pub workloads: Writer<Workload>,
    /// Node Leases.
    pub leases: Writer<Lease>,
    /// Credit lines.
    pub credit_lines: Writer<CreditLine>,
    /// Vouches.
    pub vouches: Writer<Vouch>,
}

/// Runs every feed until one ends (they do not, short of the runtime stopping).
pub async fn run(client: kube::Client, w: Writers, ctx: Arc<Context>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    tokio::select! {
        _ = feed(Api::all(client.clone()), w.nodes, ctx.clone(), Nodes) => {}
        _ = feed(Api::all(client.clone()), w.workloads, ctx.clone(), Workloads) => {}
        _ = feed(leases, w.leases, ctx.clone(), Leases) => {}
        _ = feed(Api::all(client.clone()), w.credit_lines, ctx.clone(), CreditLines) => {}
        _ = feed(Api::all(client), w.vouches, ctx, Vouches) => {}
    }
}

//! Univrs controller: reconciles Workloads, Nodes, CreditLines and Vouches against any
//! conformant API server.
//!
//! `scheduler`, `snapshot` and `billing` are the pure core (no I/O); `workload`, `node`,
//! `credit` and `vouch` are the reconcilers, fed by reflector caches; `nexus` runs the periodic
//! election and feeds its result into the Node controller's queue; `leader` makes sure only one
//! controller writes. Writes are server-side apply with the field manager `univrs-controller`,
//! and only when something other than a timestamp changes.

pub mod billing;
pub mod context;
pub mod credit;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod nexus;
pub mod node;
pub mod revival;
pub mod scheduler;
pub mod snapshot;
pub mod vouch;
pub mod workload;

use context::{Context, LEASE_NAMESPACE, Settings, node_of_lease};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::account::AccountKind;
use univrs_api::{CreditLine, Node, Vouch, Workload};

/// The backoff key of an object: `Kind/namespace/name` (a Node and a CreditLine may share a name).
fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Backoff for an object that failed: 1 s doubling to 5 min.
fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &error::Error,
    ctx: Arc<Context>,
) -> Action {
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let n = failures.entry(key(obj.as_ref())).or_default();
    *n = n.saturating_add(1);
    let delay = Duration::from_secs(1u64 << (*n - 1).min(8)).min(Duration::from_secs(300));
    tracing::warn!(object = %key(obj.as_ref()), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The longest one reconcile may take.
const RECONCILE_DEADLINE: Duration = Duration::from_secs(60);

/// Runs one reconcile, counting its outcome and clearing the object's backoff on success.
async fn instrumented<K, F, Fut>(
    kind: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, error::Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, error::Error>>,
{
    let started = std::time::Instant::now();
    ctx.metrics.started(kind);
    // One hung request must not pin an object forever: give up, back off, try again.
    let r = tokio::time::timeout(RECONCILE_DEADLINE, reconcile(obj.clone(), ctx.clone()))
        .await
        .unwrap_or(Err(error::Error::Timeout(RECONCILE_DEADLINE)));
    tracing::debug!(object = %key(obj.as_ref()), ok = r.is_ok(), took = ?started.elapsed(), "reconciled");
    ctx.metrics.reconciled(
        kind,
        if r.is_ok() { "ok" } else { "error" },
        started.elapsed(),
    );
    if r.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(obj.as_ref()));
    }
    r
}

/// Runs the controllers until `shutdown` resolves. Call only while leading.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    metrics: Arc<metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let workloads: Api<Workload> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let lines: Api<CreditLine> = Api::all(client.clone());
    let vouches: Api<Vouch> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let cfg = watcher::Config::default;

    let (lease_store, lease_writer) = reflector::store();
    let lease_stream = reflector::reflector(lease_writer, watcher(leases.clone(), cfg()))
        .applied_objects()
        .for_each(|_| async {});

    let wc = Controller::new(workloads.clone(), cfg());
    let nc = Controller::new(nodes.clone(), cfg());
    let cc = Controller::new(lines.clone(), cfg());
    let vc = Controller::new(vouches.clone(), cfg());
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Context {
        ready: ready_rx,
        client: client.clone(),
        nodes: nc.store(),
        workloads: wc.store(),
        leases: lease_store,
        credit_lines: cc.store(),
        vouches: vc.store(),
        settings,
        recorder: Recorder::new(client.clone(), Context::reporter()),
        metrics,
        failures: Default::default(),
        election: Default::default(),
    });

    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stop = || {
        let mut rx = shutdown_tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    let ws = ctx.workloads.clone();
    let ws2 = ctx.workloads.clone();
    let seen: std::sync::Mutex<HashMap<String, NodeFacts>> = Default::default();
    let workload_ctl = wc
        .watches(nodes.clone(), cfg(), move |node: Node| {
            // The workloads on this node; and the workloads still waiting for a place, but only
            // when the node may have room they did not see before. Waking every waiting
            // workload on each placement's status write was a thundering herd at 5,000 nodes.
            let name = node.name_any();
            let facts = NodeFacts::of(&node);
            let previous = seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), facts.clone());
            let room = facts.may_make_room_since(previous.as_ref());
            ws.state()
                .into_iter()
                .filter(|w| on_node(w, &name) || (room && waiting(w)))
                .map(|w| ObjectRef::from_obj(w.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches(lines.clone(), cfg(), move |cl: CreditLine| {
            // A line of a namespace may unblock (or exhaust) its workloads.
            let namespaces: Vec<String> = [&cl.spec.creditor, &cl.spec.debtor]
                .into_iter()
                .filter(|a| a.kind == AccountKind::Namespace)
                .map(|a| a.name.clone())
                .collect();
            ws2.state()
                .into_iter()
                .filter(|w| w.namespace().is_some_and(|ns| namespaces.contains(&ns)))
                .map(|w| ObjectRef::from_obj(w.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop())
        .run(
            |w, ctx: Arc<Context>| instrumented("Workload", w, ctx, workload::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let (elected_tx, elected_rx) = futures::channel::mpsc::unbounded::<()>();
    let node_ctl = nc
        .watches(leases, cfg(), |lease: Lease| {
            node_of_lease(&lease.name_any()).map(ObjectRef::<Node>::new)
        })
        .watches(workloads, cfg(), |w: Workload| {
            w.status
                .map(|s| {
                    s.instances
                        .into_iter()
                        .filter_map(|i| i.node)
                        .map(|n| ObjectRef::<Node>::new(&n))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .watches(lines, cfg(), |cl: CreditLine| {
            // Balances show in each node's status.
            [cl.spec.creditor, cl.spec.debtor]
                .into_iter()
                .filter(|a| a.kind == AccountKind::Node)
                .map(|a| ObjectRef::<Node>::new(&a.name))
                .collect::<Vec<_>>()
        })
        .watches(vouches.clone(), cfg(), |v: Vouch| {
            // A vouch's verdict changes its subject's reputation.
            v.status
                .and_then(|s| s.subject_node)
                .map(|n| ObjectRef::<Node>::new(&n))
        })
        .reconcile_all_on(elected_rx)
        .graceful_shutdown_on(stop())
        .run(
            |n, ctx: Arc<Context>| instrumented("Node", n, ctx, node::reconcile_with_finalizer),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let vouch_store = ctx.vouches.clone();
    let vouch_ctl = vc
        .watches(nodes, cfg(), move |node: Node| {
            let did = node.spec.did;
            vouch_store
                .state()
                .into_iter()
                .filter(|v| v.spec.voucher == did || v.spec.subject == did)
                .map(|v| ObjectRef::from_obj(v.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop())
        .run(
            |v, ctx: Arc<Context>| instrumented("Vouch", v, ctx, vouch::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let credit_ctl = cc
        .graceful_shutdown_on(stop())
        .run(
            |c, ctx: Arc<Context>| instrumented("CreditLine", c, ctx, credit::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let elections = nexus::run_elections(ctx.clone(), elected_tx);
    let sync_ctx = ctx.clone();
    let synced = async move {
        sync_ctx.mark_synced_when_listed(ready_tx).await;
        std::future::pending::<()>().await
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(());
    });
    tokio::select! {
        _ = futures::future::join4(workload_ctl, node_ctl, vouch_ctl, credit_ctl) => {}
        _ = lease_stream => {}
        _ = elections => {}
        _ = synced => {}
    }
}

/// What about a node decides whether waiting workloads may now fit there.
#[derive(Clone, Debug, PartialEq)]
struct NodeFacts {
    generation: Option<i64>,
    ready: bool,
    isolated: bool,
    /// CPU millicores and memory bytes allocated there.
    allocated: Option<(u64, u64)>,
}

impl NodeFacts {
    fn of(n: &Node) -> Self {
        let s = n.status.as_ref();
        Self {
            generation: n.metadata.generation,
            ready: s.is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready")),
            isolated: s.is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Isolated")),
            allocated: s.and_then(|s| s.allocated.as_ref()).map(|a| {
                (
                    a.cpu.to_milli().unwrap_or(0),
                    a.memory.to_units().unwrap_or(0),
                )
            }),
        }
    }

    /// A new node, a spec change (uncordon, capacity, labels), turning Ready, leaving
    /// isolation or less allocated: anything else cannot make room.
    fn may_make_room_since(&self, before: Option<&NodeFacts>) -> bool {
        let Some(b) = before else { return true };
        let less_allocated = match (b.allocated, self.allocated) {
            (Some((c0, m0)), Some((c1, m1))) => c1 < c0 || m1 < m0,
            (Some(_), None) => true,
            _ => false,
        };
        self.generation != b.generation
            || (self.ready && !b.ready)
            || (!self.isolated && b.isolated)
            || less_allocated
    }
}

/// Whether a workload has fewer placed instances than replicas.
fn waiting(w: &Workload) -> bool {
    let placed = w.status.as_ref().map_or(0, |s| {
        s.instances.iter().filter(|i| i.node.is_some()).count()
    });
    placed < w.spec.replicas.max(0) as usize
}

/// Whether a workload has an instance on the node.
fn on_node(w: &Workload, node: &str) -> bool {
    w.status
        .as_ref()
        .is_some_and(|s| s.instances.iter().any(|i| i.node.as_deref() == Some(node)))
}

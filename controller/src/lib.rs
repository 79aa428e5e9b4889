//! Univrs controller: reconciles Workloads and Nodes against any conformant API server.
//!
//! `scheduler` and `snapshot` are the pure core (no I/O); `workload`, `node` and `vouch` are the
//! reconcilers, fed by reflector caches; `leader` makes sure only one controller writes.
//! Writes are server-side apply with the field manager `univrs-controller`, and only when
//! something other than a timestamp changes.
//!
//! Not yet here (the controller issue stays open for them): the credit ledger's transfers from agent usage, reputation, nexus election and
//! septal gates fed by real observations.

pub mod context;
pub mod credit;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod node;
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
use std::sync::Arc;
use std::time::Duration;
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
    let r = reconcile(obj.clone(), ctx.clone()).await;
    ctx.metrics
        .reconciled(kind, if r.is_ok() { "ok" } else { "error" });
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
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);

    let (lease_store, lease_writer) = reflector::store();
    let lease_stream = reflector::reflector(
        lease_writer,
        watcher(leases.clone(), watcher::Config::default()),
    )
    .applied_objects()
    .for_each(|_| async {});

    let wc = Controller::new(workloads.clone(), watcher::Config::default());
    let workload_store = wc.store();
    let nc = Controller::new(nodes.clone(), watcher::Config::default());
    let node_store = nc.store();

    let ctx = Arc::new(Context {
        client: client.clone(),
        nodes: node_store.clone(),
        workloads: workload_store.clone(),
        leases: lease_store.clone(),
        settings,
        recorder: Recorder::new(client.clone(), Context::reporter()),
        metrics,
        failures: Default::default(),
    });

    let ws = workload_store.clone();
    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut rx1 = shutdown_tx.subscribe();
    let mut rx2 = shutdown_tx.subscribe();
    let mut rx3 = shutdown_tx.subscribe();
    let mut rx4 = shutdown_tx.subscribe();
    let workload_ctl = wc
        .watches(
            nodes.clone(),
            watcher::Config::default(),
            move |node: Node| {
                let name = node.name_any();
                ws.state()
                    .into_iter()
                    .filter(|w| {
                        w.status.as_ref().is_some_and(|s| {
                            s.instances.iter().any(|i| i.node.as_deref() == Some(&name))
                        })
                    })
                    .map(|w| ObjectRef::from_obj(w.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(async move {
            let _ = rx1.recv().await;
        })
        .run(
            |w, ctx: Arc<Context>| instrumented("Workload", w, ctx, workload::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let node_ctl = nc
        .watches(leases, watcher::Config::default(), |lease: Lease| {
            node_of_lease(&lease.name_any()).map(ObjectRef::<Node>::new)
        })
        .watches(workloads, watcher::Config::default(), |w: Workload| {
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
        .graceful_shutdown_on(async move {
            let _ = rx2.recv().await;
        })
        .run(
            |n, ctx: Arc<Context>| instrumented("Node", n, ctx, node::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let vc = Controller::new(
        Api::<Vouch>::all(client.clone()),
        watcher::Config::default(),
    );
    let vouch_store = vc.store();
    let vouch_ctl = vc
        .watches(
            nodes.clone(),
            watcher::Config::default(),
            move |node: Node| {
                let did = node.spec.did;
                vouch_store
                    .state()
                    .into_iter()
                    .filter(|v| v.spec.voucher == did || v.spec.subject == did)
                    .map(|v| ObjectRef::from_obj(v.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(async move {
            let _ = rx3.recv().await;
        })
        .run(
            |v, ctx: Arc<Context>| instrumented("Vouch", v, ctx, vouch::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let credit_ctl = Controller::new(
        Api::<CreditLine>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(async move {
        let _ = rx4.recv().await;
    })
    .run(
        |c, ctx: Arc<Context>| instrumented("CreditLine", c, ctx, credit::reconcile),
        error_policy,
        ctx.clone(),
    )
    .for_each(|_| async {});

    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(());
    });
    tokio::select! {
        _ = futures::future::join4(workload_ctl, node_ctl, vouch_ctl, credit_ctl) => {}
        _ = lease_stream => {}
    }
}

//! Univrs controller: reconciles Workloads, Nodes, CreditLines and Vouches against any
//! conformant API server.
//!
//! Three wings, each importing only the ones below it:
//! - [`core`]: the pure decisions (placement, pricing, billing, each reconciler's plan step),
//!   functions of plain values with no I/O;
//! - [`state`]: what the reconcilers read and how they hear of changes (the context, the watch
//!   feeds, the reflector caches, the node index, the queues, Event publishing); imports `core`;
//! - [`reconcile`]: one reconciler per resource, each reading `state`, planning with `core`,
//!   writing with server-side apply (field manager `univrs-controller`) only when something
//!   other than a timestamp changes, and announcing; imports `state` and `core`.
//!
//! Beside them: [`leader`] (only one controller writes), [`metrics`], [`error`] and [`crds`]
//! (installing the CRDs, for `univrs up` and the tests). This file wires the wings together:
//! the feeds wake the reconcilers for exactly the objects a change concerns, and the nexus
//! election wakes the nodes whose role changed.

pub mod core;
pub mod crds;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod state;

use futures::StreamExt;
use kube::Resource;
use kube::runtime::controller::{self, Action, applier};
use kube::runtime::reflector::{self, ObjectRef};
use reconcile::{credit, csr, nexus, node, revival, vouch, workload};
use state::context::{Context, Settings};
use state::{feeds, queues};
use std::sync::Arc;
use std::time::Duration;

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

/// How many Workloads are reconciled at once: enough to keep the API server's write path
/// busy, few enough that a burst of thousands does not open thousands of requests at once
/// (which the API server answers with 429s).
const WORKLOAD_CONCURRENCY: u16 = 64;

/// How many Nodes are reconciled at once.
const NODE_CONCURRENCY: u16 = 32;

/// Runs one controller: reconciles what `queue` names (and what its reconciles requeue), with
/// `concurrency` at most at once, until `stop` resolves.
fn control<K, F, Fut>(
    kind: &'static str,
    reconcile: F,
    ctx: Arc<Context>,
    store: reflector::Store<K>,
    queue: futures::channel::mpsc::UnboundedReceiver<ObjectRef<K>>,
    concurrency: u16,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = ()>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Action, error::Error>> + Send + 'static,
{
    let queue = queue
        .map(Ok::<_, std::convert::Infallible>)
        .take_until(stop);
    applier(
        move |obj, ctx| Box::pin(instrumented(kind, obj, ctx, reconcile.clone())),
        error_policy,
        ctx,
        store,
        queue,
        controller::Config::default().concurrency(concurrency),
    )
    .for_each(|_| async {})
}

/// Runs the controllers until `shutdown` resolves. Call only while leading.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    metrics: Arc<metrics::Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (nodes, nodes_w) = reflector::store();
    let (workloads, workloads_w) = reflector::store();
    let (leases, leases_w) = reflector::store();
    let (credit_lines, credit_lines_w) = reflector::store();
    let (vouches, vouches_w) = reflector::store();
    let (queues, rx) = queues::new();
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Context {
        ready: ready_rx,
        client: client.clone(),
        nodes,
        workloads,
        leases,
        credit_lines,
        vouches,
        index: Default::default(),
        queues: queues.clone(),
        settings,
        events: univrs_io::events::Publisher::new(
            client.clone(),
            state::context::FIELD_MANAGER,
            std::env::var("HOSTNAME").ok(),
        ),
        metrics,
        failures: Default::default(),
        allocation_pending: Default::default(),
        election: Default::default(),
        auction_keys: Default::default(),
    });
    let writers = feeds::Writers {
        nodes: nodes_w,
        workloads: workloads_w,
        leases: leases_w,
        credit_lines: credit_lines_w,
        vouches: vouches_w,
    };

    let (shutdown_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stop = || {
        let mut rx = shutdown_tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let controllers = futures::future::join4(
        control(
            "Workload",
            workload::reconcile,
            ctx.clone(),
            ctx.workloads.clone(),
            rx.workloads,
            WORKLOAD_CONCURRENCY,
            stop(),
        ),
        control(
            "Node",
            node::reconcile_with_finalizer,
            ctx.clone(),
            ctx.nodes.clone(),
            rx.nodes,
            NODE_CONCURRENCY,
            stop(),
        ),
        control(
            "Vouch",
            vouch::reconcile,
            ctx.clone(),
            ctx.vouches.clone(),
            rx.vouches,
            0,
            stop(),
        ),
        control(
            "CreditLine",
            credit::reconcile,
            ctx.clone(),
            ctx.credit_lines.clone(),
            rx.credit_lines,
            0,
            stop(),
        ),
    );
    // Certificate requests are few and need no index: a plain controller with its own watch.
    let approver = {
        let api = kube::Api::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>::all(
            client.clone(),
        );
        kube::runtime::Controller::new(api, kube::runtime::watcher::Config::default())
            .graceful_shutdown_on(stop())
            .run(
                |obj, ctx| instrumented("CertificateSigningRequest", obj, ctx, csr::reconcile),
                error_policy,
                ctx.clone(),
            )
            .for_each(|_| async {})
    };
    let feeds = feeds::run(client, writers, ctx.clone());
    let elections = nexus::run_elections(ctx.clone(), queues.nodes.clone());
    let rounds = revival::run_rounds(ctx.clone());
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
        _ = controllers => {}
        _ = approver => {}
        _ = feeds => {}
        _ = elections => {}
        _ = rounds => {}
        _ = synced => {}
    }
}

//! `univrs controller`: leader election, then the reconcilers; metrics and health on the side.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use univrs_controller::{leader::Elector, metrics::Metrics, state::context::Settings};

/// A kube client from a kubeconfig file, or the usual inference (in-cluster, ~/.kube/config).
pub async fn client(kubeconfig: Option<PathBuf>) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config(kubeconfig).await?)?)
}

/// The configuration of `kubeconfig`, or kube's inference (KUBECONFIG, ~/.kube/config,
/// in-cluster) without one.
pub async fn config(kubeconfig: Option<PathBuf>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    })
}

/// Sets up tracing once: RUST_LOG filter, text or JSON.
pub fn init_tracing(json: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}

/// Runs the controller until SIGINT/SIGTERM, or until leadership is lost (then exits non-zero
/// so that the supervisor restarts it as a candidate).
pub fn run(
    kubeconfig: Option<PathBuf>,
    metrics_addr: SocketAddr,
    settings: Settings,
    log_json: bool,
) -> anyhow::Result<()> {
    init_tracing(log_json);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = client(kubeconfig).await?;
        let metrics = Arc::new(Metrics::default());
        serve_metrics(metrics_addr, metrics.clone()).await?;
        let elector = Elector::new();
        tracing::info!(identity = %elector.identity, "waiting for leadership");
        let lease_api = tokio::select! {
            api = elector.acquire(&client) => api,
            _ = shutdown_signal() => return Ok(()),
        };
        metrics.set_leader(true);
        tracing::info!(identity = %elector.identity, anchors = settings.trust_anchors.len(), "leading: starting reconcilers");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let controllers = tokio::spawn(univrs_controller::run(
            client,
            settings,
            metrics.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let hold = elector.hold(lease_api.clone());
        tokio::pin!(hold);
        let lost = tokio::select! {
            _ = &mut hold => true,
            _ = shutdown_signal() => false,
        };
        let _ = stop_tx.send(());
        let stopped = tokio::time::timeout(Duration::from_secs(10), controllers);
        if lost {
            let _ = stopped.await;
            anyhow::bail!("lost leadership; exiting so a fresh candidate can take over");
        }
        // Asked to stop: keep the Lease while the reconcilers finish, so no successor writes
        // beside them, then hand it over at once.
        let lost = tokio::select! {
            _ = &mut hold => true,
            _ = stopped => false,
        };
        metrics.set_leader(false);
        if !lost {
            elector.release(&lease_api).await;
        }
        Ok(())
    })
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Serves `/metrics` and `/healthz` over plain HTTP: both are read-only, and what they say is
/// no secret (counts, durations, whether this instance leads).
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { univrs_io::metrics::response(m.registry()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "metrics and health listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

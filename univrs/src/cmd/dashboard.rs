//! `univrs dashboard`: flags to a listener, then the dashboard until SIGINT/SIGTERM.

use super::controller::{config, init_tracing, shutdown_signal};
use crate::cli::DashboardArgs;
use crate::node_logs::credentials::Credentials;
use crate::serving;
use anyhow::Context;

/// Runs the dashboard.
pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let addr = args.listen;
    let loopback = addr.ip().is_loopback();
    let dir = crate::paths::data_dir()?.join("dashboard");
    // Off loopback, TLS and a token always (made once when not given), as for the MCP server.
    let tls = (args.tls || args.tls_cert.is_some() || !loopback)
        .then(|| {
            serving::given_or_self_signed(
                args.tls_cert.as_deref(),
                args.tls_key.as_deref(),
                &dir,
                &addr,
                "univrs-dashboard",
            )
        })
        .transpose()?;
    let token = (args.token_file.is_some() || !loopback)
        .then(|| serving::given_or_made_token(args.token_file.as_deref(), &dir))
        .transpose()?;
    univrs_io::listener::check_exposure(addr, tls.is_some(), token.is_some())
        .map_err(|e| anyhow::anyhow!("--listen {e}"))?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let config = config(crate::paths::kubeconfig_or_local(args.kubeconfig.clone())).await?;
        let server = config.cluster_url.to_string();
        let credentials = Credentials::from_config(&config)?;
        let client = kube::Client::try_from(config)?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = tcp.local_addr()?;
        let dashboard = crate::dashboard::Dashboard::start(
            client,
            credentials,
            server,
            token.as_ref().map(|t| t.token.clone()),
            loopback.then_some(local.port()),
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The one line a supervisor or test reads from stdout; the rest is for people.
        println!("listening {scheme}://{local}/");
        serving::announce(
            token.as_ref(),
            tls.as_ref(),
            "open the page with ?token=<its contents> once, or paste it when asked",
        );
        let app = crate::dashboard::router(dashboard);
        tokio::select! {
            r = univrs_io::listener::serve(tcp, tls.map(|t| t.config), app) => r.context("serving the dashboard")?,
            () = shutdown_signal() => {}
        }
        Ok(())
    })
}

//! `univrs dashboard`: flags to a listener, then the dashboard until SIGINT/SIGTERM.

use super::controller::{config, init_tracing, shutdown_signal};
use crate::cli::DashboardArgs;
use crate::node_logs::credentials::Credentials;
use crate::serving;
use anyhow::Context;
use univrs_io::token::Token;

/// Runs the dashboard.
pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let addr = args.listen;
    let loopback = addr.ip().is_loopback();
    let dir = crate::paths::data_dir()?.join("dashboard");
    // Off loopback, TLS and a token always (made once when not given), as for the MCP server.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(serving::from_files(cert, key)?),
        _ if args.tls || !loopback => Some(serving::self_signed(&dir, &addr, "univrs-dashboard")?),
        _ => None,
    };
    let token = match &args.token_file {
        Some(path) => Some((Token::load(path)?, path.clone(), false)),
        None if !loopback => {
            let path = dir.join("token");
            let (t, made) = Token::load_or_generate(&path)?;
            Some((t, path, made))
        }
        None => None,
    };
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
            token.as_ref().map(|(t, _, _)| t.clone()),
            loopback.then_some(local.port()),
        );
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The one line a supervisor or test reads from stdout; the rest is for people.
        println!("listening {scheme}://{local}/");
        if let Some((_, path, made)) = &token {
            eprintln!(
                "token: {} ({}); open the page with ?token=<its contents> once, or paste it when asked",
                path.display(),
                if *made { "made now, mode 0600" } else { "read" }
            );
        }
        if let Some(t) = &tls {
            eprintln!(
                "TLS certificate: {}{}\n  SHA-256 fingerprint {}",
                t.cert_path.display(),
                if t.generated { " (self-signed, made now)" } else { "" },
                t.fingerprint
            );
        }
        let app = crate::dashboard::router(dashboard);
        tokio::select! {
            r = univrs_io::listener::serve(tcp, tls.map(|t| t.config), app) => r.context("serving the dashboard")?,
            () = shutdown_signal() => {}
        }
        Ok(())
    })
}

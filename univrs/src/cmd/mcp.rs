//! `univrs mcp`: the MCP server over stdio, or over streamable HTTP behind TLS and a bearer
//! token. Standard output belongs to the protocol in stdio mode, so everything for people goes
//! to standard error.

use super::controller::{config, init_tracing};
use crate::cli::McpArgs;
use crate::mcp::http;
use crate::mcp::server::UnivrsMcp;
use crate::node_logs::credentials::Credentials;
use crate::serving;
use anyhow::{Context, bail};
use rmcp::ServiceExt;
use std::net::SocketAddr;
use univrs_node_agent::keyfile;

/// Runs `univrs mcp` until stdin closes (stdio) or forever (HTTP).
pub fn run(args: McpArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    // Checked before anything starts, so a bad flag fails at once, not at the first request.
    if let Some(addr) = args.listen
        && args.no_tls
        && !addr.ip().is_loopback()
    {
        bail!(
            "refusing to serve plain HTTP on {addr}, which is not a loopback address: \
             drop --no-tls (a self-signed certificate is made) or give --tls-cert and --tls-key"
        );
    }
    let identity = match &args.identity {
        Some(path) => {
            let id = keyfile::load(path)?;
            tracing::info!(did = %id.public().did(), "vouches are signed with this identity");
            Some(id)
        }
        None => None,
    };
    tokio::runtime::Runtime::new()?.block_on(async move {
        let config = config(crate::paths::kubeconfig_or_local(args.kubeconfig.clone())).await?;
        let log_credentials = Credentials::from_config(&config).map_err(|e| e.to_string());
        let client = kube::Client::try_from(config)?;
        check_api(&client).await;
        let server = UnivrsMcp::new(client, identity, log_credentials);
        match args.listen {
            None => serve_stdio(server).await,
            Some(addr) => serve_http(server, addr, &args).await,
        }
    })
}

/// Warns (without failing: the cluster may come up later) when the API server cannot be
/// reached or does not serve the Univrs resources.
async fn check_api(client: &kube::Client) {
    match client
        .list_api_group_resources(&format!("{}/{}", univrs_api::GROUP, univrs_api::VERSION))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => tracing::warn!(
            "the API server does not serve {}/{}: install the CRDs (univrs crds | kubectl apply -f -)",
            univrs_api::GROUP,
            univrs_api::VERSION
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the API server is not reachable yet; tools will fail until it is")
        }
    }
}

async fn serve_stdio(server: UnivrsMcp) -> anyhow::Result<()> {
    tracing::info!("serving MCP on standard input and output");
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .context("starting the MCP session on stdio")?;
    running.waiting().await?;
    Ok(())
}

async fn serve_http(server: UnivrsMcp, addr: SocketAddr, args: &McpArgs) -> anyhow::Result<()> {
    let dir = crate::paths::data_dir()?.join("mcp");
    let tls = if args.no_tls {
        None
    } else {
        Some(serving::given_or_self_signed(
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            &dir,
            &addr,
            "univrs-mcp",
        )?)
    };
    let token = serving::given_or_made_token(args.token_file.as_deref(), &dir)?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = tcp.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The one line a supervisor or test reads from stdout; the rest is for people.
    println!("listening {scheme}://{local}{}", http::PATH);
    serving::announce(
        Some(&token),
        tls.as_ref(),
        "clients send the header Authorization: Bearer <its contents>",
    );
    if tls.is_none() {
        eprintln!("plain HTTP on loopback (--no-tls)");
    }
    http::serve(
        server,
        tcp,
        tls.map(|t| t.config),
        token.token,
        !addr.ip().is_loopback(),
    )
    .await
}

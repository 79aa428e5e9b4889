//! The streamable HTTP transport on `/mcp`: every request needs the bearer token (401
//! otherwise), and connections are TLS unless plain HTTP was asked for on loopback. The
//! listener and the token are the ones every Univrs server uses (`univrs_io`). `/healthz`
//! answers `ok` to anyone, for a kubelet's probes: it tells nothing and changes nothing.

use super::server::UnivrsMcp;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use univrs_io::token::{self, Token};

/// The path the MCP endpoint is served on.
pub const PATH: &str = "/mcp";

/// Refuses a request without the right `Authorization: Bearer …` header.
async fn require_token(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    if token.authorizes(req.headers()) {
        return next.run(req).await;
    }
    tracing::info!(
        method = %req.method(),
        path = %req.uri().path(),
        with_token = token::bearer(req.headers()).is_some(),
        "refused a request without the right bearer token"
    );
    token::unauthorized(
        "univrs-mcp",
        "missing or wrong bearer token: send the header Authorization: Bearer <the token file's contents>",
    )
}

/// Serves `server` on `tcp`: TLS with `tls`, or plain HTTP when it is None (the caller allows
/// that only on loopback). `any_host` turns off the Host-header check that stops DNS rebinding
/// against a loopback listener (a public listener is reached by names the server cannot know;
/// the token protects it). There is no graceful shutdown to wait for: every change is one API
/// request, which either reached the API server or did not, so being killed loses nothing.
pub async fn serve(
    server: UnivrsMcp,
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    token: Token,
    any_host: bool,
) -> anyhow::Result<()> {
    let mut config = StreamableHttpServerConfig::default();
    if any_host {
        config = config.disable_allowed_hosts();
    }
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = axum::Router::new()
        .nest_service(PATH, mcp)
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        // After the layer, so outside it.
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    univrs_io::listener::serve(tcp, tls, app).await?;
    Ok(())
}

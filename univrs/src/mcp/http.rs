//! The streamable HTTP transport on `/mcp`: every request needs the bearer token (401
//! otherwise), and connections are TLS unless plain HTTP was asked for on loopback.
//!
//! TLS handshakes run in tasks of their own, each with a deadline and at most
//! [`MAX_HANDSHAKES`] at once, so a client that connects and says nothing cannot hold up
//! anyone else's connection.

use super::server::UnivrsMcp;
use super::token::Token;
use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

/// The path the MCP endpoint is served on.
pub const PATH: &str = "/mcp";
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most TLS handshakes in progress at once (each holds a task and a socket).
const MAX_HANDSHAKES: usize = 256;

/// Refuses a request without the right `Authorization: Bearer …` header.
async fn require_token(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if presented.is_some_and(|t| token.matches(t.as_bytes())) {
        return next.run(req).await;
    }
    tracing::info!(
        method = %req.method(),
        path = %req.uri().path(),
        with_token = presented.is_some(),
        "refused a request without the right bearer token"
    );
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send the header Authorization: Bearer <the token file's contents>\n",
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"univrs-mcp\""),
    );
    // The request body is left unread, so hyper will not reuse the connection; saying so stops
    // a client from sending its next request on a connection that is about to close (seen:
    // "server disconnected without sending a response" on the retry with the token).
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Turns off Nagle's algorithm: small responses otherwise wait for the client's delayed ACK
/// (measured: p95 of a tool call over HTTPS 48 ms with it, against 9 ms median).
fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// A listener whose connections have finished their TLS handshake.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` in a task of its own; each handshake runs in its own task.
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                // Full: stop accepting until a handshake ends (the kernel's backlog waits).
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                set_nodelay(&stream);
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (it only does when this listener is gone).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
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
        ));
    match tls {
        Some(config) => {
            let listener = TlsListener::new(tcp, config).context("starting the TLS listener")?;
            axum::serve(listener, app).await?
        }
        None => axum::serve(tcp.tap_io(|s: &mut TcpStream| set_nodelay(s)), app).await?,
    }
    Ok(())
}

//! The HTTP(S) listener every Univrs server uses (the agent's API, the MCP server).
//!
//! TLS handshakes run in tasks of their own, each with a deadline and at most
//! [`MAX_HANDSHAKES`] at once, so a client that connects and says nothing holds up no one
//! else's connection (a listener that shakes hands inside `accept()` serves one client at a
//! time: one silent client stalls every new connection until its deadline).

use axum::Router;
use axum::serve::ListenerExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most TLS handshakes in progress at once (each holds a task and a socket).
pub const MAX_HANDSHAKES: usize = 256;

/// Refuses to serve off loopback without both TLS and a token: anything that leaves the machine
/// is read by others, and anything that changes state must know who asks.
pub fn check_exposure(addr: SocketAddr, tls: bool, token: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || (tls && token) {
        return Ok(());
    }
    let missing = match (tls, token) {
        (false, false) => "TLS and a bearer token",
        (false, true) => "TLS",
        _ => "a bearer token",
    };
    Err(format!(
        "{addr} is not a loopback address, and serving there needs TLS and a bearer token \
         ({missing} missing): give them, or listen on 127.0.0.1"
    ))
}

/// Turns off Nagle's algorithm: small responses otherwise wait for the client's delayed ACK
/// (measured on the MCP server: p95 of a call over HTTPS 48 ms with it, 9 ms median).
fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// A listener whose connections have finished their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` in a task of its own; each handshake runs in its own task.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
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

/// Serves `app` on `tcp` until the task is dropped: over TLS with `tls`, plain HTTP without
/// (callers allow that only on loopback, see [`check_exposure`]).
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
) -> std::io::Result<()> {
    match tls {
        Some(config) => axum::serve(TlsListener::new(tcp, config)?, app).await,
        None => axum::serve(tcp.tap_io(|s: &mut TcpStream| set_nodelay(s)), app).await,
    }
}

/// The certificate a TLS client presented (verified by the server's client verifier), or
/// None: handlers read it with `ConnectInfo<PeerCertificate>` under [`serve_identified`].
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(
    pub Option<Arc<tokio_rustls::rustls::pki_types::CertificateDer<'static>>>,
);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerCertificate
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let leaf = stream
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| Arc::new(der.clone().into_owned()));
        Self(leaf)
    }
}

/// Serves `app` over TLS on `tcp` until the task is dropped, telling each request the
/// client's certificate ([`PeerCertificate`]).
pub async fn serve_identified(
    tcp: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
) -> std::io::Result<()> {
    axum::serve(
        TlsListener::new(tcp, tls)?,
        app.into_make_service_with_connect_info::<PeerCertificate>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_tls_and_a_token() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(check_exposure(lo, false, false).is_ok());
        assert!(check_exposure(any, true, true).is_ok());
        let e = check_exposure(any, true, false).unwrap_err();
        assert!(e.contains("a bearer token missing"), "{e}");
        let e = check_exposure(any, false, true).unwrap_err();
        assert!(e.contains("(TLS missing)"), "{e}");
    }

    /// A client that connects and never speaks must not delay anyone else's handshake.
    #[tokio::test]
    async fn a_silent_client_blocks_no_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pair = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        let tls = crate::tls::server_config(&cert, &key).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(serve(tcp, Some(tls.config), app));

        let _silent: Vec<TcpStream> = silent_clients(addr, 3).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pair.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let stream = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // Far below the handshake deadline that a one-at-a-time listener would wait out.
        let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT / 2, connector.connect(name, stream))
            .await
            .expect("the handshake waited behind the silent clients")
            .unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("hello"), "{answer}");
    }

    /// `n` connections that send nothing.
    async fn silent_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(TcpStream::connect(addr).await.unwrap());
        }
        v
    }
}

//! The node server: what callers from anywhere may ask this node for (today: an instance's
//! log), as the kubelet's server answers `kubectl logs`. It always speaks TLS with a
//! self-signed certificate whose fingerprint the agent publishes on its own Node
//! ([`univrs_api::system::NODE_SERVER_CERT_ANNOTATION`]; only this node's agent may write
//! that Node), so a caller who trusts the API server can pin it. The caller is authenticated
//! and authorized by the API server ([`authn`], [`authz`]), never by this agent's judgment:
//! the static token of the local API does not open this one.
//!
//! Routes: `GET /healthz`, and
//! `GET /api/v1/namespaces/{ns}/workloads/{name}/log?instance=N&container=C&follow=true&tailLines=N`.
//! 401 without credentials that count, 403 when RBAC says no (before anything about the
//! Workload is told), 404 when no such instance runs here.

pub mod authn;
pub mod authz;
pub mod logs;

use super::instances::reports::Reports;
use crate::runtime::RuntimeClient;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use univrs_io::listener::PeerCertificate;

/// What the node server serves from.
struct ServerState {
    node: String,
    client: kube::Client,
    runtime: RuntimeClient,
    reports: Reports,
}

/// A started node server: where it listens and what its certificate is.
pub struct Started {
    /// `https://ADDRESS:PORT`, as published on the Node.
    pub url: String,
    /// SHA-256 of its certificate, `AB:CD:…`.
    pub fingerprint: String,
}

/// Why the node server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its certificate could not be made or loaded.
    #[error("the node server's certificate: {0}")]
    Tls(#[from] univrs_io::tls::TlsError),
    /// Its address could not be bound.
    #[error("binding the node server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts the node server of `node` on `bind` (its certificate kept in `tls_dir`), published
/// as reachable at `advertise`; it serves until the process ends.
pub async fn start(
    client: kube::Client,
    node: String,
    runtime: RuntimeClient,
    reports: Reports,
    bind: SocketAddr,
    advertise: IpAddr,
    tls_dir: &std::path::Path,
) -> Result<Started, StartError> {
    let mut names = vec![advertise.to_string(), "localhost".to_string()];
    if !bind.ip().is_unspecified() && bind.ip() != advertise {
        names.push(bind.ip().to_string());
    }
    let (cert, key, _) =
        univrs_io::tls::self_signed(tls_dir, names, &format!("univrs-node-server {node}"))?;
    let verifier = authn::client_verifier(&client).await;
    let tls = univrs_io::tls::server_config_with(&cert, &key, verifier)?;
    let tcp = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| StartError::Bind { addr: bind, source })?;
    let port = tcp
        .local_addr()
        .map_err(|source| StartError::Bind { addr: bind, source })?
        .port();
    let url = format!("https://{}", SocketAddr::new(advertise, port));
    let state = Arc::new(ServerState {
        node,
        client,
        runtime,
        reports,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/api/v1/namespaces/{namespace}/workloads/{name}/log",
            get(workload_log),
        )
        .with_state(state);
    let config = tls.config.clone();
    tokio::spawn(async move {
        if let Err(e) = univrs_io::listener::serve_identified(tcp, config, app).await {
            tracing::error!("serving the node server: {e}");
        }
    });
    Ok(Started {
        url,
        fingerprint: tls.fingerprint,
    })
}

/// A refusal: a status and a message saying what to do, as JSON `{"error": …}`.
fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

/// Authenticates the caller: its verified certificate, else its bearer token.
async fn caller(
    s: &ServerState,
    peer: &PeerCertificate,
    headers: &HeaderMap,
) -> Result<authn::Caller, Response> {
    let result = match (&peer.0, univrs_io::token::bearer(headers)) {
        (Some(cert), _) => authn::from_certificate(cert),
        (None, Some(token)) => {
            authn::from_token(&s.client, token, &univrs_api::system::node_audience(&s.node)).await
        }
        (None, None) => Err(authn::AuthnError::Refused(
            "send a client certificate of the cluster, or a bearer token for this node's audience (univrs logs does either)".into(),
        )),
    };
    result.map_err(|e| match e {
        authn::AuthnError::Refused(why) => {
            tracing::info!(reason = %why, "node server: refused an unauthenticated request");
            let mut r = refuse(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"univrs-node\""
                    .parse()
                    .expect("static header"),
            );
            r
        }
        authn::AuthnError::Unavailable(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    })
}

/// `GET …/workloads/{name}/log`: authenticate, authorize, then find and send the log.
async fn workload_log(
    State(s): State<Arc<ServerState>>,
    ConnectInfo(peer): ConnectInfo<PeerCertificate>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<logs::LogQuery>,
) -> Response {
    let who = match caller(&s, &peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match authz::may_read_logs(&s.client, &who, &namespace, &name).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            tracing::info!(user = %who.user, %namespace, workload = %name, "node server: refused a log request RBAC does not allow");
            return refuse(StatusCode::FORBIDDEN, why);
        }
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("asking the API server: {e}"),
            );
        }
    }
    let id = match logs::find_container(&s.reports.snapshot(), &namespace, &name, &q) {
        Ok(id) => id,
        Err(why) => return refuse(StatusCode::NOT_FOUND, why),
    };
    tracing::info!(user = %who.user, %namespace, workload = %name, container = %id, follow = q.follow, "node server: sending a log");
    match logs::body(s.runtime.clone(), id, &q).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(crate::runtime::RuntimeError::NotFound(id)) => refuse(
            StatusCode::NOT_FOUND,
            format!("container {id} left this node"),
        ),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

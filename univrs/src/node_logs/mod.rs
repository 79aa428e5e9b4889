//! Reading an instance's log from the node that runs it, from any machine with a kubeconfig:
//! the one client of node servers, used by `univrs logs`, the dashboard and the MCP tool
//! `workload_logs`. The Workload's status names the instance's node; that node's object
//! names its server and the fingerprint of its certificate, which is pinned; the caller shows
//! the kubeconfig's own credentials ([`credentials`]), and the node asks the API server
//! whether they may read `workloads/log` in the namespace.

pub mod credentials;
mod pinned;

use credentials::Credentials;
use http_body_util::BodyExt;
use kube::api::Api;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::resources::workload::{instance_index, instance_name};
use univrs_api::system::{NODE_SERVER_ANNOTATION, NODE_SERVER_CERT_ANNOTATION, node_audience};
use univrs_api::{Node, Workload};

/// How long connecting to a node server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which log to read.
#[derive(Debug, Clone, Default)]
pub struct LogRequest {
    /// The Workload's namespace.
    pub namespace: String,
    /// The Workload's name.
    pub workload: String,
    /// The instance's index [default: the first instance that is placed].
    pub instance: Option<u32>,
    /// The container's name [default: the first].
    pub container: Option<String>,
    /// Keep reading what the container writes.
    pub follow: bool,
    /// How many of the last lines to read first [default: the node's most, 10000].
    pub tail_lines: Option<usize>,
}

/// Why a log could not be read: what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such Workload, instance or container, or the instance is not placed.
    #[error("{0}")]
    NotFound(String),
    /// The node server does not accept the caller's credentials.
    #[error("the node server refused the credentials (401): {0}")]
    Unauthenticated(String),
    /// The API server says the caller may not read this Workload's logs.
    #[error("forbidden (403): {0}")]
    Forbidden(String),
    /// The credentials cannot be used with node servers.
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    /// The API server or the node could not be reached, or answered nonsense.
    #[error("{0}")]
    Unavailable(String),
}

/// An open log: its chunks as they come.
pub struct LogStream {
    body: hyper::body::Incoming,
    /// The node it is read from.
    pub node: String,
    /// The instance.
    pub instance: String,
}

impl LogStream {
    /// The next chunk, None at the end (a followed log ends when the container leaves).
    pub async fn next(&mut self) -> Option<Result<hyper::body::Bytes, LogError>> {
        loop {
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Err(e) => return Some(Err(LogError::Unavailable(format!("reading the log: {e}")))),
            }
        }
    }
}

/// Opens the log `req` names, with `credentials`, through `client`'s API server.
pub async fn open(
    client: &kube::Client,
    credentials: &Credentials,
    req: &LogRequest,
) -> Result<LogStream, LogError> {
    let unavailable = |what: String| {
        move |e: kube::Error| match e {
            kube::Error::Api(s) if s.code == 404 => LogError::NotFound(format!("{what} not found")),
            e => LogError::Unavailable(format!("reading {what}: {e}")),
        }
    };
    let what = format!("Workload {}/{}", req.namespace, req.workload);
    let workload = Api::<Workload>::namespaced(client.clone(), &req.namespace)
        .get(&req.workload)
        .await
        .map_err(unavailable(what.clone()))?;
    let (instance, index, node) = placement(&workload, req.instance)?;
    let node_obj = Api::<Node>::all(client.clone())
        .get(&node)
        .await
        .map_err(unavailable(format!("Node {node}")))?;
    let annotations = node_obj.metadata.annotations.unwrap_or_default();
    let (Some(url), Some(pin)) = (
        annotations.get(NODE_SERVER_ANNOTATION),
        annotations.get(NODE_SERVER_CERT_ANNOTATION),
    ) else {
        return Err(LogError::Unavailable(format!(
            "node {node} publishes no node server (annotations {NODE_SERVER_ANNOTATION} and {NODE_SERVER_CERT_ANNOTATION}); its agent is older than `univrs logs`"
        )));
    };
    let authority = url
        .strip_prefix("https://")
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .ok_or_else(|| {
            LogError::Unavailable(format!(
                "node {node} publishes a node server URL that is not https://HOST:PORT: {url:?}"
            ))
        })?;
    let token = credentials
        .token_for(client, &node, &node_audience(&node))
        .await?;
    let tls = tls_config(credentials, pin)?;

    let mut path = format!(
        "/api/v1/namespaces/{}/workloads/{}/log?instance={index}&follow={}",
        req.namespace, req.workload, req.follow
    );
    if let Some(n) = req.tail_lines {
        path.push_str(&format!("&tailLines={n}"));
    }
    if let Some(c) = &req.container {
        path.push_str(&format!("&container={c}"));
    }
    let unreachable =
        |e: String| LogError::Unavailable(format!("reaching node {node}'s server at {url}: {e}"));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority);
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| unreachable(e.to_string()))?;
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| unreachable("the TLS handshake timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        // Ends with the response body (or when the node hangs up).
        let _ = conn.await;
    });
    let mut request = http::Request::get(&path).header(http::header::HOST, authority);
    if let Some(t) = &token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| unreachable(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(LogStream {
            body: response.into_body(),
            node,
            instance,
        });
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(match status.as_u16() {
        401 => LogError::Unauthenticated(message),
        403 => LogError::Forbidden(message),
        404 => LogError::NotFound(message),
        code => LogError::Unavailable(format!("node {node} answered {code}: {message}")),
    })
}

/// The instance a request names (its name and index) and its node: the given index, or the
/// first placed instance.
fn placement(workload: &Workload, index: Option<u32>) -> Result<(String, u32, String), LogError> {
    let name = workload.metadata.name.clone().unwrap_or_default();
    let instances = workload
        .status
        .as_ref()
        .map(|s| s.instances.clone())
        .unwrap_or_default();
    let wanted = index.map(|i| instance_name(&name, i));
    let found = instances.iter().find(|i| match &wanted {
        Some(w) => &i.name == w,
        None => i.node.is_some(),
    });
    let Some(i) = found else {
        return Err(LogError::NotFound(match wanted {
            Some(w) => format!(
                "Workload {name} has no instance {w} (kubectl get workload {name} -o yaml lists status.instances)"
            ),
            None => format!("no instance of Workload {name} is placed yet"),
        }));
    };
    let (Some(node), Some(index)) = (&i.node, instance_index(&name, &i.name)) else {
        return Err(LogError::NotFound(format!(
            "instance {} is not placed on a node yet",
            i.name
        )));
    };
    Ok((i.name.clone(), index, node.clone()))
}

/// A client TLS configuration pinned to `fingerprint`, with the caller's certificate if any.
fn tls_config(
    credentials: &Credentials,
    fingerprint: &str,
) -> Result<Arc<rustls::ClientConfig>, LogError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LogError::Unavailable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned::Pinned::new(fingerprint)));
    let mut config = match credentials {
        Credentials::Certificate(chain, key) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                LogError::Credentials(credentials::CredentialsError(format!(
                    "the kubeconfig's client certificate and key: {e}"
                )))
            })?,
        Credentials::Token(_) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

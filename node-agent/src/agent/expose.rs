//! Exposed ports (`spec.expose`): this node accepts connections on every port a Workload
//! exposes (within its owner's host port range) and sends each to a ready instance: one on
//! this node when there is one, else one on another node, through a stream over the mesh
//! (`/univrs/expose/1.0.0`), so it works across NAT. Which Workload holds a port, and which
//! instances are ready, come from the Workload cache (`univrs_api::expose`).
//!
//! The stream protocol: the dialing node writes one JSON line, `{"port": P}` for exposed port
//! P or `{"port": P, "workload": {"namespace": N, "name": W}}` for container port P of
//! Workload N/W reached by name (see [`super::names`]); the other node answers `ok` and then
//! carries bytes both ways, or `error: …` and closes. A node answers only with its own ready
//! instances (never forwarding further): of the Workload holding exposed port P, so a peer
//! reaches through it nothing that its exposed port does not serve anyway; or of N/W, and
//! only to a peer that runs an instance of a Workload in N itself (a node the controller
//! trusted with that namespace's code, whose containers may reach N's Workloads by name).

use super::peers::cluster_view::ClusterView;
use crate::mesh::{MeshHandle, PeerId};
use futures::StreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use univrs_api::Workload;
use univrs_api::expose::{Holder, backends, holders, ready_backends};
use univrs_api::resources::node::NodeAddress;

/// The mesh protocol for a connection to an exposed port carried to another node.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/univrs/expose/1.0.0");
/// The longest request line.
const MAX_REQUEST: usize = 256;
/// How long connecting to an instance, or reading a stream's request, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long another node may take to open a stream and answer it before the next node with a
/// ready instance is tried.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a node that did not answer in time (or whose mesh connection failed) is passed
/// over while another node has a ready instance: a frozen or lost machine costs one
/// connection a delay, not every connection.
const PASSED_OVER_FOR: Duration = Duration::from_secs(15);
/// Connections carried at once (inbound and through the mesh, each): beyond, new ones wait.
const MAX_CONNECTIONS: usize = 1024;

/// What a stream asks for.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workload: Option<Named>,
}

/// Why a stream to another node gave nothing.
enum Open {
    /// The node answered, without a ready instance.
    Refused(String),
    /// The stream or the node failed.
    Failed(String),
}

/// A Workload reached by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An exposed port: to the Workload holding it, at its `targetPort`.
    Exposed(u16),
    /// A container port of a Workload reached by name.
    Named(Named, u16),
}

impl Target {
    fn request(&self) -> Request {
        match self {
            Target::Exposed(port) => Request {
                port: *port,
                workload: None,
            },
            Target::Named(w, port) => Request {
                port: *port,
                workload: Some(w.clone()),
            },
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Exposed(port) => write!(f, "exposed port {port}"),
            Target::Named(w, port) => write!(f, "{}.{}:{port}", w.name, w.namespace),
        }
    }
}

/// How connections reach ready instances, here or through the mesh (shared by the exposed
/// ports and the names).
pub struct Routes {
    node: String,
    workloads: Store<Workload>,
    cluster: ClusterView,
    mesh: MeshHandle,
    /// Who holds each exposed port, as of the last look at the Workload cache (kept by
    /// [`Exposer::sync`], so a connection does not sort every Workload).
    holders: RwLock<BTreeMap<u16, Holder>>,
    next: AtomicUsize,
    slots: Semaphore,
    /// Nodes that last failed to answer, and when.
    unanswered: std::sync::Mutex<BTreeMap<String, std::time::Instant>>,
}

impl Routes {
    /// The Workload holding `port` now, and its exposed entry.
    fn holder(&self, port: u16) -> Option<(Arc<Workload>, Holder)> {
        let h = self
            .holders
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&port)?
            .clone();
        let wl = self
            .workloads
            .get(&ObjectRef::new(&h.name).within(&h.namespace))?;
        Some((wl, h))
    }

    /// A rotating pick among `n` choices.
    fn pick(&self, n: usize) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % n.max(1)
    }

    /// The routes of a node: `node`'s ready instances from `workloads`, other nodes' through
    /// `mesh` (their PeerIds from `cluster`).
    pub fn new(
        node: String,
        workloads: Store<Workload>,
        cluster: ClusterView,
        mesh: MeshHandle,
    ) -> Self {
        Self {
            node,
            workloads,
            cluster,
            mesh,
            holders: RwLock::new(BTreeMap::new()),
            next: AtomicUsize::new(0),
            slots: Semaphore::new(MAX_CONNECTIONS),
            unanswered: Default::default(),
        }
    }

    /// The order in which to try `nodes`: from a rotating start, those that failed to answer
    /// within [`PASSED_OVER_FOR`] last.
    fn order(&self, nodes: &[String]) -> Vec<String> {
        let start = self.pick(nodes.len());
        let mut order: Vec<String> = nodes[start..]
            .iter()
            .chain(&nodes[..start])
            .cloned()
            .collect();
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|p| p.into_inner());
        unanswered.retain(|_, at| at.elapsed() < PASSED_OVER_FOR);
        order.sort_by_key(|n| unanswered.contains_key(n));
        order
    }

    /// The Workload `w`, if cached and not being deleted.
    pub fn workload(&self, w: &Named) -> Option<Arc<Workload>> {
        self.workloads
            .get(&ObjectRef::new(&w.name).within(&w.namespace))
            .filter(|wl| wl.metadata.deletion_timestamp.is_none())
    }

    /// Ready instances of `target` here (addresses) and the other nodes with one.
    fn backends(&self, target: &Target) -> Result<(Vec<SocketAddr>, Vec<String>), String> {
        match target {
            Target::Exposed(port) => {
                let (wl, h) = self
                    .holder(*port)
                    .ok_or_else(|| format!("no Workload exposes port {port}"))?;
                Ok(backends(&wl, &h.port, &self.node))
            }
            Target::Named(w, port) => {
                let wl = self
                    .workload(w)
                    .ok_or_else(|| format!("no Workload {}/{}", w.namespace, w.name))?;
                Ok(ready_backends(&wl, *port, &self.node))
            }
        }
    }

    /// Carries `conn` to a ready instance of `target`: one here, else one on another node
    /// through the mesh. Without a ready instance anywhere, `conn` is closed at once.
    pub async fn route(&self, target: Target, mut conn: TcpStream) -> Result<(), String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let (local, remote) = self.backends(&target)?;
        if !local.is_empty() {
            let mut to = connect(local[self.pick(local.len())]).await?;
            return carry(&mut conn, &mut to).await;
        }
        if remote.is_empty() {
            return Err(format!("{target} has no ready instance"));
        }
        // Nothing was read from `conn` yet, so another node can still take it.
        let mut errors = Vec::new();
        for node in self.order(&remote) {
            let Some(peer) = self
                .cluster
                .peer_id_of(&node)
                .and_then(|p| p.parse::<PeerId>().ok())
            else {
                errors.push(format!("node {node} has no PeerId"));
                continue;
            };
            match tokio::time::timeout(OPEN_TIMEOUT, self.open(peer, &target)).await {
                Ok(Ok(mut stream)) => {
                    self.unanswered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&node);
                    return carry(&mut conn, &mut stream).await;
                }
                // It answered: alive, just without a ready instance now.
                Ok(Err(Open::Refused(e))) => errors.push(e),
                Ok(Err(Open::Failed(e))) => {
                    self.pass_over(&node);
                    errors.push(e);
                }
                Err(_) => {
                    self.pass_over(&node);
                    errors.push(format!("node {node} did not answer in {OPEN_TIMEOUT:?}"));
                }
            }
        }
        Err(errors.join("; "))
    }

    fn pass_over(&self, node: &str) {
        self.unanswered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), std::time::Instant::now());
    }

    /// Opens a stream to `peer` for `target` and reads its answer.
    async fn open(
        &self,
        peer: PeerId,
        target: &Target,
    ) -> Result<impl AsyncRead + AsyncWrite + Unpin + use<>, Open> {
        let stream = self
            .mesh
            .streams()
            .open_stream(peer, PROTOCOL)
            .await
            .map_err(|e| Open::Failed(format!("opening a stream to {peer}: {e}")))?;
        let mut stream = BufReader::new(stream.compat());
        let mut line = serde_json::to_vec(&target.request()).expect("a request serializes");
        line.push(b'\n');
        stream
            .get_mut()
            .write_all(&line)
            .await
            .map_err(|e| Open::Failed(format!("asking {peer}: {e}")))?;
        let answer = read_line(&mut stream).await.map_err(Open::Failed)?;
        if answer != "ok" {
            return Err(Open::Refused(format!("{peer} refused: {answer}")));
        }
        Ok(stream)
    }

    /// Whether `peer` runs an instance of a Workload in `namespace` (see the module docs).
    fn hosts_namespace(&self, peer: &PeerId, namespace: &str) -> bool {
        let Some(node) = self.cluster.node_with_peer_id(&peer.to_string()) else {
            return false;
        };
        self.workloads.state().iter().any(|w| {
            w.metadata.namespace.as_deref() == Some(namespace)
                && w.status
                    .iter()
                    .flat_map(|s| &s.instances)
                    .any(|i| i.node.as_deref() == Some(node.as_str()))
        })
    }

    /// Answers one stream from `peer` with a local ready instance of what it asks for.
    async fn serve(&self, peer: PeerId, stream: libp2p::Stream) -> Result<(), String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let mut stream = BufReader::new(stream.compat());
        let request: Request = serde_json::from_str(&read_line(&mut stream).await?)
            .map_err(|e| format!("a malformed request from {peer}: {e}"))?;
        let target = match request.workload {
            Some(w) if !self.hosts_namespace(&peer, &w.namespace) => {
                let _ = stream
                    .get_mut()
                    .write_all(b"error: not a node of that namespace\n")
                    .await;
                return Err(format!(
                    "refused {}.{}: {peer} runs nothing of namespace {}",
                    w.name, w.namespace, w.namespace
                ));
            }
            Some(w) => Target::Named(w, request.port),
            None => Target::Exposed(request.port),
        };
        let local = self.backends(&target).map(|b| b.0).unwrap_or_default();
        let answer = if local.is_empty() {
            Err(format!("no ready instance of {target} here"))
        } else {
            connect(local[self.pick(local.len())]).await
        };
        match answer {
            Ok(mut to) => {
                stream
                    .get_mut()
                    .write_all(b"ok\n")
                    .await
                    .map_err(|e| e.to_string())?;
                carry(&mut stream, &mut to).await
            }
            Err(e) => {
                let _ = stream
                    .get_mut()
                    .write_all(format!("error: {e}\n").as_bytes())
                    .await;
                Err(e)
            }
        }
    }
}

/// One line (without its newline), at most [`MAX_REQUEST`] bytes, within the timeout.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<String, String> {
    let mut line = Vec::new();
    let read = async {
        let mut limited = tokio::io::AsyncReadExt::take(&mut *r, MAX_REQUEST as u64);
        limited.read_until(b'\n', &mut line).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, read)
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    if line.last() != Some(&b'\n') {
        return Err("the line is too long or cut short".into());
    }
    line.pop();
    String::from_utf8(line).map_err(|_| "the line is not UTF-8".into())
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr}: timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))
}

/// Copies both ways until both sides are done.
async fn carry<A, B>(a: &mut A, b: &mut B) -> Result<(), String>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(a, b)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where this node serves exposed ports, for its Node's `status.addresses`: the address
/// given, or (for every address) the machine's IPv4 addresses but loopback and the container
/// bridges, and its host name.
pub fn node_addresses(bind: IpAddr) -> Vec<NodeAddress> {
    let internal = |ip: IpAddr| NodeAddress {
        type_: "InternalIP".into(),
        address: ip.to_string(),
    };
    if !bind.is_unspecified() {
        return vec![internal(bind)];
    }
    let mut out: Vec<NodeAddress> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter(|i| !i.interface_name.starts_with("univrs") && !i.interface_name.starts_with("cni"))
        .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
        .filter(|ip| !ip.is_loopback())
        .map(internal)
        .collect();
    out.dedup();
    if let Ok(host) = nix::unistd::gethostname() {
        out.push(NodeAddress {
            type_: "Hostname".into(),
            address: host.to_string_lossy().into_owned(),
        });
    }
    out
}

/// Serves exposed ports on this node.
pub struct Exposer {
    routes: Arc<Routes>,
    bind: IpAddr,
    allowed: RangeInclusive<u16>,
    listeners: BTreeMap<u16, JoinHandle<()>>,
    /// Ports that could not be bound, warned about once each.
    refused: BTreeSet<u16>,
}

impl Exposer {
    /// Serves on `bind`, ports in `allowed` only.
    pub fn new(routes: Arc<Routes>, bind: IpAddr, allowed: RangeInclusive<u16>) -> Self {
        Self {
            routes,
            bind,
            allowed,
            listeners: BTreeMap::new(),
            refused: BTreeSet::new(),
        }
    }

    /// Answers streams from other nodes, and keeps the listeners in line with the exposed
    /// ports, waking on every change of the Workload cache.
    pub async fn run(mut self, mut wake: watch::Receiver<u64>) {
        let streams = tokio::spawn(serve_streams(self.routes.clone()));
        loop {
            self.sync();
            tokio::select! {
                r = wake.changed() => if r.is_err() { break },
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
        streams.abort();
        for (_, l) in std::mem::take(&mut self.listeners) {
            l.abort();
        }
    }

    fn sync(&mut self) {
        let all = self.routes.workloads.state();
        let now = holders(all.iter().map(|w| w.as_ref()));
        let want: BTreeSet<u16> = now
            .keys()
            .copied()
            .filter(|p| self.allowed.contains(p))
            .collect();
        *self
            .routes
            .holders
            .write()
            .unwrap_or_else(|p| p.into_inner()) = now;
        self.listeners.retain(|port, task| {
            let keep = want.contains(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        self.refused.retain(|p| want.contains(p));
        for port in want {
            if self.listeners.contains_key(&port) || self.refused.contains(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.bind, port);
            match std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(TcpListener::from_std)
            {
                Ok(listener) => {
                    tracing::info!(%addr, "serving an exposed port");
                    let routes = self.routes.clone();
                    self.listeners
                        .insert(port, tokio::spawn(accept(routes, listener, port)));
                }
                Err(e) => {
                    tracing::warn!(%addr, "cannot serve an exposed port: {e}");
                    self.refused.insert(port);
                }
            }
        }
    }
}

async fn accept(routes: Arc<Routes>, listener: TcpListener, port: u16) {
    loop {
        let Ok((conn, from)) = listener.accept().await else {
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            if let Err(e) = routes.route(Target::Exposed(port), conn).await {
                tracing::debug!(port, %from, "exposed port: {e}");
            }
        });
    }
}

async fn serve_streams(routes: Arc<Routes>) {
    let mut incoming = match routes.mesh.streams().accept(PROTOCOL) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("accepting exposed-port streams: {e:?}");
            return;
        }
    };
    while let Some((peer, stream)) = incoming.next().await {
        let routes = routes.clone();
        tokio::spawn(async move {
            if let Err(e) = routes.serve(peer, stream).await {
                tracing::debug!(%peer, "exposed-port stream: {e}");
            }
        });
    }
}

//! `univrs agent`: one node's agent. It registers its Node object, renews its Lease, runs the
//! instances the controller places on it as real containers and reports how they do.
//!
//! Writers (one field manager each, `univrs-agent-<node>`): the Node's spec identity, capacity,
//! addresses and machine labels; the node's Lease; in each Workload's status, the
//! `phase`, `ready`, `restarts`, `startedAt`, `message` and `usage` of the instances on this
//! node. The controller owns everything else.
//!
//! A restarted agent re-adopts what runs: containers keep running while the agent is down,
//! the records under `<data>/instances` say which instance each belongs to, and containers no
//! record claims are removed.

pub mod api;
pub mod capacity;
pub mod cluster;
pub mod desired;
pub mod gossip;
pub mod heard;
mod instance;
pub mod lease;
pub mod node;
pub mod observe;
pub mod probe;
pub mod record;
pub mod report;
pub mod sandbox;
pub mod status;
pub mod uptime;

use crate::runtime::RuntimeClient;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use univrs_api::resources::node::Node;
use univrs_api::resources::workload::Workload;

use desired::DesiredInstance;
use record::{InstanceRecord, Records};
use report::Reports;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (also the cgroup parent and the Lease name).
    pub node_name: String,
    /// Where the identity, containers, images and records live.
    pub data_dir: PathBuf,
    /// Labels to set on the Node (`--label k=v`).
    pub labels: BTreeMap<String, String>,
    /// Capacity overrides.
    pub capacity: capacity::CapacityOverrides,
    /// Where the mesh listens (multiaddresses) [default: every IPv4 interface, TCP and QUIC].
    pub listen: Vec<String>,
    /// Mesh peers to start from (multiaddresses ending in /p2p/<peer id>).
    pub bootstrap: Vec<String>,
    /// Find peers on the local links by mDNS.
    pub mdns: bool,
    /// The Lease duration (renewed every third of it).
    pub lease_duration: Duration,
    /// How often usage alone is written to Workload status.
    pub usage_interval: Duration,
    /// First restart delay of a crashing container (doubling up to `backoff_max`).
    pub backoff_base: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// The binary holding `univrs shim` (the running `univrs` binary).
    pub shim_bin: PathBuf,
    /// Images to import from local OCI layouts: (reference, directory).
    pub image_layouts: Vec<(String, PathBuf)>,
    /// Registries reached over plain HTTP (`host:port`).
    pub insecure_registries: Vec<String>,
    /// A docker-style `config.json` with registry logins.
    pub registry_auth: Option<PathBuf>,
    /// Where the CNI plugins are [default: /usr/lib/cni].
    pub cni_bin_dir: Option<PathBuf>,
    /// The containers' subnet [default: derived from the node name].
    pub pod_cidr: Option<crate::network::Ipv4Cidr>,
    /// Where the local API listens (port 0: a free port, published on the Node).
    pub api_addr: std::net::SocketAddr,
    /// The API's bearer token, if required.
    pub api_token: Option<String>,
    /// The API's TLS certificate and key (PEM files).
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// How often the vouches signed by this node's key are announced again on the mesh.
    pub vouch_interval: Duration,
}

/// The Node annotation holding the URL of the agent's API.
pub const API_ANNOTATION: &str = "univrs.io/agent-api";

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The identity key could not be loaded or created.
    #[error("identity: {0}")]
    Identity(#[from] crate::keyfile::KeyFileError),
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The error.
        source: kube::Error,
    },
    /// Another machine's identity holds this node name.
    #[error(
        "Node {name} belongs to another identity (peer {peer_id}); choose another --node-name, or delete that Node if the machine is gone for good"
    )]
    NameTaken {
        /// The node name.
        name: String,
        /// The identity that holds it.
        peer_id: String,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl AgentError {
    fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Kube { context, source }
    }
}

/// The longest data directory path: container ids are up to 46 characters and the runtime's
/// socket paths must fit in 108 bytes.
const MAX_DATA_DIR: usize = 40;

/// Runs the agent until `shutdown` resolves. Containers keep running after it returns.
pub async fn run(
    client: kube::Client,
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    crate::runtime::validate_agent_name(&cfg.node_name).map_err(AgentError::Invalid)?;
    let data_dir = std::path::absolute(&cfg.data_dir).map_err(|source| AgentError::Io {
        context: format!("resolving {}", cfg.data_dir.display()),
        source,
    })?;
    if data_dir.as_os_str().len() > MAX_DATA_DIR {
        return Err(AgentError::Invalid(format!(
            "--data-dir {} is {} bytes long; use a path of at most {MAX_DATA_DIR} (container socket paths must fit in 108 bytes)",
            data_dir.display(),
            data_dir.as_os_str().len()
        )));
    }
    std::fs::create_dir_all(&data_dir).map_err(|source| AgentError::Io {
        context: format!("creating {}", data_dir.display()),
        source,
    })?;
    let identity = crate::keyfile::load_or_generate(&data_dir.join("identity.key"))?;
    let manager = status::field_manager(&cfg.node_name);
    api::check_exposure(cfg.api_addr, cfg.api_tls.is_some(), cfg.api_token.is_some())
        .map_err(AgentError::Invalid)?;
    let tls = match &cfg.api_tls {
        Some((cert, key)) => Some(
            crate::tls::server_config(cert, key).map_err(|e| AgentError::Invalid(e.to_string()))?,
        ),
        None => None,
    };
    let api_listener = tokio::net::TcpListener::bind(cfg.api_addr)
        .await
        .map_err(|source| AgentError::Io {
            context: format!("binding the API to {}", cfg.api_addr),
            source,
        })?;
    let api_bound = api_listener.local_addr().map_err(|source| AgentError::Io {
        context: "reading the API's address".into(),
        source,
    })?;
    let api_url = format!(
        "{}://{api_bound}",
        if tls.is_some() { "https" } else { "http" }
    );

    let listen = gossip::parse_addrs("--listen", &cfg.listen).map_err(AgentError::Invalid)?;
    let bootstrap =
        gossip::parse_addrs("--bootstrap", &cfg.bootstrap).map_err(AgentError::Invalid)?;
    // The cluster view checks what peers claim, so it exists before the mesh does.
    let (cluster, cluster_tasks) = cluster::ClusterView::start(client.clone());
    let mesh = gossip::start(
        identity.clone(),
        listen,
        bootstrap,
        cfg.mdns,
        Arc::new(cluster.clone()),
    )
    .await
    .map_err(|e| AgentError::Invalid(format!("starting the mesh: {e}")))?;
    let multiaddrs: Vec<String> = mesh
        .dial_addrs()
        .await
        .map_err(|e| AgentError::Invalid(format!("reading the mesh's addresses: {e}")))?
        .iter()
        .map(ToString::to_string)
        .collect();
    tracing::info!(addresses = ?multiaddrs, "mesh listening");

    let mut labels = node::machine_labels();
    labels.extend(cfg.labels.clone());
    let facts = node::NodeFacts {
        name: cfg.node_name.clone(),
        identity: identity.public(),
        capacity: capacity::detect(&cfg.capacity),
        labels,
        multiaddrs,
        annotations: BTreeMap::from([(API_ANNOTATION.to_string(), api_url.clone())]),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    node::register(&nodes, &manager, &facts).await?;
    tracing::info!(node = %cfg.node_name, peer_id = %facts.identity.peer_id(), cpu = %facts.capacity.cpu.0, memory = %facts.capacity.memory.0, "registered the Node");
    let lease = tokio::spawn(lease::renew_forever(
        client.clone(),
        cfg.node_name.clone(),
        manager.clone(),
        cfg.lease_duration,
    ));

    let observations = tokio::spawn(observe::run(
        client.clone(),
        cfg.node_name.clone(),
        manager.clone(),
        uptime::UptimeTracker::open(data_dir.join("uptime.json")),
        Some(mesh.clone()),
        cluster.clone(),
        Duration::from_secs(15),
    ));

    let runtime = RuntimeClient::new(&cfg.shim_bin, data_dir.join("runtime"), &cfg.node_name)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let sandbox = Arc::new(build_sandbox(&cfg, &data_dir)?);
    let reports = Reports::default();
    let heard = heard::Heard::default();
    let heard_task = tokio::spawn(heard::listen(mesh.clone(), heard.clone()));
    let api_state = Arc::new(api::ApiState {
        node: cfg.node_name.clone(),
        peer_id: facts.identity.peer_id(),
        did: facts.identity.did(),
        client: client.clone(),
        runtime: runtime.clone(),
        reports: reports.clone(),
        token: cfg.api_token.clone(),
        started: std::time::Instant::now(),
        unauthorized: Default::default(),
        mesh: mesh.clone(),
        identity: identity.clone(),
        tls: tls.is_some(),
        heard,
        cluster: cluster.clone(),
    });
    let app = api::router(api_state);
    let api_task = match tls {
        Some(config) => tokio::spawn(async move {
            let _ = axum::serve(crate::tls::TlsListener::new(api_listener, config), app).await;
        }),
        None => tokio::spawn(async move {
            let _ = axum::serve(api_listener, app).await;
        }),
    };
    tracing::info!(url = %api_url, "agent API listening");
    let deps = Arc::new(instance::Deps {
        node: cfg.node_name.clone(),
        runtime: runtime.clone(),
        sandbox: sandbox.clone(),
        records: Records::new(data_dir.join("instances")),
        reports: reports.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "univrs-agent".into(),
                instance: Some(cfg.node_name.clone()),
            },
        ),
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
    });

    // Every Workload, cached; the agent acts only once the cache has listed them all, so a
    // restart never mistakes an empty cache for "nothing should run here".
    let (store, mut wake, watch_task) =
        cluster::watch_all(Api::<Workload>::all(client.clone()), "Workloads");
    let _ = store.wait_until_ready().await;

    let writer = status::StatusWriter::new(
        client.clone(),
        &cfg.node_name,
        store.clone(),
        wake.clone(),
        reports.clone(),
        cfg.usage_interval,
    );
    let status_task = tokio::spawn(writer.run());

    let mut supervisors: BTreeMap<String, watch::Sender<Option<DesiredInstance>>> = BTreeMap::new();
    adopt(&deps, &runtime, &mut supervisors, &store, &cfg.node_name).await;
    tracing::info!(instances = supervisors.len(), "agent running");
    let peers_task = tokio::spawn(gossip::bootstrap_from_nodes(
        client.clone(),
        cfg.node_name.clone(),
        mesh.clone(),
    ));
    let announce_task = tokio::spawn(gossip::announce(
        cfg.node_name.clone(),
        mesh.clone(),
        reports.clone(),
    ));
    let vouches_task = tokio::spawn(gossip::announce_vouches(
        identity.public().did(),
        mesh.clone(),
        cluster,
        cfg.vouch_interval,
    ));

    let sync = async {
        loop {
            sync_supervisors(&deps, &mut supervisors, &store, &cfg.node_name);
            tokio::select! {
                // Fails only once the watch task is gone, when the agent stops.
                _ = wake.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    };
    tokio::select! {
        _ = sync => {}
        _ = shutdown => {}
    }
    tracing::info!("agent stopping; containers keep running and are re-adopted at the next start");
    for t in [
        lease,
        observations,
        watch_task,
        status_task,
        api_task,
        peers_task,
        announce_task,
        vouches_task,
        heard_task,
    ]
    .into_iter()
    .chain(cluster_tasks)
    {
        t.abort();
    }
    mesh.shutdown().await;
    Ok(())
}

/// The image store, local layouts (the demo image, built from this machine's busybox, and
/// `--image-layout`s) and the container network.
fn build_sandbox(
    cfg: &AgentConfig,
    data_dir: &std::path::Path,
) -> Result<sandbox::Sandbox, AgentError> {
    let invalid = |e: &dyn std::fmt::Display| AgentError::Invalid(e.to_string());
    let images =
        crate::image::ImageStore::open(data_dir.join("images")).map_err(|e| invalid(&e))?;
    let mut pull = crate::image::PullOptions {
        insecure_registries: cfg.insecure_registries.clone(),
        ..Default::default()
    };
    if let Some(path) = &cfg.registry_auth {
        pull.docker_config = Some(crate::image::DockerConfig::load(path).map_err(|e| invalid(&e))?);
    }
    let mut layouts: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    let demo = crate::demo_image::DEMO_REFERENCE;
    if !cfg.image_layouts.iter().any(|(r, _)| r == demo) {
        match crate::demo_image::build(&data_dir.join("demo-image")) {
            Ok(dir) => {
                layouts.insert(demo.to_string(), (dir, "latest".to_string()));
            }
            Err(e) => tracing::warn!("no demo image {demo}: {e}"),
        }
    }
    for (reference, dir) in &cfg.image_layouts {
        layouts.insert(reference.clone(), (dir.clone(), "latest".to_string()));
    }
    let mut net = crate::network::CniConfig::new(cfg.node_name.clone(), data_dir.join("network"));
    if let Some(dir) = &cfg.cni_bin_dir {
        net.plugin_dirs = vec![dir.clone()];
    }
    net.subnet = cfg.pod_cidr;
    let cni = crate::network::Cni::new(net).map_err(|e| invalid(&e))?;
    Ok(sandbox::Sandbox::new(images, pull, layouts, Some(cni)))
}

/// Starts supervisors for the instances recorded on disk (re-adoption) and removes containers
/// that no record claims (orphans of a crash between starting a container and saving its
/// record cannot happen: the record is saved first; these are leftovers of removed records).
async fn adopt(
    deps: &Arc<instance::Deps>,
    runtime: &RuntimeClient,
    supervisors: &mut BTreeMap<String, watch::Sender<Option<DesiredInstance>>>,
    store: &reflector::Store<Workload>,
    node: &str,
) {
    let desired = desired::desired_on(node, store.state().iter());
    let records = deps.records.load_all();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    for rec in records {
        for c in rec.containers.values() {
            claimed.insert(c.id.clone());
        }
        let want = desired.get(&rec.id).cloned();
        tracing::info!(instance = %rec.id, keep = want.is_some(), "re-adopting");
        spawn_supervisor(deps, supervisors, rec, want);
    }
    let rt = runtime.clone();
    let orphans = tokio::task::spawn_blocking(move || {
        let mut removed = Vec::new();
        for id in rt.list().unwrap_or_default() {
            if !claimed.contains(&id) {
                if let Err(e) = rt.delete(&id) {
                    tracing::warn!(container = %id, "removing an orphan container: {e}");
                } else {
                    removed.push(id);
                }
            }
        }
        removed
    })
    .await
    .unwrap_or_default();
    for id in orphans {
        tracing::info!(container = %id, "removed an orphan container");
    }
}

/// Starts, updates and stops supervisors to match the instances placed on this node.
fn sync_supervisors(
    deps: &Arc<instance::Deps>,
    supervisors: &mut BTreeMap<String, watch::Sender<Option<DesiredInstance>>>,
    store: &reflector::Store<Workload>,
    node: &str,
) {
    let desired = desired::desired_on(node, store.state().iter());
    // Finished supervisors (their instance was cleaned up) are forgotten.
    supervisors.retain(|_, tx| !tx.is_closed());
    for (id, tx) in supervisors.iter() {
        let want = desired.get(id).cloned();
        tx.send_if_modified(|cur| {
            if *cur != want {
                *cur = want;
                true
            } else {
                false
            }
        });
    }
    for (id, d) in desired {
        if supervisors.contains_key(&id) {
            continue;
        }
        let rec = InstanceRecord::from(&d);
        // Saved before anything is created, so a crash right after leaves nothing unclaimed.
        if let Err(e) = deps.records.save(&rec) {
            tracing::warn!(instance = %rec.id, "saving the instance record: {e}");
            continue;
        }
        tracing::info!(instance = %rec.id, workload = %format!("{}/{}", d.namespace, d.workload), "starting an instance");
        spawn_supervisor(deps, supervisors, rec, Some(d));
    }
}

fn spawn_supervisor(
    deps: &Arc<instance::Deps>,
    supervisors: &mut BTreeMap<String, watch::Sender<Option<DesiredInstance>>>,
    rec: InstanceRecord,
    want: Option<DesiredInstance>,
) {
    let (tx, rx) = watch::channel(want);
    supervisors.insert(rec.id.clone(), tx);
    tokio::spawn(instance::supervise(deps.clone(), rec, rx));
}

/// Removes everything an agent left on this machine (`univrs reset`): its containers (killed),
/// their root filesystems and networks, its instance records and its cgroups. The identity key
/// stays. The agent must not be running.
pub fn reset(
    data_dir: &std::path::Path,
    node: &str,
    shim_bin: &std::path::Path,
) -> Result<usize, AgentError> {
    crate::runtime::validate_agent_name(node).map_err(AgentError::Invalid)?;
    let runtime = RuntimeClient::new(shim_bin, data_dir.join("runtime"), node)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let images = crate::image::ImageStore::open(data_dir.join("images"))
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let cni = crate::network::Cni::new(crate::network::CniConfig::new(
        node.to_string(),
        data_dir.join("network"),
    ))
    .ok();
    let sandbox = sandbox::Sandbox::new(images, Default::default(), BTreeMap::new(), cni);
    let ids = runtime
        .list()
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let mut failures = Vec::new();
    for id in &ids {
        if let Err(e) = runtime.delete(id) {
            failures.push(format!("container {id}: {e}"));
        }
        if let Err(e) = sandbox.remove_rootfs(id) {
            failures.push(format!("root filesystem of {id}: {e}"));
        }
    }
    let records = Records::new(data_dir.join("instances"));
    for rec in records.load_all() {
        if let Err(e) = records.remove(&rec.id) {
            failures.push(format!("record of {}: {e}", rec.id));
        }
    }
    // Root filesystems of containers that never started, and every network.
    if let Ok(dirs) = std::fs::read_dir(data_dir.join("images/rootfs")) {
        for d in dirs.flatten() {
            let id = d.file_name().to_string_lossy().to_string();
            if let Err(e) = sandbox.remove_rootfs(&id) {
                failures.push(format!("root filesystem of {id}: {e}"));
            }
        }
    }
    for id in sandbox.attached() {
        if let Err(e) = sandbox.network_down(&id) {
            failures.push(format!("network of {id}: {e}"));
        }
    }
    sandbox.remove_network();
    runtime.remove_cgroup_parent(true);
    if failures.is_empty() {
        Ok(ids.len())
    } else {
        Err(AgentError::Invalid(format!(
            "could not remove everything: {}",
            failures.join("; ")
        )))
    }
}

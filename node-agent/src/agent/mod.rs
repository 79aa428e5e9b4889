//! `univrs agent`: one node's agent. It registers its Node object, renews its Lease, runs the
//! instances the controller places on it as real containers and reports how they do.
//!
//! The agent, by the flows it runs:
//! - [`instances`]: what should run on this node and the supervisors that run it (sandbox,
//!   probes, records on disk, reports);
//! - [`kube`]: what the agent keeps in the cluster's API (Node, Lease, its instances' Workload
//!   status, the Node's observations) and the caches it reads;
//! - [`peers`]: the mesh: joining it, announcing, what was heard, and the cluster view that
//!   judges what peers claim;
//! - [`api`]: the local HTTP API.
//!
//! Writers (server-side apply, one field manager, `univrs-agent-<node>`; [`kube`] says which
//! file writes which field): the Node's spec identity, capacity, addresses, machine labels and
//! API annotation, and its `status.observations` (and, as `univrs-agent-<node>-bids`, its
//! `status.bids`); the node's Lease; in each Workload's status,
//! the `phase`, `ready`, `restarts`, `startedAt`, `message`, `usage` and `ip` of the instances
//! on this node. The controller owns everything else.
//!
//! On disk, under the data directory: `identity.key`, `instances/` (the instance records),
//! `uptime.json`, and the runtime's, images' and network's own directories (`runtime/`, with
//! the node's pinned user namespace `runtime/userns`; `images/`, `network/`). Under
//! `/run/univrs/<8 hex of SHA-256(data dir)>/`: the containers' network namespaces and bind
//! mounts of their root filesystems, which they open as unprivileged ids.
//!
//! A restarted agent re-adopts what runs: containers keep running while the agent is down,
//! the records under `<data>/instances` say which instance each belongs to, and containers no
//! record claims are removed.

pub mod api;
pub mod error;
pub mod expose;
pub mod instances;
pub mod kube;
pub mod names;
pub mod node_server;
pub mod peers;

pub use error::AgentError;

use self::kube::capacity;
use crate::runtime::RuntimeClient;
use ::kube::api::Api;
use instances::Supervisors;
use instances::records::Records;
use instances::reports::Reports;
use instances::sandbox::Sandbox;
use peers::cluster_view::ClusterView;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use univrs_api::resources::node::Node;
use univrs_api::resources::vouch::Vouch;
use univrs_api::resources::workload::Workload;
use univrs_api::system::{NODE_SERVER_ANNOTATION, NODE_SERVER_CERT_ANNOTATION};

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
    /// Mesh peers to start from (multiaddresses ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<String>,
    /// Find peers on the local links by mDNS.
    pub mdns: bool,
    /// Relay mesh connections for peers behind NAT (within the mesh's relay limits).
    pub relay: bool,
    /// Where exposed Workload ports are served (`spec.expose`).
    pub expose_address: std::net::IpAddr,
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
    /// The owner's terms for containers (limits, host ports).
    pub policy: instances::policy::OwnerPolicy,
    /// The first host id of the node's user namespace [default: derived from the node name,
    /// see `runtime::userns::default_base`].
    pub user_namespace_base: Option<u32>,
    /// The containers' subnet [default: derived from the node name].
    pub pod_cidr: Option<crate::network::Ipv4Cidr>,
    /// Turn on the kernel's `favordynmods` for cgroups (see
    /// [`crate::runtime::cgroup::favor_dynamic_changes`]).
    pub favor_dynmods: bool,
    /// Where the local API listens (port 0: a free port, published on the Node).
    pub api_addr: std::net::SocketAddr,
    /// The API's bearer token, if required.
    pub api_token: Option<univrs_io::token::Token>,
    /// The API's TLS certificate and key (PEM files).
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// How often the vouches signed by this node's key are announced again on the mesh.
    pub vouch_interval: Duration,
    /// Where the node server listens (instance logs for callers the API server vouches for;
    /// port 0: a free port, published on the Node).
    pub server_addr: std::net::SocketAddr,
}

/// The Node annotation holding the URL of the agent's API.
pub const API_ANNOTATION: &str = "univrs.io/agent-api";

/// Where callers reach the node server: its bind address when specific, else the address
/// exposed ports are served on when specific, else the machine's first address that is not
/// loopback (loopback when it has none).
fn advertised_address(cfg: &AgentConfig) -> std::net::IpAddr {
    if !cfg.server_addr.ip().is_unspecified() {
        return cfg.server_addr.ip();
    }
    expose::node_addresses(cfg.expose_address)
        .into_iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The longest data directory path: container ids are up to 46 characters and the runtime's
/// socket paths must fit in 108 bytes.
const MAX_DATA_DIR: usize = 40;

/// Runs the agent until `shutdown` resolves. Containers keep running after it returns.
pub async fn run(
    client: ::kube::Client,
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    crate::ids::validate_agent_name(&cfg.node_name).map_err(AgentError::Invalid)?;
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
    let manager = kube::field_manager(&cfg.node_name);
    univrs_io::listener::check_exposure(
        cfg.api_addr,
        cfg.api_tls.is_some(),
        cfg.api_token.is_some(),
    )
    .map_err(|e| {
        AgentError::Invalid(format!(
            "--api-addr {e} (--api-tls-cert, --api-tls-key and --api-token-file)"
        ))
    })?;
    let tls = match &cfg.api_tls {
        Some((cert, key)) => Some(
            univrs_io::tls::server_config(cert, key)
                .map_err(|e| AgentError::Invalid(e.to_string()))?
                .config,
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

    let listen = peers::join::parse_addrs("--listen", &cfg.listen).map_err(AgentError::Invalid)?;
    let bootstrap =
        peers::join::parse_addrs("--bootstrap", &cfg.bootstrap).map_err(AgentError::Invalid)?;
    // The cluster view checks what peers claim, so it exists before the mesh does.
    let (nodes, node_changes, nodes_watch) =
        kube::watch::watch_all(Api::<Node>::all(client.clone()), "Nodes");
    let (vouches, vouch_changes, vouches_watch) =
        kube::watch::watch_all(Api::<Vouch>::all(client.clone()), "Vouches");
    let cluster = ClusterView::new(nodes, node_changes, vouches, vouch_changes);
    let mesh = peers::join::start(
        identity.clone(),
        listen,
        bootstrap,
        cfg.mdns,
        cfg.relay,
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

    let runtime = RuntimeClient::new(&cfg.shim_bin, data_dir.join("runtime"), &cfg.node_name)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let reports = Reports::default();
    let node_server = node_server::start(
        client.clone(),
        cfg.node_name.clone(),
        runtime.clone(),
        reports.clone(),
        cfg.server_addr,
        advertised_address(&cfg),
        &data_dir.join("node-server"),
    )
    .await
    .map_err(|e| AgentError::Invalid(format!("starting the node server: {e}")))?;
    tracing::info!(url = %node_server.url, fingerprint = %node_server.fingerprint, "node server listening");

    let mut labels = kube::registration::machine_labels();
    labels.extend(cfg.labels.clone());
    let facts = kube::registration::NodeFacts {
        name: cfg.node_name.clone(),
        identity: identity.public(),
        capacity: capacity::detect(&cfg.capacity),
        labels,
        multiaddrs,
        annotations: BTreeMap::from([
            (API_ANNOTATION.to_string(), api_url.clone()),
            (NODE_SERVER_ANNOTATION.to_string(), node_server.url.clone()),
            (
                NODE_SERVER_CERT_ANNOTATION.to_string(),
                node_server.fingerprint.clone(),
            ),
        ]),
        host_ports: cfg.policy.host_port_range(),
    };
    let node_api: Api<Node> = Api::all(client.clone());
    kube::registration::register(&node_api, &manager, &facts).await?;
    tracing::info!(node = %cfg.node_name, peer_id = %facts.identity.peer_id(), cpu = %facts.capacity.cpu.0, memory = %facts.capacity.memory.0, "registered the Node");
    let multiaddrs_task = tokio::spawn(kube::registration::keep_multiaddrs(
        node_api.clone(),
        manager.clone(),
        facts.clone(),
        mesh.clone(),
        Duration::from_secs(5),
    ));
    let lease = tokio::spawn(kube::lease::renew_forever(
        client.clone(),
        cfg.node_name.clone(),
        manager.clone(),
        cfg.lease_duration,
    ));

    let observations = tokio::spawn(kube::observations::run(kube::observations::Observer {
        client: client.clone(),
        node: cfg.node_name.clone(),
        manager: manager.clone(),
        uptime: kube::uptime::UptimeTracker::open(data_dir.join("uptime.json")),
        mesh: Some(mesh.clone()),
        cluster: cluster.clone(),
        addresses: expose::node_addresses(cfg.expose_address),
        every: Duration::from_secs(15),
    }));

    if cfg.favor_dynmods {
        match crate::runtime::cgroup::favor_dynamic_changes() {
            Ok(crate::runtime::cgroup::Favoring::AlreadyOn) => {
                tracing::debug!("cgroup migrations are favoured already (favordynmods)")
            }
            Ok(crate::runtime::cgroup::Favoring::Mounted(at)) => tracing::info!(
                hierarchy = %at.display(),
                "cgroup migrations favoured (favordynmods), for quicker container starts"
            ),
            Err(e) => tracing::warn!(
                "{e}: each container start may wait for an RCU grace period to join its cgroups"
            ),
        }
    }
    // Everything the node's containers use together stays within what it advertises.
    let advertised = (
        facts.capacity.cpu.to_milli(),
        facts.capacity.memory.to_units(),
    );
    match advertised {
        (Ok(cpu), Ok(memory)) => runtime.limit_parent(cpu, memory).map_err(|e| {
            AgentError::Invalid(format!(
                "capping the containers at the node's capacity: {e}"
            ))
        })?,
        _ => tracing::warn!(
            "the node's capacity does not parse; its containers are not capped together"
        ),
    }
    // Root in a container is this range's first id on the host, nobody in particular.
    let id_base = cfg
        .user_namespace_base
        .unwrap_or_else(|| crate::runtime::userns::default_base(&cfg.node_name));
    let userns = runtime
        .pin_user_namespace(id_base, crate::runtime::userns::SIZE)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    tracing::info!(
        first_host_id = id_base,
        ids = crate::runtime::userns::SIZE,
        "containers run in the node's user namespace"
    );
    let exposed = exposed_dir(&data_dir)?;
    // Bound before the network exists: its policy and nat rules name the service's ports.
    let gateway = cfg
        .pod_cidr
        .unwrap_or_else(|| crate::network::default_subnet(&cfg.node_name))
        .gateway();
    let names = names::NameService::bind(gateway).map_err(|source| AgentError::Io {
        context: format!("binding the name service on {gateway}"),
        source,
    })?;
    let name_ports = names.ports().map_err(|source| AgentError::Io {
        context: "reading the name service's ports".into(),
        source,
    })?;
    let sandbox = Arc::new(build_sandbox(
        &cfg, &data_dir, id_base, &userns, &exposed, name_ports,
    )?);
    if let Some(cni) = sandbox.cni() {
        cni.refresh_rules().map_err(|e| {
            AgentError::Invalid(format!("making the container network's rules: {e}"))
        })?;
    }
    let heard = peers::heard::Heard::default();
    let heard_task = tokio::spawn(peers::heard::listen(mesh.clone(), heard.clone()));
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
    // TLS handshakes run concurrently, each with a deadline: a silent client holds up no one.
    let api_task = tokio::spawn(async move {
        if let Err(e) = univrs_io::listener::serve(api_listener, tls, app).await {
            tracing::error!("serving the API: {e}");
        }
    });
    tracing::info!(url = %api_url, "agent API listening");
    let deps = Arc::new(instances::Deps {
        node: cfg.node_name.clone(),
        runtime: runtime.clone(),
        sandbox: sandbox.clone(),
        records: Records::new(data_dir.join("instances")),
        reports: reports.clone(),
        events: univrs_io::events::Publisher::new(
            client.clone(),
            "univrs-agent",
            Some(cfg.node_name.clone()),
        ),
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
        policy: cfg.policy.clone(),
        userns: Some(userns),
        // The API server, when it runs on this machine, is among the ports the host listens
        // on, which are refused too (a hostPort's DNAT only takes traffic to this machine).
        reserved_ports: vec![api_bound.port()],
        identity: identity.clone(),
    });

    // Every Workload, cached; the agent acts only once the cache has listed them all, so a
    // restart never mistakes an empty cache for "nothing should run here".
    let (store, mut wake, watch_task) =
        kube::watch::watch_all(Api::<Workload>::all(client.clone()), "Workloads");
    let _ = store.wait_until_ready().await;

    let writer = kube::workload_status::StatusWriter::new(
        client.clone(),
        &cfg.node_name,
        manager.clone(),
        store.clone(),
        wake.clone(),
        reports.clone(),
        cfg.usage_interval,
    );
    let status_task = tokio::spawn(writer.run());

    let mut supervisors = Supervisors::new(deps);
    supervisors.adopt(&store).await;
    tracing::info!(instances = supervisors.count(), "agent running");
    let peers_task = tokio::spawn(peers::join::bootstrap_from_nodes(
        cluster.clone(),
        cfg.node_name.clone(),
        mesh.clone(),
    ));
    let announce_task = tokio::spawn(peers::announce::instance_reports(
        cfg.node_name.clone(),
        mesh.clone(),
        reports.clone(),
    ));
    let routes = Arc::new(expose::Routes::new(
        cfg.node_name.clone(),
        store.clone(),
        cluster.clone(),
        mesh.clone(),
    ));
    let expose_task = tokio::spawn(
        expose::Exposer::new(
            routes.clone(),
            cfg.expose_address,
            cfg.policy.host_ports.clone(),
        )
        .run(wake.clone()),
    );
    let names_task = match sandbox.cni() {
        Some(cni) => tokio::spawn(names.run(routes, store.clone(), cni.clone(), wake.clone())),
        None => tokio::spawn(async {}),
    };
    let vouches_task = tokio::spawn(peers::announce::vouches(
        identity.public().did(),
        mesh.clone(),
        cluster.clone(),
        cfg.vouch_interval,
    ));
    let bids_task = tokio::spawn(
        kube::bids::Bidder {
            client: client.clone(),
            node: cfg.node_name.clone(),
            manager: manager.clone(),
            identity: identity.clone(),
            workloads: store.clone(),
            cluster,
        }
        .run(wake.clone()),
    );

    let sync = async {
        loop {
            supervisors.sync(&store);
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
        multiaddrs_task,
        lease,
        observations,
        watch_task,
        status_task,
        api_task,
        peers_task,
        announce_task,
        expose_task,
        names_task,
        vouches_task,
        bids_task,
        heard_task,
        nodes_watch,
        vouches_watch,
    ] {
        t.abort();
    }
    mesh.shutdown().await;
    Ok(())
}

/// The image store (its files owned by the ids of the node's user namespace, from `id_base`),
/// local layouts (the demo image, built from this machine's busybox, and `--image-layout`s)
/// and the container network (namespaces owned by the user namespace pinned at `userns`).
fn build_sandbox(
    cfg: &AgentConfig,
    data_dir: &std::path::Path,
    id_base: u32,
    userns: &std::path::Path,
    exposed: &std::path::Path,
    names: crate::network::NamePorts,
) -> Result<Sandbox, AgentError> {
    let invalid = |e: &dyn std::fmt::Display| AgentError::Invalid(e.to_string());
    let images = crate::image::ImageStore::open_shifted(
        data_dir.join("images"),
        crate::image::RootfsMode::Auto,
        id_base,
    )
    .map_err(|e| invalid(&e))?;
    let mut pull = crate::image::PullOptions {
        insecure_registries: cfg.insecure_registries.clone(),
        max_image_bytes: Some(cfg.policy.max_image_bytes),
        ..Default::default()
    };
    if let Some(path) = &cfg.registry_auth {
        pull.docker_config = Some(crate::image::load_docker_config(path).map_err(|e| invalid(&e))?);
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
    net.isolation = Some(crate::network::Isolation {
        allow: cfg.policy.allow_egress.clone(),
        names: Some(names),
    });
    net.netns_owner = Some(crate::network::netns::Owner {
        helper: cfg.shim_bin.clone(),
        userns: userns.to_path_buf(),
    });
    net.netns_dir = Some(exposed.join("netns"));
    let cni = crate::network::Cni::new(net).map_err(|e| invalid(&e))?;
    Ok(Sandbox::new(images, pull, layouts, Some(cni))
        .with_layout_dirs(cfg.policy.oci_layout_dirs.clone())
        .with_exposed_roots(exposed.join("rootfs"))
        .with_names(exposed.join("resolv")))
}

/// Where this agent shows containers their network namespaces and root filesystems:
/// `/run/univrs/<8 hex of SHA-256(data dir)>`, every directory on the way traversable (not
/// listable). A container in the node's user namespace opens them as an unprivileged host
/// id, and the data directory's parents may be closed to it (a home directory, 0700).
fn exposed_dir(data_dir: &std::path::Path) -> Result<PathBuf, AgentError> {
    use sha2::Digest;
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let h = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let top = PathBuf::from("/run/univrs");
    let dir = top.join(hex::encode(&h[..4]));
    for d in [
        top.clone(),
        dir.clone(),
        dir.join("rootfs"),
        dir.join("netns"),
        dir.join("resolv"),
    ] {
        let io = |source| AgentError::Io {
            context: format!("creating {}", d.display()),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&d)
            .map_err(io)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).map_err(io)?;
    }
    Ok(dir)
}

/// Removes everything an agent left on this machine (`univrs reset`): its containers (killed),
/// their root filesystems and networks, its instance records and its cgroups. The identity key
/// stays. The agent must not be running.
pub fn reset(
    data_dir: &std::path::Path,
    node: &str,
    shim_bin: &std::path::Path,
) -> Result<usize, AgentError> {
    crate::ids::validate_agent_name(node).map_err(AgentError::Invalid)?;
    let runtime = RuntimeClient::new(shim_bin, data_dir.join("runtime"), node)
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let images = crate::image::ImageStore::open(data_dir.join("images"))
        .map_err(|e| AgentError::Invalid(e.to_string()))?;
    let exposed = exposed_dir(&std::path::absolute(data_dir).unwrap_or(data_dir.to_path_buf()))?;
    // The namespaces where the agent keeps them (its spare one among them).
    let mut net = crate::network::CniConfig::new(node.to_string(), data_dir.join("network"));
    net.netns_dir = Some(exposed.join("netns"));
    let cni = crate::network::Cni::new(net).ok();
    let sandbox = Sandbox::new(images, Default::default(), BTreeMap::new(), cni)
        .with_exposed_roots(exposed.join("rootfs"));
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
        if let Err(e) = records.remove(&rec.placement.id) {
            failures.push(format!("record of {}: {e}", rec.placement.id));
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
    if let Err(e) = crate::network::netns::remove(&runtime.layout().userns_file()) {
        failures.push(format!("the node's user namespace: {e}"));
    }
    // The containers' resolv.conf files: plain files, their containers gone.
    let resolv = exposed.join("resolv");
    if let Err(e) = std::fs::remove_dir_all(&resolv)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        failures.push(format!("{}: {e}", resolv.display()));
    }
    // Empty by now (its namespaces and roots are gone); left in place if not.
    for d in [
        exposed.join("rootfs"),
        exposed.join("netns"),
        exposed.clone(),
    ] {
        let _ = std::fs::remove_dir(d);
    }
    // The last agent of the machine takes the favordynmods hierarchy along.
    if let Err(e) = crate::runtime::cgroup::release_favor(&exposed) {
        failures.push(e.to_string());
    }
    if failures.is_empty() {
        Ok(ids.len())
    } else {
        Err(AgentError::Invalid(format!(
            "could not remove everything: {}",
            failures.join("; ")
        )))
    }
}

//! Container networking through CNI: each container gets its own network namespace, wired
//! by Debian's CNI plugins (`/usr/lib/cni`) to a bridge of its agent, with host ports
//! forwarded.
//!
//! For every container, [`Cni::setup`] makes a network namespace pinned at
//! `<state>/netns/<id>` ([`netns`]) and runs, as the CNI specification (v1.0.0) says a
//! runtime does:
//!
//! - the list `bridge` (veth pair, host-local IPAM leasing the address the agent chose, the
//!   bridge as gateway) + `portmap` (host ports, from `runtimeConfig.portMappings`; only when
//!   there are any) for `eth0`.
//!
//! A container usually gets no namespace of its own making: it takes the spare attachment
//! (see `SPARE`), a namespace made and wired by the same plugins a moment after the last
//! set-up, so its start does not wait for them; then only portmap runs, when it has host
//! ports.
//!
//! `lo` is set up by the agent itself where the namespace is made ([`netns::loopback_up`]),
//! not by the loopback plugin: one process less on every start and teardown. Records of
//! older set-ups still list the loopback plugin, and their teardown runs its DEL.
//!
//! Masquerading is the agent's own, one chain per network made before the first setup
//! (`iptables`), not the bridge plugin's chain per container: that took most of the time of
//! each ADD and DEL.
//!
//! The agent gives the namespace to the container (`ContainerConfig::netns`), and after
//! deleting the container calls [`Cni::teardown`]: DEL of its lists in reverse order, with
//! the cached results as `prevResult` and the very configuration ADD ran; then the nat
//! rules the plugins could not remove are removed by their CNI comment (the bridge plugin
//! finds its masquerade rules through the container's interface, so they outlive a deleted
//! veth), and the namespace is unmounted and removed. Teardown is idempotent and works on a setup that
//! never finished (the agent was killed during it), so the agent can always clean up.
//!
//! **Several agents on one machine.** Everything is derived from the agent name, so agents
//! side by side share nothing:
//!
//! - the network name and the bridge are `univrs-<h>` where `<h>` is the first 8 hex digits
//!   of SHA-256(agent name): 15 characters, exactly what IFNAMSIZ allows. The network name
//!   also keys portmap's and the bridge's iptables chains (with the container id), so two
//!   agents with a container `web-0` each never touch each other's rules;
//! - the subnet is configured per agent; the default is `10.89.<b>.0/24` with `<b>` another
//!   byte of that hash. [`Cni::new`] refuses a subnet that overlaps a route of another
//!   interface (e.g. another agent's bridge), so a collision is an error, not a broken
//!   network: give agents explicit subnets when running many;
//! - IPAM leases live in `<state>/ipam/<network>/` and namespaces in `<state>/netns/`.
//!
//! **Host ports on 127.0.0.1.** Debian's portmap (1.1) DNATs in both PREROUTING and OUTPUT
//! (`--dst-type LOCAL`), marks connections from 127.0.0.1 for masquerading (`snat`, on by
//! default) and itself sets `net.ipv4.conf.<bridge>.route_localnet=1` so that 127/8
//! traffic may cross to the bridge. The bridge plugin (`isGateway`) itself sets
//! `net.ipv4.ip_forward=1`. So the agent sets no sysctl: the plugins set exactly the two
//! they need. Hosts whose FORWARD policy is DROP (e.g. with Docker) still reach host ports
//! from the host itself, but traffic from other machines then needs a FORWARD rule.
//!
//! **Concurrency.** Setups and teardowns of different containers run in parallel:
//! host-local locks its lease directory, the bridge plugin tolerates a bridge another call
//! just made, iptables-nft commits atomically, and every per-container iptables chain is
//! keyed by (network, container). Calls for the same container wait for each other, and
//! host ports are checked and claimed under one lock. Use one [`Cni`] per state directory.
//!
//! IPv4 only.

mod attachment;
mod conflist;
mod error;
mod iptables;
pub mod netns;
mod plugin;
pub mod policy;
pub mod subnet;

pub use attachment::{Attachment, IpAssignment, PortMapping, Protocol};
pub use conflist::CNI_VERSION;
pub use error::NetworkError;
pub use iptables::NamePorts;
pub use policy::Isolation;
pub use subnet::Ipv4Cidr;

use attachment::{NetworkState, Record};
use error::io_err;
use plugin::{Call, Op, Plugins};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Where Debian installs the CNI plugins.
pub const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/cni";

/// The plugins the agent's networks use.
pub const PLUGINS: &[&str] = &["bridge", "host-local", "portmap"];

/// The container's interface.
pub const CONTAINER_IFNAME: &str = "eth0";

/// How long one plugin may run by default.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// IFNAMSIZ minus the terminating NUL.
const MAX_IFNAME: usize = 15;

/// How an agent's networking is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// The agent name (see `runtime::validate_agent_name`); names the bridge and network.
    pub agent: String,
    /// Where attachments, namespaces and IPAM leases live (e.g. `<data dir>/network`).
    pub state_dir: PathBuf,
    /// Where plugins are looked up, in order [default: `/usr/lib/cni`].
    pub plugin_dirs: Vec<PathBuf>,
    /// The bridge [default: [`default_network_name`] of the agent].
    pub bridge: Option<String>,
    /// The containers' subnet [default: [`default_subnet`] of the agent].
    pub subnet: Option<Ipv4Cidr>,
    /// How long one plugin may run before it is killed.
    pub plugin_timeout: Duration,
    /// The network policy (see [`policy`]); `None`: containers reach anything (tests of the
    /// plumbing alone).
    pub isolation: Option<Isolation>,
    /// Who owns the namespaces made for containers: the node's user namespace (containers
    /// in it can only join namespaces it owns); `None`: the agent's own.
    pub netns_owner: Option<netns::Owner>,
    /// Where the namespaces are pinned [default: `<state_dir>/netns`]. A container in the
    /// node's user namespace opens its own as an unprivileged host id, so every directory on
    /// the way must be traversable (the agent uses one under /run).
    pub netns_dir: Option<PathBuf>,
}

impl CniConfig {
    /// The defaults for agent `agent` keeping its state in `state_dir`.
    pub fn new(agent: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            agent: agent.into(),
            state_dir: state_dir.into(),
            plugin_dirs: vec![PathBuf::from(DEFAULT_PLUGIN_DIR)],
            bridge: None,
            subnet: None,
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
            isolation: Some(Isolation::default()),
            netns_owner: None,
            netns_dir: None,
        }
    }
}

fn agent_hash(agent: &str) -> [u8; 32] {
    Sha256::digest(agent.as_bytes()).into()
}

/// The network (and default bridge) name of agent `agent`: `univrs-` and 8 hex digits of
/// SHA-256 of the name (15 characters, the longest interface name Linux allows).
pub fn default_network_name(agent: &str) -> String {
    let h = agent_hash(agent);
    format!("univrs-{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}

/// The default subnet of agent `agent`: `10.89.<b>.0/24`, `<b>` a byte of SHA-256 of the
/// name (one of 256: set subnets explicitly when running many agents on one machine).
pub fn default_subnet(agent: &str) -> Ipv4Cidr {
    let b = agent_hash(agent)[4];
    Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 89, b, 0), 24).expect("a /24 network address")
}

/// Checks an interface name: 1 to 15 of `A-Z a-z 0-9 _ - .`, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME || name == "." || name == ".." {
        return Err(format!(
            "interface name {name:?} must be 1 to {MAX_IFNAME} characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "interface name {name:?} contains {c:?}; use letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(())
}

/// An agent's CNI networking (cheap to clone; clones share their locks).
#[derive(Debug, Clone)]
pub struct Cni {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    network: String,
    bridge: String,
    subnet: Ipv4Cidr,
    state_dir: PathBuf,
    plugins: Plugins,
    /// Containers with a setup, teardown or check under way.
    busy: Mutex<HashSet<String>>,
    idle: Condvar,
    /// Held while host ports are checked and claimed.
    ports: Mutex<()>,
    /// Whether this process has made the network's masquerade rules.
    masquerading: Mutex<bool>,
    isolation: Option<Isolation>,
    netns_owner: Option<netns::Owner>,
    netns_dir: PathBuf,
    /// Held while the policy is rebuilt from the attachments (one rebuild at a time, so the
    /// last one reflects every attachment); holds the containers being torn down, which no
    /// rebuild puts back (their addresses are about to be released, maybe to another group).
    policy: Mutex<HashSet<String>>,
    /// The spare lock (see `SpareGuard`).
    spare: Mutex<bool>,
    /// Whether a thread is about to make the spare attachment.
    making_spare: std::sync::atomic::AtomicBool,
}

/// A policy rebuild under way (see [`Cni::begin_setup`]).
#[derive(Debug)]
#[must_use = "the policy is in force only once the job is done"]
pub struct PolicyJob(Option<std::thread::JoinHandle<Result<(), NetworkError>>>);

impl PolicyJob {
    /// A job with nothing left to do.
    pub fn done() -> Self {
        Self(None)
    }

    /// Waits until the policy is in force.
    pub fn wait(self) -> Result<(), NetworkError> {
        match self.0 {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(NetworkError::Invalid(
                    "the network policy rebuild panicked".into(),
                ))
            }),
            None => Ok(()),
        }
    }
}

/// Holds a container id in [`Inner::busy`] until dropped.
struct Busy<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(&self.inner.busy).remove(&self.id);
        self.inner.idle.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves the data consistent (a set of ids, or nothing).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cni {
    /// Checks the configuration (names, subnet, that every plugin is installed, that the
    /// subnet overlaps no other interface's route) and creates the state directories.
    pub fn new(config: CniConfig) -> Result<Self, NetworkError> {
        crate::ids::validate_agent_name(&config.agent).map_err(NetworkError::Invalid)?;
        let network = default_network_name(&config.agent);
        let bridge = config.bridge.clone().unwrap_or_else(|| network.clone());
        validate_ifname(&bridge).map_err(|e| NetworkError::Invalid(format!("bridge: {e}")))?;
        let subnet = config
            .subnet
            .unwrap_or_else(|| default_subnet(&config.agent));
        if !(8..=30).contains(&subnet.prefix()) {
            return Err(NetworkError::Invalid(format!(
                "subnet {subnet}: the prefix length must be 8 to 30"
            )));
        }
        if config.plugin_dirs.is_empty() {
            return Err(NetworkError::Invalid(
                "no CNI plugin directory configured".into(),
            ));
        }
        let state_dir = std::path::absolute(&config.state_dir)
            .map_err(io_err(format!("resolving {}", config.state_dir.display())))?;
        let plugins = Plugins {
            dirs: config.plugin_dirs.clone(),
            timeout: config.plugin_timeout,
            ipv4_only_path: state_dir.join("ipv4-only-path"),
        };
        for p in PLUGINS {
            plugins.find(p)?;
        }
        if config.isolation.is_some() {
            policy::ensure_bridge_filtering()?;
        }
        let routes =
            subnet::host_routes().map_err(io_err("reading the host's routes (/proc/net/route)"))?;
        if let Some((iface, other)) = routes
            .iter()
            .find(|(iface, other)| *iface != bridge && other.overlaps(&subnet))
        {
            return Err(NetworkError::SubnetOverlap {
                subnet: subnet.to_string(),
                other: other.to_string(),
                iface: iface.clone(),
            });
        }
        let netns_dir = config
            .netns_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("netns"));
        let cni = Self {
            inner: Arc::new(Inner {
                network,
                bridge,
                subnet,
                state_dir,
                plugins,
                busy: Mutex::new(HashSet::new()),
                idle: Condvar::new(),
                ports: Mutex::new(()),
                masquerading: Mutex::new(false),
                isolation: config.isolation.clone(),
                netns_owner: config.netns_owner.clone(),
                netns_dir,
                policy: Mutex::new(HashSet::new()),
                spare: Mutex::new(false),
                making_spare: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        for dir in [
            cni.inner.state_dir.clone(),
            cni.netns_dir(),
            cni.attachments_dir(),
            cni.ipam_dir(),
            cni.inner.plugins.ipv4_only_path.clone(),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err(format!("creating {}", dir.display())))?;
        }
        if cni.inner.netns_owner.is_some() {
            // A container opens its namespace's file as its own root, an unprivileged host id
            // once it is in the node's user namespace: the way there must be traversable
            // (not listable).
            use std::os::unix::fs::PermissionsExt;
            let dir = cni.netns_dir();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                .map_err(io_err(format!("setting the mode of {}", dir.display())))?;
        }
        cni.inner.plugins.prepare_ipv4_only_path()?;
        Ok(cni)
    }

    /// The CNI network name (`univrs-<h>`; see the module docs).
    pub fn network_name(&self) -> &str {
        &self.inner.network
    }

    /// The bridge.
    pub fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// The containers' subnet.
    pub fn subnet(&self) -> Ipv4Cidr {
        self.inner.subnet
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// Where the namespaces are pinned.
    pub fn netns_dir(&self) -> PathBuf {
        self.inner.netns_dir.clone()
    }

    /// The namespace file of container `id`.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }

    /// Where the attachment files are.
    pub fn attachments_dir(&self) -> PathBuf {
        self.inner.state_dir.join("attachments")
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.attachments_dir().join(format!("{id}.json"))
    }

    /// host-local's data directory (its leases are in `<this>/<network name>/`).
    pub fn ipam_dir(&self) -> PathBuf {
        self.inner.state_dir.join("ipam")
    }

    /// Makes a network namespace pinned at `path`, owned as this network's containers need.
    fn make_namespace(&self, path: &Path) -> Result<(), netns::NetnsError> {
        match &self.inner.netns_owner {
            Some(owner) => netns::create_owned(path, owner),
            None => netns::create(path),
        }
    }

    /// The configuration list of `eth0` (with portmap when there are host ports).
    fn main_list(&self, with_ports: bool) -> Value {
        conflist::main_list(
            &self.inner.network,
            &self.inner.bridge,
            &self.inner.subnet,
            &self.ipam_dir(),
            with_ports,
        )
    }

    /// A record for container `id` in the namespace to be pinned at `netns`, with a free
    /// address. Called with the ports lock held; the caller saves it before anything is made,
    /// so a teardown after a crash finds it all.
    fn new_record(
        &self,
        id: &str,
        group: &str,
        ports: &[PortMapping],
        netns: PathBuf,
    ) -> Result<Record, NetworkError> {
        Ok(Record {
            container_id: id.to_string(),
            cni_id: None,
            group: group.to_string(),
            netns,
            ports: ports.to_vec(),
            // `lo` is up already: the namespace is made so (see `netns::loopback_up`).
            networks: vec![NetworkState {
                ifname: CONTAINER_IFNAME.into(),
                list: self.main_list(!ports.is_empty()),
                result: None,
            }],
            address: Some(self.free_address()?),
            complete: false,
            created_ms: crate::fsutil::now_ms(),
        })
    }

    /// What `plugin` of `list` gets on stdin for `record`'s container.
    fn stdin(&self, record: &Record, list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
        let address = record
            .address
            .map(|a| format!("{a}/{}", self.inner.subnet.prefix()));
        let runtime = conflist::RuntimeConfig {
            ports: &record.ports,
            address: address.as_deref(),
        };
        conflist::plugin_config(list, plugin, runtime, prev)
    }

    /// An address of the subnet that no container has or is about to get: neither leased by
    /// host-local (a file named by the address in its data directory) nor chosen by a setup
    /// under way (its record, the spare's included). Called with the `ports` lock held, before
    /// the record is saved, so two setups never choose the same one; host-local refuses a
    /// taken address anyway.
    fn free_address(&self) -> Result<std::net::Ipv4Addr, NetworkError> {
        let mut taken: HashSet<std::net::Ipv4Addr> = self
            .records()?
            .iter()
            .filter_map(|r| r.address.or_else(|| r.attachment(CONTAINER_IFNAME).ipv4()))
            .collect();
        taken.extend(self.spare_address()?);
        let leases = self.ipam_dir().join(&self.inner.network);
        match std::fs::read_dir(&leases) {
            Ok(entries) => taken.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str()?.parse::<std::net::Ipv4Addr>().ok()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("listing {}", leases.display()))(e)),
        }
        let subnet = &self.inner.subnet;
        subnet
            .hosts()
            .filter(|ip| *ip != subnet.gateway())
            .find(|ip| !taken.contains(ip))
            .ok_or_else(|| NetworkError::Invalid(format!("no free address left in {subnet}")))
    }

    /// Waits until no other call works on `id`, then claims it.
    fn claim(&self, id: &str) -> Result<Busy<'_>, NetworkError> {
        crate::ids::validate_id(id).map_err(NetworkError::Invalid)?;
        let mut busy = lock(&self.inner.busy);
        while busy.contains(id) {
            busy = self
                .inner
                .idle
                .wait(busy)
                .unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(id.to_string());
        Ok(Busy {
            inner: &self.inner,
            id: id.to_string(),
        })
    }

    /// Gives container `id` a network namespace attached to the agent's bridge, with
    /// `ports` forwarded from the host. Blocks while plugins run (from an async agent, call
    /// it on a blocking thread). On failure everything made is torn down again (if that
    /// fails too, the attachment stays recorded and [`Cni::teardown`] finishes it).
    pub fn setup(
        &self,
        id: &str,
        group: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, NetworkError> {
        let (attachment, policy) = self.begin_setup(id, group, ports, || {})?;
        policy.wait()?;
        Ok(attachment)
    }

    /// [`Cni::setup`], returning as soon as the namespace is attached: the policy that lets
    /// the container reach its group is rebuilt meanwhile ([`PolicyJob::wait`] for it). Until
    /// then the container reaches the internet but none of its group (the policy fails closed).
    /// `netns_made` is called once the namespace exists, before the plugins run: a container
    /// can be created in it meanwhile (and run once this returns).
    pub fn begin_setup(
        &self,
        id: &str,
        group: &str,
        ports: &[PortMapping],
        netns_made: impl FnOnce(),
    ) -> Result<(Attachment, PolicyJob), NetworkError> {
        attachment::validate_ports(ports)?;
        self.ensure_masquerade()?;
        let _busy = self.claim(id)?;
        let path = self.record_path(id);
        let t = std::time::Instant::now();
        let (mut record, spare) = {
            // The spare lock first: a spare being made holds it, then the ports lock.
            let spare = self.lock_spare_for_setup();
            let _ports = lock(&self.inner.ports);
            if Record::load(&path)?.is_some() {
                return Err(NetworkError::Exists(id.to_string()));
            }
            self.check_ports_free(ports)?;
            match self.take_spare(&spare, id, group, ports, &path)? {
                Some(record) => (record, true),
                None => {
                    let record = self.new_record(id, group, ports, self.netns_path(id))?;
                    // Recorded before anything is made, so a teardown after a crash finds it.
                    record.save(&path)?;
                    (record, false)
                }
            }
        };
        // The address is known already: the policy that lets the container reach its group
        // is rebuilt while the plugins run, not after them.
        let policy = self.rebuild_policy();
        // How many plugins (in ADD order, across both lists) were started: a failed setup
        // undoes exactly those. The spare's bridge ran already.
        let mut started = usize::from(spare);
        let added = self.add(&mut record, &path, &mut started, || {
            tracing::debug!(
                container = %id,
                spare,
                ms = t.elapsed().as_secs_f64() * 1e3,
                "network namespace made"
            );
            netns_made();
        });
        self.replenish_spare();
        match added {
            Ok(()) => Ok((record.attachment(CONTAINER_IFNAME), policy)),
            Err(e) => {
                if matches!(e, NetworkError::PluginNotFound { .. }) {
                    // The plugin that failed never ran.
                    started = started.saturating_sub(1);
                }
                if let Err(cleanup) = self.teardown_record(&record, &path, Some(started)) {
                    tracing::warn!(
                        id,
                        error = %cleanup,
                        "undoing a failed network setup failed; teardown will retry"
                    );
                }
                Err(e)
            }
        }
    }

    /// Runs the plugins of `record` that `started` (in ADD order) does not count yet, saving
    /// the record after each list. With none started, makes the namespace first; calls
    /// `netns_made` once it exists.
    fn add(
        &self,
        record: &mut Record,
        path: &Path,
        started: &mut usize,
        netns_made: impl FnOnce(),
    ) -> Result<(), NetworkError> {
        if *started == 0 {
            self.make_namespace(&record.netns)?;
        }
        netns_made();
        let mut done = *started;
        for i in 0..record.networks.len() {
            let net = &record.networks[i];
            let mut prev: Option<Value> = None;
            for plugin in conflist::plugins(&net.list) {
                if done > 0 {
                    // Added already: the list's result so far is the one recorded.
                    done -= 1;
                    prev = net.result.clone();
                    continue;
                }
                let config = self.stdin(record, &net.list, plugin, prev.as_ref());
                *started += 1;
                prev = self.inner.plugins.run(&Call {
                    op: Op::Add,
                    container_id: record.cni_id(),
                    netns: Some(&record.netns),
                    ifname: &net.ifname,
                    config: &config,
                    ipv4_only: false,
                })?;
            }
            record.networks[i].result = prev;
            record.save(path)?;
        }
        record.complete = true;
        record.save(path)
    }

    /// Makes this process's nat rules and network policy now, before any container is set up:
    /// after a restart, the containers already running must reach the name service on the
    /// ports this process listens on, not the last one's.
    pub fn refresh_rules(&self) -> Result<(), NetworkError> {
        self.ensure_masquerade()?;
        self.rebuild_policy().wait()
    }

    /// Makes the network's masquerade rules once per process (again after a restart: iptables
    /// may have been flushed meanwhile, and making them is idempotent).
    fn ensure_masquerade(&self) -> Result<(), NetworkError> {
        let mut done = lock(&self.inner.masquerading);
        if !*done {
            let names = self
                .inner
                .isolation
                .as_ref()
                .and_then(|i| i.names)
                .map(|ports| iptables::Names {
                    bridge: self.inner.bridge.clone(),
                    gateway: self.inner.subnet.gateway(),
                    ports,
                });
            iptables::ensure_masquerade(
                &self.inner.network,
                &self.inner.subnet.to_string(),
                names.as_ref(),
            )?;
            *done = true;
        }
        Ok(())
    }

    /// Host ports another attachment of this agent already has.
    fn check_ports_free(&self, ports: &[PortMapping]) -> Result<(), NetworkError> {
        if ports.is_empty() {
            return Ok(());
        }
        for other in self.records()? {
            for theirs in &other.ports {
                if let Some(p) = ports.iter().find(|p| p.collides(theirs)) {
                    return Err(NetworkError::PortInUse {
                        host_port: p.host_port,
                        protocol: p.protocol.to_string(),
                        other: other.container_id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Detaches container `id` and removes its namespace: CNI DEL of every network in
    /// reverse order (with the configuration ADD ran and its cached result), then any nat
    /// rule still tagged for the container, the namespace's mount and file, and last the
    /// attachment file. Works after a setup that never finished; a container without an
    /// attachment is not an error. If a plugin fails, the attachment stays, so calling it
    /// again retries.
    pub fn teardown(&self, id: &str) -> Result<(), NetworkError> {
        let _busy = self.claim(id)?;
        let path = self.record_path(id);
        match Record::load(&path)? {
            Some(record) => self.teardown_record(&record, &path, None),
            // Nothing recorded means nothing was made (the record is written first and
            // removed last), but a namespace at the path is ours to remove.
            None => Ok(netns::remove(&self.netns_path(id))?),
        }
    }

    /// DEL of every plugin, last first; with `started`, only of the first `started` plugins
    /// in ADD order (a setup undoing itself knows which ran; after a crash, all may have).
    fn teardown_record(
        &self,
        record: &Record,
        path: &Path,
        started: Option<usize>,
    ) -> Result<(), NetworkError> {
        // A namespace that is gone (not mounted) is not passed: plugins then skip what
        // lives inside it and still release addresses and host rules.
        // Out of its group before its address is released (and perhaps given to another).
        lock(&self.inner.policy).insert(record.container_id.clone());
        self.apply_policy()?;
        let netns = netns::is_mounted(&record.netns).then_some(record.netns.as_path());
        let calls: Vec<(&NetworkState, &Value)> = record
            .networks
            .iter()
            .flat_map(|net| conflist::plugins(&net.list).iter().map(move |p| (net, p)))
            .take(started.unwrap_or(usize::MAX))
            .collect();
        let mut first_error = None;
        for (net, plugin) in calls.into_iter().rev() {
            let config = self.stdin(record, &net.list, plugin, net.result.as_ref());
            if let Err(e) = self.inner.plugins.run(&Call {
                op: Op::Del,
                container_id: record.cni_id(),
                netns,
                ifname: &net.ifname,
                config: &config,
                ipv4_only: false,
            }) {
                // The other plugins still clean up what they made.
                tracing::warn!(id = %record.container_id, error = %e, "CNI DEL failed");
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        iptables::remove_leftovers(&self.inner.network, record.cni_id())?;
        netns::remove(&record.netns)?;
        Record::remove(path)?;
        lock(&self.inner.policy).remove(&record.container_id);
        Ok(())
    }

    /// Rebuilds the policy on a thread of its own (see [`Cni::begin_setup`]).
    fn rebuild_policy(&self) -> PolicyJob {
        if self.inner.isolation.is_none() {
            return PolicyJob(None);
        }
        let cni = self.clone();
        PolicyJob(Some(std::thread::spawn(move || cni.apply_policy())))
    }

    /// The attached containers (their addresses and groups), as the attachments on disk say.
    pub fn members(&self) -> Result<Vec<policy::Member>, NetworkError> {
        let leaving = lock(&self.inner.policy).clone();
        self.members_but(&leaving)
    }

    fn members_but(&self, leaving: &HashSet<String>) -> Result<Vec<policy::Member>, NetworkError> {
        Ok(self
            .records()?
            .iter()
            .filter(|r| !leaving.contains(&r.container_id))
            .filter_map(|r| {
                Some(policy::Member {
                    ip: r.attachment(CONTAINER_IFNAME).ipv4().or(r.address)?,
                    group: r.group.clone(),
                })
            })
            .collect())
    }

    /// The gateway: the bridge's address on the containers' subnet.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.inner.subnet.gateway()
    }

    /// Rebuilds the network policy from the attachments on disk (see [`policy`]).
    fn apply_policy(&self) -> Result<(), NetworkError> {
        let Some(isolation) = &self.inner.isolation else {
            return Ok(());
        };
        let leaving = lock(&self.inner.policy);
        let members = self.members_but(&leaving)?;
        let lan: Vec<Ipv4Cidr> = subnet::connected_networks()
            .map_err(io_err("reading the host's routes (/proc/net/route)"))?
            .into_iter()
            .filter(|(iface, _)| *iface != self.inner.bridge)
            .map(|(_, c)| c)
            .collect();
        policy::restore(&policy::policy_script(
            &policy::save_filter()?,
            &self.inner.network,
            &self.inner.bridge,
            self.inner.subnet.gateway(),
            &lan,
            isolation,
            &members,
        ))
    }

    /// Verifies container `id`'s attachment (CNI CHECK of every network with the cached
    /// result, and that its namespace is still mounted), e.g. when a restarted agent
    /// re-adopts a running container. An error means: tear it down and set it up again.
    pub fn check(&self, id: &str) -> Result<Attachment, NetworkError> {
        let _busy = self.claim(id)?;
        let record =
            Record::load(&self.record_path(id))?.ok_or(NetworkError::NotFound(id.to_string()))?;
        if !record.complete {
            return Err(NetworkError::Incomplete(id.to_string()));
        }
        if !netns::is_mounted(&record.netns) {
            return Err(NetworkError::NetnsGone {
                id: id.to_string(),
                path: record.netns.clone(),
            });
        }
        // portmap before 1.3 (Debian ships 1.1) CHECKs its IPv6 rules whenever ip6tables
        // works, even for a container without an IPv6 address, and so always fails
        // (fixed upstream in containernetworking/plugins fb5d195f); it skips IPv6 when
        // ip6tables is not on its PATH.
        let attachment = record.attachment(CONTAINER_IFNAME);
        let ipv4_only = attachment.ips.iter().all(|ip| ip.address.is_ipv4());
        for net in &record.networks {
            for plugin in conflist::plugins(&net.list) {
                let config = self.stdin(&record, &net.list, plugin, net.result.as_ref());
                self.inner.plugins.run(&Call {
                    op: Op::Check,
                    container_id: record.cni_id(),
                    netns: Some(&record.netns),
                    ifname: &net.ifname,
                    config: &config,
                    ipv4_only,
                })?;
            }
        }
        Ok(attachment)
    }

    /// The attachment of container `id`, if it has one.
    pub fn attachment(&self, id: &str) -> Result<Option<Attachment>, NetworkError> {
        crate::ids::validate_id(id).map_err(NetworkError::Invalid)?;
        Ok(Record::load(&self.record_path(id))?.map(|r| r.attachment(CONTAINER_IFNAME)))
    }

    /// Every attachment on disk, by container id, finished or not (what a restarted agent
    /// checks or tears down).
    pub fn list(&self) -> Result<Vec<Attachment>, NetworkError> {
        Ok(self
            .records()?
            .iter()
            .map(|r| r.attachment(CONTAINER_IFNAME))
            .collect())
    }

    fn records(&self) -> Result<Vec<Record>, NetworkError> {
        let dir = self.attachments_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("listing {}", dir.display()))(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".json").map(str::to_string))
            // The spare is no container's (see `SPARE`).
            .filter(|id| id != SPARE && crate::ids::validate_id(id).is_ok())
            .collect();
        ids.sort();
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            // Gone meanwhile (a concurrent teardown) is fine.
            if let Some(r) = Record::load(&self.record_path(&id))? {
                records.push(r);
            }
        }
        Ok(records)
    }

    /// Deletes the agent's bridge and its IPAM leases directory once no attachment is left
    /// (the bridge plugin never deletes bridges), e.g. when the agent leaves the machine.
    pub fn remove_bridge(&self) -> Result<(), NetworkError> {
        let left = self.records()?;
        if !left.is_empty() {
            return Err(NetworkError::Invalid(format!(
                "{} containers are still attached to {} (first: {}); tear them down first",
                left.len(),
                self.inner.bridge,
                left[0].container_id
            )));
        }
        self.remove_spare()?;
        if Path::new("/sys/class/net")
            .join(&self.inner.bridge)
            .exists()
        {
            let out = std::process::Command::new("ip")
                .args(["link", "delete", &self.inner.bridge, "type", "bridge"])
                .env_clear()
                .env("PATH", crate::runtime::spec::DEFAULT_PATH)
                .output()
                .map_err(io_err("running ip link delete (iproute2)"))?;
            let gone = !Path::new("/sys/class/net")
                .join(&self.inner.bridge)
                .exists();
            if !out.status.success() && !gone {
                return Err(NetworkError::Invalid(format!(
                    "deleting bridge {}: {}",
                    self.inner.bridge,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        iptables::remove_masquerade(&self.inner.network)?;
        *lock(&self.inner.masquerading) = false;
        if let Some(script) = policy::unpolicy_script(&policy::save_filter()?, &self.inner.network)
        {
            policy::restore(&script)?;
        }
        let leases = self.ipam_dir().join(&self.inner.network);
        crate::fsutil::remove_any(&leases).map_err(io_err(format!("removing {}", leases.display())))
    }
}

// The spare attachment. Making a container's network is the longest step of its start: a
// helper process makes the namespace (7 to 18 ms on a busy machine), then the bridge plugin
// and host-local run (12 ms of CPU between them, 20 to 30 ms on a busy machine), beside the
// container's own creation. A Kubernetes runtime makes a pod's sandbox before its containers;
// the agent goes one step further and makes the next sandbox before its container is even
// placed: a namespace already wired to the bridge, with its address leased, made a moment
// after each set-up. Taking it is two mount calls and two small files, so a start no longer
// waits for the plugins.
//
// The spare is an attachment like any other, made by the same plugins with the same
// configuration, under an id of its own (`spare-<ms>`: its `CNI_CONTAINERID`, by which
// host-local keys its lease). Its record is `attachments/.spare.json`, its namespace
// `netns/.spare`; no container id starts with a dot. The container that takes it keeps that
// id for the plugins (`Record::cni_id`), so its teardown runs DEL exactly as ADD ran. While
// it waits the spare is in no policy group: nothing runs in it.
//
// A spare survives an agent restart and is taken by the next agent; one whose namespace is
// gone (a reboot) or that was left half-made (the agent killed meanwhile) is torn down, not
// taken. Removing the network (`Cni::remove_bridge`, `univrs reset`) tears it down and makes
// no other until the next set-up.

/// The name of the spare's record and namespace (no container id starts with a dot).
const SPARE: &str = ".spare";

/// How long after a set-up the next spare is made: out of the way of the start that took the
/// last one (its shim is still busy then).
const SPARE_AFTER: Duration = Duration::from_millis(200);

/// The spare lock: held while the spare is taken, made or removed. Its value is true once
/// the network is being removed (no spare is made after that, until the next set-up). Taken
/// before the ports lock, never after it.
type SpareGuard<'a> = MutexGuard<'a, bool>;

/// Whether a spare can be taken: all its plugins ran and its namespace is still pinned (a
/// reboot unpins it).
fn is_finished(spare: &Record) -> bool {
    spare.complete && netns::is_mounted(&spare.netns)
}

impl Cni {
    /// Where the spare's namespace is pinned.
    fn spare_netns(&self) -> PathBuf {
        self.netns_dir().join(SPARE)
    }

    /// The spare's record file.
    fn spare_record(&self) -> PathBuf {
        self.record_path(SPARE)
    }

    /// Takes the spare lock for a set-up: spares may be made again afterwards.
    fn lock_spare_for_setup(&self) -> SpareGuard<'_> {
        let mut closing = lock(&self.inner.spare);
        *closing = false;
        closing
    }

    /// The address the spare has or is being given, if there is one (called with the ports
    /// lock held, so a spare being made has saved its record already).
    fn spare_address(&self) -> Result<Option<std::net::Ipv4Addr>, NetworkError> {
        Ok(Record::load(&self.spare_record())?.and_then(|r| r.address))
    }

    /// Gives container `id` the spare attachment, if a finished one is there: its namespace is
    /// pinned at the container's path and its record becomes the container's (saved at
    /// `path`), keeping the spare's plugin id and address. With `ports`, portmap is still to
    /// run (the record is not complete yet). Called with the spare and ports locks held
    /// (`_spare`). A spare that cannot be taken is torn down and `None` returned.
    fn take_spare(
        &self,
        _spare: &SpareGuard<'_>,
        id: &str,
        group: &str,
        ports: &[PortMapping],
        path: &Path,
    ) -> Result<Option<Record>, NetworkError> {
        let spare_path = self.spare_record();
        let Some(spare) = Record::load(&spare_path)? else {
            return Ok(None);
        };
        let result = spare
            .networks
            .first()
            .filter(|n| n.ifname == CONTAINER_IFNAME)
            .and_then(|n| n.result.clone());
        let netns = self.netns_path(id);
        let taken = match result {
            Some(result) if is_finished(&spare) => netns::repin(&spare.netns, &netns)
                .map(|()| result)
                .map_err(|e| e.to_string()),
            _ => Err("it was left unfinished, or its namespace is gone".to_string()),
        };
        let result = match taken {
            Ok(result) => result,
            Err(e) => {
                tracing::debug!("not taking the spare attachment: {e}");
                if let Err(e) = self.discard_spare(&spare, &spare_path) {
                    tracing::warn!(spare = %spare.container_id, "tearing down the spare attachment: {e}");
                }
                return Ok(None);
            }
        };
        let record = Record {
            container_id: id.to_string(),
            cni_id: Some(spare.cni_id().to_string()),
            group: group.to_string(),
            ports: ports.to_vec(),
            networks: vec![NetworkState {
                ifname: CONTAINER_IFNAME.into(),
                list: self.main_list(!ports.is_empty()),
                // The plugins name the namespace by its path: CHECK compares it.
                result: Some(attachment::moved(result, &spare.netns, &netns)),
            }],
            netns,
            address: spare.address,
            complete: ports.is_empty(),
            created_ms: crate::fsutil::now_ms(),
        };
        // Saved before the spare's record goes: a crash in between leaves two records of one
        // attachment, and the spare's is then dropped without a DEL (see `discard_spare`).
        record.save(path)?;
        Record::remove(&spare_path)?;
        Ok(Some(record))
    }

    /// Tears a spare down (DEL, then its namespace and record), unless a container took it
    /// and the agent stopped before the spare's record was removed: then only that record
    /// goes (a DEL would release the container's address and host ports).
    fn discard_spare(&self, spare: &Record, path: &Path) -> Result<(), NetworkError> {
        if self.records()?.iter().any(|r| r.cni_id() == spare.cni_id()) {
            Record::remove(path)
        } else {
            self.teardown_record(spare, path, None)
        }
    }

    /// Makes the next spare on a thread of its own, [`SPARE_AFTER`] from now, unless one is on
    /// its way; none once the network is being removed.
    fn replenish_spare(&self) {
        if self.inner.making_spare.swap(true, Ordering::AcqRel) {
            return;
        }
        let cni = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cni-spare".into())
            .spawn(move || {
                std::thread::sleep(SPARE_AFTER);
                let t = std::time::Instant::now();
                match cni.make_spare() {
                    Ok(true) => tracing::debug!(
                        ms = t.elapsed().as_secs_f64() * 1e3,
                        "spare network attachment made"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::debug!("making a spare network attachment: {e}"),
                }
                cni.inner.making_spare.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.inner.making_spare.store(false, Ordering::Release);
        }
    }

    /// Makes the spare unless a finished one is there or the network is being removed;
    /// returns whether it made one. A spare left unfinished is torn down first.
    fn make_spare(&self) -> Result<bool, NetworkError> {
        let closing = lock(&self.inner.spare);
        if *closing {
            return Ok(false);
        }
        let path = self.spare_record();
        if let Some(old) = Record::load(&path)? {
            if is_finished(&old) {
                return Ok(false);
            }
            self.discard_spare(&old, &path)?;
        }
        // A namespace without a record: a bare spare of an older agent, or one pinned just
        // before a crash.
        netns::remove(&self.spare_netns())?;
        let mut record = {
            let _ports = lock(&self.inner.ports);
            let id = format!("spare-{}", crate::fsutil::now_ms());
            let record = self.new_record(&id, "", &[], self.spare_netns())?;
            record.save(&path)?;
            record
        };
        let mut started = 0;
        if let Err(e) = self.add(&mut record, &path, &mut started, || {}) {
            if let Err(cleanup) = self.teardown_record(&record, &path, Some(started)) {
                tracing::warn!("undoing a failed spare attachment: {cleanup}");
            }
            return Err(e);
        }
        drop(closing);
        Ok(true)
    }

    /// Tears the spare down (as `discard_spare`), and makes no other until the next set-up.
    fn remove_spare(&self) -> Result<(), NetworkError> {
        let mut closing = lock(&self.inner.spare);
        *closing = true;
        let path = self.spare_record();
        if let Some(spare) = Record::load(&path)? {
            self.discard_spare(&spare, &path)?;
        }
        netns::remove(&self.spare_netns())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_differ_per_agent() {
        let a = default_network_name("node-1");
        let b = default_network_name("node-2");
        assert_eq!(a.len(), 15);
        assert!(validate_ifname(&a).is_ok());
        assert_ne!(a, b);
        assert_eq!(a, default_network_name("node-1"), "stable");
        assert_eq!(default_subnet("node-1").prefix(), 24);
        assert!(validate_ifname("a-very-long-bridge").is_err());
        assert!(validate_ifname("br/0").is_err());
    }
}

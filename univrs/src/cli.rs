//! The command line: every subcommand and flag, parsed with clap.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Univrs: a Kubernetes-style control plane for community-owned clouds.
#[derive(Debug, Parser)]
#[command(name = "univrs", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print or follow an instance's output, wherever it runs: the node that runs it checks
    /// with the API server that you may `get workloads/log` in the namespace.
    Logs(LogsArgs),
    /// Serve the community dashboard: machines, mesh, money and workloads in a browser, live.
    Dashboard(DashboardArgs),
    /// The Univrs container image, built offline from a univrs binary (`image build`).
    Image {
        /// What to do.
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD into --out.
    Crds {
        /// Write `<plural>.univrs.io.yaml` files into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out: fail if the files differ from the types instead of writing them.
        #[arg(long, requires = "out")]
        check: bool,
    },
    /// Run the upstream etcd, kube-apiserver and kube-controller-manager in the foreground.
    #[command(name = "control-plane", args_conflicts_with_subcommands = true)]
    ControlPlane(Box<ControlPlaneArgs>),
    /// Run the whole system on this machine: the local control plane (or an existing cluster
    /// with --kubeconfig), the CRDs, the controller and node agents, until Ctrl-C.
    Up {
        /// Control-plane data, agents' data and logs [default: $XDG_DATA_HOME/univrs].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The local API server's port on 127.0.0.1.
        #[arg(long, default_value_t = 6443)]
        port: u16,
        /// Also serve the API server on this machine's address ADDR, so other machines can
        /// join (`univrs token create`, then `univrs join` there): kube-apiserver then listens
        /// on all addresses (it binds one, and loopback must keep working) and its certificate
        /// names ADDR. Default: loopback only.
        #[arg(long, value_name = "ADDR")]
        advertise_address: Option<std::net::IpAddr>,
        /// Also write the admin kubeconfig (mode 0600) to this file.
        #[arg(long)]
        write_kubeconfig: Option<PathBuf>,
        /// Node agents to run besides the first (each with its own identity, ports, data and
        /// an even share of the machine's CPU and memory).
        #[arg(long, default_value_t = 0)]
        agents: u32,
        /// Use this cluster instead of starting the local control plane.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The agents' Lease duration.
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        lease_duration: std::time::Duration,
        /// How long a node may be NotReady before the controller moves its instances.
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        node_grace_period: std::time::Duration,
        /// How often the agents write metered usage alone (it becomes credit transfers).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        usage_interval: std::time::Duration,
    },
    /// Reconcile Workloads and Nodes (leader-elected; only the leader writes).
    Controller {
        /// Kubeconfig to use [default: KUBECONFIG, ~/.kube/config, or in-cluster].
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Where /metrics and /healthz listen (read-only; loopback by default).
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics_addr: std::net::SocketAddr,
        /// How long a node may be NotReady before its instances move elsewhere.
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        node_grace_period: std::time::Duration,
        /// How long a node's Lease counts as fresh after its last renewal (the agents'
        /// --lease-duration should match; the duration a node writes in its Lease is ignored).
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        node_lease_duration: std::time::Duration,
        /// The DID (`did:key:z6Mk…`) of a trust anchor, repeatable: a founding machine of the
        /// community whose vouches count as if its own service record were perfect, so the first
        /// vouches can lift reputation before anyone has a record.
        #[arg(long = "trust-anchor", value_name = "DID", value_parser = parse_did)]
        trust_anchors: Vec<String>,
        /// How much Ready service, witnessed by peers of standing, counts as one successful
        /// outcome in a node's service record (shorter only to compress time in tests).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        service_period: std::time::Duration,
        /// How often the revival pool pays a tenth of what it holds back out to the nodes.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        revival_interval: std::time::Duration,
        /// How long a node may stay lost (its Lease lapsed) before its credit is settled through
        /// the revival pool as if it had left; it stays a Node and may come back.
        #[arg(long, default_value = "3days", value_parser = humantime::parse_duration)]
        revival_grace: std::time::Duration,
        /// The ClusterRole a joined node is bound to when its certificate is approved (the Helm
        /// chart's is `<release>-node`).
        #[arg(long, default_value = univrs_api::system::NODE_CLUSTER_ROLE)]
        node_cluster_role: String,
        /// How long an auction among Auction-priced nodes takes sealed bids for an instance
        /// before it is awarded.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        auction_window: std::time::Duration,
        /// Log as JSON lines instead of text (the level comes from RUST_LOG).
        #[arg(long)]
        log_json: bool,
    },
    /// Run this machine's node agent: its Node object and Lease, and the instances placed on it
    /// as real containers. Containers keep running when the agent stops; it re-adopts them.
    Agent(Box<AgentArgs>),
    /// Remove everything a stopped agent left on this machine: its containers (killed), their
    /// root filesystems and networks, and its cgroups. The identity key stays.
    Reset {
        /// The agent's data directory.
        #[arg(long, default_value = "/var/lib/univrs/agent")]
        data_dir: PathBuf,
        /// The agent's node name [default: NODE_NAME, else the host name].
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
    },
    /// Sign a Vouch with a node's key and print it as a manifest (pipe it to `kubectl apply -f -`).
    Vouch {
        /// The voucher's key file (an agent's is `<data-dir>/identity.key`).
        #[arg(long)]
        identity: PathBuf,
        /// Who is vouched for: a DID, PeerId or NodeId, or a Node's name (looked up with the
        /// kubeconfig).
        #[arg(long)]
        subject: String,
        /// How strongly, from 0 to 1.
        #[arg(long, default_value_t = 0.8)]
        weight: f64,
        /// Why, for people.
        #[arg(long, default_value = "")]
        reason: String,
        /// How long the vouch holds.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        expires_in: std::time::Duration,
        /// The Vouch's name [default: derived from voucher and subject].
        #[arg(long)]
        name: Option<String>,
        /// Kubeconfig for looking up a Node's name [default: KUBECONFIG, ~/.kube/config].
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
    /// Run the pinned kubectl against the local control plane (KUBECONFIG, if set, wins).
    #[command(disable_help_flag = true)]
    Kubectl {
        /// Arguments for kubectl.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Create or inspect a node identity (one Ed25519 key; NodeId, PeerId and DID).
    Identity {
        /// generate or show.
        #[command(subcommand)]
        command: IdentityCommand,
    },
    /// Serve the Model Context Protocol so AI agents can deploy and inspect workloads
    /// (stdio by default; streamable HTTP on --listen, behind TLS and a bearer token).
    Mcp(McpArgs),
    /// Bootstrap tokens with which other machines join (`univrs join`): create, list, delete.
    Token {
        /// create, list or delete.
        #[command(subcommand)]
        command: TokenCommand,
        /// An admin's kubeconfig [default: KUBECONFIG, else the local control plane's].
        #[arg(long, env = "KUBECONFIG", global = true)]
        kubeconfig: Option<PathBuf>,
    },
    /// Join this machine to a community: check the server's CA against --ca-cert-hash, get
    /// this node's own certificate with the token, write <data-dir>/kubeconfig, run the agent.
    Join(Box<JoinArgs>),
    /// Manage the community's nodes as an admin.
    Node {
        /// remove.
        #[command(subcommand)]
        command: NodeCommand,
        /// An admin's kubeconfig [default: KUBECONFIG, else the local control plane's].
        #[arg(long, env = "KUBECONFIG", global = true)]
        kubeconfig: Option<PathBuf>,
    },
    /// Internal: the per-container shim the node agent spawns (runs youki's libcontainer).
    #[command(hide = true)]
    Shim {
        /// run or delete.
        #[command(subcommand)]
        command: ShimCommand,
    },
}

/// `univrs image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Write the image as an OCI image layout: the binary, the libraries it loads, what the
    /// agent runs (ip, iptables-save/-restore and their libraries), a non-root user, labels.
    /// Reproducible: the same inputs give the same digest. Push it with
    /// `skopeo copy oci:DIR:TAG docker://REGISTRY/univrs:TAG`.
    Build {
        /// The OCI layout directory to write (replaced).
        #[arg(long)]
        output: PathBuf,
        /// The univrs binary to put in [default: this one; build with `cargo build --release`].
        #[arg(long)]
        binary: Option<PathBuf>,
        /// The image's name (annotation io.containerd.image.name, with the tag).
        #[arg(long, default_value = "ghcr.io/univrs/univrs")]
        reference: String,
        /// Its tag [default: this version].
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
    },
}

/// The flags of `univrs logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The Workload.
    pub workload: String,
    /// Its namespace [default: the kubeconfig's, else default].
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The instance's index (the N of WORKLOAD-N) [default: the first placed].
    #[arg(long)]
    pub instance: Option<u32>,
    /// The container [default: the first].
    #[arg(short, long)]
    pub container: Option<String>,
    /// Keep printing what the instance writes, until it leaves its node or Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Print only the last N lines first [default: up to 10000].
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Kubeconfig to use [default: KUBECONFIG, the local control plane's, ~/.kube/config, or
    /// in-cluster].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// The flags of `univrs dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Where to serve the page. Off loopback it needs TLS and a token.
    #[arg(long, default_value = "127.0.0.1:8088", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Kubeconfig whose credentials the dashboard reads with [default: KUBECONFIG, the local
    /// control plane's, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve HTTPS (required off loopback): with --tls-cert/--tls-key, else a self-signed
    /// certificate made once in $XDG_DATA_HOME/univrs/dashboard.
    #[arg(long)]
    pub tls: bool,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require this bearer token (a file of mode 0600) for the page's data (required off
    /// loopback); the browser is given it once as ?token=….
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Log as JSON lines instead of text (the level comes from RUST_LOG).
    #[arg(long)]
    pub log_json: bool,
}

/// `univrs mcp …`
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Talk MCP over standard input and output (the default without --listen).
    #[arg(long, conflicts_with = "listen")]
    pub stdio: bool,
    /// Serve streamable HTTP on this address (endpoint /mcp), such as 127.0.0.1:8443.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Kubeconfig to use [default: KUBECONFIG, the local control plane's, ~/.kube/config, or
    /// in-cluster].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The bearer token clients must send, in a file of mode 0600 [default: made once as
    /// $XDG_DATA_HOME/univrs/mcp/token].
    #[arg(long, requires = "listen")]
    pub token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) [default: a self-signed one made once in
    /// $XDG_DATA_HOME/univrs/mcp].
    #[arg(long, requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, requires_all = ["listen", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (the token is still required); refused unless --listen is loopback.
    #[arg(long, requires = "listen", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub no_tls: bool,
    /// Sign vouches (vouch_create) with this key file, from `univrs identity generate`.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Log as JSON lines instead of text, to standard error (the level comes from RUST_LOG).
    #[arg(long)]
    pub log_json: bool,
}

/// `univrs shim …`
#[derive(Debug, Subcommand)]
pub enum ShimCommand {
    /// Create, start and supervise one container until it exits, then delete it.
    Run {
        /// The runtime state directory; the bundle is <root>/containers/<id>.
        #[arg(long)]
        root: PathBuf,
        /// The container id.
        #[arg(long)]
        id: String,
        /// Time between SIGTERM and SIGKILL when asked to stop without a grace period.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// Hold the created container until the byte `1` arrives on fd 3 (the agent's go-ahead
        /// once the container's network is up); anything else, or fd 3 closing, abandons it.
        #[arg(long)]
        gated: bool,
    },
    /// Run a command inside a running container, as the container runs (namespaces, cgroup,
    /// user, capabilities, seccomp); exit with its status.
    Exec {
        /// The runtime state directory.
        #[arg(long)]
        root: PathBuf,
        /// The container id.
        #[arg(long)]
        id: String,
        /// Kill the command after this long (exit status 137).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Pin the node's user namespace at PATH (container ids 0..SIZE are host ids BASE..).
    Userns {
        /// The file to pin it on.
        #[arg(long)]
        path: PathBuf,
        /// The first host id.
        #[arg(long)]
        base: u32,
        /// How many ids.
        #[arg(long, default_value_t = 65536)]
        size: u32,
    },
    /// Make a network namespace owned by the user namespace pinned at USERNS, pinned at PATH.
    Netns {
        /// The node's pinned user namespace.
        #[arg(long)]
        userns: PathBuf,
        /// The file to pin the network namespace on.
        #[arg(long)]
        path: PathBuf,
    },
    /// Force-delete a container whose shim died: kill it, remove its cgroup and state.
    Delete {
        /// The runtime state directory.
        #[arg(long)]
        root: PathBuf,
        /// The container id.
        #[arg(long)]
        id: String,
    },
}

/// `univrs control-plane …`
#[derive(Debug, Subcommand)]
pub enum ControlPlaneCommand {
    /// Build the pinned upstream binaries once into the cache (reused afterwards); print their directory.
    Build {
        /// The node binaries instead (kube-scheduler, kubelet, kube-proxy, pause), from the
        /// same pins, for `--kubelets`, tests and benchmarks.
        #[arg(long)]
        node: bool,
    },
    /// Write a kubeconfig for USER (a client certificate signed by this control plane's CA):
    /// for a kubelet (`system:node:NAME` in `system:nodes`), kube-proxy (`system:kube-proxy`)
    /// or a person. Authorization is RBAC's (and the Node authorizer's, for kubelets).
    Kubeconfig {
        /// The user name (the certificate's common name).
        #[arg(long)]
        user: String,
        /// Its group (the certificate's organization).
        #[arg(long)]
        group: Option<String>,
        /// Where to write it (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// The control plane's data directory (its CA signs the certificate) [default:
        /// $XDG_DATA_HOME/univrs/control-plane].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The API server's port on 127.0.0.1.
        #[arg(long, default_value_t = 6443)]
        port: u16,
    },
}

/// `univrs token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print the `univrs join` command that uses it.
    Create {
        /// How long the token works (joins after that need a new one; joined nodes keep
        /// their own credentials).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Who or what it is for, shown by `univrs token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the tokens (ids, expiry and description; never secrets).
    List,
    /// Delete a token: it stops working at once.
    Delete {
        /// The token's id (the part before the dot).
        id: String,
    },
}

/// `univrs node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Remove a node: its credentials stop working at once (its role binding is deleted) and
    /// its Node object is deleted, so its credit is settled by the revival path.
    Remove {
        /// The Node's name.
        name: String,
    },
}

/// `univrs join`'s flags: where to join, with what, and then the agent's own flags.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The API server, as `univrs token create` prints it (`https://ADDR:PORT`).
    #[arg(long)]
    pub server: String,
    /// The bootstrap token (`<id>.<secret>`); needed only for the first join, not when the
    /// data directory holds valid credentials from an earlier one.
    #[arg(long, env = "UNIVRS_JOIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The pin of the cluster's CA (`sha256:<hex>`): a server whose CA does not match is refused.
    #[arg(long)]
    pub ca_cert_hash: String,
    /// Only join (write the kubeconfig); do not run the agent.
    #[arg(long)]
    pub no_start: bool,
    /// The agent's flags (its --kubeconfig is ignored: a joined node uses <data-dir>/kubeconfig).
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// `univrs identity …`
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Generate a new key file (mode 0600); refuses to overwrite an existing file.
    Generate {
        /// Where to write the key [default: $XDG_DATA_HOME/univrs/identity.pem].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the NodeId, PeerId and DID of a key file.
    Show {
        /// The key file [default: $XDG_DATA_HOME/univrs/identity.pem].
        file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `univrs control-plane …`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ControlPlaneArgs {
    /// `build`: only build (or find) the pinned upstream binaries and print their directory.
    #[command(subcommand)]
    pub command: Option<ControlPlaneCommand>,
    /// Certificates, etcd data, logs and kubeconfigs [default: $XDG_DATA_HOME/univrs/control-plane].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The API server's port on 127.0.0.1.
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// etcd's client port on 127.0.0.1 (0: a free port at each start).
    #[arg(long, default_value_t = 0)]
    pub etcd_port: u16,
    /// Also write the admin kubeconfig (mode 0600) to this file.
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Use the upstream binaries in this directory instead of the cached build.
    #[arg(long, env = "UNIVRS_CONTROL_PLANE_BIN")]
    pub bin_dir: Option<PathBuf>,
    /// Also serve the API server on this machine's address ADDR, so other machines can
    /// join (`univrs token create`, then `univrs join` there): kube-apiserver then listens
    /// on all addresses (it binds one, and loopback must keep working) and its certificate
    /// names ADDR. Default: loopback only.
    #[arg(long, value_name = "ADDR")]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Let kubelets join and run Pods (a Helm release of Univrs, say): kube-scheduler,
    /// Node authorization, the API server's kubelet client certificate and the controllers
    /// Deployments, DaemonSets and Services need. Add a kubelet with `control-plane
    /// kubeconfig --user system:node:NAME --group system:nodes`.
    #[arg(long)]
    pub kubelets: bool,
    /// With --kubelets: kube-scheduler is in this directory instead of the cached build of
    /// the node binaries (`control-plane build --node`).
    #[arg(long, value_name = "DIR", env = "UNIVRS_NODE_BIN")]
    pub node_bin_dir: Option<PathBuf>,
}

/// `univrs agent …`
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Kubeconfig to use [default: KUBECONFIG, ~/.kube/config, or in-cluster].
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Identity key, container state, images and instance records (at most 40 bytes long).
    #[arg(long, default_value = "/var/lib/univrs/agent")]
    pub data_dir: PathBuf,
    /// The Node's name [default: NODE_NAME, else the host name].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The DaemonSet this agent runs in, NAMESPACE/NAME (the Helm chart sets it). Stopping
    /// once it is gone (`helm uninstall`), the agent removes its containers, mounts and
    /// networks as `univrs reset` does; while it exists (a rolling update), they keep running
    /// for the next agent.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_namespaced)]
    pub daemonset: Option<(String, String)>,
    /// A label for the Node (repeatable): `--label univrs.io/org=library`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// CPU to offer (`2`, `1500m`) [default: every online CPU].
    #[arg(long)]
    pub cpu: Option<String>,
    /// Memory to offer (`4Gi`) [default: all of the machine's memory].
    #[arg(long)]
    pub memory: Option<String>,
    /// GPUs to offer [default: the NVIDIA devices found].
    #[arg(long)]
    pub gpu: Option<i32>,
    /// How long the node's Lease lasts without renewal (renewed every third of it).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub lease_duration: std::time::Duration,
    /// How often metered usage alone is written to Workload status.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub usage_interval: std::time::Duration,
    /// First delay before restarting a crashed container; doubles per crash up to 5 minutes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub restart_backoff: std::time::Duration,
    /// An image from a local OCI image layout, as REFERENCE=DIR (repeatable): Workloads naming
    /// REFERENCE run it without a registry (`univrs up` gives its demo image this way).
    #[arg(long = "image-layout", value_name = "REFERENCE=DIR", value_parser = parse_layout)]
    pub image_layouts: Vec<(String, PathBuf)>,
    /// Where the mesh listens (repeatable multiaddress, e.g. /ip4/0.0.0.0/tcp/4001)
    /// [default: every IPv4 interface, TCP and QUIC, free ports; published on the Node].
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// A mesh peer to start from (repeatable; /ip4/…/tcp/…/p2p/<peer id>). Other Nodes'
    /// published addresses are used too.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Do not look for mesh peers on the local links by mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Do not relay mesh connections for peers behind NAT (circuit relay v2; by default a
    /// reachable node relays within limits: 128 reservations, 64 circuits, an hour or 64 MiB
    /// each). Peers behind NAT are still reached through other relays.
    #[arg(long)]
    pub no_relay: bool,
    /// The address Workloads' exposed ports (`spec.expose`) are served on: every member node
    /// accepts them there and carries each connection to a ready instance, here or through
    /// the mesh on another node.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub expose_address: std::net::IpAddr,
    /// How often the vouches signed by this node's key are announced again on the mesh, so
    /// peers that joined later hear them (new ones are announced at once).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub vouch_interval: std::time::Duration,
    /// A registry reached over plain HTTP, as HOST:PORT (repeatable); every other is HTTPS,
    /// except that one on this machine's loopback falls back to plain HTTP without the flag.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// A docker-style config.json with registry logins [default: none].
    #[arg(long)]
    pub registry_auth: Option<PathBuf>,
    /// Where the CNI plugins are [default: /usr/lib/cni].
    #[arg(long)]
    pub cni_bin_dir: Option<PathBuf>,
    /// The most processes and threads one container may have.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..))]
    pub pids_limit: u64,
    /// The host ports Workloads may publish (hostPort), LOW-HIGH; never the agent's, the API
    /// server's or one the host listens on. Published on the Node as spec.hostPorts.
    #[arg(long, default_value = "30000-32767", value_parser = univrs_node_agent::agent::instances::policy::parse_port_range)]
    pub host_ports: std::ops::RangeInclusive<u16>,
    /// A destination containers may reach although the network policy denies it by default
    /// (the host's networks, private and link-local ranges), as a CIDR (repeatable).
    #[arg(long = "allow-egress", value_name = "CIDR")]
    pub allow_egress: Vec<univrs_node_agent::network::Ipv4Cidr>,
    /// The first host id of the node's user namespace (65536 ids: root in a container is this
    /// id on the host) [default: a block above 2^21 chosen by the node name].
    #[arg(long, value_parser = clap::value_parser!(u32).range(65536..=4_294_901_760))]
    pub user_namespace_base: Option<u32>,
    /// The most one container's log keeps on disk (with its one rotated file).
    #[arg(long, default_value = "10Mi")]
    pub container_log_max_size: String,
    /// The most an image may weigh (compressed config and layers, as its manifest declares).
    #[arg(long, default_value = "4Gi")]
    pub max_image_size: String,
    /// A directory whose OCI layouts Workloads may name as `oci:DIR:TAG` (repeatable); none
    /// by default (`--image-layout` names single images).
    #[arg(long = "oci-layout-dir", value_name = "DIR")]
    pub oci_layout_dirs: Vec<PathBuf>,
    /// Turn on the kernel's favordynmods for cgroups (machine-wide: a container joins its
    /// cgroups in a fraction of a millisecond instead of waiting 5-16 ms for an RCU grace
    /// period; forks and exits take a few atomic operations more). `false` leaves it as is.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub favor_dynmods: bool,
    /// The containers' subnet on this node, e.g. 10.89.7.0/24 [default: derived from the node
    /// name; give each agent its own when several run on one machine].
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Where the agent's local API listens (port 0: a free port, published on the Node as the
    /// `univrs.io/agent-api` annotation). Off loopback it needs TLS and a token.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api_addr: std::net::SocketAddr,
    /// Where the node server listens: instance logs for callers from any machine, each
    /// authenticated (client certificate or a token for this node's audience) and authorized
    /// (`get workloads/log`) by the API server; always TLS, its certificate's fingerprint
    /// published on the Node (port 0: a free port, also published).
    #[arg(long, default_value = "0.0.0.0:0")]
    pub server_addr: std::net::SocketAddr,
    /// A file holding the API's bearer token, mode 0600, at least 32 characters (required
    /// for /api/… when given).
    #[arg(long)]
    pub api_token_file: Option<PathBuf>,
    /// The API's TLS certificate (PEM).
    #[arg(long, requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    #[arg(long, requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Log as JSON lines instead of text (the level comes from RUST_LOG).
    #[arg(long)]
    pub log_json: bool,
}

fn parse_layout(s: &str) -> Result<(String, PathBuf), String> {
    let (r, d) = s
        .split_once('=')
        .ok_or_else(|| format!("--image-layout {s:?} must look like REFERENCE=DIR"))?;
    if r.is_empty() || d.is_empty() {
        return Err(format!("--image-layout {s:?} must look like REFERENCE=DIR"));
    }
    Ok((r.to_string(), PathBuf::from(d)))
}

/// NAMESPACE/NAME.
fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must look like key=value"))?;
    if k.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_did(s: &str) -> Result<String, String> {
    univrs_api::identity::PublicIdentity::from_did(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a did:key of an Ed25519 key ({e}); `univrs identity show` prints a node's DID"))
}

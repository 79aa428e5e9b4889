//! `univrs control-plane`: the upstream etcd, kube-apiserver and kube-controller-manager,
//! supervised in the foreground.
//!
//! Failure policy: when a child dies unexpectedly, the supervisor prints its last log lines,
//! stops the others in order and exits non-zero. It does not restart children itself: a crash
//! loop of etcd or the API server hidden behind restarts is worse than a clear stop, and the
//! layer above (`univrs up`, systemd with `Restart=on-failure`) owns restarts with backoff.

pub mod binaries;
pub mod cluster_info;
pub mod kubeconfig;
pub mod pki;
pub mod process;

use anyhow::{Context, Result, bail};
use binaries::Binaries;
use process::Supervised;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to run the control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// Certificates, etcd data, logs and kubeconfigs live here.
    pub data_dir: PathBuf,
    /// The API server's port on 127.0.0.1.
    pub port: u16,
    /// etcd's client port (0: a free port at each start; only the API server talks to etcd).
    pub etcd_port: u16,
    /// Also write the admin kubeconfig here.
    pub write_kubeconfig: Option<PathBuf>,
    /// Where the upstream binaries are (default: built once per pin into the cache).
    pub bin_dir: Option<PathBuf>,
    /// Where other machines reach the API server (it then listens on every address, and its
    /// certificate names this one); loopback only when absent.
    pub advertise_address: Option<std::net::IpAddr>,
    /// Let kubelets join and run Pods: kube-scheduler, Node authorization, a kubelet client
    /// certificate and the controllers workloads need.
    pub kubelets: bool,
    /// With `kubelets`: where kube-scheduler is (default: the cached node build).
    pub node_bin_dir: Option<PathBuf>,
}

/// What kube-controller-manager runs. clusterrole-aggregation: the chart's univrs-view and
/// univrs-edit roles join view and edit. csrsigning signs the node certificates the Univrs
/// controller approves; csrcleaner and tokencleaner remove old requests and expired bootstrap
/// tokens.
const CONTROLLERS: &str = "namespace,garbagecollector,serviceaccount,serviceaccount-token,root-ca-cert-publisher,clusterrole-aggregation,csrsigning,csrcleaner,tokencleaner";

/// What kubelets' Pods need besides (`--kubelets`): node lifecycle (a kubelet registers its node
/// tainted not-ready until this controller sees it Ready), Deployments (the chart's controller
/// and MCP server), DaemonSets (its agents), Services' endpoints, PodDisruptionBudgets, and the
/// collection of orphaned Pods.
const POD_CONTROLLERS: &str =
    "nodelifecycle,deployment,replicaset,daemonset,endpointslice,disruption,podgc";

/// Files the control plane keeps under its data directory.
pub struct Layout {
    /// The data directory.
    pub root: PathBuf,
}

impl Layout {
    /// The admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.root.join("admin.kubeconfig")
    }
    fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    fn etcd(&self) -> PathBuf {
        self.root.join("etcd")
    }
}

/// Step-by-step progress on stderr, with how long each step took.
pub struct Progress {
    /// When the whole run started.
    pub started: Instant,
    step: Instant,
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            step: Instant::now(),
        }
    }
    /// Announces a step.
    pub fn begin(&mut self, what: &str) {
        self.step = Instant::now();
        eprintln!("  • {what} …");
    }
    /// Reports a step done.
    pub fn done(&self, what: &str) {
        eprintln!("  ✓ {what} ({} ms)", self.step.elapsed().as_millis());
    }
}

/// Runs the control plane until SIGINT/SIGTERM or until a child dies.
pub async fn run(opts: Options) -> Result<()> {
    let mut progress = Progress::new();
    let layout = Layout {
        root: opts.data_dir.clone(),
    };
    pki::create_private_dir(&layout.root)?;
    std::fs::create_dir_all(layout.logs())?;

    progress.begin("locating the upstream binaries");
    let bins = Binaries::resolve(opts.bin_dir.as_deref())?;
    let node_bins = if opts.kubelets {
        Some(Binaries::resolve_node(opts.node_bin_dir.as_deref())?)
    } else {
        None
    };
    progress.done(&format!("binaries in {}", bins.dir.display()));

    progress.begin("certificates and keys");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let advertised: Vec<std::net::IpAddr> = opts.advertise_address.into_iter().collect();
    let pki = pki::Pki::ensure(&layout.pki(), &[hostname.trim().to_string()], &advertised)?;
    let server = format!("https://127.0.0.1:{}", opts.port);
    kubeconfig::write(
        &layout.admin_kubeconfig(),
        &server,
        &pki.ca.cert,
        &pki.admin,
        "univrs-admin",
    )?;
    let kcm_kubeconfig = layout.root.join("controller-manager.kubeconfig");
    kubeconfig::write(
        &kcm_kubeconfig,
        &server,
        &pki.ca.cert,
        &pki.controller_manager,
        "kube-controller-manager",
    )?;
    let scheduler_kubeconfig = layout.root.join("scheduler.kubeconfig");
    if opts.kubelets {
        kubeconfig::write(
            &scheduler_kubeconfig,
            &server,
            &pki.ca.cert,
            &pki.scheduler,
            "kube-scheduler",
        )?;
    }
    if let Some(extra) = &opts.write_kubeconfig {
        kubeconfig::write(extra, &server, &pki.ca.cert, &pki.admin, "univrs-admin")?;
    }
    let authn = layout.root.join("authentication.yaml");
    pki::write_private(&authn, AUTHENTICATION_CONFIG)?;
    progress.done("certificates and keys");

    let etcd_port = if opts.etcd_port == 0 {
        process::free_port()?
    } else {
        opts.etcd_port
    };
    let etcd_peer_port = process::free_port()?;
    let mut children: Vec<Supervised> = Vec::new();

    progress.begin(&format!("etcd on 127.0.0.1:{etcd_port}"));
    let etcd_url = format!("https://127.0.0.1:{etcd_port}");
    let peer_url = format!("https://127.0.0.1:{etcd_peer_port}");
    let p = |path: &Path| path.display().to_string();
    let etcd_args = vec![
        "--name=univrs".into(),
        format!("--data-dir={}", p(&layout.etcd())),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=univrs={peer_url}"),
        format!("--cert-file={}", p(&pki.etcd_server.cert)),
        format!("--key-file={}", p(&pki.etcd_server.key)),
        format!("--trusted-ca-file={}", p(&pki.etcd_ca.cert)),
        "--client-cert-auth=true".into(),
        format!("--peer-cert-file={}", p(&pki.etcd_server.cert)),
        format!("--peer-key-file={}", p(&pki.etcd_server.key)),
        format!("--peer-trusted-ca-file={}", p(&pki.etcd_ca.cert)),
        "--peer-client-cert-auth=true".into(),
        "--log-level=warn".into(),
    ];
    children.push(process::spawn(
        "etcd",
        &bins.etcd,
        &etcd_args,
        &[],
        &layout.logs().join("etcd.log"),
    )?);
    wait_for_port(etcd_port, &mut children, Duration::from_secs(60)).await?;
    progress.done("etcd");

    progress.begin(&format!("kube-apiserver on {server}"));
    let (advertise, bind) = match opts.advertise_address {
        // kube-apiserver binds one address: all of them, so loopback keeps working beside ADDR.
        Some(a) => (a.to_string(), if a.is_ipv6() { "::" } else { "0.0.0.0" }),
        None => ("127.0.0.1".to_string(), "127.0.0.1"),
    };
    let mut apiserver_args = vec![
        format!("--advertise-address={advertise}"),
        format!("--bind-address={bind}"),
        // Joining machines present a bootstrap token (`univrs token create`) once, to ask for
        // their own certificate.
        "--enable-bootstrap-token-auth=true".into(),
        format!("--secure-port={}", opts.port),
        format!("--etcd-servers={etcd_url}"),
        format!("--etcd-cafile={}", p(&pki.etcd_ca.cert)),
        format!("--etcd-certfile={}", p(&pki.etcd_client.cert)),
        format!("--etcd-keyfile={}", p(&pki.etcd_client.key)),
        format!("--tls-cert-file={}", p(&pki.apiserver.cert)),
        format!("--tls-private-key-file={}", p(&pki.apiserver.key)),
        format!("--client-ca-file={}", p(&pki.ca.cert)),
        format!("--authentication-config={}", p(&authn)),
        // With kubelets, the Node authorizer first: a kubelet reads and writes only its own
        // Node and what its Pods need.
        format!(
            "--authorization-mode={}",
            if opts.kubelets { "Node,RBAC" } else { "RBAC" }
        ),
        // The node agent's DaemonSet (Helm chart) is privileged, as kubeadm and k3s allow.
        "--allow-privileged=true".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(&pki.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        format!("--cert-dir={}", p(&layout.root.join("apiserver-certs"))),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    if opts.kubelets {
        apiserver_args.extend([
            "--enable-admission-plugins=NodeRestriction".to_string(),
            format!(
                "--kubelet-client-certificate={}",
                p(&pki.kubelet_client.cert)
            ),
            format!("--kubelet-client-key={}", p(&pki.kubelet_client.key)),
            // Kubelets here are named, not resolvable: reach them by address.
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
        ]);
    }
    children.push(process::spawn(
        "kube-apiserver",
        &bins.kube_apiserver,
        &apiserver_args,
        &[],
        &layout.logs().join("kube-apiserver.log"),
    )?);
    let client = admin_client(&layout.admin_kubeconfig()).await?;
    wait_for_readyz(
        &client,
        &mut || check_children(&mut children),
        Duration::from_secs(180),
    )
    .await?;
    progress.done("kube-apiserver ready");

    let public_server = match opts.advertise_address {
        Some(a) => format!("https://{}", std::net::SocketAddr::new(a, opts.port)),
        None => server.clone(),
    };
    cluster_info::publish(&client, &public_server, &pki.ca.cert)
        .await
        .context("publishing kube-public/cluster-info for joining machines")?;

    progress.begin("kube-controller-manager");
    let kcm_port = process::free_port()?;
    let controllers = if opts.kubelets {
        format!("{CONTROLLERS},{POD_CONTROLLERS}")
    } else {
        CONTROLLERS.to_string()
    };
    let mut kcm_args = component_args(&kcm_kubeconfig, kcm_port);
    kcm_args.extend([
        format!(
            "--cert-dir={}",
            p(&layout.root.join("controller-manager-certs"))
        ),
        format!("--controllers={controllers}"),
        format!("--cluster-signing-cert-file={}", p(&pki.ca.cert)),
        format!("--cluster-signing-key-file={}", p(&pki.ca.key)),
        format!("--service-account-private-key-file={}", p(&pki.sa_key)),
        format!("--root-ca-file={}", p(&pki.ca.cert)),
        "--use-service-account-credentials=true".into(),
    ]);
    children.push(process::spawn(
        "kube-controller-manager",
        &bins.kube_controller_manager,
        &kcm_args,
        &[],
        &layout.logs().join("kube-controller-manager.log"),
    )?);
    progress.done("kube-controller-manager started");

    if let Some(node_bins) = &node_bins {
        progress.begin("kube-scheduler");
        let port = process::free_port()?;
        let args = component_args(&scheduler_kubeconfig, port);
        children.push(process::spawn(
            "kube-scheduler",
            &node_bins.kube_scheduler,
            &args,
            &[],
            &layout.logs().join("kube-scheduler.log"),
        )?);
        progress.done("kube-scheduler started");
    }

    let kubeconfig = opts
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| layout.admin_kubeconfig());
    eprintln!(
        "\nUnivrs control plane ready in {:.1} s.\n  kubeconfig: {}\n  logs:       {}\n  next:       univrs kubectl --kubeconfig {} get univrs\n\nCtrl-C stops it; starting again with the same --data-dir keeps all data.",
        progress.started.elapsed().as_secs_f64(),
        kubeconfig.display(),
        layout.logs().display(),
        kubeconfig.display(),
    );
    // Machine-readable readiness line for scripts and the test harness.
    println!("ready kubeconfig={} server={server}", kubeconfig.display());

    let outcome = supervise(&mut children).await;
    shutdown(&mut children).await;
    outcome
}

/// The structured authentication configuration: anonymous requests only to health endpoints
/// and to the public cluster-info a joining machine reads before it trusts the server (it
/// checks the CA there against its --ca-cert-hash; RBAC lets anonymous read that one object).
const AUTHENTICATION_CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /livez
  - path: /readyz
  - path: /healthz
  - path: /api/v1/namespaces/kube-public/configmaps/cluster-info
";

/// The flags kube-controller-manager and kube-scheduler share: their identity (`kubeconfig`, also
/// for delegated authentication and authorization), their own HTTPS port on loopback, one
/// instance (no leader election), no profiling.
fn component_args(kubeconfig: &Path, port: u16) -> Vec<String> {
    let k = kubeconfig.display();
    vec![
        format!("--kubeconfig={k}"),
        format!("--authentication-kubeconfig={k}"),
        format!("--authorization-kubeconfig={k}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        "--leader-elect=false".into(),
        // No front proxy here: do not look up its request-header CA (it only logs errors).
        "--authentication-skip-lookup=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// A kube client acting as the admin.
pub async fn admin_client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Fails with the child's last log lines if any child has exited.
fn check_children(children: &mut [Supervised]) -> Result<()> {
    for c in children.iter_mut() {
        if let Some(status) = c.child.try_wait()? {
            bail!(
                "{} exited ({status}); its last log lines:\n{}",
                c.name,
                c.tail(20).join("\n")
            );
        }
    }
    Ok(())
}

async fn wait_for_port(port: u16, children: &mut [Supervised], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check_children(children)?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for /readyz to answer `ok`, failing early if a child died.
pub async fn wait_for_readyz(
    client: &kube::Client,
    check: &mut dyn FnMut() -> Result<()>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        check()?;
        let req = http::Request::get("/readyz").body(Vec::new())?;
        let last = match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("kube-apiserver not ready after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for SIGINT/SIGTERM (Ok) or for a child to die (Err with its log tail).
async fn supervise(children: &mut [Supervised]) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => { eprintln!("SIGTERM: stopping"); return Ok(()) }
            _ = int.recv() => { eprintln!("SIGINT: stopping"); return Ok(()) }
            _ = tick.tick() => check_children(children).context("a control-plane process died")?,
        }
    }
}

/// Stops children in reverse start order: controller-manager, API server, then etcd.
async fn shutdown(children: &mut Vec<Supervised>) {
    while let Some(mut c) = children.pop() {
        c.stop(Duration::from_secs(15)).await;
        eprintln!("  stopped {}", c.name);
    }
}

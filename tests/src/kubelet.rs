//! A real Kubernetes node for tests and benchmarks: Debian's containerd and runc, the pinned
//! kubelet and kube-proxy, registered to a local control plane started with `--kubelets` (which
//! adds kube-scheduler and the controllers Deployments, DaemonSets and Services need).
//!
//! kubelet refuses a loopback node address, so the node's address is on an interface of its own (a
//! bridge without ports: this kernel has no dummy links)
//! ([`NODE_IP`]), and the API server advertises it too: Pods reach the `kubernetes` Service
//! through kube-proxy's rules. Pods get addresses from Debian's CNI bridge and host-local plugins
//! on [`POD_SUBNET`]. Images are imported (`ctr images import`), never pulled: no registry
//! outside this machine is reachable.
//!
//! Everything lives under one temporary directory. Dropping the node deletes its Pods through
//! the kubelet, stops every process and removes what is left: shims and their containers,
//! mounts, network namespaces, the bridge, kube-proxy's and the bridge plugin's rules, cgroups.

use crate::{
    ControlPlane, Guarded, free_port, pids_with_cmdline, univrs_bin, upstream_node_bin_dir,
};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The node's address, on the interface [`NODE_LINK`].
pub const NODE_IP: &str = "10.231.0.1";
/// The interface carrying [`NODE_IP`].
const NODE_LINK: &str = "univrs-knode";
/// The Pods' subnet (CNI bridge [`POD_BRIDGE`], host-local addresses).
pub const POD_SUBNET: &str = "10.232.0.0/24";
/// The CNI bridge of the Pods.
const POD_BRIDGE: &str = "univrs-kbr0";
/// The CNI network's name (its rules carry it in their comments).
const POD_NETWORK: &str = "univrs-kubelet";
/// The pod sandbox image containerd runs (built from the release's pause.c).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
/// Where kubelet puts Pods' cgroups, in every hierarchy.
const CGROUP_ROOT: &str = "univrs-kubelet";
/// Where containerd's runc shims keep their containers (fixed by containerd 1.6).
const RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";

/// A control plane with one kubelet node, torn down when dropped.
pub struct KubeletNode {
    /// The control plane (started with `--kubelets`).
    pub cp: ControlPlane,
    /// The node's name.
    pub name: String,
    /// Everything of the node lives here.
    pub dir: PathBuf,
    containerd: Option<Guarded>,
    kubelet: Option<Guarded>,
    proxy: Option<Guarded>,
}

impl KubeletNode {
    /// Starts the control plane and the node `name`, and waits until the node is Ready.
    pub fn start(name: &str) -> Result<Self> {
        crate::remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("univrs-test-{}-kubelet", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // A node left by a killed test run goes first: its address and bridge are ours to use.
        sweep_network();
        sh(&["ip", "link", "add", NODE_LINK, "type", "bridge"])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_IP}/32"),
            "dev",
            NODE_LINK,
        ])?;
        sh(&["ip", "link", "set", NODE_LINK, "up"])?;
        let bins = upstream_node_bin_dir();
        let cp = ControlPlane::start_with(
            &dir.join("control-plane"),
            free_port(),
            &[
                "--kubelets".into(),
                "--node-bin-dir".into(),
                bins.display().to_string(),
                "--advertise-address".into(),
                NODE_IP.into(),
            ],
        )?;
        let mut node = Self {
            cp,
            name: name.to_string(),
            dir,
            containerd: None,
            kubelet: None,
            proxy: None,
        };
        node.start_containerd()?;
        node.import_pause()?;
        node.start_kubelet()?;
        node.wait_ready(Duration::from_secs(120))?;
        node.start_kube_proxy()?;
        Ok(node)
    }

    /// containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// The node's own processes while they run, by name: containerd, kubelet, kube-proxy
    /// (containerd's shims are not its children: find them by [`KubeletNode::socket`]).
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        [
            ("containerd", &self.containerd),
            ("kubelet", &self.kubelet),
            ("kube-proxy", &self.proxy),
        ]
        .into_iter()
        .filter_map(|(name, p)| p.as_ref().map(|p| (name, p.0.id())))
        .collect()
    }

    /// `ctr` against this node's containerd, in the `k8s.io` namespace kubelet uses.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    /// Imports the OCI image layout `layout` (named by its `io.containerd.image.name`).
    pub fn import(&self, layout: &Path) -> Result<()> {
        let tar = self.dir.join(format!(
            "import-{}.tar",
            layout.file_name().unwrap_or_default().to_string_lossy()
        ));
        sh(&[
            "tar",
            "-C",
            &layout.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ])?;
        let out = self
            .ctr()
            .args(["images", "import", "--all-platforms"])
            .arg(&tar)
            .output()?;
        let _ = std::fs::remove_file(&tar);
        if !out.status.success() {
            bail!(
                "ctr images import {}: {}",
                layout.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The node's log files (containerd, kubelet, kube-proxy) and the scheduler's and
    /// controller manager's, for a failing test's message.
    pub fn logs(&self, lines: usize) -> String {
        let mut all = String::new();
        let cp_logs = self.cp.data_dir.join("logs");
        for f in [
            self.dir.join("containerd.log"),
            self.dir.join("kubelet.log"),
            self.dir.join("kube-proxy.log"),
            cp_logs.join("kube-scheduler.log"),
            cp_logs.join("kube-controller-manager.log"),
        ] {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let f = f.file_name().unwrap_or_default().to_string_lossy();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            all.push_str(&format!("--- {f}\n"));
            for l in tail.into_iter().rev() {
                all.push_str(l);
                all.push('\n');
            }
        }
        all
    }

    fn start_containerd(&mut self) -> Result<()> {
        let d = self.dir.join("containerd");
        std::fs::create_dir_all(d.join("net.d"))?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": POD_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": d.join("ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(d.join("net.d/10-univrs.conflist"), conflist.to_string())?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Sandboxes ask for oom_score_adj -998, which needs CAP_SYS_RESOURCE, and the machines the
  # tests run on withhold it: no lower than containerd's own, as for rootless containerd.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{netd}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = self.socket().display(),
            opt = d.join("opt").display(),
            netd = d.join("net.d").display(),
        );
        std::fs::write(d.join("config.toml"), config)?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("containerd.log"))?);
        self.containerd = Some(Guarded::spawn(cmd)?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .ctr()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer:\n{}", self.logs(30));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The sandbox image: the release's pause, alone in an image, as Kubernetes builds it.
    fn import_pause(&self) -> Result<()> {
        use univrs_node_agent::image::write::{LayerBuilder, write_layout};
        let pause = std::fs::read(upstream_node_bin_dir().join("pause"))?;
        let mut layer = LayerBuilder::new();
        layer.file("pause", 0o755, &pause)?;
        let layout = self.dir.join("pause-image");
        let tag = PAUSE_IMAGE.rsplit(':').next().expect("a tag");
        write_layout(
            &layout,
            &[layer.finish()?],
            serde_json::json!({"Entrypoint": ["/pause"], "User": "65535:65535"}),
            PAUSE_IMAGE,
            tag,
        )?;
        self.import(&layout)
    }

    fn kubeconfig(&self, user: &str, group: Option<&str>, file: &str) -> Result<PathBuf> {
        let out = self.dir.join(file);
        let mut cmd = Command::new(univrs_bin());
        cmd.args(["control-plane", "kubeconfig", "--user", user])
            .arg("--data-dir")
            .arg(&self.cp.data_dir)
            .args(["--port", &self.cp.port.to_string()])
            .arg("--out")
            .arg(&out);
        if let Some(g) = group {
            cmd.args(["--group", g]);
        }
        let o = cmd.output()?;
        if !o.status.success() {
            bail!(
                "univrs control-plane kubeconfig: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(out)
    }

    fn start_kubelet(&mut self) -> Result<()> {
        let kubeconfig = self.kubeconfig(
            &format!("system:node:{}", self.name),
            Some("system:nodes"),
            "kubelet.kubeconfig",
        )?;
        let root = self.dir.join("kubelet");
        std::fs::create_dir_all(&root)?;
        // cgroup v1 here: kubelet 1.35 refuses it unless told. Eviction thresholds are low: a
        // test machine's disk may be fuller than a production node's, and evicting the chart's
        // pods would only make the test flaky.
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{sock}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
volumePluginDir: {plugins}
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
"#,
            port = free_port(),
            healthz = free_port(),
            ca = self.cp.data_dir.join("pki/ca.crt").display(),
            sock = self.socket().display(),
            plugins = root.join("volume-plugins").display(),
        );
        std::fs::write(self.dir.join("kubelet.yaml"), config)?;
        // kubelet wants its cgroup root to exist in every hierarchy.
        for h in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
            if h.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::create_dir(h.path().join(CGROUP_ROOT));
            }
        }
        let mut cmd = Command::new(upstream_node_bin_dir().join("kubelet"));
        cmd.arg(format!(
            "--config={}",
            self.dir.join("kubelet.yaml").display()
        ))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!("--root-dir={}", root.display()))
        .arg(format!("--cert-dir={}", root.join("pki").display()))
        .arg(format!("--hostname-override={}", self.name))
        .arg(format!("--node-ip={NODE_IP}"))
        .arg("--v=1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(self.dir.join("kubelet.log"))?);
        self.kubelet = Some(Guarded::spawn(cmd)?);
        Ok(())
    }

    fn start_kube_proxy(&mut self) -> Result<()> {
        let kubeconfig = self.kubeconfig("system:kube-proxy", None, "kube-proxy.kubeconfig")?;
        let mut cmd = Command::new(upstream_node_bin_dir().join("kube-proxy"));
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--hostname-override={}", self.name))
            .arg("--proxy-mode=iptables")
            .arg(format!("--cluster-cidr={POD_SUBNET}"))
            .arg(format!("--healthz-bind-address=127.0.0.1:{}", free_port()))
            .arg(format!("--metrics-bind-address=127.0.0.1:{}", free_port()))
            .arg(format!("--bind-address={NODE_IP}"))
            .arg("--nodeport-addresses=primary")
            // Leave the machine's sysctls alone (conntrack, route_localnet).
            .arg("--conntrack-max-per-core=0")
            .arg("--conntrack-tcp-timeout-established=0")
            .arg("--conntrack-tcp-timeout-close-wait=0")
            .arg("--iptables-localhost-nodeports=false")
            // Its default, -999, needs CAP_SYS_RESOURCE (see containerd's configuration).
            .arg("--oom-score-adj=0")
            .arg("--v=1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("kube-proxy.log"))?);
        self.proxy = Some(Guarded::spawn(cmd)?);
        Ok(())
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self
                .cp
                .kubectl()
                .args(["get", "node", &self.name, "-o"])
                .arg("jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
                .output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "True" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} not Ready after {timeout:?}:\n{}",
                    self.name,
                    self.logs(40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Containers containerd runs for this node's Pods (sandboxes included).
    pub fn containers(&self) -> Vec<String> {
        self.ctr()
            .args(["containers", "ls", "-q"])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes every Pod (and what makes Pods) through the API, and waits for the kubelet to
    /// stop them and tear their sandboxes down.
    fn drain(&self) {
        let _ = self
            .cp
            .kubectl()
            .args([
                "delete",
                "daemonsets,deployments,replicasets",
                "--all",
                "--all-namespaces",
                "--wait=false",
            ])
            .output();
        let _ = self
            .cp
            .kubectl()
            .args([
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=5",
                "--wait=false",
            ])
            .output();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.containers().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        if self.kubelet.is_some() {
            self.drain();
        }
        drop(self.kubelet.take());
        drop(self.proxy.take());
        let _ = Command::new(upstream_node_bin_dir().join("kube-proxy"))
            .arg("--cleanup")
            .output();
        remove_kubelet_chains();
        // Whatever the kubelet did not stop: its shims, then their containers.
        let sock = self.socket().display().to_string();
        for pid in pids_with_cmdline(&sock) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Ok(out) = Command::new("runc")
            .args(["--root", RUNC_ROOT, "list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .args(["--root", RUNC_ROOT, "delete", "--force", id])
                    .output();
            }
        }
        drop(self.containerd.take());
        unmount_under(&self.dir);
        sweep_network();
        remove_cgroups(CGROUP_ROOT);
        self.cp.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command (program first), failing with its stderr.
fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Unmounts everything mounted under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes the node's network: the Pods' network namespaces (containerd names them `cni-…`),
/// the bridge, the node.s interface and the bridge plugin's masquerade rules.
fn sweep_network() {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("cni-") {
                let _ = Command::new("ip").args(["netns", "del", name]).output();
            }
        }
    }
    for link in [POD_BRIDGE, NODE_LINK] {
        let _ = Command::new("ip").args(["link", "del", link]).output();
    }
    // The bridge plugin's rules name their network in a comment.
    let Ok(out) = Command::new("iptables").args(["-t", "nat", "-S"]).output() else {
        return;
    };
    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut chains = Vec::new();
    for rule in rules.lines() {
        if let Some(rest) = rule.strip_prefix("-A POSTROUTING ")
            && rule.contains(&format!("name: \\\"{POD_NETWORK}\\\""))
        {
            let args: Vec<&str> = rest.split_whitespace().collect();
            if let Some(i) = args.iter().position(|a| *a == "-j") {
                chains.push(args[i + 1].to_string());
            }
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!("iptables -t nat -D POSTROUTING {rest}"))
                .output();
        }
    }
    for chain in chains {
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-F", &chain])
            .output();
        let _ = Command::new("iptables")
            .args(["-t", "nat", "-X", &chain])
            .output();
    }
}

/// Removes the iptables chains kubelet makes for itself, which `kube-proxy --cleanup` leaves:
/// KUBE-FIREWALL (and the INPUT and OUTPUT jumps to it), its canaries and the hint, in both
/// address families.
fn remove_kubelet_chains() {
    let ipt = |tool: &str, args: &[&str]| {
        Command::new(tool)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["iptables", "ip6tables"] {
        for hook in ["INPUT", "OUTPUT"] {
            while ipt(tool, &["-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL"]) {}
        }
        for (table, chain) in [
            ("filter", "KUBE-FIREWALL"),
            ("filter", "KUBE-KUBELET-CANARY"),
            ("nat", "KUBE-KUBELET-CANARY"),
            ("mangle", "KUBE-KUBELET-CANARY"),
            ("mangle", "KUBE-IPTABLES-HINT"),
        ] {
            ipt(tool, &["-t", table, "-F", chain]);
            ipt(tool, &["-t", table, "-X", chain]);
        }
    }
}

/// Removes the cgroup `name` and everything under it, in every hierarchy.
fn remove_cgroups(name: &str) {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup").join(name)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path().join(name)));
    }
    for root in roots {
        remove_cgroup_tree(&root);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

//! Test harness for end-to-end tests, in the manner of controller-runtime's envtest.
//!
//! [`ControlPlane::shared`] starts one real control plane per test binary (`univrs
//! control-plane`: upstream etcd, kube-apiserver and kube-controller-manager) in a temporary
//! directory on free ports, installs the CRDs from `crds/`, waits until they are Established
//! and hands out clients and a kubeconfig. [`ControlPlane::start`] starts a private one for
//! tests that kill or restart it.
//!
//! Clean-up does not depend on destructors (statics are never dropped, and a test binary may be
//! killed): the supervisor is spawned from a thread that lives as long as the test binary, with
//! SIGTERM as its parent-death signal, and it kills its own children the same way. Data
//! directories of test binaries that are gone are removed by the next run.
#![allow(unsafe_code)]

pub mod agent;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod join;
pub mod kubelet;
pub mod modules;
pub mod nat;
pub mod outside;
pub mod png;
pub mod registry;
pub mod up;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The `univrs` binary, built once per test binary with the same profile as the tests
/// (`UNIVRS_BIN` overrides it).
pub fn univrs_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("UNIVRS_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_univrs(false),
    })
}

/// Builds the `univrs` binary (optimized with `release`) and returns its path.
pub fn build_univrs(release: bool) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The variables cargo sets for a test process (CARGO_PKG_*, CARGO_MANIFEST_DIR, …) reach
    // build scripts that watch them and would rebuild ring, rustls and kube on every run.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "build",
        "-p",
        "univrs",
        "--bin",
        "univrs",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build -p univrs");
    assert!(out.status.success(), "cargo build -p univrs failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.get("executable")
                .and_then(|e| e.as_str())
                .map(PathBuf::from)
        })
        .next_back()
        .expect("cargo reported the univrs executable")
}

/// Resident memory of a process, MiB (0 when it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

/// The `q` quantile of `xs` (sorted in place; 0 when empty), for benchmarks.
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(((xs.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The directory of the pinned upstream binaries (kubectl, kube-apiserver, …), built on first use.
pub fn upstream_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(univrs_bin())
            .args(["control-plane", "build"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running univrs control-plane build");
        assert!(out.status.success(), "univrs control-plane build failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("bin dir").trim())
    })
}

/// The pinned kubectl with `kubeconfig`.
pub fn kubectl_with(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(upstream_bin_dir().join("kubectl"));
    cmd.env("KUBECONFIG", kubeconfig);
    cmd
}

/// The directory of the pinned node binaries (kube-scheduler, kubelet, kube-proxy, pause), built
/// on first use.
pub fn upstream_node_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(univrs_bin())
            .args(["control-plane", "build", "--node"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running univrs control-plane build --node");
        assert!(
            out.status.success(),
            "univrs control-plane build --node failed"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("bin dir").trim())
    })
}

/// A running control plane.
pub struct ControlPlane {
    /// The admin kubeconfig (mode 0600).
    pub kubeconfig: PathBuf,
    /// The API server URL.
    pub server: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The API server port.
    pub port: u16,
    child: Mutex<Option<Child>>,
}

/// A free TCP port on 127.0.0.1 (bound and released, for a process started next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `args` (program first) and fails the test with its stderr unless it succeeds.
pub(crate) fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the network namespaces named `PREFIX<pid>-…` that other (killed) test binaries
/// left, keeping this process's (`own`).
pub(crate) fn delete_stale_namespaces(prefix: &str, own: &str) {
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(prefix) && !name.starts_with(&format!("{prefix}{own}-")) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The answer to `GET /` at `addr` (`host:port`), or why there is none (a connection
/// closed without a byte is an error).
pub fn http_get(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let to = std::net::ToSocketAddrs::to_socket_addrs(addr)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{addr} names no address"))?;
    // A router that drops what nobody asked for would hold a plain connect for minutes.
    let mut s = std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    if body.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(body)
}

/// A free port in the agents' default hostPort range (30000-32767), picked at random so that
/// parallel tests rarely try the same one (a hostPort's DNAT does not hold the port).
pub fn free_host_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        let port = 30000 + (h.finish() % 2768) as u16;
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok();
        if free {
            return port;
        }
    }
}

/// `n` distinct free ports: each is held until all are found, so none is handed out twice (a
/// port released by one `free_port` call may be the next call's answer).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Removes data directories left by test binaries that no longer run.
pub(crate) fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("univrs-test-") else {
            continue;
        };
        // Only `univrs-test-<pid>-…`: other tests name their directories differently.
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Spawns the supervisor from a thread that never ends, so its parent-death signal fires only
/// when the whole test binary goes away.
fn spawn_supervisor(mut cmd: Command) -> Result<Child> {
    /// A command to spawn, and where to send the result.
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("univrs-test-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The channel lives in a static, so this thread parks forever.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: runs in the forked child before exec; prctl(2) is async-signal-safe and the
    // closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap()
        .send((cmd, reply_tx))
        .expect("spawner alive");
    Ok(reply_rx.recv().expect("spawner replied")?)
}

impl ControlPlane {
    /// The control plane shared by every test of this test binary, with the CRDs installed.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<ControlPlane> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cp = Self::start().expect("starting the shared control plane");
            cp.install_crds().expect("installing the CRDs");
            cp
        })
    }

    /// A private control plane in a fresh temporary directory (CRDs not installed).
    pub fn start() -> Result<Self> {
        remove_stale_dirs();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("univrs-test-{}-{n}", std::process::id()));
        Self::start_in(&dir, free_port())
    }

    /// A control plane on `data_dir` (kept, so a restart finds its data) and `port`.
    pub fn start_in(data_dir: &Path, port: u16) -> Result<Self> {
        Self::start_with(data_dir, port, &[])
    }

    /// A control plane on `data_dir` and `port`, with more `univrs control-plane` flags.
    pub fn start_with(data_dir: &Path, port: u16, flags: &[String]) -> Result<Self> {
        let bin_dir = upstream_bin_dir();
        std::fs::create_dir_all(data_dir)?;
        let mut cmd = Command::new(univrs_bin());
        cmd.args(["control-plane", "--port", &port.to_string()])
            .args(flags)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--bin-dir")
            .arg(bin_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(
                data_dir.join("supervisor.log"),
            )?));
        let mut child = spawn_supervisor(cmd)?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(data_dir.join("supervisor.log")).unwrap_or_default();
                bail!(
                    "control plane in {} did not become ready:\n{log}",
                    data_dir.display()
                );
            }
        }
        Ok(Self {
            kubeconfig: data_dir.join("admin.kubeconfig"),
            server: format!("https://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            port,
            child: Mutex::new(Some(child)),
        })
    }

    /// A new admin client (make one per tokio runtime: each test has its own).
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// The pinned kubectl, pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        kubectl_with(&self.kubeconfig)
    }

    /// The pid of the supervisor (`univrs control-plane`).
    pub fn supervisor_pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// Stops the supervisor with SIGTERM and waits for it (it stops its children in order).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Applies every CRD in `crds/` (server-side) and waits until each is Established.
    pub fn install_crds(&self) -> Result<()> {
        // On a thread of its own, so that async tests (already inside a runtime) can call it.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let client = self.client().await?;
                    install_crds(&client).await
                })
            })
            .join()
            .expect("CRD installer thread")
        })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from a kubeconfig file. The process's TLS provider is ring: with the workspace's
/// dependencies unified (libp2p's QUIC brings aws-lc too), rustls would not pick one itself.
pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Applies every CRD in `crds/` with server-side apply and waits until each is Established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let dir = repo_root().join("crds");
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        crds.push(crd);
    }
    Ok(univrs_controller::crds::install(client, "univrs-tests", crds).await?)
}

/// A minimal root filesystem in `dir/rootfs` for container tests: Debian's static busybox,
/// links to the applets the tests use, and an empty `www/` for httpd's pages.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "these tests need Debian's busybox-static (apt-get install -y busybox-static)"
    );
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "hostname", "readlink", "ls", "env", "wget", "true", "false",
        "grep", "ip", "unshare", "head", "ping", "httpd",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

/// Fails the test if `log` (of `who`) shows a request the API server refused: a 403, or an
/// Event that could not be published.
pub fn assert_never_refused(who: &str, log: &str) {
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.to_ascii_lowercase().contains("forbidden")
                || l.contains("code: 403")
                || l.contains("could not publish an Event")
        })
        .collect();
    assert!(
        refused.is_empty(),
        "{who} was refused with its ServiceAccount's permissions:\n{}",
        refused.join("\n")
    );
}

/// Runs a command and returns (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs curl quietly with `args`: (HTTP status, body); status `000` when nothing answered.
pub fn curl(args: &[&str]) -> (String, String) {
    let (_, text, _) = run(Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args));
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// A child process that is killed when dropped, and also when the test binary dies (it is
/// spawned with a parent-death signal from the long-lived spawner thread).
pub struct Guarded(pub Child);

impl Guarded {
    /// Spawns `cmd` under the guard.
    pub fn spawn(cmd: Command) -> Result<Self> {
        Ok(Self(spawn_supervisor(cmd)?))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pids of the processes for which `keep` holds (from /proc).
pub fn pids_where(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| keep(*pid))
        .collect()
}

/// The pids of the processes whose command line (arguments joined by spaces) holds `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    pids_where(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        })
    })
}

/// The pids of the direct children of `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    pids_where(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command name may contain spaces; the fields after ')' are: state, ppid, …
        stat.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
            == Some(parent)
    })
}

/// Runs `cmd` with `input` on its standard input; returns its output.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("waiting for the command")
}

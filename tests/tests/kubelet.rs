//! The Helm chart on a real kubelet node: the pinned kubelet and kube-proxy with Debian's
//! containerd and runc, registered to the local control plane (`--kubelets`), the Univrs image
//! built by `univrs image build` from this very binary and imported into containerd. Then
//! `helm install`: the controller Deployment (two replicas, one leader) and the agent DaemonSet
//! turn Ready as Pods; the agent Pod runs the portal's containers through youki and serves them;
//! the MCP server answers the official Python SDK through its Service; `helm upgrade` to a new
//! image rolls the controller with never two leaders; `helm uninstall` leaves no container,
//! mount or network of the agent's on the node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use univrs_tests::kubelet::{KubeletNode, NODE_IP};
use univrs_tests::registry::Registry;
use univrs_tests::{repo_root, run, univrs_bin};

const NS: &str = "univrs-system";
const IMAGE: &str = "univrs.local/univrs";

/// helm v4 with its own home under `dir`, on the node's cluster.
fn helm(node: &KubeletNode, dir: &Path) -> Command {
    let mut cmd = Command::new(repo_root().join(".tools/bin/helm"));
    for (var, sub) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, dir.join(sub));
    }
    cmd.env("KUBECONFIG", &node.cp.kubeconfig);
    cmd
}

/// kubectl's stdout, or the test fails with its stderr and the cluster's state.
fn kubectl(node: &KubeletNode, args: &[&str]) -> String {
    let (ok, out, err) = run(node.cp.kubectl().args(args));
    assert!(ok, "kubectl {}: {err}\n{}", args.join(" "), state(node));
    out
}

/// What a failing test prints: Pods, their Events, the node's logs.
fn state(node: &KubeletNode) -> String {
    let (_, pods, _) =
        run(node
            .cp
            .kubectl()
            .args(["get", "pods,daemonsets,nodes", "-A", "-o", "wide"]));
    let (_, taints, _) =
        run(node
            .cp
            .kubectl()
            .args(["get", "nodes", "-o", "jsonpath={.items[*].spec.taints}"]));
    let (_, events, _) =
        run(node
            .cp
            .kubectl()
            .args(["get", "events", "-A", "--sort-by=.lastTimestamp"]));
    let (_, workloads, _) = run(node.cp.kubectl().args([
        "get",
        "workloads,nodes.univrs.io",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.kind} {.metadata.name}: {.status.conditions} {.status.instances}{\"\\n\"}{end}",
    ]));
    let mut logs = String::new();
    let (_, names, _) = run(node
        .cp
        .kubectl()
        .args(["get", "pods", "-n", NS, "-o", "name"]));
    for pod in names.lines() {
        for previous in ["--previous=false", "--previous=true"] {
            let (_, l, e) =
                run(node
                    .cp
                    .kubectl()
                    .args(["logs", "-n", NS, pod, "--tail=20", previous]));
            logs.push_str(&format!("--- {pod} {previous}\n{l}{e}"));
        }
    }
    format!(
        "pods:\n{pods}\nunivrs:\n{workloads}\ntaints: {taints}\nevents:\n{events}\nlogs:\n{logs}\n{}",
        node.logs(25)
    )
}

/// Waits until `check` returns Some, or fails with the last thing it said and the state.
fn eventually<T>(
    node: &KubeletNode,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> (Option<T>, String),
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, said) = check();
        if let Some(v) = done {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what}: not after {timeout:?} ({said})\n{}", state(node));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `univrs image build` of this binary as `IMAGE:tag`, imported into the node.
fn image(node: &KubeletNode, tag: &str) {
    let out = node.dir.join(format!("image-{tag}"));
    let (ok, _, err) = run(Command::new(univrs_bin())
        .args(["image", "build", "--output"])
        .arg(&out)
        .arg("--binary")
        .arg(univrs_bin())
        .args(["--reference", IMAGE, "--tag", tag]));
    assert!(ok, "univrs image build: {err}");
    node.import(&out).unwrap();
}

/// The agent's data directory: a shared mount of its own, as Bidirectional propagation needs
/// (this machine's / is private).
fn shared_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    for args in [
        vec!["--bind", path.to_str().unwrap(), path.to_str().unwrap()],
        vec!["--make-shared", path.to_str().unwrap()],
    ] {
        let (ok, _, err) = run(Command::new("mount").args(&args));
        assert!(ok, "mount {args:?}: {err}");
    }
}

/// /run/univrs made a shared mount for the test (the agent's Pod mounts it Bidirectional), and
/// unmounted again at the end.
struct SharedRun;

impl SharedRun {
    fn new() -> Self {
        shared_dir(Path::new(RUN));
        Self
    }
}

impl Drop for SharedRun {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["--lazy", RUN]).status();
    }
}

const RUN: &str = "/run/univrs";

#[test]
fn the_chart_runs_on_a_kubelet_node() {
    let started = Instant::now();
    let node = KubeletNode::start("kn-1").unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "kubelet node Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    image(&node, "test");
    let registry = Registry::start();
    let demo = univrs_node_agent::demo_image::build(&node.dir.join("demo-image")).unwrap();
    let demo_ref = registry.push_layout(&demo, "latest", "univrs/demo:latest");
    // Short: the agent's container socket paths must fit in 108 bytes.
    let data = node.dir.join("data");
    shared_dir(&data);
    let _run = SharedRun::new();
    let helm_home = node.dir.join("helm");
    let chart = repo_root().join("charts/univrs");
    let values = |tag: &str| -> Vec<String> {
        [
            format!("image.repository={IMAGE}"),
            format!("image.tag={tag}"),
            "image.pullPolicy=Never".into(),
            format!("agent.dataDir={}", data.display()),
            "agent.cniBinDir=/usr/lib/cni".into(),
            // This machine's kernel has its modules built in: there is no /lib/modules.
            format!(
                "agent.hostPaths.modules={}",
                if Path::new("/lib/modules").is_dir() {
                    "/lib/modules"
                } else {
                    ""
                }
            ),
        ]
        .into_iter()
        .flat_map(|v| ["--set".to_string(), v])
        .collect()
    };
    let (ok, out, err) = run(helm(&node, &helm_home)
        .args(["install", "univrs"])
        .arg(&chart)
        .args(["-n", NS, "--create-namespace", "--wait", "--timeout", "5m"])
        .args(values("test")));
    assert!(ok, "helm install: {out}\n{err}\n{}", state(&node));

    // Two controller Pods and the agent's, Ready.
    let ready = kubectl(
        &node,
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-o",
            "jsonpath={range .items[*]}{.metadata.labels.app\\.kubernetes\\.io/component} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ],
    );
    eprintln!("{ready}");
    let count = |c: &str| ready.lines().filter(|l| *l == format!("{c} True")).count();
    assert_eq!(count("controller"), 2, "{ready}");
    assert_eq!(count("agent"), 1, "{ready}");

    // The portal, from the example, with the demo image from the registry on loopback.
    let portal = std::fs::read_to_string(repo_root().join("deploy/examples/community-portal.yaml"))
        .unwrap()
        .replace("univrs.local/demo:latest", &demo_ref);
    let portal_file = node.dir.join("portal.yaml");
    std::fs::write(&portal_file, portal).unwrap();
    kubectl(&node, &["apply", "-f", portal_file.to_str().unwrap()]);
    eventually(
        &node,
        "three portal instances ready",
        Duration::from_secs(180),
        || {
            let r = kubectl(
                &node,
                &[
                    "get",
                    "workload",
                    "community-portal",
                    "-n",
                    "community-center",
                    "-o",
                    "jsonpath={.status.readyReplicas}",
                ],
            );
            ((r.trim() == "3").then_some(()), format!("ready: {r:?}"))
        },
    );
    let page = eventually(
        &node,
        "the portal served on the node's port 30080",
        Duration::from_secs(60),
        portal_page,
    );
    eprintln!("served: {page}");

    mcp_through_its_service(&node);
    let sample = upgrade(&node, &helm_home, &chart, &values("v2"));
    eprintln!(
        "helm upgrade: {} samples of the controllers' univrs_leader, at most {} leading at once, \
         {:.1} s with none (the hand-over)",
        sample.samples,
        sample.most_at_once,
        sample.none_for.as_secs_f64()
    );
    assert_eq!(sample.most_at_once, 1, "two controllers led at once");
    assert_eq!(
        sample
            .images
            .iter()
            .map(|i| i.rsplit(':').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["test", "v2"],
        "the old image led, then the new one"
    );
    eventually(
        &node,
        "the portal served after the upgrade",
        Duration::from_secs(120),
        portal_page,
    );

    // What the check below looks for is there while the release runs: it can fail.
    let running = leftovers(&data);
    eprintln!(
        "before uninstall: {} processes, mounts, links and rules of the agent's",
        running.len()
    );
    assert!(
        running.iter().any(|l| l.starts_with("link ")),
        "{running:?}"
    );
    assert!(
        running.iter().any(|l| l.starts_with("mount ")),
        "{running:?}"
    );
    let (ok, out, err) = run(helm(&node, &helm_home).args([
        "uninstall",
        "univrs",
        "-n",
        NS,
        "--wait",
        "--timeout",
        "3m",
    ]));
    assert!(ok, "helm uninstall: {out}\n{err}\n{}", state(&node));
    let left = eventually(
        &node,
        "nothing of the agent's left on the node",
        Duration::from_secs(60),
        || {
            let left = leftovers(&data);
            (left.is_empty().then_some(left.clone()), format!("{left:?}"))
        },
    );
    assert!(left.is_empty());
    // Every Pod goes; the Workload stays (the chart keeps the CRDs and their objects).
    eventually(
        &node,
        "the release's Pods gone",
        Duration::from_secs(60),
        || {
            let pods = kubectl(&node, &["get", "pods", "-n", NS, "-o", "name"]);
            (pods.trim().is_empty().then_some(()), pods)
        },
    );
    kubectl(
        &node,
        &[
            "get",
            "workload",
            "community-portal",
            "-n",
            "community-center",
        ],
    );
}

/// The portal's page from the node's port 30080, or why not.
fn portal_page() -> (Option<String>, String) {
    let (ok, out, err) = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        &format!("http://{NODE_IP}:30080/"),
    ]));
    ((ok && out.contains("Community portal")).then_some(out), err)
}

/// The MCP server, a chart option on by default, answers the official Python SDK through its
/// Service (kube-proxy's rules; the Service's name resolved to its ClusterIP, as cluster DNS
/// would, since the chart's certificate names the Service).
fn mcp_through_its_service(node: &KubeletNode) {
    let ip = kubectl(
        node,
        &[
            "get",
            "service",
            "univrs-mcp",
            "-n",
            NS,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    let secret = |name: &str, key: &str| -> PathBuf {
        let b64 = kubectl(
            node,
            &[
                "get",
                "secret",
                name,
                "-n",
                NS,
                "-o",
                &format!("jsonpath={{.data.{}}}", key.replace('.', "\\.")),
            ],
        );
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap();
        let path = node.dir.join(format!("{name}-{key}"));
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path
    };
    let token = secret("univrs-mcp-token", "token");
    let ca = secret("univrs-mcp-tls", "ca.crt");
    let host = format!("univrs-mcp.{NS}.svc");
    kubectl(node, &["create", "namespace", "mcp-clients"]);
    let out = Command::new(repo_root().join(".tools/venv/bin/python"))
        .arg(repo_root().join("tests/python/mcp_http.py"))
        .arg(format!("https://{host}:443/mcp"))
        .arg(&token)
        .arg(&ca)
        .arg("mcp-clients")
        .arg(format!("{host}={}", ip.trim()))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "MCP through the Service:\n{stdout}\n{stderr}\n{}",
        state(node)
    );
    assert!(stdout.contains("deployed http-web"), "{stdout}");
}

/// What sampling the controllers' leadership during an upgrade saw.
struct Leaders {
    /// The images of the controllers seen leading.
    images: std::collections::BTreeSet<String>,
    samples: usize,
    most_at_once: usize,
    none_for: Duration,
}

/// `helm upgrade` to `values` (a new image), sampling every controller Pod's `univrs_leader`
/// gauge until the rollout is done and a leader of the new image leads.
fn upgrade(node: &KubeletNode, helm_home: &Path, chart: &Path, values: &[String]) -> Leaders {
    image(node, "v2");
    let mut child = helm(node, helm_home)
        .args(["upgrade", "univrs"])
        .arg(chart)
        .args(["-n", NS, "--wait", "--timeout", "5m"])
        .args(values)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Leaders {
        images: Default::default(),
        samples: 0,
        most_at_once: 0,
        none_for: Duration::ZERO,
    };
    let mut none_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut done = None;
    while Instant::now() < deadline {
        let pods = kubectl(
            node,
            &[
                "get",
                "pods",
                "-n",
                NS,
                "-l",
                "app.kubernetes.io/component=controller",
                "-o",
                "jsonpath={range .items[*]}{.status.podIP} {.spec.containers[0].image}{\"\\n\"}{end}",
            ],
        );
        // Each Pod is read twice, forwards then backwards, and counts as leading only if both
        // reads say so. A Pod leads at most once in its life (0, then 1, then 0 until it exits),
        // so two reads of 1 mean it led all the time between them, which brackets every other
        // Pod's reads: two Pods counted are two leaders at once, never a hand-over that fell
        // between two reads of one pass.
        let pods: Vec<(&str, &str)> = pods.lines().filter_map(|l| l.split_once(' ')).collect();
        let leads = |ip: &str| {
            let (ok, metrics, _) = run(Command::new("curl").args([
                "-sS",
                "--max-time",
                "2",
                &format!("http://{ip}:9090/metrics"),
            ]));
            ok && metrics.lines().any(|l| l == "univrs_leader 1")
        };
        let forwards: Vec<bool> = pods.iter().map(|(ip, _)| leads(ip)).collect();
        let backwards: Vec<bool> = pods.iter().rev().map(|(ip, _)| leads(ip)).collect();
        let mut leading = Vec::new();
        for (i, (_, image)) in pods.iter().enumerate() {
            let (first, second) = (forwards[i], backwards[pods.len() - 1 - i]);
            if first || second {
                seen.images.insert(image.to_string());
            }
            if first && second {
                leading.push(image.to_string());
            }
        }
        seen.samples += 1;
        seen.most_at_once = seen.most_at_once.max(leading.len());
        match (leading.is_empty(), none_since) {
            (true, None) => none_since = Some(Instant::now()),
            (false, Some(t)) => {
                seen.none_for += t.elapsed();
                none_since = None;
            }
            _ => {}
        }
        if done.is_none() {
            done = child.try_wait().unwrap();
        }
        if done.is_some() && leading.iter().any(|i| i.ends_with(":v2")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "helm upgrade: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        state(node)
    );
    seen
}

/// What the agent left on the machine: processes run from its data directory (shims,
/// containers' runtimes), mounts under its data directory or /run/univrs (besides the shared
/// mounts the test made), its bridges (`univrs-<8 hex>`) and iptables chains.
fn leftovers(data: &Path) -> Vec<String> {
    let mut left = Vec::new();
    let data_s = data.display().to_string();
    for pid in univrs_tests::pids_with_cmdline(&data_s) {
        left.push(format!("process {pid}"));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for point in info.lines().filter_map(|l| l.split(' ').nth(4)) {
        let ours = point == data_s || point == RUN;
        if !ours && (point.starts_with(&data_s) || point.starts_with(RUN)) {
            left.push(format!("mount {point}"));
        }
    }
    let (_, links, _) = run(Command::new("ip").args(["-o", "link", "show"]));
    for link in links.lines() {
        let name = link
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        let hex = name.strip_prefix("univrs-").unwrap_or("");
        if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            left.push(format!("link {name}"));
        }
    }
    for table in ["filter", "nat"] {
        let (_, rules, _) = run(Command::new("iptables").args(["-t", table, "-S"]));
        left.extend(
            rules
                .lines()
                .filter(|r| r.contains("UNIVRS"))
                .map(|r| format!("iptables -t {table} {r}")),
        );
    }
    left
}

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
        || {
            let (ok, out, err) = run(Command::new("curl").args([
                "-sS",
                "--max-time",
                "5",
                &format!("http://{NODE_IP}:30080/"),
            ]));
            ((ok && out.contains("Community portal")).then_some(out), err)
        },
    );
    eprintln!("served: {page}");
    let _ = PathBuf::new();
}

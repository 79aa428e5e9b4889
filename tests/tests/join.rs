//! Machines joining over a network, each a network namespace on one bridge: "center" runs
//! `univrs up --advertise-address`, "library" and "school" join it with tokens from `univrs
//! token create` and run their agents on their own certificates; the three nodes turn Ready and
//! run the portal example. A wrong CA hash, a deleted token and an expired token are refused
//! with clear errors and leave nothing behind; a removed node's credentials stop working.

use kube::api::Api;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use univrs_api::{Node, Workload};
use univrs_tests::cluster::eventually;
use univrs_tests::up::Up;
use univrs_tests::{Guarded, client_from, free_port, repo_root, run, univrs_bin, upstream_bin_dir};

/// Network namespaces on a bridge, removed when dropped.
struct Machines {
    bridge: String,
    names: Vec<String>,
}

impl Machines {
    /// One namespace per name, `10.<net>.0.<i+1>/24` each, all on one bridge.
    fn new(tag: &str, names: &[&str]) -> Self {
        let bridge = format!("ujb{tag}");
        let sh = |args: &[&str]| {
            let (ok, out, err) = run(Command::new("ip").args(args));
            assert!(ok, "ip {args:?}: {out}{err}");
        };
        let m = Machines {
            bridge: bridge.clone(),
            names: names.iter().map(|n| format!("uj{tag}{n}")).collect(),
        };
        sh(&["link", "add", &bridge, "type", "bridge"]);
        sh(&["addr", "add", "10.213.0.254/24", "dev", &bridge]);
        sh(&["link", "set", &bridge, "up"]);
        // Bridged traffic passes the host's FORWARD chain (br_netfilter): let the machines'
        // own traffic through whatever policy other tests leave there.
        let (ok, _, err) = run(Command::new("iptables").args(m.forward_rule("-I")));
        assert!(ok, "iptables: {err}");
        for (i, ns) in m.names.iter().enumerate() {
            let host = format!("ujv{tag}{i}");
            sh(&["netns", "add", ns]);
            sh(&[
                "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            sh(&["link", "set", &host, "master", &bridge, "up"]);
            sh(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", m.address(i)),
                "dev",
                "eth0",
            ]);
            sh(&["-n", ns, "link", "set", "eth0", "up"]);
            sh(&["-n", ns, "link", "set", "lo", "up"]);
        }
        m
    }

    fn forward_rule(&self, op: &str) -> Vec<String> {
        [
            op,
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]
        .map(String::from)
        .to_vec()
    }

    fn address(&self, i: usize) -> String {
        format!("10.213.0.{}", i + 1)
    }

    /// `program` run in machine `i`'s network namespace. nsenter, not `ip netns exec`: that
    /// one also remounts /sys for the namespace, which hides the cgroup file system the agent's
    /// containers need.
    fn exec(&self, i: usize, program: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.names[i]))
            .arg(program);
        c
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
        let _ = Command::new("iptables")
            .args(self.forward_rule("-D"))
            .status();
    }
}

/// The flags of an agent on machine `i` beside the center's.
fn agent_flags(m: &Machines, i: usize, demo: &Path) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("/ip4/{}/tcp/0", m.address(i)),
        "--no-mdns".into(),
        "--pod-cidr".into(),
        format!("10.89.{}.0/24", 210 + i),
        "--cpu".into(),
        "2".into(),
        "--memory".into(),
        "2Gi".into(),
        "--lease-duration".into(),
        "3s".into(),
        "--image-layout".into(),
        format!("univrs.local/demo:latest={}", demo.display()),
    ]
}

/// Runs `univrs join` on machine `i` with `line`'s server, token and hash (the hash replaced
/// when `hash` is given); returns (success, stdout, stderr).
fn join_once(
    m: &Machines,
    i: usize,
    line: &str,
    hash: Option<&str>,
    dir: &Path,
    name: &str,
) -> (bool, String, String) {
    let mut args: Vec<String> = line.split_whitespace().skip(2).map(String::from).collect();
    if let Some(h) = hash {
        let at = args.iter().position(|a| a == "--ca-cert-hash").unwrap();
        args[at + 1] = h.to_string();
    }
    run(m
        .exec(i, univrs_bin())
        .arg("join")
        .args(&args)
        .arg("--data-dir")
        .arg(dir)
        .args(["--node-name", name, "--no-start"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn machines_join_over_the_network_and_only_with_a_valid_token_and_pin() {
    let tag = format!("{}", std::process::id() % 1000);
    let m = Machines::new(&tag, &["c", "l", "s", "x"]);
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();

    // The center: the control plane, the controller and its own agent, advertised on its
    // address.
    let center = tmp.path().join("center");
    let mut up = m.exec(0, univrs_bin());
    up.arg("up")
        .arg("--data-dir")
        .arg(&center)
        .args([
            "--port",
            &port.to_string(),
            "--advertise-address",
            &m.address(0),
        ])
        .args(["--lease-duration", "3s", "--node-grace-period", "4s"]);
    let up = Up::spawn(up, tmp.path().join("center.log"));
    let admin_kc = up.kubeconfig.clone();
    let token = || {
        let (ok, line, err) = run(m
            .exec(0, univrs_bin())
            .args(["token", "create", "--ttl", "10m", "--kubeconfig"])
            .arg(&admin_kc));
        assert!(ok, "{err}");
        line.trim().to_string()
    };
    let line = token();
    assert!(
        line.starts_with(&format!(
            "univrs join --server https://{}:{port} ",
            m.address(0)
        )),
        "{line}"
    );
    let demo = center.join("demo-image");

    // Two machines join and run their agents on their own certificates. Dropped after the
    // agents are killed (declared before them), the guard resets what they left: containers,
    // mounts, networks.
    let _reset = ResetAgents(
        [(1, "library"), (2, "school")]
            .iter()
            .map(|(_, n)| (n.to_string(), PathBuf::from(format!("/tmp/uj{tag}{n}"))))
            .collect(),
    );
    let mut agents = Vec::new();
    for (i, name) in [(1, "library"), (2, "school")] {
        let dir = PathBuf::from(format!("/tmp/uj{tag}{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let agent_log = tmp.path().join(format!("{name}.log"));
        let mut cmd = m.exec(i, univrs_bin());
        cmd.arg("join")
            .args(line.split_whitespace().skip(2))
            .arg("--data-dir")
            .arg(&dir)
            .args(["--node-name", name])
            .args(agent_flags(&m, i, &demo))
            .stdout(std::fs::File::create(&agent_log).unwrap())
            .stderr(std::fs::File::create(agent_log.with_extension("err")).unwrap());
        agents.push((name, dir, Guarded::spawn(cmd).unwrap(), agent_log));
    }

    // From the host, the API server is reached through the center's address: the serving
    // certificate names it.
    let remote_kc = tmp.path().join("admin-remote.kubeconfig");
    std::fs::write(
        &remote_kc,
        std::fs::read_to_string(&admin_kc).unwrap().replace(
            &format!("https://127.0.0.1:{port}"),
            &format!("https://{}:{port}", m.address(0)),
        ),
    )
    .unwrap();
    let admin = client_from(&remote_kc).await.unwrap();
    let nodes: Api<Node> = Api::all(admin.clone());
    eventually("three nodes Ready", Duration::from_secs(120), async || {
        let all = nodes.list(&Default::default()).await.unwrap().items;
        let ready: Vec<String> = all
            .iter()
            .filter(|n| {
                n.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .map(|n| n.metadata.name.clone().unwrap_or_default())
            .collect();
        (
            (ready.len() == 3).then_some(()),
            format!("Ready: {ready:?}"),
        )
    })
    .await;
    for (name, dir, _, log) in &agents {
        let out = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            out.contains(&format!(
                "joined node={name} kubeconfig={}/kubeconfig",
                dir.display()
            )),
            "{out}"
        );
    }

    // The portal runs on the three machines.
    let (ok, out, err) = run(m
        .exec(0, &upstream_bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(&admin_kc)
        .args(["apply", "-f"])
        .arg(repo_root().join("deploy/examples/community-portal.yaml")));
    assert!(ok, "{out}{err}");
    let workloads: Api<Workload> = Api::namespaced(admin.clone(), "community-center");
    eventually(
        "the portal's 3 replicas running",
        Duration::from_secs(120),
        async || {
            let w = workloads.get("community-portal").await.unwrap();
            let running = w
                .status
                .iter()
                .flat_map(|s| &s.instances)
                .filter(|i| i.ready == Some(true))
                .count();
            ((running == 3).then_some(()), format!("{:?}", w.status))
        },
    )
    .await;

    // Refused: a wrong pin, a deleted token, an expired token; nothing is left behind.
    let stranger = PathBuf::from(format!("/tmp/uj{tag}stranger"));
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let (ok, _, err) = join_once(&m, 3, &token(), Some(&wrong), &stranger, "stranger");
    assert!(
        !ok && err.contains("does not match --ca-cert-hash"),
        "{err}"
    );
    let deleted = token();
    let id = deleted
        .split_whitespace()
        .skip_while(|a| *a != "--token")
        .nth(1)
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let (ok, _, err) = run(m
        .exec(0, univrs_bin())
        .args(["token", "delete", &id, "--kubeconfig"])
        .arg(&admin_kc));
    assert!(ok, "{err}");
    let (ok, _, err) = join_once(&m, 3, &deleted, None, &stranger, "stranger");
    assert!(!ok && err.contains("wrong, expired or deleted"), "{err}");
    let (ok, short, err) = run(m
        .exec(0, univrs_bin())
        .args(["token", "create", "--ttl", "1s", "--kubeconfig"])
        .arg(&admin_kc));
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_secs(3));
    let (ok, _, err) = join_once(&m, 3, short.trim(), None, &stranger, "stranger");
    assert!(!ok && err.contains("wrong, expired or deleted"), "{err}");
    assert!(nodes.get_opt("stranger").await.unwrap().is_none());
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    assert!(
        bindings
            .get_opt("univrs-node-stranger")
            .await
            .unwrap()
            .is_none()
    );

    // A removed node's certificate stops working.
    let (name, dir, proc, _) = agents.pop().unwrap();
    drop(proc);
    let (ok, _, err) = run(m
        .exec(0, univrs_bin())
        .args(["node", "remove", name, "--kubeconfig"])
        .arg(&admin_kc));
    assert!(ok, "{err}");
    let (ok, out, err) = run(m
        .exec(2, &upstream_bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .args(["get", "workloads.univrs.io", "-A"]));
    assert!(!ok && err.contains("forbidden"), "{out}{err}");
    // The Node goes once the controller has settled its credit (its finalizer).
    eventually(
        "the removed Node gone",
        Duration::from_secs(60),
        async || {
            let n = nodes.get_opt(name).await.unwrap();
            (
                n.is_none().then_some(()),
                format!("{:?}", n.map(|n| n.metadata)),
            )
        },
    )
    .await;
    drop(agents);
    up.interrupt();
}

/// Runs `univrs reset` for each (node name, data directory) when dropped, and removes the
/// directory.
struct ResetAgents(Vec<(String, PathBuf)>);

impl Drop for ResetAgents {
    fn drop(&mut self) {
        for (name, dir) in &self.0 {
            let out = std::process::Command::new(univrs_bin())
                .arg("reset")
                .arg("--data-dir")
                .arg(dir)
                .args(["--node-name", name])
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let _ = std::fs::remove_dir_all(dir);
                }
                Ok(o) => eprintln!(
                    "univrs reset of {name} failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("univrs reset of {name}: {e}"),
            }
        }
    }
}

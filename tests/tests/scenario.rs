//! The community-cloud scenario end to end, the way users meet the system: `univrs up` with
//! three agents, the example portal applied with kubectl, three real containers spread over the
//! nodes each serving its page on the address its status gives, credit moving along lines while
//! they run, a signed vouch verified (counting nothing: its voucher is new) and one by the trust
//! anchor (node-0) raising its subject's reputation, a node that
//! stops answering (its agent frozen) and its replica coming back elsewhere, that agent killed
//! and restarted removing its stale copy, a scale to five through the MCP server, and a delete
//! that leaves nothing running, all with the controller on its ServiceAccount's token and each
//! agent joined with a certificate of its own.

use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use univrs_api::resources::creditline::CreditLine;
use univrs_api::resources::vouch::{Vouch, VouchStatus};
use univrs_api::{Node, Workload};
use univrs_tests::cluster::eventually;
use univrs_tests::up::Up;
use univrs_tests::{curl, free_port, repo_root, run, univrs_bin};

const NS: &str = "community-center";
const PORTAL: &str = "community-portal";

fn kubectl(kubeconfig: &Path) -> Command {
    univrs_tests::kubectl_with(kubeconfig)
}

/// Ready instances of the portal: (instance, node), each checked to serve its own page on the
/// address its status gives.
fn ready_instances(w: &Workload) -> Vec<(String, String)> {
    w.status
        .iter()
        .flat_map(|s| s.instances.iter())
        .filter(|i| {
            i.ready == Some(true)
                && i.usage
                    .as_ref()
                    .is_some_and(|u| u.is_for(i.node.as_ref(), i.placed_at.as_ref()))
        })
        .filter(|i| {
            i.ip.as_ref().is_some_and(|ip| {
                let (code, page) = curl(&["-m", "5", &format!("http://{ip}:8080/")]);
                code == "200" && page.contains(&format!("served by {}", i.name))
            })
        })
        .filter_map(|i| i.node.clone().map(|n| (i.name.clone(), n)))
        .collect()
}

/// Every instance as its status says, for failure messages.
fn instances(w: &Workload) -> String {
    w.status
        .iter()
        .flat_map(|s| s.instances.iter())
        .map(|i| {
            format!(
                "{} on {:?}: {:?} ready={:?} ip={:?} {:?}",
                i.name, i.node, i.phase, i.ready, i.ip, i.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The runtime's containers of `node`'s agent under `dir`.
fn containers_on(dir: &Path, node: &str) -> Vec<String> {
    std::fs::read_dir(dir.join("agents").join(node).join("runtime/containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid of the agent process of `node` under `dir` (`univrs join`, which runs the agent).
fn agent_pid(dir: &Path, node: &str) -> i32 {
    let needle = format!("--node-name {node} ");
    let data = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            ((cmd.contains(" agent ") || cmd.contains(" join "))
                && cmd.contains(&needle)
                && cmd.contains(&data))
            .then_some(pid)
        })
        .next()
        .unwrap_or_else(|| panic!("no agent process for {node}"))
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// The reputation in `node`'s status (0 when none yet).
async fn reputation(nodes: &Api<Node>, node: &str) -> f64 {
    nodes
        .get(node)
        .await
        .unwrap()
        .status
        .and_then(|s| s.reputation)
        .unwrap_or(0.0)
}

/// `voucher` vouches for `subject` (signed by `univrs vouch` with the voucher's key, applied
/// with kubectl); returns the Vouch's status once the controller verified it.
async fn vouch(
    dir: &Path,
    kc: &Path,
    client: &kube::Client,
    voucher: &str,
    subject: &str,
) -> VouchStatus {
    let (ok, manifest, err) = run(Command::new(univrs_bin())
        .arg("vouch")
        .arg("--identity")
        .arg(dir.join("agents").join(voucher).join("identity.key"))
        .args(["--subject", subject, "--weight", "0.9", "--reason"])
        .arg(format!("{voucher} saw {subject} host the portal well"))
        .arg("--kubeconfig")
        .arg(kc));
    assert!(ok, "{err}");
    let v: Vouch = serde_yaml::from_str(&manifest).unwrap();
    let file = dir.join(format!("vouch-{voucher}-{subject}.yaml"));
    std::fs::write(&file, &manifest).unwrap();
    let (ok, out, err) = run(kubectl(kc).arg("apply").arg("-f").arg(&file));
    assert!(ok, "{out}{err}");
    let vouches: Api<Vouch> = Api::all(client.clone());
    let name = v.metadata.name.clone().unwrap();
    let status = eventually(
        &format!("{voucher}'s vouch for {subject} verified"),
        Duration::from_secs(90),
        async || {
            let st = vouches.get(&name).await.unwrap().status;
            (st.clone().filter(|s| s.verified), format!("{st:?}"))
        },
    )
    .await;
    assert_eq!(status.subject_node.as_deref(), Some(subject));
    assert_eq!(status.voucher_node.as_deref(), Some(voucher));
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_community_cloud_scenario() {
    let dir = PathBuf::from(format!("/tmp/us-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = Up::start(&dir, free_port(), 2);
    let client = up.client().await;
    let kc = up.kubeconfig.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let wl: Api<Workload> = Api::namespaced(client.clone(), NS);

    // Each machine sets a price, so running the portal costs credit.
    for n in ["node-0", "node-1", "node-2"] {
        let patch = serde_json::json!({"spec": {"pricing": {"model": "Fixed", "cpuCoreHour": 1000, "memoryGibHour": 100}}});
        nodes
            .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    // kubectl apply of the example: three real containers, one per node.
    let example = repo_root().join("deploy/examples/community-portal.yaml");
    let (ok, out, err) = run(kubectl(&kc).arg("apply").arg("-f").arg(&example));
    assert!(ok, "{out}{err}");
    let placed = eventually(
        "3 portal replicas ready on 3 nodes",
        Duration::from_secs(180),
        async || {
            let w = wl.get(PORTAL).await.unwrap();
            let r = ready_instances(&w);
            let nodes: BTreeSet<&String> = r.iter().map(|(_, n)| n).collect();
            (
                (r.len() == 3 && nodes.len() == 3).then(|| r.clone()),
                format!("{r:?} of {}", instances(&w)),
            )
        },
    )
    .await;

    // One machine as three: each agent has its own loopback address, where the portal's
    // exposed port answers, whichever machine runs the instance that answers.
    for (i, n) in ["node-0", "node-1", "node-2"].iter().enumerate() {
        let want = format!("127.0.0.{}", 2 + i);
        eventually(
            &format!("{n}'s address"),
            Duration::from_secs(60),
            async || {
                let a = nodes
                    .get(n)
                    .await
                    .unwrap()
                    .status
                    .map(|s| s.addresses)
                    .unwrap_or_default();
                let ok = a
                    .iter()
                    .any(|a| a.type_ == "InternalIP" && a.address == want);
                (ok.then_some(()), format!("{a:?}"))
            },
        )
        .await;
        let page = eventually(
            &format!("the portal on {want}:30080"),
            Duration::from_secs(60),
            async || {
                let p = univrs_tests::http_get(&format!("{want}:30080"));
                (
                    p.clone()
                        .ok()
                        .filter(|b| b.contains("served by community-portal-")),
                    format!("{p:?}"),
                )
            },
        )
        .await;
        assert!(page.starts_with("HTTP/1."), "{page}");
    }

    // Credit lines from the community center's namespace to each machine: usage is paid.
    let lines: Api<CreditLine> = Api::all(client.clone());
    for n in ["node-0", "node-1", "node-2"] {
        let cl: CreditLine = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
            "metadata": {"name": format!("{n}-hosts-portal")},
            "spec": {"creditor": format!("node/{n}"), "debtor": format!("namespace/{NS}"), "limit": 1_000_000}
        }))
        .unwrap();
        lines.create(&Default::default(), &cl).await.unwrap();
    }
    eventually(
        "credit moving along the lines",
        Duration::from_secs(120),
        async || {
            let l = lines.list(&Default::default()).await.unwrap();
            let owed: i64 = l
                .items
                .iter()
                .filter(|c| c.spec.debtor.to_string() == format!("namespace/{NS}"))
                .map(|c| c.status.as_ref().map_or(0, |s| s.balance))
                .sum();
            ((owed > 0).then_some(owed), format!("owed {owed}"))
        },
    )
    .await;
    let (ok, table, _) = run(kubectl(&kc).args(["get", "creditlines"]));
    assert!(ok);
    eprintln!("{table}");

    // node-1 vouches for node-0, signed with node-1's key: verified, but a voucher counts only
    // once its own service record exceeds 0.60 (a fresh node's is 0.5), so fresh machines cannot
    // lift each other: node-0's reputation stays.
    let before = reputation(&nodes, "node-0").await;
    let fresh = vouch(&dir, &kc, &client, "node-1", "node-0").await;
    assert_eq!(fresh.effective_weight, 0.0, "{fresh:?}");
    assert_eq!(reputation(&nodes, "node-0").await, before);
    // node-0, the machine `univrs up` runs on, is the community's trust anchor: its vouch for
    // node-1 counts in full, and node-1's reputation rises.
    let before = reputation(&nodes, "node-1").await;
    let anchored = vouch(&dir, &kc, &client, "node-0", "node-1").await;
    assert!(anchored.effective_weight > 0.5, "{anchored:?}");
    let after = eventually(
        "node-1's reputation rising",
        Duration::from_secs(60),
        async || {
            let r = reputation(&nodes, "node-1").await;
            ((r > before).then_some(r), format!("{before} → {r}"))
        },
    )
    .await;
    eprintln!("node-1's reputation {before} → {after} after the anchor's vouch");

    // A machine stops answering (its agent frozen): its replica comes back elsewhere.
    let (lost_inst, lost_node) = placed[0].clone();
    let pid = agent_pid(&dir, &lost_node);
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    eventually(
        "the lost replica ready on another node",
        Duration::from_secs(120),
        async || {
            let w = wl.get(PORTAL).await.unwrap();
            let r = ready_instances(&w);
            let moved = r.iter().any(|(i, n)| *i == lost_inst && *n != lost_node);
            (
                (moved && r.len() == 3).then_some(()),
                format!("{r:?} of {}", instances(&w)),
            )
        },
    )
    .await;
    // The machine's agent is then killed (-9) where it hung; `univrs up` starts it again, and
    // it removes its copy of the replica that moved away (no duplicate) and turns Ready.
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    eventually(
        "the lost node back, without the moved replica",
        Duration::from_secs(120),
        async || {
            let stale: Vec<String> = containers_on(&dir, &lost_node)
                .into_iter()
                .filter(|c| c.starts_with(&format!("{lost_inst}-")))
                .collect();
            let ready = nodes
                .get(&lost_node)
                .await
                .unwrap()
                .status
                .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"));
            (
                (stale.is_empty() && ready).then_some(()),
                format!("ready {ready}, stale containers {stale:?}"),
            )
        },
    )
    .await;

    // An AI agent scales the portal to five through the MCP server.
    let py = repo_root().join(".tools/venv/bin/python");
    let (ok, out, err) = run(Command::new(py)
        .arg(repo_root().join("tests/python/mcp_scale.py"))
        .arg(univrs_bin())
        .arg(&kc)
        .args([NS, PORTAL, "5"]));
    assert!(ok, "{out}{err}");
    eventually(
        "5 portal replicas ready",
        Duration::from_secs(180),
        async || {
            let w = wl.get(PORTAL).await.unwrap();
            let r = ready_instances(&w);
            (
                (r.len() == 5).then_some(()),
                format!("{r:?} of {}", instances(&w)),
            )
        },
    )
    .await;

    // Delete: nothing is left running on any node.
    let (ok, out, err) = run(kubectl(&kc)
        .arg("delete")
        .arg("-f")
        .arg(&example)
        .arg("--wait=false"));
    assert!(ok, "{out}{err}");
    eventually("no container left", Duration::from_secs(120), async || {
        let left: Vec<String> = ["node-0", "node-1", "node-2"]
            .iter()
            .flat_map(|n| containers_on(&dir, n))
            .collect();
        (left.is_empty().then_some(()), format!("{left:?}"))
    })
    .await;
    // All along, the controller ran on its ServiceAccount's token and each agent on its own
    // certificate (joined), under the chart's RBAC and admission policies, and nothing they did
    // was refused.
    let mut credentials = vec![dir.join("credentials/univrs-controller.kubeconfig")];
    for node in ["node-0", "node-1", "node-2"] {
        credentials.push(dir.join("agents").join(node).join("kubeconfig"));
        credentials.push(dir.join("agents").join(node).join("node.crt"));
    }
    for kc in credentials {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kc).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", kc.display());
    }
    for entry in std::fs::read_dir(dir.join("logs")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("controller") || name.starts_with("agent") {
            let log = std::fs::read_to_string(entry.path()).unwrap();
            univrs_tests::assert_never_refused(&name, &log);
        }
    }
    let (_, cmdlines, _) = run(Command::new("ps").args(["-eo", "args"]));
    let components: Vec<&str> = cmdlines
        .lines()
        .filter(|l| l.contains(" join ") || l.contains(" controller "))
        .filter(|l| l.contains(&dir.display().to_string()))
        .collect();
    // The controller on its ServiceAccount's token; each agent joined, with no shared
    // credential on its command line (the bootstrap token is in its environment).
    let (controller, agents): (Vec<&str>, Vec<&str>) =
        components.iter().partition(|l| l.contains(" controller "));
    assert!(
        controller.len() == 1
            && controller[0].contains("/credentials/univrs-controller.kubeconfig")
            && agents.len() == 3
            && agents.iter().all(|l| l.contains(" join --server ")
                && !l.contains("--kubeconfig")
                && !l.contains("--token")),
        "{components:#?}"
    );
    up.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
}

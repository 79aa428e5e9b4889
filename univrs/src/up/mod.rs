//! `univrs up`: the whole system on one machine. The local control plane (or an existing
//! cluster), the CRDs, the `univrs-system` namespace, the controller and one or more node
//! agents, supervised until Ctrl-C.
//!
//! Failure policy: the controller and the agents are restarted with backoff when they die
//! (their state lives in the API server and on disk, so a restart converges); the control
//! plane dying stops everything with its log tail, as `univrs control-plane` does itself.
//! Ctrl-C stops the agents and removes their containers (`univrs reset`), then the controller
//! and the control plane; starting again keeps every resource, and the agents start again what
//! is placed on them.

mod children;
mod credentials;

use crate::control_plane::{self, Progress, process};
use anyhow::{Context, Result};
use children::{Child, Children};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use univrs_api::SYSTEM_NAMESPACE;
use univrs_node_agent::demo_image;

/// How to run everything.
#[derive(Debug, Clone)]
pub struct Options {
    /// Control-plane data, agents' data, logs.
    pub data_dir: PathBuf,
    /// The API server's port on 127.0.0.1 (local control plane only).
    pub port: u16,
    /// Where other machines reach the local control plane's API server (to join).
    pub advertise_address: Option<std::net::IpAddr>,
    /// Also write the admin kubeconfig here.
    pub write_kubeconfig: Option<PathBuf>,
    /// Agents besides the first.
    pub extra_agents: u32,
    /// Use this cluster instead of starting the local control plane.
    pub kubeconfig: Option<PathBuf>,
    /// The agents' Lease duration.
    pub lease_duration: Duration,
    /// The controller's node grace period.
    pub node_grace_period: Duration,
    /// How often agents write usage alone.
    pub usage_interval: Duration,
}

/// The field manager `up` applies CRDs and namespaces with.
const MANAGER: &str = "univrs-up";

/// Runs everything until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> Result<()> {
    let mut progress = Progress::new();
    let exe = std::env::current_exe().context("finding the univrs binary")?;
    let logs = opts.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut children = Children::new(exe.clone(), logs.clone());

    let kubeconfig = match &opts.kubeconfig {
        Some(k) => k.clone(),
        None => {
            progress.begin(&format!(
                "local control plane on https://127.0.0.1:{}",
                opts.port
            ));
            let cp_dir = opts.data_dir.join("control-plane");
            let mut args = vec![
                "control-plane".to_string(),
                "--data-dir".into(),
                cp_dir.display().to_string(),
                "--port".into(),
                opts.port.to_string(),
            ];
            if let Some(k) = &opts.write_kubeconfig {
                args.push("--write-kubeconfig".into());
                args.push(k.display().to_string());
            }
            if let Some(a) = opts.advertise_address {
                args.push("--advertise-address".into());
                args.push(a.to_string());
            }
            children.spawn(Child::critical("control-plane", args))?;
            let kc = cp_dir.join("admin.kubeconfig");
            wait_for_file(&kc, &mut children, Duration::from_secs(900)).await?;
            kc
        }
    };
    let client = control_plane::admin_client(&kubeconfig)
        .await
        .with_context(|| format!("using {}", kubeconfig.display()))?;
    control_plane::wait_for_readyz(
        &client,
        &mut || children.check_critical(),
        Duration::from_secs(900),
    )
    .await?;
    progress.done("API server ready");

    progress.begin("CRDs and the univrs-system namespace");
    univrs_controller::crds::install(&client, MANAGER, univrs_api::crds::all()).await?;
    ensure_namespace(&client, SYSTEM_NAMESPACE).await?;
    progress.done("CRDs established");

    // On its own control plane, `up` runs the controller with its ServiceAccount's rights and
    // joins each agent as a machine of its own would (`univrs join`: a bootstrap token, its own
    // certificate, the node policies); a cluster given with --kubeconfig keeps its own RBAC
    // (e.g. from the Helm chart), so the components use the credentials given.
    let (controller_kubeconfig, agent_credentials, _renewal) = if opts.kubeconfig.is_none() {
        progress.begin("ServiceAccounts, RBAC and admission policies of the Helm chart");
        let n = credentials::apply_access(&client, MANAGER).await?;
        let creds = credentials::issue(
            &client,
            &kubeconfig,
            SYSTEM_NAMESPACE,
            &["univrs-controller"],
            &opts.data_dir.join("credentials"),
        )
        .await?;
        let controller = creds[0].kubeconfig.clone();
        let renewal = AbortOnDrop(tokio::spawn(credentials::renew_forever(
            client.clone(),
            SYSTEM_NAMESPACE.to_string(),
            creds,
        )));
        let join = credentials::join_token(&client, &kubeconfig).await?;
        progress.done(&format!(
            "controller on its ServiceAccount's token, agents join with their own certificates ({n} RBAC and policy objects)"
        ));
        (controller, AgentCredentials::Join(join), Some(renewal))
    } else {
        (
            kubeconfig.clone(),
            AgentCredentials::Kubeconfig(kubeconfig.clone()),
            None,
        )
    };

    // This machine's first agent, node-0, is the community's founding member (the node others
    // bootstrap from): its key is made here, before the agent starts, so the controller can
    // count it a trust anchor and the first vouches can lift anyone's reputation.
    let anchor_key = opts.data_dir.join("agents/node-0/identity.key");
    let anchor = univrs_node_agent::keyfile::load_or_generate(&anchor_key)
        .with_context(|| format!("node-0's identity {}", anchor_key.display()))?
        .public()
        .did();
    progress.begin("controller");
    let metrics_port = process::free_port()?;
    children.spawn(Child::restartable(
        "controller",
        vec![
            "controller".into(),
            "--kubeconfig".into(),
            controller_kubeconfig.display().to_string(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--node-grace-period".into(),
            humantime::format_duration(opts.node_grace_period).to_string(),
            "--node-lease-duration".into(),
            humantime::format_duration(opts.lease_duration).to_string(),
            "--trust-anchor".into(),
            anchor,
        ],
    ))?;
    progress.done(&format!(
        "controller (metrics on 127.0.0.1:{metrics_port}; node-0 is the trust anchor)"
    ));

    progress.begin("demo image");
    let demo = demo_image::build(&opts.data_dir.join("demo-image"))?;
    progress.done(&format!(
        "demo image {} in {}",
        demo_image::DEMO_REFERENCE,
        demo.display()
    ));

    let agents = 1 + opts.extra_agents;
    let (cpu, memory) = share_of_machine(agents);
    let mut agent_names = Vec::new();
    for i in 0..agents {
        let name = format!("node-{i}");
        let dir = opts.data_dir.join("agents").join(&name);
        let ip = agent_address(i);
        progress.begin(&format!("agent {name}"));
        children.spawn(
            agent_credentials
                .child(vec![
                    "--data-dir".into(),
                    dir.display().to_string(),
                    "--node-name".into(),
                    name.clone(),
                    "--label".into(),
                    "univrs.io/local=true".into(),
                    "--cpu".into(),
                    cpu.clone(),
                    "--memory".into(),
                    memory.clone(),
                    "--lease-duration".into(),
                    humantime::format_duration(opts.lease_duration).to_string(),
                    "--usage-interval".into(),
                    humantime::format_duration(opts.usage_interval).to_string(),
                    "--image-layout".into(),
                    format!("{}={}", demo_image::DEMO_REFERENCE, demo.display()),
                    // One machine as several: each agent has its own loopback address for
                    // its mesh, its API and the exposed ports it serves; peers come from the
                    // Nodes.
                    "--listen".into(),
                    format!("/ip4/{ip}/tcp/0"),
                    "--listen".into(),
                    format!("/ip4/{ip}/udp/0/quic-v1"),
                    "--api-addr".into(),
                    format!("{ip}:0"),
                    "--server-addr".into(),
                    format!("{ip}:0"),
                    "--expose-address".into(),
                    ip.to_string(),
                    "--no-mdns".into(),
                    // Agents on one machine each get their own container subnet.
                    "--pod-cidr".into(),
                    format!("10.89.{}.0/24", 100 + i),
                ])
                .named(&name),
        )?;
        progress.done(&format!("agent {name} (data in {})", dir.display()));
        agent_names.push((name, dir));
    }
    wait_for_nodes(
        &client,
        &agent_names,
        &mut children,
        Duration::from_secs(120),
    )
    .await?;

    let shown = opts.write_kubeconfig.clone().unwrap_or(kubeconfig.clone());
    eprintln!(
        "\nUnivrs is up in {:.1} s: {} node agent(s), the controller{}.\n  kubeconfig: {}\n  logs:       {}\n  try:        export KUBECONFIG={}\n              kubectl apply -f deploy/examples/community-portal.yaml\n              kubectl get workloads,nodes.univrs.io\n\nCtrl-C stops everything; starting again with the same --data-dir keeps all data.",
        progress.started.elapsed().as_secs_f64(),
        agents,
        if opts.kubeconfig.is_none() {
            " and the local control plane"
        } else {
            ""
        },
        shown.display(),
        logs.display(),
        shown.display(),
    );
    // Machine-readable readiness line for scripts and tests.
    println!("ready kubeconfig={}", shown.display());

    let outcome = children.supervise().await;
    eprintln!("stopping");
    children.stop_restartable().await;
    for (name, dir) in &agent_names {
        reset_agent(&exe, name, dir).await;
    }
    children.stop_all().await;
    outcome
}

/// Each agent's share of the machine when several run on it: CPU and memory divided evenly.
fn share_of_machine(agents: u32) -> (String, String) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(1 << 20);
    let n = u64::from(agents.max(1));
    (
        format!("{}m", (cpus * 1000 / n).max(100)),
        format!("{}Mi", (mem_kib / 1024 / n).max(64)),
    )
}

async fn wait_for_file(path: &Path, children: &mut Children, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        children.check_critical()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// How `up`'s agents reach the API server.
enum AgentCredentials {
    /// Each joins with this token and gets a certificate of its own (the local control plane).
    Join(crate::join::token::Invitation),
    /// All use the kubeconfig given (a cluster of one's own, with its own RBAC).
    Kubeconfig(PathBuf),
}

impl AgentCredentials {
    /// The agent process with `args` (its flags).
    fn child(&self, args: Vec<String>) -> Child {
        match self {
            Self::Join(j) => {
                let mut all = vec![
                    "join".to_string(),
                    "--server".into(),
                    j.server.clone(),
                    "--ca-cert-hash".into(),
                    j.ca_cert_hash.clone(),
                ];
                all.extend(args);
                // In the environment, not the arguments: the process list is public.
                Child::restartable("agent", all).env("UNIVRS_JOIN_TOKEN", &j.token.to_string())
            }
            Self::Kubeconfig(k) => {
                let mut all = vec![
                    "agent".to_string(),
                    "--kubeconfig".into(),
                    k.display().to_string(),
                ];
                all.extend(args);
                Child::restartable("agent", all)
            }
        }
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn ensure_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Waits until every agent's Node exists (its agent registered).
async fn wait_for_nodes(
    client: &kube::Client,
    agents: &[(String, PathBuf)],
    children: &mut Children,
    timeout: Duration,
) -> Result<()> {
    let api: Api<univrs_api::Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    for (name, _) in agents {
        loop {
            children.check_critical()?;
            if api.get_opt(name).await?.is_some() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "agent {name} did not register its Node within {timeout:?}; see its log"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Removes an agent's containers, root filesystems and networks (`univrs reset`).
async fn reset_agent(exe: &Path, name: &str, dir: &Path) {
    let out = tokio::process::Command::new(exe)
        .arg("reset")
        .arg("--data-dir")
        .arg(dir)
        .arg("--node-name")
        .arg(name)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => eprintln!("  removed agent {name}'s containers"),
        Ok(o) => eprintln!(
            "  removing agent {name}'s containers failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("  running univrs reset for {name}: {e}"),
    }
}

/// Agent `i`'s own loopback address under `univrs up`: 127.0.0.2, 127.0.0.3, …
fn agent_address(i: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2)).saturating_add(i))
}

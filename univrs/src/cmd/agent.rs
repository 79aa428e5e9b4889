//! `univrs agent`: flags to configuration, then the node agent until SIGINT/SIGTERM.

use crate::cli::AgentArgs;
use crate::cmd::controller::{client, init_tracing, shutdown_signal};
use anyhow::Context as _;
use univrs_api::quantity::Quantity;
use univrs_io::token::Token;
use univrs_node_agent::agent::instances::policy::OwnerPolicy;
use univrs_node_agent::agent::{self, AgentConfig, kube::capacity::CapacityOverrides};

/// Runs the agent; once it stops, removes what it ran if its DaemonSet is gone.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let kubeconfig = args.kubeconfig.clone();
    let daemonset = args.daemonset.clone();
    let cfg = config(args)?;
    let (data_dir, node) = (cfg.data_dir.clone(), cfg.node_name.clone());
    let runtime = tokio::runtime::Runtime::new()?;
    let uninstalled = runtime.block_on(async move {
        let client = client(kubeconfig).await?;
        agent::run(client.clone(), cfg, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(match daemonset {
            Some((ns, name)) => daemonset_gone(&client, &ns, &name).await,
            None => false,
        })
    })?;
    // The reset forks and execs: outside the runtime's threads.
    drop(runtime);
    if uninstalled {
        tracing::info!(
            "the agent's DaemonSet is gone: removing its containers, mounts and networks"
        );
        reset(data_dir, Some(node))?;
    }
    Ok(())
}

/// Whether the DaemonSet that ran this agent is gone: deleted or being deleted, or this agent's
/// own credentials went with it (401 or 403: `helm uninstall` removes the release's
/// ServiceAccount and roles right after it). Any other answer keeps the containers.
async fn daemonset_gone(client: &kube::Client, ns: &str, name: &str) -> bool {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let api: kube::Api<DaemonSet> = kube::Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(ds)) => ds.metadata.deletion_timestamp.is_some(),
        Ok(None) => true,
        Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not tell whether DaemonSet {ns}/{name} is gone; keeping the containers");
            false
        }
    }
}

/// The agent's configuration from its flags.
pub fn config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let node_name = node_name(args.node_name)?;
    let quantity = |flag: &str, v: Option<String>| -> anyhow::Result<Option<Quantity>> {
        v.map(|s| {
            let q = Quantity(s.clone());
            q.to_milli()
                .map(|_| q)
                .map_err(|e| anyhow::anyhow!("--{flag} {s:?}: {e}"))
        })
        .transpose()
    };
    let cfg = AgentConfig {
        node_name,
        data_dir: args.data_dir,
        labels: args.labels.into_iter().collect(),
        capacity: CapacityOverrides {
            cpu: quantity("cpu", args.cpu)?,
            memory: quantity("memory", args.memory)?,
            gpu: args.gpu,
        },
        listen: args.listen,
        bootstrap: args.bootstrap,
        mdns: !args.no_mdns,
        relay: !args.no_relay,
        expose_address: args.expose_address,
        lease_duration: args.lease_duration,
        usage_interval: args.usage_interval,
        backoff_base: args.restart_backoff,
        backoff_max: std::time::Duration::from_secs(300),
        shim_bin: std::env::current_exe().context("finding the univrs binary for the shims")?,
        api_addr: args.api_addr,
        server_addr: args.server_addr,
        image_layouts: args.image_layouts,
        insecure_registries: args.insecure_registries,
        registry_auth: args.registry_auth,
        cni_bin_dir: args.cni_bin_dir,
        policy: OwnerPolicy {
            pids_per_container: args.pids_limit,
            host_ports: args.host_ports,
            allow_egress: args.allow_egress,
            max_image_bytes: Quantity(args.max_image_size.clone())
                .to_units()
                .map_err(|e| anyhow::anyhow!("--max-image-size {:?}: {e}", args.max_image_size))?,
            oci_layout_dirs: args.oci_layout_dirs,
            log_max_bytes: Quantity(args.container_log_max_size.clone())
                .to_units()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--container-log-max-size {:?}: {e}",
                        args.container_log_max_size
                    )
                })?,
        },
        user_namespace_base: args.user_namespace_base,
        favor_dynmods: args.favor_dynmods,
        pod_cidr: args
            .pod_cidr
            .map(|c| {
                c.parse()
                    .map_err(|e| anyhow::anyhow!("--pod-cidr {c:?}: {e}"))
            })
            .transpose()?,
        // Refused when others may read it or it is too short to be secret.
        api_token: args
            .api_token_file
            .as_deref()
            .map(Token::load)
            .transpose()?,
        api_tls: args.api_tls_cert.zip(args.api_tls_key),
        vouch_interval: args.vouch_interval,
    };
    Ok(cfg)
}

/// The node name given, or the host name.
pub fn node_name(given: Option<String>) -> anyhow::Result<String> {
    match given {
        Some(n) => Ok(n),
        None => Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (or pass --node-name)")?
            .trim()
            .to_lowercase()),
    }
}

/// `univrs reset`.
pub fn reset(data_dir: std::path::PathBuf, node_name_flag: Option<String>) -> anyhow::Result<()> {
    let node = node_name(node_name_flag)?;
    let exe = std::env::current_exe().context("finding the univrs binary")?;
    let n = agent::reset(&data_dir, &node, &exe)?;
    eprintln!(
        "removed {n} containers of agent {node} ({})",
        data_dir.display()
    );
    Ok(())
}

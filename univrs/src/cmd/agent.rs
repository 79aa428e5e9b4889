//! `univrs agent`: flags to configuration, then the node agent until SIGINT/SIGTERM.

use crate::cli::AgentArgs;
use crate::cmd::controller::{client, init_tracing, shutdown_signal};
use anyhow::Context as _;
use univrs_api::quantity::Quantity;
use univrs_io::token::Token;
use univrs_node_agent::agent::instances::policy::OwnerPolicy;
use univrs_node_agent::agent::{self, AgentConfig, kube::capacity::CapacityOverrides};

/// Runs the agent.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let kubeconfig = args.kubeconfig.clone();
    let cfg = config(args)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = client(kubeconfig).await?;
        agent::run(client, cfg, shutdown_signal()).await?;
        Ok(())
    })
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

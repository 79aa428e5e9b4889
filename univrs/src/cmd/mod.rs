//! What each subcommand does; `main` only dispatches here.

mod control_plane;
mod controller;
mod crds;
mod identity;
mod kubectl;
mod mcp;
mod shim;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds { out, check } => crds::run(out.as_deref(), check),
        Command::Identity { command } => identity::run(command),
        Command::ControlPlane {
            command,
            data_dir,
            port,
            etcd_port,
            write_kubeconfig,
            bin_dir,
        } => control_plane::run(
            command,
            data_dir,
            port,
            etcd_port,
            write_kubeconfig,
            bin_dir,
        ),
        Command::Kubectl { args } => kubectl::run(args),
        Command::Shim { command } => shim::run(command),
        Command::Mcp(args) => mcp::run(args),
        Command::Controller {
            kubeconfig,
            metrics_addr,
            node_grace_period,
            log_json,
        } => controller::run(kubeconfig, metrics_addr, node_grace_period, log_json),
    }
}

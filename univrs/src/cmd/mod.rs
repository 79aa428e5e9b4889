//! What each subcommand does; `main` only dispatches here.

mod agent;
mod control_plane;
mod controller;
mod crds;
mod dashboard;
mod identity;
mod image;
mod join;
mod kubectl;
mod logs;
mod mcp;
mod node;
mod shim;
mod token;
pub mod up;
mod vouch;

use crate::cli::{Cli, Command};
use univrs_controller::state::context::Settings;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Logs(args) => logs::run(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Image { command } => image::run(command),
        Command::Crds { out, check } => crds::run(out.as_deref(), check),
        Command::Identity { command } => identity::run(command),
        Command::Token {
            command,
            kubeconfig,
        } => token::run(command, kubeconfig),
        Command::Join(args) => join::run(*args),
        Command::Node {
            command,
            kubeconfig,
        } => node::run(command, kubeconfig),
        Command::ControlPlane(args) => control_plane::run(*args),
        Command::Agent(args) => agent::run(*args),
        Command::Up {
            data_dir,
            port,
            advertise_address,
            write_kubeconfig,
            agents,
            kubeconfig,
            lease_duration,
            node_grace_period,
            usage_interval,
        } => up::run(up::Args {
            data_dir,
            port,
            advertise_address,
            write_kubeconfig,
            agents,
            kubeconfig,
            lease_duration,
            node_grace_period,
            usage_interval,
        }),
        Command::Reset {
            data_dir,
            node_name,
        } => agent::reset(data_dir, node_name),
        Command::Kubectl { args } => kubectl::run(args),
        Command::Vouch {
            identity,
            subject,
            weight,
            reason,
            expires_in,
            name,
            kubeconfig,
        } => vouch::run(vouch::Args {
            identity,
            subject,
            weight,
            reason,
            expires_in,
            name,
            kubeconfig,
        }),
        Command::Shim { command } => shim::run(command),
        Command::Mcp(args) => mcp::run(args),
        Command::Controller {
            kubeconfig,
            metrics_addr,
            node_grace_period,
            node_lease_duration,
            trust_anchors,
            service_period,
            revival_interval,
            revival_grace,
            node_cluster_role,
            auction_window,
            log_json,
        } => controller::run(
            kubeconfig,
            metrics_addr,
            Settings {
                node_grace_period,
                node_lease_duration,
                trust_anchors: trust_anchors.into_iter().collect(),
                service_period,
                revival_interval,
                revival_grace,
                node_cluster_role,
                auction_window,
                ..Settings::default()
            },
            log_json,
        ),
    }
}

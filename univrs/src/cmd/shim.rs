//! `univrs shim run|exec|userns|netns|delete`: the per-container shim the node agent spawns. It stays
//! single-threaded (no async runtime here): youki's `libcontainer` forks and clones.

use crate::cli::ShimCommand;
use univrs_node_agent::runtime::Layout;
use univrs_node_agent::runtime::exec::exec_in_container;
use univrs_node_agent::runtime::shim::{ShimArgs, delete_container, run_shim};
use univrs_node_agent::runtime::userns;

/// Runs `univrs shim …`. Messages go to stderr, which the agent points at the bundle's
/// `shim.log`; the level comes from RUST_LOG (errors only by default, since the container's
/// init process inherits this logger before it execs and writes to the container's log).
pub fn run(command: ShimCommand) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match command {
        ShimCommand::Run {
            root,
            id,
            grace,
            gated,
        } => {
            run_shim(&ShimArgs {
                root,
                id,
                grace,
                gated,
            })?;
        }
        ShimCommand::Exec {
            root,
            id,
            timeout,
            command,
        } => {
            let code = exec_in_container(&root, &id, command, timeout)?;
            std::process::exit(code);
        }
        ShimCommand::Userns { path, base, size } => userns::pin(&path, base, size)?,
        ShimCommand::Netns { userns, path } => userns::create_netns_in(&userns, &path)?,
        ShimCommand::Delete { root, id } => {
            delete_container(&Layout::new(root), &id)?;
        }
    }
    Ok(())
}

//! `univrs up`.

use crate::{paths, up};
use std::path::PathBuf;

/// Runs the whole system in the foreground.
pub fn run(
    data_dir: Option<PathBuf>,
    port: u16,
    write_kubeconfig: Option<PathBuf>,
    agents: u32,
    kubeconfig: Option<PathBuf>,
) -> anyhow::Result<()> {
    let data_dir = match data_dir {
        Some(d) => d,
        None => paths::data_dir()?,
    };
    let opts = up::Options {
        data_dir,
        port,
        write_kubeconfig,
        extra_agents: agents,
        kubeconfig,
    };
    tokio::runtime::Runtime::new()?.block_on(up::run(opts))
}

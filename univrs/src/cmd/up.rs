//! `univrs up`.

use crate::{paths, up};
use std::path::PathBuf;
use std::time::Duration;

/// `univrs up`'s flags.
pub struct Args {
    pub data_dir: Option<PathBuf>,
    pub port: u16,
    pub advertise_address: Option<std::net::IpAddr>,
    pub write_kubeconfig: Option<PathBuf>,
    pub agents: u32,
    pub kubeconfig: Option<PathBuf>,
    pub lease_duration: Duration,
    pub node_grace_period: Duration,
    pub usage_interval: Duration,
}

/// Runs the whole system in the foreground.
pub fn run(a: Args) -> anyhow::Result<()> {
    let data_dir = match a.data_dir {
        Some(d) => d,
        None => paths::data_dir()?,
    };
    let opts = up::Options {
        data_dir,
        port: a.port,
        advertise_address: a.advertise_address,
        write_kubeconfig: a.write_kubeconfig,
        extra_agents: a.agents,
        kubeconfig: a.kubeconfig,
        lease_duration: a.lease_duration,
        node_grace_period: a.node_grace_period,
        usage_interval: a.usage_interval,
    };
    tokio::runtime::Runtime::new()?.block_on(up::run(opts))
}

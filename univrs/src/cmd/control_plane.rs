//! `univrs control-plane [build]`.

use crate::cli::ControlPlaneCommand;
use crate::control_plane::{self, Options, binaries::Binaries};
use crate::paths;
use std::path::PathBuf;

/// Builds the binaries, or runs the control plane in the foreground.
pub fn run(
    command: Option<ControlPlaneCommand>,
    data_dir: Option<PathBuf>,
    port: u16,
    etcd_port: u16,
    write_kubeconfig: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    advertise_address: Option<std::net::IpAddr>,
) -> anyhow::Result<()> {
    if let Some(ControlPlaneCommand::Build) = command {
        let bins = Binaries::resolve(bin_dir.as_deref())?;
        println!("{}", bins.dir.display());
        return Ok(());
    }
    let data_dir = match data_dir {
        Some(d) => d,
        None => paths::data_dir()?.join("control-plane"),
    };
    let opts = Options {
        data_dir,
        port,
        etcd_port,
        write_kubeconfig,
        bin_dir,
        advertise_address,
    };
    tokio::runtime::Runtime::new()?.block_on(control_plane::run(opts))
}

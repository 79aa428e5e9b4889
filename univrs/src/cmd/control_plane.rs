//! `univrs control-plane [build | kubeconfig]`.

use crate::cli::{ControlPlaneArgs, ControlPlaneCommand};
use crate::control_plane::{self, Options, binaries::Binaries, kubeconfig, pki};
use crate::paths;

/// Builds the binaries, writes a kubeconfig, or runs the control plane in the foreground.
pub fn run(flags: ControlPlaneArgs) -> anyhow::Result<()> {
    let data_dir = match flags.data_dir {
        Some(d) => d,
        None => paths::data_dir()?.join("control-plane"),
    };
    match flags.command {
        Some(ControlPlaneCommand::Build { node: false }) => {
            let bins = Binaries::resolve(flags.bin_dir.as_deref())?;
            println!("{}", bins.dir.display());
            return Ok(());
        }
        Some(ControlPlaneCommand::Build { node: true }) => {
            let bins = Binaries::resolve_node(flags.node_bin_dir.as_deref())?;
            println!("{}", bins.dir.display());
            return Ok(());
        }
        Some(ControlPlaneCommand::Kubeconfig {
            user,
            group,
            out,
            data_dir: given,
            port,
        }) => {
            let pki_dir = given.unwrap_or(data_dir).join("pki");
            let cert = pki::client_certificate(&pki_dir, &user, group.as_deref())?;
            let server = format!("https://127.0.0.1:{port}");
            kubeconfig::write(&out, &server, &pki_dir.join("ca.crt"), &cert, &user)?;
            println!("{}", out.display());
            return Ok(());
        }
        None => {}
    }
    let opts = Options {
        data_dir,
        port: flags.port,
        etcd_port: flags.etcd_port,
        write_kubeconfig: flags.write_kubeconfig,
        bin_dir: flags.bin_dir,
        advertise_address: flags.advertise_address,
        kubelets: flags.kubelets,
        node_bin_dir: flags.node_bin_dir,
    };
    tokio::runtime::Runtime::new()?.block_on(control_plane::run(opts))
}

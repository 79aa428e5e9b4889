//! `univrs`: one binary for the whole system, with a subcommand per role.

mod cli;
mod cmd;
mod control_plane;
mod dashboard;
mod events;
mod join;
mod mcp;
mod node_logs;
mod paths;
mod release_image;
mod serving;
mod up;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // One TLS crypto provider for the whole process (kube, the registry client, the mesh and
    // our listeners): ring. With more than one compiled in, rustls would not pick by itself.
    let _ = rustls::crypto::ring::default_provider().install_default();
    cmd::run(cli::Cli::parse())
}

//! `univrs`: one binary for the whole system, with a subcommand per role.

mod cli;
mod cmd;
mod control_plane;
mod mcp;
mod paths;
mod up;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    cmd::run(cli::Cli::parse())
}

//! `univrs image build`: the Univrs image as an OCI layout, from a univrs binary.

use crate::cli::ImageCommand;
use crate::release_image;
use anyhow::Context;

/// Runs `univrs image …`.
pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Build {
            output,
            binary,
            reference,
            tag,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe().context("finding this univrs binary")?,
            };
            let built = release_image::build(&binary, &output, &reference, &tag)?;
            for tool in &built.missing {
                eprintln!(
                    "warning: {tool} is not on this machine, so the image lacks it (the agent needs it; install iproute2 and iptables)"
                );
            }
            eprintln!(
                "{reference}:{tag} in {}: {} compressed, {} of files (user {})",
                output.display(),
                human(built.compressed),
                human(built.uncompressed),
                release_image::USER_ID
            );
            // The one line scripts read.
            println!("{} {}", output.display(), built.digest);
            Ok(())
        }
    }
}

/// Bytes as MiB with one decimal.
fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

//! `univrs identity generate|show`: the node key file and its three names.

use crate::cli::IdentityCommand;
use std::path::PathBuf;
use univrs_node_agent::keyfile;

/// The default key file: `$XDG_DATA_HOME/univrs/identity.pem`.
pub fn default_key_path() -> anyhow::Result<PathBuf> {
    Ok(crate::paths::data_dir()?.join("identity.pem"))
}

/// Runs `univrs identity …`.
pub fn run(command: IdentityCommand) -> anyhow::Result<()> {
    match command {
        IdentityCommand::Generate { out } => {
            let path = match out {
                Some(p) => p,
                None => default_key_path()?,
            };
            let id = keyfile::generate(&path)?;
            eprintln!("wrote {} (mode 0600)", path.display());
            print_names(&id.public(), false);
        }
        IdentityCommand::Show { file, json } => {
            let path = match file {
                Some(p) => p,
                None => default_key_path()?,
            };
            let id = keyfile::load(&path)?;
            print_names(&id.public(), json);
        }
    }
    Ok(())
}

fn print_names(public: &univrs_api::identity::PublicIdentity, json: bool) {
    if json {
        let v = serde_json::json!({
            "nodeId": public.node_id(),
            "peerId": public.peer_id(),
            "did": public.did(),
        });
        println!("{v:#}");
    } else {
        println!("NodeId: {}", public.node_id());
        println!("PeerId: {}", public.peer_id());
        println!("DID:    {}", public.did());
    }
}

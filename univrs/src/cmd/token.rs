//! `univrs token create|list|delete`: the admin's side of joining (what a token is:
//! `join::token`). Deleting a token revokes it at once.

use crate::cli::TokenCommand;
use crate::cmd::controller::client;
use crate::join;
use crate::paths;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams};
use std::path::PathBuf;
use std::time::Duration;
use univrs_api::bootstrap::{TOKEN_NAMESPACE, TOKEN_SECRET_TYPE, is_token_id, token_secret_name};
use univrs_api::system::BOOTSTRAPPERS_GROUP;

/// Runs a token subcommand.
pub fn run(command: TokenCommand, kubeconfig: Option<PathBuf>) -> Result<()> {
    let kubeconfig = kubeconfig.or_else(paths::local_admin_kubeconfig);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = client(kubeconfig).await?;
        match command {
            TokenCommand::Create { ttl, description } => create(&client, ttl, &description).await,
            TokenCommand::List => list(&client).await,
            TokenCommand::Delete { id } => delete(&client, &id).await,
        }
    })
}

/// Makes a token and prints the command that joins a machine with it.
async fn create(client: &kube::Client, ttl: Duration, description: &str) -> Result<()> {
    let i = join::token::invite(client, ttl, description).await?;
    eprintln!(
        "token {} expires {}; on the new machine, as root, run:",
        i.token.id, i.expires
    );
    println!(
        "univrs join --server {} --token {} --ca-cert-hash {}",
        i.server, i.token, i.ca_cert_hash
    );
    Ok(())
}

/// Prints every Univrs bootstrap token: id, expiry and description (never the secret).
async fn list(client: &kube::Client) -> Result<()> {
    let secrets = Api::<Secret>::namespaced(client.clone(), TOKEN_NAMESPACE)
        .list(&ListParams::default().fields(&format!("type={TOKEN_SECRET_TYPE}")))
        .await
        .context("listing bootstrap tokens")?;
    println!("{:<8} {:<22} DESCRIPTION", "ID", "EXPIRES");
    for s in secrets.items {
        let field = |k: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .unwrap_or_default()
        };
        if !field("auth-extra-groups")
            .split(',')
            .any(|g| g == BOOTSTRAPPERS_GROUP)
        {
            continue;
        }
        println!(
            "{:<8} {:<22} {}",
            field("token-id"),
            field("expiration"),
            field("description")
        );
    }
    Ok(())
}

/// Deletes a token: it stops working at once.
async fn delete(client: &kube::Client, id: &str) -> Result<()> {
    // Accept a whole token too, and never echo its secret half.
    let id = id.split('.').next().unwrap_or_default();
    if !is_token_id(id) {
        bail!(
            "{id:?} is not a token id (6 characters of a-z and 0-9, as `univrs token list` shows)"
        );
    }
    let api = Api::<Secret>::namespaced(client.clone(), TOKEN_NAMESPACE);
    match api
        .delete(&token_secret_name(id), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            eprintln!("deleted token {id}");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            bail!("no token {id} (expired tokens are removed; see `univrs token list`)")
        }
        Err(e) => Err(e).context("deleting the token"),
    }
}

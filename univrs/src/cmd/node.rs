//! `univrs node remove NAME`: the node's certificate stops working at once (its bindings to
//! the node role go, so every request it makes is refused), and its Node object is
//! deleted, so the controller settles its credit by the revival path. Its certificate cannot
//! be renewed either: the approver refuses a renewal for a name bound to no key.

use crate::cli::NodeCommand;
use crate::cmd::controller::client;
use crate::paths;
use anyhow::{Context, Result};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams};
use std::path::PathBuf;
use univrs_api::resources::node::Node;
use univrs_api::system::{SYSTEM_NAMESPACE, node_binding};

/// Runs a node subcommand.
pub fn run(command: NodeCommand, kubeconfig: Option<PathBuf>) -> Result<()> {
    let kubeconfig = kubeconfig.or_else(paths::local_admin_kubeconfig);
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = client(kubeconfig).await?;
        match command {
            NodeCommand::Remove { name } => remove(&client, &name).await,
        }
    })
}

/// Revokes node `name`'s rights, then deletes its Node.
async fn remove(client: &kube::Client, name: &str) -> Result<()> {
    let binding = node_binding(name);
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let revoked = gone_or_deleted(bindings.delete(&binding, &DeleteParams::default()).await)
        .with_context(|| format!("deleting ClusterRoleBinding {binding}"))?;
    let lease_bindings: Api<RoleBinding> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    gone_or_deleted(
        lease_bindings
            .delete(&binding, &DeleteParams::default())
            .await,
    )
    .with_context(|| format!("deleting RoleBinding {SYSTEM_NAMESPACE}/{binding}"))?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deleted = gone_or_deleted(nodes.delete(name, &DeleteParams::default()).await)
        .with_context(|| format!("deleting Node {name}"))?;
    if !revoked && !deleted {
        anyhow::bail!("there is no node {name} (no Node and no binding univrs-node-{name})");
    }
    eprintln!(
        "node {name}: credentials revoked{}",
        if deleted {
            "; Node deleted (its credit is settled by the revival path)"
        } else {
            "; it had no Node"
        }
    );
    Ok(())
}

/// Whether a delete removed something (false when it was already gone).
fn gone_or_deleted<T>(r: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

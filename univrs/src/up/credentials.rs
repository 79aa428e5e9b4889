//! Least privilege for what `univrs up` runs on its local control plane, under exactly the RBAC
//! and admission policies the Helm chart installs (read from the Kustomize base, which is
//! generated from the chart and drift-tested), never with the admin's certificate: what works
//! under `univrs up` works in a cluster. The controller reaches the API server with its
//! ServiceAccount's token (an hour's, renewed every 20 minutes into a 0600 file its client
//! re-reads); each agent joins with a bootstrap token made here, as another machine would, and
//! then holds one node's rights and no more.

use crate::control_plane::{kubeconfig, pki};
use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The chart's objects for clusters without Helm (`deploy/kustomize/base`).
const BASE: &str = include_str!("../../../deploy/kustomize/base/univrs.yaml");

/// The kinds taken from it: identities, their permissions and the admission policies that
/// narrow what nodes may change; nothing that runs.
const ACCESS_KINDS: [&str; 7] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// How long an issued token is valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How often tokens are renewed: well before they expire, so a failed renewal is retried
/// twice more in time.
const RENEW_EVERY: Duration = Duration::from_secs(1200);

/// The access objects of the base, as JSON.
fn access_objects() -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(BASE) {
        let v = serde_json::Value::deserialize(doc).context("parsing the Kustomize base")?;
        if v["kind"]
            .as_str()
            .is_some_and(|k| ACCESS_KINDS.contains(&k))
        {
            out.push(v);
        }
    }
    Ok(out)
}

/// Applies the base's ServiceAccounts, ClusterRoles, Roles, their bindings and the admission
/// policies with server-side apply (so a newer `univrs` updates them); returns how many.
pub async fn apply_access(client: &kube::Client, manager: &str) -> Result<usize> {
    let objects = access_objects()?;
    let params = PatchParams::apply(manager).force();
    for v in &objects {
        let obj: DynamicObject = serde_json::from_value(v.clone())?;
        let types = obj
            .types
            .clone()
            .context("an object without apiVersion/kind")?;
        let (group, version) = types
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &types.api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
        let name = obj
            .metadata
            .name
            .clone()
            .context("an object without a name")?;
        let api: Api<DynamicObject> = match &obj.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .with_context(|| format!("applying {} {name}", types.kind))?;
    }
    Ok(objects.len())
}

/// Invites this run's own agents: a token valid for an hour (long enough for every agent's
/// first join; after that each renews its own certificate), with the server as the admin
/// kubeconfig names it (loopback), which every agent on this machine reaches.
pub async fn join_token(
    client: &kube::Client,
    admin_kubeconfig: &Path,
) -> Result<crate::join::token::Invitation> {
    let (server, _) = kubeconfig::read_first_cluster(admin_kubeconfig)?;
    let invitation = crate::join::token::invite(
        client,
        Duration::from_secs(3600),
        "univrs up: this machine's own agents",
    )
    .await?;
    Ok(crate::join::token::Invitation {
        server,
        ..invitation
    })
}

/// One ServiceAccount's credentials on disk.
pub struct Credentials {
    /// The ServiceAccount.
    account: String,
    /// Its kubeconfig (pointing at `token_file`).
    pub kubeconfig: PathBuf,
    /// The file holding its current token.
    token_file: PathBuf,
}

/// Issues a token for each of `accounts` (ServiceAccounts in `namespace`) and writes a
/// kubeconfig per account under `dir` that reaches the server of `admin_kubeconfig`.
pub async fn issue(
    client: &kube::Client,
    admin_kubeconfig: &Path,
    namespace: &str,
    accounts: &[&str],
    dir: &Path,
) -> Result<Vec<Credentials>> {
    pki::create_private_dir(dir)?;
    let (server, ca) = kubeconfig::read_first_cluster(admin_kubeconfig)?;
    let mut out = Vec::new();
    for account in accounts {
        let creds = Credentials {
            account: account.to_string(),
            kubeconfig: dir.join(format!("{account}.kubeconfig")),
            token_file: dir.join(format!("{account}.token")),
        };
        renew_one(client, namespace, &creds).await?;
        kubeconfig::write_with_token_file(
            &creds.kubeconfig,
            &server,
            &ca,
            &creds.token_file,
            account,
        )?;
        out.push(creds);
    }
    Ok(out)
}

/// Writes a fresh token for `creds`' account.
async fn renew_one(client: &kube::Client, namespace: &str, creds: &Credentials) -> Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = api
        .create_token_request(&creds.account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {}", creds.account))?;
    let token = issued
        .status
        .map(|s| s.token)
        .filter(|t| !t.is_empty())
        .with_context(|| format!("the API server issued no token for {}", creds.account))?;
    pki::write_private(&creds.token_file, &token)
}

/// Renews every token before it expires, until dropped (run beside the supervisor). A failed
/// renewal is logged and retried a minute later; the old token stays valid meanwhile.
pub async fn renew_forever(client: kube::Client, namespace: String, creds: Vec<Credentials>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        for c in &creds {
            while let Err(e) = renew_one(&client, &namespace, c).await {
                eprintln!(
                    "  renewing {}'s token failed (retrying in 60 s): {e:#}",
                    c.account
                );
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_grants_the_controller_and_the_agent_their_accounts() {
        let objects = access_objects().unwrap();
        let named = |kind: &str, name: &str| {
            objects
                .iter()
                .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        };
        for sa in ["univrs-controller", "univrs-agent"] {
            assert!(named("ServiceAccount", sa), "{sa}");
            assert!(named("ClusterRoleBinding", sa), "{sa}");
        }
        assert!(named("ClusterRole", "univrs-controller"));
        assert!(named("ClusterRole", univrs_api::system::NODE_CLUSTER_ROLE));
        assert!(
            objects
                .iter()
                .all(|o| ACCESS_KINDS.contains(&o["kind"].as_str().unwrap_or(""))),
            "nothing that runs"
        );
    }
}

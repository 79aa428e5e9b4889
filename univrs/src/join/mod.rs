//! `univrs join`: a machine joins the community with its own identity, as `kubeadm join` joins
//! a kubelet. It reads the public cluster-info without trusting the server, trusts the CA found
//! there only if its key matches `--ca-cert-hash` (given out of band with the token), then,
//! with the bootstrap token, asks for a certificate of its own Ed25519 identity key as
//! `univrs:node:<name>`. The controller approves it only if the name is free or already this
//! key's, and binds the name to the node role; from then on the node acts with its
//! certificate alone (`<data-dir>/kubeconfig`), renews it itself, and the token is never
//! needed again. What a node may change is then the admission policies' business.

pub mod certificate;
pub mod client;
pub mod token;

use crate::control_plane::cluster_info::ClusterInfo;
use crate::control_plane::kubeconfig;
use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use std::path::{Path, PathBuf};
use univrs_api::bootstrap::{BootstrapToken, CLUSTER_INFO, parse_ca_cert_hash};
use univrs_api::identity::NodeIdentity;

/// What joining needs.
pub struct Request<'a> {
    /// The API server's URL.
    pub server: &'a str,
    /// The bootstrap token (needed only when there are no usable credentials yet).
    pub token: Option<&'a str>,
    /// The pin of the cluster's CA.
    pub ca_cert_hash: &'a str,
    /// The node's data directory (identity key, certificate, kubeconfig).
    pub data_dir: &'a Path,
    /// The node's name.
    pub node: &'a str,
}

/// A joined node: its client and what it renews.
pub struct Joined {
    /// A client acting as the node (re-reads the certificate when renewed).
    pub client: kube::Client,
    /// The node's identity.
    pub identity: NodeIdentity,
    /// The kubeconfig written for it.
    pub kubeconfig: PathBuf,
    /// Its certificate file.
    pub cert: PathBuf,
}

/// Joins (or, with credentials from an earlier join still valid, just loads them).
pub async fn join(req: &Request<'_>) -> Result<Joined> {
    let pin = parse_ca_cert_hash(req.ca_cert_hash).with_context(|| {
        format!(
            "--ca-cert-hash {:?} is not sha256:<64 hex digits> (as `univrs token create` prints it)",
            req.ca_cert_hash
        )
    })?;
    crate::control_plane::pki::create_private_dir(req.data_dir)?;
    let key_file = req.data_dir.join("identity.key");
    let identity = univrs_node_agent::keyfile::load_or_generate(&key_file)
        .with_context(|| format!("the node identity {}", key_file.display()))?;
    let cert = req.data_dir.join("node.crt");
    let kubeconfig_file = req.data_dir.join("kubeconfig");

    let existing = std::fs::read_to_string(&cert).ok();
    let ca_pem = match existing.as_deref() {
        Some(pem) if certificate::usable_for(pem, req.node) && kubeconfig_file.exists() => {
            // Joined before: keep trusting the CA pinned then (and check it still matches).
            let (_, ca) = kubeconfig::read_first_cluster(&kubeconfig_file)?;
            check_pin(&ca, &pin)?;
            tracing::info!(node = req.node, "using the credentials of an earlier join");
            ca
        }
        _ => {
            let token: BootstrapToken = req
                .token
                .context("no usable credentials in the data directory: give --token (from `univrs token create`)")?
                .parse()
                .map_err(anyhow::Error::from)?;
            let info = discover(req.server).await?;
            check_pin(&info.ca_pem, &pin)?;
            let bootstrap = client::token_client(req.server, &info.ca_pem, &token.to_string())?;
            let pem = certificate::request(&bootstrap, &identity, req.node).await?;
            certificate::write(&cert, &pem)?;
            info.ca_pem
        }
    };
    kubeconfig::write_with_cert_files(
        &kubeconfig_file,
        req.server,
        &ca_pem,
        &cert,
        &key_file,
        &univrs_api::system::node_user(req.node),
    )?;
    let client = client::node_client(req.server, &ca_pem, &cert, &key_file)?;
    Ok(Joined {
        client,
        identity,
        kubeconfig: kubeconfig_file,
        cert,
    })
}

/// Reads cluster-info from `server` without trusting it yet.
async fn discover(server: &str) -> Result<ClusterInfo> {
    let (ns, name) = CLUSTER_INFO;
    // kube-client warns that it skips the server's certificate here: nothing read before the
    // pin matches is trusted, so say so first.
    tracing::info!(%server, "reading {ns}/{name} before trusting the server; its CA must match --ca-cert-hash");
    let api: Api<ConfigMap> = Api::namespaced(client::discovery_client(server)?, ns);
    let cm = api.get(name).await.with_context(|| {
        format!("reading {ns}/{name} from {server} (is it a Univrs control plane, started with --advertise-address for other machines?)")
    })?;
    ClusterInfo::from_config_map(&cm)
}

/// Refuses a CA whose key is not the pinned one.
fn check_pin(ca_pem: &str, pin: &str) -> Result<()> {
    let actual = crate::control_plane::cluster_info::ca_pem_hash(ca_pem)?;
    if actual != pin {
        bail!(
            "the server's CA does not match --ca-cert-hash: it is {actual}, the pin is {pin}. Refusing to trust it (a wrong hash, or not the server you meant)"
        );
    }
    Ok(())
}

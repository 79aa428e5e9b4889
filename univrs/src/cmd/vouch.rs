//! `univrs vouch`: a signed Vouch manifest, from a node's key.

use crate::cmd::controller::client;
use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::path::PathBuf;
use std::time::Duration;
use univrs_api::identity::PublicIdentity;
use univrs_api::resources::vouch::{Vouch, VouchSpec};
use univrs_io::apply::Apply;
use univrs_node_agent::keyfile;

/// `univrs vouch`'s flags.
pub struct Args {
    pub identity: PathBuf,
    pub subject: String,
    pub weight: f64,
    pub reason: String,
    pub expires_in: Duration,
    pub name: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

/// Prints the signed Vouch as YAML.
pub fn run(a: Args) -> anyhow::Result<()> {
    let key = keyfile::load(&a.identity)?;
    let subject = match a.subject.parse::<PublicIdentity>() {
        Ok(id) => id,
        Err(_) => node_identity(&a.subject, a.kubeconfig)?,
    };
    let expires = Timestamp::now()
        .checked_add(SignedDuration::try_from(a.expires_in)?)
        .context("--expires-in is too far in the future")?;
    let spec = VouchSpec::signed(&key, &subject, a.weight, a.reason, Time(expires))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = a.name.unwrap_or_else(|| {
        // Short, stable, readable: the two identities' key prefixes.
        let v = key.public().node_id();
        let s = subject.node_id();
        format!("vouch-{}-for-{}", &v[..8], &s[..8])
    });
    let manifest = Apply::<Vouch>::new(&name).spec(serde_json::to_value(&spec)?);
    print!("{}", serde_yaml::to_string(manifest.body())?);
    Ok(())
}

/// The identity of the Node named `name`, from the cluster.
fn node_identity(name: &str, kubeconfig: Option<PathBuf>) -> anyhow::Result<PublicIdentity> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        let client = client(kubeconfig).await?;
        let api: kube::Api<univrs_api::Node> = kube::Api::all(client);
        let node = api.get_opt(name).await?.with_context(|| {
            format!("--subject {name:?} is neither a DID, PeerId or NodeId nor a Node's name")
        })?;
        node.spec
            .did
            .parse()
            .with_context(|| format!("Node {name} has no valid DID"))
    })
}

//! Making a bootstrap token: a Secret in kube-system that the API server's bootstrap
//! authenticator reads (as kubeadm makes them). It authenticates `system:bootstrap:<id>` in the
//! group `system:bootstrappers:univrs`, which may only ask for a node certificate; it expires
//! (kube-controller-manager's tokencleaner then deletes it).

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp, Unit};
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;
use univrs_api::bootstrap::{BootstrapToken, TOKEN_NAMESPACE, TOKEN_SECRET_TYPE};
use univrs_api::system::BOOTSTRAPPERS_GROUP;

/// What a joining machine needs, as `univrs token create` prints it.
pub struct Invitation {
    /// The API server, as cluster-info names it.
    pub server: String,
    /// The pin of the cluster's CA.
    pub ca_cert_hash: String,
    /// A fresh bootstrap token.
    pub token: BootstrapToken,
    /// When the token expires.
    pub expires: Timestamp,
}

/// Reads the server and the CA's pin from cluster-info and makes a token valid for `ttl`.
pub async fn invite(client: &kube::Client, ttl: Duration, description: &str) -> Result<Invitation> {
    let info = crate::control_plane::cluster_info::read(client).await?;
    let ca_cert_hash = info.ca_hash()?;
    let (token, expires) = create(client, ttl, description).await?;
    Ok(Invitation {
        server: info.server,
        ca_cert_hash,
        token,
        expires,
    })
}

/// Creates a token valid for `ttl`; returns it and when it expires.
pub async fn create(
    client: &kube::Client,
    ttl: Duration,
    description: &str,
) -> Result<(BootstrapToken, Timestamp)> {
    let token = BootstrapToken::generate(&mut rand::thread_rng());
    let expires = Timestamp::now()
        .checked_add(SignedDuration::from_secs(ttl.as_secs() as i64))
        .context("--ttl is too long")?
        .round(Unit::Second)?;
    let data = [
        ("token-id", token.id.as_str()),
        ("token-secret", token.secret.as_str()),
        ("expiration", &expires.to_string()),
        ("usage-bootstrap-authentication", "true"),
        ("auth-extra-groups", BOOTSTRAPPERS_GROUP),
        ("description", description),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(token.secret_name()),
            namespace: Some(TOKEN_NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(TOKEN_SECRET_TYPE.into()),
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), TOKEN_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the bootstrap token Secret")?;
    Ok((token, expires))
}

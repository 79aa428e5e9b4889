//! The node's certificate: asked for with a CertificateSigningRequest (signer
//! `kubernetes.io/kube-apiserver-client`), approved by the Univrs controller, signed by
//! kube-controller-manager; renewed by the node itself at two thirds of its life, under its
//! current certificate.

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use univrs_api::bootstrap::{NODE_CERT_SECONDS, NODE_SIGNER, NODE_USAGES};
use univrs_api::identity::NodeIdentity;

/// How long to wait for the controller's approval and the signature.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);

/// Asks for a certificate of `identity`'s key as node `node` and waits for it (PEM).
pub async fn request(client: &kube::Client, identity: &NodeIdentity, node: &str) -> Result<String> {
    let pem = univrs_io::node_cert::request_pem(identity, node)
        .context("making the certificate request")?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(format!("univrs-node-{node}-")),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: NODE_SIGNER.into(),
            usages: Some(NODE_USAGES.iter().map(|u| u.to_string()).collect()),
            expiration_seconds: Some(NODE_CERT_SECONDS as i32),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = match api.create(&PostParams::default(), &csr).await {
        Ok(c) => c,
        Err(kube::Error::Api(e)) if e.code == 401 => bail!(
            "the API server does not accept these credentials (a token that is wrong, expired or deleted): make a new one with `univrs token create` on the control plane"
        ),
        Err(kube::Error::Api(e)) if e.code == 403 => bail!(
            "these credentials may not ask for a node certificate ({}): a node removed with `univrs node remove` joins again with a new token",
            e.message
        ),
        Err(e) => return Err(e).context("creating the certificate request"),
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    let deadline = Instant::now() + ANSWER_WITHIN;
    loop {
        let csr = api
            .get(&name)
            .await
            .with_context(|| format!("reading {name}"))?;
        let status = csr.status.unwrap_or_default();
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        {
            bail!(
                "certificate request {name} {}: {}",
                c.type_.to_lowercase(),
                c.message.clone().unwrap_or_default()
            );
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return String::from_utf8(cert.0).context("the issued certificate is not PEM");
        }
        if Instant::now() > deadline {
            bail!(
                "certificate request {name} got no answer within {ANSWER_WITHIN:?}: is the Univrs controller running (it approves), and kube-controller-manager with csrsigning (it signs)?"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// When the certificate in `pem` was issued and when it expires (seconds since the epoch), and
/// the node it names.
pub fn validity(pem: &str) -> Result<(i64, i64, String)> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).context("not a PEM certificate")?;
    let cert = pem.parse_x509().context("the certificate does not parse")?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        cn,
    ))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long until the certificate in `pem` is due for renewal: two thirds into its life.
pub fn renew_in(pem: &str) -> Result<Duration> {
    let (from, to, _) = validity(pem)?;
    let due = from + (to - from) * 2 / 3;
    Ok(Duration::from_secs((due - now()).max(0) as u64))
}

/// Whether the certificate in `pem` is valid for at least another minute and names `node`.
pub fn usable_for(pem: &str, node: &str) -> bool {
    validity(pem)
        .is_ok_and(|(_, to, cn)| to - now() > 60 && cn == univrs_api::system::node_user(node))
}

/// Renews the certificate in `cert` before it expires, forever. A failed renewal is logged
/// and retried a minute later; the current certificate stays valid meanwhile.
pub async fn renew_forever(
    client: kube::Client,
    identity: NodeIdentity,
    node: String,
    cert: std::path::PathBuf,
) {
    loop {
        let wait = std::fs::read_to_string(&cert)
            .map_err(anyhow::Error::from)
            .and_then(|pem| renew_in(&pem))
            .unwrap_or(Duration::from_secs(60));
        tokio::time::sleep(wait).await;
        match request(&client, &identity, &node).await {
            Ok(pem) => match write(&cert, &pem) {
                Ok(()) => tracing::info!(node = %node, "renewed the node certificate"),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "writing the renewed certificate")
                }
            },
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "renewing the node certificate failed; retrying in 60 s");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// Writes a certificate (mode 0600, atomically: the client re-reads it on change).
pub fn write(path: &Path, pem: &str) -> Result<()> {
    crate::control_plane::pki::write_private(path, pem)
}

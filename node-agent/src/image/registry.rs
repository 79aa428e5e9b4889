//! How the store reaches registries: plain HTTP or HTTPS (with extra trusted roots), the
//! credentials for each registry, the platform to pick, and the `oci-client` built from them.

use super::auth::{Access, Credentials, DockerConfig};
use super::error::ImageError;
use super::manifest::Platform;
use crate::fsutil::error_chain;
use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use std::time::Duration;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// A Workload's own credentials for the image's registry; without them, the node's
    /// [`PullOptions::docker_config`] is consulted, and without an entry there the pull is
    /// anonymous. What a pull with them stores is kept from Workloads that do not hold them
    /// (see [`super::Access`]).
    pub credentials: Option<Credentials>,
    /// The node owner's logins by registry (a docker-style `config.json`), lent to every
    /// Workload on the node.
    pub docker_config: Option<DockerConfig>,
    /// Registries (`host` or `host:port`, as in the reference) reached over plain HTTP.
    /// Every other registry is reached over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Extra PEM certificates trusted as roots for HTTPS registries (e.g. a private CA).
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// The platform to pick from an image index [default: linux on this machine's
    /// architecture].
    pub platform: Option<Platform>,
    /// The most an image's config and layers may weigh, compressed, as its manifest declares
    /// them (every blob is refused past its declared size) [default: no cap].
    pub max_image_bytes: Option<u64>,
}

/// How long connecting to a registry may take, and the longest pause while reading from it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl PullOptions {
    /// The credentials for `registry`: the Workload's own, else the node's, else none.
    pub(super) fn auth_for(&self, registry: &str) -> RegistryAuth {
        let creds = self
            .credentials
            .as_ref()
            .or_else(|| self.docker_config.as_ref()?.credentials_for(registry));
        match creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// Who may reuse what a pull from `registry` stores: the holders of the Workload's own
    /// credentials when there are some, else anyone on the node (the node's login is lent to
    /// every Workload, and an anonymous pull is anyone's).
    pub(super) fn access(&self, registry: &str, salt: &[u8]) -> Access {
        match &self.credentials {
            Some(c) => Access::Private(super::auth::credential_key(salt, registry, c)),
            None => Access::Shared,
        }
    }

    /// A registry client for pulling `reference`.
    pub(super) fn client(&self, reference: &str) -> Result<Client, ImageError> {
        // reqwest is built without a default crypto provider (the workspace builds ring for
        // kube already; aws-lc would be a second one): install ring unless one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if self.insecure_registries.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(self.insecure_registries.clone())
            },
            extra_root_certificates: self
                .extra_root_certificates
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            // We pick the platform ourselves (with a useful error when none matches).
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("univrs-node-agent/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        Client::try_from(config).map_err(|e| ImageError::Registry {
            reference: reference.to_string(),
            message: format!("setting up the registry client: {}", error_chain(&e)),
        })
    }
}

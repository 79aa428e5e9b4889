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
    /// Every other registry is reached over HTTPS, except that one on loopback
    /// ([`is_loopback`]) is spoken with over plain HTTP when HTTPS fails.
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

/// Whether `registry` (`host` or `host:port`, as in a reference) is this machine's loopback:
/// `localhost`, an address in `127.0.0.0/8`, or `[::1]`. Such a registry is tried over HTTPS
/// and, when HTTPS cannot be spoken with it, over plain HTTP, as Docker and containerd do: the
/// traffic never leaves the machine. Every other registry stays HTTPS unless the node's owner
/// lists it (`--insecure-registry`).
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(registry, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl PullOptions {
    /// Whether `registry` is listed to be reached over plain HTTP.
    pub(super) fn plain_http(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|r| r == registry)
    }

    /// These options with `registry` reached over plain HTTP too.
    pub(super) fn with_plain_http(&self, registry: &str) -> Self {
        let mut out = self.clone();
        out.insecure_registries.push(registry.to_string());
        out
    }

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

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_this_machines_loopback_is_loopback() {
        for r in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:443",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "registry.example:5000",
            "docker.io",
            "10.0.0.1:5000",
            "192.168.1.10",
            "127.0.0.1.nip.io:5000",
            "localhost.evil:5000",
            "[::2]:5000",
            "128.0.0.1:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}

//! Who is asking: the API server's answer, never the caller's word. A client certificate counts
//! when it chains to the API server's client CA (the one it publishes in
//! `kube-system/extension-apiserver-authentication`, as delegated authentication in Kubernetes
//! reads it): its CN is the user and its O values the groups. A bearer token counts when a
//! TokenReview accepts it for this node's audience ([`univrs_api::system::node_audience`]), so a
//! token sent here cannot be replayed against the API server or another node.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use rustls::{self, RootCertStore};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ConfigMap the API server keeps its client CA in, readable through the built-in Role
/// `extension-apiserver-authentication-reader`.
const CLIENT_CA_CONFIG_MAP: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// An authenticated caller, as a SubjectAccessReview names it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// Its uid, when the authenticator gives one.
    pub uid: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// Extra attributes (e.g. a ServiceAccount token's pod binding).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a caller is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// Neither a certificate nor a token that counts.
    #[error("{0}")]
    Refused(String),
    /// The API server could not be asked.
    #[error("asking the API server: {0}")]
    Unavailable(#[from] kube::Error),
}

/// The verifier of client certificates against the API server's client CA, or None when the
/// CA is not published or not readable (then only tokens authenticate).
pub async fn client_verifier(
    client: &kube::Client,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let (ns, name) = CLIENT_CA_CONFIG_MAP;
    let cm = match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(name)
        .await
    {
        Ok(cm) => cm,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read {ns}/{name}: callers with client certificates cannot read logs here (grant the node the Role extension-apiserver-authentication-reader)");
            return None;
        }
    };
    let pem = cm.data.unwrap_or_default().remove("client-ca-file")?;
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
        if let Err(e) = roots.add(der) {
            tracing::warn!(error = %e, "skipping a client CA certificate");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
    {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "the API server's client CA is not usable");
            None
        }
    }
}

/// The caller a verified client certificate names (CN user, O groups).
pub fn from_certificate(der: &[u8]) -> Result<Caller, AuthnError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| AuthnError::Refused(format!("unreadable client certificate: {e}")))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| AuthnError::Refused("the client certificate names no user (CN)".into()))?;
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(Caller {
        user: user.to_string(),
        groups,
        ..Caller::default()
    })
}

/// The caller a bearer token stands for, if the API server accepts it for `audience`.
pub async fn from_token(
    client: &kube::Client,
    token: &str,
    audience: &str,
) -> Result<Caller, AuthnError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![audience.to_string()]),
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = answer.status.unwrap_or_default();
    let for_us = status
        .audiences
        .as_ref()
        .is_none_or(|a| a.iter().any(|a| a == audience));
    match (status.authenticated, status.user) {
        (Some(true), Some(user)) if for_us => Ok(Caller {
            user: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }),
        _ => Err(AuthnError::Refused(format!(
            "the bearer token is not valid for audience {audience}{}: mint one with `kubectl create token SERVICEACCOUNT --audience {audience}`, or use a client certificate",
            status.error.map(|e| format!(" ({e})")).unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "librarians");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let caller = from_certificate(cert.der()).unwrap();
        assert_eq!(caller.user, "alice");
        assert_eq!(caller.groups, vec!["librarians".to_string()]);

        let key = rcgen::KeyPair::generate().unwrap();
        // rcgen names a certificate by default; this one names no one.
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let nameless = params.self_signed(&key).unwrap();
        let e = from_certificate(nameless.der()).unwrap_err().to_string();
        assert!(e.contains("no user"), "{e}");
    }
}

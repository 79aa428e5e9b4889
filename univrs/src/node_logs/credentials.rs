//! What a caller shows a node server, taken from its kubeconfig: its client certificate (the
//! handshake proves the key, and nothing reusable reaches the node), or a bearer token meant
//! for that node alone. A token for the API server is never sent to a node, which could replay
//! it: a ServiceAccount mints one for the node's audience (TokenRequest on itself), anything
//! else is refused here with what to do.

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use secrecy::ExposeSecret;

/// How long a token minted for one node lasts (the shortest the API server allows).
const MINTED_SECONDS: i64 = 600;

/// The caller's credentials for node servers.
pub enum Credentials {
    /// A client certificate chain and its key.
    Certificate(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// A bearer token (checked per node by [`Credentials::token_for`]).
    Token(String),
}

/// Why the kubeconfig's credentials cannot be used with a node server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(pub String);

fn err(s: impl Into<String>) -> CredentialsError {
    CredentialsError(s.into())
}

impl Credentials {
    /// The credentials of a kube configuration.
    pub fn from_config(config: &kube::Config) -> Result<Self, CredentialsError> {
        let a = &config.auth_info;
        let pem = |data: Option<&str>,
                   file: Option<&String>,
                   what: &str|
         -> Result<Option<Vec<u8>>, CredentialsError> {
            if let Some(d) = data {
                return base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map(Some)
                    .map_err(|e| err(format!("the kubeconfig's {what} data is not base64: {e}")));
            }
            file.map(|f| {
                std::fs::read(f)
                    .map_err(|e| err(format!("reading the kubeconfig's {what} {f}: {e}")))
            })
            .transpose()
        };
        let cert = pem(
            a.client_certificate_data.as_deref(),
            a.client_certificate.as_ref(),
            "client certificate",
        )?;
        let key_data = a
            .client_key_data
            .as_ref()
            .map(|k| k.expose_secret().to_string());
        let key = pem(key_data.as_deref(), a.client_key.as_ref(), "client key")?;
        if let (Some(cert), Some(key)) = (cert, key) {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("the kubeconfig's client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| err(format!("the kubeconfig's client key: {e}")))?;
            return Ok(Self::Certificate(chain, key));
        }
        if let Some(t) = &a.token {
            return Ok(Self::Token(t.expose_secret().trim().to_string()));
        }
        if let Some(f) = &a.token_file {
            let t = std::fs::read_to_string(f)
                .map_err(|e| err(format!("reading the kubeconfig's token file {f}: {e}")))?;
            return Ok(Self::Token(t.trim().to_string()));
        }
        Err(err(
            "the kubeconfig has neither a client certificate nor a token; node servers accept only those",
        ))
    }

    /// The bearer token to send node `node` (whose audience is `audience`), if these are token
    /// credentials: the token itself when it is meant for that audience, else one minted
    /// for it when the token is a ServiceAccount's.
    pub async fn token_for(
        &self,
        client: &kube::Client,
        node: &str,
        audience: &str,
    ) -> Result<Option<String>, CredentialsError> {
        let Self::Token(token) = self else {
            return Ok(None);
        };
        let claims = jwt_claims(token);
        let aud = claims
            .as_ref()
            .map(|c| match &c["aud"] {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        if aud.iter().any(|a| a == audience) {
            return Ok(Some(token.clone()));
        }
        let account = claims
            .as_ref()
            .and_then(|c| c["sub"].as_str())
            .and_then(|s| s.strip_prefix("system:serviceaccount:"))
            .and_then(|s| s.split_once(':'))
            .map(|(ns, name)| (ns.to_string(), name.to_string()));
        let Some((ns, name)) = account else {
            return Err(err(format!(
                "the kubeconfig's token is not meant for node {node}, and sending it there would let that node use it: use a client certificate, or a token minted with `kubectl create token SERVICEACCOUNT --audience {audience}`"
            )));
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_string()],
                expiration_seconds: Some(MINTED_SECONDS),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let minted = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create_token_request(&name, &PostParams::default(), &request)
            .await
            .map_err(|e| err(format!(
                "minting a token for node {node} as ServiceAccount {ns}/{name} (it needs `create` on serviceaccounts/token for itself): {e}"
            )))?;
        minted
            .status
            .map(|s| Some(s.token))
            .ok_or_else(|| err("the API server minted no token"))
    }
}

/// The claims of a JWT (its payload, not checked: only to choose what to send).
fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.sig",
            enc(&serde_json::json!({"alg": "RS256"})),
            enc(&claims)
        )
    }

    #[tokio::test]
    async fn a_token_goes_only_to_the_node_it_is_meant_for() {
        // No API server is needed for these answers: a client that is never called.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let mine = Credentials::Token(jwt(
            serde_json::json!({"aud": ["univrs.io/node/a"], "sub": "x"}),
        ));
        assert_eq!(
            mine.token_for(&client, "a", "univrs.io/node/a")
                .await
                .unwrap()
                .as_deref(),
            Some(match &mine {
                Credentials::Token(t) => t.as_str(),
                _ => unreachable!(),
            })
        );
        let e = mine
            .token_for(&client, "b", "univrs.io/node/b")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not meant for node b"), "{e}");
        let opaque = Credentials::Token("abcdef.0123456789abcdef".into());
        assert!(
            opaque
                .token_for(&client, "a", "univrs.io/node/a")
                .await
                .is_err()
        );
    }
}

//! `kube-public/cluster-info`: where a joining machine learns the server's address and CA
//! before it trusts anyone, as kubeadm publishes it. Anyone may read it (the anonymous
//! authenticator allows that one path, and a Role lets `system:anonymous` get that one object);
//! the joining machine trusts what it reads only when the CA's key matches the
//! `--ca-cert-hash` it was given out of band.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use std::path::Path;
use univrs_api::bootstrap::{CLUSTER_INFO, ca_cert_hash};

/// The field manager of what the control plane publishes.
const MANAGER: &str = "univrs-control-plane";

/// The name of the Role and RoleBinding that let anonymous read cluster-info.
const READER: &str = "univrs:cluster-info-reader";

/// Writes cluster-info (a kubeconfig naming `server` and the CA in `ca_cert`) and lets anyone
/// read it.
pub async fn publish(client: &kube::Client, server: &str, ca_cert: &Path) -> Result<()> {
    let (ns, name) = CLUSTER_INFO;
    let ca = std::fs::read_to_string(ca_cert)
        .with_context(|| format!("reading {}", ca_cert.display()))?;
    let params = PatchParams::apply(MANAGER).force();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some([("kubeconfig".to_string(), kubeconfig(server, &ca))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(name, &params, &Patch::Apply(&cm))
        .await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some(READER.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![name.into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), ns)
        .patch(READER, &params, &Patch::Apply(&role))
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(READER.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: READER.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: "system:anonymous".into(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .patch(READER, &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// A kubeconfig with one cluster and no user: what cluster-info holds.
fn kubeconfig(server: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: univrs\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts: []\nusers: []\n"
    )
}

/// What cluster-info says: the server and its CA (PEM).
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// The API server's address for other machines.
    pub server: String,
    /// The cluster's CA certificate, PEM.
    pub ca_pem: String,
}

impl ClusterInfo {
    /// Reads a cluster-info ConfigMap's data.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Self> {
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get("kubeconfig"))
            .context("cluster-info has no kubeconfig")?;
        let kc = kube::config::Kubeconfig::from_yaml(text).context("cluster-info's kubeconfig")?;
        let (server, ca_pem) = super::kubeconfig::first_cluster(&kc, "cluster-info")?;
        Ok(Self { server, ca_pem })
    }

    /// The `sha256:` pin of the CA's key.
    pub fn ca_hash(&self) -> Result<String> {
        ca_pem_hash(&self.ca_pem)
    }
}

/// The `sha256:` pin of the key of the CA certificate `pem`.
pub fn ca_pem_hash(pem: &str) -> Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .context("the CA is not a PEM certificate")?;
    let cert = pem
        .parse_x509()
        .context("the CA certificate does not parse")?;
    if !cert.is_ca() {
        bail!("the certificate in cluster-info is not a CA");
    }
    Ok(ca_cert_hash(cert.tbs_certificate.subject_pki.raw))
}

/// Reads cluster-info as the admin (for `univrs token create`).
pub async fn read(client: &kube::Client) -> Result<ClusterInfo> {
    let (ns, name) = CLUSTER_INFO;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .with_context(|| {
            format!("{ns}/{name} does not exist: is this a Univrs control plane (univrs up or univrs control-plane)?")
        })?;
    ClusterInfo::from_config_map(&cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_round_trips_and_pins_the_ca_key() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::pki::Pki::ensure(dir.path(), &[], &[]).unwrap();
        let ca = std::fs::read_to_string(&pki.ca.cert).unwrap();
        let cm = ConfigMap {
            data: Some(
                [(
                    "kubeconfig".to_string(),
                    kubeconfig("https://192.0.2.7:6443", &ca),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let info = ClusterInfo::from_config_map(&cm).unwrap();
        assert_eq!(info.server, "https://192.0.2.7:6443");
        let hash = info.ca_hash().unwrap();
        assert!(hash.starts_with("sha256:") && hash.len() == 71, "{hash}");
        // The same as openssl computes it: the DER of the key info, hashed.
        let leaf = std::fs::read_to_string(&pki.apiserver.cert).unwrap();
        assert!(ca_pem_hash(&leaf).is_err(), "a leaf is no CA");
    }
}

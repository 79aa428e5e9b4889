//! A Workload's registry logins for the nodes its instances are placed on.
//!
//! A node must be able to pull a Workload's private images, but no node may read Secrets: RBAC
//! cannot name the Secrets a node's Workloads use, and a node may lie. So the controller (which
//! may `get` Secrets) reads the Secrets `spec.imagePullSecrets` names, keeps only the logins
//! for the registries of the Workload's images, and seals them to each node's Ed25519 key
//! (`univrs_api::sealed`) under a context naming the Workload, its uid and the node, in
//! `status.imagePullCredentials`. A node opens its own entry; the others are noise to it.
//!
//! Sealing is randomized, so an entry is sealed again only when its fingerprint (the Secrets'
//! uids and resourceVersions, the registries, the node's key) changes: never a write whose
//! only change is new ciphertext.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use univrs_api::Workload;
use univrs_api::identity::PublicIdentity;
use univrs_api::registry_auth::{DockerConfig, registry_of, sealed_context};
use univrs_api::resources::workload::SealedCredentials;
use univrs_api::sealed::SealError;

/// What the reconciler read of the Secrets a Workload names.
#[derive(Debug, Default, Clone)]
pub struct PullSecrets {
    /// Their logins, merged in order (the first Secret with a login for a registry wins).
    pub config: DockerConfig,
    /// One line per named Secret: its name and version, or why it is not used (a new version,
    /// a deletion or a fix changes the fingerprint of every entry).
    pub versions: Vec<String>,
    /// What is wrong with some Secret, for a Warning Event.
    pub problems: Vec<String>,
}

/// The entries `wl` should have for `nodes` (name, PeerId), and what went wrong per node.
/// An entry whose fingerprint is unchanged is kept as it is; `seal` makes the new ones.
pub fn entries<'a>(
    wl: &Workload,
    secrets: &PullSecrets,
    nodes: impl IntoIterator<Item = (&'a str, &'a str)>,
    mut seal: impl FnMut(&PublicIdentity, &[u8], &[u8]) -> Result<String, SealError>,
) -> (Vec<SealedCredentials>, Vec<String>) {
    let (ns, name, uid) = (
        wl.metadata.namespace.as_deref().unwrap_or_default(),
        wl.metadata.name.as_deref().unwrap_or_default(),
        wl.metadata.uid.as_deref().unwrap_or_default(),
    );
    let registries: BTreeSet<String> = wl
        .spec
        .containers
        .iter()
        .filter_map(|c| registry_of(&c.image))
        .collect();
    let logins = secrets.config.only(registries.iter().map(String::as_str));
    let mut out = Vec::new();
    let mut problems = Vec::new();
    if logins.is_empty() {
        return (out, problems);
    }
    let current = wl
        .status
        .as_ref()
        .map(|s| s.image_pull_credentials.as_slice())
        .unwrap_or_default();
    let nodes: BTreeSet<(&str, &str)> = nodes.into_iter().collect();
    for (n, p) in nodes {
        let fingerprint = fingerprint(uid, n, p, &secrets.versions, logins.registries());
        if let Some(e) = current
            .iter()
            .find(|e| e.node == n && e.fingerprint == fingerprint)
        {
            out.push(e.clone());
            continue;
        }
        let sealed = PublicIdentity::from_peer_id(p)
            .map_err(|e| e.to_string())
            .and_then(|key| {
                seal(&key, &sealed_context(ns, name, uid, n), &logins.to_json())
                    .map_err(|e| e.to_string())
            });
        match sealed {
            Ok(sealed) => out.push(SealedCredentials {
                node: n.to_string(),
                fingerprint,
                sealed,
            }),
            Err(e) => problems.push(format!("sealing the registry logins to node {n}: {e}")),
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    (out, problems)
}

/// Names what an entry seals without revealing it.
fn fingerprint<'a>(
    uid: &str,
    node: &str,
    peer_id: &str,
    versions: &[String],
    registries: impl Iterator<Item = &'a str>,
) -> String {
    let mut h = Sha256::new();
    let mut part = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    part("univrs image pull credentials v1");
    part(uid);
    part(node);
    part(peer_id);
    for v in versions {
        part(v);
    }
    part("registries");
    for r in registries {
        part(r);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use univrs_api::identity::NodeIdentity;
    use univrs_api::resources::workload::{WorkloadSpec, WorkloadStatus};

    fn workload(images: &[&str]) -> Workload {
        let containers: Vec<serde_json::Value> = images
            .iter()
            .enumerate()
            .map(|(i, im)| serde_json::json!({"name": format!("c{i}"), "image": im}))
            .collect();
        let spec: WorkloadSpec =
            serde_json::from_value(serde_json::json!({ "containers": containers })).unwrap();
        let mut wl = Workload::new("app", spec);
        wl.metadata.namespace = Some("team-a".into());
        wl.metadata.uid = Some("uid-1".into());
        wl
    }

    fn secrets(json: &str, version: &str) -> PullSecrets {
        PullSecrets {
            config: DockerConfig::parse(json.as_bytes()).unwrap(),
            versions: vec![version.into()],
            problems: vec![],
        }
    }

    const LOGINS: &str = r#"{"auths":{"reg.example:5000":{"username":"u","password":"p"},"other.example":{"username":"x","password":"y"}}}"#;

    #[test]
    fn each_node_gets_only_the_logins_its_images_need_sealed_to_its_own_key() {
        let (a, b) = (
            NodeIdentity::from_secret_bytes([1; 32]),
            NodeIdentity::from_secret_bytes([2; 32]),
        );
        let (pa, pb) = (a.public().peer_id(), b.public().peer_id());
        let wl = workload(&["reg.example:5000/team/app:v1"]);
        let s = secrets(LOGINS, "regcred=uid/1");
        let (out, problems) = entries(
            &wl,
            &s,
            [("a", pa.as_str()), ("b", pb.as_str())],
            univrs_api::sealed::seal,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            out.iter().map(|e| e.node.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let opened = a
            .open_sealed(
                &sealed_context("team-a", "app", "uid-1", "a"),
                &out[0].sealed,
            )
            .unwrap();
        let cfg = DockerConfig::parse(&opened).unwrap();
        assert_eq!(cfg.registries().collect::<Vec<_>>(), ["reg.example:5000"]);
        // b's entry is not a's, and a's is for a alone, this Workload alone.
        assert!(
            a.open_sealed(
                &sealed_context("team-a", "app", "uid-1", "a"),
                &out[1].sealed
            )
            .is_err()
        );
        assert!(
            b.open_sealed(
                &sealed_context("team-a", "app", "uid-1", "b"),
                &out[0].sealed
            )
            .is_err()
        );
        assert!(
            a.open_sealed(
                &sealed_context("team-a", "app", "uid-2", "a"),
                &out[0].sealed
            )
            .is_err()
        );
    }

    #[test]
    fn unchanged_entries_are_kept_and_a_new_secret_version_seals_again() {
        let a = NodeIdentity::from_secret_bytes([1; 32]);
        let pa = a.public().peer_id();
        let mut wl = workload(&["reg.example:5000/team/app:v1"]);
        let seal = univrs_api::sealed::seal;
        let (first, _) = entries(
            &wl,
            &secrets(LOGINS, "regcred=uid/1"),
            [("a", pa.as_str())],
            seal,
        );
        wl.status = Some(WorkloadStatus {
            image_pull_credentials: first.clone(),
            ..Default::default()
        });
        let (again, _) = entries(
            &wl,
            &secrets(LOGINS, "regcred=uid/1"),
            [("a", pa.as_str())],
            |_, _, _| panic!("an unchanged entry is not sealed again"),
        );
        assert_eq!(again, first);
        let (rotated, _) = entries(
            &wl,
            &secrets(LOGINS, "regcred=uid/2"),
            [("a", pa.as_str())],
            seal,
        );
        assert_ne!(rotated[0].fingerprint, first[0].fingerprint);
        assert_ne!(rotated[0].sealed, first[0].sealed);
    }

    #[test]
    fn no_entry_without_a_login_for_the_images_and_a_bad_key_is_reported() {
        let wl = workload(&["ghcr.io/team/app:v1", "oci:/srv/x:v1"]);
        let (out, problems) = entries(
            &wl,
            &secrets(LOGINS, "v"),
            [("a", "12D3KooWnope")],
            |_, _, _| panic!("nothing to seal"),
        );
        assert!(out.is_empty() && problems.is_empty());
        let wl = workload(&["reg.example:5000/team/app:v1"]);
        let (out, problems) = entries(
            &wl,
            &secrets(LOGINS, "v"),
            [("a", "12D3KooWnope")],
            univrs_api::sealed::seal,
        );
        assert!(out.is_empty());
        assert!(problems[0].contains("node a"), "{problems:?}");
    }
}

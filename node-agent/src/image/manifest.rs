//! The JSON documents of an image: manifest, index (manifest list) and config, in their OCI
//! and Docker v2 forms, and the choice of one platform's manifest from an index.
//!
//! Our own small serde types rather than `oci-spec`'s: they accept both media-type families
//! and every error names the document it is about.

use super::config::ImageConfig;
use super::digest::Digest;
use super::error::ImageError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The manifest media types a pull accepts.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Manifests, indexes and configs larger than this are refused (real ones are a few KiB), so a
/// hostile registry cannot make the agent hold gigabytes in memory.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// A reference to content: what it is, its digest and size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// An image's target platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture in Go's naming (`amd64`, `arm64`, …).
    pub architecture: String,
    /// CPU variant (`v7`, `v8`), when the architecture has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Linux on this machine's architecture.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || other.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest: one config and its layers, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index (manifest list): one manifest per platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest or an index.
#[derive(Debug)]
pub(crate) enum Document {
    Manifest(Manifest),
    Index(Index),
}

fn bad(context: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Manifest {
        context: context.to_string(),
        reason: reason.into(),
    }
}

/// Parses a manifest or index, telling them apart by media type (or by shape when the
/// document has none, as OCI allows).
pub(crate) fn parse_document(bytes: &[u8], context: &str) -> Result<Document, ImageError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(context, format!("not JSON: {e}")))?;
    let media_type = value.get("mediaType").and_then(|m| m.as_str());
    let is_index = match media_type {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) => {
            return Err(bad(
                context,
                format!("unsupported media type {other:?} (not an image manifest or index)"),
            ));
        }
        None => value.get("manifests").is_some(),
    };
    let schema = value.get("schemaVersion").and_then(|v| v.as_u64());
    if schema != Some(2) {
        return Err(bad(
            context,
            format!("unsupported schemaVersion {schema:?}; only 2 is supported"),
        ));
    }
    if is_index {
        let index: Index = serde_json::from_value(value)
            .map_err(|e| bad(context, format!("invalid image index: {e}")))?;
        Ok(Document::Index(index))
    } else {
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| bad(context, format!("invalid image manifest: {e}")))?;
        Ok(Document::Manifest(manifest))
    }
}

/// Whether a descriptor's media type is a manifest or an index.
pub(crate) fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Picks the manifest for `wanted` from an index: an exact variant match first, else the
/// first whose os and architecture match.
pub(crate) fn select_platform(
    index: &Index,
    wanted: &Platform,
    reference: &str,
) -> Result<Descriptor, ImageError> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)))
        .collect();
    let exact = candidates
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == wanted.variant.as_ref());
    match exact.or(candidates.first()) {
        Some(d) => Ok((*d).clone()),
        None => Err(ImageError::NoMatchingPlatform {
            reference: reference.to_string(),
            wanted: wanted.to_string(),
            available: index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "unspecified".into())
                })
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Checks a manifest describes a container image: an image config, known layer types, and
/// digests that parse. Returns the config digest and the layer digests, bottom first.
pub(crate) fn check_manifest(
    manifest: &Manifest,
    context: &str,
) -> Result<(Digest, Vec<Digest>), ImageError> {
    if !manifest.config.media_type.is_empty()
        && !CONFIG_TYPES.contains(&manifest.config.media_type.as_str())
    {
        return Err(bad(
            context,
            format!(
                "not a container image: its config has media type {:?}",
                manifest.config.media_type
            ),
        ));
    }
    if manifest.config.size > MAX_DOCUMENT_BYTES {
        return Err(bad(
            context,
            format!(
                "image config of {} bytes is too large",
                manifest.config.size
            ),
        ));
    }
    let config = Digest::parse(&manifest.config.digest, context)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, layer) in manifest.layers.iter().enumerate() {
        let known = layer.media_type.is_empty()
            || layer
                .media_type
                .starts_with("application/vnd.oci.image.layer.")
            || layer
                .media_type
                .starts_with("application/vnd.docker.image.rootfs.");
        if !known {
            return Err(bad(
                context,
                format!(
                    "layer {i} has unsupported media type {:?}",
                    layer.media_type
                ),
            ));
        }
        layers.push(Digest::parse(
            &layer.digest,
            &format!("layer {i} of {context}"),
        )?);
    }
    Ok((config, layers))
}

/// The parts of an image config the runtime uses.
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawRunConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Parses an image config; `layers` is the number of layers in the manifest, which must equal
/// the number of diff ids.
pub(crate) fn parse_config(
    bytes: &[u8],
    layers: usize,
    context: &str,
) -> Result<(ImageConfig, Vec<Digest>), ImageError> {
    let raw: RawConfig = serde_json::from_slice(bytes)
        .map_err(|e| bad(context, format!("invalid image config: {e}")))?;
    if raw.rootfs.kind != "layers" {
        return Err(bad(
            context,
            format!("rootfs type {:?}, expected \"layers\"", raw.rootfs.kind),
        ));
    }
    if raw.rootfs.diff_ids.len() != layers {
        return Err(bad(
            context,
            format!(
                "the config lists {} diff ids but the manifest has {layers} layers",
                raw.rootfs.diff_ids.len()
            ),
        ));
    }
    let diff_ids = raw
        .rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| Digest::parse(d, &format!("diff id {i} of {context}")))
        .collect::<Result<Vec<_>, _>>()?;
    let run = raw.config.unwrap_or_default();
    let env = run
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    let config = ImageConfig {
        os: raw.os,
        architecture: raw.architecture,
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env,
        working_dir: run.working_dir.filter(|w| !w.is_empty()),
        user: run.user.filter(|u| !u.is_empty()),
        exposed_ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
        labels: run.labels.unwrap_or_default(),
        stop_signal: run.stop_signal.filter(|s| !s.is_empty()),
    };
    Ok((config, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> serde_json::Value {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": format!("sha256:{}", hex::encode([n; 32])),
            "size": 100,
            "platform": {"os": "linux", "architecture": arch, "variant": variant},
        })
    }

    #[test]
    fn index_selects_the_host_platform() {
        let doc = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [desc("arm", Some("v7"), 1), desc("arm64", Some("v8"), 2), desc("amd64", None, 3)],
        });
        let Document::Index(index) = parse_document(doc.to_string().as_bytes(), "t").unwrap()
        else {
            panic!("an index")
        };
        let pick = |arch: &str, variant: Option<&str>| {
            let p = Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(String::from),
            };
            select_platform(&index, &p, "r").map(|d| d.digest)
        };
        assert!(
            pick("amd64", None)
                .unwrap()
                .ends_with(&hex::encode([3u8; 32]))
        );
        assert!(
            pick("arm64", None)
                .unwrap()
                .ends_with(&hex::encode([2u8; 32]))
        );
        assert!(
            pick("arm", Some("v7"))
                .unwrap()
                .ends_with(&hex::encode([1u8; 32]))
        );
        let err = pick("s390x", None).unwrap_err().to_string();
        assert!(
            err.contains("linux/s390x") && err.contains("linux/arm64/v8"),
            "{err}"
        );
        assert!(select_platform(&index, &Platform::host(), "r").is_ok());
    }

    #[test]
    fn documents_are_told_apart_and_checked() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "a".repeat(64)), "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", "b".repeat(64)), "size": 10}],
        });
        let Document::Manifest(m) = parse_document(manifest.to_string().as_bytes(), "t").unwrap()
        else {
            panic!("a manifest")
        };
        let (config, layers) = check_manifest(&m, "t").unwrap();
        assert_eq!(config.hex(), "a".repeat(64));
        assert_eq!(layers.len(), 1);

        let mut helm = manifest.clone();
        helm["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json".into();
        let Document::Manifest(m) = parse_document(helm.to_string().as_bytes(), "t").unwrap()
        else {
            panic!("a manifest")
        };
        assert!(
            check_manifest(&m, "t")
                .unwrap_err()
                .to_string()
                .contains("not a container image")
        );

        let v1 = serde_json::json!({"schemaVersion": 1, "fsLayers": []});
        assert!(
            parse_document(v1.to_string().as_bytes(), "t")
                .unwrap_err()
                .to_string()
                .contains("schemaVersion")
        );
        assert!(
            parse_document(b"<html>", "manifest of x")
                .unwrap_err()
                .to_string()
                .contains("manifest of x")
        );
    }

    #[test]
    fn config_fields_are_read() {
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Env": ["PATH=/bin", "A=b=c"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo"],
                "WorkingDir": "/srv", "User": "1000:1000", "ExposedPorts": {"80/tcp": {}},
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "c".repeat(64))]},
        });
        let bytes = config.to_string();
        let (c, diff_ids) = parse_config(bytes.as_bytes(), 1, "t").unwrap();
        assert_eq!(
            c.env,
            vec![("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert_eq!(c.entrypoint, vec!["/bin/sh"]);
        assert_eq!(c.cmd, vec!["-c", "echo"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(diff_ids.len(), 1);
        assert!(
            parse_config(bytes.as_bytes(), 2, "t")
                .unwrap_err()
                .to_string()
                .contains("2 layers")
        );
    }
}

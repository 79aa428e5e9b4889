//! OCI images for the node agent: where a container's root filesystem comes from.
//!
//! [`ImageStore`] keeps verified content under one directory the agent gives it:
//!
//! ```text
//! <root>/blobs/sha256/<hex>      manifests, indexes, configs and layer blobs, each verified
//!                                against its digest, written once (temporary file + rename)
//! <root>/layers/sha256/<hex>/    each layer unpacked once, overlayfs-ready (whiteouts as 0/0
//!                                character devices, opaque directories as xattrs)
//! <root>/refs/<reference>        reference -> manifest digest (JSON), so `resolve` works offline
//! <root>/rootfs/<id>/            a container's writable root: upper/, work/ and the overlay
//!                                mount merged/ (or a plain copy in merged/ without overlayfs)
//! <root>/tmp/                    downloads and unpacks in progress (named after their process;
//!                                a killed process's leftovers are removed by the next open)
//! <root>/lock                    flock: shared while adding content, exclusive for `gc`
//! ```
//!
//! - [`ImageStore::pull`] fetches an image from a registry with `oci-client` (HTTPS, or plain
//!   HTTP for registries listed as insecure; anonymous or basic-auth credentials, e.g. from a
//!   docker `config.json` through [`DockerConfig`]), picking linux and this machine's
//!   architecture from an image index. A reference `oci:DIR:TAG` imports from a local OCI image
//!   layout instead ([`ImageStore::import_oci_layout`]).
//! - [`ImageStore::resolve`] finds an image already in the store without the network.
//! - [`ImageStore::prepare_rootfs`] and [`ImageStore::remove_rootfs`] make and remove a
//!   container's root filesystem; [`ImageStore::gc`] removes what no kept image uses.
//! - [`config`] combines the image's ENTRYPOINT, CMD and ENV with a Workload's `command`,
//!   `args` and `env` the way Kubernetes does.
//!
//! Everything is safe against concurrent pulls (in one process or several) and against a kill
//! at any moment: content only appears under its final name once complete and verified.

mod auth;
pub mod config;
mod digest;
mod error;
mod layout;
pub mod manifest;
mod pull;
mod rootfs;
mod store;
mod unpack;

pub use auth::{Credentials, DockerConfig};
pub use config::{ImageConfig, ProcessError, merge_env, process_args, resolve_user, working_dir};
pub use digest::Digest;
pub use error::ImageError;
pub use manifest::Platform;
pub use pull::PullOptions;
pub use rootfs::RootfsMode;
pub use store::{GcReport, ImageStore, StoreStats};

use std::path::PathBuf;

/// An image in the store: what a container needs to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference it was pulled or imported as, in canonical form
    /// (`registry/repository:tag`, or `oci:DIR:TAG`).
    pub reference: String,
    /// The digest of its (platform-specific) manifest: the image's identity.
    pub digest: Digest,
    /// The digest of its config blob.
    pub config_digest: Digest,
    /// Its layers' blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Its layers' uncompressed digests (from the config), bottom first.
    pub diff_ids: Vec<Digest>,
    /// Its run configuration.
    pub config: ImageConfig,
}

/// The canonical form of a reference: registry references as `oci-client` completes them
/// (`busybox` → `docker.io/library/busybox:latest`), `oci:DIR[:TAG]` with the directory's
/// real path and the tag (default `latest`).
pub fn canonical_reference(reference: &str) -> Result<String, ImageError> {
    if let Some((dir, tag)) = parse_layout_reference(reference)? {
        // As `import_oci_layout` records it: the real path, when the directory exists.
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        return Ok(format!("oci:{}:{tag}", dir.display()));
    }
    let parsed: oci_client::Reference =
        reference
            .parse()
            .map_err(|e: oci_client::ParseError| ImageError::InvalidReference {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?;
    Ok(parsed.whole())
}

/// `oci:DIR[:TAG]` (skopeo's syntax for an OCI image layout) as the directory and the tag;
/// `None` for any other reference.
pub fn parse_layout_reference(reference: &str) -> Result<Option<(PathBuf, String)>, ImageError> {
    let Some(rest) = reference.strip_prefix("oci:") else {
        return Ok(None);
    };
    // The tag follows the last ':' unless that ':' is inside the directory part.
    let (dir, tag) = match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir, tag),
        _ => (rest, "latest"),
    };
    let bad = |reason: &str| ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if dir.is_empty() {
        return Err(bad("oci: needs a directory, as in oci:/path/to/layout:tag"));
    }
    if tag.is_empty() {
        return Err(bad("empty tag after the last ':'"));
    }
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        return Err(bad("the layout directory must be an absolute path"));
    }
    Ok(Some((dir, tag.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_made_canonical() {
        assert_eq!(
            canonical_reference("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canonical_reference("127.0.0.1:5000/demo/busybox:latest").unwrap(),
            "127.0.0.1:5000/demo/busybox:latest"
        );
        assert_eq!(
            canonical_reference("oci:/srv/images/demo").unwrap(),
            "oci:/srv/images/demo:latest"
        );
        assert_eq!(
            canonical_reference("oci:/srv/images/demo:v1").unwrap(),
            "oci:/srv/images/demo:v1"
        );
        assert!(canonical_reference("oci:relative/dir:v1").is_err());
        assert!(canonical_reference("Not A Reference").is_err());
    }
}

//! Importing an image from a local OCI image layout (the directory `umoci` builds and
//! `skopeo copy … oci:DIR:TAG` writes), with the same verification as a pull: every blob is
//! checked against its digest while it is copied into the store.

use super::auth::Access;
use super::digest::Digest;
use super::error::{ImageError, io_err};
use super::manifest::{self, Descriptor, Document, Index, MAX_DOCUMENT_BYTES, Platform};
use super::store::{Image, ImageStore};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The annotation naming a manifest in a layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl ImageStore {
    /// Imports the image tagged `tag` in the OCI layout `dir` (picking this machine's platform
    /// if the tag names an index) and records it as `oci:DIR:TAG`. Blocking; content already
    /// in the store is not copied or unpacked again.
    pub fn import_oci_layout(&self, dir: &Path, tag: &str) -> Result<Image, ImageError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| ImageError::Layout {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| ImageError::Layout {
            path: dir.clone(),
            reason,
        };
        let marker = std::fs::read(dir.join("oci-layout")).map_err(|e| {
            bad(format!(
                "no oci-layout file ({e}); is this an OCI image layout?"
            ))
        })?;
        let version: serde_json::Value = serde_json::from_slice(&marker)
            .map_err(|e| bad(format!("oci-layout is not JSON: {e}")))?;
        let version = version["imageLayoutVersion"].as_str().unwrap_or("");
        if !version.starts_with("1.") {
            return Err(bad(format!("unsupported imageLayoutVersion {version:?}")));
        }
        let reference = format!("oci:{}:{tag}", dir.display());
        let _lock = self.lock(false)?;

        let index_bytes = read_limited(&dir.join("index.json"))?;
        let Document::Index(index) =
            manifest::parse_document(&index_bytes, &format!("{}/index.json", dir.display()))?
        else {
            return Err(bad("index.json is not an image index".into()));
        };
        let chosen = find_tag(&index, tag).map_err(bad)?;
        let (digest, index_digest) = if manifest::is_index_type(&chosen.media_type) {
            let index_digest = Digest::parse(&chosen.digest, &reference)?;
            let context = format!("index {index_digest} of {reference}");
            let bytes = self.read_layout_doc(&dir, &index_digest, &context)?;
            let Document::Index(inner) = manifest::parse_document(&bytes, &context)? else {
                return Err(bad(format!("{context} is not an index")));
            };
            let entry = manifest::select_platform(&inner, &Platform::host(), &reference)?;
            self.write_blob(&index_digest, &bytes, &context)?;
            (Digest::parse(&entry.digest, &context)?, Some(index_digest))
        } else {
            (Digest::parse(&chosen.digest, &reference)?, None)
        };

        let context = format!("manifest {digest} of {reference}");
        let manifest_bytes = self.read_layout_doc(&dir, &digest, &context)?;
        let Document::Manifest(m) = manifest::parse_document(&manifest_bytes, &context)? else {
            return Err(bad(format!("{context} is an index, not a manifest")));
        };
        let (config_digest, layers) = manifest::check_manifest(&m, &context)?;
        let config_context = format!("config {config_digest} of {reference}");
        self.copy_layout_blob(&dir, &m.config, &config_digest, &config_context)?;
        let config_bytes = self.read_blob(&config_digest, &config_context)?;
        let (config, diff_ids) =
            manifest::parse_config(&config_bytes, layers.len(), &config_context)?;
        for (i, (desc, layer)) in m.layers.iter().zip(&layers).enumerate() {
            let layer_context = format!("layer {i} ({layer}) of {reference}");
            self.copy_layout_blob(&dir, desc, layer, &layer_context)?;
        }
        self.ensure_layers(&layers, &diff_ids)?;
        self.write_blob(&digest, &manifest_bytes, &context)?;
        self.write_ref(&reference, &digest, index_digest.as_ref(), &Access::Shared)?;
        Ok(Image {
            reference,
            digest,
            config_digest,
            layers,
            diff_ids,
            config,
        })
    }

    /// Reads a manifest or index from the layout, verified.
    fn read_layout_doc(
        &self,
        dir: &Path,
        digest: &Digest,
        context: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let bytes = read_limited(&layout_blob(dir, digest))?;
        digest.verify(&bytes, context)?;
        Ok(bytes)
    }

    /// Copies a blob from the layout into the store (unless present), verifying it.
    fn copy_layout_blob(
        &self,
        dir: &Path,
        desc: &Descriptor,
        digest: &Digest,
        context: &str,
    ) -> Result<(), ImageError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        let _busy = self.busy(format!("blob:{}", digest.hex()));
        if self.has_blob(digest) {
            return Ok(());
        }
        let src = layout_blob(dir, digest);
        let mut input = BufReader::with_capacity(
            256 * 1024,
            File::open(&src).map_err(io_err("opening", &src))?,
        );
        let mut out = self.blob_writer(digest, Some(desc.size), context)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = input.read(&mut buf).map_err(io_err("reading", &src))?;
            if n == 0 {
                break;
            }
            out.write(&buf[..n])?;
        }
        out.commit()
    }
}

/// The manifest `tag` names in a layout's index: by its ref-name annotation, or the only one
/// when the layout has a single untagged manifest.
fn find_tag(index: &Index, tag: &str) -> Result<Descriptor, String> {
    if let Some(d) = index
        .manifests
        .iter()
        .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
    {
        return Ok(d.clone());
    }
    let names: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
        .collect();
    if names.is_empty() && index.manifests.len() == 1 {
        return Ok(index.manifests[0].clone());
    }
    Err(format!(
        "no image tagged {tag:?}; tags here: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

fn layout_blob(dir: &Path, digest: &Digest) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(digest.hex())
}

/// Reads a small JSON file, refusing anything larger than a manifest can be.
fn read_limited(path: &Path) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(|e| ImageError::Layout {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("reading", path))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ImageError::Layout {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

//! Writing OCI image layouts, reproducibly: layers whose entries carry fixed times and owners
//! (so the same files always give the same digests), and the layout's blobs, manifest and
//! index. The demo image and `univrs image build` are made this way; the store reads them back
//! with [`super::ImageStore::import_oci_layout`].

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// A gzip-compressed tar layer being built.
pub struct LayerBuilder {
    tar: tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A header with time 0 and owner root: what makes a layer reproducible.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        Self {
            tar: tar::Builder::new(gz),
        }
    }

    /// Adds a directory (`path` without a leading slash).
    pub fn dir(&mut self, path: &str, mode: u32) -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.tar.append_data(
            &mut h,
            format!("{}/", path.trim_end_matches('/')),
            std::io::empty(),
        )
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, body: &[u8]) -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Regular, mode, body.len() as u64);
        self.tar.append_data(&mut h, path, body)
    }

    /// Adds a symbolic link at `path` to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar.append_link(&mut h, path, target)
    }

    /// The compressed layer.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        let mut gz = self.tar.into_inner()?;
        gz.flush()?;
        gz.finish()
    }
}

/// What an image's config says besides its layers: the `config` object of the OCI image
/// configuration (Env, Entrypoint, Cmd, User, Labels, …).
pub type RunConfig = serde_json::Value;

/// Writes an OCI image layout of `layers` and `run` into `dir` (replacing what is there),
/// tagged `tag` and named `reference` (annotation `io.containerd.image.name`, which
/// `ctr images import` reads); returns the manifest's digest (`sha256:…`).
pub fn write_layout(
    dir: &Path,
    layers: &[Vec<u8>],
    run: RunConfig,
    reference: &str,
    tag: &str,
) -> std::io::Result<String> {
    let mut diff_ids = Vec::new();
    for layer in layers {
        let mut raw = Vec::new();
        std::io::copy(&mut flate2::read::GzDecoder::new(&layer[..]), &mut raw)?;
        diff_ids.push(format!("sha256:{}", sha256_hex(&raw)));
    }
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = config.to_string().into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l))
            .collect::<Vec<_>>(),
    });
    let manifest = manifest.to_string().into_bytes();
    let mut manifest_desc = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_desc["annotations"] = serde_json::json!({
        "org.opencontainers.image.ref.name": tag,
        "io.containerd.image.name": reference,
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for blob in layers.iter().chain([&config, &manifest]) {
        std::fs::write(blobs.join(sha256_hex(blob)), blob)?;
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(dir.join("index.json"), index.to_string())?;
    Ok(format!("sha256:{}", sha256_hex(&manifest)))
}

/// This machine's architecture as OCI names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn descriptor(media_type: &str, blob: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(blob)),
        "size": blob.len(),
    })
}

//! The demo image `univrs up` gives its agents (and the tests run), built here from the
//! machine's static busybox, so the examples run offline: an OCI image layout with one gzip layer (busybox, its applets
//! and a small web page) whose default command serves that page on port 8080.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The reference the examples use; it names no registry that exists, so only an agent that
/// imported the layout can run it.
pub const DEMO_REFERENCE: &str = "univrs.local/demo:latest";

/// Where Debian's busybox-static installs a statically linked busybox.
const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into /bin.
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "env", "hostname", "httpd", "ls", "mkdir", "nc", "ps", "sleep",
    "wget", "date", "true", "false", "head", "tail", "grep", "id", "rm", "touch", "uname", "tr",
    "dd", "seq", "kill", "nslookup",
];

/// The page the portal serves; `HOSTNAME` is the instance name, so each replica says which it is.
const CMD: &str = "mkdir -p /www && printf '<h1>Community portal</h1><p>served by %s</p>\\n' \"$(hostname)\" > /www/index.html && exec httpd -f -v -p 8080 -h /www";

/// Why the demo image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DemoImageError {
    /// Reading busybox or writing the layout failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, DemoImageError>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoImageError {
    let context = context.into();
    move |source| DemoImageError::Io { context, source }
}

/// Writes the layout into `dir` (replacing what is there) and returns `dir`.
pub fn build(dir: &Path) -> Result<PathBuf> {
    let busybox = std::fs::read(BUSYBOX).map_err(io(format!(
        "reading {BUSYBOX} (install Debian's busybox-static)"
    )))?;
    let layer = layer_tar_gz(&busybox).map_err(io("building the layer"))?;
    let diff_id = sha256_hex(&gunzip(&layer).map_err(io("reading the layer back"))?);
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh", "-c", CMD],
            "WorkingDir": "/",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"org.opencontainers.image.title": "univrs demo portal"},
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let config = config.to_string().into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
    });
    let manifest = manifest.to_string().into_bytes();
    let mut manifest_desc = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_desc["annotations"] = serde_json::json!({
        "org.opencontainers.image.ref.name": "latest",
        "io.containerd.image.name": DEMO_REFERENCE,
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });

    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io(format!("creating {}", blobs.display())))?;
    let write = |path: PathBuf, body: &[u8]| {
        std::fs::write(&path, body).map_err(io(format!("writing {}", path.display())))
    };
    for blob in [&layer, &config, &manifest] {
        write(blobs.join(sha256_hex(blob)), blob)?;
    }
    write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write(dir.join("index.json"), index.to_string().as_bytes())?;
    Ok(dir.to_path_buf())
}

fn go_arch() -> &'static str {
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

fn gunzip(b: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::io::copy(&mut flate2::read::GzDecoder::new(b), &mut out)?;
    Ok(out)
}

/// The layer: directories, busybox, applet symlinks and a minimal /etc, with fixed times so
/// the same busybox always gives the same digest.
fn layer_tar_gz(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for d in ["bin", "etc", "tmp", "www", "proc", "sys", "dev"] {
        let mut h = header(
            tar::EntryType::Directory,
            if d == "tmp" { 0o1777 } else { 0o755 },
            0,
        );
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", busybox)?;
    for applet in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let files: [(&str, &[u8]); 3] = [
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", b"root:x:0:\nnobody:x:65534:\n"),
        ("etc/hosts", b"127.0.0.1 localhost\n"),
    ];
    for (path, body) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, body.len() as u64);
        tar.append_data(&mut h, path, body)?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_valid_reproducible_layout() {
        if !Path::new(BUSYBOX).exists() {
            panic!("this test needs Debian's busybox-static ({BUSYBOX})");
        }
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        build(a.path()).unwrap();
        build(b.path()).unwrap();
        let index_a = std::fs::read(a.path().join("index.json")).unwrap();
        assert_eq!(index_a, std::fs::read(b.path().join("index.json")).unwrap());
        let index: serde_json::Value = serde_json::from_slice(&index_a).unwrap();
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let manifest = std::fs::read(a.path().join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_hex(&manifest), hex);
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let layer_hex = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let layer = std::fs::read(a.path().join("blobs/sha256").join(layer_hex)).unwrap();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert!(names.contains(&"bin/busybox".to_string()), "{names:?}");
        assert!(names.contains(&"bin/httpd".to_string()), "{names:?}");
    }
}

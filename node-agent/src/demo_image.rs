//! The demo image `univrs up` gives its agents (and the tests run), built here from the
//! machine's static busybox, so the examples run offline: an OCI image layout with one gzip layer (busybox, its applets
//! and a small web page) whose default command serves that page on port 8080.

use crate::image::write::{LayerBuilder, write_layout};
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
    let run = serde_json::json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh", "-c", CMD],
        "WorkingDir": "/",
        "ExposedPorts": {"8080/tcp": {}},
        "Labels": {"org.opencontainers.image.title": "univrs demo portal"},
    });
    write_layout(dir, &[layer], run, DEMO_REFERENCE, "latest")
        .map_err(io(format!("writing the layout in {}", dir.display())))?;
    Ok(dir.to_path_buf())
}

/// The layer: directories, busybox, applet symlinks and a minimal /etc, with fixed times so
/// the same busybox always gives the same digest.
fn layer_tar_gz(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut layer = LayerBuilder::new();
    for d in ["bin", "etc", "tmp", "www", "proc", "sys", "dev"] {
        layer.dir(d, if d == "tmp" { 0o1777 } else { 0o755 })?;
    }
    layer.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
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
        layer.file(path, 0o644, body)?;
    }
    layer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

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
        assert_eq!(hex::encode(sha2::Sha256::digest(&manifest)), hex);
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

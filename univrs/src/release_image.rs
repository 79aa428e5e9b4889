//! `univrs image build`: the Univrs image, made offline from a `univrs` binary and this
//! machine's files, reproducibly (fixed times and owners, sorted entries: the same inputs give
//! the same digest). One layer holds:
//!
//! - the binary at `/usr/local/bin/univrs` (the entrypoint) and every shared library it loads
//!   (from `ldd`, at the paths the loader looks in);
//! - what the agent runs besides itself, with their libraries: `ip` (iproute2), and
//!   `iptables-save`/`iptables-restore` with the xtables extensions (the CNI plugins and the
//!   xtables lock come from the host, mounted by the chart);
//! - this machine's CA bundle (`/etc/ssl/certs/ca-certificates.crt`, Debian's ca-certificates):
//!   the agent pulls images over HTTPS, and its registry client will not start without roots;
//! - `/etc/passwd` and `/etc/group` naming root and the user `univrs` (65532), the default
//!   user: the controller and the MCP server run as it, the agent's DaemonSet asks for root;
//! - labels for the title, version, source, licence and the binary's SHA-256.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use univrs_node_agent::image::write::{LayerBuilder, write_layout};

/// The image's user and group id (distroless's `nonroot`).
pub const USER_ID: u32 = 65532;

/// The tools the agent execs, found on this machine's PATH (a missing one is left out and said).
const AGENT_TOOLS: [&str; 3] = ["ip", "iptables-save", "iptables-restore"];

/// Where the xtables extensions live (iptables loads them at run time: `ldd` cannot see them).
const XTABLES_DIRS: [&str; 2] = ["/usr/lib/x86_64-linux-gnu/xtables", "/usr/lib/xtables"];

/// The CA bundle the image carries (where Debian's ca-certificates writes it, and where
/// rustls-native-certs looks first).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What was built.
pub struct Built {
    /// The manifest's digest.
    pub digest: String,
    /// The compressed layer's size in bytes.
    pub compressed: u64,
    /// The files' size in bytes.
    pub uncompressed: u64,
    /// Tools not found on this machine (left out).
    pub missing: Vec<String>,
}

/// Builds the image of `binary` into the OCI layout `output`, named `reference:tag`.
pub fn build(binary: &Path, output: &Path, reference: &str, tag: &str) -> Result<Built> {
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let bin = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let bin_digest = hex::encode(Sha256::digest(&bin));
    add_with_libraries(&mut files, binary, "usr/local/bin/univrs")?;
    let mut missing = Vec::new();
    for tool in AGENT_TOOLS {
        match which(tool) {
            Some(path) => {
                // iptables is one multi-call binary that looks at its own name: the tool's name
                // links to the real file, kept at its own path.
                let real = std::fs::canonicalize(&path)?;
                let real_rel = rel(&real);
                add_with_libraries(&mut files, &real, &real_rel)?;
                if real != path {
                    files.insert(rel(&path), Entry::Link(format!("/{real_rel}")));
                }
            }
            None => missing.push(tool.to_string()),
        }
    }
    for dir in XTABLES_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "so"))
        {
            add_with_libraries(&mut files, p, &rel(p))?;
        }
    }
    match std::fs::read(CA_BUNDLE) {
        Ok(pem) => {
            files.insert(CA_BUNDLE[1..].into(), Entry::File(pem, 0o644));
        }
        Err(_) => missing.push(format!("{CA_BUNDLE} (install Debian's ca-certificates)")),
    }
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nunivrs:x:{USER_ID}:{USER_ID}:univrs:/home/univrs:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nunivrs:x:{USER_ID}:\n");
    files.insert("etc/passwd".into(), Entry::File(passwd.into_bytes(), 0o644));
    files.insert("etc/group".into(), Entry::File(group.into_bytes(), 0o644));
    files.insert(
        "etc/nsswitch.conf".into(),
        Entry::File(b"hosts: files dns\n".to_vec(), 0o644),
    );

    let mut layer = LayerBuilder::new();
    let mut dirs: std::collections::BTreeSet<String> =
        ["tmp", "home/univrs", "var/lib/univrs", "etc/univrs"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for path in files.keys().chain(dirs.clone().iter()) {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.display().to_string());
            p = d.parent();
        }
    }
    let mut uncompressed = 0u64;
    for d in &dirs {
        layer.dir(d, if d == "tmp" { 0o1777 } else { 0o755 })?;
    }
    for (path, entry) in &files {
        match entry {
            Entry::File(body, mode) => {
                uncompressed += body.len() as u64;
                layer.file(path, *mode, body)?;
            }
            Entry::Link(target) => layer.symlink(path, target)?,
        }
    }
    let layer = layer.finish()?;
    let version = env!("CARGO_PKG_VERSION");
    let run = serde_json::json!({
        "User": format!("{USER_ID}:{USER_ID}"),
        "Entrypoint": ["/usr/local/bin/univrs"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/home/univrs"],
        "WorkingDir": "/",
        "Labels": {
            "org.opencontainers.image.title": "univrs",
            "org.opencontainers.image.description": "Univrs: controller, node agent, MCP server and tools in one binary",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.source": env!("CARGO_PKG_REPOSITORY"),
            "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
            "io.univrs.binary.sha256": bin_digest,
        },
    });
    let compressed = layer.len() as u64;
    let digest = write_layout(output, &[layer], run, &format!("{reference}:{tag}"), tag)
        .with_context(|| format!("writing the layout in {}", output.display()))?;
    Ok(Built {
        digest,
        compressed,
        uncompressed,
        missing,
    })
}

/// A file of the layer.
enum Entry {
    /// Contents and mode.
    File(Vec<u8>, u32),
    /// A symbolic link's target.
    Link(String),
}

/// `path` without its leading slash.
fn rel(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

/// `name` on PATH (and the sbin directories, which root's PATH may lack).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Adds the file at `source` as `dest` (mode 0755), and every library `ldd` says it loads, at
/// the path the loader found it (the real file's contents under that name).
fn add_with_libraries(
    files: &mut BTreeMap<String, Entry>,
    source: &Path,
    dest: &str,
) -> Result<()> {
    let body = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    files.insert(dest.to_string(), Entry::File(body, 0o755));
    for lib in libraries(source)? {
        let key = rel(&lib);
        if files.contains_key(&key) {
            continue;
        }
        let body = std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        files.insert(key, Entry::File(body, 0o755));
    }
    Ok(())
}

/// The shared libraries `ldd` lists for `path` (none for a static file).
fn libraries(path: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(path)
        .output()
        .context("running ldd (Debian's libc-bin) to find the libraries")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!(
                "{} needs a library this machine lacks: {line}",
                path.display()
            );
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or the loader `/lib64/ld-…`.
        let candidate = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = candidate.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

//! The pinned upstream binaries: found in a given directory, or built once per pin.
//!
//! The pins (`deploy/local/go.mod`, `deploy/local/etcd/go.mod` and their go.sum files) and the
//! build script (`scripts/build-control-plane`) are embedded in this binary, so an installed
//! `univrs` builds the same control plane as a checkout does, into the user's cache directory
//! (`$XDG_CACHE_HOME/univrs/control-plane/<pin>/bin`), and reuses it afterwards.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files embedded from the repository, by their path relative to its root.
const SOURCES: [(&str, &str); 5] = [
    (
        "scripts/build-control-plane",
        include_str!("../../../scripts/build-control-plane"),
    ),
    (
        "deploy/local/go.mod",
        include_str!("../../../deploy/local/go.mod"),
    ),
    (
        "deploy/local/go.sum",
        include_str!("../../../deploy/local/go.sum"),
    ),
    (
        "deploy/local/etcd/go.mod",
        include_str!("../../../deploy/local/etcd/go.mod"),
    ),
    (
        "deploy/local/etcd/go.sum",
        include_str!("../../../deploy/local/etcd/go.sum"),
    ),
];

/// Paths of the upstream binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The directory holding them.
    pub dir: PathBuf,
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kubectl of the same release.
    pub kubectl: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, if all four are there.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let b = Self {
            dir: dir.to_path_buf(),
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kubectl: dir.join("kubectl"),
        };
        for p in [
            &b.etcd,
            &b.kube_apiserver,
            &b.kube_controller_manager,
            &b.kubectl,
        ] {
            if !p.is_file() {
                bail!(
                    "{} is missing; build the control plane with `univrs control-plane build`",
                    p.display()
                );
            }
        }
        Ok(b)
    }

    /// The binaries in `dir` if given, else the cached build of the embedded pin (built now if
    /// missing; the first build takes several minutes and needs Go and the module proxy).
    pub fn resolve(dir: Option<&Path>) -> Result<Self> {
        match dir {
            Some(d) => Self::in_dir(d),
            None => Self::in_dir(&build("control-plane")?),
        }
    }

    /// The node binaries (kube-scheduler, kubelet, kube-proxy, pause) of the same pins, in `dir`
    /// if given, else built once into the cache like the control plane.
    pub fn resolve_node(dir: Option<&Path>) -> Result<NodeBinaries> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => build("node")?,
        };
        let b = NodeBinaries {
            kube_scheduler: dir.join("kube-scheduler"),
            dir,
        };
        if !b.kube_scheduler.is_file() {
            bail!(
                "{} is missing; build it with `univrs control-plane build --node`",
                b.kube_scheduler.display()
            );
        }
        Ok(b)
    }
}

/// Paths of the node binaries the control plane itself runs (with `--kubelets`).
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    /// The directory holding them (and kubelet, kube-proxy and pause).
    pub dir: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
}

/// Runs the embedded build script for `set` (`control-plane` or `node`) from a copy of the
/// embedded sources in the cache, and returns the directory it prints last.
fn build(set: &str) -> Result<PathBuf> {
    let cache = crate::paths::cache_dir()?;
    let digest = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        SOURCES.hash(&mut h);
        h.finish()
    };
    let src = cache.join(format!("control-plane/src-{digest:016x}"));
    for (rel, contents) in SOURCES {
        let path = src.join(rel);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(contents) {
            std::fs::create_dir_all(path.parent().expect("a parent"))?;
            std::fs::write(&path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let script = src.join("scripts/build-control-plane");
    let out = Command::new("bash")
        .arg(&script)
        .arg(set)
        .env("UNIVRS_CACHE_DIR", &cache)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "building the upstream {set} binaries failed ({}); see the messages above",
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .context("the build script printed no directory")?;
    Ok(PathBuf::from(dir.trim()))
}

//! A real OCI registry for tests, and the images to put in it.
//!
//! - [`busybox_layout`]: a tiny busybox image built once per test binary with Debian's `umoci`
//!   (Debian's static `/bin/busybox`, applet symlinks, `/etc/motd`, `/srv/data/{a,b}`, CMD
//!   `sh`, port 8080 exposed), tagged `latest`; the same layout has `pruned` (a second layer
//!   that deletes `/etc/motd`, `/srv/data/a` and `/srv/data/b` and adds `/srv/data/c`, i.e.
//!   OCI whiteouts) and `multi` (an image index with this machine's busybox and an s390x
//!   variant).
//! - [`Registry`]: Debian's `docker-registry serve` on a free 127.0.0.1 port, storing into a
//!   temporary directory, killed when dropped or when the test binary dies; plain HTTP,
//!   optionally with htpasswd users ([`Registry::start_with_auth`]; the registry accepts basic
//!   auth over plain HTTP) or HTTPS with a fresh CA ([`Registry::start_tls`]).
//! - Images are pushed with `skopeo copy oci:… docker://…`.

use crate::{Guarded, free_port, run};
use sha2::{Digest as _, Sha256};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The busybox applets linked in the test image.
pub const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "httpd", "wget", "nc", "ls", "env", "true", "false", "test",
    "mkdir", "rm", "touch", "id", "hostname", "grep", "head", "readlink",
];

/// A fresh directory `univrs-test-<pid>-<what><n>` under the temp dir (removed by the next
/// test run once this process is gone).
fn test_dir(what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    crate::remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!(
        "univrs-test-{}-{what}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("creating a test directory");
    dir
}

fn check(cmd: &mut Command) -> String {
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The OCI layout with the busybox image (`latest`, `pruned`, `multi`, and `devices` with two
/// device nodes in its top layer), built once per test binary.
pub fn busybox_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "the image tests need Debian's busybox-static (scripts/install-deps)"
        );
        let work = test_dir("busybox");
        let layout = work.join("layout");
        let img = |tag: &str| format!("{}:{tag}", layout.display());
        check(
            Command::new("umoci")
                .args(["init", "--layout"])
                .arg(&layout),
        );
        check(Command::new("umoci").args(["new", "--image", &img("latest")]));
        let bundle = work.join("bundle");
        check(
            Command::new("umoci")
                .args(["unpack", "--image", &img("latest")])
                .arg(&bundle),
        );
        let root = bundle.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "srv/data"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        std::fs::write(root.join("etc/motd"), "welcome to univrs\n").unwrap();
        std::fs::write(root.join("srv/data/a"), "a\n").unwrap();
        std::fs::write(root.join("srv/data/b"), "b\n").unwrap();
        check(
            Command::new("umoci")
                .args(["repack", "--image", &img("latest")])
                .arg(&bundle),
        );
        check(Command::new("umoci").args([
            "config",
            "--image",
            &img("latest"),
            "--config.cmd",
            "sh",
            "--config.env",
            "PATH=/bin",
            "--config.env",
            "GREETING=hello",
            "--config.workingdir",
            "/",
            "--config.exposedports",
            "8080/tcp",
        ]));

        // `pruned`: a second layer with whiteouts.
        let bundle2 = work.join("bundle2");
        check(
            Command::new("umoci")
                .args(["unpack", "--image", &img("latest")])
                .arg(&bundle2),
        );
        let root2 = bundle2.join("rootfs");
        std::fs::remove_file(root2.join("etc/motd")).unwrap();
        std::fs::remove_dir_all(root2.join("srv/data")).unwrap();
        std::fs::create_dir(root2.join("srv/data")).unwrap();
        std::fs::write(root2.join("srv/data/c"), "c\n").unwrap();
        check(
            Command::new("umoci")
                .args(["repack", "--image", &img("pruned")])
                .arg(&bundle2),
        );
        // `devices`: what an attacker ships, the host's first disk (8:0) and /dev/mem (1:1).
        let bundle3 = work.join("bundle3");
        check(
            Command::new("umoci")
                .args(["unpack", "--image", &img("latest")])
                .arg(&bundle3),
        );
        let root3 = bundle3.join("rootfs");
        for (name, kind, major, minor) in [("hostdisk", "b", "8", "0"), ("mem", "c", "1", "1")] {
            check(
                Command::new("mknod")
                    .arg(root3.join(name))
                    .args([kind, major, minor]),
            );
        }
        check(
            Command::new("umoci")
                .args(["repack", "--image", &img("devices")])
                .arg(&bundle3),
        );
        check(Command::new("umoci").args(["gc", "--layout"]).arg(&layout));
        add_multiarch_index(&layout);
        let _ = std::fs::remove_dir_all(&bundle);
        let _ = std::fs::remove_dir_all(&bundle2);
        let _ = std::fs::remove_dir_all(&bundle3);
        layout
    })
}

/// `sha256:<hex>` of `bytes`, written as a blob of `layout`.
fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// The descriptor the layout's index.json has for `tag`.
pub fn layout_descriptor(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))
        .clone()
}

/// A blob of `layout` as JSON.
pub fn layout_json(layout: &Path, digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The architecture that is not this machine's in the `multi` index.
pub const OTHER_ARCH: &str = "s390x";

/// Tags `multi`: an index with `latest` (this machine's platform) and a copy of it whose
/// config says `s390x` (same layers; it is never run).
fn add_multiarch_index(layout: &Path) {
    let host = layout_descriptor(layout, "latest");
    let manifest = layout_json(layout, host["digest"].as_str().unwrap());
    let mut config = layout_json(layout, manifest["config"]["digest"].as_str().unwrap());
    let host_arch = config["architecture"].as_str().unwrap().to_string();
    config["architecture"] = OTHER_ARCH.into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let mut other = manifest.clone();
    other["config"]["digest"] = put_blob(layout, &config_bytes).into();
    other["config"]["size"] = config_bytes.len().into();
    let other_bytes = serde_json::to_vec(&other).unwrap();
    let other_digest = put_blob(layout, &other_bytes);
    let entry = |digest: &str, size: u64, arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    // The other platform first, so picking the first entry would be wrong.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(&other_digest, other_bytes.len() as u64, OTHER_ARCH),
            entry(host["digest"].as_str().unwrap(), host["size"].as_u64().unwrap(), &host_arch),
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = put_blob(layout, &index_bytes);
    let path = layout.join("index.json");
    let mut top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest,
            "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    std::fs::write(&path, serde_json::to_vec(&top).unwrap()).unwrap();
}

/// A running `docker-registry`, killed when dropped (or when the test binary dies).
pub struct Registry {
    host: String,
    dir: PathBuf,
    credentials: Option<(String, String)>,
    ca_pem: Option<String>,
    child: Option<Guarded>,
}

impl Registry {
    /// An anonymous registry over plain HTTP.
    pub fn start() -> Self {
        Self::launch(None, false)
    }

    /// A registry over plain HTTP that requires `user` / `password` (htpasswd, bcrypt) for
    /// everything.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_string(), password.to_string())), false)
    }

    /// An anonymous registry over HTTPS, its certificate issued for 127.0.0.1 by a fresh CA
    /// ([`Registry::ca_pem`]).
    pub fn start_tls() -> Self {
        Self::launch(None, true)
    }

    fn launch(credentials: Option<(String, String)>, tls: bool) -> Self {
        let dir = test_dir("registry");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {host}\n  secret: univrs-test-secret\n",
            dir.join("storage").display()
        );
        let mut ca_pem = None;
        if tls {
            let (ca, cert, key) = tls_files();
            std::fs::write(dir.join("registry.crt"), cert).unwrap();
            std::fs::write(dir.join("registry.key"), key).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("registry.crt").display(),
                dir.join("registry.key").display()
            ));
            ca_pem = Some(ca);
        }
        if let Some((user, password)) = &credentials {
            // Cost 4: the registry checks the hash on every request.
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: univrs-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("registry.log");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ));
        let mut child = Guarded::spawn(cmd).expect(
            "starting docker-registry (apt-get install -y docker-registry, see scripts/install-deps)",
        );
        let started = Instant::now();
        while TcpStream::connect(&host).is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "docker-registry exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "docker-registry did not listen on {host}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            host,
            dir,
            credentials,
            ca_pem,
            child: Some(child),
        }
    }

    /// `127.0.0.1:PORT`, as it appears in references.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The user and password, for a registry that requires them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The CA certificate (PEM) of an HTTPS registry.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Pushes `tag` of the OCI layout `layout` as `name` (`repo/path:tag`) with skopeo;
    /// returns the reference (`127.0.0.1:PORT/name`). An index is pushed with all its images.
    pub fn push_layout(&self, layout: &Path, tag: &str, name: &str) -> String {
        let reference = format!("{}/{name}", self.host);
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
        ]);
        if let Some((user, password)) = &self.credentials {
            cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{reference}"));
        check(&mut cmd);
        reference
    }

    /// Pushes the busybox image (`latest` of [`busybox_layout`]) as `name`; returns the
    /// reference.
    pub fn push_busybox(&self, name: &str) -> String {
        self.push_layout(busybox_layout(), "latest", name)
    }

    /// Where the registry keeps the content of blob `digest` (`sha256:…`), e.g. to corrupt it.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The registry first, then its files.
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA (PEM) and a certificate and key (PEM) it issued for 127.0.0.1 and localhost.
fn tls_files() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "univrs test registry CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse().unwrap()),
        SanType::DnsName("localhost".to_string().try_into().unwrap()),
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

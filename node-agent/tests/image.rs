//! OCI images end to end: a real registry (Debian's `docker-registry`), real layers built by
//! `umoci` and pushed by `skopeo`, real overlayfs mounts and a real container. Needs root.
//!
//! Every test owns a store directory `/tmp/univrs-img-<pid>-<n>` whose root filesystems are
//! unmounted and removed when the test ends (also when it fails); leftovers of killed test
//! binaries are removed by the next run.
//!
//! The benchmark: `cargo test -p univrs-node-agent --test image -- --ignored --nocapture
//! bench_pull_and_prepare`.

use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use univrs_node_agent::image::{
    Access, Credentials, Image, ImageError, ImageStore, Platform, PullOptions, RootfsMode,
    load_docker_config, merge_env, process_args,
};
use univrs_node_agent::runtime::{ContainerConfig, RuntimeClient};
use univrs_tests::registry::{OTHER_ARCH, Registry, busybox_layout, layout_descriptor};
use univrs_tests::univrs_bin;

const STORE_PREFIX: &str = "univrs-img-";

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Unmounts and removes the stores of test binaries that were killed.
fn sweep_stale() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        for e in std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(STORE_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() || alive(pid) {
                continue;
            }
            remove_store_dir(&e.path());
        }
    });
}

/// Unmounts every root filesystem of the store in `dir`, then removes it.
fn remove_store_dir(dir: &Path) {
    if let Ok(store) = ImageStore::open(dir) {
        for e in std::fs::read_dir(store.root().join("rootfs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Err(err) = store.remove_rootfs(&id) {
                eprintln!("cleanup: {err}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A store in a directory of its own, cleaned up when dropped.
struct TestStore {
    dir: PathBuf,
    store: ImageStore,
}

impl TestStore {
    fn new() -> Self {
        Self::with_mode(RootfsMode::Auto)
    }

    fn with_mode(mode: RootfsMode) -> Self {
        Self::shifted(mode, 0)
    }

    /// A store whose files belong to host ids from `shift` (a node's user namespace).
    fn shifted(mode: RootfsMode, shift: u32) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        assert!(
            nix::unistd::geteuid().is_root(),
            "the image tests mount overlayfs and need root"
        );
        sweep_stale();
        let dir = std::env::temp_dir().join(format!(
            "{STORE_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let store = ImageStore::open_shifted(&dir, mode, shift).unwrap();
        Self { dir, store }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        remove_store_dir(&self.dir);
    }
}

impl std::ops::Deref for TestStore {
    type Target = ImageStore;
    fn deref(&self) -> &ImageStore {
        &self.store
    }
}

fn insecure(registry: &Registry) -> PullOptions {
    PullOptions {
        insecure_registries: vec![registry.host().to_string()],
        ..Default::default()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Every stored blob hashes to its name.
fn assert_blobs_verified(store: &ImageStore) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(store.root().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(
            sha256_hex(&std::fs::read(e.path()).unwrap()),
            name,
            "blob {name}"
        );
        n += 1;
    }
    n
}

fn tmp_entries(store: &ImageStore) -> Vec<String> {
    std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(p.as_ref()))
}

fn read(root: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(root.join(rel)).ok()
}

#[tokio::test]
async fn pull_stores_verified_blobs_and_a_second_pull_fetches_nothing() {
    let registry = Registry::start();
    let reference = registry.push_busybox("demo/busybox:latest");
    let store = TestStore::new();
    let opts = insecure(&registry);

    let image = store.pull(&reference, &opts).await.unwrap();
    assert_eq!(image.reference, reference);
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(image.config.exposed_ports, vec!["8080/tcp"]);
    assert!(
        image
            .config
            .env
            .contains(&("GREETING".into(), "hello".into()))
    );
    assert_eq!(image.config.architecture, Platform::host().architecture);
    // Manifest, config and layer, each under its own digest.
    assert_eq!(assert_blobs_verified(&store), 3);
    let first = store.stats();
    assert_eq!((first.blobs_fetched, first.layers_unpacked), (3, 1));
    let layer = store.layer_path(&image.layers[0]);
    assert!(layer.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    let before = std::fs::metadata(&layer).unwrap();

    let again = store.pull(&reference, &opts).await.unwrap();
    assert_eq!(again, image);
    assert_eq!(
        store.stats(),
        first,
        "the second pull fetched or unpacked something"
    );
    let after = std::fs::metadata(&layer).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    assert!(tmp_entries(&store).is_empty());

    // Offline: the registry is gone, the reference still resolves (also from a fresh open).
    drop(registry);
    assert_eq!(store.resolve(&reference).unwrap(), image);
    let reopened = ImageStore::open(store.root()).unwrap();
    assert_eq!(reopened.resolve(&reference).unwrap(), image);
    assert_eq!(
        reopened.list().unwrap(),
        vec![(reference.clone(), image.digest.clone())]
    );
    assert!(matches!(
        store.pull(&reference, &opts).await,
        Err(ImageError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_agree() {
    let registry = Registry::start();
    let reference = registry.push_busybox("demo/busybox:concurrent");
    let store = TestStore::new();
    // A second store object on the same directory stands for a second process: it shares no
    // in-process lock with the first.
    let other = ImageStore::open(store.root()).unwrap();
    let opts = insecure(&registry);
    let (a, b, c, d) = tokio::join!(
        store.pull(&reference, &opts),
        store.pull(&reference, &opts),
        other.pull(&reference, &opts),
        other.pull(&reference, &opts),
    );
    let a = a.unwrap();
    for x in [b, c, d] {
        assert_eq!(x.unwrap(), a);
    }
    // Pulls through one store object (one process) unpack a layer once; the two objects may
    // race, and then the loser's unpack is discarded.
    let (x, y) = (store.stats().layers_unpacked, other.stats().layers_unpacked);
    assert!(x <= 1 && y <= 1 && x + y >= 1, "{x} {y}");
    assert_eq!(assert_blobs_verified(&store), 3);
    assert!(tmp_entries(&store).is_empty(), "{:?}", tmp_entries(&store));
    let layers: Vec<_> = std::fs::read_dir(store.root().join("layers/sha256"))
        .unwrap()
        .collect();
    assert_eq!(layers.len(), 1);
    assert!(store.layer_path(&a.layers[0]).join("bin/busybox").is_file());
}

#[tokio::test]
async fn a_corrupted_blob_in_the_registry_is_refused() {
    let registry = Registry::start();
    let reference = registry.push_busybox("demo/busybox:corrupt");
    let manifest = univrs_tests::registry::layout_json(
        busybox_layout(),
        layout_descriptor(busybox_layout(), "latest")["digest"]
            .as_str()
            .unwrap(),
    );
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // Same size, one byte changed: only the digest can tell.
    let data = registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let store = TestStore::new();
    let err = store
        .pull(&reference, &insecure(&registry))
        .await
        .unwrap_err();
    match &err {
        ImageError::DigestMismatch {
            context,
            expected,
            actual,
        } => {
            assert_eq!(expected, &layer);
            assert_eq!(actual, &format!("sha256:{}", sha256_hex(&bytes)));
            assert!(
                context.contains("layer 0") && context.contains(&reference),
                "{context}"
            );
        }
        other => panic!("expected a digest error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&layer), "{message}");
    assert!(
        !store.blob_path(&digest(&layer)).exists(),
        "the bad blob is not stored"
    );
    assert!(tmp_entries(&store).is_empty(), "no partial file is left");
    assert!(store.list().unwrap().is_empty(), "no reference is recorded");
    assert!(matches!(
        store.resolve(&reference),
        Err(ImageError::NotPresent { .. })
    ));
}

fn digest(s: &str) -> univrs_node_agent::image::Digest {
    univrs_node_agent::image::Digest::parse(s, "test").unwrap()
}

#[tokio::test]
async fn import_from_an_oci_layout_verifies_and_records_it() {
    let store = TestStore::new();
    let layout = busybox_layout();
    let image = store.import_oci_layout(layout, "latest").unwrap();
    let reference = format!("oci:{}:latest", layout.display());
    assert_eq!(image.reference, reference);
    assert_eq!(
        image.digest.to_string(),
        layout_descriptor(layout, "latest")["digest"]
            .as_str()
            .unwrap()
    );
    assert_blobs_verified(&store);
    assert_eq!(store.resolve(&reference).unwrap(), image);
    // `pull` takes the same reference and finds everything present.
    let stats = store.stats();
    assert_eq!(
        store
            .pull(&reference, &PullOptions::default())
            .await
            .unwrap(),
        image
    );
    assert_eq!(store.stats(), stats);
    // Imported again (every container start does): the record, unchanged, is not rewritten.
    let record = || {
        let entries: Vec<_> = std::fs::read_dir(store.root().join("refs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let m = std::fs::metadata(&entries[0]).unwrap();
        (
            std::os::unix::fs::MetadataExt::ino(&m),
            m.modified().unwrap(),
        )
    };
    let first = record();
    assert_eq!(store.import_oci_layout(layout, "latest").unwrap(), image);
    assert_eq!(record(), first, "the unchanged record was written again");

    let err = store
        .import_oci_layout(layout, "nope")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no image tagged \"nope\"") && err.contains("latest"),
        "{err}"
    );

    // A layout whose layer blob was altered is refused.
    let copy = store.root().join("layout-copy");
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(layout)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    let blob = copy.join("blobs/sha256").join(image.layers[0].hex());
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let fresh = TestStore::new();
    let err = fresh.import_oci_layout(&copy, "latest").unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!fresh.has_blob(&image.layers[0]));
}

#[tokio::test]
async fn an_index_resolves_to_this_machines_image() {
    let registry = Registry::start();
    let reference = registry.push_layout(busybox_layout(), "multi", "demo/multi:1");
    let store = TestStore::new();
    let image = store.pull(&reference, &insecure(&registry)).await.unwrap();
    let host = layout_descriptor(busybox_layout(), "latest");
    assert_eq!(image.digest.to_string(), host["digest"].as_str().unwrap());
    assert_eq!(image.config.architecture, Platform::host().architecture);

    // Asking for the other platform gets the other image; one that is not there says which are.
    let other = PullOptions {
        platform: Some(Platform {
            os: "linux".into(),
            architecture: OTHER_ARCH.into(),
            variant: None,
        }),
        ..insecure(&registry)
    };
    let s390x = store.pull(&reference, &other).await.unwrap();
    assert_eq!(s390x.config.architecture, OTHER_ARCH);
    assert_ne!(s390x.digest, image.digest);
    let none = PullOptions {
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "riscv64".into(),
            variant: None,
        }),
        ..insecure(&registry)
    };
    let err = store.pull(&reference, &none).await.unwrap_err().to_string();
    assert!(
        err.contains("linux/riscv64") && err.contains("linux/s390x"),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_credentials_give_a_clear_error() {
    let registry = Registry::start_with_auth("alice", "s3cret");
    let reference = registry.push_busybox("private/busybox:latest");
    let store = TestStore::new();

    let anonymous = store
        .pull(&reference, &insecure(&registry))
        .await
        .unwrap_err();
    let wrong = PullOptions {
        credentials: Some(Credentials::new("alice", "wrong")),
        ..insecure(&registry)
    };
    let wrong = store.pull(&reference, &wrong).await.unwrap_err();
    for err in [&anonymous, &wrong] {
        assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(registry.host()) && text.contains("credentials"),
            "{text}"
        );
        assert!(!text.contains("wrong"), "no password in errors: {text}");
    }

    let right = PullOptions {
        credentials: Some(Credentials::new("alice", "s3cret")),
        ..insecure(&registry)
    };
    let image = store.pull(&reference, &right).await.unwrap();

    // The same login from a docker config.json.
    let config_file = store.root().join("config.json");
    let auth = base64_encode("alice:s3cret");
    std::fs::write(
        &config_file,
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let fresh = TestStore::new();
    let from_file = PullOptions {
        docker_config: Some(load_docker_config(&config_file).unwrap()),
        ..insecure(&registry)
    };
    assert_eq!(
        fresh.pull(&reference, &from_file).await.unwrap().digest,
        image.digest
    );
}

/// An image pulled with one Workload's login is kept from Workloads without it: they must
/// ask the registry themselves (issue #14: a tenant's private image reused through
/// IfNotPresent by a tenant that could not pull it).
#[tokio::test]
async fn an_image_pulled_with_a_workloads_login_is_reused_only_with_that_login() {
    let registry = Registry::start_with_auth("alice", "s3cret");
    let reference = registry.push_busybox("private/busybox:v1");
    let store = TestStore::new();
    let host = registry.host();
    let key = |pass: &str| {
        let opts = PullOptions {
            credentials: Some(Credentials::new("alice", pass)),
            ..insecure(&registry)
        };
        store.access_for(&reference, &opts)
    };
    let own = PullOptions {
        credentials: Some(Credentials::new("alice", "s3cret")),
        ..insecure(&registry)
    };
    let image = store.pull(&reference, &own).await.unwrap();

    assert_eq!(
        store
            .resolve_for(&reference, &key("s3cret"))
            .unwrap()
            .digest,
        image.digest
    );
    for other in [Access::Shared, key("guess")] {
        let err = store.resolve_for(&reference, &other).unwrap_err();
        assert!(
            matches!(err, ImageError::NotPresent { .. }),
            "{other:?}: {err:?}"
        );
        assert!(
            err.to_string()
                .contains("credentials this Workload does not hold"),
            "{err}"
        );
    }
    // The node itself still sees what it stores (gc, listing).
    assert_eq!(store.resolve(&reference).unwrap().digest, image.digest);

    // The salt stays with the store (0600), so keys survive a restart and stay comparable.
    let salt_file = store.root().join("credential-salt");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&salt_file).unwrap().permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    let reopened = ImageStore::open(store.root()).unwrap();
    assert_eq!(
        reopened
            .resolve_for(&reference, &key("s3cret"))
            .unwrap()
            .digest,
        image.digest
    );
    assert!(
        !std::fs::read_to_string(
            store
                .root()
                .join("refs")
                .read_dir()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
        )
        .unwrap()
        .contains("s3cret")
    );

    // Once anyone on the node pulls it with the owner's login, it is everyone's.
    let config_file = store.root().join("config.json");
    std::fs::write(
        &config_file,
        format!(r#"{{"auths": {{"{host}": {{"username": "alice", "password": "s3cret"}}}}}}"#),
    )
    .unwrap();
    let node_login = PullOptions {
        docker_config: Some(load_docker_config(&config_file).unwrap()),
        ..insecure(&registry)
    };
    store.pull(&reference, &node_login).await.unwrap();
    assert_eq!(
        store
            .resolve_for(&reference, &Access::Shared)
            .unwrap()
            .digest,
        image.digest
    );
}

/// An image larger than the owner's cap is refused from its manifest, before any layer is
/// fetched; under the cap it pulls.
#[tokio::test]
async fn an_image_over_the_owners_size_cap_is_refused_before_its_layers_are_fetched() {
    let registry = Registry::start();
    let reference = registry.push_busybox("demo/busybox:big");
    let store = TestStore::new();
    let capped = PullOptions {
        max_image_bytes: Some(100 << 10),
        ..insecure(&registry)
    };
    let err = store.pull(&reference, &capped).await.unwrap_err();
    let ImageError::TooLarge { size, limit, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(*size > *limit && *limit == 100 << 10, "{err}");
    assert!(err.to_string().contains("image size cap"), "{err}");
    assert_eq!(store.stats().blobs_fetched, 0, "nothing was fetched");
    assert!(store.list().unwrap().is_empty());

    let roomy = PullOptions {
        max_image_bytes: Some(64 << 20),
        ..insecure(&registry)
    };
    store.pull(&reference, &roomy).await.unwrap();
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn https_is_the_default_and_a_private_ca_can_be_trusted() {
    let registry = Registry::start_tls();
    let reference = registry.push_busybox("demo/busybox:tls");
    let store = TestStore::new();

    let untrusted = store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap_err();
    // On loopback, plain HTTP is tried too; the error says why neither worked.
    let text = untrusted.to_string();
    assert!(
        matches!(untrusted, ImageError::Unreachable { .. }),
        "{untrusted:?}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(text.contains("over plain HTTP"), "{text}");

    let trusted = PullOptions {
        extra_root_certificates: vec![registry.ca_pem().unwrap().as_bytes().to_vec()],
        ..Default::default()
    };
    let image = store.pull(&reference, &trusted).await.unwrap();
    assert_eq!(image.layers.len(), 1);
}

#[tokio::test]
async fn a_registry_on_loopback_is_reached_over_plain_http_without_a_flag() {
    let registry = Registry::start();
    let reference = registry.push_busybox("demo/busybox:loopback");
    let store = TestStore::new();
    // No --insecure-registry: 127.0.0.1 does not speak HTTPS, so plain HTTP is used.
    let image = store
        .pull(&reference, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 1);
    // The same registry named `localhost` (a new reference, fetched again).
    let port = registry.host().rsplit_once(':').unwrap().1;
    let by_name = reference.replace(registry.host(), &format!("localhost:{port}"));
    let other = TestStore::new();
    let image = other.pull(&by_name, &PullOptions::default()).await.unwrap();
    assert_eq!(image.reference, by_name);
    // A loopback port nothing listens on: both attempts are reported.
    let closed = format!(
        "127.0.0.1:{}/demo/busybox:loopback",
        univrs_tests::free_port()
    );
    let err = other
        .pull(&closed, &PullOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("over HTTPS") && err.contains("over plain HTTP"),
        "{err}"
    );
}

/// Root filesystem tests run with overlayfs and with copies.
const MODES: [RootfsMode; 2] = [RootfsMode::Overlay, RootfsMode::Copy];

#[test]
fn rootfs_of_two_containers_are_isolated() {
    for mode in MODES {
        let store = TestStore::with_mode(mode);
        let image = store.import_oci_layout(busybox_layout(), "latest").unwrap();
        let a = store.prepare_rootfs(&image, "a").unwrap();
        let b = store.prepare_rootfs(&image, "b").unwrap();
        assert_ne!(a, b);
        assert_eq!(mounted(&a), mode == RootfsMode::Overlay, "{mode:?}");
        assert_eq!(read(&a, "etc/motd").as_deref(), Some("welcome to univrs\n"));

        std::fs::write(a.join("etc/motd"), "changed in a\n").unwrap();
        std::fs::write(a.join("tmp/only-a"), "x").unwrap();
        std::fs::remove_file(a.join("srv/data/a")).unwrap();
        assert_eq!(read(&b, "etc/motd").as_deref(), Some("welcome to univrs\n"));
        assert!(!b.join("tmp/only-a").exists());
        assert!(b.join("srv/data/a").exists());
        let layer = store.layer_path(&image.layers[0]);
        assert_eq!(
            read(&layer, "etc/motd").as_deref(),
            Some("welcome to univrs\n")
        );
        assert!(layer.join("srv/data/a").exists());
        assert!(!layer.join("tmp/only-a").exists());

        // Preparing again returns the same root with the container's writes.
        assert_eq!(store.prepare_rootfs(&image, "a").unwrap(), a);
        assert_eq!(read(&a, "etc/motd").as_deref(), Some("changed in a\n"));
        // So does a restarted agent (a new store object; the mount is still there).
        let restarted = ImageStore::open_with(store.root(), mode).unwrap();
        assert_eq!(restarted.prepare_rootfs(&image, "a").unwrap(), a);
        assert_eq!(read(&a, "etc/motd").as_deref(), Some("changed in a\n"));
        // The same id for another image is refused.
        let pruned = store.import_oci_layout(busybox_layout(), "pruned").unwrap();
        let err = store.prepare_rootfs(&pruned, "a").unwrap_err().to_string();
        assert!(err.contains("already prepared for image"), "{err}");
        assert!(matches!(
            store.prepare_rootfs(&image, "../escape"),
            Err(ImageError::Rootfs { .. })
        ));
    }
}

#[test]
fn whiteouts_from_umoci_hide_deleted_files() {
    for mode in MODES {
        let store = TestStore::with_mode(mode);
        let image = store.import_oci_layout(busybox_layout(), "pruned").unwrap();
        assert_eq!(image.layers.len(), 2);
        let root = store.prepare_rootfs(&image, "pruned").unwrap();
        assert!(!root.join("etc/motd").exists(), "{mode:?}");
        assert!(!root.join("srv/data/a").exists());
        assert!(!root.join("srv/data/b").exists());
        assert_eq!(read(&root, "srv/data/c").as_deref(), Some("c\n"));
        assert!(root.join("bin/busybox").is_file());
        // In the upper layer the deletions are overlayfs whiteouts.
        let upper = store.layer_path(&image.layers[1]);
        let wh = std::fs::symlink_metadata(upper.join("etc/motd")).unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    }
}

/// How a hand-made layer is compressed.
#[derive(Clone, Copy, Debug)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// An entry of a hand-made layer; names are written as given (even `../x`).
enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a str),
    Exec(&'a str, &'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A block device with its major and minor numbers.
    Block(&'a str, u32, u32),
    /// A character device.
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn tar_of(items: &[Item]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let (name, kind, data, link, mode): (&str, tar::EntryType, &[u8], Option<&str>, u32) =
            match item {
                Item::Dir(n) => (n, tar::EntryType::Directory, b"", None, 0o755),
                Item::File(n, d) => (n, tar::EntryType::Regular, d.as_bytes(), None, 0o644),
                Item::Exec(n, d) => (n, tar::EntryType::Regular, d.as_bytes(), None, 0o4755),
                Item::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", Some(t), 0o777),
                Item::Hardlink(n, t) => (n, tar::EntryType::Link, b"", Some(t), 0o644),
                Item::Block(n, ..) => (n, tar::EntryType::Block, b"", None, 0o666),
                Item::Char(n, ..) => (n, tar::EntryType::Char, b"", None, 0o666),
                Item::Fifo(n) => (n, tar::EntryType::Fifo, b"", None, 0o644),
            };
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(t) = link {
            h.set_link_name_literal(t).unwrap();
        }
        if let Item::Block(_, major, minor) | Item::Char(_, major, minor) = item {
            h.set_device_major(*major).unwrap();
            h.set_device_minor(*minor).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest)
        }
    }
}

/// Writes an OCI layout at `dir` with one image, tagged `latest`, made of `layers`.
fn write_layout(dir: &Path, layers: &[(Vec<u8>, Compression)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (tar, c) in layers {
        let (d, size) = put(&compress(tar, *c));
        let media = match c {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        descs.push(serde_json::json!({"mediaType": media, "digest": d, "size": size}));
        diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
    }
    let config = serde_json::json!({
        "architecture": Platform::host().architecture, "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs,
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn device_nodes_in_a_layer_are_skipped_and_counted() {
    // The host's first disk (8:0), /dev/mem (1:1) and /dev/kmsg (1:11), as an attacker ships them.
    let layer = tar_of(&[
        Item::Dir("dev"),
        Item::Block("dev/sda", 8, 0),
        Item::Char("dev/mem", 1, 1),
        Item::Char("kmsg", 1, 11),
        Item::Fifo("run-fifo"),
        Item::File("etc-ok", "ok"),
    ]);
    for mode in MODES {
        let store = TestStore::with_mode(mode);
        let layout = store.root().join("devices");
        write_layout(&layout, &[(layer.clone(), Compression::Gzip)]);
        let image = store.import_oci_layout(&layout, "latest").unwrap();
        assert_eq!(store.devices_skipped(&image), 3, "{mode:?}");
        // Resolved again later, the image still says so.
        let again = store.resolve(&image.reference).unwrap();
        assert_eq!(store.devices_skipped(&again), 3);
        let root = store.prepare_rootfs(&image, "dev").unwrap();
        for gone in ["dev/sda", "dev/mem", "kmsg"] {
            assert!(
                std::fs::symlink_metadata(root.join(gone)).is_err(),
                "{gone} was made ({mode:?})"
            );
        }
        use std::os::unix::fs::FileTypeExt;
        let fifo = std::fs::symlink_metadata(root.join("run-fifo")).unwrap();
        assert!(fifo.file_type().is_fifo(), "FIFOs are kept");
        assert_eq!(read(&root, "etc-ok").as_deref(), Some("ok"));
        if mode == RootfsMode::Overlay {
            let opts = mount_options(&root);
            assert!(opts.split(',').any(|o| o == "nodev"), "{opts}");
        }
    }
}

#[test]
fn a_shifted_store_gives_the_images_files_to_the_node_ids() {
    use std::os::unix::fs::MetadataExt;
    let layer = tar_of(&[
        Item::Dir("bin"),
        Item::Exec("bin/tool", "#!/bin/sh\n"),
        Item::Symlink("bin/link", "tool"),
    ]);
    let shift = 3_276_800;
    for mode in MODES {
        let store = TestStore::shifted(mode, shift);
        let layout = store.root().join("shifted");
        write_layout(&layout, &[(layer.clone(), Compression::None)]);
        let image = store.import_oci_layout(&layout, "latest").unwrap();
        let root = store.prepare_rootfs(&image, "s").unwrap();
        // tar_of writes every entry as 1000:1001.
        let tool = std::fs::metadata(root.join("bin/tool")).unwrap();
        assert_eq!(
            (tool.uid(), tool.gid()),
            (shift + 1000, shift + 1001),
            "{mode:?}"
        );
        let link = std::fs::symlink_metadata(root.join("bin/link")).unwrap();
        assert_eq!(link.uid(), shift + 1000);
        // The root of the tree is the container root's, so it may create files there.
        let top = std::fs::metadata(&root).unwrap();
        assert_eq!(top.uid(), shift, "{mode:?}");
        // A store reopened unshifted unpacks its own copy; gc drops the other.
        drop(store.remove_rootfs("s"));
        let plain = ImageStore::open_with(store.root(), mode).unwrap();
        let again = plain.import_oci_layout(&layout, "latest").unwrap();
        assert_eq!(
            std::fs::metadata(plain.layer_path(&again.layers[0]).join("bin/tool"))
                .unwrap()
                .uid(),
            1000
        );
        plain.gc(std::slice::from_ref(&again.digest)).unwrap();
        assert!(!store.layer_path(&image.layers[0]).exists());
    }
}

/// The per-mount options of the mount point `path` (from /proc/self/mountinfo).
fn mount_options(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (Path::new(f[4]) == path).then(|| f[5].to_string())
        })
        .unwrap_or_else(|| panic!("{} is not mounted", path.display()))
}

#[test]
fn opaque_directories_hardlinks_and_every_compression() {
    let lower = tar_of(&[
        Item::Dir("dir"),
        Item::File("dir/x", "x"),
        Item::File("dir/y", "y"),
        Item::Exec("bin/tool", "#!/bin/sh\n"),
        Item::Hardlink("bin/tool-link", "bin/tool"),
        Item::Symlink("bin/rel", "tool"),
        Item::Dir("keep"),
        Item::File("keep/k", "k"),
    ]);
    let upper = tar_of(&[
        Item::Dir("dir"),
        Item::File("dir/.wh..wh..opq", ""),
        Item::File("dir/z", "z"),
        Item::File(".wh.keep", ""),
    ]);
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        for mode in MODES {
            let store = TestStore::with_mode(mode);
            let layout = store.root().join("crafted");
            write_layout(
                &layout,
                &[(lower.clone(), compression), (upper.clone(), compression)],
            );
            let image = store.import_oci_layout(&layout, "latest").unwrap();
            let root = store.prepare_rootfs(&image, "c").unwrap();
            let mut names: Vec<String> = std::fs::read_dir(root.join("dir"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, vec!["z"], "{compression:?} {mode:?}");
            assert!(!root.join("keep").exists());
            use std::os::unix::fs::MetadataExt;
            let tool = std::fs::metadata(root.join("bin/tool")).unwrap();
            let link = std::fs::metadata(root.join("bin/tool-link")).unwrap();
            assert_eq!(tool.ino(), link.ino(), "hardlink kept");
            assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid kept");
            assert_eq!((tool.uid(), tool.gid()), (1000, 1001), "ownership kept");
            assert_eq!(tool.mtime(), 1_700_000_000);
            assert_eq!(
                std::fs::read_link(root.join("bin/rel")).unwrap(),
                PathBuf::from("tool")
            );
        }
    }
}

#[test]
fn layers_that_would_write_outside_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", tar_of(&[Item::File("../escaped", "x")])),
        (
            "deep dot-dot",
            tar_of(&[Item::File("a/../../escaped", "x")]),
        ),
        (
            "absolute symlink",
            tar_of(&[Item::Symlink("evil", &out), Item::File("evil/pwned", "x")]),
        ),
        (
            "relative symlink past the top",
            tar_of(&[
                Item::Symlink("evil", "../../../../../../../../tmp"),
                Item::File("evil/pwned", "x"),
            ]),
        ),
        (
            "hardlink outside",
            tar_of(&[Item::Hardlink("passwd", "../../../../etc/passwd")]),
        ),
        (
            "hardlink through an escaping symlink",
            tar_of(&[
                Item::Symlink("etc", "/etc"),
                Item::Hardlink("passwd", "etc/passwd"),
            ]),
        ),
    ];
    for (what, tar) in cases {
        let store = TestStore::new();
        let layout = store.root().join("evil");
        write_layout(&layout, &[(tar, Compression::Gzip)]);
        let err = store.import_oci_layout(&layout, "latest").unwrap_err();
        assert!(matches!(err, ImageError::Layer { .. }), "{what}: {err:?}");
        assert!(
            std::fs::read_dir(store.root().join("layers/sha256"))
                .unwrap()
                .next()
                .is_none(),
            "{what}: no layer is kept"
        );
        assert!(
            tmp_entries(&store).is_empty(),
            "{what}: the partial unpack is removed"
        );
        assert!(!outside.path().join("pwned").exists(), "{what}");
        assert!(!Path::new("/tmp/pwned").exists(), "{what}");
        assert!(!std::env::temp_dir().join("escaped").exists(), "{what}");
    }
    // A symlink that stays inside the layer is followed.
    let store = TestStore::new();
    let layout = store.root().join("ok");
    write_layout(
        &layout,
        &[(
            tar_of(&[
                Item::Dir("usr/lib"),
                Item::Symlink("lib", "usr/lib"),
                Item::File("lib/libx.so", "x"),
            ]),
            Compression::Gzip,
        )],
    );
    let image = store.import_oci_layout(&layout, "latest").unwrap();
    let layer = store.layer_path(&image.layers[0]);
    assert_eq!(read(&layer, "usr/lib/libx.so").as_deref(), Some("x"));
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_refused() {
    let store = TestStore::new();
    let layout = store.root().join("bad-diff");
    write_layout(
        &layout,
        &[(tar_of(&[Item::File("a", "a")]), Compression::Gzip)],
    );
    // Swap the config's diff id for another one.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = univrs_tests::registry::layout_json(&layout, md);
    let cd = manifest["config"]["digest"].as_str().unwrap();
    let mut config = univrs_tests::registry::layout_json(&layout, cd);
    config["rootfs"]["diff_ids"][0] = format!("sha256:{}", sha256_hex(b"other")).into();
    // Rewrite config and manifest under their new digests.
    let blobs = layout.join("blobs/sha256");
    let cbytes = serde_json::to_vec(&config).unwrap();
    std::fs::write(blobs.join(sha256_hex(&cbytes)), &cbytes).unwrap();
    let mut manifest = manifest.clone();
    manifest["config"]["digest"] = format!("sha256:{}", sha256_hex(&cbytes)).into();
    manifest["config"]["size"] = cbytes.len().into();
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(blobs.join(sha256_hex(&mbytes)), &mbytes).unwrap();
    let mut index = index.clone();
    index["manifests"][0]["digest"] = format!("sha256:{}", sha256_hex(&mbytes)).into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let err = store.import_oci_layout(&layout, "latest").unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("diff id"), "{err}");
    assert!(tmp_entries(&store).is_empty());
}

#[test]
fn remove_rootfs_leaves_no_mount_and_no_directory() {
    for mode in MODES {
        let store = TestStore::with_mode(mode);
        let image = store.import_oci_layout(busybox_layout(), "latest").unwrap();
        let root = store.prepare_rootfs(&image, "gone").unwrap();
        std::fs::write(root.join("tmp/file"), "x").unwrap();
        let dir = root.parent().unwrap().to_path_buf();
        // Busy: a process has its working directory inside. The unmount is then lazy.
        let mut busy = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(root.join("tmp"))
            .spawn()
            .unwrap();
        store.remove_rootfs("gone").unwrap();
        busy.kill().unwrap();
        busy.wait().unwrap();
        assert!(!mounted(&root), "{mode:?}");
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!info.contains(&dir.display().to_string()), "{info}");
        assert!(!dir.exists());
        store.remove_rootfs("gone").unwrap();
        // The layers stay for the next container.
        assert!(
            store
                .layer_path(&image.layers[0])
                .join("bin/busybox")
                .exists()
        );
    }
}

#[test]
fn gc_removes_what_no_kept_image_uses() {
    let store = TestStore::new();
    let latest = store.import_oci_layout(busybox_layout(), "latest").unwrap();
    let pruned = store.import_oci_layout(busybox_layout(), "pruned").unwrap();
    assert_eq!(latest.layers[0], pruned.layers[0], "the layer is shared");

    // A prepared root filesystem keeps its image even if not asked to.
    store.prepare_rootfs(&pruned, "user").unwrap();
    let report = store.gc(std::slice::from_ref(&latest.digest)).unwrap();
    assert_eq!(report.blobs_removed, 0, "{report:?}");
    assert!(store.resolve(&pruned.reference).is_ok());

    store.remove_rootfs("user").unwrap();
    let report = store.gc(std::slice::from_ref(&latest.digest)).unwrap();
    assert_eq!(report.refs_removed, vec![pruned.reference.clone()]);
    // pruned's manifest, config and top layer go; the shared layer stays.
    assert_eq!(report.blobs_removed, 3, "{report:?}");
    assert_eq!(report.layers_removed, 1, "{report:?}");
    assert!(!store.layer_path(&pruned.layers[1]).exists());
    assert!(store.layer_path(&latest.layers[0]).exists());
    assert!(matches!(
        store.resolve(&pruned.reference),
        Err(ImageError::NotPresent { .. })
    ));
    assert_eq!(store.resolve(&latest.reference).unwrap(), latest);

    let report = store.gc(&[]).unwrap();
    assert_eq!(report.refs_removed, vec![latest.reference.clone()]);
    assert!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .next()
            .is_none()
    );
    assert!(
        std::fs::read_dir(store.root().join("layers/sha256"))
            .unwrap()
            .next()
            .is_none()
    );
}

/// The child side of `a_killed_pull_leaves_nothing_that_looks_valid`: pulls and is killed.
#[tokio::test]
#[ignore = "run by a_killed_pull_leaves_nothing_that_looks_valid"]
async fn child_pull_until_killed() {
    let (Ok(dir), Ok(reference), Ok(host)) = (
        std::env::var("UNIVRS_CHILD_STORE"),
        std::env::var("UNIVRS_CHILD_REF"),
        std::env::var("UNIVRS_CHILD_HOST"),
    ) else {
        return;
    };
    let store = ImageStore::open(&dir).unwrap();
    let opts = PullOptions {
        insecure_registries: vec![host],
        ..Default::default()
    };
    let _ = store.pull(&reference, &opts).await;
    // Killed before this, normally.
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_pull_leaves_nothing_that_looks_valid() {
    // A big layer (random bytes do not compress) so the kill lands mid-download or mid-unpack.
    let store = TestStore::new();
    let layout = store.root().join("big");
    let mut random = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in random.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(random.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "big.bin", &random[..]).unwrap();
    write_layout(&layout, &[(b.into_inner().unwrap(), Compression::Gzip)]);
    let registry = Registry::start();
    let reference = registry.push_layout(&layout, "latest", "demo/big:1");

    let mut killed_with_tmp = 0;
    for _attempt in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_pull_until_killed",
                "--ignored",
                "--nocapture",
            ])
            .env("UNIVRS_CHILD_STORE", store.root())
            .env("UNIVRS_CHILD_REF", &reference)
            .env("UNIVRS_CHILD_HOST", registry.host())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill as soon as the download has started writing.
        let started = Instant::now();
        loop {
            let partial = tmp_entries(&store).iter().any(|n| {
                std::fs::metadata(store.root().join("tmp").join(n))
                    .map(|m| m.len() > 0 || m.is_dir())
                    .unwrap_or(false)
            });
            if partial || started.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if !tmp_entries(&store).is_empty() {
            killed_with_tmp += 1;
        }
        // Whatever is under a final name is complete and verified.
        assert_blobs_verified(&store);
        assert!(store.list().unwrap().is_empty() || store.resolve(&reference).is_ok());
        // The next open removes the dead process's leftovers.
        let reopened = ImageStore::open(store.root()).unwrap();
        assert!(tmp_entries(&reopened).is_empty());
        let _ = reopened.gc(&[]);
    }
    assert!(killed_with_tmp > 0, "no kill landed mid-pull");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let image = rt
        .block_on(store.pull(&reference, &insecure(&registry)))
        .unwrap();
    assert_blobs_verified(&store);
    assert_eq!(
        std::fs::metadata(store.layer_path(&image.layers[0]).join("big.bin"))
            .unwrap()
            .len(),
        48 << 20
    );
}

/// Deletes a container and the cgroup parent of its agent name when dropped.
struct RuntimeGuard {
    client: RuntimeClient,
    _state: tempfile::TempDir,
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        for id in self.client.list().unwrap_or_default() {
            let _ = self.client.delete(&id);
        }
        self.client.remove_cgroup_parent(true);
        // `_state` (the runtime's state) goes after this.
    }
}

#[tokio::test]
async fn a_pulled_image_runs_as_a_container_and_leaves_nothing() {
    let registry = Registry::start();
    let reference = registry.push_busybox("demo/busybox:latest");
    let store = TestStore::new();
    let image: Image = store.pull(&reference, &insecure(&registry)).await.unwrap();
    let rootfs = store.prepare_rootfs(&image, "e2e").unwrap();

    // A Workload with `args` only: the image's (empty) ENTRYPOINT, then the args; its env
    // beside the image's.
    let workload_env = vec![("NAME".to_string(), "univrs".to_string())];
    let args = process_args(
        &image.config,
        &["sh".to_string(), "-c".to_string()],
        &[
            "cat /etc/motd; echo \"$GREETING $(NAME)\"; echo written > /tmp/w; cat /tmp/w"
                .to_string(),
        ],
        &workload_env,
    )
    .unwrap();
    let env = merge_env(&image.config.env, &workload_env);
    let state = tempfile::tempdir().unwrap();
    let agent = format!("img{}", std::process::id());
    let guard = RuntimeGuard {
        client: RuntimeClient::new(univrs_bin(), state.path().join("state"), &agent).unwrap(),
        _state: state,
    };
    let mut config = ContainerConfig::new("e2e", &rootfs, args);
    config.env = env;
    let exit = tokio::task::spawn_blocking(move || {
        guard
            .client
            .start(&config, Duration::from_secs(10))
            .unwrap();
        let exit = guard
            .client
            .wait_exit("e2e", Duration::from_secs(20))
            .unwrap();
        let log = guard.client.logs_tail("e2e", 10).unwrap();
        guard.client.delete("e2e").unwrap();
        (exit, log, guard)
    })
    .await
    .unwrap();
    let (exit, log, guard) = exit;
    assert_eq!(exit.code, 0, "{exit:?} {log:?}");
    assert_eq!(log, vec!["welcome to univrs", "hello univrs", "written"]);
    // The container's write went to its own upper layer, not the image.
    assert!(!store.layer_path(&image.layers[0]).join("tmp/w").exists());
    drop(guard);

    store.remove_rootfs("e2e").unwrap();
    assert!(!mounted(&rootfs));
    assert!(!rootfs.parent().unwrap().exists());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(&store.root().display().to_string()),
        "{info}"
    );
}

/// Pull+unpack (cold and warm) and prepare/remove root filesystems; prints a table.
#[tokio::test]
#[ignore = "benchmark: cargo test -p univrs-node-agent --test image -- --ignored --nocapture bench_pull_and_prepare"]
async fn bench_pull_and_prepare() {
    let registry = Registry::start();
    let reference = registry.push_busybox("bench/busybox:latest");
    let opts = insecure(&registry);
    let mut rows: Vec<(String, Vec<Duration>)> = Vec::new();

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut image = None;
    for _ in 0..10 {
        let store = TestStore::new();
        let t = Instant::now();
        let img = store.pull(&reference, &opts).await.unwrap();
        cold.push(t.elapsed());
        let t = Instant::now();
        store.pull(&reference, &opts).await.unwrap();
        warm.push(t.elapsed());
        image = Some(img);
    }
    let image = image.unwrap();
    rows.push(("pull + unpack busybox, cold store".into(), cold));
    rows.push(("pull busybox again (manifest only)".into(), warm));

    for mode in MODES {
        let store = TestStore::with_mode(mode);
        store.import_oci_layout(busybox_layout(), "latest").unwrap();
        let img = store
            .resolve(&format!("oci:{}:latest", busybox_layout().display()))
            .unwrap();
        let (mut prepare, mut remove) = (Vec::new(), Vec::new());
        for i in 0..20 {
            let id = format!("bench-{i}");
            let t = Instant::now();
            store.prepare_rootfs(&img, &id).unwrap();
            prepare.push(t.elapsed());
            let t = Instant::now();
            store.remove_rootfs(&id).unwrap();
            remove.push(t.elapsed());
        }
        rows.push((format!("prepare_rootfs ({mode:?})"), prepare));
        rows.push((format!("remove_rootfs ({mode:?})"), remove));
    }
    let size: u64 = image
        .layers
        .iter()
        .map(|l| {
            std::fs::metadata(busybox_layout().join("blobs/sha256").join(l.hex()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    println!(
        "\nbusybox image: {} layer(s), {size} bytes compressed",
        image.layers.len()
    );
    println!("| operation | runs | median | min | max |");
    println!("|---|---|---|---|---|");
    for (name, mut times) in rows {
        times.sort();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {name} | {} | {} | {} | {} |",
            times.len(),
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
}

//! The content store: verified blobs, unpacked layers, the reference index, the records of
//! prepared root filesystems, locks and garbage collection. Pulling, importing and making root
//! filesystems build on it (their own modules); it knows none of them.

use super::auth::Access;
use super::config::ImageConfig;
use super::digest::{Digest, HashingWriter};
use super::error::{ImageError, io_err};
use super::manifest::{self, Document, MAX_DOCUMENT_BYTES};
use super::reference::canonical_reference;
use super::unpack::unpack_layer;
use crate::fsutil::remove_any;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// The xattr on an unpacked layer's directory counting the devices it skipped.
const DEVICES_SKIPPED_XATTR: &str = "trusted.univrs.devices-skipped";

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

/// How root filesystems are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// overlayfs when a probe mount works, else copies.
    #[default]
    Auto,
    /// Always overlayfs.
    Overlay,
    /// Always copies (slower, more disk; for file systems overlayfs cannot use).
    Copy,
}

/// The record in `rootfs/<id>/image`: which image a root filesystem was made from (`gc` keeps
/// its layers) and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct RootfsRecord {
    pub(super) image: Digest,
    pub(super) overlay: bool,
}

/// A store of images under one directory (see the module docs for its layout). Cheap to
/// clone; clones share in-process locks and counters.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    rootfs_mode: RootfsMode,
    overlay_works: OnceLock<bool>,
    busy: KeyedLocks,
    blobs_fetched: AtomicU64,
    bytes_fetched: AtomicU64,
    layers_unpacked: AtomicU64,
    id_shift: u32,
    salt: [u8; 32],
}

/// The directory (under the store) of layers unpacked for `id_shift`.
fn layers_subdir(id_shift: u32) -> String {
    if id_shift == 0 {
        "layers/sha256".to_string()
    } else {
        format!("layers/sha256+{id_shift}")
    }
}

/// What the store has done since it was opened (for metrics, and for tests to observe that a
/// second pull fetches and unpacks nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blobs downloaded or copied in.
    pub blobs_fetched: u64,
    /// Bytes of those blobs.
    pub bytes_fetched: u64,
    /// Layers unpacked.
    pub layers_unpacked: u64,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// References dropped (they named images not kept).
    pub refs_removed: Vec<String>,
    /// Blobs removed.
    pub blobs_removed: usize,
    /// Unpacked layers removed.
    pub layers_removed: usize,
    /// Bytes of blobs removed (unpacked layers not counted).
    pub blob_bytes_freed: u64,
}

/// One entry of the reference index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RefRecord {
    reference: String,
    digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<Digest>,
    /// The keys of the Workload credentials that pulled this digest under this reference,
    /// when only such credentials did ([`Access::Private`]); absent when anyone on the node
    /// may run it ([`Access::Shared`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_to: Option<BTreeSet<String>>,
}

/// The file of the salt that keys Workloads' credentials (see [`super::auth::credential_key`]).
const SALT_FILE: &str = "credential-salt";

impl ImageStore {
    /// Opens (creating if needed) a store under `dir`, choosing overlayfs or copies for root
    /// filesystems by probing the first time one is prepared.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, ImageError> {
        Self::open_with(dir, RootfsMode::Auto)
    }

    /// Opens a store with a fixed way of making root filesystems.
    pub fn open_with(dir: impl AsRef<Path>, rootfs_mode: RootfsMode) -> Result<Self, ImageError> {
        Self::open_shifted(dir, rootfs_mode, 0)
    }

    /// Opens a store whose unpacked layers and root filesystems belong to host ids shifted by
    /// `id_shift` (the first host id of the node's user namespace): the image's root is the
    /// container's root, an unprivileged id on the host. Layers unpacked for another shift
    /// are kept apart (and removed by [`Self::gc`]).
    pub fn open_shifted(
        dir: impl AsRef<Path>,
        rootfs_mode: RootfsMode,
        id_shift: u32,
    ) -> Result<Self, ImageError> {
        let dir = dir.as_ref();
        let layers = layers_subdir(id_shift);
        for sub in [
            "blobs/sha256",
            layers.as_str(),
            "refs",
            "rootfs",
            "tmp",
            "empty",
        ] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
        }
        let root = fs::canonicalize(dir).map_err(io_err("resolving", dir))?;
        // overlayfs mount options are split on ',' and ':'.
        if root.to_string_lossy().contains([',', ':', '\\']) {
            return Err(ImageError::io(
                "the image store path must not contain ',', ':' or '\\'",
                &root,
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        let salt = load_or_make_salt(&root.join(SALT_FILE))?;
        let store = Self {
            inner: Arc::new(Inner {
                salt,
                root,
                rootfs_mode,
                overlay_works: OnceLock::new(),
                busy: KeyedLocks::default(),
                blobs_fetched: AtomicU64::new(0),
                bytes_fetched: AtomicU64::new(0),
                layers_unpacked: AtomicU64::new(0),
                id_shift,
            }),
        };
        store.sweep_tmp();
        Ok(store)
    }

    /// The store's directory (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// What the store has done since it was opened.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            blobs_fetched: self.inner.blobs_fetched.load(Ordering::Relaxed),
            bytes_fetched: self.inner.bytes_fetched.load(Ordering::Relaxed),
            layers_unpacked: self.inner.layers_unpacked.load(Ordering::Relaxed),
        }
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner.root.join("blobs/sha256").join(digest.hex())
    }

    /// Where the layer `digest` is unpacked (whether or not it is).
    pub fn layer_path(&self, digest: &Digest) -> PathBuf {
        self.layers_dir().join(digest.hex())
    }

    fn layers_dir(&self) -> PathBuf {
        self.inner.root.join(layers_subdir(self.inner.id_shift))
    }

    /// The host id the image's root (uid and gid 0) is stored as.
    pub fn id_shift(&self) -> u32 {
        self.inner.id_shift
    }

    /// Whether the blob `digest` is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Whether root filesystems are made with overlayfs: as the store was opened to, or, with
    /// [`RootfsMode::Auto`], as `probe` finds on a scratch directory (once per store).
    pub(super) fn overlay_works(&self, probe: impl FnOnce(&Path) -> bool) -> bool {
        match self.inner.rootfs_mode {
            RootfsMode::Overlay => true,
            RootfsMode::Copy => false,
            RootfsMode::Auto => *self
                .inner
                .overlay_works
                .get_or_init(|| probe(&self.tmp_path("overlay-probe"))),
        }
    }

    pub(crate) fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.inner.root.join("rootfs").join(id)
    }

    pub(crate) fn empty_dir(&self) -> PathBuf {
        self.inner.root.join("empty")
    }

    /// A fresh path under `tmp/` named after this process (so that the next `open` after a
    /// kill can tell leftovers from work in progress).
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        // Process-wide: two store objects on one directory must not pick the same name.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.inner
            .root
            .join("tmp")
            .join(format!("{}-{n}-{what}", std::process::id()))
    }

    /// Removes temporary files and directories of processes that are gone.
    fn sweep_tmp(&self) {
        let dir = self.inner.root.join("tmp");
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or("");
            let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
            if !alive {
                let _ = remove_any(&e.path());
            }
        }
    }

    /// Takes the store lock: shared while adding content, exclusive for `gc` (blocks).
    pub(crate) fn lock(&self, exclusive: bool) -> Result<Flock<File>, ImageError> {
        let path = self.inner.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg).map_err(|(_, e)| ImageError::io("locking", &path, e.into()))
    }

    /// Serializes work on one key (a blob or layer digest) within this process; other
    /// processes are kept apart by atomic renames instead.
    pub(crate) fn busy(&self, key: String) -> KeyGuard {
        let locks = &self.inner.busy;
        let mut held = locks.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(&key) {
            held = locks.freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(key.clone());
        KeyGuard {
            store: self.inner.clone(),
            key,
        }
    }

    /// A temporary file that becomes the blob `digest` on [`BlobWriter::commit`], if its
    /// content matches; `size` (from the descriptor) caps what may be written.
    pub(crate) fn blob_writer(
        &self,
        digest: &Digest,
        size: Option<u64>,
        context: &str,
    ) -> Result<BlobWriter, ImageError> {
        let path = self.tmp_path(&format!("blob-{}", &digest.hex()[..12]));
        let file = File::create(&path).map_err(io_err("creating", &path))?;
        Ok(BlobWriter {
            store: self.clone(),
            out: Some(HashingWriter::new(BufWriter::with_capacity(
                256 * 1024,
                file,
            ))),
            path,
            digest: digest.clone(),
            size,
            context: context.to_string(),
        })
    }

    /// Stores `bytes` as the blob `digest` after checking they hash to it.
    pub(crate) fn write_blob(
        &self,
        digest: &Digest,
        bytes: &[u8],
        context: &str,
    ) -> Result<(), ImageError> {
        digest.verify(bytes, context)?;
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut w = self.blob_writer(digest, Some(bytes.len() as u64), context)?;
        w.write(bytes)?;
        w.commit()
    }

    /// Reads a small blob (a manifest or config), checking it against its digest: the store
    /// never hands out content it has not verified.
    pub(crate) fn read_blob(&self, digest: &Digest, context: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotPresent {
                    reference: context.to_string(),
                    reason: format!("blob {digest} is missing"),
                });
            }
            Err(e) => return Err(ImageError::io("opening", &path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &path))?;
        if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
            return Err(ImageError::Manifest {
                context: context.to_string(),
                reason: format!("blob {digest} is larger than {MAX_DOCUMENT_BYTES} bytes"),
            });
        }
        digest.verify(
            &bytes,
            &format!("{context} (stored blob {})", path.display()),
        )?;
        Ok(bytes)
    }

    /// Unpacks every layer of an image that is not unpacked yet (blocking), checking each
    /// against its diff id. Returns how many were unpacked now.
    pub(crate) fn ensure_layers(
        &self,
        layers: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<usize, ImageError> {
        let mut unpacked = 0;
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            if self.ensure_layer(layer, diff_id)? {
                unpacked += 1;
            }
        }
        Ok(unpacked)
    }

    fn ensure_layer(&self, layer: &Digest, diff_id: &Digest) -> Result<bool, ImageError> {
        let dest = self.layer_path(layer);
        if dest.is_dir() {
            return Ok(false);
        }
        let _busy = self.busy(format!("layer:{}", layer.hex()));
        if dest.is_dir() {
            return Ok(false);
        }
        let blob = self.blob_path(layer);
        if !blob.is_file() {
            return Err(ImageError::NotPresent {
                reference: layer.to_string(),
                reason: format!("layer blob {} is missing", blob.display()),
            });
        }
        let tmp = self.tmp_path(&format!("layer-{}", &layer.hex()[..12]));
        fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
        let result = unpack_layer(&blob, &tmp, layer, self.inner.id_shift).and_then(|unpacked| {
            if unpacked.diff_id != *diff_id {
                return Err(ImageError::DigestMismatch {
                    context: format!("uncompressed layer {layer} (its diff id in the config)"),
                    expected: diff_id.to_string(),
                    actual: unpacked.diff_id.to_string(),
                });
            }
            if unpacked.devices_skipped > 0 {
                // Kept with the layer, so an image resolved later still says so.
                xattr::set(
                    &tmp,
                    DEVICES_SKIPPED_XATTR,
                    unpacked.devices_skipped.to_string().as_bytes(),
                )
                .map_err(io_err("recording skipped devices on", &tmp))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            let _ = remove_any(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => {
                self.inner.layers_unpacked.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            // Another process unpacked it first: theirs is as good as ours.
            Err(_) if dest.is_dir() => {
                let _ = remove_any(&tmp);
                Ok(false)
            }
            Err(e) => {
                let _ = remove_any(&tmp);
                Err(ImageError::io("moving the unpacked layer to", &dest, e))
            }
        }
    }

    /// How many block and character devices the layers of `image` named and unpacking
    /// skipped (see [`super::unpack`]).
    pub fn devices_skipped(&self, image: &Image) -> u64 {
        image
            .layers
            .iter()
            .filter_map(|l| xattr::get(self.layer_path(l), DEVICES_SKIPPED_XATTR).ok()?)
            .filter_map(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            .sum()
    }

    /// The secret salt Workloads' credential keys are made with.
    pub(crate) fn credential_salt(&self) -> &[u8] {
        &self.inner.salt
    }

    /// Records that `reference` (canonical) names the manifest `digest`, pulled with `access`:
    /// shared access makes it anyone's; a Workload's credentials are added to those that
    /// pulled the same digest before (a new digest starts over).
    ///
    /// Two pulls of one reference with different credentials at once may keep only one key:
    /// the other Workload then asks the registry again, never the reverse.
    pub(crate) fn write_ref(
        &self,
        reference: &str,
        digest: &Digest,
        index: Option<&Digest>,
        access: &Access,
    ) -> Result<(), ImageError> {
        let path = self.ref_path(reference);
        let before = self.read_ref(&path).ok();
        let private_to = match access {
            Access::Shared => None,
            Access::Private(key) => match before.clone().filter(|r| &r.digest == digest) {
                Some(RefRecord {
                    private_to: None, ..
                }) => None,
                Some(RefRecord {
                    private_to: Some(mut keys),
                    ..
                }) => {
                    keys.insert(key.clone());
                    Some(keys)
                }
                None => Some(BTreeSet::from([key.clone()])),
            },
        };
        let record = RefRecord {
            reference: reference.to_string(),
            digest: digest.clone(),
            index: index.cloned(),
            private_to,
        };
        // Every start of a container imports or resolves its image again: a record that says
        // the same already is not written (and synced) again.
        if before.as_ref() == Some(&record) {
            return Ok(());
        }
        let tmp = self.tmp_path("ref");
        let json = serde_json::to_vec_pretty(&record).expect("a ref record serializes");
        write_synced(&tmp, &json).map_err(io_err("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("writing", &path))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        self.inner.root.join("refs").join(escape(reference))
    }

    fn read_ref(&self, path: &Path) -> Result<RefRecord, ImageError> {
        let bytes = fs::read(path).map_err(io_err("reading", path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Manifest {
            context: format!("reference record {}", path.display()),
            reason: e.to_string(),
        })
    }

    /// The images the store has references for: (reference, manifest digest), sorted.
    pub fn list(&self) -> Result<Vec<(String, Digest)>, ImageError> {
        let dir = self.inner.root.join("refs");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let e = e.map_err(io_err("listing", &dir))?;
            let record = self.read_ref(&e.path())?;
            out.push((record.reference, record.digest));
        }
        out.sort();
        Ok(out)
    }

    /// The image `reference` names, from the store alone (no network): its manifest and
    /// config are read and verified, and layers whose unpacked form is missing are unpacked
    /// from their blobs. For the node itself: whoever pulled it, any stored image resolves
    /// (a Workload's goes through [`Self::resolve_for`]).
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        self.resolve_checked(reference, |_| Ok(()))
    }

    /// [`Self::resolve`] for a Workload that holds `access` for the reference's registry: an
    /// image pulled only with other Workloads' credentials is not present for it (it must
    /// pull, so the registry decides).
    pub fn resolve_for(&self, reference: &str, access: &Access) -> Result<Image, ImageError> {
        self.resolve_checked(reference, |record| match (&record.private_to, access) {
            (None, _) => Ok(()),
            (Some(keys), Access::Private(k)) if keys.contains(k) => Ok(()),
            (Some(_), _) => Err(ImageError::NotPresent {
                reference: record.reference.clone(),
                reason: "it was pulled with credentials this Workload does not hold".into(),
            }),
        })
    }

    fn resolve_checked(
        &self,
        reference: &str,
        check: impl FnOnce(&RefRecord) -> Result<(), ImageError>,
    ) -> Result<Image, ImageError> {
        let canonical = canonical_reference(reference)?;
        let path = self.ref_path(&canonical);
        if !path.is_file() {
            return Err(ImageError::NotPresent {
                reference: canonical,
                reason: "no such reference".into(),
            });
        }
        let _lock = self.lock(false)?;
        let record = self.read_ref(&path)?;
        check(&record)?;
        let image = self.image(&canonical, &record.digest)?;
        self.ensure_layers(&image.layers, &image.diff_ids)?;
        Ok(image)
    }

    /// The image whose manifest is `digest`, described under `reference`, from stored blobs.
    pub(crate) fn image(&self, reference: &str, digest: &Digest) -> Result<Image, ImageError> {
        let context = format!("manifest {digest} of {reference}");
        let bytes = self.read_blob(digest, &context)?;
        let Document::Manifest(m) = manifest::parse_document(&bytes, &context)? else {
            return Err(ImageError::Manifest {
                context,
                reason: "an index where an image manifest was expected".into(),
            });
        };
        let (config_digest, layers) = manifest::check_manifest(&m, &context)?;
        let config_context = format!("config {config_digest} of {reference}");
        let config_bytes = self.read_blob(&config_digest, &config_context)?;
        let (config, diff_ids) =
            manifest::parse_config(&config_bytes, layers.len(), &config_context)?;
        Ok(Image {
            reference: reference.to_string(),
            digest: digest.clone(),
            config_digest,
            layers,
            diff_ids,
            config,
        })
    }

    /// The images whose root filesystems exist (their layers must stay).
    fn images_in_use(&self) -> Result<Vec<Digest>, ImageError> {
        let dir = self.inner.root.join("rootfs");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let e = e.map_err(io_err("listing", &dir))?;
            if let Ok(bytes) = fs::read(e.path().join("image"))
                && let Ok(record) = serde_json::from_slice::<RootfsRecord>(&bytes)
            {
                out.push(record.image);
            }
        }
        Ok(out)
    }

    pub(crate) fn count_fetched(&self, bytes: u64) {
        self.inner.blobs_fetched.fetch_add(1, Ordering::Relaxed);
        self.inner.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Removes everything not needed by the images `keep` (manifest digests) or by a prepared
    /// root filesystem: references to other images, their blobs and their unpacked layers.
    /// Waits for pulls in progress (in any process) and holds them off while it runs.
    pub fn gc(&self, keep: &[Digest]) -> Result<GcReport, ImageError> {
        let _lock = self.lock(true)?;
        let mut roots: BTreeSet<Digest> = keep.iter().cloned().collect();
        roots.extend(self.images_in_use()?);

        let mut report = GcReport::default();
        let mut live: HashSet<String> = HashSet::new();
        let refs_dir = self.inner.root.join("refs");
        for e in fs::read_dir(&refs_dir).map_err(io_err("listing", &refs_dir))? {
            let path = e.map_err(io_err("listing", &refs_dir))?.path();
            let record = self.read_ref(&path)?;
            if roots.contains(&record.digest) {
                if let Some(index) = &record.index {
                    live.insert(index.hex().to_string());
                }
            } else {
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                report.refs_removed.push(record.reference);
            }
        }
        for root in &roots {
            // A kept image whose manifest is gone keeps nothing else.
            let Ok(image) = self.image("(kept image)", root) else {
                continue;
            };
            live.insert(root.hex().to_string());
            live.insert(image.config_digest.hex().to_string());
            live.extend(image.layers.iter().map(|l| l.hex().to_string()));
        }

        let blobs = self.inner.root.join("blobs/sha256");
        for e in fs::read_dir(&blobs).map_err(io_err("listing", &blobs))? {
            let e = e.map_err(io_err("listing", &blobs))?;
            if !live.contains(e.file_name().to_string_lossy().as_ref()) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(io_err("removing", e.path()))?;
                report.blobs_removed += 1;
                report.blob_bytes_freed += size;
            }
        }
        // Layers unpacked for another id shift are of no use to this store any more.
        let all = self.inner.root.join("layers");
        let current = self.layers_dir();
        for e in fs::read_dir(&all).map_err(io_err("listing", &all))? {
            let e = e.map_err(io_err("listing", &all))?;
            if e.path() != current {
                remove_any(&e.path()).map_err(io_err("removing", e.path()))?;
            }
        }
        let layers = current;
        for e in fs::read_dir(&layers).map_err(io_err("listing", &layers))? {
            let e = e.map_err(io_err("listing", &layers))?;
            if !live.contains(e.file_name().to_string_lossy().as_ref()) {
                remove_any(&e.path()).map_err(io_err("removing", e.path()))?;
                report.layers_removed += 1;
            }
        }
        report.refs_removed.sort();
        Ok(report)
    }
}

/// A blob being written: hashed as it is written, and only renamed into place by
/// [`BlobWriter::commit`] when its size and digest are right. Dropped uncommitted, its
/// temporary file is removed.
pub(crate) struct BlobWriter {
    store: ImageStore,
    out: Option<HashingWriter<BufWriter<File>>>,
    path: PathBuf,
    digest: Digest,
    size: Option<u64>,
    context: String,
}

impl BlobWriter {
    /// Appends `bytes`, refusing more than the descriptor's size.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        let out = self.out.as_mut().expect("not committed");
        let total = out.count() + bytes.len() as u64;
        if let Some(size) = self.size
            && total > size
        {
            return Err(ImageError::SizeMismatch {
                context: self.context.clone(),
                expected: size,
                actual: total,
            });
        }
        out.write_all(bytes).map_err(io_err("writing", &self.path))
    }

    /// The digest of what was written so far would be; for reporting a mismatch found by the
    /// transport.
    pub(crate) fn actual_digest(mut self) -> Digest {
        let (digest, _) = self.out.take().expect("not committed").finish();
        digest
    }

    /// Checks size and digest, then moves the file into place (synced first, so a crash never
    /// leaves a blob under its name with other content).
    pub(crate) fn commit(mut self) -> Result<(), ImageError> {
        let out = self.out.take().expect("not committed");
        let count = out.count();
        let (actual, buffered) = out.finish();
        if let Some(size) = self.size
            && count != size
        {
            return Err(ImageError::SizeMismatch {
                context: self.context.clone(),
                expected: size,
                actual: count,
            });
        }
        if actual != self.digest {
            return Err(ImageError::DigestMismatch {
                context: self.context.clone(),
                expected: self.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let file = buffered
            .into_inner()
            .map_err(|e| ImageError::io("writing", &self.path, e.into_error()))?;
        file.sync_all().map_err(io_err("syncing", &self.path))?;
        drop(file);
        let dest = self.store.blob_path(&self.digest);
        fs::rename(&self.path, &dest).map_err(io_err("moving the blob to", &dest))?;
        self.store.count_fetched(count);
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Uncommitted (an error, or a cancelled pull): the partial file goes. (Committed, it
        // was renamed away and this finds nothing.)
        let _ = fs::remove_file(&self.path);
    }
}

/// Keys held by some thread of this process, and a condition to wait for one to be freed.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Holds a key of [`KeyedLocks`] until dropped.
pub(crate) struct KeyGuard {
    store: Arc<Inner>,
    key: String,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let locks = &self.store.busy;
        locks
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        locks.freed.notify_all();
    }
}

/// Writes `bytes` to a new file at `path` and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A reference as a file name: bytes other than `A-Z a-z 0-9 . _ -` percent-encoded.
fn escape(reference: &str) -> String {
    let mut out = String::with_capacity(reference.len() * 2);
    for b in reference.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The store's salt for credential keys: read, or made from the kernel's generator and
/// written (mode 0600, synced) the first time.
fn load_or_make_salt(path: &Path) -> Result<[u8; 32], ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(bytes) = fs::read(path)
        && let Ok(salt) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(salt);
    }
    let mut salt = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(io_err("reading", Path::new("/dev/urandom")))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("writing", &tmp))?;
    f.write_all(&salt)
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("writing", path))?;
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_escape_to_safe_file_names() {
        assert_eq!(
            escape("127.0.0.1:5000/demo/busybox:latest"),
            "127.0.0.1%3A5000%2Fdemo%2Fbusybox%3Alatest"
        );
        assert_eq!(escape("oci:/a/../b:x"), "oci%3A%2Fa%2F..%2Fb%3Ax");
        assert!(!escape("../../etc").contains('/'));
    }
}

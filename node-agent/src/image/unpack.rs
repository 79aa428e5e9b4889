//! Unpacking one layer (tar, gzip-compressed tar or zstd-compressed tar) into a directory of
//! its own, in the form overlayfs reads as a lower layer:
//!
//! - an OCI whiteout `.wh.NAME` becomes a character device 0/0 named `NAME`, and an opaque
//!   marker `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on its directory;
//! - modes (setuid included), numeric ownership, symlinks, hardlinks, FIFOs, modification
//!   times and extended attributes are kept (the agent runs as root);
//! - block and character devices are skipped and counted: an image is code from anyone, and a
//!   device node it ships (say the host's disk, 8:0) would be a door out of the container.
//!   Containers get the standard devices from the runtime instead;
//! - a path with `..`, a hardlink to outside the layer, and a write through a symlink that
//!   leaves the layer (an absolute target, or `..` past the top) are refused: the layer comes
//!   from a registry and must not write anywhere else on the host;
//! - the uncompressed stream is hashed, and must equal the config's diff id.
//!
//! Layers are unpacked one by one into separate directories, so a symlink in a lower layer is
//! not followed by a path in an upper one (as with containerd's and Docker's overlay drivers,
//! image builders never produce such paths).

use super::digest::{Digest, HashingReader};
use super::error::ImageError;
use crate::fsutil::remove_any;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The xattr overlayfs reads to hide a lower directory's contents.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unpacked {
    /// The digest of the uncompressed tar (the layer's diff id).
    pub diff_id: Digest,
    /// Block and character devices the layer named and that were not made.
    pub devices_skipped: u64,
}

/// Unpacks the layer blob at `blob` into the empty directory `dest`, adding `id_shift` to
/// every owner and group (the first host id of the node's user namespace, so the container's
/// root owns what the image's root owns). `digest` names the layer in errors.
pub(crate) fn unpack_layer(
    blob: &Path,
    dest: &Path,
    digest: &Digest,
    id_shift: u32,
) -> Result<Unpacked, ImageError> {
    let file = File::open(blob).map_err(|e| ImageError::io("opening layer blob", blob, e))?;
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let magic = input
        .fill_buf()
        .map_err(|e| ImageError::io("reading layer blob", blob, e))?;
    let decompressed: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ZstdFrames::new(input))
    } else {
        Box::new(input)
    };
    let mut hashing = HashingReader::new(decompressed);
    let mut unpacker = Unpacker {
        root: dest.to_path_buf(),
        digest: digest.to_string(),
        dir_times: Vec::new(),
        devices_skipped: 0,
        id_shift,
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| unpacker.fail("", format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| unpacker.fail("", format!("reading the archive: {e}")))?;
            unpacker.apply(entry)?;
        }
    }
    let (diff_id, _) = hashing
        .finish()
        .map_err(|e| unpacker.fail("", format!("reading the archive: {e}")))?;
    // Directory times last (and deepest first): creating their entries changed them.
    for (path, mtime) in unpacker.dir_times.iter().rev() {
        if let Ok(dir) = File::open(path) {
            let _ = dir.set_modified(*mtime);
        }
    }
    Ok(Unpacked {
        diff_id,
        devices_skipped: unpacker.devices_skipped,
    })
}

struct Unpacker {
    root: PathBuf,
    digest: String,
    dir_times: Vec<(PathBuf, SystemTime)>,
    devices_skipped: u64,
    id_shift: u32,
}

/// What kind of file an existing path is.
#[derive(PartialEq, Eq)]
enum Existing {
    None,
    Dir,
    Whiteout,
    Other,
}

impl Unpacker {
    fn fail(&self, entry: impl AsRef<Path>, reason: impl Into<String>) -> ImageError {
        ImageError::Layer {
            digest: self.digest.clone(),
            entry: entry.as_ref().display().to_string(),
            reason: reason.into(),
        }
    }

    fn io(&self, entry: &Path, what: &str) -> impl FnOnce(io::Error) -> ImageError + '_ {
        let entry = entry.to_path_buf();
        let what = what.to_string();
        move |e| self.fail(entry, format!("{what}: {e}"))
    }

    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw_path = entry
            .path()
            .map_err(|e| self.fail("?", format!("bad path: {e}")))?
            .into_owned();
        let rel = clean(&raw_path).map_err(|r| self.fail(&raw_path, r))?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mut meta = Meta::from_header(&header).map_err(|r| self.fail(&raw_path, r))?;
        meta.uid = meta.uid.checked_add(self.id_shift).ok_or_else(|| {
            self.fail(
                &raw_path,
                format!("uid {} does not fit the id range", meta.uid),
            )
        })?;
        meta.gid = meta.gid.checked_add(self.id_shift).ok_or_else(|| {
            self.fail(
                &raw_path,
                format!("gid {} does not fit the id range", meta.gid),
            )
        })?;
        let xattrs = pax_xattrs(&mut entry).map_err(|r| self.fail(&raw_path, r))?;

        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            // The layer's top directory itself (`./`).
            if kind.is_dir() {
                meta.apply(&self.root, &xattrs)
                    .map_err(self.io(&raw_path, "setting attributes"))?;
                self.dir_times.push((self.root.clone(), meta.mtime));
            }
            return Ok(());
        };
        let parent = self.resolve_dir(rel.parent().unwrap_or(Path::new("")), &raw_path)?;
        let name_bytes = name.as_bytes();

        if name_bytes == OPAQUE_MARKER.as_bytes() {
            return xattr::set(&parent, OPAQUE_XATTR, b"y")
                .map_err(self.io(&raw_path, "marking the directory opaque"));
        }
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) || hidden.is_empty() {
                // AUFS bookkeeping (`.wh..wh.plnk`, …): nothing for overlayfs.
                return Ok(());
            }
            return self.whiteout(&parent.join(OsStr::from_bytes(hidden)), &raw_path);
        }

        let target = parent.join(&name);
        let present = existing(&target);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match present {
                    Existing::Dir => {}
                    Existing::None => {
                        fs::create_dir(&target).map_err(self.io(&raw_path, "creating"))?
                    }
                    Existing::Whiteout | Existing::Other => {
                        remove_any(&target).map_err(self.io(&raw_path, "replacing"))?;
                        fs::create_dir(&target).map_err(self.io(&raw_path, "creating"))?;
                        if present == Existing::Whiteout {
                            // The layer deleted the lower directory and made a new one: hide
                            // the lower contents.
                            xattr::set(&target, OPAQUE_XATTR, b"y")
                                .map_err(self.io(&raw_path, "marking the directory opaque"))?;
                        }
                    }
                }
                meta.apply(&target, &xattrs)
                    .map_err(self.io(&raw_path, "setting attributes"))?;
                self.dir_times.push((target, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.replace(&target, present, &raw_path)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(self.io(&raw_path, "creating"))?;
                io::copy(&mut entry, &mut file).map_err(self.io(&raw_path, "writing"))?;
                meta.apply(&target, &xattrs)
                    .map_err(self.io(&raw_path, "setting attributes"))?;
                file.set_modified(meta.mtime)
                    .map_err(self.io(&raw_path, "setting the time"))?;
            }
            T::Symlink => {
                let link = self.link_name(&entry, &raw_path)?;
                self.replace(&target, present, &raw_path)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(self.io(&raw_path, "creating the symlink"))?;
                std::os::unix::fs::lchown(&target, Some(meta.uid), Some(meta.gid))
                    .map_err(self.io(&raw_path, "setting the owner"))?;
                let t = nix::sys::time::TimeVal::new(meta.mtime_secs(), 0);
                let _ = nix::sys::stat::lutimes(&target, &t, &t);
            }
            T::Link => {
                let link = self.link_name(&entry, &raw_path)?;
                let link_rel = clean(&link).map_err(|r| self.fail(&raw_path, r))?;
                let link_name = link_rel
                    .file_name()
                    .ok_or_else(|| self.fail(&raw_path, "hardlink to the layer's root"))?;
                let source = self
                    .resolve_dir(link_rel.parent().unwrap_or(Path::new("")), &raw_path)?
                    .join(link_name);
                match existing(&source) {
                    Existing::None => {
                        return Err(self.fail(
                            &raw_path,
                            format!("hardlink to {}, which is not in this layer", link.display()),
                        ));
                    }
                    Existing::Dir => {
                        return Err(self.fail(&raw_path, "hardlink to a directory"));
                    }
                    _ => {}
                }
                if source == target {
                    return Ok(());
                }
                self.replace(&target, present, &raw_path)?;
                fs::hard_link(&source, &target).map_err(self.io(&raw_path, "linking"))?;
            }
            T::Char | T::Block => {
                tracing::debug!(layer = %self.digest, entry = %raw_path.display(), "device node skipped");
                self.devices_skipped += 1;
            }
            T::Fifo => {
                use nix::sys::stat::{Mode, SFlag, makedev, mknod};
                self.replace(&target, present, &raw_path)?;
                mknod(
                    &target,
                    SFlag::S_IFIFO,
                    Mode::from_bits_truncate(0o600),
                    makedev(0, 0),
                )
                .map_err(|e| self.fail(&raw_path, format!("mknod: {e}")))?;
                meta.apply(&target, &xattrs)
                    .map_err(self.io(&raw_path, "setting attributes"))?;
            }
            // Metadata entries the tar reader has already applied to the entry after them.
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => {
                return Err(self.fail(&raw_path, format!("unsupported entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// The target of a symlink or hardlink entry.
    fn link_name<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        raw_path: &Path,
    ) -> Result<PathBuf, ImageError> {
        Ok(entry
            .link_name()
            .map_err(|e| self.fail(raw_path, format!("bad link name: {e}")))?
            .ok_or_else(|| self.fail(raw_path, "link without a target"))?
            .into_owned())
    }

    /// A whiteout for `target`: a 0/0 character device, unless this layer itself has
    /// `target` (a layer whiting out and re-creating a name): then a directory is made opaque
    /// and anything else stays as it is.
    fn whiteout(&self, target: &Path, raw_path: &Path) -> Result<(), ImageError> {
        match existing(target) {
            Existing::Dir => xattr::set(target, OPAQUE_XATTR, b"y")
                .map_err(self.io(raw_path, "marking the directory opaque")),
            Existing::Whiteout | Existing::Other => Ok(()),
            Existing::None => {
                use nix::sys::stat::{Mode, SFlag, makedev, mknod};
                mknod(target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| self.fail(raw_path, format!("creating the whiteout: {e}")))
            }
        }
    }

    /// Removes what is at `target` so that a new entry can take its place.
    fn replace(
        &self,
        target: &Path,
        existing: Existing,
        raw_path: &Path,
    ) -> Result<(), ImageError> {
        if existing != Existing::None {
            remove_any(target).map_err(self.io(raw_path, "replacing"))?;
        }
        Ok(())
    }

    /// The real directory for `rel` inside the layer: missing directories are made, symlinks
    /// are followed as long as they stay inside the layer, anything leaving it is refused.
    fn resolve_dir(&self, rel: &Path, raw_path: &Path) -> Result<PathBuf, ImageError> {
        let mut pending: VecDeque<OsString> = rel.iter().map(OsStr::to_os_string).collect();
        let mut stack: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(comp) = pending.pop_front() {
            if comp == ".." {
                if stack.pop().is_none() {
                    return Err(self.fail(raw_path, "a symlink leads out of the layer"));
                }
                continue;
            }
            if comp == "." || comp.is_empty() {
                continue;
            }
            let here = under(&self.root, &stack).join(&comp);
            match fs::symlink_metadata(&here) {
                Ok(m) if m.is_dir() => stack.push(comp),
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(self.fail(raw_path, "too many levels of symlinks"));
                    }
                    let target =
                        fs::read_link(&here).map_err(self.io(raw_path, "reading a symlink"))?;
                    if target.is_absolute() {
                        return Err(self.fail(
                            raw_path,
                            format!(
                                "writes through the symlink {} -> {}, which leaves the layer",
                                here.strip_prefix(&self.root).unwrap_or(&here).display(),
                                target.display()
                            ),
                        ));
                    }
                    for (i, c) in target.iter().enumerate() {
                        pending.insert(i, c.to_os_string());
                    }
                }
                Ok(_) => {
                    return Err(self.fail(
                        raw_path,
                        format!(
                            "{} is not a directory",
                            here.strip_prefix(&self.root).unwrap_or(&here).display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&here).map_err(self.io(raw_path, "creating a parent"))?;
                    stack.push(comp);
                }
                Err(e) => return Err(self.io(raw_path, "inspecting a parent")(e)),
            }
        }
        Ok(under(&self.root, &stack))
    }
}

/// `root` joined with each of `components`.
fn under(root: &Path, components: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(components);
    p
}

/// An entry path as normal components only: leading `/` and `./` are dropped, `..` refused.
fn clean(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err("the path contains `..` (it would leave the layer)".to_string());
            }
            Component::Prefix(_) => return Err("unexpected path prefix".to_string()),
        }
    }
    Ok(out)
}

fn existing(path: &Path) -> Existing {
    match fs::symlink_metadata(path) {
        Err(_) => Existing::None,
        Ok(m) if m.is_dir() => Existing::Dir,
        Ok(m) if is_whiteout(&m) => Existing::Whiteout,
        Ok(_) => Existing::Other,
    }
}

/// Whether `m` is an overlayfs whiteout (a character device 0/0).
pub(crate) fn is_whiteout(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Ownership, mode and time of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: SystemTime,
}

impl Meta {
    fn from_header(h: &tar::Header) -> Result<Self, String> {
        // An empty numeric field reads as 0, as Go's archive/tar (Docker's, containerd's)
        // reads it; anything else that does not parse is refused.
        let num = |r: io::Result<u64>, raw: &[u8], what: &str| match r {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
            Err(e) => Err(format!("bad {what}: {e}")),
        };
        let old = h.as_old();
        let uid = num(h.uid(), &old.uid, "uid")?;
        let gid = num(h.gid(), &old.gid, "gid")?;
        let mode = num(h.mode().map(u64::from), &old.mode, "mode")? as u32;
        let mtime = num(h.mtime(), &old.mtime, "mtime")?;
        Ok(Self {
            uid: u32::try_from(uid).map_err(|_| format!("uid {uid} out of range"))?,
            gid: u32::try_from(gid).map_err(|_| format!("gid {gid} out of range"))?,
            mode: mode & 0o7777,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(mtime),
        })
    }

    fn mtime_secs(&self) -> i64 {
        self.mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    /// Owner, then mode (chown clears setuid bits, so the mode goes second), then xattrs.
    fn apply(&self, path: &Path, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))?;
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode))?;
        for (name, value) in xattrs {
            match xattr::set(path, name, value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
                    tracing::warn!(path = %path.display(), name, "xattr not supported here; skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The extended attributes of an entry (PAX `SCHILY.xattr.*` records). overlayfs's own
/// (`trusted.overlay.*`) are dropped: an image must not steer the mount (redirects, metacopy).
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|e| format!("bad PAX header: {e}"))?;
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            if name.starts_with("trusted.overlay.") {
                continue;
            }
            out.push((name.to_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// A zstd stream of one or more frames (skippable frames are skipped).
struct ZstdFrames<R> {
    input: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::BlockDecodingStrategy;
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if !self.in_frame {
                if self.input.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.reset(&mut self.input) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        io::copy(&mut (&mut self.input).take(length as u64), &mut io::sink())?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            if self.decoder.can_collect() > 0 {
                return self.decoder.read(buf);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
                continue;
            }
            self.decoder
                .decode_blocks(&mut self.input, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

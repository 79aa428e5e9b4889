//! A container's writable root filesystem, `rootfs/<id>/` in the store:
//!
//! - with overlayfs: the image's unpacked layers as `lowerdir`s, `upper/` and `work/` for the
//!   container's writes, mounted on `merged/`;
//! - without it (detected once per store, or chosen): the layers copied into `merged/` one
//!   after another, applying whiteouts and opaque directories as overlayfs would.
//!
//! `rootfs/<id>/image` records the image and the way the root was made, so preparing again
//! (e.g. by an agent that restarted while the mount stayed) returns the same root, and `gc`
//! keeps the layers in use.

use super::error::{ImageError, io_err};
use super::store::{Image, ImageStore, RootfsRecord};
use super::unpack::{OPAQUE_XATTR, is_whiteout};
use crate::fsutil::{remove_any, unescape_mountinfo, write_atomic};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The longest mount option string the kernel takes (one page, with its NUL).
const MAX_MOUNT_OPTIONS: usize = 4095;

impl ImageStore {
    /// The writable root filesystem of container `id`, made from `image` if it does not exist
    /// yet (blocking). Calling it again returns the same directory; after an agent restart the
    /// overlay mount is found and reused, and remounted if it is gone (e.g. after a reboot).
    pub fn prepare_rootfs(&self, image: &Image, id: &str) -> Result<PathBuf, ImageError> {
        let fail = |reason: String| ImageError::Rootfs {
            id: id.to_string(),
            reason,
        };
        crate::ids::validate_id(id).map_err(fail)?;
        let _lock = self.lock(false)?;
        let dir = self.rootfs_dir(id);
        let merged = dir.join("merged");
        let record_path = dir.join("image");

        let record = match fs::read(&record_path) {
            Ok(bytes) => {
                let record: RootfsRecord = serde_json::from_slice(&bytes)
                    .map_err(|e| fail(format!("{}: {e}", record_path.display())))?;
                if record.image != image.digest {
                    return Err(fail(format!(
                        "already prepared for image {}, not {} ({}); remove it first",
                        record.image, image.digest, image.reference
                    )));
                }
                record
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let overlay = self.overlay_works(probe_overlay);
                let overlay =
                    overlay && self.overlay_options(image, &dir).len() <= MAX_MOUNT_OPTIONS;
                let record = RootfsRecord {
                    image: image.digest.clone(),
                    overlay,
                };
                fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
                // Written before anything is mounted or copied, so `gc` keeps the layers.
                let json = serde_json::to_vec(&record).expect("a record serializes");
                write_atomic(&record_path, &json).map_err(io_err("writing", &record_path))?;
                record
            }
            Err(e) => return Err(ImageError::io("reading", &record_path, e)),
        };

        self.ensure_layers(&image.layers, &image.diff_ids)?;
        if record.overlay {
            if is_mounted(&merged)? {
                return Ok(merged);
            }
            for sub in ["upper", "work", "merged"] {
                let p = dir.join(sub);
                fs::create_dir_all(&p).map_err(io_err("creating", &p))?;
            }
            // The top of the merged tree is the upper directory: the container's root owns it.
            self.own(&dir.join("upper"))?;
            mount_overlay(&self.overlay_options(image, &dir), &merged)
                .map_err(|e| fail(format!("mounting overlayfs on {}: {e}", merged.display())))?;
        } else {
            let ready = dir.join("ready");
            if ready.exists() && merged.is_dir() {
                return Ok(merged);
            }
            // A copy interrupted by a kill starts over.
            let tmp = dir.join("merged.tmp");
            remove_any(&tmp).map_err(io_err("removing", &tmp))?;
            remove_any(&merged).map_err(io_err("removing", &merged))?;
            fs::create_dir(&tmp).map_err(io_err("creating", &tmp))?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                .map_err(io_err("setting the mode of", &tmp))?;
            self.own(&tmp)?;
            let mut links = HashMap::new();
            for layer in &image.layers {
                copy_layer(&self.layer_path(layer), &tmp, &mut links)
                    .map_err(|e| fail(format!("copying layer {layer}: {e}")))?;
            }
            fs::rename(&tmp, &merged).map_err(io_err("moving the copy to", &merged))?;
            fs::write(&ready, b"").map_err(io_err("writing", &ready))?;
        }
        Ok(merged)
    }

    /// Gives `dir` to the image's root as the store shifts it (nothing without a shift).
    fn own(&self, dir: &Path) -> Result<(), ImageError> {
        let id = self.id_shift();
        if id == 0 {
            return Ok(());
        }
        std::os::unix::fs::chown(dir, Some(id), Some(id))
            .map_err(io_err("changing the owner of", dir))
    }

    /// Unmounts (lazily, if it is busy) and deletes the root filesystem of container `id`.
    /// Removing one that does not exist is not an error.
    pub fn remove_rootfs(&self, id: &str) -> Result<(), ImageError> {
        let fail = |reason: String| ImageError::Rootfs {
            id: id.to_string(),
            reason,
        };
        crate::ids::validate_id(id).map_err(fail)?;
        let dir = self.rootfs_dir(id);
        let merged = dir.join("merged");
        // Mounts may be stacked; never delete through one that is still there.
        let mut attempts = 0;
        while is_mounted(&merged)? {
            attempts += 1;
            if attempts > 16 {
                return Err(fail(format!("{} stays mounted", merged.display())));
            }
            match umount2(&merged, MntFlags::empty()) {
                Ok(()) => {}
                Err(nix::errno::Errno::EBUSY) => {
                    tracing::warn!(id, "root filesystem busy; detaching it");
                    umount2(&merged, MntFlags::MNT_DETACH)
                        .map_err(|e| fail(format!("unmounting {}: {e}", merged.display())))?;
                }
                Err(e) => return Err(fail(format!("unmounting {}: {e}", merged.display()))),
            }
        }
        remove_any(&dir).map_err(|e| fail(format!("removing {}: {e}", dir.display())))
    }

    /// The overlay mount options for an image's root in `dir`: its layers top first.
    fn overlay_options(&self, image: &Image, dir: &Path) -> String {
        let lower: Vec<PathBuf> = if image.layers.is_empty() {
            vec![self.empty_dir()]
        } else {
            image
                .layers
                .iter()
                .rev()
                .map(|l| self.layer_path(l))
                .collect()
        };
        overlay_options(&lower, dir)
    }
}

/// Whether overlayfs can be mounted with upper and lower directories on the store's file
/// system: a real mount of a throwaway overlay in `dir`.
fn probe_overlay(dir: &Path) -> bool {
    let attempt = || -> io::Result<()> {
        for sub in ["lower", "upper", "work", "merged"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let merged = dir.join("merged");
        mount_overlay(&overlay_options(&[dir.join("lower")], dir), &merged)?;
        umount2(&merged, MntFlags::MNT_DETACH)?;
        Ok(())
    };
    let result = attempt();
    let _ = remove_any(dir);
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "overlayfs unavailable; root filesystems will be copies");
            false
        }
    }
}

/// `lowerdir=<lower, top first>,upperdir=<dir>/upper,workdir=<dir>/work`.
fn overlay_options(lower: &[PathBuf], dir: &Path) -> String {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    )
}

/// Mounts overlayfs with `options` on `merged`, `nodev`: a device node the container makes
/// (or an image smuggles in) opens nothing.
fn mount_overlay(options: &str, merged: &Path) -> nix::Result<()> {
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(options),
    )
}

/// Whether `path` is a mount point in this process's mount namespace.
pub fn is_mounted(path: &Path) -> Result<bool, ImageError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading", "/proc/self/mountinfo"))?;
    Ok(info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| Path::new(&unescape_mountinfo(mp)) == path)
    }))
}

/// Applies one unpacked layer onto `dst` the way overlayfs would show it: whiteouts delete,
/// opaque directories replace, everything else is copied with its owner, mode, xattrs and
/// time; files hardlinked within the layer stay hardlinked.
fn copy_layer(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if is_whiteout(&meta) {
            remove_any(&to)?;
            continue;
        }
        if ft.is_dir() {
            let opaque = xattr::get(&from, OPAQUE_XATTR)?.as_deref() == Some(b"y");
            match fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() && !opaque => {}
                Ok(_) => {
                    remove_any(&to)?;
                    fs::create_dir(&to)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&to)?,
                Err(e) => return Err(e),
            }
            copy_attributes(&from, &to, &meta)?;
            copy_layer(&from, &to, links)?;
            fs::File::open(&to)?.set_modified(meta.modified()?)?;
            continue;
        }
        remove_any(&to)?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
            continue;
        }
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = links.get(&key)
        {
            fs::hard_link(first, &to)?;
            continue;
        }
        if ft.is_file() {
            fs::copy(&from, &to)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            use nix::sys::stat::{Mode, SFlag, mknod};
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            mknod(&to, kind, Mode::from_bits_truncate(0o600), meta.rdev())?;
        } else {
            // Sockets are not content.
            continue;
        }
        copy_attributes(&from, &to, &meta)?;
        if ft.is_file() {
            fs::File::options()
                .write(true)
                .open(&to)?
                .set_modified(meta.modified()?)?;
        }
        if meta.nlink() > 1 {
            links.insert(key, to);
        }
    }
    Ok(())
}

/// Owner, then mode (chown clears setuid), then xattrs other than overlayfs's own.
fn copy_attributes(from: &Path, to: &Path, meta: &fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    for name in xattr::list(from)? {
        if name.to_string_lossy().starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) = xattr::get(from, &name)? {
            xattr::set(to, &name, &value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_found() {
        assert!(is_mounted(Path::new("/proc")).unwrap());
        assert!(!is_mounted(Path::new("/definitely/not/mounted")).unwrap());
    }
}

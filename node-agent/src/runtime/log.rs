//! A container's log, kept within a size cap: the shim reads the container's stdout and stderr
//! from a pipe and appends to `container.log`; once the file reaches half the cap it becomes
//! `container.log.1` (replacing the older one) and a new file starts, so the two never hold
//! more than the cap together. Without a cap, the file just grows.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The annotation carrying a container's log cap in bytes (`0` or absent: none).
pub const LOG_CAP_ANNOTATION: &str = "univrs.io/log-max-bytes";

/// Appends to a container's log, rotating at half the cap.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    cap: u64,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The rotated file next to `path` (`container.log.1`).
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

impl LogWriter {
    /// Appends to `path` (created 0600 if missing), rotating when `cap` (bytes; 0: none)
    /// would be exceeded.
    pub fn open(path: &Path, cap: u64) -> io::Result<Self> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            cap,
        })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let half = self.cap / 2;
        if half > 0 && self.size > 0 && self.size + bytes.len() as u64 > half {
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = open(&self.path)?;
            self.size = 0;
        }
        // One chunk larger than half the cap keeps only its end.
        let bytes = if half > 0 && bytes.len() as u64 > half {
            &bytes[bytes.len() - half as usize..]
        } else {
            bytes
        };
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

/// Reads what is appended to a container's log after a point, across rotations: when the
/// file at the log's path is no longer the one being read (rotated to `.1`, or replaced), the
/// rest of the old file is read first, then the new one from its start, so a follower loses
/// no line at a rotation (unless two rotations happen between polls).
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    pos: u64,
}

impl Follower {
    /// Follows `path` from its current end (a missing file is followed once it appears).
    pub fn from_end(path: &Path) -> Self {
        let mut f = Self {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            pos: 0,
        };
        if let Ok(file) = File::open(path)
            && let Ok(meta) = file.metadata()
        {
            f.inode = meta.ino();
            f.pos = meta.len();
            f.file = Some(file);
        }
        f
    }

    /// What was appended since the last call (at most `max` bytes; call again for more).
    pub fn poll(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(file) = &mut self.file {
            read_from(file, &mut self.pos, max, &mut out)?;
        }
        if out.len() >= max {
            return Ok(out);
        }
        // Everything of the current file is read: has the path moved on to a new file?
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        let same = self.file.is_some() && current.ino() == self.inode;
        if same && current.len() >= self.pos {
            return Ok(out);
        }
        // A new file (rotated, or the first one): what the old one got between our read and
        // the rotation comes first, then the new one from its start. A file truncated in
        // place (same inode, shorter) also starts over.
        if !same && let Some(old) = &mut self.file {
            read_from(old, &mut self.pos, max - out.len(), &mut out)?;
            if out.len() >= max {
                return Ok(out);
            }
        }
        let mut file = File::open(&self.path)?;
        self.inode = file.metadata()?.ino();
        self.pos = 0;
        read_from(&mut file, &mut self.pos, max - out.len(), &mut out)?;
        self.file = Some(file);
        Ok(out)
    }
}

/// Appends up to `max` bytes of `file` from `pos` to `out`, moving `pos` on.
fn read_from(file: &mut File, pos: &mut u64, max: usize, out: &mut Vec<u8>) -> io::Result<()> {
    file.seek(SeekFrom::Start(*pos))?;
    let n = file.take(max as u64).read_to_end(out)?;
    *pos += n as u64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_half_the_cap_and_keeps_one_older_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut log = LogWriter::open(&path, 100).unwrap();
        for i in 0..40 {
            log.write(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let now = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(rotated(&path)).unwrap();
        assert!(now.len() <= 50 && old.len() <= 50, "{now:?} {old:?}");
        assert!(now.ends_with("line 39\n"), "{now}");
        // The older file ends with the line before the current file's first.
        let first: u32 = now[5..7].parse().unwrap();
        assert!(old.ends_with(&format!("line {:02}\n", first - 1)), "{old}");
        // A reopened log goes on from its size.
        drop(log);
        let mut log = LogWriter::open(&path, 100).unwrap();
        log.write(&[b'x'; 80]).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            50,
            "only the end of a huge chunk"
        );
        // Without a cap nothing rotates.
        let free = dir.path().join("free.log");
        let mut log = LogWriter::open(&free, 0).unwrap();
        log.write(&[b'y'; 1000]).unwrap();
        assert_eq!(std::fs::read(&free).unwrap().len(), 1000);
        assert!(!rotated(&free).exists());
    }

    #[test]
    fn a_follower_reads_on_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        // Before the file exists, then from its end once it does: nothing old is repeated.
        std::fs::write(&path, "old\n").unwrap();
        let mut follow = Follower::from_end(&path);
        assert!(follow.poll(1 << 16).unwrap().is_empty());
        let mut log = LogWriter::open(&path, 40).unwrap();
        let mut seen = Vec::new();
        for i in 0..30 {
            log.write(format!("line {i:02}\n").as_bytes()).unwrap();
            // Poll now and then, as the server does: never two rotations between polls.
            if i % 2 == 1 {
                seen.extend(follow.poll(1 << 16).unwrap());
            }
        }
        seen.extend(follow.poll(1 << 16).unwrap());
        let want: String = (0..30).map(|i| format!("line {i:02}\n")).collect();
        assert_eq!(String::from_utf8(seen).unwrap(), want);
        // A small `max` returns the rest on later calls.
        log.write(b"abcdef\n").unwrap();
        assert_eq!(follow.poll(3).unwrap(), b"abc");
        assert_eq!(follow.poll(100).unwrap(), b"def\n");

        let missing = dir.path().join("later.log");
        let mut follow = Follower::from_end(&missing);
        assert!(follow.poll(100).unwrap().is_empty());
        std::fs::write(&missing, "first\n").unwrap();
        assert_eq!(follow.poll(100).unwrap(), b"first\n");
    }
}

//! A container's log, kept within a size cap: the shim reads the container's stdout and stderr
//! from a pipe and appends to `container.log`; once the file reaches half the cap it becomes
//! `container.log.1` (replacing the older one) and a new file starts, so the two never hold
//! more than the cap together. Without a cap, the file just grows.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
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
}

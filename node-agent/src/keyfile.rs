//! The node's key file: PKCS#8 PEM, mode 0600, never overwritten, refused when others can read it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use univrs_api::identity::{IdentityError, NodeIdentity};

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file already exists.
    #[error("{0} already exists; refusing to overwrite a key (remove it or choose another --out)")]
    Exists(PathBuf),
    /// Others (or a group not the reader's own) may read the file.
    #[error("{path} has mode {mode:04o}, so others may read the key; run: chmod 600 {path}")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("{path}: {source}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        source: IdentityError,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates a new identity and writes it to `path` (mode 0600, parent created 0700).
pub fn generate(path: &Path) -> Result<NodeIdentity, KeyFileError> {
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io(parent))?;
    }
    let id = NodeIdentity::generate();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists(path.to_path_buf())
            } else {
                io(path)(e)
            }
        })?;
    f.write_all(id.to_pkcs8_pem().as_bytes())
        .map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok(id)
}

/// Loads the identity in `path`, refusing a file that others can read (see
/// [`univrs_io::secret_file::private`]).
pub fn load(path: &Path) -> Result<NodeIdentity, KeyFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if !univrs_io::secret_file::private(&meta) {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
    NodeIdentity::from_pkcs8_pem(&pem).map_err(|source| KeyFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the identity in `path`, generating it first if the file does not exist.
pub fn load_or_generate(path: &Path) -> Result<NodeIdentity, KeyFileError> {
    match generate(path) {
        Err(KeyFileError::Exists(_)) => load(path),
        other => other,
    }
}

//! The HTTP listener's bearer token: read from a file that only its owner may read, or made
//! once (32 random bytes, hex) into the data directory. The token itself is never printed or
//! logged; only the file's path is.

use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The fewest characters a token may have (a guessable token protects nothing).
const MIN_LEN: usize = 32;

/// Why the token could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Group or others may read the file.
    #[error("{path} has mode {mode:04o}, so others may read the token; run: chmod 600 {path}")]
    TooOpen {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token is too short to be secret.
    #[error(
        "the token in {path} has {len} characters; use at least {MIN_LEN} random ones, such as the output of: openssl rand -hex 32"
    )]
    TooShort {
        /// The token file.
        path: PathBuf,
        /// How many characters it has.
        len: usize,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A bearer token. Its `Debug` form hides it, so it cannot leak into a log by accident.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `presented` is this token, compared in constant time (over SHA-256 digests,
    /// so neither the contents nor the length leaks through timing).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let (a, b) = (Sha256::digest(self.0.as_bytes()), Sha256::digest(presented));
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the token in `path`, refusing a file that group or others can read.
pub fn load(path: &Path) -> Result<Token, TokenError> {
    let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    let token = text.trim();
    if token.chars().count() < MIN_LEN {
        return Err(TokenError::TooShort {
            path: path.to_path_buf(),
            len: token.chars().count(),
        });
    }
    Ok(Token(token.to_string()))
}

/// Reads the token in `path`, first making one there (mode 0600) if there is none.
/// Returns whether it was made now.
pub fn load_or_generate(path: &Path) -> Result<(Token, bool), TokenError> {
    if path.exists() {
        return load(path).map(|t| (t, false));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = hex::encode(bytes);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(format!("{token}\n").as_bytes())
        .map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    Ok((Token(token), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_private_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp/token");
        let (t, made) = load_or_generate(&path).unwrap();
        assert!(made);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, made) = load_or_generate(&path).unwrap();
        assert!(!made);
        let text = fs::read_to_string(&path).unwrap();
        assert!(t.matches(text.trim().as_bytes()) && again.matches(text.trim().as_bytes()));
        assert!(!t.matches(b"wrong"));
        assert!(!t.matches(&text.trim().as_bytes()[1..]));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::write(&path, "short\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("has 5 characters"), "{e}");
    }
}

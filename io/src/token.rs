//! The bearer token that guards a listener: read from a file only its owner may read, or made
//! once (32 random bytes, hex). Only its SHA-256 digest is kept in memory, a presented token is
//! compared by digest in constant time (so neither its contents nor its length leak through
//! timing), and its `Debug` form is redacted, so it cannot reach a log by accident.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The fewest characters a token may have (a guessable token protects nothing).
pub const MIN_LEN: usize = 32;

/// Why the token could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Others (or a group not the reader's own) may read the file.
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

/// A bearer token, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Token {
    fn from_secret(secret: &str) -> Self {
        Self {
            digest: digest(secret.as_bytes()),
        }
    }

    /// Whether `presented` is this token, compared in constant time over digests.
    pub fn matches(&self, presented: &[u8]) -> bool {
        digest(presented)
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// Whether `headers` carry this token as `Authorization: Bearer <token>`.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        bearer(headers).is_some_and(|t| self.matches(t.as_bytes()))
    }

    /// Reads the token in `path`, refusing a file that others can read (see
    /// [`crate::secret_file::private`]).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let meta = fs::metadata(path).map_err(io(path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if !crate::secret_file::private(&meta) {
            return Err(TokenError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
        let secret = text.trim();
        if secret.chars().count() < MIN_LEN {
            return Err(TokenError::TooShort {
                path: path.to_path_buf(),
                len: secret.chars().count(),
            });
        }
        Ok(Self::from_secret(secret))
    }

    /// Reads the token in `path`, first making one there (mode 0600) if there is none.
    /// Returns whether it was made now.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), TokenError> {
        if path.exists() {
            return Self::load(path).map(|t| (t, false));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let secret = Zeroizing::new(hex::encode(bytes));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        f.write_all(secret.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        Ok((Self::from_secret(&secret), true))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// The 401 answer to a request without the right token: what to send, in `realm`.
pub fn unauthorized(realm: &str, what_to_send: &str) -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, format!("{what_to_send}\n")).into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
    // The request body may be left unread, so the connection is not reused; saying so stops a
    // client from sending its next request on a connection that is about to close.
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_private_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcp/token");
        let (t, made) = Token::load_or_generate(&path).unwrap();
        assert!(made);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, made) = Token::load_or_generate(&path).unwrap();
        assert!(!made);
        let text = fs::read_to_string(&path).unwrap();
        assert!(t.matches(text.trim().as_bytes()) && again.matches(text.trim().as_bytes()));
        assert!(!t.matches(b"wrong"));
        assert!(!t.matches(&text.trim().as_bytes()[1..]));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");

        let mut headers = HeaderMap::new();
        assert!(!t.authorizes(&headers));
        headers.insert(
            header::AUTHORIZATION,
            format!("bearer {}", text.trim()).parse().unwrap(),
        );
        assert!(t.authorizes(&headers));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(!t.authorizes(&headers));

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::write(&path, "short\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Token::load(&path).unwrap_err().to_string();
        assert!(e.contains("has 5 characters"), "{e}");
    }
}

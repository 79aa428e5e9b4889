//! Registry credentials, and the `auths` entries of a docker-style `config.json` (what
//! `docker login` and `skopeo login` write), so the agent can use the logins a node already
//! has. Credential helpers (`credsStore`, `credHelpers`) and identity tokens are not supported:
//! entries using them are skipped.

use super::error::ImageError;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// A username and password for a registry (HTTP basic auth, or the token exchange that
/// starts from it).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    /// Never shows the password (errors and logs print credentials through this).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        self.password.zeroize();
    }
}

/// The logins of a docker-style `config.json`, by registry host.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
}

#[derive(Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl DockerConfig {
    /// Where docker looks: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let bytes = std::fs::read(path).map_err(|e| ImageError::Credentials {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&bytes, path)
    }

    /// Parses the contents of `path`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ImageError> {
        let err = |reason: String| ImageError::Credentials {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawFile =
            serde_json::from_slice(bytes).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let mut auths = BTreeMap::new();
        for (key, entry) in raw.auths {
            let creds = match (entry.auth.filter(|a| !a.is_empty()), entry.username) {
                (Some(encoded), _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|e| err(format!("auths.{key:?}.auth is not base64: {e}")))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| err(format!("auths.{key:?}.auth is not UTF-8")))?;
                    let (user, pass) = text.split_once(':').ok_or_else(|| {
                        err(format!(
                            "auths.{key:?}.auth does not decode to USER:PASSWORD"
                        ))
                    })?;
                    Credentials::new(user, pass)
                }
                (None, Some(user)) => Credentials::new(user, entry.password.unwrap_or_default()),
                // An identity token or a helper-only entry: nothing we can use.
                (None, None) => continue,
            };
            auths.insert(normalize_registry(&key), creds);
        }
        Ok(Self { auths })
    }

    /// The credentials for `registry` (a host, with its port if any), if the file has some.
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_registry(registry))
    }

    /// The registries the file has credentials for.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://reg:5000/` → `reg:5000`.
fn normalize_registry(key: &str) -> String {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_config_auths() {
        let json = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hubuser:hub:pass")},
                "127.0.0.1:5000": {"username": "alice", "password": "s3cret"},
                "ghcr.io": {"identitytoken": "opaque"},
            },
            "credsStore": "desktop",
        });
        let cfg = DockerConfig::parse(json.to_string().as_bytes(), Path::new("c.json")).unwrap();
        let hub = cfg.credentials_for("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hubuser", "hub:pass")
        );
        assert_eq!(
            cfg.credentials_for("http://127.0.0.1:5000/")
                .unwrap()
                .username,
            "alice"
        );
        assert!(cfg.credentials_for("ghcr.io").is_none());
        assert!(cfg.credentials_for("127.0.0.1:5001").is_none());
        assert!(
            !format!("{hub:?}").contains("hub:pass"),
            "Debug redacts the password"
        );

        let bad = serde_json::json!({"auths": {"r": {"auth": "!!"}}});
        let err = DockerConfig::parse(bad.to_string().as_bytes(), Path::new("/x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/config.json") && err.contains("auths.\"r\".auth"),
            "{err}"
        );
    }
}

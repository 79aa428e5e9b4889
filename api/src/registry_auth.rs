//! Registry credentials: the `auths` of a docker-style `config.json` (what `docker login`
//! writes, and what a `kubernetes.io/dockerconfigjson` Secret holds), the registry an image
//! reference names, and the context a Workload's credentials are sealed under for one node.
//!
//! Credential helpers (`credsStore`, `credHelpers`) and identity tokens are not supported:
//! entries using them are skipped.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::{Zeroize, Zeroizing};

/// The Secret type holding a docker `config.json` under `.dockerconfigjson`.
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The legacy Secret type holding a `~/.dockercfg` (the `auths` map alone) under `.dockercfg`.
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";

/// A username and password for a registry (HTTP basic auth, or the token exchange that
/// starts from it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RegistryAuthError(pub String);

/// The logins of a docker-style `config.json`, by registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Parses a `config.json` (`{"auths": {REGISTRY: {auth | username, password}}}`).
    pub fn parse(bytes: &[u8]) -> Result<Self, RegistryAuthError> {
        let raw: RawFile = serde_json::from_slice(bytes)
            .map_err(|e| RegistryAuthError(format!("not valid JSON: {e}")))?;
        Self::from_raw(raw.auths, "auths.")
    }

    /// Parses a legacy `.dockercfg` (the `auths` map alone).
    pub fn parse_dockercfg(bytes: &[u8]) -> Result<Self, RegistryAuthError> {
        let raw: BTreeMap<String, RawAuth> = serde_json::from_slice(bytes)
            .map_err(|e| RegistryAuthError(format!("not valid JSON: {e}")))?;
        Self::from_raw(raw, "")
    }

    /// The logins of a Secret of type `kubernetes.io/dockerconfigjson` or
    /// `kubernetes.io/dockercfg`, from its type and its decoded data.
    pub fn from_secret(
        type_: Option<&str>,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, RegistryAuthError> {
        let key = |k: &str| {
            data.get(k)
                .ok_or_else(|| RegistryAuthError(format!("it has no data key {k}")))
        };
        match type_ {
            Some(SECRET_TYPE_DOCKER_CONFIG_JSON) => Self::parse(key(".dockerconfigjson")?)
                .map_err(|e| RegistryAuthError(format!("data[.dockerconfigjson]: {e}"))),
            Some(SECRET_TYPE_DOCKERCFG) => Self::parse_dockercfg(key(".dockercfg")?)
                .map_err(|e| RegistryAuthError(format!("data[.dockercfg]: {e}"))),
            other => Err(RegistryAuthError(format!(
                "its type is {:?}, not {SECRET_TYPE_DOCKER_CONFIG_JSON} or {SECRET_TYPE_DOCKERCFG}",
                other.unwrap_or("")
            ))),
        }
    }

    fn from_raw(raw: BTreeMap<String, RawAuth>, path: &str) -> Result<Self, RegistryAuthError> {
        let err = |m: String| RegistryAuthError(m);
        let mut auths = BTreeMap::new();
        for (key, entry) in raw {
            let creds = match (entry.auth.filter(|a| !a.is_empty()), entry.username) {
                (Some(encoded), _) => {
                    let decoded = Zeroizing::new(
                        base64::engine::general_purpose::STANDARD
                            .decode(encoded.trim())
                            .map_err(|e| err(format!("{path}{key:?}.auth is not base64: {e}")))?,
                    );
                    let text = std::str::from_utf8(&decoded)
                        .map_err(|_| err(format!("{path}{key:?}.auth is not UTF-8")))?;
                    let (user, pass) = text.split_once(':').ok_or_else(|| {
                        err(format!(
                            "{path}{key:?}.auth does not decode to USER:PASSWORD"
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

    /// Adds `other`'s logins for registries this one has none for (the first login wins, as
    /// `imagePullSecrets` are tried in order).
    pub fn merge(&mut self, other: &DockerConfig) {
        for (reg, creds) in &other.auths {
            self.auths
                .entry(reg.clone())
                .or_insert_with(|| creds.clone());
        }
    }

    /// Only the logins for `registries`: what a node is given is what its images need.
    pub fn only<'a>(&self, registries: impl IntoIterator<Item = &'a str>) -> Self {
        let mut auths = BTreeMap::new();
        for r in registries {
            let r = normalize_registry(r);
            if let Some(c) = self.auths.get(&r) {
                auths.insert(r, c.clone());
            }
        }
        Self { auths }
    }

    /// Whether it has no login.
    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }

    /// The credentials for `registry` (a host, with its port if any), if there are some.
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_registry(registry))
    }

    /// The registries it has credentials for.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.auths.keys().map(String::as_str)
    }

    /// As a `config.json` with plain `username`/`password` entries ([`Self::parse`] reads it
    /// back).
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let auths: BTreeMap<&str, &Credentials> =
            self.auths.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "auths": auths }))
                .expect("credentials serialize"),
        )
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://reg:5000/` → `reg:5000`.
pub fn normalize_registry(key: &str) -> String {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_ascii_lowercase(),
    }
}

/// The registry an image reference pulls from, as docker reads it (the first path component
/// when it has a `.` or a `:` or is `localhost`, else Docker Hub); `None` for `oci:` layouts,
/// which no registry serves.
pub fn registry_of(image: &str) -> Option<String> {
    if image.starts_with("oci:") {
        return None;
    }
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            Some(normalize_registry(first))
        }
        _ => Some("docker.io".to_string()),
    }
}

/// What a Workload's registry credentials are sealed under for one node (see
/// [`crate::sealed`]): opened under any other Workload, incarnation or node, they fail.
pub fn sealed_context(namespace: &str, workload: &str, uid: &str, node: &str) -> Vec<u8> {
    format!("univrs.io/image-pull-credentials\0{namespace}\0{workload}\0{uid}\0{node}").into_bytes()
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
        let cfg = DockerConfig::parse(json.to_string().as_bytes()).unwrap();
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
        assert_eq!(DockerConfig::parse(&cfg.to_json()).unwrap(), cfg);

        let bad = serde_json::json!({"auths": {"r": {"auth": "!!"}}});
        let err = DockerConfig::parse(bad.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("auths.\"r\".auth"), "{err}");
    }

    #[test]
    fn reads_both_secret_types_and_names_what_is_wrong() {
        let json = br#"{"auths":{"reg.example:5000":{"username":"u","password":"p"}}}"#;
        let data = BTreeMap::from([(".dockerconfigjson".to_string(), json.to_vec())]);
        let cfg = DockerConfig::from_secret(Some(SECRET_TYPE_DOCKER_CONFIG_JSON), &data).unwrap();
        assert_eq!(cfg.registries().collect::<Vec<_>>(), ["reg.example:5000"]);
        let legacy = BTreeMap::from([(
            ".dockercfg".to_string(),
            br#"{"https://Reg.Example/v1/":{"username":"u","password":"p"}}"#.to_vec(),
        )]);
        let cfg = DockerConfig::from_secret(Some(SECRET_TYPE_DOCKERCFG), &legacy).unwrap();
        assert!(cfg.credentials_for("reg.example").is_some());
        let err = DockerConfig::from_secret(Some("Opaque"), &data).unwrap_err();
        assert!(err.0.contains("\"Opaque\""), "{err}");
        let err = DockerConfig::from_secret(Some(SECRET_TYPE_DOCKERCFG), &data).unwrap_err();
        assert!(err.0.contains(".dockercfg"), "{err}");
    }

    #[test]
    fn merges_first_wins_and_keeps_only_what_is_asked() {
        let a =
            DockerConfig::parse(br#"{"auths":{"r1":{"username":"a","password":"1"}}}"#).unwrap();
        let b = DockerConfig::parse(
            br#"{"auths":{"r1":{"username":"b","password":"2"},"r2":{"username":"b","password":"3"}}}"#,
        )
        .unwrap();
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.credentials_for("r1").unwrap().username, "a");
        assert_eq!(m.credentials_for("r2").unwrap().username, "b");
        let only = m.only(["r2", "r9"]);
        assert_eq!(only.registries().collect::<Vec<_>>(), ["r2"]);
        assert!(m.only(["r9"]).is_empty());
    }

    #[test]
    fn names_the_registry_of_a_reference() {
        for (image, want) in [
            ("busybox", Some("docker.io")),
            ("library/busybox:1", Some("docker.io")),
            ("ghcr.io/univrs/univrs:0.1", Some("ghcr.io")),
            ("127.0.0.1:5000/demo/app:v1", Some("127.0.0.1:5000")),
            ("localhost/app", Some("localhost")),
            ("index.docker.io/library/busybox", Some("docker.io")),
            ("oci:/srv/images/demo:v1", None),
        ] {
            assert_eq!(registry_of(image).as_deref(), want, "{image}");
        }
    }
}

//! The key file on disk: private, never overwritten, readable by openssl.

use std::os::unix::fs::PermissionsExt;
use univrs_node_agent::keyfile::{self, KeyFileError};

fn openssl_public_key(path: &std::path::Path) -> Option<Vec<u8>> {
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(path)
        .args(["-pubout", "-outform", "DER"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(out.stdout[out.stdout.len() - 32..].to_vec())
}

#[test]
fn generate_load_refuse_and_interoperate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/node.pem");
    let id = keyfile::generate(&path).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(keyfile::load(&path).unwrap().public(), id.public());
    assert_eq!(
        keyfile::load_or_generate(&path).unwrap().public(),
        id.public()
    );
    assert!(matches!(
        keyfile::generate(&path),
        Err(KeyFileError::Exists(_))
    ));

    for open in [0o640, 0o604, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
        let err = keyfile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && err.contains("node.pem"),
            "{err}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    let missing = keyfile::load(&dir.path().join("nope.pem"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.pem"), "{missing}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        keyfile::load(&garbage),
        Err(KeyFileError::Invalid { .. })
    ));

    // openssl reads our key and derives the same public key.
    let public = openssl_public_key(&path).expect("openssl reads the key file");
    assert_eq!(public, id.public().to_bytes());
}

#[test]
fn reads_a_key_that_openssl_generated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openssl.pem");
    let status = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .status()
        .expect("running openssl: run scripts/install-deps (Debian package openssl)");
    assert!(status.success());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let id = keyfile::load(&path).unwrap();
    assert_eq!(openssl_public_key(&path).unwrap(), id.public().to_bytes());
}

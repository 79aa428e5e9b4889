//! The `univrs` binary's identity and crds subcommands, run as a user would.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn univrs(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_univrs"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn identity_generate_show_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/node.pem");
    let key_s = key.to_str().unwrap();

    let (ok, out, err) = univrs(&["identity", "generate", "--out", key_s]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        out.contains("PeerId: 12D3KooW") && out.contains("DID:    did:key:z6Mk"),
        "{out}"
    );

    let (ok, shown, err) = univrs(&["identity", "show", key_s]);
    assert!(ok, "{err}");
    assert_eq!(shown, out, "show prints the same three names as generate");

    let (ok, json, _) = univrs(&["identity", "show", key_s, "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["nodeId"].as_str().unwrap().len(), 64);

    // Refuses to overwrite.
    let (ok, _, err) = univrs(&["identity", "generate", "--out", key_s]);
    assert!(!ok);
    assert!(err.contains(key_s), "the error names the file: {err}");

    // Refuses a key that others can read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = univrs(&["identity", "show", key_s]);
    assert!(!ok);
    assert!(
        err.contains("chmod 600"),
        "the error says how to fix it: {err}"
    );
}

#[test]
fn crds_prints_all_four_and_check_detects_drift() {
    let (ok, out, _) = univrs(&["crds"]);
    assert!(ok);
    for name in [
        "workloads.univrs.io",
        "nodes.univrs.io",
        "creditlines.univrs.io",
        "vouches.univrs.io",
    ] {
        assert!(out.contains(&format!("name: {name}")), "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, _, _) = univrs(&["crds", "--out", d]);
    assert!(ok);
    assert!(univrs(&["crds", "--out", d, "--check"]).0);
    std::fs::write(dir.path().join("vouches.univrs.io.yaml"), "stale").unwrap();
    let (ok, _, err) = univrs(&["crds", "--out", d, "--check"]);
    assert!(!ok && err.contains("vouches.univrs.io.yaml"), "{err}");
}

#[test]
fn vouch_prints_a_vouch_that_verifies_and_refuses_a_bad_subject() {
    let dir = tempfile::tempdir().unwrap();
    let voucher = dir.path().join("voucher.pem");
    let subject = dir.path().join("subject.pem");
    for k in [&voucher, &subject] {
        let (ok, _, err) = univrs(&["identity", "generate", "--out", k.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let (ok, json, _) = univrs(&["identity", "show", subject.to_str().unwrap(), "--json"]);
    assert!(ok);
    let names: serde_json::Value = serde_json::from_str(&json).unwrap();
    let peer = names["peerId"].as_str().unwrap();
    let (ok, yaml, err) = univrs(&[
        "vouch",
        "--identity",
        voucher.to_str().unwrap(),
        "--subject",
        peer,
        "--weight",
        "0.6",
        "--reason",
        "kept the library's printer server up all winter",
    ]);
    assert!(ok, "{err}");
    let v: univrs_api::resources::vouch::Vouch = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(v.spec.subject, names["did"].as_str().unwrap());
    assert_eq!(v.spec.weight, 0.6);
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    v.spec.verify(&now).expect("the printed vouch verifies");

    let (ok, _, err) = univrs(&[
        "vouch",
        "--identity",
        voucher.to_str().unwrap(),
        "--subject",
        "not-an-identity",
        "--kubeconfig",
        "/nonexistent",
    ]);
    assert!(!ok);
    assert!(err.contains("/nonexistent"), "{err}");
}

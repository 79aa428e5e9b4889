//! The Univrs image (`univrs image build`): reproducible (the same inputs, the same digest),
//! labelled, with a non-root default user and what the agent runs besides itself; and it
//! runs: a real agent imports the layout and runs `univrs --version` and `iptables-save
//! --version` from it in youki containers, whose output `univrs logs` reads.

use kube::api::{Api, PostParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use univrs_api::Workload;
use univrs_api::resources::workload::InstancePhase;
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller};
use univrs_tests::{ControlPlane, run, univrs_bin};

/// `univrs image build` of `binary` into `out`; the manifest digest it prints.
fn build(binary: &Path, out: &Path) -> String {
    let (ok, stdout, stderr) = run(Command::new(univrs_bin())
        .args(["image", "build", "--tag", "test", "--output"])
        .arg(out)
        .arg("--binary")
        .arg(binary));
    assert!(ok, "univrs image build: {stderr}");
    eprint!("{stderr}");
    stdout
        .split_whitespace()
        .nth(1)
        .expect("a digest")
        .to_string()
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("univrs-test-image-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The layer's entries: (path, link target if a link).
fn entries(layout: &Path, manifest_digest: &str) -> Vec<(String, Option<String>)> {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let layer = std::fs::read(blob(manifest["layers"][0]["digest"].as_str().unwrap())).unwrap();
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&layer[..]));
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let link = e.link_name().unwrap().map(|l| l.display().to_string());
        out.push((e.path().unwrap().display().to_string(), link));
    }
    out
}

#[test]
fn the_image_is_reproducible_labelled_and_holds_what_the_agent_runs() {
    // A static binary keeps this quick; the univrs binary is built into an image below.
    let (a, b) = (temp("a"), temp("b"));
    let digest = build(Path::new("/bin/busybox"), &a);
    assert_eq!(
        build(Path::new("/bin/busybox"), &b),
        digest,
        "two builds of the same inputs differ"
    );
    let (ok, inspect, err) = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--config")
        .arg(format!("oci:{}:test", a.display())));
    assert!(ok, "skopeo inspect: {err}");
    let config: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{c}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/univrs"])
    );
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{labels}"
    );
    assert!(
        labels["io.univrs.binary.sha256"].as_str().unwrap().len() == 64,
        "{labels}"
    );
    let files = entries(&a, &digest);
    let has = |p: &str| files.iter().any(|(f, _)| f == p);
    for want in [
        "usr/local/bin/univrs",
        "etc/passwd",
        "tmp/",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(has(want), "no {want} in {files:?}");
    }
    // iptables is one multi-call binary: its names link to it, and its extensions come along.
    let save = files
        .iter()
        .find(|(f, _)| f == "usr/sbin/iptables-save")
        .expect("iptables-save");
    assert!(
        save.1.as_deref().is_some_and(|t| t.contains("xtables")),
        "{save:?}"
    );
    assert!(
        files
            .iter()
            .any(|(f, _)| f.contains("xtables/libxt_") && f.ends_with(".so")),
        "no xtables extensions"
    );
    assert!(
        has("usr/bin/ip") || has("bin/ip") || has("sbin/ip"),
        "no ip"
    );
    let passwd_layer = files.iter().filter(|(f, _)| f.starts_with("etc/")).count();
    assert!(passwd_layer >= 2);
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_univrs_image_runs_in_a_container() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "image-run";
    for n in [ns, LEASE_NS] {
        ensure_namespace(&client, n).await;
    }
    let dir = temp("layouts");
    let layout = dir.join("univrs");
    let digest = build(univrs_bin(), &layout);
    eprintln!("univrs image {digest}");
    let _agent = AgentProc::start(
        cp,
        "image-a",
        &[
            "--label",
            "test=image-a",
            "--oci-layout-dir",
            &dir.display().to_string(),
        ],
    );
    let _controller = start_controller(cp);
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    let image = format!("oci:{}:test", layout.display());
    for (name, container) in [
        (
            "version",
            serde_json::json!({"name": "univrs", "image": image, "args": ["--version"]}),
        ),
        (
            "iptables",
            serde_json::json!({"name": "tools", "image": image, "command": ["/usr/sbin/iptables-save", "--version"]}),
        ),
    ] {
        let w: Workload = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
            "spec": {"replicas": 1, "restartPolicy": "Never", "nodeSelector": {"test": "image-a"},
                     "containers": [container]},
        }))
        .unwrap();
        workloads.create(&PostParams::default(), &w).await.unwrap();
    }
    for (name, want) in [
        ("version", format!("univrs {}", env!("CARGO_PKG_VERSION"))),
        ("iptables", "iptables-save v".to_string()),
    ] {
        eventually(
            &format!("{name} ran to completion"),
            Duration::from_secs(120),
            async || {
                let w = workloads.get(name).await.unwrap();
                let i = w.status.as_ref().and_then(|s| s.instances.first().cloned());
                let done = i
                    .as_ref()
                    .is_some_and(|i| i.phase == Some(InstancePhase::Succeeded));
                (done.then_some(()), format!("{i:?}"))
            },
        )
        .await;
        let (ok, out, err) = run(Command::new(univrs_bin())
            .args(["logs", name, "-n", ns, "--kubeconfig"])
            .arg(&cp.kubeconfig));
        assert!(ok && out.contains(&want), "{name}: {out} {err}");
        eprintln!("{name}: {}", out.trim());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

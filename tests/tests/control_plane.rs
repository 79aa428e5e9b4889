//! The local control plane with the Univrs CRDs: what kubectl, helm, the Python client and a
//! crash do to it. Every test talks to the real upstream kube-apiserver and etcd.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use univrs_tests::{ControlPlane, run, run_with_stdin};

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// Applies a manifest from stdin; returns (ok, stdout, stderr).
fn apply(yaml: &str, extra: &[&str]) -> (bool, String, String) {
    let out = run_with_stdin(cp().kubectl().args(["apply", "-f", "-"]).args(extra), yaml);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl(args: &[&str]) -> (bool, String, String) {
    run(cp().kubectl().args(args))
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = kubectl(args);
    assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
    out
}

fn namespace(name: &str) {
    let _ = kubectl(&["create", "namespace", name]);
}

fn workload(name: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: univrs.io/v1alpha1
kind: Workload
metadata:
  name: {name}
spec:
  replicas: 2
  containers:
  - name: web
    image: demo/busybox:latest
    command: ["httpd", "-f", "-p", "8080"]
    ports:
    - containerPort: 8080
    resources:
      requests: {{cpu: 250m, memory: 64Mi}}
      limits: {{cpu: 500m, memory: 128Mi}}
{extra_spec}"#
    )
}

#[test]
fn crds_are_established_with_printer_columns_and_explain() {
    namespace("columns");
    let (ok_apply, out, err) = apply(&workload("portal", ""), &["-n", "columns"]);
    assert!(ok_apply, "{out}{err}");
    let out = ok(&["get", "workloads.univrs.io", "-n", "columns"]);
    let header = out.lines().next().unwrap();
    for col in ["NAME", "DESIRED", "READY", "AVAILABLE", "SCHEDULED", "AGE"] {
        assert!(header.contains(col), "missing column {col} in {header}");
    }
    let wide = ok(&["get", "uwl", "-n", "columns", "-o", "wide"]);
    assert!(wide.contains("demo/busybox:latest"), "{wide}");
    let explain = ok(&["explain", "workloads.univrs.io.spec.containers"]);
    assert!(explain.contains("OCI image reference"), "{explain}");
    assert!(explain.contains("readinessProbe"), "{explain}");
    // The category lists every kind.
    let all = ok(&["get", "univrs", "-A"]);
    assert!(all.contains("workload.univrs.io/portal"), "{all}");
    ok(&["api-resources", "--api-group=univrs.io"]);
}

/// Applies a bad manifest and returns the API server's refusal.
fn refused(yaml: &str) -> String {
    let (ok, out, err) = apply(yaml, &["-n", "bad"]);
    assert!(
        !ok,
        "the API server accepted a bad manifest:\n{yaml}\n{out}"
    );
    err
}

#[test]
fn bad_manifests_are_refused_with_a_field_path() {
    namespace("bad");
    let err = refused(&workload("neg", "").replace("replicas: 2", "replicas: -1"));
    assert!(
        err.contains("spec.replicas") && err.contains("greater than or equal to 0"),
        "{err}"
    );

    let err = refused(&workload("qty", "").replace("memory: 64Mi}", "memory: 64 megs}"));
    assert!(
        err.contains("spec.containers[0].resources.requests.memory"),
        "{err}"
    );

    let err = refused(&workload("enum", "  restartPolicy: Sometimes\n"));
    assert!(
        err.contains("spec.restartPolicy") && err.contains("Unsupported value"),
        "{err}"
    );

    let err = refused(&workload("limits", "").replace("limits: {cpu: 500m", "limits: {cpu: 100m"));
    assert!(
        err.contains("limits.cpu must be at least requests.cpu"),
        "{err}"
    );

    let probe =
        "    readinessProbe:\n      exec: {command: [\"true\"]}\n      tcpSocket: {port: 8080}\n";
    let err = refused(
        &workload("probe", "").replace("    resources:", &format!("{probe}    resources:")),
    );
    assert!(
        err.contains("set exactly one of exec, httpGet or tcpSocket"),
        "{err}"
    );

    let did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
    let sig = "A".repeat(86) + "==";
    let vouch = |weight: &str, subject: &str| {
        format!(
            "apiVersion: univrs.io/v1alpha1\nkind: Vouch\nmetadata:\n  name: v-{}\nspec:\n  voucher: {did}\n  subject: {subject}\n  weight: {weight}\n  expiresAt: \"2030-01-01T00:00:00Z\"\n  signature: {sig}\n",
            weight.replace('.', "-")
        )
    };
    let other = "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG";
    let err = refused(&vouch("1.5", other));
    assert!(
        err.contains("spec.weight") && err.contains("less than or equal to 1"),
        "{err}"
    );
    let err = refused(&vouch("0.5", did));
    assert!(
        err.contains("spec.subject") && err.contains("cannot vouch for itself"),
        "{err}"
    );

    let line = "apiVersion: univrs.io/v1alpha1\nkind: CreditLine\nmetadata:\n  name: self\nspec:\n  creditor: node/a\n  debtor: node/a\n  limit: 100\n";
    let err = refused(line);
    assert!(
        err.contains("creditor and debtor must be different"),
        "{err}"
    );
    let err = refused(&line.replace("debtor: node/a", "debtor: bank/b"));
    assert!(err.contains("spec.debtor"), "{err}");
}

#[test]
fn kubectl_apply_diff_scale_wait_label_patch_edit_and_delete() {
    namespace("kubectl");
    let ns = ["-n", "kubectl"];
    let (a, out, err) = apply(&workload("csa", ""), &ns);
    assert!(a, "{out}{err}");
    let (a, out, err) = apply(&workload("ssa", ""), &["-n", "kubectl", "--server-side"]);
    assert!(a, "{out}{err}");

    // diff exits 1 when there is a difference.
    let changed = workload("csa", "").replace("replicas: 2", "replicas: 4");
    let out = run_with_stdin(
        cp().kubectl().args(["diff", "-n", "kubectl", "-f", "-"]),
        &changed,
    );
    assert_eq!(out.status.code(), Some(1), "diff should see a change");
    assert!(String::from_utf8_lossy(&out.stdout).contains("replicas: 4"));

    ok(&[
        "scale",
        "-n",
        "kubectl",
        "workloads.univrs.io/csa",
        "--replicas=5",
    ]);
    assert_eq!(
        ok(&[
            "get",
            "uwl",
            "csa",
            "-n",
            "kubectl",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    // No controller runs here: play its part by writing the condition through the status subresource.
    let status = r#"{"status":{"conditions":[{"type":"Available","status":"True","reason":"Test","message":"set by the test","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    ok(&[
        "patch",
        "uwl",
        "csa",
        "-n",
        "kubectl",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    ok(&[
        "wait",
        "-n",
        "kubectl",
        "uwl/csa",
        "--for=condition=Available",
        "--timeout=30s",
    ]);
    // A spec write through the status subresource is ignored, as the status contract says.
    ok(&[
        "patch",
        "uwl",
        "csa",
        "-n",
        "kubectl",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":9}}"#,
    ]);
    assert_eq!(
        ok(&[
            "get",
            "uwl",
            "csa",
            "-n",
            "kubectl",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    ok(&["label", "-n", "kubectl", "uwl/csa", "tier=web"]);
    assert!(
        ok(&[
            "get", "uwl", "-n", "kubectl", "-l", "tier=web", "-o", "name"
        ])
        .contains("csa")
    );
    ok(&[
        "patch",
        "uwl",
        "ssa",
        "-n",
        "kubectl",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReputation":0.6}}"#,
    ]);

    // edit, with an editor script that changes the replica count.
    let dir = tempfile::Builder::new()
        .prefix("univrs-kubectl-")
        .tempdir()
        .unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/replicas: 5/replicas: 3/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (e, out, err) = run(cp()
        .kubectl()
        .env("KUBE_EDITOR", &editor)
        .args(["edit", "-n", "kubectl", "uwl/csa"]));
    assert!(e, "{out}{err}");
    assert_eq!(
        ok(&[
            "get",
            "uwl",
            "csa",
            "-n",
            "kubectl",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );

    // A finalizer holds deletion until it is released.
    ok(&[
        "patch",
        "uwl",
        "csa",
        "-n",
        "kubectl",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["univrs.io/test-hold"]}}"#,
    ]);
    ok(&["delete", "uwl", "csa", "-n", "kubectl", "--wait=false"]);
    let ts = ok(&[
        "get",
        "uwl",
        "csa",
        "-n",
        "kubectl",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        !ts.is_empty(),
        "deletion should be pending behind the finalizer"
    );
    ok(&[
        "patch",
        "uwl",
        "csa",
        "-n",
        "kubectl",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    ok(&[
        "wait",
        "-n",
        "kubectl",
        "uwl/csa",
        "--for=delete",
        "--timeout=30s",
    ]);
}

#[test]
fn anonymous_requests_reach_only_health_endpoints() {
    let curl = |path: &str| {
        let (_, out, _) = run(Command::new("curl").args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}{path}", cp().server),
        ]));
        out
    };
    assert_eq!(curl("/readyz"), "200");
    assert_eq!(curl("/livez"), "200");
    assert_eq!(curl("/api/v1/namespaces"), "401");
    assert_eq!(curl("/apis/univrs.io/v1alpha1/workloads"), "401");
    assert_eq!(curl("/version"), "401");
    // Every key file and the kubeconfig are private.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cp().kubeconfig), 0o600);
    for entry in std::fs::read_dir(cp().data_dir.join("pki")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "key") {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

fn tool(name: &str) -> std::path::PathBuf {
    univrs_tests::repo_root().join(".tools").join(name)
}

#[test]
fn helm_installs_upgrades_and_uninstalls_a_chart_with_a_workload() {
    namespace("helm");
    let chart = univrs_tests::repo_root().join("tests/fixtures/workload-chart");
    let helm = |args: &[&str]| {
        let (ok, out, err) = run(Command::new(tool("bin/helm"))
            .env("KUBECONFIG", &cp().kubeconfig)
            .env(
                "HELM_CACHE_HOME",
                std::env::temp_dir().join("univrs-helm-cache"),
            )
            .env(
                "HELM_CONFIG_HOME",
                std::env::temp_dir().join("univrs-helm-config"),
            )
            .args(args));
        assert!(ok, "helm {args:?}:\n{out}\n{err}");
        out
    };
    let chart = chart.to_str().unwrap();
    helm(&["install", "demo", chart, "-n", "helm", "--wait"]);
    assert_eq!(
        ok(&[
            "get",
            "uwl",
            "demo-web",
            "-n",
            "helm",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1"
    );
    helm(&[
        "upgrade",
        "demo",
        chart,
        "-n",
        "helm",
        "--set",
        "replicas=4",
    ]);
    assert_eq!(
        ok(&[
            "get",
            "uwl",
            "demo-web",
            "-n",
            "helm",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );
    assert!(helm(&["list", "-n", "helm"]).contains("demo"));
    helm(&["uninstall", "demo", "-n", "helm", "--wait"]);
    let (found, _, _) = kubectl(&["get", "uwl", "demo-web", "-n", "helm"]);
    assert!(!found, "uninstall should delete the Workload");
}

#[test]
fn python_client_creates_lists_and_watches_a_workload() {
    let script = univrs_tests::repo_root().join("tests/python/workload_client.py");
    let (ok, out, err) = run(Command::new(tool("venv/bin/python"))
        .arg(script)
        .arg(&cp().kubeconfig)
        .arg("python"));
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("defaults restartPolicy Always"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
}

#[test]
fn kill_9_of_every_process_loses_no_acknowledged_write() {
    // A private control plane, side by side with the shared one.
    let dir = std::env::temp_dir().join(format!("univrs-test-{}-crash", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = univrs_tests::free_port();
    let first = ControlPlane::start_in(&dir, port).expect("private control plane");
    first.install_crds().unwrap();
    assert_ne!(first.server, cp().server);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created: Vec<String> = rt.block_on(async {
        let client = first.client().await.unwrap();
        let api: kube::Api<univrs_api::Workload> = kube::Api::namespaced(client, "default");
        let mut names = Vec::new();
        for i in 0..50 {
            let w: univrs_api::Workload =
                serde_yaml::from_str(&workload(&format!("w{i}"), "")).unwrap();
            api.create(&Default::default(), &w)
                .await
                .expect("acknowledged create");
            names.push(format!("w{i}"));
        }
        names
    });

    // kill -9 the supervisor and its children at once.
    let sup = first.supervisor_pid().unwrap() as i32;
    let mut pids = vec![sup];
    pids.extend(
        univrs_tests::children_of(sup as u32)
            .into_iter()
            .map(|p| p as i32),
    );
    assert_eq!(
        pids.len(),
        4,
        "supervisor, etcd, kube-apiserver and kube-controller-manager"
    );
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    drop(first);
    // Each is gone or a zombie before the restart (SIGKILL is not instant: a process in the
    // kernel, e.g. fsyncing etcd's WAL, dies when it returns).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for pid in &pids {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            if matches!(state, None | Some('Z' | 'X')) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} is still running (state {state:?}) 60 s after SIGKILL: {stat}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    let second = ControlPlane::start_in(&dir, port).expect("restart on the same data directory");
    rt.block_on(async {
        use futures::StreamExt;
        let client = second.client().await.unwrap();
        let api: kube::Api<univrs_api::Workload> = kube::Api::namespaced(client, "default");
        let list = api.list(&Default::default()).await.unwrap();
        let mut names: Vec<String> = list
            .items
            .iter()
            .filter_map(|w| w.metadata.name.clone())
            .collect();
        names.sort();
        let mut want = created.clone();
        want.sort();
        assert_eq!(names, want, "every acknowledged object survives kill -9");
        // A watch resumes from the listed resourceVersion and sees new changes.
        let rv = list.metadata.resource_version.unwrap();
        let mut stream = api
            .watch(&kube::api::WatchParams::default(), &rv)
            .await
            .unwrap()
            .boxed();
        api.patch(
            "w0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec":{"replicas":7}})),
        )
        .await
        .unwrap();
        let event = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match event {
            kube::api::WatchEvent::Modified(w) => assert_eq!(w.spec.replicas, 7),
            other => panic!("unexpected watch event {other:?}"),
        }
    });
    second.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

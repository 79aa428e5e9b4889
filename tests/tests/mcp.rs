//! `univrs mcp` end to end against the real control plane, with the official MCP Python SDK as
//! the client (scripts in `tests/python/`): over stdio (tools, schemas, deploy, scale, status,
//! errors, nodes, credit, vouches, the summary resource) and over streamable HTTP with TLS and
//! a bearer token. Also the generic `kubernetes-mcp-server` creating a Workload through its
//! `resources_create_or_update` tool. The controller is not running: every check is about what
//! the MCP servers write to and read from the API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::DRAIN_ANNOTATION;
use univrs_api::{CreditLine, Node, Vouch, Workload};
use univrs_tests::cluster::{ensure_namespace, node_object};
use univrs_tests::{ControlPlane, Guarded, repo_root, univrs_bin};

fn tool(path: &str) -> PathBuf {
    repo_root().join(".tools").join(path)
}

fn script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
}

/// Runs a Python test script with the project's virtualenv; panics with its output on failure.
async fn python(args: Vec<std::ffi::OsString>) -> String {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool("venv/bin/python"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("running the virtualenv's python (scripts/install-deps makes it)")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.trim_end().ends_with("done"), "{stdout}\n{stderr}");
    stdout
}

/// Writes `id` as a key file (PKCS#8 PEM, mode 0600), as `univrs identity generate` does.
fn write_key(path: &Path, id: &NodeIdentity) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(id.to_pkcs8_pem().as_bytes()).unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("univrs-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_deploys_scales_inspects_and_manages_the_cluster_over_stdio() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "mcp-stdio";
    ensure_namespace(&client, ns).await;
    let (library, school) = ("mcp-library", "mcp-school");
    // The server signs vouches as the library node, so its vouch comes from a known node.
    let library_id = NodeIdentity::generate();
    let nodes: Api<Node> = Api::all(client.clone());
    for (name, id) in [(library, &library_id), (school, &NodeIdentity::generate())] {
        nodes
            .create(
                &PostParams::default(),
                &node_object(name, &[("site", "library")], id),
            )
            .await
            .unwrap();
    }
    // An instance placed on the school node, as the controller would record it.
    let workloads: Api<Workload> = Api::namespaced(client.clone(), ns);
    let placed: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "placed"},
        "spec": {"replicas": 1, "containers": [{"name": "c", "image": "demo/busybox:latest"}]}
    }))
    .unwrap();
    let placed = workloads
        .create(&PostParams::default(), &placed)
        .await
        .unwrap();
    // An Event about it, published the way the controller publishes its Events.
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "univrs-controller".into(),
            instance: None,
        },
    )
    .publish(
        &Event {
            type_: EventType::Warning,
            reason: "FailedScheduling".into(),
            note: Some("0/2 nodes are available: 2 didn't match the nodeSelector".into()),
            action: "Scheduling".into(),
            secondary: None,
        },
        &placed.object_ref(&()),
    )
    .await
    .unwrap();
    let status = serde_json::json!({"status": {"replicas": 1, "instances": [{"name": "placed-0", "node": school}]}});
    workloads
        .patch_status("placed", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    // A credit line the namespace has drawn 1,500 milli-credits on.
    let lines: Api<CreditLine> = Api::all(client.clone());
    let line_name = format!("{library}-{ns}");
    let line: CreditLine = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine", "metadata": {"name": line_name},
        "spec": {"creditor": format!("node/{library}"), "debtor": format!("namespace/{ns}"), "limit": 10_000}
    }))
    .unwrap();
    lines.create(&PostParams::default(), &line).await.unwrap();
    lines
        .patch_status(
            &line_name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"status": {"balance": 1500}})),
        )
        .await
        .unwrap();
    let dir = temp_dir("mcp-stdio");
    let key = dir.join("identity.pem");
    write_key(&key, &library_id);

    let out = python(vec![
        script("mcp_stdio.py").into(),
        univrs_bin().into(),
        cp.kubeconfig.clone().into(),
        ns.into(),
        key.into(),
        library.into(),
        school.into(),
    ])
    .await;

    // What the agent did is in the API server.
    let web = workloads.get("mcp-web").await.unwrap();
    assert_eq!(web.spec.replicas, 3);
    assert_eq!(
        web.spec.containers[0].image,
        "registry.example:5000/demo/busybox:1.36"
    );
    assert_eq!(web.spec.containers[0].ports[0].host_port, Some(30080));
    let managers: Vec<String> = web
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "univrs-mcp"), "{managers:?}");
    assert!(workloads.get_opt("mcp-gone").await.unwrap().is_none());
    let a = nodes.get(library).await.unwrap();
    assert!(!a.spec.unschedulable && !a.annotations().contains_key(DRAIN_ANNOTATION));
    let b = nodes.get(school).await.unwrap();
    assert!(b.spec.unschedulable);
    assert_eq!(
        b.annotations().get(DRAIN_ANNOTATION).map(String::as_str),
        Some("true")
    );
    let vouch_name = out
        .lines()
        .find_map(|l| l.strip_prefix("vouch "))
        .expect("the script names its vouch");
    let vouch = Api::<Vouch>::all(client.clone())
        .get(vouch_name.trim())
        .await
        .unwrap();
    let signer = vouch
        .spec
        .verify(&Time(Timestamp::now()))
        .expect("the vouch is signed correctly and not expired");
    assert_eq!(signer, library_id.public());
    assert_eq!(vouch.spec.subject, b.spec.did);
    assert_eq!(vouch.spec.weight, 0.6);
}

/// Starts `univrs mcp --listen 127.0.0.1:0` with its data directory under `data`; returns the
/// process, its URL and its stderr log. It is given no kubeconfig: it finds the control plane's
/// where `univrs control-plane` keeps it by default.
fn start_http_server(cp: &ControlPlane, data: &Path) -> (Guarded, String, PathBuf) {
    let log = data.join("mcp.log");
    let local = data.join("univrs/control-plane");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(&cp.kubeconfig, local.join("admin.kubeconfig")).unwrap();
    let mut cmd = Command::new(univrs_bin());
    cmd.args(["mcp", "--listen", "127.0.0.1:0"])
        .env_remove("KUBECONFIG")
        .env("XDG_DATA_HOME", data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut server = Guarded::spawn(cmd).unwrap();
    let stdout = server.0.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let url = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| {
            panic!(
                "expected `listening URL`, got {first:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .trim()
        .to_string();
    (server, url, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_request_needs_tls_and_the_bearer_token() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "mcp-http";
    ensure_namespace(&client, ns).await;
    let data = temp_dir("mcp-http");
    let (server, url, log) = start_http_server(cp, &data);
    assert!(
        url.starts_with("https://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    let token_file = data.join("univrs/mcp/token");
    let cert = data.join("univrs/mcp/tls.crt");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key_mode = std::fs::metadata(data.join("univrs/mcp/tls.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    python(vec![
        script("mcp_http.py").into(),
        url.into(),
        token_file.clone().into(),
        cert.clone().into(),
        ns.into(),
    ])
    .await;

    let web = Api::<Workload>::namespaced(client.clone(), ns)
        .get("http-web")
        .await
        .unwrap();
    assert_eq!(web.spec.replicas, 2);
    drop(server);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    eprintln!("{logged}");
    assert!(
        logged.contains(&token_file.display().to_string()),
        "{logged}"
    );
    assert!(logged.contains("SHA-256 fingerprint"), "{logged}");
    assert!(logged.contains("using the local control plane"), "{logged}");
    assert!(
        !logged.contains(token.trim()),
        "the token must never be logged"
    );
    assert!(
        logged.contains("refused a request without the right bearer token"),
        "{logged}"
    );
}

#[test]
fn unsafe_listeners_and_open_token_files_are_refused() {
    let cp = ControlPlane::shared();
    let (ok, _, err) = univrs_tests::run(
        Command::new(univrs_bin())
            .args(["mcp", "--listen", "0.0.0.0:0", "--no-tls", "--kubeconfig"])
            .arg(&cp.kubeconfig),
    );
    assert!(!ok);
    assert!(
        err.contains("refusing to serve plain HTTP on 0.0.0.0:0, which is not a loopback address"),
        "{err}"
    );

    let dir = temp_dir("mcp-token");
    let token = dir.join("token");
    std::fs::write(&token, "a".repeat(64)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = univrs_tests::run(
        Command::new(univrs_bin())
            .args(["mcp", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(&token)
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            .env("XDG_DATA_HOME", &dir),
    );
    assert!(!ok);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains(&"a".repeat(64)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_kubernetes_mcp_server_creates_a_workload() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "mcp-generic";
    ensure_namespace(&client, ns).await;
    python(vec![
        script("mcp_generic.py").into(),
        tool("npm/node_modules/.bin/kubernetes-mcp-server").into(),
        cp.kubeconfig.clone().into(),
        ns.into(),
    ])
    .await;
    let w = Api::<Workload>::namespaced(client, ns)
        .get("generic-web")
        .await
        .expect("the Workload kubernetes-mcp-server created");
    assert_eq!(w.spec.replicas, 2);
    assert_eq!(w.spec.containers[0].image, "demo/busybox:latest");
    // The API server's defaults applied, as for any client.
    assert_eq!(w.spec.termination_grace_period_seconds, 30);
}

/// Tool-call latency over stdio and HTTPS, and the server's memory; printed, not asserted.
/// `cargo test -p univrs-tests --test mcp -- --ignored --nocapture bench_tool_calls`
/// (`UNIVRS_BENCH_CALLS`, default 200, calls per tool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it on purpose"]
async fn bench_tool_calls() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "mcp-bench";
    ensure_namespace(&client, ns).await;
    let data = temp_dir("mcp-bench");
    let (server, url, _) = start_http_server(cp, &data);
    let calls = std::env::var("UNIVRS_BENCH_CALLS").unwrap_or_else(|_| "200".into());
    let idle = univrs_tests::rss_mib(server.0.id());
    python(vec![
        script("mcp_bench.py").into(),
        univrs_bin().into(),
        cp.kubeconfig.clone().into(),
        ns.into(),
        url.into(),
        data.join("univrs/mcp/token").into(),
        data.join("univrs/mcp/tls.crt").into(),
        calls.into(),
    ])
    .await;
    println!(
        "univrs mcp --listen RSS: {idle:.1} MiB idle, {:.1} MiB after the benchmark",
        univrs_tests::rss_mib(server.0.id())
    );
}

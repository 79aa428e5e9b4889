//! The node agent end to end: a real `univrs agent` process against the real API server, with
//! the real controller placing Workloads on it.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use std::time::Duration;
use univrs_api::{Node, Workload};
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller};
use univrs_tests::{ControlPlane, curl};

const NS: &str = "agent-e2e";

/// A Workload for the agent labelled `test=<agent>` only: the tests of this file run side by side
/// against one control plane, each with its own agent.
fn workload(name: &str, replicas: i32, image: &str, agent: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": {"replicas": replicas, "nodeSelector": {"test": agent}, "containers": [{"name": "app", "image": image,
            "command": ["sh", "-c", "echo hello from $HOSTNAME; sleep 3600"],
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_renews_and_refuses_a_taken_name() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }
    let agent = AgentProc::start(
        cp,
        "reg-a",
        &[
            "--cpu",
            "2",
            "--memory",
            "2Gi",
            "--label",
            "univrs.io/org=library",
        ],
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually(
        "the agent's Node object",
        Duration::from_secs(60),
        async || match nodes.get_opt("reg-a").await {
            Ok(Some(n)) => (Some(n), String::new()),
            other => (None, format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(node.spec.capacity.cpu.0, "2");
    assert_eq!(node.spec.capacity.memory.0, "2Gi");
    assert!(
        node.spec.peer_id.starts_with("12D3KooW"),
        "{}",
        node.spec.peer_id
    );
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("univrs.io/org").map(String::as_str),
        Some("library")
    );
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );

    // The agent's own observations: it has been up all of its (short) life.
    eventually(
        "the node's observations",
        Duration::from_secs(30),
        async || {
            let n = nodes.get("reg-a").await.unwrap();
            let obs = n.status.and_then(|s| s.observations);
            (obs.clone().filter(|o| o.uptime == 1.0), format!("{obs:?}"))
        },
    )
    .await;

    // The Lease is renewed: its renewTime moves.
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let renew = async || {
        leases
            .get_opt("univrs-node-reg-a")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.renew_time)
    };
    let first = eventually("the agent's Lease", Duration::from_secs(30), async || {
        (renew().await, "no Lease yet".into())
    })
    .await;
    eventually("a Lease renewal", Duration::from_secs(10), async || {
        let now = renew().await;
        (now.clone().filter(|t| *t != first), format!("{now:?}"))
    })
    .await;

    // The local API: where it listens is published on the Node; health and status answer.
    let api_url = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("univrs.io/agent-api"))
        .cloned()
        .expect("the API annotation");
    assert!(api_url.starts_with("http://127.0.0.1:"), "{api_url}");
    let (code, body) = curl(&[&format!("{api_url}/healthz")]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "ok"));
    let (code, body) = curl(&[&format!("{api_url}/api/status")]);
    assert_eq!(code, "200", "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["node"], "reg-a");
    assert_eq!(status["peerId"].as_str(), Some(node.spec.peer_id.as_str()));
    let (code, body) = curl(&[&format!("{api_url}/api/credits")]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("\"account\":\"node/reg-a\""), "{body}");
    let (code, body) = curl(&[&format!("{api_url}/api/containers/nope/logs?tail=5")]);
    assert_eq!(code, "404", "{body}");
    assert!(body.contains("/api/status lists"), "{body}");
    let (_, metrics) = curl(&[&format!("{api_url}/metrics")]);
    assert!(metrics.contains("univrs_agent_uptime_seconds"), "{metrics}");

    // Another identity claiming the same name is refused, with a message saying what to do.
    let mut impostor = std::process::Command::new(univrs_tests::univrs_bin());
    impostor
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .arg("--data-dir")
        .arg(format!("/tmp/ua-{}-imp", std::process::id()))
        .args(["--node-name", "reg-a"]);
    let out = impostor.output().unwrap();
    let _ = std::fs::remove_dir_all(format!("/tmp/ua-{}-imp", std::process::id()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to another identity") && err.contains("--node-name"),
        "{err}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_off_loopback_needs_tls_and_a_token() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, LEASE_NS).await;
    let dir = tempfile::tempdir().unwrap();
    // Refused outright without TLS and a token.
    let out = std::process::Command::new(univrs_tests::univrs_bin())
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .arg("--data-dir")
        .arg(format!("/tmp/ua-{}-exp", std::process::id()))
        .args(["--node-name", "exp-a", "--api-addr", "0.0.0.0:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(format!("/tmp/ua-{}-exp", std::process::id()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--api-tls-cert"),
        "{err}"
    );

    // A token file others may read is refused too.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-0123456789abcdefghij").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(univrs_tests::univrs_bin())
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .arg("--api-token-file")
        .arg(&token_file)
        .args(["--node-name", "exp-b", "--data-dir", "/tmp/ua-unused"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // With TLS and a token on all addresses: HTTPS, and /api needs the token.
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let port = univrs_tests::free_port();
    let addr = format!("0.0.0.0:{port}");
    let _agent = AgentProc::start(
        cp,
        "exp-c",
        &[
            "--api-addr",
            &addr,
            "--api-token-file",
            token_file.to_str().unwrap(),
            "--api-tls-cert",
            cert_file.to_str().unwrap(),
            "--api-tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let url = format!("https://127.0.0.1:{port}");
    let ca = cert_file.to_str().unwrap();
    eventually("the agent's TLS API", Duration::from_secs(60), async || {
        let (code, body) = curl(&["--cacert", ca, &format!("{url}/healthz")]);
        ((code == "200").then_some(()), format!("{code} {body}"))
    })
    .await;
    // Clients that connect and say nothing hold up no one: each TLS handshake runs on its own
    // with its own deadline (10 s), so a real request is still answered at once.
    let silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let (code, body) = curl(&["--cacert", ca, "--max-time", "5", &format!("{url}/healthz")]);
    assert_eq!(
        code, "200",
        "a request waited behind silent clients: {body}"
    );
    drop(silent);
    let (code, body) = curl(&["--cacert", ca, &format!("{url}/api/status")]);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let (code, _) = curl(&[
        "--cacert",
        ca,
        "-H",
        "Authorization: Bearer wrong-token-0123456789abcdefghijk",
        &format!("{url}/api/status"),
    ]);
    assert_eq!(code, "401");
    let (code, body) = curl(&[
        "--cacert",
        ca,
        "-H",
        "Authorization: Bearer s3cret-token-0123456789abcdefghij",
        &format!("{url}/api/status"),
    ]);
    assert_eq!(code, "200", "{body}");
    // Plain HTTP to the TLS port gets nothing.
    let (code, _) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(code, "000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_instances_placed_on_it() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }
    let _agent = AgentProc::start(
        cp,
        "rep-a",
        &["--cpu", "2", "--memory", "2Gi", "--label", "test=rep-a"],
    );
    let _controller = start_controller(cp);
    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    api.create(
        &PostParams::default(),
        &workload("rep", 1, "127.0.0.1:1/missing/image:latest", "rep-a"),
    )
    .await
    .unwrap();
    // The agent owns phase and message of its instance: an image it cannot pull is reported.
    let inst = eventually("the agent's report", Duration::from_secs(90), async || {
        let w = api.get("rep").await.unwrap();
        let inst = w.status.as_ref().and_then(|s| s.instances.first().cloned());
        let state = format!("{inst:?}");
        (
            inst.filter(|i| i.node.as_deref() == Some("rep-a") && i.message.is_some()),
            state,
        )
    })
    .await;
    assert!(
        inst.message
            .as_deref()
            .unwrap_or_default()
            .contains("pulling image"),
        "{inst:?}"
    );
    assert_eq!(inst.ready, Some(false));
    let usage = inst.usage.expect("usage reported from the start");
    assert_eq!(usage.node, "rep-a");
    assert_eq!(Some(&usage.placed_at), inst.placed_at.as_ref());
}

/// The instance `name` of Workload `wl`, if reported.
fn instance_of(w: &Workload, name: &str) -> Option<univrs_api::resources::workload::Instance> {
    w.status
        .as_ref()
        .and_then(|s| s.instances.iter().find(|i| i.name == name).cloned())
}

/// A Workload with `body` as its spec, for the agent labelled `test=run-a` only.
fn spec(name: &str, mut body: serde_json::Value) -> Workload {
    body["nodeSelector"] = serde_json::json!({"test": "run-a"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": body
    }))
    .unwrap()
}

/// Mount points of containers under the data directory `dir` (root filesystems, network
/// namespaces); the node's own user namespace (`runtime/userns`) is no container's.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.display().to_string();
    let node = dir.join("runtime/userns").display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&d) && *m != node)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_serves_restarts_readopts_and_cleans_up_real_containers() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "agent-run";
    for n in [ns, LEASE_NS] {
        ensure_namespace(&client, n).await;
    }
    let mut agent = AgentProc::start(
        cp,
        "run-a",
        &["--cpu", "4", "--memory", "4Gi", "--label", "test=run-a"],
    );
    let _controller = start_controller(cp);
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let nodes: Api<Node> = Api::all(client.clone());

    // The demo image's default command serves a page; readiness is an HTTP probe.
    api.create(
        &PostParams::default(),
        &spec(
            "web",
            serde_json::json!({"replicas": 1, "containers": [{"name": "app",
                "image": "univrs.local/demo:latest",
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &spec(
            "crash",
            serde_json::json!({"replicas": 1, "restartPolicy": "Always", "containers": [{"name": "app",
                "image": "univrs.local/demo:latest",
                "command": ["sh", "-c", "echo boom from $HOSTNAME; exit 3"]}]}),
        ),
    )
    .await
    .unwrap();
    api.create(
        &PostParams::default(),
        &spec(
            "hog",
            serde_json::json!({"replicas": 1, "restartPolicy": "OnFailure", "containers": [{"name": "app",
                "image": "univrs.local/demo:latest",
                "command": ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' x); sleep 600"],
                "resources": {"limits": {"memory": "24Mi"}}}]}),
        ),
    )
    .await
    .unwrap();

    let web = eventually(
        "web Running and ready",
        Duration::from_secs(120),
        async || {
            let w = api.get("web").await.unwrap();
            let i = instance_of(&w, "web-0");
            let ok = i.as_ref().is_some_and(|i| {
                i.phase == Some(univrs_api::resources::workload::InstancePhase::Running)
                    && i.ready == Some(true)
            }) && w.status.as_ref().and_then(|s| s.ready_replicas) == Some(1);
            (ok.then_some(w), format!("{i:?}"))
        },
    )
    .await;
    assert!(instance_of(&web, "web-0").unwrap().started_at.is_some());

    // Its page answers on its own address, and says which instance served it.
    let node = nodes.get("run-a").await.unwrap();
    let api_url = node.metadata.annotations.unwrap()["univrs.io/agent-api"].clone();
    let (_, body) = curl(&[&format!("{api_url}/api/status")]);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inst = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "web-0")
        .cloned()
        .expect("web-0 in the agent's status");
    let ip = inst["ip"].as_str().expect("an address").to_string();
    // The Workload's status gives the same address (the agent writes it).
    eventually(
        "web-0's address in its status",
        Duration::from_secs(30),
        async || {
            let w = api.get("web").await.unwrap();
            let got = instance_of(&w, "web-0").and_then(|i| i.ip.clone());
            (
                (got.as_deref() == Some(ip.as_str())).then_some(()),
                format!("{got:?}"),
            )
        },
    )
    .await;
    let (code, page) = curl(&[&format!("http://{ip}:8080/")]);
    assert_eq!(code, "200", "{page}");
    assert!(page.contains("served by web-0"), "{page}");

    // A crashing container is restarted with backoff, its output is in the logs API.
    let crash = eventually(
        "crash restarted twice",
        Duration::from_secs(90),
        async || {
            let w = api.get("crash").await.unwrap();
            let i = instance_of(&w, "crash-0");
            (
                i.clone().filter(|i| i.restarts.unwrap_or(0) >= 2),
                format!("{i:?}"),
            )
        },
    )
    .await;
    assert!(
        crash
            .message
            .as_deref()
            .unwrap_or("")
            .contains("exited with code 3"),
        "{crash:?}"
    );
    let (_, body) = curl(&[&format!("{api_url}/api/status")]);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let crash_cid = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "crash-0")
        .and_then(|i| i["containers"][0].as_str().map(str::to_string))
        .expect("crash-0's container id");
    eventually("crash's log", Duration::from_secs(30), async || {
        let (code, log) = curl(&[&format!("{api_url}/api/containers/{crash_cid}/logs?tail=5")]);
        (
            (code == "200" && log.contains("boom from crash-0")).then_some(()),
            format!("{code} {log}"),
        )
    })
    .await;

    // Over its memory limit: OOM-killed, said so, and restarted (OnFailure).
    let hog = eventually(
        "hog OOM-killed and restarted",
        Duration::from_secs(120),
        async || {
            let w = api.get("hog").await.unwrap();
            let i = instance_of(&w, "hog-0");
            (
                i.clone().filter(|i| {
                    i.restarts.unwrap_or(0) >= 1
                        && i.message.as_deref().unwrap_or("").contains("OOMKilled")
                }),
                format!("{i:?}"),
            )
        },
    )
    .await;
    eprintln!("hog: {:?}", hog.message);

    // kill -9 of the agent: the web container keeps running and is re-adopted, not doubled.
    let web_pid = |a: &AgentProc| {
        std::fs::read_dir(a.data_dir.join("runtime/containers"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("web-0-"))
            .filter_map(|e| std::fs::read_to_string(e.path().join("pid")).ok())
            .collect::<Vec<_>>()
    };
    let before = web_pid(&agent);
    assert_eq!(before.len(), 1, "{before:?}");
    agent.kill();
    agent.restart();
    eventually(
        "the agent back, web still ready",
        Duration::from_secs(60),
        async || {
            let w = api.get("web").await.unwrap();
            let log = agent.log_text();
            let readopted = log.matches("re-adopting").count() >= 3;
            let i = instance_of(&w, "web-0");
            (
                (readopted && i.as_ref().is_some_and(|i| i.ready == Some(true))).then_some(()),
                format!("{i:?}"),
            )
        },
    )
    .await;
    assert_eq!(web_pid(&agent), before, "the same container, not a new one");
    let w = api.get("web").await.unwrap();
    assert_eq!(instance_of(&w, "web-0").unwrap().restarts, Some(0));

    // Delete everything: nothing is left behind on the node.
    for n in ["web", "crash", "hog"] {
        api.delete(n, &Default::default()).await.unwrap();
    }
    eventually(
        "every container gone",
        Duration::from_secs(90),
        async || {
            let containers: Vec<String> =
                std::fs::read_dir(agent.data_dir.join("runtime/containers"))
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
            let mounts = mounts_under(&agent.data_dir);
            let records: Vec<String> = std::fs::read_dir(agent.data_dir.join("instances"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (
                (containers.is_empty() && mounts.is_empty() && records.is_empty()).then_some(()),
                format!("containers {containers:?}, mounts {mounts:?}, records {records:?}"),
            )
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_from_a_registry_and_answers_on_its_host_port() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    let ns = "agent-pull";
    for n in [ns, LEASE_NS] {
        ensure_namespace(&client, n).await;
    }
    // A real registry on loopback with the busybox image the harness builds with umoci,
    // reached over plain HTTP without --insecure-registry (it is on this machine).
    let registry = univrs_tests::registry::Registry::start();
    let image = registry.push_busybox("demo/portal:1.0");
    let agent = AgentProc::start(cp, "pull-a", &["--label", "test=pull-a"]);
    let _controller = start_controller(cp);
    let port = univrs_tests::free_host_port();
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let wl: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "portal"},
        "spec": {"replicas": 1, "nodeSelector": {"test": "pull-a"}, "containers": [{"name": "web",
            "image": image,
            "command": ["sh", "-c", "mkdir -p /www && echo portal on $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"containerPort": 8080, "hostPort": port}],
            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &wl).await.unwrap();
    eventually(
        "the pulled image running and ready",
        Duration::from_secs(120),
        async || {
            let w = api.get("portal").await.unwrap();
            let i = instance_of(&w, "portal-0");
            (
                i.clone().filter(|i| i.ready == Some(true)),
                format!("{i:?}"),
            )
        },
    )
    .await;
    // The host port answers on loopback, forwarded by CNI's portmap into the container.
    let (code, page) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(code, "200", "{page}");
    assert!(page.contains("portal on portal-0"), "{page}");
    let pid = agent.child.as_ref().unwrap().0.id();
    eprintln!(
        "agent RSS with one instance: {:.1} MiB",
        univrs_tests::rss_mib(pid)
    );

    api.delete("portal", &Default::default()).await.unwrap();
    eventually(
        "the host port closed after delete",
        Duration::from_secs(60),
        async || {
            let (code, _) = curl(&["--max-time", "2", &format!("http://127.0.0.1:{port}/")]);
            ((code == "000").then_some(()), code)
        },
    )
    .await;
}

//! The escape suite: a Workload's author tries to reach past its container on a lent machine,
//! with real containers through the real control plane, a real agent and the real controller.
//! Each attack is tried for real, fails, and the Workload's status or Events say so:
//!
//! - an exec probe that makes a device node for the host's disk and reads it (probes run
//!   inside the container: its user, cgroup, seccomp and capabilities);
//! - an image that ships device nodes (skipped and counted);
//! - `hostPort: 22` (outside the owner's range: explained by the scheduler) and the agent's own
//!   API port (in range, refused by the agent);
//! - a fork storm (the pids limit stops it) and memory without limits (limited by the request);
//! - connections to the host's own ports, to the owner's LAN, to cloud metadata and to another
//!   namespace's container (refused), while the internet and its own namespace answer;
//! - root in the container, which is an unprivileged id on the host;
//! - an `oci:` image from a host directory the owner did not list;
//! - another namespace's private image, already on the node: without the registry login
//!   (none, or a guessed one) it is not run; the owner's login is sealed to the node alone.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use std::time::Duration;
use univrs_api::Workload;
use univrs_api::resources::workload::{Instance, InstancePhase};
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller};
use univrs_tests::outside::{self, Outside};
use univrs_tests::registry::{Registry, busybox_layout};
use univrs_tests::{ControlPlane, free_host_port};

const SCHOOL: &str = "esc-school";
const LIBRARY: &str = "esc-library";
const DEMO: &str = "univrs.local/demo:latest";
const WAIT: Duration = Duration::from_secs(120);
const SCHOOL_PASSWORD: &str = "s3cret-of-the-school";

/// A Workload for this file's agent only.
fn workload(name: &str, mut spec: serde_json::Value) -> Workload {
    spec["nodeSelector"] = serde_json::json!({"test": "esc-a"});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// One container running `command` in the demo image, with `extra` merged into it.
fn one(name: &str, command: &str, extra: serde_json::Value) -> Workload {
    let mut c = serde_json::json!({"name": "app", "image": DEMO, "command": ["sh", "-c", command]});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    workload(name, serde_json::json!({"replicas": 1, "containers": [c]}))
}

fn instance(w: &Workload) -> Option<Instance> {
    w.status.as_ref()?.instances.first().cloned()
}

/// Waits until `name`'s first instance satisfies `ok`; returns it.
async fn until(
    api: &Api<Workload>,
    name: &str,
    what: &str,
    ok: impl Fn(&Instance) -> bool,
) -> Instance {
    eventually(what, WAIT, async || {
        let i = api.get(name).await.ok().as_ref().and_then(instance);
        (i.clone().filter(|i| ok(i)), format!("{i:?}"))
    })
    .await
}

fn running(i: &Instance) -> bool {
    i.phase == Some(InstancePhase::Running)
}

/// The log lines of instance `inst`'s (first) container through the agent's API.
fn logs(agent: &univrs_tests::agent::AgentApi, inst: &Instance) -> Vec<String> {
    agent.instance_logs(&inst.name)
}

/// The notes of Events with `reason` in `ns`.
async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_cannot_reach_past_its_container() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for n in [SCHOOL, LIBRARY, LEASE_NS] {
        ensure_namespace(&client, n).await;
    }
    let layout = busybox_layout();
    // The school's private registry, with a login only the school has.
    let registry = Registry::start_with_auth("school", SCHOOL_PASSWORD);
    let private_image = registry.push_busybox("school/app:v1");
    // The agent's API listens on a port inside the hostPort range: a Workload asking for it
    // passes the scheduler and must be refused by the agent.
    let api_port = free_host_port();
    let agent = AgentProc::start(
        cp,
        "esc-a",
        &[
            "--cpu",
            "2",
            "--memory",
            "2Gi",
            "--label",
            "test=esc-a",
            "--pids-limit",
            "64",
            "--api-addr",
            &format!("127.0.0.1:{api_port}"),
            "--oci-layout-dir",
            &layout.parent().unwrap().display().to_string(),
            "--insecure-registry",
            registry.host(),
        ],
    );
    let _controller = start_controller(cp);
    let school: Api<Workload> = Api::namespaced(client.clone(), SCHOOL);
    let library: Api<Workload> = Api::namespaced(client.clone(), LIBRARY);
    let pp = PostParams::default();
    let serve =
        "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www";
    let ready_http = serde_json::json!({"readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}});
    for (api, name) in [(&school, "web"), (&library, "web")] {
        api.create(&pp, &one(name, serve, ready_http.clone()))
            .await
            .unwrap();
    }
    let mut setup: Vec<Workload> = Vec::new();
    // Probes run inside the container: a probe that would reach the host's disk fails; one
    // that checks it runs confined (seccomp, the user namespace, the container's cgroup)
    // passes.
    setup.push(one(
                "probe-escape",
                "sleep 3600",
                serde_json::json!({"readinessProbe": {"exec": {"command": ["sh", "-c",
                    "mknod /tmp/disk b 8 0 && head -c 512 /tmp/disk >/dev/null"]}, "periodSeconds": 1}}),
            ));
    setup.push(one(
                "probe-confined",
                "sleep 3600",
                serde_json::json!({"readinessProbe": {"exec": {"command": ["sh", "-c",
                    "grep -q '^Seccomp:.*2' /proc/self/status && ! grep -q 4294967295 /proc/self/uid_map && [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ]"]},
                    "periodSeconds": 1}}),
            ));
    // An image with device nodes.
    setup.push(workload(
                "devices",
                serde_json::json!({"replicas": 1, "containers": [{"name": "app",
                    "image": format!("oci:{}:devices", layout.display()),
                    "command": ["sh", "-c", "for d in /hostdisk /mem; do test -e $d && echo $d present || echo $d absent; done; sleep 3600"]}]}),
            ));
    // Host ports: the owner's ssh, and the agent's own port.
    setup.push(one(
        "ssh",
        "sleep 3600",
        serde_json::json!({"ports": [{"containerPort": 22, "hostPort": 22}]}),
    ));
    setup.push(one(
        "agent-port",
        "sleep 3600",
        serde_json::json!({"ports": [{"containerPort": 8080, "hostPort": api_port}]}),
    ));
    // A fork storm, bounded by the test (200 sleeps) and stopped by the pids limit (64).
    setup.push(one(
        "forks",
        // The storm runs in a subshell (busybox's sh gives up at the first fork it is refused);
        // the shell itself then needs no fork to report and stay.
        "(n=0; while [ $n -lt 200 ]; do sleep 600 & n=$((n+1)); done); echo tried; exec sleep 3600",
        serde_json::json!({}),
    ));
    // Memory without a limit: the request is the limit.
    setup.push(workload(
                "hog",
                serde_json::json!({"replicas": 1, "restartPolicy": "OnFailure", "containers": [{"name": "app",
                    "image": DEMO,
                    "command": ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' x); sleep 600"],
                    "resources": {"requests": {"memory": "24Mi"}}}]}),
            ));
    // A host directory the owner did not list.
    setup.push(workload(
        "host-dir",
        serde_json::json!({"replicas": 1, "containers": [{"name": "app",
                    "image": "oci:/etc:latest", "command": ["true"]}]}),
    ));

    for w in &setup {
        school.create(&pp, w).await.unwrap();
    }

    // Placement and network: the two web servers and their addresses.
    let school_web = until(&school, "web", "school's web ready", |i| {
        i.ready == Some(true)
    })
    .await;
    let library_web = until(&library, "web", "library's web ready", |i| {
        i.ready == Some(true)
    })
    .await;
    let school_ip = school_web.ip.clone().unwrap();
    let library_ip = library_web.ip.clone().unwrap();
    let agent_api = univrs_tests::agent::AgentApi::of(
        &Api::<univrs_api::Node>::all(client.clone())
            .get("esc-a")
            .await
            .unwrap(),
    );

    // Reaching out: the internet and its own namespace answer, nothing else does. The host
    // runs a service on all its addresses.
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut s in host_service.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nthe host\n");
        }
    });
    let lan = Outside::lan();
    let internet = Outside::internet();
    let gateway = {
        let ip: std::net::Ipv4Addr = school_ip.parse().unwrap();
        let o = ip.octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], 1)
    };
    let targets = [
        ("own-namespace", format!("{school_ip}:8080")),
        (
            "internet",
            format!("{}:{}", outside::INTERNET, outside::PORT),
        ),
        ("other-namespace", format!("{library_ip}:8080")),
        ("host-via-gateway", format!("{gateway}:{host_port}")),
        ("lan", format!("{}:{}", lan.addrs[0], outside::PORT)),
        (
            "metadata",
            format!("{}:{}", outside::METADATA, outside::PORT),
        ),
    ];
    let script: String = targets
        .iter()
        .map(|(what, t)| {
            let (host, port) = t.rsplit_once(':').unwrap();
            format!(
                "r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>/dev/null | tail -n1); echo \"{what}: ${{r:-refused}}\"; "
            )
        })
        .collect();
    school
        .create(
            &pp,
            &workload(
                "reach",
                serde_json::json!({"replicas": 1, "restartPolicy": "Never", "containers": [{"name": "app",
                    "image": DEMO, "command": ["sh", "-c", format!("{script} cat /proc/self/uid_map; sleep 3600")]}]}),
            ),
        )
        .await
        .unwrap();
    let reach = until(&school, "reach", "reach running", running).await;
    let lines = eventually("the reach results", WAIT, async || {
        let l = logs(&agent_api, &reach);
        (
            (l.len() > targets.len()).then(|| l.clone()),
            format!("{l:?}"),
        )
    })
    .await;
    let result = |what: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("{what} in {lines:?}"))
            .to_string()
    };
    assert_eq!(result("own-namespace"), "web-0", "{lines:?}");
    assert_eq!(result("internet"), internet.page(), "{lines:?}");
    for denied in ["other-namespace", "host-via-gateway", "lan", "metadata"] {
        assert_eq!(result(denied), "refused", "{denied}: {lines:?}");
    }
    // Root in the container is an unprivileged id on the host.
    let map = lines.last().unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(map[0], "0", "{map:?}");
    assert!(map[1].parse::<u64>().unwrap() >= 1 << 21, "{map:?}");
    drop((lan, internet));

    // Probes.
    let confined = until(&school, "probe-confined", "the confined probe ready", |i| {
        i.ready == Some(true)
    })
    .await;
    assert!(running(&confined));
    let escape = until(
        &school,
        "probe-escape",
        "the escaping probe reported",
        |i| {
            running(i)
                && i.message
                    .as_deref()
                    .is_some_and(|m| m.contains("readiness probe"))
        },
    )
    .await;
    assert_eq!(escape.ready, Some(false), "{escape:?}");

    // Device nodes.
    let devices = until(&school, "devices", "devices running", running).await;
    let lines = eventually("the devices' log", WAIT, async || {
        let l = logs(&agent_api, &devices);
        ((l.len() >= 2).then(|| l.clone()), format!("{l:?}"))
    })
    .await;
    assert_eq!(lines, vec!["/hostdisk absent", "/mem absent"]);
    let skipped = eventually("DevicesSkipped", WAIT, async || {
        let e = events(&client, SCHOOL, "DevicesSkipped").await;
        (e.first().cloned(), format!("{e:?}"))
    })
    .await;
    assert!(skipped.contains("2 block or character device"), "{skipped}");

    // Host ports.
    let w = eventually("ssh explained", WAIT, async || {
        let w = school.get("ssh").await.unwrap();
        let scheduled = w.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Scheduled")
                .cloned()
        });
        (
            scheduled
                .clone()
                .filter(|c| c.status == "False" && c.message.contains("22/TCP")),
            format!("{scheduled:?}"),
        )
    })
    .await;
    assert!(
        w.message.contains("outside the node's spec.hostPorts"),
        "{}",
        w.message
    );
    let refused = until(&school, "agent-port", "the agent's port refused", |i| {
        i.message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("hostPort {api_port}/TCP")))
    })
    .await;
    assert_ne!(refused.phase, Some(InstancePhase::Running), "{refused:?}");
    // The agent still answers on its port.
    assert!(agent_api.get("/healthz").0.contains("200"));

    // The fork storm stopped at the pids limit, and the node still runs containers.
    let forks = until(&school, "forks", "forks running", running).await;
    let lines = eventually("the fork storm's end", WAIT, async || {
        let l = logs(&agent_api, &forks);
        (
            l.contains(&"tried".to_string()).then(|| l.clone()),
            format!("{l:?}"),
        )
    })
    .await;
    assert!(
        lines.iter().any(|l| l.contains("can't fork")),
        "the shell hit the limit: {lines:?}"
    );
    // The container's cgroup holds no more than the limit (its own count, from the host).
    let status = agent_api.get_json("/api/status");
    let cid = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "forks-0")
        .and_then(|i| i["containers"][0].as_str())
        .unwrap()
        .to_string();
    let dir = univrs_node_agent::runtime::cgroup::controller_dir(
        "pids",
        &univrs_node_agent::runtime::cgroup::cgroup_path("esc-a", &cid),
    )
    .unwrap();
    let current: u32 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((2..=64).contains(&current), "{current} processes");

    // Memory: the request became the limit.
    until(&school, "hog", "the hog OOM-killed and restarted", |i| {
        i.restarts.unwrap_or(0) >= 1
            && i.message
                .as_deref()
                .is_some_and(|m| m.contains("OOMKilled"))
    })
    .await;

    // The host's directories are not images.
    let host_dir = until(&school, "host-dir", "the host directory refused", |i| {
        i.message
            .as_deref()
            .is_some_and(|m| m.contains("--oci-layout-dir"))
    })
    .await;
    assert_ne!(host_dir.phase, Some(InstancePhase::Running));

    private_images(&client, &registry, &private_image).await;
    drop(agent);
}

/// A `kubernetes.io/dockerconfigjson` Secret with one login.
fn pull_secret(name: &str, registry: &str, user: &str, password: &str) -> Secret {
    let config = serde_json::json!({"auths": {registry: {"username": user, "password": password}}});
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))
    .unwrap()
}

/// The school pulls its private image with its own login; the library, on the same node
/// where that image is now stored, cannot run it without the login, nor with a guessed one.
async fn private_images(client: &kube::Client, registry: &Registry, image: &str) {
    let pp = PostParams::default();
    let school: Api<Workload> = Api::namespaced(client.clone(), SCHOOL);
    let library: Api<Workload> = Api::namespaced(client.clone(), LIBRARY);
    Api::<Secret>::namespaced(client.clone(), SCHOOL)
        .create(
            &pp,
            &pull_secret("regcred", registry.host(), "school", SCHOOL_PASSWORD),
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), LIBRARY)
        .create(
            &pp,
            &pull_secret("guess", registry.host(), "school", "password"),
        )
        .await
        .unwrap();
    let private = |name: &str, secrets: &[&str]| {
        let refs: Vec<_> = secrets
            .iter()
            .map(|s| serde_json::json!({"name": s}))
            .collect();
        workload(
            name,
            serde_json::json!({"replicas": 1, "imagePullSecrets": refs, "containers": [{"name": "app",
                "image": image, "command": ["sleep", "3600"]}]}),
        )
    };
    school
        .create(&pp, &private("private", &["regcred"]))
        .await
        .unwrap();
    until(
        &school,
        "private",
        "the school's private image running",
        running,
    )
    .await;
    // The login reached the node sealed: nowhere in the Workload in the clear.
    let w = school.get("private").await.unwrap();
    let creds = &w.status.as_ref().unwrap().image_pull_credentials;
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert_eq!(creds[0].node, "esc-a");
    assert!(creds[0].sealed.starts_with("v1."), "{creds:?}");
    let whole = serde_json::to_string(&w).unwrap();
    assert!(!whole.contains(SCHOOL_PASSWORD), "{whole}");

    // Now the image is in the node's store. The library tries it without the login (naming
    // a Secret it does not have) and with a guessed one.
    library
        .create(&pp, &private("stolen", &["nope"]))
        .await
        .unwrap();
    library
        .create(&pp, &private("guessed", &["guess"]))
        .await
        .unwrap();
    for name in ["stolen", "guessed"] {
        let refused = until(&library, name, "the registry's refusal", |i| {
            i.message
                .as_deref()
                .is_some_and(|m| m.contains("refused access"))
        })
        .await;
        assert_ne!(
            refused.phase,
            Some(InstancePhase::Running),
            "{name}: {refused:?}"
        );
        assert!(!refused.message.unwrap().contains("password"), "{name}");
    }
    let missing = eventually("FailedToRetrieveImagePullSecret", WAIT, async || {
        let e = events(client, LIBRARY, "FailedToRetrieveImagePullSecret").await;
        (e.first().cloned(), format!("{e:?}"))
    })
    .await;
    assert!(
        missing.contains(&format!("{LIBRARY}/nope does not exist")),
        "{missing}"
    );
    // The school's instance ran all along.
    let w = school.get("private").await.unwrap();
    assert!(running(&instance(&w).unwrap()));
}

//! Exposed ports (`spec.expose`) through the real control plane, the controller and two real
//! agents, each serving exposed ports on its own loopback address (as `univrs up` gives its
//! agents): a connection to either node reaches the one ready replica, on the node that runs
//! it directly and on the other through a stream over the mesh; a container of the portal's
//! namespace on the other node reaches it by name, one of another namespace does not; with no
//! ready replica, no node answers with content and the name's connections are closed.

use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::Duration;
use univrs_api::Workload;
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, start_controller};
use univrs_tests::{ControlPlane, free_host_port};

const NS: &str = "expose-portal";
const OTHER_NS: &str = "expose-copycat";
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_port_answers_on_every_node_from_wherever_a_replica_is_ready() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for n in [NS, LEASE_NS] {
        ensure_namespace(&client, n).await;
    }
    let port = free_host_port();
    let agent = |name: &str, addr: &str| {
        AgentProc::start(
            cp,
            name,
            &[
                "--cpu",
                "2",
                "--memory",
                "2Gi",
                "--label",
                &format!("test={name}"),
                "--expose-address",
                addr,
            ],
        )
    };
    let a_agent = agent("exp-a", "127.0.0.2");
    let mut b_agent = agent("exp-b", "127.0.0.3");
    let _controller = start_controller(cp);

    let api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let wl: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "portal"},
        "spec": {"replicas": 1, "nodeSelector": {"test": "exp-a"},
            "expose": [{"name": "web", "port": port, "targetPort": "http"}],
            "containers": [{"name": "web", "image": "univrs.local/demo:latest",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &wl).await.unwrap();

    // On the node that runs it, and on the other one through the mesh.
    for (node, addr) in [("exp-a", "127.0.0.2"), ("exp-b", "127.0.0.3")] {
        let target = format!("{addr}:{port}");
        let body = eventually(&format!("the portal through {node}"), WAIT, async || {
            let p = univrs_tests::http_get(&target);
            (
                p.clone().ok().filter(|b| b.contains("served by portal-0")),
                format!("{p:?}"),
            )
        })
        .await;
        assert!(body.starts_with("HTTP/1."), "{body}");
    }

    // A later Workload exposing the same port is told who holds it; the port stays the
    // portal's.
    ensure_namespace(&client, OTHER_NS).await;
    // Created in a later second than the portal: creation times have one-second resolution,
    // and a tie goes to the namespace that sorts first (the copy's).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let copy: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "copy"},
        "spec": {"replicas": 0, "expose": [{"name": "web", "port": port, "targetPort": 8080}],
            "containers": [{"name": "web", "image": "univrs.local/demo:latest"}]},
    }))
    .unwrap();
    let other: Api<Workload> = Api::namespaced(client.clone(), OTHER_NS);
    other.create(&PostParams::default(), &copy).await.unwrap();
    let exposed = |w: &Workload| {
        w.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Exposed").cloned())
    };
    let taken = eventually("the copy told the port is taken", WAIT, async || {
        let c = exposed(&other.get("copy").await.unwrap());
        (c.clone().filter(|c| c.status == "False"), format!("{c:?}"))
    })
    .await;
    assert_eq!(taken.reason, "PortTaken");
    assert!(
        taken.message.contains(&format!("held by {NS}/portal")),
        "{}",
        taken.message
    );
    let held = exposed(&api.get("portal").await.unwrap()).unwrap();
    assert_eq!(
        (held.status.as_str(), held.reason.as_str()),
        ("True", "Serving")
    );
    let body = univrs_tests::http_get(&format!("127.0.0.3:{port}")).unwrap();
    assert!(body.contains("served by portal-0"), "{body}");

    // Each Node says where it serves exposed ports.
    let nodes: Api<univrs_api::Node> = Api::all(client.clone());
    for (node, addr) in [("exp-a", "127.0.0.2"), ("exp-b", "127.0.0.3")] {
        let listed = eventually(&format!("{node}'s addresses"), WAIT, async || {
            let n = nodes.get(node).await.unwrap();
            let a = n.status.map(|s| s.addresses).unwrap_or_default();
            ((!a.is_empty()).then(|| a.clone()), format!("{a:?}"))
        })
        .await;
        assert_eq!(
            listed
                .iter()
                .map(|a| (a.type_.as_str(), a.address.as_str()))
                .collect::<Vec<_>>(),
            [("InternalIP", addr)]
        );
    }

    // By name from inside a container of the namespace, on the other node (through the mesh);
    // another namespace's container learns nothing of the name and cannot use the address.
    let vip = names_reach_across_nodes(&client, &api).await;
    a_node_of_no_namespace_is_refused_a_name(&client, port).await;
    // exp-b's agent restarts (its name service on new ports): its running client loses names
    // while it is down and has them again once it is back.
    b_agent.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    b_agent.restart();
    eventually(
        "names again after exp-b's agent restarted",
        WAIT,
        async || {
            // (Its API is on a new port: read the Node again.)
            let l = node_api(&client, "exp-b").await.instance_logs("client-0");
            let down = l.iter().any(|l| l == "name: none refused");
            let back = l.len() >= 3
                && l[l.len() - 3..]
                    .iter()
                    .all(|l| l.starts_with("name: ") && l.contains("served by portal-0"));
            ((down && back).then_some(()), format!("{l:?}"))
        },
    )
    .await;

    // No ready replica: no node has anything to give.
    api.patch(
        "portal",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
    )
    .await
    .unwrap();
    for addr in ["127.0.0.2", "127.0.0.3"] {
        let target = format!("{addr}:{port}");
        eventually(&format!("{target} without a replica"), WAIT, async || {
            let p = univrs_tests::http_get(&target);
            (p.clone().err(), format!("{p:?}"))
        })
        .await;
    }
    // The name still resolves, and a connection to it is closed at once.
    let b = node_api(&client, "exp-b").await;
    eventually("the name without a replica", WAIT, async || {
        let l = b.instance_logs("client-0");
        let hit = l
            .iter()
            .rev()
            .take(2)
            .any(|l| l == &format!("name: {vip} refused"));
        (hit.then_some(()), format!("{l:?}"))
    })
    .await;

    // The holder goes: the port passes to the copy at once (its condition is woken, not left
    // to the five-minute resync).
    api.delete("portal", &Default::default()).await.unwrap();
    let serving = eventually("the copy holding the freed port", WAIT, async || {
        let c = exposed(&other.get("copy").await.unwrap());
        (c.clone().filter(|c| c.status == "True"), format!("{c:?}"))
    })
    .await;
    assert_eq!(serving.reason, "Serving");

    // `univrs reset` (each agent's drop) leaves nothing of an agent under /run/univrs: not
    // its containers' resolv.conf files, not its directory.
    let run_dirs: Vec<std::path::PathBuf> = [&a_agent, &b_agent]
        .iter()
        .map(|a| {
            use sha2::Digest;
            let h = sha2::Sha256::digest(a.data_dir.as_os_str().as_encoded_bytes());
            std::path::PathBuf::from("/run/univrs").join(hex::encode(&h[..4]))
        })
        .collect();
    assert!(run_dirs.iter().all(|d| d.exists()), "{run_dirs:?}");
    drop((a_agent, b_agent));
    for d in run_dirs {
        assert!(!d.exists(), "{} is left behind", d.display());
    }
}

/// The agent API of node `name`.
async fn node_api(client: &kube::Client, name: &str) -> univrs_tests::agent::AgentApi {
    let nodes: Api<univrs_api::Node> = Api::all(client.clone());
    univrs_tests::agent::AgentApi::of(&nodes.get(name).await.unwrap())
}

/// A script asking `name` for its address every second and the demo page at it on port
/// 8080, printing `<label>: <address> <last line or refused>`.
fn asker(label: &str, name: &str) -> String {
    format!(
        "while true; do a=$(nslookup {name} 2>/dev/null | grep '^Address: ' | tail -n1); a=${{a##* }}; \
         r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"${{a:-none}}\" 8080 2>/dev/null | tail -n1); \
         echo \"{label}: ${{a:-none}} ${{r:-refused}}\"; sleep 1; done"
    )
}

/// A client in the portal's namespace on exp-b reaches the portal (on exp-a) by name; a
/// copycat in another namespace on exp-b resolves nothing and is refused at the address.
/// Returns the portal's virtual address on exp-b.
async fn names_reach_across_nodes(client: &kube::Client, api: &Api<Workload>) -> String {
    let on_b = |name: &str, script: String| -> Workload {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
            "spec": {"replicas": 1, "nodeSelector": {"test": "exp-b"},
                "containers": [{"name": "app", "image": "univrs.local/demo:latest",
                    "command": ["sh", "-c", script]}]},
        }))
        .unwrap()
    };
    let full = format!("portal.{NS}");
    api.create(
        &PostParams::default(),
        &on_b("client", asker("name", &full)),
    )
    .await
    .unwrap();
    let b = node_api(client, "exp-b").await;
    let line = eventually("the portal by name from exp-b", WAIT, async || {
        let l = b.instance_logs("client-0");
        let hit = l
            .iter()
            .find(|l| l.starts_with("name: ") && l.contains("served by portal-0"))
            .cloned();
        (hit, format!("{l:?}"))
    })
    .await;
    let vip = line
        .strip_prefix("name: ")
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    assert!(vip.starts_with("198.1"), "a virtual address: {line}");

    // The copycat asks for the same name and connects to the address it saw.
    let other: Api<Workload> = Api::namespaced(client.clone(), OTHER_NS);
    let script = format!(
        "while true; do n=$(nslookup {full} 2>/dev/null | grep -c '^Name:'); \
         r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {vip} 8080 2>/dev/null | tail -n1); \
         echo \"copycat: $n ${{r:-refused}}\"; sleep 1; done"
    );
    other
        .create(&PostParams::default(), &on_b("copycat", script))
        .await
        .unwrap();
    let lines = eventually("the copycat's tries", WAIT, async || {
        let l: Vec<String> = b
            .instance_logs("copycat-0")
            .into_iter()
            .filter(|l| l.starts_with("copycat: "))
            .collect();
        ((l.len() >= 3).then(|| l.clone()), format!("{l:?}"))
    })
    .await;
    assert!(
        lines.iter().all(|l| l == "copycat: 0 refused"),
        "another namespace neither resolves nor reaches the portal: {lines:?}"
    );
    vip
}

/// A registered Node that runs nothing of the portal's namespace opens the expose stream to
/// exp-a (which runs the portal) and asks for the portal by name, as a node whose container
/// asked would: refused, nothing carried. The same peer asking for the exposed port (open to
/// everyone) gets the page, so it is the namespace check that refuses.
async fn a_node_of_no_namespace_is_refused_a_name(client: &kube::Client, port: u16) {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use univrs_node_agent::mesh::{Mesh, MeshConfig, Multiaddr, PeerId};
    let nodes: Api<univrs_api::Node> = Api::all(client.clone());
    let key = univrs_api::identity::NodeIdentity::generate();
    nodes
        .create(
            &PostParams::default(),
            &univrs_tests::cluster::node_object("exp-rogue", &[], &key),
        )
        .await
        .unwrap();
    let a = nodes.get("exp-a").await.unwrap();
    let mut config = MeshConfig::new(key);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.bootstrap = vec![a.spec.multiaddrs[0].parse::<Multiaddr>().unwrap()];
    let rogue = Mesh::spawn(config).await.unwrap();
    let peer: PeerId = a.spec.peer_id.parse().unwrap();
    let ask = async |request: serde_json::Value| -> String {
        let Ok(mut s) = rogue
            .streams()
            .open_stream(peer, univrs_node_agent::agent::expose::PROTOCOL)
            .await
        else {
            return "no stream".into();
        };
        let mut line = request.to_string();
        line.push('\n');
        let mut out = Vec::new();
        if s.write_all(line.as_bytes()).await.is_err() {
            return "not written".into();
        }
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let exposed = eventually("the rogue served the exposed port", WAIT, async || {
        let got = ask(serde_json::json!({"port": port})).await;
        (
            got.contains("served by portal-0").then_some(got.clone()),
            got,
        )
    })
    .await;
    assert!(exposed.starts_with("ok\n"), "{exposed}");
    let named = ask(serde_json::json!({"port": 8080,
        "workload": {"namespace": NS, "name": "portal"}}))
    .await;
    assert_eq!(named, "error: not a node of that namespace\n");
    rogue.shutdown().await;
    nodes
        .delete("exp-rogue", &Default::default())
        .await
        .unwrap();
}

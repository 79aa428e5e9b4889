//! Vouches and credit transfers over the mesh, end to end: two real `univrs agent` processes on
//! loopback (no mDNS; B bootstraps from A) against the real API server, and a raw mesh with an
//! identity the cluster does not know, which joins their mesh and claims the impossible.

use kube::api::{Api, PostParams};
use std::path::Path;
use std::time::Duration;
use univrs_api::account::Account;
use univrs_api::gossip::SignedTransfer;
use univrs_api::identity::NodeIdentity;
use univrs_api::ledger::Transfer;
use univrs_api::resources::vouch::{Vouch, VouchSpec};
use univrs_api::{Node, gossip::GossipBody};
use univrs_node_agent::mesh::{Mesh, MeshConfig, MeshError, Multiaddr};
use univrs_tests::ControlPlane;
use univrs_tests::agent::{AgentApi, AgentProc, api_url, node_of};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually};

const WAIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "gossip-token-0123456789abcdefghij";

/// Signs a Vouch with the key in `key_file` for `subject` through `univrs vouch`, and creates it.
async fn vouch_with_cli(cp: &ControlPlane, client: &kube::Client, key_file: &Path, subject: &str) {
    let out = std::process::Command::new(univrs_tests::univrs_bin())
        .arg("vouch")
        .arg("--identity")
        .arg(key_file)
        .args([
            "--subject",
            subject,
            "--weight",
            "0.7",
            "--reason",
            "kept my jobs up",
        ])
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "univrs vouch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vouch: Vouch = serde_yaml::from_slice(&out.stdout).unwrap();
    Api::<Vouch>::all(client.clone())
        .create(&PostParams::default(), &vouch)
        .await
        .unwrap();
}

/// The vouches `api` heard over gossip about `subject` (a node name).
fn heard_about(api: &AgentApi, subject: &str) -> Vec<serde_json::Value> {
    let rep = api.get_json("/api/reputation");
    rep["heard"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["subject"] == subject)
        .flat_map(|s| s["vouches"].as_array().unwrap().clone())
        .collect()
}

fn transfers_heard(api: &AgentApi) -> Vec<serde_json::Value> {
    api.get_json("/api/credits")["transfersHeard"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouches_and_transfers_travel_and_impossible_claims_are_dropped() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, LEASE_NS).await;
    let nodes: Api<Node> = Api::all(client.clone());

    // A serves its API over TLS with a token (it may then publish transfers); B plainly.
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_file, key_file, token_file) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("token"),
    );
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token_file, TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let a = AgentProc::start(
        cp,
        "gsp-a",
        &[
            "--api-tls-cert",
            cert_file.to_str().unwrap(),
            "--api-tls-key",
            key_file.to_str().unwrap(),
            "--api-token-file",
            token_file.to_str().unwrap(),
            "--vouch-interval",
            "3s",
        ],
    );
    let node_a = node_of(&nodes, "gsp-a").await;
    let a_addr = node_a.spec.multiaddrs[0].clone();
    let b = AgentProc::start(
        cp,
        "gsp-b",
        &["--bootstrap", &a_addr, "--vouch-interval", "3s"],
    );
    let node_b = node_of(&nodes, "gsp-b").await;
    let api_a = AgentApi {
        url: api_url(&node_a),
        flags: [
            "--cacert",
            cert_file.to_str().unwrap(),
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    assert!(api_a.url.starts_with("https://"), "{}", api_a.url);
    let api_b = AgentApi {
        url: api_url(&node_b),
        flags: vec![],
    };
    eventually("A and B connected", WAIT, async || {
        let peers = api_a.get_json("/api/peers");
        let ok = peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peerId"] == node_b.spec.peer_id.as_str());
        (ok.then_some(()), peers.to_string())
    })
    .await;

    // A vouch made in the API with A's key is announced by A and heard by B; B's vouch for A
    // travels the other way.
    vouch_with_cli(cp, &client, &a.data_dir.join("identity.key"), "gsp-b").await;
    vouch_with_cli(cp, &client, &b.data_dir.join("identity.key"), "gsp-a").await;
    let heard = eventually("B hears A's vouch", WAIT, async || {
        let h = heard_about(&api_b, "gsp-b");
        (h.first().cloned(), format!("{h:?}"))
    })
    .await;
    assert_eq!(heard["voucher"], node_a.spec.did.as_str());
    assert_eq!(heard["voucherNode"], "gsp-a");
    assert_eq!(heard["weight"], 0.7);
    assert_eq!(heard["source"], node_a.spec.peer_id.as_str());
    assert_eq!(heard["inApi"], true, "{heard}");
    assert!(heard["vouchObject"].is_string(), "{heard}");
    eventually("A hears B's vouch", WAIT, async || {
        let h = heard_about(&api_a, "gsp-a");
        (h.first().cloned(), format!("{h:?}"))
    })
    .await;

    // A transfer: only over TLS with the token, only what is possible, then heard by B.
    let body = r#"{"to": "node/gsp-b", "amount": 250, "id": "gsp-t1"}"#;
    let (code, out) = api_b.post("/api/credits/transfers", body, false);
    assert_eq!(code, "403", "{out}");
    assert!(out.contains("--api-tls-cert"), "{out}");
    let (code, out) = api_a.post("/api/credits/transfers", body, false);
    assert_eq!(code, "401", "{out}");
    for (bad, says) in [
        (r#"{"to": "node/gsp-b", "amount": 0}"#, "amount"),
        (r#"{"to": "node/gsp-a", "amount": 5}"#, "own account"),
        (r#"{"to": "bank/x", "amount": 5}"#, "to:"),
        (r#"{"to": "node/gsp-b"}"#, "amount"),
    ] {
        let (code, out) = api_a.post("/api/credits/transfers", bad, true);
        assert_eq!(code, "400", "{bad}: {out}");
        assert!(out.contains(says), "{bad}: {out}");
    }
    let (code, out) = api_a.post("/api/credits/transfers", body, true);
    assert_eq!(code, "202", "{out}");
    let sent: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sent["payer"], node_a.spec.did.as_str());
    let t = eventually("B hears A's transfer", WAIT, async || {
        let h = transfers_heard(&api_b);
        let t = h.iter().find(|t| t["id"] == "gsp-t1").cloned();
        (t, format!("{h:?}"))
    })
    .await;
    assert_eq!(
        (&t["from"], &t["to"], &t["amount"], &t["payer"]),
        (
            &"node/gsp-a".into(),
            &"node/gsp-b".into(),
            &250.into(),
            &node_a.spec.did.as_str().into()
        )
    );

    // A stranger's mesh joins theirs and, signing everything correctly, claims what the
    // cluster contradicts.
    let stranger = NodeIdentity::generate();
    let mut config = MeshConfig::new(stranger.clone());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    config.heartbeat = Duration::from_millis(300);
    config.bootstrap = [&node_a, &node_b]
        .iter()
        .map(|n| n.spec.multiaddrs[0].parse::<Multiaddr>().unwrap())
        .collect();
    let rogue = Mesh::spawn(config).await.unwrap();
    let mut inbox = rogue.subscribe();
    // Hearing both agents' vouch announcements means both subscriptions are exchanged.
    let (peer_a, peer_b) = (node_a.spec.peer_id.clone(), node_b.spec.peer_id.clone());
    let mut from = std::collections::BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        while from.len() < 2 {
            let m = inbox.recv().await.unwrap();
            if let GossipBody::VouchAttestation(_) = m.body {
                from.insert(m.source.to_string());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stranger heard vouches only from {from:?}"));
    assert!(from.contains(&peer_a) && from.contains(&peer_b));

    let expires = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(
            k8s_openapi::jiff::Timestamp::now().as_second() + 3600,
        )
        .unwrap(),
    );
    let key_a = univrs_node_agent::keyfile::load(&a.data_dir.join("identity.key")).unwrap();
    let b_id = univrs_api::identity::PublicIdentity::from_did(&node_b.spec.did).unwrap();
    // Its own vouch for B: the voucher is no Node.
    let unknown_voucher =
        VouchSpec::signed(&stranger, &b_id, 1.0, "trust me", expires.clone()).unwrap();
    // A vouch really signed by A's key, for the stranger: the subject is no Node.
    let unknown_subject = VouchSpec::signed(
        &key_a,
        &stranger.public(),
        1.0,
        "a stolen key",
        expires.clone(),
    )
    .unwrap();
    // A transfer from A's account signed by the stranger's key.
    let not_owner = SignedTransfer::sign(
        &stranger,
        Transfer {
            id: "gsp-steal".into(),
            from: Account::node("gsp-a"),
            to: Account::node("gsp-b"),
            amount: 1_000_000,
        },
    );
    let publish = async |body: GossipBody| {
        eventually("the stranger publishes", WAIT, async || {
            match rogue.publish(body.clone()).await {
                Ok(()) => (Some(()), String::new()),
                Err(e @ MeshError::NoPeers { .. }) => (None, e.to_string()),
                Err(e) => panic!("publishing: {e}"),
            }
        })
        .await
    };

    // First something possible: anyone may relay a vouch, and this one, signed by A's key for
    // B, is heard although no Vouch object holds it.
    let unlisted =
        VouchSpec::signed(&key_a, &b_id, 0.4, "said only on the mesh", expires.clone()).unwrap();
    publish(unlisted.into()).await;
    let h = eventually("B hears the relayed vouch", WAIT, async || {
        let h = heard_about(&api_b, "gsp-b");
        let found = h.iter().find(|v| v["weight"] == 0.4).cloned();
        (found, format!("{h:?}"))
    })
    .await;
    assert_eq!(
        (&h["inApi"], &h["vouchObject"], &h["source"]),
        (
            &false.into(),
            &serde_json::Value::Null,
            &rogue.peer_id().to_string().into()
        )
    );

    for body in [
        GossipBody::from(unknown_voucher),
        unknown_subject.into(),
        not_owner.into(),
    ] {
        publish(body).await;
    }

    // Dropped and counted by both agents, by reason.
    let reasons = ["UnknownVoucher", "UnknownSubject", "PayerNotOwner"];
    for (name, api) in [("A", &api_a), ("B", &api_b)] {
        eventually(
            &format!("{name} counts the impossible claims"),
            WAIT,
            async || {
                let got: Vec<u64> = reasons
                    .iter()
                    .map(|r| api.counter("univrs_mesh_invalid_messages_total", r))
                    .collect();
                (
                    (got == [1, 1, 1]).then_some(()),
                    format!("{reasons:?} = {got:?}"),
                )
            },
        )
        .await;
    }
    // They cost the stranger its standing, and reached nobody's views.
    let peers = api_a.get_json("/api/peers");
    let score = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peerId"] == rogue.peer_id().to_string().as_str())
        .and_then(|p| p["score"].as_f64());
    assert!(score.is_some_and(|s| s < 0.0), "{peers}");
    for api in [&api_a, &api_b] {
        let rep = api.get_json("/api/reputation");
        assert!(
            !rep["heard"].to_string().contains(&stranger.public().did()),
            "{rep}"
        );
        assert!(!transfers_heard(api).iter().any(|t| t["id"] == "gsp-steal"),);
        let (_, metrics) = api.get("/metrics");
        // The other agent's vouch and the relayed one.
        assert!(
            metrics.contains("univrs_agent_vouches_heard 2"),
            "{metrics}"
        );
    }
    rogue.shutdown().await;
    drop((a, b));
}

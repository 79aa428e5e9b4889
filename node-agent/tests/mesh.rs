//! The mesh with real libp2p swarms: on loopback, against a rogue swarm that forges messages,
//! and across network namespaces joined by a bridge (mDNS, and a cut and restored link).
//!
//! The benchmark is `gossip_propagation_benchmark` (ignored; run it with `--ignored
//! --nocapture`).

use futures::future::join_all;
use libp2p::multiaddr::Protocol;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use univrs_api::account::Account;
use univrs_api::envelope::SignedEnvelope;
use univrs_api::gossip::{ClusterEvent, SignedTransfer};
use univrs_api::identity::NodeIdentity;
use univrs_api::ledger::Transfer;
use univrs_api::resources::node::{PeerConnection, Reachability};
use univrs_api::resources::vouch::VouchSpec;
use univrs_node_agent::mesh::validate::{self, IgnoreReason, InvalidReason};
use univrs_node_agent::mesh::{
    ClaimCheck, ClaimVerdict, GossipBody, InboundMessage, Mesh, MeshConfig, MeshError, MeshHandle,
    Multiaddr, PeerId, Topic, observations,
};
use univrs_tests::nat::{Internet, Nat, WAN};

const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
/// How long a test waits for the mesh to get somewhere before it fails (generous: CI shares
/// two cores among many builds).
const WAIT: Duration = Duration::from_secs(90);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A mesh configuration for tests: mDNS off (so only Kademlia can find peers), fast timers.
fn config(listen: &[String]) -> MeshConfig {
    let mut c = MeshConfig::new(NodeIdentity::generate());
    c.listen = listen.iter().map(|a| a.parse().unwrap()).collect();
    c.mdns = false;
    c.discovery_interval = Duration::from_secs(1);
    c.ping_interval = Duration::from_secs(1);
    c.heartbeat = Duration::from_millis(300);
    c
}

fn addrs(listen: &[&str]) -> Vec<String> {
    listen.iter().map(|s| s.to_string()).collect()
}

async fn spawn(listen: &[&str], bootstrap: Vec<Multiaddr>) -> MeshHandle {
    let mut c = config(&addrs(listen));
    c.bootstrap = bootstrap;
    Mesh::spawn(c).await.expect("mesh starts")
}

/// Polls `probe` until it returns something, failing the test after [`WAIT`].
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn peer_ids(h: &MeshHandle) -> Vec<PeerId> {
    h.peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.peer_id)
        .collect()
}

/// Waits until every mesh is connected to every other.
async fn fully_connected(meshes: &[&MeshHandle]) {
    for h in meshes {
        let want: Vec<PeerId> = meshes
            .iter()
            .map(|m| m.peer_id())
            .filter(|p| *p != h.peer_id())
            .collect();
        until(
            &format!("{} to connect to {want:?}", h.peer_id()),
            || async {
                let have = peer_ids(h).await;
                want.iter().all(|p| have.contains(p)).then_some(())
            },
        )
        .await;
    }
}

fn event(text: &str) -> GossipBody {
    ClusterEvent {
        node: "n1".into(),
        reason: "Test".into(),
        message: text.into(),
    }
    .into()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Everything received up to and including the first message with `body`.
async fn received_until(
    rx: &mut broadcast::Receiver<InboundMessage>,
    body: &GossipBody,
) -> Vec<InboundMessage> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Ok(m)) => {
                let done = &m.body == body;
                got.push(m);
                if done {
                    return got;
                }
            }
            Ok(Err(e)) => panic!("receiving: {e}"),
            Err(_) => panic!("timed out after {WAIT:?} waiting for {body:?} to arrive"),
        }
    }
}

/// Receives until a message with `body` arrives (others are skipped).
async fn heard(rx: &mut broadcast::Receiver<InboundMessage>, body: &GossipBody) -> InboundMessage {
    received_until(rx, body).await.pop().unwrap()
}

/// Publishes until some peer subscribes (right after connecting the subscriptions may not
/// have been exchanged yet).
async fn publish(from: &MeshHandle, body: GossipBody) {
    until("a subscribed peer to publish to", || async {
        match from.publish(body.clone()).await {
            Ok(()) => Some(()),
            Err(MeshError::NoPeers { .. }) => None,
            Err(e) => panic!("publish: {e}"),
        }
    })
    .await;
}

/// Publishes fresh messages from `from` until `rx` hears one (gossip needs the subscription
/// exchange and a heartbeat to reach peers that are not directly connected).
async fn flows(from: &MeshHandle, rx: &mut broadcast::Receiver<InboundMessage>, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        let body = event(&format!("probe {}", now_ms()));
        match from.publish(body.clone()).await {
            Ok(()) | Err(MeshError::NoPeers { .. }) => {}
            Err(e) => panic!("publish: {e}"),
        }
        let probe_deadline = Instant::now() + Duration::from_millis(700);
        while let Ok(Ok(m)) = tokio::time::timeout_at(probe_deadline.into(), rx.recv()).await {
            if m.body == body {
                return;
            }
        }
    }
}

/// Three meshes bootstrapped in a chain (A ← B ← C): C knows only B, so finding A is
/// Kademlia's doing; then A's message reaches B and C, signed by A.
async fn chain_of_three(listen: &[&str]) {
    init_logs();
    let a = spawn(listen, vec![]).await;
    let b = spawn(listen, a.dial_addrs().await.unwrap()).await;
    let c = spawn(listen, b.dial_addrs().await.unwrap()).await;
    fully_connected(&[&a, &b, &c]).await;

    let (mut rb, mut rc) = (b.subscribe(), c.subscribe());
    let body = event("hello from A");
    publish(&a, body.clone()).await;
    for rx in [&mut rb, &mut rc] {
        let m = heard(rx, &body).await;
        assert_eq!(m.source, a.peer_id());
        assert_eq!(m.topic, Topic::ClusterEvents);
        assert_eq!(univrs_node_agent::mesh::peer_id_of(&m.signer), a.peer_id());
    }

    // Every connection uses the transports the meshes listen on.
    let quic_only = listen.iter().all(|l| l.contains("quic"));
    let tcp_only = listen.iter().all(|l| l.contains("/tcp/"));
    for h in [&a, &b, &c] {
        for p in h.peers().await.unwrap() {
            for addr in &p.addresses {
                let quic = addr.iter().any(|p| p == Protocol::QuicV1);
                if quic_only {
                    assert!(quic, "{addr} is not QUIC");
                }
                if tcp_only {
                    assert!(!quic, "{addr} is not TCP");
                }
            }
        }
    }

    let stats = until("a ping to measure latency", || async {
        let s = b.stats().await.unwrap();
        s.median_latency.is_some().then_some(s)
    })
    .await;
    assert!(stats.received >= 1 && stats.invalid.is_empty(), "{stats:?}");
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0, "{stats:?}");
    assert!(stats.listen_addrs.len() == listen.len(), "{stats:?}");
    let obs = observations(&stats);
    assert_eq!(obs.connected_peers, 2);
    assert_eq!(obs.invalid_messages, 0);
    assert!(obs.median_latency_ms.unwrap() > 0.0 && obs.uptime > 0.0);
    assert!(a.stats().await.unwrap().published >= 1);

    for h in [&a, &b, &c] {
        h.shutdown().await;
    }
    assert!(matches!(a.stats().await, Err(MeshError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_connects_through_kademlia_over_tcp_and_quic() {
    chain_of_three(&[TCP, QUIC]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_mesh_works() {
    chain_of_three(&[TCP]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_only_mesh_works() {
    chain_of_three(&[QUIC]).await;
}

/// A peer's published addresses often include some that do not reach it from here (its
/// loopback, its home network), and one learns the one that works only later (its Node is
/// updated once all its listeners bound). Learning it dials at every address known: not only
/// at the first one, again and again, until a walk happens upon the right one (the walk here
/// is an hour away, so only that dial can connect). Whether the dead address refuses at once
/// or holds the dial until its handshake times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_address_learned_later_is_dialed_beside_a_dead_one() {
    init_logs();
    // Nothing listens there: dialing it is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = closed.local_addr().unwrap().port();
    drop(closed);
    // A socket that never answers past TCP's handshake: a dial there waits until it times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = silent.local_addr().unwrap().port();
    for port in [refused, held] {
        let a = spawn(&[TCP], vec![]).await;
        let mut c = config(&addrs(&[TCP]));
        c.discovery_interval = Duration::from_secs(3600);
        let b = Mesh::spawn(c).await.expect("mesh starts");
        let dead: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", a.peer_id())
            .parse()
            .unwrap();
        b.add_bootstrap(dead).await.unwrap();
        // B has tried the dead address (and may be trying it still) when the live one comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!peer_ids(&b).await.contains(&a.peer_id()));
        for live in a.dial_addrs().await.unwrap() {
            b.add_bootstrap(live).await.unwrap();
        }
        until(
            &format!("B to reach A at the address learned after port {port}"),
            || async { peer_ids(&b).await.contains(&a.peer_id()).then_some(()) },
        )
        .await;
        for h in [&a, &b] {
            h.shutdown().await;
        }
    }
    drop(silent);
}

#[tokio::test]
async fn bad_configuration_is_refused_with_what_to_fix() {
    let mut c = config(&addrs(&[TCP]));
    c.bootstrap = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
    let err = Mesh::spawn(c).await.unwrap_err().to_string();
    assert!(err.contains("/p2p/<peer id>"), "{err}");
    let c = config(&addrs(&["/ip4/127.0.0.1/udp/0"]));
    let err = Mesh::spawn(c).await.unwrap_err().to_string();
    assert!(
        err.contains("cannot listen on /ip4/127.0.0.1/udp/0"),
        "{err}"
    );
}

/// A swarm that speaks plain gossipsub with its own key and publishes whatever bytes it is
/// given: what a misbehaving node looks like to the mesh.
mod rogue {
    use super::*;
    use futures::StreamExt;
    use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Swarm, noise, tcp, yamux};
    use std::collections::HashSet;
    use tokio::sync::{mpsc, oneshot};

    type Job = (Topic, Vec<u8>, oneshot::Sender<()>);

    pub struct Rogue {
        pub identity: NodeIdentity,
        pub peer_id: PeerId,
        jobs: mpsc::Sender<Job>,
    }

    impl Rogue {
        /// Connects to each target and waits until they all subscribe to every topic.
        pub async fn connect(targets: &[&MeshHandle]) -> Rogue {
            let identity = NodeIdentity::generate();
            let mut seed = *identity.secret_bytes();
            let key = libp2p::identity::Keypair::ed25519_from_bytes(&mut seed).unwrap();
            let mut swarm: Swarm<gossipsub::Behaviour> =
                libp2p::SwarmBuilder::with_existing_identity(key)
                    .with_tokio()
                    .with_tcp(
                        tcp::Config::default(),
                        noise::Config::new,
                        yamux::Config::default,
                    )
                    .unwrap()
                    .with_behaviour(|key| {
                        // The default message id (author + sequence number) lets it send the
                        // same bytes twice.
                        gossipsub::Behaviour::new(
                            MessageAuthenticity::Signed(key.clone()),
                            gossipsub::Config::default(),
                        )
                        .unwrap()
                    })
                    .unwrap()
                    .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
                    .build();
            let mut want = HashSet::new();
            for t in targets {
                let addr = t
                    .dial_addrs()
                    .await
                    .unwrap()
                    .into_iter()
                    .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
                    .expect("a TCP address");
                swarm.dial(addr).unwrap();
                for topic in Topic::ALL {
                    want.insert((t.peer_id(), topic.as_str().to_string()));
                }
            }
            tokio::time::timeout(WAIT, async {
                while !want.is_empty() {
                    if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, topic }) =
                        swarm.select_next_some().await
                    {
                        want.remove(&(peer_id, topic.into_string()));
                    }
                }
            })
            .await
            .expect("the targets subscribe to the rogue");
            let peer_id = *swarm.local_peer_id();
            let (jobs, mut rx) = mpsc::channel::<Job>(16);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = swarm.select_next_some() => {}
                        job = rx.recv() => match job {
                            Some((topic, data, done)) => {
                                swarm
                                    .behaviour_mut()
                                    .publish(IdentTopic::new(topic.as_str()), data)
                                    .expect("rogue publish");
                                let _ = done.send(());
                            }
                            None => break,
                        },
                    }
                }
            });
            Rogue {
                identity,
                peer_id,
                jobs,
            }
        }

        /// Publishes raw bytes on `topic`.
        pub async fn send(&self, topic: Topic, data: Vec<u8>) {
            let (done, rx) = oneshot::channel();
            self.jobs.send((topic, data, done)).await.unwrap();
            rx.await.unwrap();
        }

        /// Publishes `body` sealed by `signer` and dated `at`.
        pub async fn send_sealed(&self, signer: &NodeIdentity, body: GossipBody, at: i64) {
            let topic = body.topic();
            self.send(topic, validate::seal(signer, body, at, 64 * 1024).unwrap())
                .await;
        }

        /// Publishes `body` honestly: sealed by itself, dated now.
        pub async fn send_honest(&self, body: GossipBody) {
            self.send_sealed(&self.identity, body, now_ms()).await;
        }
    }
}
use rogue::Rogue;

async fn score_of(h: &MeshHandle, peer: PeerId) -> f64 {
    h.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer_id == peer)
        .and_then(|p| p.score)
        .unwrap_or_else(|| panic!("{peer} is not a scored peer of {}", h.peer_id()))
}

/// Everything waiting in `rx` now.
fn drain(rx: &mut broadcast::Receiver<InboundMessage>) -> Vec<GossipBody> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m.body);
    }
    out
}

async fn wait_counts<K: Ord + std::fmt::Debug + Clone>(
    h: &MeshHandle,
    what: &str,
    pick: impl Fn(&univrs_node_agent::mesh::MeshStats) -> BTreeMap<K, u64>,
    want: &BTreeMap<K, u64>,
) {
    until(&format!("{what} = {want:?} on {}", h.peer_id()), || async {
        let s = h.stats().await.unwrap();
        (pick(&s) == *want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_impossible_messages_reach_nobody_and_cost_their_sender() {
    init_logs();
    let a = spawn(&[TCP], vec![]).await;
    let b = spawn(&[TCP], a.dial_addrs().await.unwrap()).await;
    fully_connected(&[&a, &b]).await;
    let mut inboxes = [a.subscribe(), b.subscribe()];
    let stranger = NodeIdentity::generate();
    let rogues = [
        Rogue::connect(&[&a, &b]).await,
        Rogue::connect(&[&a, &b]).await,
        Rogue::connect(&[&a, &b]).await,
    ];

    // Each rogue first says something true, which everyone hears.
    let mut before = HashMap::new();
    for (i, r) in rogues.iter().enumerate() {
        let body = event(&format!("honest {i}"));
        r.send_honest(body.clone()).await;
        for rx in inboxes.iter_mut() {
            assert_eq!(heard(rx, &body).await.source, r.peer_id);
        }
        for h in [&a, &b] {
            before.insert((h.peer_id(), r.peer_id), score_of(h, r.peer_id).await);
        }
    }

    // Rogue 0 speaks for a stranger, then tampers with its own signed message.
    rogues[0]
        .send_sealed(&stranger, event("forged"), now_ms())
        .await;
    let mut env: SignedEnvelope = serde_json::from_slice(
        &validate::seal(&rogues[0].identity, event("pay me"), now_ms(), 64 * 1024).unwrap(),
    )
    .unwrap();
    let at = env.payload.len() - 10;
    env.payload[at] ^= 0x01;
    rogues[0]
        .send(Topic::ClusterEvents, serde_json::to_vec(&env).unwrap())
        .await;
    // Rogue 1 sends bytes that are no envelope, and a message dated an hour ahead.
    rogues[1]
        .send(Topic::WorkloadStatus, b"\x00\x01 not json".to_vec())
        .await;
    rogues[1]
        .send_sealed(
            &rogues[1].identity,
            event("from the future"),
            now_ms() + 3_600_000,
        )
        .await;
    // Rogue 2 signs everything correctly but claims the impossible: a transfer of nothing
    // and a vouch for itself.
    let r2 = &rogues[2].identity;
    let nothing = Transfer {
        id: "t-0".into(),
        from: Account::node("a"),
        to: Account::node("b"),
        amount: 0,
    };
    rogues[2]
        .send_honest(SignedTransfer::sign(r2, nothing).into())
        .await;
    let expires = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(now_ms() / 1000 + 3600).unwrap(),
    );
    let own = VouchSpec::signed(r2, &r2.public(), 1.0, "trust me", expires).unwrap();
    rogues[2].send_honest(own.into()).await;

    let want = BTreeMap::from([
        (InvalidReason::SignerMismatch, 1),
        (InvalidReason::BadSignature, 1),
        (InvalidReason::Malformed, 1),
        (InvalidReason::FutureTimestamp, 1),
        (InvalidReason::NonPositiveAmount, 1),
        (InvalidReason::SelfVouch, 1),
    ]);
    for h in [&a, &b] {
        wait_counts(h, "invalid", |s| s.invalid.clone(), &want).await;
    }

    // Rogues 0 and 1 are penalized but not graylisted yet, so a last true message from each
    // still arrives, after everything they sent before it on the same connection; nothing
    // but these markers was delivered.
    for (i, r) in rogues[..2].iter().enumerate() {
        let body = event(&format!("marker {i}"));
        r.send_honest(body.clone()).await;
        for rx in inboxes.iter_mut() {
            let got: Vec<_> = received_until(rx, &body).await;
            let bodies: Vec<_> = got.into_iter().map(|m| m.body).collect();
            assert_eq!(
                bodies,
                std::slice::from_ref(&body),
                "nothing forged may be delivered"
            );
        }
    }
    for rx in inboxes.iter_mut() {
        assert!(drain(rx).is_empty(), "nothing forged may be delivered");
    }
    for h in [&a, &b] {
        let stats = h.stats().await.unwrap();
        assert_eq!(stats.invalid, want, "counted once each, by reason");
        assert_eq!(observations(&stats).invalid_messages, 6);
        for r in &rogues {
            let (was, is) = (
                before[&(h.peer_id(), r.peer_id)],
                score_of(h, r.peer_id).await,
            );
            assert!(
                is < 0.0 && is < was,
                "score of a rogue went from {was} to {is}"
            );
        }
        // Honest peers keep a non-negative score.
        let other = if h.peer_id() == a.peer_id() { &b } else { &a };
        assert!(score_of(h, other.peer_id()).await >= 0.0);
    }
}

/// A claim check that knows the members: a vouch needs a member voucher and subject, and is
/// answered a moment later (as a check against an API server is); a vouch whose reason is
/// "stall" is never answered. Other topics need no check.
#[derive(Debug)]
struct Members(Vec<String>);

impl ClaimCheck for Members {
    fn check(
        &self,
        m: &InboundMessage,
    ) -> Option<futures::future::BoxFuture<'static, ClaimVerdict>> {
        let GossipBody::VouchAttestation(v) = &m.body else {
            return None;
        };
        if v.reason == "stall" {
            return Some(Box::pin(futures::future::pending()));
        }
        let member = |did: &str| self.0.iter().any(|m| m == did);
        let verdict = if !member(&v.voucher) {
            ClaimVerdict::Impossible(InvalidReason::UnknownVoucher)
        } else if !member(&v.subject) {
            ClaimVerdict::Impossible(InvalidReason::UnknownSubject)
        } else {
            ClaimVerdict::Possible
        };
        Some(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            verdict
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_checked_before_delivery_and_impossible_ones_cost_their_sender() {
    init_logs();
    let (x, y, stranger) = (
        NodeIdentity::generate(),
        NodeIdentity::generate(),
        NodeIdentity::generate(),
    );
    let members = std::sync::Arc::new(Members(vec![x.public().did(), y.public().did()]));
    let with_claims = |bootstrap: Vec<Multiaddr>| {
        let mut c = config(&addrs(&[TCP]));
        c.bootstrap = bootstrap;
        c.claims = Some(members.clone());
        c.claim_timeout = Duration::from_secs(1);
        c
    };
    let a = Mesh::spawn(with_claims(vec![])).await.unwrap();
    let b = Mesh::spawn(with_claims(a.dial_addrs().await.unwrap()))
        .await
        .unwrap();
    fully_connected(&[&a, &b]).await;
    let (mut rx_a, mut rx_b) = (a.subscribe(), b.subscribe());
    // The rogue talks to a only: b hears what it says only if a forwards it.
    let rogue = Rogue::connect(&[&a]).await;
    let expires = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(now_ms() / 1000 + 3600).unwrap(),
    );
    let vouch = |by: &NodeIdentity, of: &NodeIdentity, why: &str| -> GossipBody {
        VouchSpec::signed(by, &of.public(), 0.5, why, expires.clone())
            .unwrap()
            .into()
    };

    // A possible claim, relayed by the rogue (anyone may relay a vouch): delivered on a after
    // the check, and forwarded to b.
    let good = vouch(&x, &y, "ok");
    rogue.send_honest(good.clone()).await;
    assert_eq!(heard(&mut rx_a, &good).await.source, rogue.peer_id);
    assert_eq!(heard(&mut rx_b, &good).await.source, rogue.peer_id);
    let before = score_of(&a, rogue.peer_id).await;

    // Signed correctly, but the cluster knows neither the voucher of one nor the subject of
    // the other; and one whose check never answers.
    rogue.send_honest(vouch(&stranger, &y, "ok")).await;
    rogue.send_honest(vouch(&x, &stranger, "ok")).await;
    rogue.send_honest(vouch(&x, &y, "stall")).await;
    let invalid = BTreeMap::from([
        (InvalidReason::UnknownVoucher, 1),
        (InvalidReason::UnknownSubject, 1),
    ]);
    wait_counts(&a, "invalid", |s| s.invalid.clone(), &invalid).await;
    let ignored = BTreeMap::from([(IgnoreReason::ClaimUnchecked, 1)]);
    wait_counts(&a, "ignored", |s| s.ignored.clone(), &ignored).await;

    // A message without claims to check goes straight through; nothing held was delivered
    // on a, and nothing a dropped reached b.
    let marker = event("marker");
    rogue.send_honest(marker.clone()).await;
    for rx in [&mut rx_a, &mut rx_b] {
        let bodies: Vec<_> = received_until(rx, &marker)
            .await
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(bodies, std::slice::from_ref(&marker));
    }
    let sa = a.stats().await.unwrap();
    assert_eq!((sa.invalid, sa.ignored), (invalid, ignored));
    let sb = b.stats().await.unwrap();
    assert!(sb.invalid.is_empty() && sb.ignored.is_empty(), "{sb:?}");
    // The impossible claims cost the rogue; the stalled one did not count against it.
    let after = score_of(&a, rogue.peer_id).await;
    assert!(
        after < 0.0 && after < before,
        "score of the rogue went from {before} to {after}"
    );
    assert!(score_of(&a, b.peer_id()).await >= 0.0);
}

/// A claim check that knows which authors the septal gate isolates (as the agent's cluster
/// view reads it from their Nodes); everything else goes straight through.
#[derive(Debug, Default)]
struct Septal(std::sync::Mutex<std::collections::HashSet<PeerId>>);

impl ClaimCheck for Septal {
    fn check(
        &self,
        m: &InboundMessage,
    ) -> Option<futures::future::BoxFuture<'static, ClaimVerdict>> {
        let isolated = self.0.lock().unwrap().contains(&m.source);
        isolated.then(|| {
            Box::pin(futures::future::ready(ClaimVerdict::Ignore(
                IgnoreReason::SenderIsolated,
            ))) as futures::future::BoxFuture<'static, ClaimVerdict>
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_nodes_gossip_is_neither_delivered_nor_relayed_until_it_recovers() {
    init_logs();
    let septal = std::sync::Arc::new(Septal::default());
    let with_septal = |bootstrap: Vec<Multiaddr>| {
        let mut c = config(&addrs(&[TCP]));
        c.bootstrap = bootstrap;
        c.claims = Some(septal.clone());
        c
    };
    let a = Mesh::spawn(with_septal(vec![])).await.unwrap();
    let b = Mesh::spawn(with_septal(a.dial_addrs().await.unwrap()))
        .await
        .unwrap();
    fully_connected(&[&a, &b]).await;
    let (mut rx_a, mut rx_b) = (a.subscribe(), b.subscribe());
    // The node talks to a only: b hears it only if a relays it.
    let node = Rogue::connect(&[&a]).await;
    let before = event("before isolation");
    node.send_honest(before.clone()).await;
    heard(&mut rx_a, &before).await;
    heard(&mut rx_b, &before).await;
    let score_before = score_of(&a, node.peer_id).await;

    // Its septal gate trips: whatever it says now is dropped by a, unpenalized, and so never
    // reaches b.
    septal.0.lock().unwrap().insert(node.peer_id);
    let during = event("while isolated");
    node.send_honest(during.clone()).await;
    let ignored = BTreeMap::from([(IgnoreReason::SenderIsolated, 1)]);
    wait_counts(&a, "ignored", |s| s.ignored.clone(), &ignored).await;
    // b's own message after it, relayed by a, proves a's forwarding ran past that point.
    let marker = event("marker from a");
    publish(&a, marker.clone()).await;
    let at_b: Vec<GossipBody> = received_until(&mut rx_b, &marker)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(at_b, vec![marker], "b heard the isolated node through a");
    assert!(!drain(&mut rx_a).contains(&during), "a delivered it");
    let sa = a.stats().await.unwrap();
    assert!(sa.invalid.is_empty(), "isolation is no offence: {sa:?}");
    assert!(score_of(&a, node.peer_id).await >= score_before.min(0.0));

    // The gate recovers: its gossip flows again, to a and through a to b.
    septal.0.lock().unwrap().clear();
    let after = event("after recovery");
    node.send_honest(after.clone()).await;
    heard(&mut rx_a, &after).await;
    heard(&mut rx_b, &after).await;
}

/// How long a graylisted sender's message is given to (wrongly) arrive. No barrier can stand
/// in for this window: gossipsub drops everything a graylisted peer sends before validation,
/// without a trace in the stats, and the rogue talks to B alone, so nothing observable follows
/// the message on its connection. The rogue's earlier messages arrived within milliseconds
/// on loopback; this is hundreds of times that.
const GRAYLISTED_WINDOW: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_stale_messages_are_ignored_and_a_graylisted_sender_is_not_heard() {
    init_logs();
    let a = spawn(&[TCP], vec![]).await;
    let b = spawn(&[TCP], a.dial_addrs().await.unwrap()).await;
    fully_connected(&[&a, &b]).await;
    let mut rb = b.subscribe();
    let rogue = Rogue::connect(&[&b]).await;

    // The same signed bytes twice (under two gossipsub sequence numbers): delivered once.
    let data = validate::seal(&rogue.identity, event("once"), now_ms(), 64 * 1024).unwrap();
    rogue.send(Topic::ClusterEvents, data.clone()).await;
    rogue.send(Topic::ClusterEvents, data).await;
    // A message older than the replay window: ignored, without penalty.
    rogue
        .send_sealed(&rogue.identity, event("old news"), now_ms() - 3_600_000)
        .await;
    let marker = event("after the replays");
    rogue.send_honest(marker.clone()).await;
    let delivered: Vec<_> = received_until(&mut rb, &marker)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(
        delivered,
        [event("once"), marker],
        "one copy, nothing stale"
    );
    wait_counts(
        &b,
        "ignored",
        |s| s.ignored.clone(),
        &BTreeMap::from([(IgnoreReason::Stale, 1)]),
    )
    .await;
    assert!(b.stats().await.unwrap().invalid.is_empty());
    assert!(
        score_of(&b, rogue.peer_id).await >= 0.0,
        "ignoring costs nothing"
    );

    // Three invalid messages take the rogue below the graylist threshold (-80): after that,
    // nothing it sends is even looked at.
    for i in 0..3 {
        // Distinct bytes: identical ones would be dropped as duplicates before validation.
        rogue
            .send(Topic::ClusterEvents, format!("junk {i}").into_bytes())
            .await;
    }
    wait_counts(
        &b,
        "invalid",
        |s| s.invalid.clone(),
        &BTreeMap::from([(InvalidReason::Malformed, 3)]),
    )
    .await;
    assert!(score_of(&b, rogue.peer_id).await < -80.0);
    rogue.send_honest(event("please listen")).await;
    tokio::time::sleep(GRAYLISTED_WINDOW).await;
    assert!(
        !drain(&mut rb).contains(&event("please listen")),
        "a graylisted sender's message was delivered"
    );
    // An honest peer is still heard.
    flows(&a, &mut rb, "A's messages to reach B").await;
}

/// Network namespaces joined by a bridge, torn down on drop; one mesh per namespace.
mod netns {
    use super::*;
    use std::fs::File;
    use std::process::Command;
    use tokio::sync::oneshot;

    fn ip(args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("running `ip` (iproute2 must be installed)");
        assert!(
            out.status.success(),
            "ip {}: {} (network namespace tests need root and iproute2)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Hosts `10.213.0.<i+1>/24`, each in its own namespace, on one bridge in another.
    pub struct Lan {
        bridge: String,
        hosts: Vec<String>,
    }

    impl Lan {
        pub fn new(tag: &str, hosts: usize) -> Lan {
            let prefix = format!("umesh-{}-{tag}", std::process::id());
            let mut lan = Lan {
                bridge: format!("{prefix}-br"),
                hosts: Vec::new(),
            };
            ip(&["netns", "add", &lan.bridge]);
            ip(&["-n", &lan.bridge, "link", "add", "br0", "type", "bridge"]);
            ip(&["-n", &lan.bridge, "link", "set", "br0", "up"]);
            for i in 0..hosts {
                let ns = format!("{prefix}-{i}");
                ip(&["netns", "add", &ns]);
                lan.hosts.push(ns.clone());
                let port = format!("p{i}");
                ip(&[
                    "-n",
                    &ns,
                    "link",
                    "add",
                    "eth0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &lan.bridge,
                ]);
                ip(&[
                    "-n",
                    &lan.bridge,
                    "link",
                    "set",
                    &port,
                    "master",
                    "br0",
                    "up",
                ]);
                ip(&[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", lan.ip(i)),
                    "dev",
                    "eth0",
                ]);
                ip(&["-n", &ns, "link", "set", "eth0", "up"]);
                ip(&["-n", &ns, "link", "set", "lo", "up"]);
            }
            lan
        }

        pub fn ip(&self, host: usize) -> String {
            format!("10.213.0.{}", host + 1)
        }

        /// Unplugs the host's cable at the bridge: its packets go nowhere, silently.
        pub fn cut(&self, host: usize) {
            ip(&[
                "-n",
                &self.bridge,
                "link",
                "set",
                &format!("p{host}"),
                "down",
            ]);
        }

        /// Plugs it back in.
        pub fn restore(&self, host: usize) {
            ip(&["-n", &self.bridge, "link", "set", &format!("p{host}"), "up"]);
        }

        /// Runs a mesh inside the host's namespace: a thread enters it, then builds the
        /// runtime, so every socket the swarm opens lives there.
        pub fn spawn(&self, host: usize, config: MeshConfig) -> NsMesh {
            let path = format!("/var/run/netns/{}", self.hosts[host]);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::spawn(move || {
                let ns = File::open(&path).expect("open the namespace");
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the namespace");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mesh = Mesh::spawn(config).await;
                    let handle = mesh.as_ref().ok().cloned();
                    ready_tx.send(mesh).unwrap();
                    if let Some(h) = handle {
                        let _ = stop_rx.await;
                        h.shutdown().await;
                    }
                });
            });
            let handle = ready_rx
                .recv()
                .expect("the namespace thread reports")
                .expect("mesh starts in the namespace");
            NsMesh {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }
        }
    }

    impl Drop for Lan {
        fn drop(&mut self) {
            // Deleting a namespace deletes its veth ends and the bridge with it.
            for ns in self.hosts.iter().chain([&self.bridge]) {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }

    /// A mesh running in a namespace's thread; stopped and joined on drop.
    pub struct NsMesh {
        pub handle: MeshHandle,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for NsMesh {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}
use netns::Lan;

fn lan_config(lan: &Lan, host: usize) -> MeshConfig {
    let ip = lan.ip(host);
    config(&[
        format!("/ip4/{ip}/tcp/0"),
        format!("/ip4/{ip}/udp/0/quic-v1"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mdns_finds_peers_on_the_link() {
    init_logs();
    let lan = Lan::new("mdns", 2);
    let meshes: Vec<_> = (0..2)
        .map(|i| {
            let mut c = lan_config(&lan, i);
            c.mdns = true;
            lan.spawn(i, c)
        })
        .collect();
    let (a, b) = (&meshes[0].handle, &meshes[1].handle);
    // No bootstrap addresses: only mDNS can have introduced them.
    fully_connected(&[a, b]).await;
    let mut rb = b.subscribe();
    flows(a, &mut rb, "A's messages to reach B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_partitions_the_mesh_and_it_reforms_when_restored() {
    init_logs();
    let lan = Lan::new("cut", 3);
    let mut meshes = Vec::new();
    for i in 0..3 {
        let mut c = lan_config(&lan, i);
        if let Some(prev) = meshes.last() {
            let prev: &netns::NsMesh = prev;
            c.bootstrap = prev.handle.dial_addrs().await.unwrap();
        }
        meshes.push(lan.spawn(i, c));
    }
    let [a, b, c] = [0, 1, 2].map(|i| meshes[i].handle.clone());
    fully_connected(&[&a, &b, &c]).await;
    let (mut rb, mut rc) = (b.subscribe(), c.subscribe());
    flows(&a, &mut rc, "A's messages to reach C").await;

    lan.cut(2);
    // Ping stops being answered, the connections to C are closed: a partition.
    until("C to lose every peer", || async {
        (c.stats().await.unwrap().connected_peers == 0).then_some(())
    })
    .await;
    for h in [&a, &b] {
        until("A and B to lose C", || async {
            (!peer_ids(h).await.contains(&c.peer_id())).then_some(())
        })
        .await;
    }
    drain(&mut rc);
    let during = event("while C is cut off");
    publish(&a, during.clone()).await;
    // B hearing it is the barrier: the message has spread through what is connected. A message
    // reaches C only over a connection, and C had none before the publish and still has none
    // now (the cut link lets no dial through), so it cannot have heard it.
    heard(&mut rb, &during).await;
    let c_stats = c.stats().await.unwrap();
    assert_eq!(
        c_stats.connected_peers, 0,
        "C connected across a cut link: {:?}",
        c_stats.connected
    );
    assert!(
        !drain(&mut rc).contains(&during),
        "C heard a message across a cut link"
    );

    lan.restore(2);
    // C redials its bootstrap peer and the peers Kademlia knows; the mesh re-forms.
    fully_connected(&[&a, &b, &c]).await;
    flows(&a, &mut rc, "A's messages to reach C again").await;
    let obs = observations(&c.stats().await.unwrap());
    assert_eq!(obs.connected_peers, 2);
}

/// Arrival times of the benchmark's messages, by message text, at every mesh but the sender.
type Arrivals = std::sync::Arc<std::sync::Mutex<HashMap<String, Vec<Instant>>>>;

/// Waits until every mesh but the sender has each of `keys`, or until nothing new arrived for
/// ten seconds (gossipsub drops what it cannot forward in time under overload); returns the
/// fraction delivered.
async fn delivered(arrivals: &Arrivals, keys: &[String], receivers: usize) -> f64 {
    let count = || {
        let a = arrivals.lock().unwrap();
        keys.iter()
            .map(|k| a.get(k).map_or(0, Vec::len))
            .sum::<usize>()
    };
    let want = keys.len() * receivers;
    let (mut last, mut since) = (count(), Instant::now());
    while last < want && since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last as f64 / want as f64
}

/// Gossip propagation across 20 meshes on loopback: latency percentiles of single messages
/// (publish to arrival at every other mesh, in one process so one clock), then the delivery
/// rate of a burst from all meshes at once.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test -p univrs-node-agent --test mesh -- --ignored --nocapture"]
async fn gossip_propagation_benchmark() {
    const MESHES: usize = 20;
    const PROBES: usize = 200;
    const PROBE_INTERVAL: Duration = Duration::from_millis(50);
    const BURST: usize = 1000;
    init_logs();
    println!(
        "\n{:<26} {:>7} {:>7} {:>7} {:>7} {:>7} {:>11} {:>12} {:>10}",
        "setup (probes 20/s)",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "probed",
        "burst msg/s",
        "deliveries/s",
        "burst got"
    );
    for (name, target_peers) in [
        ("20 meshes, all connected", 32),
        ("20 meshes, ~4 peers each", 4),
    ] {
        let mut meshes: Vec<MeshHandle> = Vec::new();
        for i in 0..MESHES {
            let mut c = config(&addrs(&[TCP]));
            c.target_peers = target_peers;
            c.discovery_interval = Duration::from_secs(2);
            c.ping_interval = Duration::from_secs(5);
            c.heartbeat = Duration::from_millis(500);
            if i > 0 {
                c.bootstrap = meshes[0].dial_addrs().await.unwrap();
            }
            meshes.push(Mesh::spawn(c).await.unwrap());
        }
        // Wait for discovery, then (below) for the gossipsub meshes to carry messages.
        until("every mesh to have its peers", || async {
            let s = join_all(meshes.iter().map(|m| m.stats())).await;
            s.iter()
                .all(|s| s.as_ref().unwrap().connected_peers >= target_peers.min(MESHES - 1))
                .then_some(())
        })
        .await;

        let arrivals = Arrivals::default();
        let mut recorders = Vec::new();
        for m in &meshes {
            let mut rx = m.subscribe();
            let arrivals = arrivals.clone();
            recorders.push(tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(msg) => {
                            if let GossipBody::ClusterEvent(e) = msg.body {
                                let mut a = arrivals.lock().unwrap();
                                a.entry(e.message).or_default().push(Instant::now());
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }));
        }

        // Warm up until one round of messages, one from every mesh, reaches every other mesh:
        // the gossipsub meshes have formed (a fixed wait would be a guess).
        let warm_deadline = Instant::now() + WAIT;
        for round in 0.. {
            assert!(
                Instant::now() < warm_deadline,
                "timed out after {WAIT:?} waiting for a warm-up round to reach every mesh"
            );
            let keys: Vec<String> = (0..MESHES).map(|i| format!("warm-{round}-{i}")).collect();
            for (key, m) in keys.iter().zip(&meshes) {
                match m.publish(event(key)).await {
                    Ok(()) | Err(MeshError::NoPeers { .. }) => {}
                    Err(e) => panic!("publish: {e}"),
                }
            }
            if delivered(&arrivals, &keys, MESHES - 1).await == 1.0 {
                break;
            }
        }

        // Latency: one message at a time, from rotating publishers.
        let mut sent = Vec::new();
        for i in 0..PROBES {
            let key = format!("probe-{i}");
            let t0 = Instant::now();
            meshes[i % MESHES].publish(event(&key)).await.unwrap();
            sent.push((key, t0));
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
        let keys: Vec<String> = sent.iter().map(|(k, _)| k.clone()).collect();
        let probed = delivered(&arrivals, &keys, MESHES - 1).await;
        let mut lat: Vec<f64> = {
            let a = arrivals.lock().unwrap();
            sent.iter()
                .flat_map(|(k, t0)| {
                    a.get(k)
                        .into_iter()
                        .flatten()
                        .map(move |t| (*t - *t0).as_secs_f64() * 1000.0)
                })
                .collect()
        };
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

        // Throughput: a burst from every mesh at once.
        let keys: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
        let t0 = Instant::now();
        join_all(meshes.iter().enumerate().map(|(m, h)| {
            let keys = keys.clone();
            async move {
                for k in keys.iter().skip(m).step_by(MESHES) {
                    h.publish(event(k)).await.unwrap();
                }
            }
        }))
        .await;
        let got = delivered(&arrivals, &keys, MESHES - 1).await;
        let last_arrival = {
            let a = arrivals.lock().unwrap();
            keys.iter()
                .flat_map(|k| a.get(k).into_iter().flatten().copied())
                .max()
                .unwrap()
        };
        let secs = (last_arrival - t0).as_secs_f64();
        let deliveries = got * (BURST * (MESHES - 1)) as f64;
        println!(
            "{:<26} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6.1}% {:>11.0} {:>12.0} {:>9.1}%",
            name,
            pct(0.50),
            pct(0.90),
            pct(0.99),
            lat[lat.len() - 1],
            probed * 100.0,
            deliveries / (MESHES - 1) as f64 / secs,
            deliveries / secs,
            got * 100.0
        );
        let invalid: u64 = join_all(meshes.iter().map(|m| m.stats()))
            .await
            .into_iter()
            .map(|s| s.unwrap().invalid_total())
            .sum();
        assert_eq!(invalid, 0);
        join_all(meshes.iter().map(|m| m.shutdown())).await;
        for r in recorders {
            r.abort();
        }
    }
}

/// Starts a mesh on `machine` of `net` (its own thread and runtime inside the machine's
/// network namespace); the returned sender stops it.
fn spawn_on(
    net: &Internet,
    machine: &str,
    config: MeshConfig,
) -> (MeshHandle, tokio::sync::oneshot::Sender<()>) {
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    net.run_on(machine, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let h = Mesh::spawn(config).await.expect("mesh starts");
            handle_tx.send(h.clone()).unwrap();
            let _ = stop_rx.await;
            h.shutdown().await;
        });
    });
    (handle_rx.recv().expect("the mesh started"), stop_tx)
}

/// A machine's mesh on port 4001 (TCP and QUIC), with AutoNAT asking every 2 s.
fn machine_config(bootstrap: Vec<Multiaddr>) -> MeshConfig {
    let mut c = config(&addrs(&[
        "/ip4/0.0.0.0/tcp/4001",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
    ]));
    c.bootstrap = bootstrap;
    c.autonat_interval = Duration::from_secs(2);
    c
}

/// How `from` is connected to `to`, if it is.
async fn connection(from: &MeshHandle, to: &MeshHandle) -> Option<PeerConnection> {
    from.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer_id == to.peer_id())
        .map(|p| p.connection)
}

/// Homes behind NAT routers join through the public center: AutoNAT finds the center public
/// and the homes private, the homes reserve a slot on the center's relay, meet each other
/// through it, and punch a direct connection where both routers preserve ports; where one is
/// symmetric they stay relayed. Gossip reaches everyone either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_behind_nat_meet_through_a_relay_and_punch_holes_where_they_can() {
    init_logs();
    let net = Internet::build(&[Nat::PortPreserving, Nat::PortPreserving, Nat::Symmetric]);
    let (center, _stop_center) = spawn_on(&net, "center", machine_config(vec![]));
    let center_addr: Multiaddr = format!("/ip4/{WAN}.10/tcp/4001/p2p/{}", center.peer_id())
        .parse()
        .unwrap();
    let mut homes = Vec::new();
    for name in net.homes() {
        homes.push(spawn_on(
            &net,
            &name,
            machine_config(vec![center_addr.clone()]),
        ));
    }
    let (h1, h2, h3) = (&homes[0].0, &homes[1].0, &homes[2].0);

    until("the center found public", || async {
        (center.stats().await.unwrap().reachability == Reachability::Public).then_some(())
    })
    .await;
    for (i, h) in [h1, h2, h3].into_iter().enumerate() {
        until(
            &format!("home{} private, relayed by the center", i + 1),
            || async {
                let s = h.stats().await.unwrap();
                (s.reachability == Reachability::Private && s.relays == vec![center.peer_id()])
                    .then_some(())
            },
        )
        .await;
        assert_eq!(connection(h, &center).await, Some(PeerConnection::Direct));
    }

    // The homes find each other (Kademlia, through the center) and dial each other's relayed
    // address; then DCUtR tries a direct connection.
    fully_connected(&[&center, h1, h2, h3]).await;
    until("home1 and home2 hole-punched", || async {
        let a = connection(h1, h2).await;
        let b = connection(h2, h1).await;
        (a == Some(PeerConnection::HolePunched) || b == Some(PeerConnection::HolePunched))
            .then_some(())
    })
    .await;
    for (a, b, what) in [(h1, h3, "home1-home3"), (h2, h3, "home2-home3")] {
        until(
            &format!("{what}: a hole punch tried and failed"),
            || async {
                let s = b.stats().await.unwrap();
                let t = a.stats().await.unwrap();
                (s.hole_punch_failures + t.hole_punch_failures > 0).then_some(())
            },
        )
        .await;
        assert_eq!(
            connection(a, b).await,
            Some(PeerConnection::Relayed),
            "{what}"
        );
        assert_eq!(
            connection(b, a).await,
            Some(PeerConnection::Relayed),
            "{what}"
        );
    }

    // Gossip reaches every machine, relayed or punched.
    let mut rx: Vec<_> = [&center, h1, h2].iter().map(|h| h.subscribe()).collect();
    let from_symmetric = event("from behind the symmetric NAT");
    publish(h3, from_symmetric.clone()).await;
    for r in &mut rx {
        heard(r, &from_symmetric).await;
    }
    let mut r3 = h3.subscribe();
    let to_symmetric = event("to the home behind the symmetric NAT");
    publish(h1, to_symmetric.clone()).await;
    heard(&mut r3, &to_symmetric).await;
}

//! An auction among three real agents, against the real API server and controller: the lowest
//! ask wins, is paid the second-lowest, and the instance it runs is billed at that clearing
//! price; a bid copied from another node's status is refused and counted.
//!
//! `bid-a`, `bid-b` and `bid-c` are real `univrs agent`s whose owners price by Auction at 10, 12
//! and 15 million milli-credits a core-hour. The Workload asks for 100m, so their agents ask
//! 1,000,000, 1,200,000 and 1,500,000 for an instance-hour, each sealed to the auction's key.
//! `mallory` (a Node whose Lease the test renews, also Auction-priced) copies `bid-a`'s sealed
//! ask into its own status, hoping to win with it. At the close: `bid-a` wins at 1,200,000 an
//! hour, mallory's copy is refused (`BidRefused`, `univrs_auction_bids_refused_total`), and the
//! container runs on `bid-a`, its real CPU use paid at 1.2 times bid-a's rates.

use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::SealedBid;
use univrs_api::resources::workload::InstancePhase;
use univrs_api::{Node, Workload};
use univrs_tests::agent::AgentProc;
use univrs_tests::cluster::{
    LEASE_NS, credit_lines, ensure_namespace, event_about, eventually, metric, node_object,
    renew_leases, start_controller_with,
};
use univrs_tests::{ControlPlane, univrs_bin};

const NS: &str = "market";
const WAIT: Duration = Duration::from_secs(90);

/// Auction rates of `rate` milli-credits a core-hour (memory free).
fn auction_rates(rate: i64) -> serde_json::Value {
    serde_json::json!({"model": "Auction", "cpuCoreHour": rate, "memoryGibHour": 0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lowest_ask_wins_is_paid_the_second_lowest_and_a_copied_bid_is_refused() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, NS).await;
    ensure_namespace(&client, LEASE_NS).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let bidders = [
        ("bid-a", 10_000_000),
        ("bid-b", 12_000_000),
        ("bid-c", 15_000_000),
    ];
    let _agents: Vec<AgentProc> = bidders
        .iter()
        .map(|(n, _)| AgentProc::start(cp, n, &["--label", "market=auction"]))
        .collect();
    for (name, rate) in bidders {
        eventually(&format!("{name} registered"), WAIT, async || {
            let n = nodes.get_opt(name).await.unwrap();
            (n.map(|_| ()), "no Node yet".into())
        })
        .await;
        // The owner's terms (a field of people, not of the agent).
        nodes
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"pricing": auction_rates(rate)}})),
            )
            .await
            .unwrap();
    }
    let mut mallory = node_object(
        "mallory",
        &[("market", "auction")],
        &NodeIdentity::generate(),
    );
    mallory.spec.pricing = Some(serde_json::from_value(auction_rates(11_000_000)).unwrap());
    nodes
        .create(&PostParams::default(), &mallory)
        .await
        .unwrap();
    renew_leases(
        client.clone(),
        Arc::new(BTreeMap::from([(
            "mallory".to_string(),
            AtomicBool::new(true),
        )])),
    );
    let lines: Vec<(String, String)> = ["bid-a", "bid-b", "bid-c", "mallory"]
        .iter()
        .map(|n| (format!("{n}-market"), format!("node/{n}")))
        .collect();
    let lines: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|(l, c)| (l.as_str(), c.as_str(), "namespace/market"))
        .collect();
    credit_lines(&client, &lines, 100_000_000).await;
    // A window long enough for the test to copy a bid in it.
    let ctl = start_controller_with(cp, univrs_bin(), &["--auction-window", "6s"]);

    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let web: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "nodeSelector": {"market": "auction"},
            "containers": [{"name": "spin", "image": "univrs.local/demo:latest",
                "command": ["sh", "-c", "while :; do :; done"],
                "resources": {"requests": {"cpu": "100m", "memory": "16Mi"},
                              "limits": {"cpu": "100m", "memory": "16Mi"}}}]}
    }))
    .unwrap();
    workloads
        .create(&PostParams::default(), &web)
        .await
        .unwrap();

    let auction = eventually("the auction opens", WAIT, async || {
        let w = workloads.get("web").await.unwrap();
        let a = w.status.as_ref().and_then(|s| s.auction.clone());
        (a.clone(), format!("{:?}", w.status))
    })
    .await;
    let mut invited = auction.nodes.clone();
    invited.sort();
    assert_eq!(invited, ["bid-a", "bid-b", "bid-c", "mallory"]);
    assert_eq!(auction.instance, "web-0");

    // Each agent's ask appears in its own Node's status, sealed: the amount is nowhere in it.
    let bid_of = async |name: &str| -> Option<SealedBid> {
        let n = nodes.get(name).await.unwrap();
        let bids = n.status.map(|s| s.bids).unwrap_or_default();
        bids.into_iter().find(|b| b.auction == auction.id)
    };
    let a_bid = eventually("bid-a's sealed ask", WAIT, async || {
        (bid_of("bid-a").await, "no bid yet".into())
    })
    .await;
    assert_eq!(
        (a_bid.workload.as_str(), a_bid.instance.as_str()),
        ("market/web", "web-0")
    );
    assert!(a_bid.sealed.starts_with("v1.") && !a_bid.sealed.contains("1000000"));
    // Mallory copies it into its own status before the close.
    let copy = serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": "mallory"},
        "status": {"bids": [a_bid]}
    });
    nodes
        .patch_status(
            "mallory",
            &PatchParams::apply("univrs-agent-mallory-bids").force(),
            &Patch::Apply(&copy),
        )
        .await
        .unwrap();
    assert!(
        now_before(&auction.closes_at),
        "the copy was made after the close; the test's window is too short"
    );
    for name in ["bid-b", "bid-c"] {
        eventually(&format!("{name}'s sealed ask"), WAIT, async || {
            (bid_of(name).await, "no bid yet".into())
        })
        .await;
    }

    let placed = eventually("web-0 awarded", WAIT, async || {
        let w = workloads.get("web").await.unwrap();
        let i = w
            .status
            .as_ref()
            .and_then(|s| s.instances.first().cloned())
            .filter(|i| i.node.is_some());
        (i.clone(), format!("{:?}", w.status))
    })
    .await;
    let said = notes(&client).await;
    assert_eq!(
        placed.node.as_deref(),
        Some("bid-a"),
        "the lowest ask wins; events: {said:#?}"
    );
    assert_eq!(
        placed.awarded_price_per_hour,
        Some(1_200_000),
        "paid the second-lowest ask; events: {said:#?}"
    );
    let awarded = event_about(&client, NS, "Awarded", "web", WAIT).await;
    let note = awarded.note.unwrap_or_default();
    assert!(
        note.contains("bid-a at 1200000") && note.contains("3 valid asks"),
        "{note}"
    );
    let refused = event_about(&client, NS, "BidRefused", "web", WAIT).await;
    assert!(
        refused
            .note
            .as_deref()
            .unwrap_or_default()
            .starts_with("mallory's bid"),
        "{refused:?}"
    );
    assert!(
        metric(&ctl.metrics, "univrs_auction_bids_refused_total").unwrap_or(0.0) >= 1.0,
        "the refused bid is counted"
    );
    let w = workloads.get("web").await.unwrap();
    assert!(
        w.status.as_ref().and_then(|s| s.auction.as_ref()).is_none(),
        "the auction is over"
    );

    // It runs on bid-a, and its real CPU use is paid at 1.2 times bid-a's rates: 10,000,000 a
    // core-hour is 2.78 a millicore-second, so 3.33 at the clearing price (each charge rounded
    // up: a little above). At bid-a's own rates it would be 2.78, at bid-c's ask 4.17.
    eventually("web-0 running on bid-a", WAIT, async || {
        let w = workloads.get("web").await.unwrap();
        let i = w.status.as_ref().and_then(|s| s.instances.first().cloned());
        let running = i
            .as_ref()
            .is_some_and(|i| i.phase == Some(InstancePhase::Running));
        (running.then_some(()), format!("{i:?}"))
    })
    .await;
    let (billed, spent) = eventually("usage paid at the clearing price", WAIT, async || {
        let w = workloads.get("web").await.unwrap();
        let s = w.status.clone().unwrap_or_default();
        let billed = s
            .instances
            .first()
            .and_then(|i| i.billed.as_ref())
            .map_or(0, |b| b.cpu_millicore_seconds);
        let spent = s.credit_spent.unwrap_or(0);
        (
            (billed >= 1500).then_some((billed, spent)),
            format!("billed {billed} millicore-s, spent {spent}"),
        )
    })
    .await;
    let per = spent as f64 / billed as f64;
    assert!(
        (3.333..3.45).contains(&per),
        "paid {spent} for {billed} millicore-s: {per:.3} each, not the clearing price's 3.333"
    );
}

/// Whether the API server's clock (read as this machine's: one machine) is before `t`.
fn now_before(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> bool {
    k8s_openapi::jiff::Timestamp::now() < t.0
}

/// The reasons and notes of the Events in the test's namespace (for failures).
async fn notes(client: &kube::Client) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let list = events.list(&Default::default()).await.unwrap().items;
    list.into_iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

//! The revival pool on a schedule, and a lost node's credit settled without deleting it, against
//! the real API server and controller (`--revival-interval 3s --revival-grace 5s`: time
//! compressed; the test renews the nodes' Leases as their agents would).
//!
//! The shop owes `wanderer` 5000 and `wanderer` owes `keeper` 300. `wanderer` goes silent: 5 s
//! after its Lease lapsed, its claim passes to the pool (the shop now owes the pool), its debt is
//! written off, and the pool's 2% tax is paid out at once. Then every round the pool pays a tenth
//! of what it holds by the 40/25/20/15 split: `keeper` (young, low on credit) gets the subsidy and
//! support shares. The ledger sums to zero throughout. `wanderer` comes back: Ready again, owed
//! and owing nothing, never settled twice, and paid by the next rounds like any healthy node.

use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::{Account, CreditLine, Node};
use univrs_tests::cluster::{
    LEASE_NS, credit_lines, ensure_namespace, eventually, node_object, renew_leases,
    start_controller_with, transfers,
};
use univrs_tests::{ControlPlane, univrs_bin};

const WAIT: Duration = Duration::from_secs(60);

/// Every line's balance by name, and every account's net position.
async fn ledger(lines: &Api<CreditLine>) -> (BTreeMap<String, i64>, BTreeMap<Account, i128>) {
    let all = lines.list(&Default::default()).await.unwrap().items;
    let mut by_line = BTreeMap::new();
    let mut accounts: BTreeMap<Account, i128> = BTreeMap::new();
    for l in &all {
        let b = l.status.as_ref().map_or(0, |s| s.balance);
        by_line.insert(l.metadata.name.clone().unwrap_or_default(), b);
        *accounts.entry(l.spec.creditor.clone()).or_default() += i128::from(b);
        *accounts.entry(l.spec.debtor.clone()).or_default() -= i128::from(b);
    }
    (by_line, accounts)
}

fn settled_events(list: &[k8s_openapi::api::events::v1::Event], node: &str) -> usize {
    list.iter()
        .filter(|e| {
            e.reason.as_deref() == Some("CreditSettled")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node)
        })
        .map(|e| e.deprecated_count.unwrap_or(1).max(1) as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_pays_out_on_schedule_and_a_lost_node_is_settled_and_comes_back() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, LEASE_NS).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["keeper", "wanderer"] {
        nodes
            .create(
                &PostParams::default(),
                &node_object(name, &[], &NodeIdentity::generate()),
            )
            .await
            .unwrap();
    }
    let alive = Arc::new(BTreeMap::from([
        ("keeper".to_string(), AtomicBool::new(true)),
        ("wanderer".to_string(), AtomicBool::new(true)),
    ]));
    renew_leases(client.clone(), alive.clone());

    let lines: Api<CreditLine> = Api::all(client.clone());
    credit_lines(
        &client,
        &[
            ("shop-wanderer", "node/wanderer", "namespace/shop"),
            ("wanderer-keeper", "node/keeper", "node/wanderer"),
        ],
        10_000,
    )
    .await;
    transfers(
        &client,
        &[
            (
                "w1",
                "shop-wanderer",
                "namespace/shop",
                "node/wanderer",
                5_000,
            ),
            ("w2", "wanderer-keeper", "node/wanderer", "node/keeper", 300),
        ],
    )
    .await;
    let _controller = start_controller_with(
        cp,
        univrs_bin(),
        &["--revival-interval", "3s", "--revival-grace", "5s"],
    );
    eventually("both nodes Ready", WAIT, async || {
        let ready = |n: &Node| {
            n.status
                .as_ref()
                .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
        };
        let list = nodes.list(&Default::default()).await.unwrap().items;
        let ok = list.len() == 2 && list.iter().all(ready);
        (ok.then_some(()), format!("{} nodes", list.len()))
    })
    .await;

    // wanderer goes silent and stays so past the grace: settled, still a Node.
    alive["wanderer"].store(false, Ordering::SeqCst);
    let (by_line, _) = eventually("wanderer's credit settled", WAIT, async || {
        let (by_line, accounts) = ledger(&lines).await;
        let ok = by_line.get("shop-wanderer") == Some(&0)
            && by_line.get("revival-namespace-shop") == Some(&5_000)
            && by_line.get("wanderer-keeper") == Some(&0);
        (
            ok.then(|| (by_line.clone(), accounts)),
            format!("{by_line:?}"),
        )
    })
    .await;
    let wanderer = nodes.get("wanderer").await.unwrap();
    assert!(wanderer.metadata.deletion_timestamp.is_none());
    let plan = wanderer
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("univrs.io/revival-plan"))
        .cloned()
        .unwrap_or_default();
    assert!(plan.contains("\"key\":\"lost-"), "{plan}");
    eprintln!("settled while lost: {by_line:?}");

    // The rounds: keeper's payments from the pool grow round after round (the 2% tax, 45, came at
    // once; a round pays it 45% of a tenth of what the pool holds: 222, then 212, …), and every
    // account's balances still sum to zero.
    let (paid, accounts) = eventually("two rounds paid to keeper", WAIT, async || {
        let (by_line, accounts) = ledger(&lines).await;
        let paid = by_line
            .get("revival-pays-node-keeper")
            .copied()
            .unwrap_or(0);
        (
            (paid >= 45 + 222 + 212).then(|| (paid, accounts.clone())),
            format!("{by_line:?}"),
        )
    })
    .await;
    assert_eq!(accounts.values().sum::<i128>(), 0, "{accounts:?}");
    let pool = accounts
        .get(&Account::namespace("univrs-system"))
        .copied()
        .unwrap_or(0);
    assert!(
        pool > 0 && pool < 5_000 - 45,
        "the pool paid out and keeps a reserve: {pool}"
    );
    assert_eq!(
        accounts
            .get(&Account::node("wanderer"))
            .copied()
            .unwrap_or(0),
        0,
        "wanderer owes and is owed nothing"
    );
    eprintln!("keeper paid {paid} by the pool; the pool holds {pool}");

    // wanderer comes back: Ready again, settled only once, and paid by the rounds like others.
    alive["wanderer"].store(true, Ordering::SeqCst);
    eventually("wanderer Ready and paid by a round", WAIT, async || {
        let n = nodes.get("wanderer").await.unwrap();
        let ready = n
            .status
            .as_ref()
            .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"));
        let (by_line, _) = ledger(&lines).await;
        let paid = by_line
            .get("revival-pays-node-wanderer")
            .copied()
            .unwrap_or(0);
        (
            (ready && paid > 0).then_some(()),
            format!("ready {ready}, paid {paid}"),
        )
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let list = events.list(&Default::default()).await.unwrap().items;
    assert_eq!(settled_events(&list, "wanderer"), 1, "settled once");
    let (_, accounts) = ledger(&lines).await;
    assert_eq!(accounts.values().sum::<i128>(), 0, "{accounts:?}");
}

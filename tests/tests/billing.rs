//! Usage becomes payment: the controller pays a node for the usage its agent reports, exactly
//! once (also when an earlier attempt was applied but not recorded), reports CreditExhausted
//! when the owner's line cannot carry a charge, stops the workload growing, and resumes once
//! the line has room; usage beyond what is possible is clamped and said so (UsageClamped),
//! never paid. Node creditBalance follows the lines, and balances sum to zero.
//!
//! The test plays the agent: it renews the node's Lease and reports cumulative usage in the
//! Workload's status with the agent's own field manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::conditions::is_true;
use univrs_api::enr::pricing::Market;
use univrs_api::enr::revival::POOL_NAMESPACE;
use univrs_api::identity::NodeIdentity;
use univrs_api::ledger::Transfer;
use univrs_api::resources::workload::Instance;
use univrs_api::{Account, CreditLine, Node, Workload};
use univrs_controller::core::billing;
use univrs_controller::reconcile::credit::apply_transfer;
use univrs_tests::ControlPlane;
use univrs_tests::cluster::{
    self, LEASE_NS, ensure_namespace, eventually, node_object, renew_leases, start_controller,
};

const NS: &str = "shop";
const LINE: &str = "alpha-shop";

/// Reports `cpu` millicore-seconds used by `meter-0` on alpha, as alpha's agent would.
async fn report_usage(api: &Api<Workload>, placed_at: &Time, cpu: i64) {
    report_usage_with_memory(api, placed_at, cpu, 0).await
}

/// Reports `cpu` millicore-seconds and `mem` MiB-seconds used by `meter-0` on alpha.
async fn report_usage_with_memory(api: &Api<Workload>, placed_at: &Time, cpu: i64, mem: i64) {
    cluster::report_usage(api, ("meter", "meter-0"), "alpha", placed_at, (cpu, mem)).await
}

fn instance<'a>(w: &'a Workload, name: &str) -> Option<&'a Instance> {
    w.status
        .as_ref()
        .and_then(|s| s.instances.iter().find(|i| i.name == name))
}

fn state(w: &Workload, line: &CreditLine) -> String {
    format!(
        "balance {:?}, spent {:?}, conditions {:?}",
        line.status.as_ref().map(|s| s.balance),
        w.status.as_ref().and_then(|s| s.credit_spent),
        w.status.as_ref().map(|s| &s.conditions)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_paid_once_and_exhaustion_stops_growth() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }
    // alpha charges 3600 milli-credits per core-hour: one per core-second.
    let mut node = node_object("alpha", &[], &NodeIdentity::generate());
    // Billing counts a report only up to what the instance could use since its placement (its
    // limits, here none, so the node's capacity, times the seconds): with 1,000 cores every CPU
    // report below is possible (5 s of slack alone covers 1,600 core-seconds).
    node.spec.capacity.cpu = univrs_api::quantity::Quantity("1000".into());
    node.spec.pricing = Some(
        serde_json::from_value(
            serde_json::json!({"model": "Fixed", "cpuCoreHour": 3600, "memoryGibHour": 0}),
        )
        .unwrap(),
    );
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // beta has no line with the shop's namespace, so nothing of the shop's is placed there;
    // it leaves at the end, and its credit goes through the revival pool.
    let beta = node_object("beta", &[], &NodeIdentity::generate());
    nodes.create(&PostParams::default(), &beta).await.unwrap();
    let alive = Arc::new(BTreeMap::from([
        ("alpha".to_string(), AtomicBool::new(true)),
        ("beta".to_string(), AtomicBool::new(true)),
    ]));
    renew_leases(client.clone(), alive);
    let lines: Api<CreditLine> = Api::all(client.clone());
    let line: CreditLine = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine", "metadata": {"name": LINE},
        "spec": {"creditor": "node/alpha", "debtor": format!("namespace/{NS}"), "limit": 1000}
    }))
    .unwrap();
    lines.create(&PostParams::default(), &line).await.unwrap();
    let _ctl = start_controller(cp);

    // 100m at 3600/core-hour is 360 an hour: within the line's 1000, so it is placed.
    let wl_api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let wl: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "meter"},
        "spec": {"replicas": 1, "containers": [{"name": "c", "image": "demo/busybox:latest",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap();
    wl_api.create(&PostParams::default(), &wl).await.unwrap();
    let placed_at = eventually("meter-0 placed", Duration::from_secs(30), async || {
        let w = wl_api.get("meter").await.unwrap();
        let at = instance(&w, "meter-0").and_then(|i| i.placed_at.clone());
        (at, format!("{:?}", w.status))
    })
    .await;

    // 200 core-seconds are paid: 200 milli-credits, once.
    report_usage(&wl_api, &placed_at, 200_000).await;
    eventually("200 paid", Duration::from_secs(30), async || {
        let w = wl_api.get("meter").await.unwrap();
        let l = lines.get(LINE).await.unwrap();
        let ok = l.status.as_ref().map(|s| s.balance) == Some(200)
            && w.status.as_ref().and_then(|s| s.credit_spent) == Some(200)
            && instance(&w, "meter-0")
                .and_then(|i| i.billed.as_ref())
                .is_some_and(|b| b.cpu_millicore_seconds == 200_000);
        (ok.then_some(()), state(&w, &l))
    })
    .await;
    eventually("alpha's balance", Duration::from_secs(30), async || {
        let n = nodes.get("alpha").await.unwrap();
        let b = n.status.as_ref().and_then(|s| s.credit_balance);
        ((b == Some(200)).then_some(()), format!("{b:?}"))
    })
    .await;
    // The same report again changes nothing. An identical apply may not even reach the
    // controller, so a barrier follows it: the same CPU with one MiB-second of memory (free at
    // alpha's rates) is a real change, which the controller bills by moving the mark alone. A
    // reconcile pays before it records the mark, and the controller reconciles one Workload at
    // a time, so once that mark shows, every payment for these reports has been made.
    report_usage(&wl_api, &placed_at, 200_000).await;
    report_usage_with_memory(&wl_api, &placed_at, 200_000, 1).await;
    eventually(
        "the repeated report billed",
        Duration::from_secs(30),
        async || {
            let w = wl_api.get("meter").await.unwrap();
            let l = lines.get(LINE).await.unwrap();
            let billed = instance(&w, "meter-0").and_then(|i| i.billed.clone());
            let ok = billed.as_ref().is_some_and(|b| b.memory_mib_seconds == 1);
            (
                ok.then_some(()),
                format!("billed {billed:?}, {}", state(&w, &l)),
            )
        },
    )
    .await;
    let w = wl_api.get("meter").await.unwrap();
    let l = lines.get(LINE).await.unwrap();
    assert_eq!(
        l.status.as_ref().map(|s| s.balance),
        Some(200),
        "paid once: {}",
        state(&w, &l)
    );
    assert_eq!(w.status.as_ref().and_then(|s| s.credit_spent), Some(200));

    // An attempt that was applied but never recorded (a crash in between) is found by its
    // id and counted, not paid twice.
    let w = wl_api.get("meter").await.unwrap();
    let mut next = instance(&w, "meter-0").unwrap().clone();
    next.usage.as_mut().unwrap().cpu_millicore_seconds = 300_000;
    let rates = node.spec.pricing.clone().unwrap();
    let charge = billing::charge(
        &w.metadata.uid.clone().unwrap(),
        &next,
        (
            &rates,
            &Market {
                utilization: 0.0,
                entropy_multiplier: 1.0,
            },
            None,
        ),
        &billing::Ceiling::of(&w.spec, &node.spec.capacity),
        &k8s_openapi::jiff::Timestamp::now(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(charge.amount, 100);
    apply_transfer(
        &client,
        LINE,
        &Transfer {
            id: charge.id.clone(),
            from: Account::namespace(NS),
            to: Account::node("alpha"),
            amount: charge.amount,
        },
    )
    .await
    .unwrap();
    report_usage(&wl_api, &placed_at, 300_000).await;
    eventually(
        "earlier attempt recorded",
        Duration::from_secs(30),
        async || {
            let w = wl_api.get("meter").await.unwrap();
            let l = lines.get(LINE).await.unwrap();
            let ok = w.status.as_ref().and_then(|s| s.credit_spent) == Some(300)
                && instance(&w, "meter-0")
                    .and_then(|i| i.billed.as_ref())
                    .is_some_and(|b| b.cpu_millicore_seconds == 300_000);
            (ok.then_some(()), state(&w, &l))
        },
    )
    .await;
    assert_eq!(
        lines.get(LINE).await.unwrap().status.map(|s| s.balance),
        Some(300),
        "paid once"
    );

    // 1,300 more cannot fit in the 700 left: CreditExhausted, and the workload stops growing.
    report_usage(&wl_api, &placed_at, 1_600_000).await;
    eventually("CreditExhausted", Duration::from_secs(30), async || {
        let w = wl_api.get("meter").await.unwrap();
        let l = lines.get(LINE).await.unwrap();
        let ok = w
            .status
            .as_ref()
            .is_some_and(|s| is_true(&s.conditions, "CreditExhausted"));
        (ok.then_some(()), state(&w, &l))
    })
    .await;
    wl_api
        .patch(
            "meter",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    eventually("scale-up held back", Duration::from_secs(30), async || {
        let w = wl_api.get("meter").await.unwrap();
        let s = w.status.clone().unwrap_or_default();
        let held = s.observed_generation == w.metadata.generation
            && instance(&w, "meter-1").is_none_or(|i| i.node.is_none())
            && s.conditions.iter().any(|c| {
                c.type_ == "Scheduled" && c.status == "False" && c.message.contains("credit")
            });
        (held.then_some(()), format!("{:?}", s.conditions))
    })
    .await;
    assert_eq!(
        lines.get(LINE).await.unwrap().status.map(|s| s.balance),
        Some(300),
        "a refused charge moves nothing"
    );

    // More credit: the pending charge is paid and the second instance placed.
    lines
        .patch(
            LINE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"limit": 10_000}})),
        )
        .await
        .unwrap();
    eventually("paid and grown", Duration::from_secs(40), async || {
        let w = wl_api.get("meter").await.unwrap();
        let l = lines.get(LINE).await.unwrap();
        let s = w.status.clone().unwrap_or_default();
        let ok = l.status.as_ref().map(|s| s.balance) == Some(1_600)
            && s.credit_spent == Some(1_600)
            && !is_true(&s.conditions, "CreditExhausted")
            && instance(&w, "meter-1").is_some_and(|i| i.node.is_some());
        (ok.then_some(()), state(&w, &l))
    })
    .await;

    // A report beyond what the instance could have used since its placement (2^60 MiB-seconds
    // of memory on an 8 GiB node) is the node's word against physics: billing counts it only up
    // to the node's memory times the seconds since placement (plus 5 s of slack), pays nothing
    // for the excess and says so with a Warning Event.
    report_usage_with_memory(&wl_api, &placed_at, 1_600_000, 1 << 60).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    eventually("UsageClamped", Duration::from_secs(30), async || {
        let clamped = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("UsageClamped"));
        let note = clamped.as_ref().and_then(|e| e.note.clone());
        (note.clone(), format!("{note:?}"))
    })
    .await;
    let w = wl_api.get("meter").await.unwrap();
    let billed = instance(&w, "meter-0")
        .and_then(|i| i.billed.clone())
        .unwrap();
    let since = k8s_openapi::jiff::Timestamp::now()
        .as_second()
        .saturating_sub(placed_at.0.as_second())
        + 5;
    assert!(
        billed.memory_mib_seconds <= 8192 * since,
        "billed {} MiB-s in {since} s on an 8 GiB node",
        billed.memory_mib_seconds
    );
    assert_eq!(
        lines.get(LINE).await.unwrap().status.map(|s| s.balance),
        Some(1_600),
        "nothing paid for the excess (memory is free at alpha's rates, CPU unchanged)"
    );

    // Mutual credit is zero-sum: every account's balance over all lines adds up to 0, and the
    // node's status shows its side.
    let all = lines.list(&Default::default()).await.unwrap();
    let mut balances: BTreeMap<Account, i128> = BTreeMap::new();
    for l in &all.items {
        let b = i128::from(l.status.as_ref().map_or(0, |s| s.balance));
        *balances.entry(l.spec.creditor.clone()).or_default() += b;
        *balances.entry(l.spec.debtor.clone()).or_default() -= b;
    }
    assert_eq!(balances.values().sum::<i128>(), 0);
    eventually(
        "alpha's balance follows",
        Duration::from_secs(30),
        async || {
            let n = nodes.get("alpha").await.unwrap();
            let b = n.status.as_ref().and_then(|s| s.credit_balance);
            let want = balances.get(&Account::node("alpha")).copied();
            (
                (b.map(i128::from) == want).then_some(()),
                format!("{b:?} vs {want:?}"),
            )
        },
    )
    .await;

    // beta leaves: the shop owes it 500 and it owes alpha 200.
    let shop = format!("namespace/{NS}");
    cluster::credit_lines(
        &client,
        &[
            ("beta-shop", "node/beta", &shop),
            ("alpha-beta", "node/alpha", "node/beta"),
        ],
        1000,
    )
    .await;
    cluster::transfers(
        &client,
        &[
            ("b1", "beta-shop", &shop, "node/beta", 500),
            ("b2", "alpha-beta", "node/beta", "node/alpha", 200),
        ],
    )
    .await;
    nodes.delete("beta", &Default::default()).await.unwrap();
    eventually(
        "beta settled and gone",
        Duration::from_secs(40),
        async || {
            let gone = nodes.get_opt("beta").await.unwrap().is_none();
            (gone.then_some(()), "beta still there".into())
        },
    )
    .await;
    let all = lines.list(&Default::default()).await.unwrap().items;
    let balance = |name: &str| {
        all.iter()
            .find(|l| l.metadata.name.as_deref() == Some(name))
            .and_then(|l| l.status.as_ref())
            .map_or(0, |s| s.balance)
    };
    assert_eq!(
        balance("beta-shop"),
        0,
        "the shop's debt to beta is released"
    );
    assert_eq!(
        balance("revival-namespace-shop"),
        500,
        "and owed to the revival pool instead"
    );
    assert_eq!(balance("alpha-beta"), 0, "beta's debt is written off");
    // The pool's 2% tax on 500 is 10: alpha, new and low on balance, gets the subsidy share
    // (25%) and the support share (20%), 2 each; the rest is the pool's reserve.
    assert_eq!(balance("revival-pays-node-alpha"), 4);
    let mut accounts: BTreeMap<Account, i128> = BTreeMap::new();
    for l in &all {
        let b = i128::from(l.status.as_ref().map_or(0, |s| s.balance));
        *accounts.entry(l.spec.creditor.clone()).or_default() += b;
        *accounts.entry(l.spec.debtor.clone()).or_default() -= b;
    }
    assert_eq!(
        accounts.get(&Account::node("beta")).copied().unwrap_or(0),
        0
    );
    assert_eq!(
        accounts.get(&Account::namespace(POOL_NAMESPACE)),
        Some(&496)
    );
    assert_eq!(accounts.values().sum::<i128>(), 0);
}

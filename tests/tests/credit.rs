//! The mutual-credit ledger on the real API server: transfers applied exactly once under
//! concurrency, limits held, balances summing to zero, and the CreditLine reconciler's view.

use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::ledger::{Applied, Ledger, Line, Transfer};
use univrs_api::resources::node::LEASE_NAMESPACE;
use univrs_api::{Account, CreditLine, Node};
use univrs_controller::reconcile::credit::{TransferError, apply_transfer};
use univrs_tests::cluster::{ensure_namespace, node_object};
use univrs_tests::{ControlPlane, Guarded, run, univrs_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_apply_exactly_once_within_the_limit() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    // The controller's leader Lease lives in LEASE_NAMESPACE.
    for name in ["portal", LEASE_NAMESPACE] {
        ensure_namespace(&client, name).await;
    }
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &node_object("library", &[], &NodeIdentity::generate()),
        )
        .await
        .unwrap();
    let lines: Api<CreditLine> = Api::all(client.clone());
    for (name, creditor, debtor) in [
        ("library-portal", "node/library", "namespace/portal"),
        ("orphan", "node/nowhere", "namespace/portal"),
    ] {
        let cl: CreditLine = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine", "metadata": {"name": name},
            "spec": {"creditor": creditor, "debtor": debtor, "limit": 10_000}
        }))
        .unwrap();
        lines.create(&PostParams::default(), &cl).await.unwrap();
    }

    // The controller marks the line Ready (both accounts exist) and the orphan not.
    let mut cmd = std::process::Command::new(univrs_bin());
    cmd.args(["controller", "--metrics-addr", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .stderr(std::fs::File::create(cp.data_dir.join("controller-credit.log")).unwrap());
    let ctl = Guarded::spawn(cmd).unwrap();

    // Eight writers race to apply the same 60 transfers, each in its own order.
    let (portal, library) = (Account::namespace("portal"), Account::node("library"));
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let client = client.clone();
        let (from, to) = (portal.clone(), library.clone());
        tasks.push(tokio::spawn(async move {
            let mut moved = 0;
            for k in 0..60u64 {
                let i = (k * 7 + w * 13) % 60;
                let t = Transfer {
                    id: format!("usage-{i}"),
                    from: from.clone(),
                    to: to.clone(),
                    amount: 100,
                };
                if let Applied::Moved(_) =
                    apply_transfer(&client, "library-portal", &t).await.unwrap()
                {
                    moved += 1;
                }
            }
            moved
        }));
    }
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert_eq!(
        applied, 60,
        "each transfer id applied exactly once across all writers"
    );
    let line = lines.get("library-portal").await.unwrap();
    let status = line.status.clone().unwrap();
    assert_eq!(status.balance, 6_000);

    // Past the limit: refused, nothing changes.
    let big = Transfer {
        id: "too-much".into(),
        from: portal.clone(),
        to: library.clone(),
        amount: 5_000,
    };
    let err = apply_transfer(&client, "library-portal", &big)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Refused(_)), "{err}");
    assert!(err.to_string().contains("at most 4000"), "{err}");
    // The node pays back along the same line: the balance falls.
    let back = Transfer {
        id: "refund-1".into(),
        from: library.clone(),
        to: portal.clone(),
        amount: 1_000,
    };
    apply_transfer(&client, "library-portal", &back)
        .await
        .unwrap();
    assert_eq!(
        lines
            .get("library-portal")
            .await
            .unwrap()
            .status
            .unwrap()
            .balance,
        5_000
    );

    // Across every line, balances sum to zero.
    let mut ledger = Ledger::new();
    for cl in lines.list(&Default::default()).await.unwrap() {
        let s = cl.status.clone().unwrap_or_default();
        ledger
            .upsert_line(
                cl.metadata.name.unwrap(),
                Line {
                    creditor: cl.spec.creditor,
                    debtor: cl.spec.debtor,
                    limit: cl.spec.limit,
                    balance: s.balance,
                },
            )
            .unwrap();
    }
    assert_eq!(ledger.balances().values().sum::<i128>(), 0);
    assert_eq!(ledger.balance(&library), 5_000);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = |name: &str| {
            let (_, out, _) = run(cp.kubectl().args([
                "get",
                "ucl",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason} {.status.utilization}",
            ]));
            out
        };
        let (good, orphan) = (ready("library-portal"), ready("orphan"));
        if good == "AccountsExist 50%" && orphan.starts_with("UnknownAccount") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CreditLine status not reconciled: {good:?} {orphan:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, table, _) = run(cp.kubectl().args(["get", "creditlines"]));
    assert!(
        table.contains("node/library") && table.contains("5000") && table.contains("50%"),
        "{table}"
    );

    // The Reputation limit policy: a node may owe by its standing. The library lends up to
    // 9000 to the school's machine, a fresh node at 0.5: a third of it, 3000.
    Api::<Node>::all(client.clone())
        .create(
            &PostParams::default(),
            &node_object("school", &[], &NodeIdentity::generate()),
        )
        .await
        .unwrap();
    let by_standing: CreditLine = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
        "metadata": {"name": "library-school"},
        "spec": {"creditor": "node/library", "debtor": "node/school", "limit": 9_000,
            "limitPolicy": "Reputation"}
    }))
    .unwrap();
    lines
        .create(&PostParams::default(), &by_standing)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = lines.get("library-school").await.unwrap();
        let effective = l.status.as_ref().and_then(|s| s.effective_limit);
        if effective == Some(3_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no effective limit from the school's reputation: {effective:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let school = Account::node("school");
    let owe = |id: &str, amount| Transfer {
        id: id.into(),
        from: school.clone(),
        to: library.clone(),
        amount,
    };
    let err = apply_transfer(&client, "library-school", &owe("s1", 3_001))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 3000"), "{err}");
    apply_transfer(&client, "library-school", &owe("s2", 3_000))
        .await
        .unwrap();
    // A namespace has no reputation: the schema refuses the policy for one, naming the field.
    let out = univrs_tests::run_with_stdin(
        cp.kubectl().args(["apply", "-f", "-"]),
        r#"{"apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
            "metadata": {"name": "library-shop"},
            "spec": {"creditor": "node/library", "debtor": "namespace/shop", "limit": 10,
                "limitPolicy": "Reputation"}}"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.limitPolicy") && err.contains("node debtor"),
        "{err}"
    );
    drop(ctl);
}

//! Control-plane benchmark (printed, never asserted): cold and warm start to /readyz, RSS idle
//! and with 10,000 Workloads, and Workload creates per second through kube-rs.
//!
//! Run: `cargo bench -p univrs-tests --bench control_plane` (UNIVRS_BENCH_WORKLOADS to change
//! the count).

use futures::{StreamExt, stream};
use std::time::Instant;
use univrs_tests::ControlPlane;

/// Resident memory of the supervisor's children (etcd, kube-apiserver, kube-controller-manager).
fn children_rss_mib(supervisor: u32) -> f64 {
    std::iter::once(supervisor)
        .chain(univrs_tests::children_of(supervisor))
        .map(univrs_tests::rss_mib)
        .sum()
}

fn main() {
    let count: usize = std::env::var("UNIVRS_BENCH_WORKLOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    univrs_tests::upstream_bin_dir();
    let dir = std::env::temp_dir().join(format!("univrs-test-{}-bench", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = univrs_tests::free_port();

    let t = Instant::now();
    let cp = ControlPlane::start_in(&dir, port).unwrap();
    let cold = t.elapsed();
    cp.install_crds().unwrap();
    cp.stop();
    let t = Instant::now();
    let cp = ControlPlane::start_in(&dir, port).unwrap();
    let warm = t.elapsed();
    std::thread::sleep(std::time::Duration::from_secs(10));
    let idle = children_rss_mib(cp.supervisor_pid().unwrap());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (creates_per_s, elapsed) = rt.block_on(async {
        let client = cp.client().await.unwrap();
        let api: kube::Api<univrs_api::Workload> = kube::Api::namespaced(client, "default");
        let t = Instant::now();
        stream::iter(0..count)
            .map(|i| {
                let api = api.clone();
                async move {
                    let w: univrs_api::Workload = serde_json::from_value(serde_json::json!({
                        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
                        "metadata": {"name": format!("bench-{i}")},
                        "spec": {"replicas": 1, "containers": [{"name": "web", "image": "demo/busybox:latest",
                            "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}]}
                    }))
                    .unwrap();
                    api.create(&Default::default(), &w).await.unwrap();
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let e = t.elapsed();
        (count as f64 / e.as_secs_f64(), e)
    });
    std::thread::sleep(std::time::Duration::from_secs(5));
    let loaded = children_rss_mib(cp.supervisor_pid().unwrap());
    cp.stop();
    let _ = std::fs::remove_dir_all(&dir);

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| cold start to /readyz (fresh data dir, certificates made) | {:.2} s |",
        cold.as_secs_f64()
    );
    println!(
        "| warm start to /readyz (same data dir) | {:.2} s |",
        warm.as_secs_f64()
    );
    println!("| RSS idle (etcd + kube-apiserver + kube-controller-manager) | {idle:.0} MiB |");
    println!("| RSS with {count} Workloads | {loaded:.0} MiB |");
    println!(
        "| Workload creates through kube-rs (32 in flight) | {creates_per_s:.0} /s ({count} in {:.1} s) |",
        elapsed.as_secs_f64()
    );
}

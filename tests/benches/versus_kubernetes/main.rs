//! Univrs side by side with Kubernetes on the same machine, against the same pinned API server,
//! in one run (printed, never asserted):
//!
//! 1. **Placement** (`placement.rs`): N Ready core Nodes and N Ready Univrs Nodes of the same
//!    size; W single-replica Pods placed by the pinned kube-scheduler (its defaults, then client
//!    limits lifted) and W single-replica Workloads placed by `univrs controller`; streaming
//!    (created while the placer runs) and a backlog (all waiting, then the placer starts).
//! 2. **Start latency** (`start.rs`): create → Running, one at a time, on the pinned kubelet
//!    with containerd versus `univrs agent`; and the runtime alone (containerd's runc shim versus
//!    our shim).
//! 3. **Footprint** (`footprint.rs`): RSS and CPU of each whole stack, idle and running the
//!    portal's three replicas.
//! 4. **Heartbeats** (`heartbeat.rs`): API server CPU and write rate with N nodes renewing
//!    Leases, our agents' pattern versus kubelets' (kwok).
//!
//! Run: `cargo bench -p univrs-tests --bench versus_kubernetes` (root). `UNIVRS_BENCH_NODES`
//! (5,000), `UNIVRS_BENCH_WORKLOADS` (1,000) and `UNIVRS_BENCH_RUNS` (40) shrink it;
//! `UNIVRS_BENCH_PARTS` picks parts (`placement,start,footprint,heartbeat`); `UNIVRS_BENCH_BIN`
//! runs a given `univrs` binary. The last two lines are for scripts: `ratio placement=X`
//! (Univrs placements/s over kube-scheduler's pods/s with its limits lifted) and
//! `ratio start_p50=Y` (kubelet's create → Running p50 over Univrs's).

mod footprint;
mod heartbeat;
mod placement;
mod start;

use std::path::PathBuf;
use univrs_tests::bench::count;
use univrs_tests::build_univrs;

fn main() {
    let nodes = count("UNIVRS_BENCH_NODES", 5_000);
    let workloads = count("UNIVRS_BENCH_WORKLOADS", 1_000);
    let runs = count("UNIVRS_BENCH_RUNS", 40);
    let parts = std::env::var("UNIVRS_BENCH_PARTS")
        .unwrap_or_else(|_| "placement,start,footprint,heartbeat".into());
    let wants = |p: &str| parts.split(',').any(|x| x.trim() == p);
    let bin = std::env::var_os("UNIVRS_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| build_univrs(true));
    // Every part builds what it needs first, so no build runs while a clock does.
    univrs_tests::upstream_bin_dir();
    univrs_tests::upstream_node_bin_dir();

    println!("## Univrs versus Kubernetes on this machine");
    let placement = wants("placement").then(|| placement::run(&bin, nodes, workloads));
    let start = wants("start").then(|| start::run(&bin, runs));
    if wants("footprint") {
        footprint::run(&bin);
    }
    if wants("heartbeat") {
        heartbeat::run(&bin, nodes);
    }
    println!();
    if let Some(r) = placement {
        println!("ratio placement={r:.2}");
    }
    if let Some(r) = start {
        println!("ratio start_p50={r:.2}");
    }
}

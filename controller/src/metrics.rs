//! Prometheus metrics of the controller, in the text exposition format.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the scheduling latency histogram.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Counters and histograms, updated by the reconcilers and read by `/metrics`.
#[derive(Default)]
pub struct Metrics {
    reconciles: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    placements: AtomicU64,
    unschedulable: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts a reconcile of `kind` with `outcome` ("ok" or "error").
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str) {
        *self
            .reconciles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((kind, outcome))
            .or_default() += 1;
    }

    /// Records one scheduling pass.
    pub fn observe_scheduling(&self, took: Duration, placed: usize, unschedulable: bool) {
        self.placements.fetch_add(placed as u64, Ordering::Relaxed);
        if unschedulable {
            self.unschedulable.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP univrs_reconciles_total Reconciles by kind and outcome."
        );
        let _ = writeln!(s, "# TYPE univrs_reconciles_total counter");
        for ((kind, outcome), n) in self
            .reconciles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "univrs_reconciles_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP univrs_placements_total Instances placed on a node."
        );
        let _ = writeln!(s, "# TYPE univrs_placements_total counter");
        let _ = writeln!(
            s,
            "univrs_placements_total {}",
            self.placements.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP univrs_unschedulable_total Scheduling passes that left an instance unplaced."
        );
        let _ = writeln!(s, "# TYPE univrs_unschedulable_total counter");
        let _ = writeln!(
            s,
            "univrs_unschedulable_total {}",
            self.unschedulable.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP univrs_scheduling_duration_seconds Time to plan a workload's placements."
        );
        let _ = writeln!(s, "# TYPE univrs_scheduling_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "univrs_scheduling_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "univrs_scheduling_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "univrs_scheduling_duration_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "univrs_scheduling_duration_seconds_count {count}");
        s
    }
}

//! Prometheus metrics of the controller, in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Writes the series of `name`, with `labels` (`kind="Node",`-style, possibly empty).
    fn render(&self, s: &mut String, name: &str, labels: &str) {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}_bucket{{{labels}le=\"{b}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(s, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let bare = labels.trim_end_matches(',');
        let braces = if bare.is_empty() {
            String::new()
        } else {
            format!("{{{bare}}}")
        };
        let _ = writeln!(
            s,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count{braces} {count}");
    }
}

/// Counters and histograms, updated by the reconcilers and read by `/metrics`.
#[derive(Default)]
pub struct Metrics {
    reconciles: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    durations: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    in_flight: Mutex<BTreeMap<&'static str, i64>>,
    placements: AtomicU64,
    unschedulable: AtomicU64,
    scheduling: Histogram,
    planning: Histogram,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn header(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

impl Metrics {
    /// Marks a reconcile of `kind` as started (the in-flight gauge).
    pub fn started(&self, kind: &'static str) {
        *lock(&self.in_flight).entry(kind).or_default() += 1;
    }

    /// Counts a finished reconcile of `kind` with `outcome` ("ok" or "error") and its duration.
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        *lock(&self.in_flight).entry(kind).or_default() -= 1;
        *lock(&self.reconciles).entry((kind, outcome)).or_default() += 1;
        let h = lock(&self.durations).entry(kind).or_default().clone();
        h.observe(took);
    }

    /// Records one scheduling pass.
    pub fn observe_scheduling(&self, took: Duration, placed: usize, unschedulable: bool) {
        self.placements.fetch_add(placed as u64, Ordering::Relaxed);
        if unschedulable {
            self.unschedulable.fetch_add(1, Ordering::Relaxed);
        }
        self.scheduling.observe(took);
    }

    /// Records one placement decision: the time it held the node index.
    pub fn observe_plan(&self, took: Duration) {
        self.planning.observe(took);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        header(
            &mut s,
            "univrs_reconciles_total",
            "counter",
            "Reconciles by kind and outcome.",
        );
        for ((kind, outcome), n) in lock(&self.reconciles).iter() {
            let _ = writeln!(
                s,
                "univrs_reconciles_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            &mut s,
            "univrs_reconcile_duration_seconds",
            "histogram",
            "Time one reconcile took, by kind.",
        );
        for (kind, h) in lock(&self.durations).iter() {
            h.render(
                &mut s,
                "univrs_reconcile_duration_seconds",
                &format!("kind=\"{kind}\","),
            );
        }
        header(
            &mut s,
            "univrs_reconciles_in_flight",
            "gauge",
            "Reconciles running now, by kind (the work the queues are draining).",
        );
        for (kind, n) in lock(&self.in_flight).iter() {
            let _ = writeln!(s, "univrs_reconciles_in_flight{{kind=\"{kind}\"}} {n}");
        }
        header(
            &mut s,
            "univrs_placements_total",
            "counter",
            "Instances placed on a node.",
        );
        let _ = writeln!(
            s,
            "univrs_placements_total {}",
            self.placements.load(Ordering::Relaxed)
        );
        header(
            &mut s,
            "univrs_unschedulable_total",
            "counter",
            "Scheduling passes that left an instance unplaced.",
        );
        let _ = writeln!(
            s,
            "univrs_unschedulable_total {}",
            self.unschedulable.load(Ordering::Relaxed)
        );
        header(
            &mut s,
            "univrs_scheduling_duration_seconds",
            "histogram",
            "Time to plan a workload's placements.",
        );
        self.scheduling
            .render(&mut s, "univrs_scheduling_duration_seconds", "");
        header(
            &mut s,
            "univrs_plan_duration_seconds",
            "histogram",
            "Time a placement decision holds the node index (the decision alone, no I/O).",
        );
        self.planning
            .render(&mut s, "univrs_plan_duration_seconds", "");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.started("Node");
        m.reconciled("Node", "ok", Duration::from_millis(3));
        m.observe_scheduling(Duration::from_micros(700), 2, true);
        m.observe_plan(Duration::from_micros(300));
        let out = m.render();
        assert!(out.contains("univrs_reconciles_total{kind=\"Node\",outcome=\"ok\"} 1"));
        assert!(
            out.contains("univrs_reconcile_duration_seconds_bucket{kind=\"Node\",le=\"0.005\"} 1")
        );
        assert!(
            out.contains("univrs_reconcile_duration_seconds_bucket{kind=\"Node\",le=\"0.001\"} 0")
        );
        assert!(out.contains("univrs_reconcile_duration_seconds_count{kind=\"Node\"} 1"));
        assert!(out.contains("univrs_reconciles_in_flight{kind=\"Node\"} 0"));
        assert!(out.contains("univrs_placements_total 2"));
        assert!(out.contains("univrs_scheduling_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(out.contains("univrs_scheduling_duration_seconds_count 1"));
        assert!(out.contains("univrs_plan_duration_seconds_bucket{le=\"0.0005\"} 1"));
    }
}

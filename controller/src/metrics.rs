//! Prometheus metrics of the controller, kept in a `prometheus-client` registry and served in
//! the OpenMetrics text format (`univrs_io::metrics`).

use std::time::Duration;
use univrs_io::metrics::prometheus_client::metrics::counter::Counter;
use univrs_io::metrics::prometheus_client::metrics::family::Family;
use univrs_io::metrics::prometheus_client::metrics::gauge::Gauge;
use univrs_io::metrics::prometheus_client::metrics::histogram::Histogram;
use univrs_io::metrics::prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histograms: from half a millisecond (a placement
/// decision) to half a minute (the reconcile deadline's half).
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Labels of a per-kind series.
type Kind = [(&'static str, &'static str); 1];
/// Labels of a per-outcome series.
type Outcome = [(&'static str, &'static str); 1];
/// Labels of a per-kind, per-outcome series.
type KindOutcome = [(&'static str, &'static str); 2];

/// Counters, gauges and histograms, updated by the reconcilers and read by `/metrics`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindOutcome, Counter>,
    durations: Family<Kind, Histogram, fn() -> Histogram>,
    in_flight: Family<Kind, Gauge>,
    placements: Counter,
    unschedulable: Counter,
    scheduling: Histogram,
    planning: Histogram,
    leader: Gauge,
    auctions: Family<Outcome, Counter>,
    bids_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            reconciles: Family::default(),
            durations: Family::new_with_constructor(histogram),
            in_flight: Family::default(),
            placements: Counter::default(),
            unschedulable: Counter::default(),
            scheduling: histogram(),
            planning: histogram(),
            leader: Gauge::default(),
            auctions: Family::default(),
            bids_refused: Counter::default(),
        };
        let mut r = Registry::default();
        // Counters are registered without `_total`: the library appends it.
        r.register(
            "univrs_reconciles",
            "Reconciles by kind and outcome",
            m.reconciles.clone(),
        );
        r.register(
            "univrs_reconcile_duration_seconds",
            "Time one reconcile took, by kind",
            m.durations.clone(),
        );
        r.register(
            "univrs_reconciles_in_flight",
            "Reconciles running now, by kind (the work the queues are draining)",
            m.in_flight.clone(),
        );
        r.register(
            "univrs_placements",
            "Instances placed on a node",
            m.placements.clone(),
        );
        r.register(
            "univrs_unschedulable",
            "Scheduling passes that left an instance unplaced",
            m.unschedulable.clone(),
        );
        r.register(
            "univrs_scheduling_duration_seconds",
            "Time to plan a workload's placements",
            m.scheduling.clone(),
        );
        r.register(
            "univrs_plan_duration_seconds",
            "Time a placement decision holds the node index (the decision alone, no I/O)",
            m.planning.clone(),
        );
        r.register(
            "univrs_leader",
            "Whether this controller leads (1) or waits (0)",
            m.leader.clone(),
        );
        r.register(
            "univrs_auctions",
            "Auctions for an instance by outcome (opened, awarded, no_valid_bid)",
            m.auctions.clone(),
        );
        r.register(
            "univrs_auction_bids_refused",
            "Sealed bids refused at an auction's close (not opening, not the bidder's, other terms)",
            m.bids_refused.clone(),
        );
        Self { registry: r, ..m }
    }
}

impl Metrics {
    /// Marks a reconcile of `kind` as started (the in-flight gauge).
    pub fn started(&self, kind: &'static str) {
        self.in_flight.get_or_create(&[("kind", kind)]).inc();
    }

    /// Counts a finished reconcile of `kind` with `outcome` ("ok" or "error") and its duration.
    pub fn reconciled(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.in_flight.get_or_create(&[("kind", kind)]).dec();
        self.reconciles
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
        self.durations
            .get_or_create(&[("kind", kind)])
            .observe(took.as_secs_f64());
    }

    /// Records one scheduling pass.
    pub fn observe_scheduling(&self, took: Duration, placed: usize, unschedulable: bool) {
        self.placements.inc_by(placed as u64);
        if unschedulable {
            self.unschedulable.inc();
        }
        self.scheduling.observe(took.as_secs_f64());
    }

    /// Records one placement decision: the time it held the node index.
    pub fn observe_plan(&self, took: Duration) {
        self.planning.observe(took.as_secs_f64());
    }

    /// Counts auctions that reached `outcome` ("opened", "awarded" or "no_valid_bid").
    pub fn auction(&self, outcome: &'static str) {
        self.auctions.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// Counts bids refused at an auction's close.
    pub fn bids_refused(&self, n: usize) {
        self.bids_refused.inc_by(n as u64);
    }

    /// Records whether this controller leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The registry every series is in, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
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
        m.set_leader(true);
        m.auction("awarded");
        m.bids_refused(2);
        let out = univrs_io::metrics::encode(m.registry());
        for series in [
            "univrs_reconciles_total{kind=\"Node\",outcome=\"ok\"} 1",
            "univrs_reconcile_duration_seconds_bucket{le=\"0.005\",kind=\"Node\"} 1",
            "univrs_reconcile_duration_seconds_bucket{le=\"0.001\",kind=\"Node\"} 0",
            "univrs_reconcile_duration_seconds_count{kind=\"Node\"} 1",
            "univrs_reconciles_in_flight{kind=\"Node\"} 0",
            "univrs_placements_total 2",
            "univrs_unschedulable_total 1",
            "univrs_scheduling_duration_seconds_bucket{le=\"0.001\"} 1",
            "univrs_scheduling_duration_seconds_count 1",
            "univrs_plan_duration_seconds_bucket{le=\"0.0005\"} 1",
            "univrs_leader 1",
            "univrs_auctions_total{outcome=\"awarded\"} 1",
            "univrs_auction_bids_refused_total 2",
        ] {
            assert!(out.contains(series), "no {series} in\n{out}");
        }
    }
}

//! Prometheus metrics through `prometheus-client`, in the OpenMetrics text format that
//! Prometheus scrapes.
//!
//! Long-lived metrics (the controller's counters and histograms) live in a
//! [`Registry`](prometheus_client::registry::Registry); figures that another part already
//! keeps (the mesh's counters, the instances' phases) are read at scrape time into a [`Sampled`]
//! set, so nothing is counted twice. Counters are registered without `_total`: the library
//! appends it.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an error here would be a bug in a metric's encoder.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

/// The answer to `GET /metrics` for `registry`.
pub fn response(registry: &Registry) -> Response {
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], encode(registry)).into_response()
}

/// Labels of one series, as `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Copy)]
enum Value {
    Counter(u64),
    Gauge(i64),
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    series: Vec<(Labels, Value)>,
}

/// Figures read at scrape time from where they are kept, to register as one collector.
#[derive(Debug, Default)]
pub struct Sampled {
    families: Vec<Family>,
}

impl Sampled {
    fn push(&mut self, name: &str, help: &str, labels: Labels, value: Value) {
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.series.push((labels, value)),
            None => self.families.push(Family {
                name: name.into(),
                help: help.into(),
                series: vec![(labels, value)],
            }),
        }
    }

    /// Adds a gauge series (`name` as exposed).
    pub fn gauge(&mut self, name: &str, help: &str, labels: Labels, value: i64) -> &mut Self {
        self.push(name, help, labels, Value::Gauge(value));
        self
    }

    /// Adds a counter series (`name` without `_total`, which the encoder appends).
    pub fn counter(&mut self, name: &str, help: &str, labels: Labels, value: u64) -> &mut Self {
        self.push(name, help, labels, Value::Counter(value));
        self
    }

    /// Declares a counter family with no series yet (so its help and type are exposed).
    pub fn counter_family(&mut self, name: &str, help: &str) -> &mut Self {
        if !self.families.iter().any(|f| f.name == name) {
            self.families.push(Family {
                name: name.into(),
                help: help.into(),
                series: Vec::new(),
            });
        }
        self
    }

    /// The text exposition of these figures alone.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        encode(&registry)
    }
}

fn encode_value(
    value: Value,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(v) => ConstCounter::new(v).encode(encoder),
        Value::Gauge(v) => ConstGauge::new(v).encode(encoder),
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let Some((_, first)) = family.series.first() else {
                let metric_type = ConstCounter::new(0u64).metric_type();
                encoder.encode_descriptor(&family.name, &family.help, None, metric_type)?;
                continue;
            };
            let metric_type = match first {
                Value::Counter(v) => ConstCounter::new(*v).metric_type(),
                Value::Gauge(v) => ConstGauge::new(*v).metric_type(),
            };
            let mut metric =
                encoder.encode_descriptor(&family.name, &family.help, None, metric_type)?;
            if let [(labels, value)] = family.series.as_slice()
                && labels.is_empty()
            {
                // One unlabelled series: `name 7`, not `name{} 7`.
                encode_value(*value, metric)?;
                continue;
            }
            for (labels, value) in &family.series {
                encode_value(*value, metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_figures_encode_as_typed_series() {
        let mut s = Sampled::default();
        s.gauge(
            "univrs_agent_instances",
            "Instances by phase.",
            vec![("phase".into(), "Running".into())],
            2,
        )
        .gauge(
            "univrs_agent_instances",
            "Instances by phase.",
            vec![("phase".into(), "Failed".into())],
            1,
        )
        .counter("univrs_mesh_messages_received", "Accepted.", vec![], 7)
        .counter_family("univrs_mesh_invalid_messages", "Rejected.");
        let out = s.encode();
        assert!(out.contains("# TYPE univrs_agent_instances gauge"), "{out}");
        assert!(
            out.contains("univrs_agent_instances{phase=\"Running\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("univrs_agent_instances{phase=\"Failed\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE univrs_mesh_messages_received counter"),
            "{out}"
        );
        assert!(
            out.contains("univrs_mesh_messages_received_total 7"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE univrs_mesh_invalid_messages counter"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}

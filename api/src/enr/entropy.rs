//! Entropy: how disordered a node's situation is, per dimension and in total.
//!
//! Each component is a linear formula of its inputs capped at [`MAX_COMPONENT`]; the total is a
//! weighted sum (default 0.3·Sn + 0.3·Sc + 0.2·Ss + 0.2·St). The price multiplier is a piecewise
//! function of the total, computed with the *configured* weights, so changing a weight changes
//! prices too.

use super::bounds::clamp;
use serde::{Deserialize, Serialize};

/// The cap of each component.
pub const MAX_COMPONENT: f64 = 10.0;

/// Network observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInputs {
    /// Hops to the peers it talks to.
    pub hops: f64,
    /// Variance of latency, ms.
    pub latency_variance_ms: f64,
    /// Packet loss, 0 to 1.
    pub packet_loss: f64,
    /// Bandwidth saturation, 0 to 1.
    pub bandwidth_saturation: f64,
}

/// Compute observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInputs {
    /// CPU cycles used.
    pub cpu_cycles: f64,
    /// Memory in bytes.
    pub memory_bytes: f64,
    /// Context switches.
    pub context_switches: f64,
    /// Cache miss rate, 0 to 1.
    pub cache_miss_rate: f64,
}

/// Storage observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageInputs {
    /// Stored bytes.
    pub size_bytes: f64,
    /// Replica divergence, 0 to 1.
    pub replica_divergence: f64,
    /// Fragmentation, 0 to 1.
    pub fragmentation: f64,
    /// Compaction debt, 0 to 1.
    pub compaction_debt: f64,
}

/// Temporal observations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemporalInputs {
    /// Seconds since the state was last refreshed.
    pub staleness_s: f64,
    /// Clock drift, ms.
    pub clock_drift_ms: f64,
    /// Ordering uncertainty, 0 to 1.
    pub ordering_uncertainty: f64,
    /// Version divergence, 0 to 1.
    pub version_divergence: f64,
}

/// The four components, each in `[0, 10]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entropy {
    /// Network entropy Sn.
    pub network: f64,
    /// Compute entropy Sc.
    pub compute: f64,
    /// Storage entropy Ss.
    pub storage: f64,
    /// Temporal entropy St.
    pub temporal: f64,
}

/// A non-negative linear combination, capped; negative or NaN inputs count as zero.
fn component(terms: &[(f64, f64)]) -> f64 {
    let sum: f64 = terms
        .iter()
        .map(|(x, w)| clamp(*x, 0.0, f64::MAX) * w)
        .sum();
    clamp(sum, 0.0, MAX_COMPONENT)
}

/// Sn = hops·0.1 + latency_variance_ms·0.01 + packet_loss·5 + bandwidth_saturation·2.
pub fn network(i: &NetworkInputs) -> f64 {
    component(&[
        (i.hops, 0.1),
        (i.latency_variance_ms, 0.01),
        (i.packet_loss, 5.0),
        (i.bandwidth_saturation, 2.0),
    ])
}

/// Sc = cpu_cycles·1e-6 + memory_bytes·1e-7 + context_switches·0.01 + cache_miss_rate.
pub fn compute(i: &ComputeInputs) -> f64 {
    component(&[
        (i.cpu_cycles, 1e-6),
        (i.memory_bytes, 1e-7),
        (i.context_switches, 0.01),
        (i.cache_miss_rate, 1.0),
    ])
}

/// Ss = size_bytes·1e-8 + replica_divergence·3 + fragmentation·2 + compaction_debt·1.5.
pub fn storage(i: &StorageInputs) -> f64 {
    component(&[
        (i.size_bytes, 1e-8),
        (i.replica_divergence, 3.0),
        (i.fragmentation, 2.0),
        (i.compaction_debt, 1.5),
    ])
}

/// St = staleness_s·0.001 + clock_drift_ms·0.001 + ordering_uncertainty·2 + version_divergence·2.5.
pub fn temporal(i: &TemporalInputs) -> f64 {
    component(&[
        (i.staleness_s, 0.001),
        (i.clock_drift_ms, 0.001),
        (i.ordering_uncertainty, 2.0),
        (i.version_divergence, 2.5),
    ])
}

/// The weights of the total.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    /// Weight of Sn.
    pub network: f64,
    /// Weight of Sc.
    pub compute: f64,
    /// Weight of Ss.
    pub storage: f64,
    /// Weight of St.
    pub temporal: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            network: 0.3,
            compute: 0.3,
            storage: 0.2,
            temporal: 0.2,
        }
    }
}

/// Weights that do not form a weighted mean.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("entropy weights must be finite, non-negative and sum to 1 (±0.001); got {0:?}")]
pub struct WeightsError(pub Weights);

impl Weights {
    /// Checks the weights are finite, non-negative and sum to 1 ± 0.001.
    pub fn validated(self) -> Result<Self, WeightsError> {
        let w = [self.network, self.compute, self.storage, self.temporal];
        let ok = w.iter().all(|x| x.is_finite() && *x >= 0.0)
            && (w.iter().sum::<f64>() - 1.0).abs() <= 0.001;
        if ok {
            Ok(self)
        } else {
            Err(WeightsError(self))
        }
    }
}

impl Entropy {
    /// The components from raw observations.
    pub fn from_inputs(
        n: &NetworkInputs,
        c: &ComputeInputs,
        s: &StorageInputs,
        t: &TemporalInputs,
    ) -> Self {
        Self {
            network: network(n),
            compute: compute(c),
            storage: storage(s),
            temporal: temporal(t),
        }
    }

    /// S_total, in `[0, 10]` for validated weights.
    pub fn total(&self, w: &Weights) -> f64 {
        let parts = [
            (self.network, w.network),
            (self.compute, w.compute),
            (self.storage, w.storage),
            (self.temporal, w.temporal),
        ];
        let sum: f64 = parts
            .iter()
            .map(|(s, w)| clamp(*s, 0.0, MAX_COMPONENT) * w)
            .sum();
        clamp(sum, 0.0, MAX_COMPONENT)
    }
}

/// The price multiplier for a total entropy: piecewise linear with thresholds 2, 5 and 8,
/// continuous, non-decreasing, in `[1, 5]`.
pub fn price_multiplier(total: f64) -> f64 {
    let s = clamp(total, 0.0, f64::MAX);
    let m = if s < 2.0 {
        1.0 + 0.05 * s
    } else if s < 5.0 {
        1.1 + 0.1 * (s - 2.0)
    } else if s < 8.0 {
        1.4 + 0.2 * (s - 5.0)
    } else {
        2.0 + 1.5 * (s - 8.0)
    };
    clamp(m, 1.0, 5.0)
}

/// The price multiplier of these components under these (configured) weights.
pub fn multiplier_for(entropy: &Entropy, weights: &Weights) -> f64 {
    price_multiplier(entropy.total(weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_formulas_and_caps() {
        let n = NetworkInputs {
            hops: 3.0,
            latency_variance_ms: 100.0,
            packet_loss: 0.1,
            bandwidth_saturation: 0.5,
        };
        assert!((network(&n) - (0.3 + 1.0 + 0.5 + 1.0)).abs() < 1e-9);
        let huge = NetworkInputs { hops: 1e9, ..n };
        assert_eq!(network(&huge), MAX_COMPONENT);
        let e = Entropy {
            network: 10.0,
            compute: 10.0,
            storage: 10.0,
            temporal: 10.0,
        };
        assert!((e.total(&Weights::default()) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn multiplier_uses_the_configured_weights() {
        let e = Entropy {
            network: 10.0,
            compute: 0.0,
            storage: 0.0,
            temporal: 0.0,
        };
        let net_heavy = Weights {
            network: 1.0,
            compute: 0.0,
            storage: 0.0,
            temporal: 0.0,
        }
        .validated()
        .unwrap();
        assert!(multiplier_for(&e, &net_heavy) > multiplier_for(&e, &Weights::default()));
        assert_eq!(price_multiplier(10.0), 5.0);
        assert!((price_multiplier(2.0) - 1.1).abs() < 1e-12);
        assert!((price_multiplier(5.0) - 1.4).abs() < 1e-12);
        assert!((price_multiplier(8.0) - 2.0).abs() < 1e-12);
        assert_eq!(price_multiplier(f64::NAN), 1.0);
    }

    #[test]
    fn bad_weights_are_refused() {
        assert!(
            Weights {
                network: 0.5,
                compute: 0.5,
                storage: 0.5,
                temporal: 0.0
            }
            .validated()
            .is_err()
        );
        assert!(
            Weights {
                network: -0.1,
                compute: 0.5,
                storage: 0.3,
                temporal: 0.3
            }
            .validated()
            .is_err()
        );
        assert!(
            Weights {
                network: f64::NAN,
                ..Weights::default()
            }
            .validated()
            .is_err()
        );
        assert!(Weights::default().validated().is_ok());
    }
}

//! Entropy: how disordered a node's situation is, per dimension and in total, from what the
//! cluster measures of it (nothing here is a node's claim about itself that would lower its
//! price: a node that overstates its own latency only makes itself dearer).
//!
//! - **Network** Sn = 6·unreachable + 2·relayed + 0.01·latency_ms: the share of the peers
//!   reporting on it that are not connected to it, the share of those connected only through a
//!   relay, and its median round-trip time.
//! - **Compute** Sc = 6·utilization² + 3·unsettled + restart_rate: how full it is (allocated
//!   over capacity, the larger of CPU and memory), the share of its instances not running and
//!   ready, and container restarts per instance-hour.
//! - **Ledger** Sl = 8·line_utilization²: how near its fullest credit line is to its limit (a
//!   line at its limit can carry no more payment). Nodes keep no replicated data, so the
//!   seed's storage dimension is this one here.
//! - **Temporal** St = 1.5·lapses + 0.5·clock_skew_s: Lease lapses on its record and how far
//!   its clock is from the API server's.
//!
//! Each component is capped at [`MAX_COMPONENT`]; the total is a weighted sum (default
//! 0.3·Sn + 0.3·Sc + 0.2·Sl + 0.2·St). The price multiplier is a piecewise function of the
//! total, computed with the *configured* weights, so changing a weight changes prices too.

use super::bounds::clamp;
use serde::{Deserialize, Serialize};

/// The cap of each component.
pub const MAX_COMPONENT: f64 = 10.0;

/// What peers see of a node over the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInputs {
    /// Share of the peers reporting on it that are not connected to it, 0 to 1.
    pub unreachable: f64,
    /// Share of the connected peers that reach it only through a relay, 0 to 1.
    pub relayed: f64,
    /// Median round-trip time to its peers, milliseconds.
    pub latency_ms: f64,
}

/// How full a node is and how what runs there fares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInputs {
    /// Allocated over capacity, the larger of CPU and memory, 0 to 1.
    pub utilization: f64,
    /// Share of its instances not running and ready, 0 to 1.
    pub unsettled: f64,
    /// Container restarts per instance-hour.
    pub restart_rate: f64,
}

/// A node's position in the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerInputs {
    /// How near its fullest credit line is to its limit, 0 to 1.
    pub line_utilization: f64,
}

/// How steady a node is in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TemporalInputs {
    /// Lease lapses on its record.
    pub lapses: f64,
    /// How far its clock is from the API server's, seconds.
    pub clock_skew_s: f64,
}

/// The four components, each in `[0, MAX_COMPONENT]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entropy {
    /// Network entropy Sn.
    pub network: f64,
    /// Compute entropy Sc.
    pub compute: f64,
    /// Ledger entropy Sl.
    pub ledger: f64,
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

/// A share, clamped to 0..1 (NaN counts as 0).
fn share(x: f64) -> f64 {
    clamp(x, 0.0, 1.0)
}

/// Sn = 6·unreachable + 2·relayed + 0.01·latency_ms.
pub fn network(i: &NetworkInputs) -> f64 {
    component(&[
        (share(i.unreachable), 6.0),
        (share(i.relayed), 2.0),
        (i.latency_ms, 0.01),
    ])
}

/// Sc = 6·utilization² + 3·unsettled + restart_rate.
pub fn compute(i: &ComputeInputs) -> f64 {
    let u = share(i.utilization);
    component(&[
        (u * u, 6.0),
        (share(i.unsettled), 3.0),
        (i.restart_rate, 1.0),
    ])
}

/// Sl = 8·line_utilization².
pub fn ledger(i: &LedgerInputs) -> f64 {
    let u = share(i.line_utilization);
    component(&[(u * u, 8.0)])
}

/// St = 1.5·lapses + 0.5·clock_skew_s.
pub fn temporal(i: &TemporalInputs) -> f64 {
    component(&[(i.lapses, 1.5), (i.clock_skew_s.abs(), 0.5)])
}

/// The weights of the total.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    /// Weight of Sn.
    pub network: f64,
    /// Weight of Sc.
    pub compute: f64,
    /// Weight of Sl.
    pub ledger: f64,
    /// Weight of St.
    pub temporal: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            network: 0.3,
            compute: 0.3,
            ledger: 0.2,
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
        let w = [self.network, self.compute, self.ledger, self.temporal];
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
    /// The components from what was measured.
    pub fn from_inputs(
        n: &NetworkInputs,
        c: &ComputeInputs,
        l: &LedgerInputs,
        t: &TemporalInputs,
    ) -> Self {
        Self {
            network: network(n),
            compute: compute(c),
            ledger: ledger(l),
            temporal: temporal(t),
        }
    }

    /// S_total, in `[0, 10]` for validated weights.
    pub fn total(&self, w: &Weights) -> f64 {
        let parts = [
            (self.network, w.network),
            (self.compute, w.compute),
            (self.ledger, w.ledger),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_formulas_and_caps() {
        let n = NetworkInputs {
            unreachable: 0.25,
            relayed: 0.5,
            latency_ms: 100.0,
        };
        assert!((network(&n) - (1.5 + 1.0 + 1.0)).abs() < 1e-9);
        let huge = NetworkInputs {
            latency_ms: 1e9,
            ..n
        };
        assert_eq!(network(&huge), MAX_COMPONENT);
        let full = ComputeInputs {
            utilization: 1.0,
            ..Default::default()
        };
        let half = ComputeInputs {
            utilization: 0.5,
            ..Default::default()
        };
        assert_eq!((compute(&full), compute(&half)), (6.0, 1.5));
        let at_limit = LedgerInputs {
            line_utilization: 1.0,
        };
        assert_eq!(ledger(&at_limit), 8.0);
        let skewed = TemporalInputs {
            lapses: 1.0,
            clock_skew_s: -4.0,
        };
        assert_eq!(temporal(&skewed), 3.5, "a clock behind counts as one ahead");
        let shares_clamped = NetworkInputs {
            unreachable: 7.0,
            relayed: f64::NAN,
            latency_ms: 0.0,
        };
        assert_eq!(network(&shares_clamped), 6.0);
        let e = Entropy {
            network: 10.0,
            compute: 10.0,
            ledger: 10.0,
            temporal: 10.0,
        };
        assert!((e.total(&Weights::default()) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn multiplier_uses_the_configured_weights() {
        let e = Entropy {
            network: 10.0,
            compute: 0.0,
            ledger: 0.0,
            temporal: 0.0,
        };
        let net_heavy = Weights {
            network: 1.0,
            compute: 0.0,
            ledger: 0.0,
            temporal: 0.0,
        }
        .validated()
        .unwrap();
        assert!(
            price_multiplier(e.total(&net_heavy)) > price_multiplier(e.total(&Weights::default()))
        );
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
                ledger: 0.5,
                temporal: 0.0
            }
            .validated()
            .is_err()
        );
        assert!(
            Weights {
                network: -0.1,
                compute: 0.5,
                ledger: 0.3,
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

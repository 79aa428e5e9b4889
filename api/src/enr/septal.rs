//! Septal gates: a circuit breaker per node, with states named for what traffic does.
//!
//! | here | circuit-breaker name | traffic |
//! |---|---|---|
//! | `Connected` | Open | flows normally |
//! | `Isolated` | Closed | cut off: no placements, transfers refused |
//! | `Recovering` | HalfOpen | probing: a growing share of traffic while probes succeed |
//!
//! A Connected gate isolates after 5 consecutive failures or when the health score reaches 0.7.
//! After 60 s isolated it starts Recovering at a quarter of the traffic; each success adds a
//! quarter, so 3 consecutive successes reconnect it; a failure while recovering isolates it again
//! and restarts the 60 s.

use super::bounds::clamp;
use crate::resources::node::SeptalState;
use serde::{Deserialize, Serialize};

/// Gate settings (by default: 5 failures, health 0.7, 60 s, quarter steps; see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Consecutive failures that isolate.
    pub failure_threshold: u32,
    /// Health score at or above which the gate isolates.
    pub health_threshold: f64,
    /// How long isolation lasts before probing, ms.
    pub recovery_timeout_ms: u64,
    /// Traffic share added by each successful probe while recovering.
    pub recovery_step: f64,
    /// Silence that counts as a full timeout, ms.
    pub timeout_threshold_ms: u64,
    /// Defaulted milli-credits that count as a full credit default.
    pub credit_default_threshold: i64,
    /// Reputation below which the reputation component starts to rise.
    pub reputation_threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            health_threshold: 0.7,
            recovery_timeout_ms: 60_000,
            recovery_step: 0.25,
            timeout_threshold_ms: 30_000,
            credit_default_threshold: 100_000,
            reputation_threshold: 0.5,
        }
    }
}

/// The gate of one node.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// Connected, Isolated or Recovering.
    pub state: SeptalState,
    /// Consecutive failures while Connected.
    pub failures: u32,
    /// When the state last changed, ms.
    pub since_ms: u64,
    /// Share of traffic allowed, 0 to 1 (1 when Connected, 0 when Isolated).
    pub traffic: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            state: SeptalState::Connected,
            failures: 0,
            since_ms: 0,
            traffic: 1.0,
        }
    }
}

/// What happened to a node.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A request, probe or instance start succeeded.
    Success,
    /// One failed.
    Failure,
    /// A fresh health assessment.
    Health(HealthInputs),
    /// Time passed (lets an isolated gate start recovering).
    Tick,
}

/// The raw inputs of the health score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthInputs {
    /// Time since the node was last heard from, ms.
    pub silent_ms: u64,
    /// Milli-credits the node has defaulted on.
    pub defaulted: i64,
    /// The node's reputation, 0 to 1.
    pub reputation: f64,
}

/// Health score from 0 (healthy) to 1: 0.4·timeout + 0.3·credit default + 0.3·reputation,
/// each component in [0, 1] relative to its threshold.
pub fn health_score(h: &HealthInputs, cfg: &Config) -> f64 {
    let timeout = h.silent_ms as f64 / cfg.timeout_threshold_ms.max(1) as f64;
    let default = h.defaulted.max(0) as f64 / cfg.credit_default_threshold.max(1) as f64;
    let rep = clamp(h.reputation, 0.0, 1.0);
    let rep_component = if rep >= cfg.reputation_threshold {
        0.0
    } else {
        (cfg.reputation_threshold - rep) / cfg.reputation_threshold.max(f64::EPSILON)
    };
    clamp(
        0.4 * clamp(timeout, 0.0, 1.0)
            + 0.3 * clamp(default, 0.0, 1.0)
            + 0.3 * clamp(rep_component, 0.0, 1.0),
        0.0,
        1.0,
    )
}

fn isolate(now_ms: u64) -> Gate {
    Gate {
        state: SeptalState::Isolated,
        failures: 0,
        since_ms: now_ms,
        traffic: 0.0,
    }
}

/// The gate after `event` at `now_ms`.
pub fn step(gate: Gate, event: Event, now_ms: u64, cfg: &Config) -> Gate {
    match (gate.state, event) {
        (SeptalState::Connected, Event::Success) => Gate {
            failures: 0,
            ..gate
        },
        (SeptalState::Connected, Event::Failure) => {
            let failures = gate.failures.saturating_add(1);
            if failures >= cfg.failure_threshold {
                isolate(now_ms)
            } else {
                Gate { failures, ..gate }
            }
        }
        (_, Event::Health(h)) if health_score(&h, cfg) >= cfg.health_threshold => {
            match gate.state {
                SeptalState::Isolated => gate,
                _ => isolate(now_ms),
            }
        }
        (SeptalState::Isolated, Event::Tick | Event::Success | Event::Health(_))
            if now_ms.saturating_sub(gate.since_ms) >= cfg.recovery_timeout_ms =>
        {
            Gate {
                state: SeptalState::Recovering,
                failures: 0,
                since_ms: now_ms,
                traffic: clamp(cfg.recovery_step, 0.0, 1.0),
            }
        }
        (SeptalState::Recovering, Event::Success) => {
            let traffic = clamp(gate.traffic + cfg.recovery_step, 0.0, 1.0);
            if traffic >= 1.0 {
                Gate {
                    state: SeptalState::Connected,
                    failures: 0,
                    since_ms: now_ms,
                    traffic: 1.0,
                }
            } else {
                Gate { traffic, ..gate }
            }
        }
        (SeptalState::Recovering, Event::Failure) => isolate(now_ms),
        _ => gate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_five_failures_and_recovers_gradually() {
        let cfg = Config::default();
        let mut g = Gate::default();
        for i in 0..4 {
            g = step(g, Event::Failure, i, &cfg);
            assert_eq!(g.state, SeptalState::Connected);
        }
        g = step(g, Event::Failure, 10, &cfg);
        assert_eq!(g.state, SeptalState::Isolated);
        g = step(g, Event::Tick, 59_999, &cfg);
        assert_eq!(g.state, SeptalState::Isolated, "not before 60 s");
        g = step(g, Event::Tick, 60_010, &cfg);
        assert_eq!((g.state, g.traffic), (SeptalState::Recovering, 0.25));
        g = step(g, Event::Success, 60_020, &cfg);
        g = step(g, Event::Success, 60_030, &cfg);
        assert_eq!((g.state, g.traffic), (SeptalState::Recovering, 0.75));
        g = step(g, Event::Success, 60_040, &cfg);
        assert_eq!((g.state, g.traffic), (SeptalState::Connected, 1.0));
    }

    #[test]
    fn a_failure_while_recovering_isolates_again_and_restarts_the_timer() {
        let cfg = Config::default();
        let g = Gate {
            state: SeptalState::Recovering,
            failures: 0,
            since_ms: 0,
            traffic: 0.5,
        };
        let g = step(g, Event::Failure, 1000, &cfg);
        assert_eq!((g.state, g.since_ms), (SeptalState::Isolated, 1000));
        assert_eq!(
            step(g, Event::Tick, 60_999, &cfg).state,
            SeptalState::Isolated
        );
    }

    #[test]
    fn a_bad_health_score_isolates() {
        let cfg = Config::default();
        let sick = HealthInputs {
            silent_ms: 60_000,
            defaulted: 100_000,
            reputation: 0.9,
        };
        assert!((health_score(&sick, &cfg) - 0.7).abs() < 1e-9);
        assert_eq!(
            step(Gate::default(), Event::Health(sick), 5, &cfg).state,
            SeptalState::Isolated
        );
        let fine = HealthInputs {
            silent_ms: 1000,
            defaulted: 0,
            reputation: 0.9,
        };
        assert_eq!(
            step(Gate::default(), Event::Health(fine), 5, &cfg).state,
            SeptalState::Connected
        );
    }
}

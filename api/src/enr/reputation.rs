//! Reputation: a service record that decays, plus a bounded boost from verified vouches.
//!
//! - **Service record** (`base`): an exponential moving average of outcomes (1 success, 0
//!   failure) with α = 0.1, so one event moves it by at most a tenth and about 22 events make
//!   up 90% of it. It starts at the neutral prior 0.5. An outcome may count only in part
//!   ([`observe_weighted`]): a success that only witnesses of some standing vouch for counts as
//!   much as they [`corroboration`] establishes.
//! - **Decay:** between observations the record relaxes toward the prior with a half-life of
//!   7 days, so both fame and infamy fade without fresh evidence.
//! - **Vouches** add at most `max_vouch_boost` (0.2) of the remaining distance to 1. A vouch
//!   counts `weight × voucher_base × max(0, voucher_base − 0.6) / 0.4`: only vouchers whose own
//!   *service record* is above 0.6 count at all, and the boost is computed from service records,
//!   never from boosted scores. So a ring of fresh identities (all at 0.5) vouching for one
//!   another gains nothing, and vouches cannot compound through chains.

use super::bounds::clamp;
use serde::{Deserialize, Serialize};

/// Reputation settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// EMA weight of a new observation.
    pub alpha: f64,
    /// Where reputation starts and decays toward.
    pub prior: f64,
    /// Half-life of the decay toward the prior, ms.
    pub half_life_ms: u64,
    /// Service record a voucher needs before its vouches count.
    pub voucher_threshold: f64,
    /// The most vouches can add, as a share of the distance to 1.
    pub max_vouch_boost: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            prior: 0.5,
            half_life_ms: 7 * 24 * 3600 * 1000,
            voucher_threshold: 0.6,
            max_vouch_boost: 0.2,
        }
    }
}

/// A node's service record.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The EMA of outcomes, 0 to 1.
    pub base: f64,
    /// When it was last updated, ms.
    pub updated_ms: u64,
}

impl Record {
    /// A fresh record at the prior.
    pub fn new(now_ms: u64, cfg: &Config) -> Self {
        Self {
            base: clamp(cfg.prior, 0.0, 1.0),
            updated_ms: now_ms,
        }
    }
}

/// The record decayed to `now_ms` (time never runs backwards: an earlier `now` changes nothing).
pub fn decay(r: Record, now_ms: u64, cfg: &Config) -> Record {
    let elapsed = now_ms.saturating_sub(r.updated_ms);
    if elapsed == 0 || cfg.half_life_ms == 0 {
        return Record {
            updated_ms: r.updated_ms.max(now_ms),
            ..r
        };
    }
    let keep = 0.5f64.powf(elapsed as f64 / cfg.half_life_ms as f64);
    let prior = clamp(cfg.prior, 0.0, 1.0);
    Record {
        base: clamp(prior + (clamp(r.base, 0.0, 1.0) - prior) * keep, 0.0, 1.0),
        updated_ms: now_ms,
    }
}

/// The record after an outcome (1 success, 0 failure, or anything between) at `now_ms`.
pub fn observe(r: Record, outcome: f64, now_ms: u64, cfg: &Config) -> Record {
    observe_weighted(r, outcome, 1.0, now_ms, cfg)
}

/// The record after an outcome that counts `weight` (0 to 1) of a full observation: the EMA
/// moves `alpha × weight` of the way toward `outcome`. A weight of 0 changes only the decay.
pub fn observe_weighted(r: Record, outcome: f64, weight: f64, now_ms: u64, cfg: &Config) -> Record {
    let r = decay(r, now_ms, cfg);
    let a = clamp(cfg.alpha, 0.0, 1.0) * clamp(weight, 0.0, 1.0);
    Record {
        base: clamp((1.0 - a) * r.base + a * clamp(outcome, 0.0, 1.0), 0.0, 1.0),
        ..r
    }
}

/// How far reports from witnesses with these weights (each 0 to 1, see [`vouch_contribution`]
/// with weight 1) establish a fact, 0 to 1: one perfect witness is enough, and weak witnesses
/// add up with diminishing returns. Witnesses of no standing establish nothing, however many.
pub fn corroboration(witnesses: impl IntoIterator<Item = f64>) -> f64 {
    1.0 - witnesses
        .into_iter()
        .map(|w| 1.0 - clamp(w, 0.0, 1.0))
        .product::<f64>()
}

/// How much one vouch counts: weight × the voucher's standing above the threshold.
pub fn vouch_contribution(weight: f64, voucher_base: f64, cfg: &Config) -> f64 {
    let v = clamp(voucher_base, 0.0, 1.0);
    let t = clamp(cfg.voucher_threshold, 0.0, 1.0);
    if v <= t || t >= 1.0 {
        return 0.0;
    }
    clamp(weight, 0.0, 1.0) * v * (v - t) / (1.0 - t)
}

/// The contributions that count for one subject from `(voucher, contribution)` pairs: one per
/// voucher, its strongest. One voucher's word about one subject counts once, however many
/// vouches (or copies of one under other names) it signed.
pub fn one_per_voucher<'a>(vouches: impl IntoIterator<Item = (&'a str, f64)>) -> Vec<f64> {
    let mut best: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (voucher, c) in vouches {
        let e = best.entry(voucher).or_insert(c);
        *e = e.max(c);
    }
    best.into_values().collect()
}

/// The vouch boost from contributions, with diminishing returns, in `[0, max_vouch_boost]`.
pub fn vouch_boost(contributions: &[f64], cfg: &Config) -> f64 {
    let miss: f64 = contributions
        .iter()
        .map(|c| 1.0 - clamp(*c, 0.0, 1.0))
        .product();
    clamp(cfg.max_vouch_boost, 0.0, 1.0) * (1.0 - miss)
}

/// The reputation shown and used: the service record plus the vouch boost.
pub fn effective(base: f64, boost: f64) -> f64 {
    let b = clamp(base, 0.0, 1.0);
    clamp(b + (1.0 - b) * clamp(boost, 0.0, 1.0), 0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voucher_counts_once_per_subject() {
        let got = one_per_voucher([
            ("did:a", 0.3),
            ("did:a", 0.3),
            ("did:b", 0.1),
            ("did:a", 0.2),
        ]);
        assert_eq!(got, vec![0.3, 0.1]);
        let cfg = Config::default();
        assert_eq!(
            vouch_boost(&got, &cfg),
            vouch_boost(&[0.3, 0.1], &cfg),
            "a second vouch and a copy of the first add nothing"
        );
    }

    #[test]
    fn ema_moves_a_tenth_and_decays_toward_the_prior() {
        let cfg = Config::default();
        let r = observe(Record::new(0, &cfg), 1.0, 0, &cfg);
        assert!((r.base - 0.55).abs() < 1e-12);
        let week = decay(
            Record {
                base: 0.9,
                updated_ms: 0,
            },
            cfg.half_life_ms,
            &cfg,
        );
        assert!(
            (week.base - 0.7).abs() < 1e-9,
            "half the distance to 0.5 after one half-life"
        );
    }

    #[test]
    fn witnesses_without_standing_establish_nothing() {
        let cfg = Config::default();
        let ring = (0..50).map(|_| vouch_contribution(1.0, 0.5, &cfg));
        assert_eq!(corroboration(ring), 0.0);
        assert_eq!(corroboration([1.0]), 1.0);
        let two_fair = corroboration([0.4, 0.4]);
        assert!((two_fair - 0.64).abs() < 1e-12, "{two_fair}");
        let r = Record::new(0, &cfg);
        assert_eq!(observe_weighted(r, 1.0, 0.0, 0, &cfg).base, 0.5);
        assert!((observe_weighted(r, 1.0, 0.5, 0, &cfg).base - 0.525).abs() < 1e-12);
    }

    #[test]
    fn fresh_vouchers_count_for_nothing_and_trusted_ones_are_capped() {
        let cfg = Config::default();
        assert_eq!(vouch_contribution(1.0, 0.5, &cfg), 0.0);
        assert_eq!(vouch_contribution(1.0, 0.6, &cfg), 0.0);
        let strong = vouch_contribution(1.0, 1.0, &cfg);
        assert!((strong - 1.0).abs() < 1e-12);
        let boost = vouch_boost(&[strong; 100], &cfg);
        assert!(boost <= cfg.max_vouch_boost + 1e-12);
        assert!((effective(0.5, boost) - 0.6).abs() < 1e-9);
    }
}

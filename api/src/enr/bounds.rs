//! Keeping every score and multiplier inside its range. A leaf module, so each model can use it
//! without importing the `enr` module that declares them all.

/// Clamps a float into `[lo, hi]`, mapping NaN to `lo` (a NaN input must never poison a score).
pub fn clamp(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() { lo } else { x.clamp(lo, hi) }
}

//! Pricing of instance-hours, in integer milli-credits: fixed rates, a dynamic multiplier, or a
//! sealed-bid second-price auction.
//!
//! - **Fixed:** cpu cores × rate + GiB of memory × rate + GPUs × rate, per hour, pro rata for
//!   the duration, rounded up; computed in i128 and refused if it would not fit in i64.
//! - **Dynamic:** the fixed price × a multiplier in [1, 5]:
//!   `clamp(entropy_multiplier × (1 + utilization²), 1, 5)`, so an idle, orderly node charges the
//!   base rate, a full one up to twice what entropy alone says, and nothing exceeds 5×. The
//!   multiplier is applied in thousandths, so the price stays an exact integer.
//! - **Auction:** nodes ask, sealed, for an instance-hour; a reverse second-price (Vickrey)
//!   auction ([`procure`]): the lowest ask at or above its node's reserve wins and is paid the
//!   second-lowest valid ask, never more than the Workload's ceiling.

use super::bounds::clamp;
use crate::resources::node::{NodePricing, PricingModel};
use serde::{Deserialize, Serialize};

const GIB: i128 = 1 << 30;
const HOUR_MS: i128 = 3_600_000;

/// What is being priced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// CPU, millicores.
    pub cpu_millis: u64,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// GPUs.
    pub gpus: u32,
    /// How long, milliseconds.
    pub duration_ms: u64,
}

/// Why a price could not be computed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PricingError {
    /// The price would not fit in i64 milli-credits.
    #[error("price overflows: usage or rates too large")]
    Overflow,
    /// A negative rate.
    #[error("rates must not be negative")]
    NegativeRate,
    /// No bid met the reserve.
    #[error("no bid at or above the reserve price {0}")]
    NoValidBid(i64),
}

/// The fixed price of `usage` at the node's rates.
pub fn fixed(usage: &Usage, rates: &NodePricing) -> Result<i64, PricingError> {
    if rates.cpu_core_hour < 0 || rates.memory_gib_hour < 0 || rates.gpu_hour < 0 {
        return Err(PricingError::NegativeRate);
    }
    // Per-hour cost scaled by 1000·GiB so that every term is an integer.
    let scale = 1000 * GIB;
    let per_hour_scaled = i128::from(usage.cpu_millis) * i128::from(rates.cpu_core_hour) * GIB
        + i128::from(usage.memory_bytes) * i128::from(rates.memory_gib_hour) * 1000
        + i128::from(usage.gpus) * i128::from(rates.gpu_hour) * scale;
    let total = per_hour_scaled
        .checked_mul(i128::from(usage.duration_ms))
        .ok_or(PricingError::Overflow)?;
    let denom = scale * HOUR_MS;
    let price = total / denom + i128::from(total % denom != 0);
    i64::try_from(price).map_err(|_| PricingError::Overflow)
}

/// The dynamic multiplier in thousandths, from utilization (0–1) and the entropy multiplier.
pub fn dynamic_multiplier_milli(utilization: f64, entropy_multiplier: f64) -> u32 {
    let u = clamp(utilization, 0.0, 1.0);
    let m = clamp(
        clamp(entropy_multiplier, 1.0, 5.0) * (1.0 + u * u),
        1.0,
        5.0,
    );
    (m * 1000.0).round() as u32
}

/// Applies a multiplier in thousandths to a price, rounding up.
pub fn apply_multiplier(price: i64, multiplier_milli: u32) -> Result<i64, PricingError> {
    let p = i128::from(price) * i128::from(multiplier_milli);
    let out = p / 1000 + i128::from(p % 1000 > 0);
    i64::try_from(out).map_err(|_| PricingError::Overflow)
}

/// A node's sealed ask for one instance-hour, once opened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ask {
    /// The node asking.
    pub node: String,
    /// What it asks for the instance-hour, milli-credits.
    pub amount: i64,
    /// Its least acceptable price (its rates' price for the request-hour).
    pub reserve: i64,
    /// Its placement score (higher is better; breaks ties of amount).
    pub score: i64,
}

/// The result of an auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Award {
    /// The winning node.
    pub winner: String,
    /// The clearing price per instance-hour, milli-credits.
    pub price: i64,
    /// How many asks were valid.
    pub valid: usize,
}

/// Clears a sealed-bid reverse second-price auction for one instance: among asks at or above
/// their node's reserve and within `max` (the Workload's maxPricePerHour, if any), the lowest
/// ask wins (ties: the higher score, then the node name) and is paid the second-lowest valid
/// ask, capped at `max`; a lone valid ask is paid what it asked. Asking one's true cost is
/// then the best strategy: the winner's own ask never sets its price.
pub fn procure(asks: &[Ask], max: Option<i64>) -> Result<Award, PricingError> {
    let mut valid: Vec<&Ask> = asks
        .iter()
        .filter(|a| a.amount >= a.reserve.max(0) && max.is_none_or(|m| a.amount <= m))
        .collect();
    valid.sort_by(|a, b| {
        a.amount
            .cmp(&b.amount)
            .then(b.score.cmp(&a.score))
            .then(a.node.cmp(&b.node))
    });
    let winner = valid
        .first()
        .ok_or(PricingError::NoValidBid(max.unwrap_or(0)))?;
    let price = valid.get(1).map_or(winner.amount, |second| {
        max.map_or(second.amount, |m| second.amount.min(m))
    });
    Ok(Award {
        winner: winner.node.clone(),
        price,
        valid: valid.len(),
    })
}

/// What a quote needs to know about the market.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Market {
    /// The node's utilization, 0 to 1.
    pub utilization: f64,
    /// The node's entropy price multiplier, 1 to 5.
    pub entropy_multiplier: f64,
}

/// The price a node asks for `usage` under its pricing model. For an auction this is the
/// reserve price; the clearing price comes from [`procure`].
pub fn quote(usage: &Usage, pricing: &NodePricing, market: &Market) -> Result<i64, PricingError> {
    let base = fixed(usage, pricing)?;
    match pricing.model {
        PricingModel::Fixed | PricingModel::Auction => Ok(base),
        PricingModel::Dynamic => apply_multiplier(
            base,
            dynamic_multiplier_milli(market.utilization, market.entropy_multiplier),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> NodePricing {
        NodePricing {
            model: PricingModel::Fixed,
            cpu_core_hour: 1000,
            memory_gib_hour: 250,
            gpu_hour: 10_000,
        }
    }

    #[test]
    fn fixed_price_is_pro_rata_and_rounds_up() {
        let hour = Usage {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            gpus: 0,
            duration_ms: 3_600_000,
        };
        assert_eq!(fixed(&hour, &rates()), Ok(500 + 250));
        let second = Usage {
            duration_ms: 1000,
            ..hour
        };
        assert_eq!(fixed(&second, &rates()), Ok(1), "750/3600 rounds up to 1");
        let huge = Usage {
            cpu_millis: u64::MAX,
            memory_bytes: u64::MAX,
            gpus: u32::MAX,
            duration_ms: u64::MAX,
        };
        assert_eq!(fixed(&huge, &rates()), Err(PricingError::Overflow));
    }

    #[test]
    fn dynamic_multiplier_stays_within_one_and_five() {
        assert_eq!(dynamic_multiplier_milli(0.0, 1.0), 1000);
        assert_eq!(dynamic_multiplier_milli(1.0, 1.0), 2000);
        assert_eq!(dynamic_multiplier_milli(1.0, 5.0), 5000);
        assert_eq!(dynamic_multiplier_milli(f64::NAN, f64::NAN), 1000);
        assert_eq!(apply_multiplier(1001, 1500), Ok(1502));
    }

    #[test]
    fn the_lowest_valid_ask_wins_and_is_paid_the_second_lowest() {
        let ask = |n: &str, amount, reserve, score| Ask {
            node: n.into(),
            amount,
            reserve,
            score,
        };
        let asks = [
            ask("dear", 1500, 1500, 0),
            ask("cheap", 1000, 1000, 0),
            ask("middle", 1200, 1200, 0),
        ];
        assert_eq!(
            procure(&asks, None),
            Ok(Award {
                winner: "cheap".into(),
                price: 1200,
                valid: 3
            })
        );
        // The Workload's ceiling caps the price and excludes asks above it.
        assert_eq!(procure(&asks, Some(1100)).unwrap().price, 1000);
        assert_eq!(procure(&asks, Some(1150)).unwrap().price, 1000);
        assert_eq!(
            procure(&asks, Some(999)),
            Err(PricingError::NoValidBid(999))
        );
        // An ask below its own reserve is not valid.
        let under = [ask("liar", 10, 1000, 0), ask("fair", 1100, 1000, 0)];
        assert_eq!(
            procure(&under, None),
            Ok(Award {
                winner: "fair".into(),
                price: 1100,
                valid: 1
            })
        );
        // Ties go to the better score, then the name.
        let tie = [
            ask("b", 900, 0, 1),
            ask("a", 900, 0, 1),
            ask("c", 900, 0, 5),
        ];
        assert_eq!(procure(&tie, None).unwrap().winner, "c");
    }
}

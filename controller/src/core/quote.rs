//! What a node charges: the one place where a node's rates meet its market, shared by the
//! scheduler (an hour of a request, to filter and score) and billing (metered usage), so a
//! workload is billed at the price it was placed for. Pure.

use crate::core::resources::Resources;
use univrs_api::enr::pricing::{self, Market, PricingError, Usage};
use univrs_api::resources::node::NodePricing;

/// An hour, in milliseconds.
const HOUR_MS: u64 = 3_600_000;

/// The market a node prices in: its CPU utilization (what is allocated over its capacity; a
/// node without CPU capacity counts as full) and its entropy's price multiplier
/// (`status.entropy.priceMultiplier`, 1 for a node that has none yet).
pub fn market(capacity: Resources, allocated: Resources, entropy_multiplier: f64) -> Market {
    let utilization = if capacity.cpu_millis == 0 {
        1.0
    } else {
        allocated.cpu_millis as f64 / capacity.cpu_millis as f64
    };
    Market {
        utilization,
        entropy_multiplier,
    }
}

/// What `rates` ask for `usage` in `market` (see `univrs_api::enr::pricing::quote`).
pub fn price(usage: &Usage, rates: &NodePricing, market: &Market) -> Result<i64, PricingError> {
    pricing::quote(usage, rates, market)
}

/// What an hour of `request` costs at `rates` on a node with `capacity` of which `allocated`
/// is taken by others, at its entropy's multiplier: priced at the utilization with the request
/// placed, which is the market billing sees while the instance runs there.
pub fn hourly(
    rates: &NodePricing,
    capacity: Resources,
    allocated: Resources,
    request: Resources,
    entropy_multiplier: f64,
) -> Result<i64, PricingError> {
    let usage = Usage {
        cpu_millis: request.cpu_millis,
        memory_bytes: request.memory_bytes,
        gpus: request.gpus,
        duration_ms: HOUR_MS,
    };
    price(
        &usage,
        rates,
        &market(capacity, allocated.plus(request), entropy_multiplier),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use univrs_api::resources::node::PricingModel;

    fn res(cpu_millis: u64) -> Resources {
        Resources {
            cpu_millis,
            memory_bytes: 0,
            gpus: 0,
        }
    }

    #[test]
    fn dynamic_rates_rise_with_utilization_and_fixed_ones_do_not() {
        let dynamic = NodePricing {
            model: PricingModel::Dynamic,
            cpu_core_hour: 1000,
            memory_gib_hour: 0,
            gpu_hour: 0,
        };
        // A quarter used once placed: 1 + 0.25² = 1.0625 (thousandths rounded: 1.063).
        let idle = hourly(&dynamic, res(4000), res(0), res(1000), 1.0).unwrap();
        // Three quarters: 1 + 0.75² = 1.5625 → 1.563.
        let busy = hourly(&dynamic, res(4000), res(2000), res(1000), 1.0).unwrap();
        assert_eq!((idle, busy), (1063, 1563));
        // Entropy multiplies: 1.2 × 1.5625 = 1.875.
        let disordered = hourly(&dynamic, res(4000), res(2000), res(1000), 1.2).unwrap();
        assert_eq!(disordered, 1875);
        let fixed = NodePricing {
            model: PricingModel::Fixed,
            ..dynamic
        };
        assert_eq!(
            hourly(&fixed, res(4000), res(2000), res(1000), 1.2).unwrap(),
            1000
        );
        assert_eq!(market(res(0), res(0), 1.0).utilization, 1.0);
    }
}

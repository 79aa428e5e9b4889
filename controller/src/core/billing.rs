//! Turning metered usage into charges (pure: no I/O).
//!
//! Agents report each instance's *cumulative* usage for its current placement (node and
//! `placedAt`); the controller keeps, per instance, the mark up to which that usage is paid. A
//! charge covers the usage between the mark and the report, priced at the node's rates, and is
//! paid as one transfer whose id names the placement, both marks and the amount:
//! `usage/<workload uid>/<instance>/<placedAt>/<from>/<to>/<amount>`. The id makes payment
//! exactly once even across a crash between paying and recording the new mark: the next
//! reconcile finds an id with the same `…/<from>/` prefix on the credit line and moves the mark
//! to its `<to>` (and counts its amount) instead of paying again.

use crate::core::quote;
use univrs_api::enr::pricing::{self, Market, PricingError};
use univrs_api::resources::node::NodePricing;
use univrs_api::resources::workload::{Instance, InstanceUsage};

/// One payment to make for an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The node that ran the instance (the payee).
    pub node: String,
    /// Milli-credits (0: nothing to pay, only the mark moves).
    pub amount: i64,
    /// The transfer id.
    pub id: String,
    /// What an id of an earlier attempt at this same charge starts with.
    pub id_prefix: String,
    /// The billed mark it starts from.
    pub from: InstanceUsage,
    /// The new billed mark once paid.
    pub to: InstanceUsage,
}

fn mark(u: &InstanceUsage) -> String {
    format!(
        "{}.{}.{}",
        u.cpu_millicore_seconds, u.memory_mib_seconds, u.gpu_seconds
    )
}

/// The billed mark and amount of an earlier attempt, parsed from its transfer id.
pub fn mark_from_id(id: &str, prefix: &str, from: &InstanceUsage) -> Option<(InstanceUsage, i64)> {
    let (to, amount) = id.strip_prefix(prefix)?.split_once('/')?;
    let mut parts = to.split('.').map(|p| p.parse::<i64>().ok());
    let (Some(Some(cpu)), Some(Some(mem)), Some(Some(gpu)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let mark = InstanceUsage {
        cpu_millicore_seconds: cpu,
        memory_mib_seconds: mem,
        gpu_seconds: gpu,
        ..from.clone()
    };
    Some((mark, amount.parse().ok()?))
}

/// What `inst` owes beyond its billed mark, at the node's `rates`, or None when its usage is not
/// for its current placement or nothing new was used.
pub fn charge(
    workload_uid: &str,
    inst: &Instance,
    rates: &NodePricing,
    market: &Market,
) -> Result<Option<Charge>, PricingError> {
    let (Some(usage), Some(node), Some(placed_at)) = (&inst.usage, &inst.node, &inst.placed_at)
    else {
        return Ok(None);
    };
    // A report for an earlier placement (the instance moved since) is not this placement's.
    if !usage.is_for(Some(node), Some(placed_at)) {
        return Ok(None);
    }
    let zero = InstanceUsage::zero(node.clone(), placed_at.clone());
    let from = inst
        .billed
        .as_ref()
        .filter(|b| b.is_for(Some(node), Some(placed_at)))
        .unwrap_or(&zero)
        .clone();
    // Counters only grow; a smaller report (an agent that lost its counters) bills nothing
    // until it passes the mark again.
    let to = InstanceUsage {
        cpu_millicore_seconds: usage.cpu_millicore_seconds.max(from.cpu_millicore_seconds),
        memory_mib_seconds: usage.memory_mib_seconds.max(from.memory_mib_seconds),
        gpu_seconds: usage.gpu_seconds.max(from.gpu_seconds),
        ..from.clone()
    };
    if to == from {
        return Ok(None);
    }
    let amount = price(&from, &to, rates, market)?;
    let id_prefix = format!(
        "usage/{workload_uid}/{}/{}/{}/",
        inst.name,
        placed_at.0.as_second(),
        mark(&from)
    );
    Ok(Some(Charge {
        node: node.clone(),
        amount,
        id: format!("{id_prefix}{}/{amount}", mark(&to)),
        id_prefix,
        from,
        to,
    }))
}

/// The price of the usage between two marks: CPU and memory as one second of the averaged
/// load, GPUs per second, each through the node's pricing model in `market` (`quote`, the
/// function the scheduler quotes with).
pub fn price(
    from: &InstanceUsage,
    to: &InstanceUsage,
    rates: &NodePricing,
    market: &Market,
) -> Result<i64, PricingError> {
    let cpu = to
        .cpu_millicore_seconds
        .saturating_sub(from.cpu_millicore_seconds)
        .max(0) as u64;
    let mem = to
        .memory_mib_seconds
        .saturating_sub(from.memory_mib_seconds)
        .max(0) as u64;
    let gpu = to.gpu_seconds.saturating_sub(from.gpu_seconds).max(0) as u64;
    let compute = quote::price(
        &pricing::Usage {
            cpu_millis: cpu,
            memory_bytes: mem.checked_mul(1 << 20).ok_or(PricingError::Overflow)?,
            gpus: 0,
            duration_ms: 1000,
        },
        rates,
        market,
    )?;
    let gpus = quote::price(
        &pricing::Usage {
            cpu_millis: 0,
            memory_bytes: 0,
            gpus: 1,
            duration_ms: gpu.checked_mul(1000).ok_or(PricingError::Overflow)?,
        },
        rates,
        market,
    )?;
    compute.checked_add(gpus).ok_or(PricingError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use univrs_api::resources::node::PricingModel;

    fn rates() -> NodePricing {
        NodePricing {
            model: PricingModel::Fixed,
            cpu_core_hour: 3600,
            memory_gib_hour: 0,
            gpu_hour: 0,
        }
    }

    fn placed(cpu: i64, billed: Option<i64>) -> Instance {
        let at = Time(Timestamp::from_second(1_700_000_000).unwrap());
        let u = |c| InstanceUsage {
            node: "alpha".into(),
            placed_at: at.clone(),
            cpu_millicore_seconds: c,
            memory_mib_seconds: 0,
            gpu_seconds: 0,
        };
        Instance {
            name: "web-0".into(),
            node: Some("alpha".into()),
            placed_at: Some(at.clone()),
            usage: Some(u(cpu)),
            billed: billed.map(u),
            ..Default::default()
        }
    }

    #[test]
    fn charges_the_usage_beyond_the_mark_once() {
        // 3600 per core-hour = 1 per core-second: 10 core-seconds cost 10.
        let c = charge("uid", &placed(10_000, None), &rates(), &Market::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.amount, 10);
        assert_eq!(c.id, "usage/uid/web-0/1700000000/0.0.0/10000.0.0/10");
        let paid = Instance {
            billed: Some(c.to.clone()),
            ..placed(10_000, None)
        };
        assert_eq!(
            charge("uid", &paid, &rates(), &Market::default()).unwrap(),
            None
        );
        let more = charge(
            "uid",
            &placed(15_000, Some(10_000)),
            &rates(),
            &Market::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(more.amount, 5);
        assert!(more.id.starts_with(&more.id_prefix));
        assert_eq!(
            mark_from_id(&more.id, &more.id_prefix, &c.to),
            Some((more.to, 5))
        );
    }

    #[test]
    fn usage_of_another_placement_or_going_backwards_bills_nothing() {
        let mut moved = placed(10_000, None);
        moved.node = Some("bravo".into());
        assert_eq!(
            charge("uid", &moved, &rates(), &Market::default()).unwrap(),
            None
        );
        assert_eq!(
            charge(
                "uid",
                &placed(5_000, Some(10_000)),
                &rates(),
                &Market::default()
            )
            .unwrap(),
            None
        );
    }
}

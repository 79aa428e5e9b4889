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
use k8s_openapi::jiff::Timestamp;
use univrs_api::enr::pricing::{self, Market, PricingError};
use univrs_api::resources::node::{NodeCapacity, NodePricing};
use univrs_api::resources::workload::{Instance, InstanceUsage, WorkloadSpec};

/// The most an instance can use per second: its containers' limits summed, and where a
/// container sets none, the whole node (its capacity). A report beyond this times the time
/// since placement is not physically possible, whatever the agent says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ceiling {
    /// Millicores.
    pub cpu_millis: i64,
    /// MiB.
    pub memory_mib: i64,
    /// GPUs.
    pub gpus: i64,
}

/// Seconds of slack on the elapsed time, for the agent's and the controller's clocks.
const CLOCK_SLACK_SECONDS: i64 = 5;

impl Ceiling {
    /// The ceiling of one instance of `spec` on a node of `capacity`.
    pub fn of(spec: &WorkloadSpec, capacity: &NodeCapacity) -> Self {
        let node_cpu = capacity.cpu.to_milli().unwrap_or(0) as i64;
        let node_mem = (capacity.memory.to_units().unwrap_or(0) >> 20) as i64;
        let node_gpu = i64::from(capacity.gpu);
        let mut c = Ceiling {
            cpu_millis: 0,
            memory_mib: 0,
            gpus: 0,
        };
        for container in &spec.containers {
            let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
            let cpu = limits
                .and_then(|l| l.cpu.as_ref())
                .map(|q| q.to_milli().unwrap_or(0) as i64);
            let mem = limits
                .and_then(|l| l.memory.as_ref())
                .map(|q| (q.to_units().unwrap_or(0) >> 20) as i64);
            let gpu = limits.and_then(|l| l.gpu).map(i64::from);
            c.cpu_millis = c.cpu_millis.saturating_add(cpu.unwrap_or(node_cpu));
            c.memory_mib = c.memory_mib.saturating_add(mem.unwrap_or(node_mem));
            c.gpus = c.gpus.saturating_add(gpu.unwrap_or(node_gpu));
        }
        // Together never more than the node.
        Ceiling {
            cpu_millis: c.cpu_millis.min(node_cpu.max(1)),
            memory_mib: c.memory_mib.min(node_mem.max(1)),
            gpus: c.gpus.min(node_gpu),
        }
    }

    /// The most a placement made at `placed_at` can have used by `now`.
    fn bound(&self, placed_at: &Timestamp, now: &Timestamp) -> (i64, i64, i64) {
        let secs =
            now.as_second().saturating_sub(placed_at.as_second()).max(0) + CLOCK_SLACK_SECONDS;
        (
            self.cpu_millis.saturating_mul(secs),
            self.memory_mib.saturating_mul(secs),
            self.gpus.saturating_mul(secs),
        )
    }
}

/// An auction's clearing price for an instance-hour, and the node's rates' price for the same
/// request-hour: an awarded instance's usage is billed at the rates scaled by their ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clearing {
    /// The clearing price (`awardedPricePerHour`).
    pub price: i64,
    /// The rates' price for an hour of the request (`univrs_api::bid::reserve`).
    pub reserve: i64,
}

impl Clearing {
    /// `amount`, priced at the rates, at the clearing price instead (rounded up). Rates that
    /// price the request at nothing leave it as it is.
    pub fn scale(&self, amount: i64) -> Result<i64, PricingError> {
        if self.reserve <= 0 {
            return Ok(amount);
        }
        let p = i128::from(amount) * i128::from(self.price.max(0));
        let r = i128::from(self.reserve);
        i64::try_from(p / r + i128::from(p % r != 0)).map_err(|_| PricingError::Overflow)
    }
}

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
    /// When the report was beyond what is possible: what was reported and what was allowed
    /// (the mark moves only to the allowed amount; the excess is never billed).
    pub clamped: Option<String>,
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

/// What `inst` owes beyond its billed mark, at the node's `rates` (scaled to the `clearing`
/// price when an auction placed it), or None when its usage is not for its current placement
/// or nothing new was used. The report counts at most up to what the instance's `ceiling`
/// allows since its placement, at `now`.
pub fn charge(
    workload_uid: &str,
    inst: &Instance,
    tariff: (&NodePricing, &Market, Option<Clearing>),
    ceiling: &Ceiling,
    now: &Timestamp,
) -> Result<Option<Charge>, PricingError> {
    let (rates, market, clearing) = tariff;
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
    let (cpu_max, mem_max, gpu_max) = ceiling.bound(&placed_at.0, now);
    let allowed = |reported: i64, max: i64, mark: i64| reported.min(max).max(mark);
    let to = InstanceUsage {
        cpu_millicore_seconds: allowed(
            usage.cpu_millicore_seconds,
            cpu_max,
            from.cpu_millicore_seconds,
        ),
        memory_mib_seconds: allowed(usage.memory_mib_seconds, mem_max, from.memory_mib_seconds),
        gpu_seconds: allowed(usage.gpu_seconds, gpu_max, from.gpu_seconds),
        ..from.clone()
    };
    let clamped = (usage.cpu_millicore_seconds > cpu_max
        || usage.memory_mib_seconds > mem_max
        || usage.gpu_seconds > gpu_max)
        .then(|| {
            format!(
                "{} on {node} reported {} millicore-s, {} MiB-s, {} GPU-s; at most {cpu_max}, {mem_max}, {gpu_max} are possible since its placement",
                inst.name, usage.cpu_millicore_seconds, usage.memory_mib_seconds, usage.gpu_seconds
            )
        });
    if to == from {
        return Ok(None);
    }
    let mut amount = price(&from, &to, rates, market)?;
    if let Some(c) = clearing {
        amount = c.scale(amount)?;
    }
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
        clamped,
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

    /// A ceiling no test below reaches, an hour after the placement.
    fn charge_roomy(
        uid: &str,
        inst: &Instance,
        rates: &NodePricing,
        market: &Market,
    ) -> Result<Option<Charge>, PricingError> {
        let roomy = Ceiling {
            cpu_millis: 64_000,
            memory_mib: 1 << 20,
            gpus: 8,
        };
        let later = Timestamp::from_second(1_700_003_600).unwrap();
        charge(uid, inst, (rates, market, None), &roomy, &later)
    }

    #[test]
    fn a_report_beyond_what_is_possible_is_clamped_and_the_excess_never_billed() {
        // One core for 60 s: at most 65 core-seconds (5 s of clock slack), whatever is reported.
        let one_core = Ceiling {
            cpu_millis: 1000,
            memory_mib: 64,
            gpus: 0,
        };
        let minute = Timestamp::from_second(1_700_000_060).unwrap();
        let c = charge(
            "uid",
            &placed(1_000_000_000_000, None),
            (&rates(), &Market::default(), None),
            &one_core,
            &minute,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.to.cpu_millicore_seconds, 65_000);
        assert_eq!(c.amount, 65);
        assert!(
            c.clamped
                .as_deref()
                .is_some_and(|m| m.contains("at most 65000")),
            "{c:?}"
        );
        // The next round bills only what time has added since, still at most the limit.
        let billed = Instance {
            billed: Some(c.to.clone()),
            ..placed(1_000_000_000_000, None)
        };
        let later = Timestamp::from_second(1_700_000_070).unwrap();
        let next = charge(
            "uid",
            &billed,
            (&rates(), &Market::default(), None),
            &one_core,
            &later,
        )
        .unwrap()
        .unwrap();
        assert_eq!(next.amount, 10);
        // An honest report is not clamped.
        let honest = charge(
            "uid",
            &placed(30_000, None),
            (&rates(), &Market::default(), None),
            &one_core,
            &minute,
        )
        .unwrap()
        .unwrap();
        assert_eq!((honest.amount, honest.clamped), (30, None));
    }

    #[test]
    fn an_awarded_instance_is_billed_at_the_clearing_price() {
        // Rates price the request-hour at 1000, the auction cleared at 1200: a charge of 65 at
        // the rates is 78 at the clearing price, rounded up (65 × 1.2 = 78; 61 × 1.2 = 73.2).
        let c = Clearing {
            price: 1200,
            reserve: 1000,
        };
        assert_eq!((c.scale(65).unwrap(), c.scale(61).unwrap()), (78, 74));
        let free = Clearing {
            price: 1200,
            reserve: 0,
        };
        assert_eq!(free.scale(0).unwrap(), 0);
        let one_core = Ceiling {
            cpu_millis: 1000,
            memory_mib: 64,
            gpus: 0,
        };
        let minute = Timestamp::from_second(1_700_000_060).unwrap();
        let inst = placed(60_000, None);
        let at_rates = charge(
            "uid",
            &inst,
            (&rates(), &Market::default(), None),
            &one_core,
            &minute,
        );
        let cleared = charge(
            "uid",
            &inst,
            (&rates(), &Market::default(), Some(c)),
            &one_core,
            &minute,
        );
        let (at_rates, cleared) = (at_rates.unwrap().unwrap(), cleared.unwrap().unwrap());
        assert_eq!((at_rates.amount, cleared.amount), (60, 72));
        assert!(cleared.id.ends_with("/72"), "{}", cleared.id);
    }

    #[test]
    fn the_ceiling_is_the_limits_else_the_node() {
        let spec: WorkloadSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "image": "x", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
                {"name": "b", "image": "x"}
            ]
        }))
        .unwrap();
        let node = NodeCapacity {
            cpu: univrs_api::quantity::Quantity("2".into()),
            memory: univrs_api::quantity::Quantity("1Gi".into()),
            gpu: 0,
        };
        // b has no limits: it may use the whole node, so together the node bounds them.
        assert_eq!(
            Ceiling::of(&spec, &node),
            Ceiling {
                cpu_millis: 2000,
                memory_mib: 1024,
                gpus: 0
            }
        );
    }

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
        let c = charge_roomy("uid", &placed(10_000, None), &rates(), &Market::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.amount, 10);
        assert_eq!(c.id, "usage/uid/web-0/1700000000/0.0.0/10000.0.0/10");
        let paid = Instance {
            billed: Some(c.to.clone()),
            ..placed(10_000, None)
        };
        assert_eq!(
            charge_roomy("uid", &paid, &rates(), &Market::default()).unwrap(),
            None
        );
        let more = charge_roomy(
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
            charge_roomy("uid", &moved, &rates(), &Market::default()).unwrap(),
            None
        );
        assert_eq!(
            charge_roomy(
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

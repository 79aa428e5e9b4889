//! A consistent view of the cluster built from the reflector caches: node readiness from
//! Leases, what each node has allocated, and the scheduler's node views. Pure given its inputs.

use crate::scheduler::{NodeView, Request, Resources};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use univrs_api::account::AccountKind;
use univrs_api::enr::pricing;
use univrs_api::ledger::{Ledger, Line};
use univrs_api::resources::node::{NodePricing, SeptalState};
use univrs_api::resources::workload::WorkloadSpec;
use univrs_api::{Account, CreditLine, Node, Workload};

/// Whether a node's Lease is fresh, and if not since when it lapsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Renewed within its duration; fresh until the given time.
    Fresh {
        /// When it lapses unless renewed.
        until: Timestamp,
    },
    /// Lapsed at the given time.
    Lapsed {
        /// When it lapsed.
        since: Timestamp,
    },
    /// No Lease at all.
    Missing,
}

/// The liveness of a node from its Lease at `now`.
pub fn liveness(lease: Option<&Lease>, now: Timestamp) -> Liveness {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Liveness::Missing;
    };
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Liveness::Missing;
    };
    let duration =
        SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(40).max(1)));
    let until = renewed.0.checked_add(duration).unwrap_or(renewed.0);
    if until > now {
        Liveness::Fresh { until }
    } else {
        Liveness::Lapsed { since: until }
    }
}

/// Resources one instance of a workload reserves: per container, its requests (or its limits
/// where no request is given), summed.
pub fn instance_request(spec: &WorkloadSpec) -> Resources {
    let mut total = Resources::default();
    for c in &spec.containers {
        let Some(r) = c.resources.as_ref() else {
            continue;
        };
        let pick = |req: Option<&univrs_api::quantity::Quantity>,
                    lim: Option<&univrs_api::quantity::Quantity>,
                    milli: bool| {
            req.or(lim).map_or(0, |q| {
                if milli {
                    q.to_milli().unwrap_or(0)
                } else {
                    q.to_units().unwrap_or(0)
                }
            })
        };
        let req = r.requests.as_ref();
        let lim = r.limits.as_ref();
        total = total.plus(Resources {
            cpu_millis: pick(
                req.and_then(|x| x.cpu.as_ref()),
                lim.and_then(|x| x.cpu.as_ref()),
                true,
            ),
            memory_bytes: pick(
                req.and_then(|x| x.memory.as_ref()),
                lim.and_then(|x| x.memory.as_ref()),
                false,
            ),
            gpus: req
                .and_then(|x| x.gpu)
                .or(lim.and_then(|x| x.gpu))
                .unwrap_or(0)
                .max(0) as u32,
        });
    }
    total
}

/// What is allocated on each node by every workload's placed instances, leaving out `except`
/// (the workload being reconciled, whose placements are being decided).
pub fn allocations(
    workloads: &[Arc<Workload>],
    except: Option<(&str, &str)>,
) -> BTreeMap<String, (Resources, u32)> {
    let mut out: BTreeMap<String, (Resources, u32)> = BTreeMap::new();
    for w in workloads {
        if except.is_some_and(|(ns, n)| w.namespace().as_deref() == Some(ns) && w.name_any() == n) {
            continue;
        }
        let per = instance_request(&w.spec);
        for i in w
            .status
            .as_ref()
            .map(|s| s.instances.as_slice())
            .unwrap_or_default()
        {
            if let Some(node) = &i.node {
                let e = out.entry(node.clone()).or_default();
                e.0 = e.0.plus(per);
                e.1 += 1;
            }
        }
    }
    out
}

/// A ledger of the credit lines, keeping only those that involve `account` when one is given.
/// Lines whose accounts do not parse are left out (the schema refuses them anyway).
pub fn ledger_of(lines: &[Arc<CreditLine>], account: Option<&Account>) -> Ledger {
    let mut ledger = Ledger::new();
    for cl in lines {
        if account.is_some_and(|a| cl.spec.creditor != *a && cl.spec.debtor != *a) {
            continue;
        }
        let line = Line {
            creditor: cl.spec.creditor.clone(),
            debtor: cl.spec.debtor.clone(),
            limit: cl.spec.limit,
            balance: cl.status.as_ref().map_or(0, |s| s.balance),
        };
        let _ = ledger.upsert_line(cl.name_any(), line);
    }
    ledger
}

/// What `owner` can still pay each node along its credit lines, or None when no line names
/// `owner` at all (an unmetered namespace: its workloads run as contributions, unbilled).
pub fn owner_headroom(lines: &[Arc<CreditLine>], owner: &Account) -> Option<BTreeMap<String, i64>> {
    let ledger = ledger_of(lines, Some(owner));
    ledger.lines().next()?;
    let mut out = BTreeMap::new();
    for (_, l) in ledger.lines() {
        let other = if l.creditor == *owner {
            &l.debtor
        } else {
            &l.creditor
        };
        if other.kind == AccountKind::Node && !out.contains_key(&other.name) {
            out.insert(other.name.clone(), ledger.headroom(owner, other));
        }
    }
    Some(out)
}

/// The scheduler's view of every node. `headroom` is the owner's, from [`owner_headroom`].
pub fn node_views(
    nodes: &[Arc<Node>],
    lease_of: &dyn Fn(&str) -> Option<Arc<Lease>>,
    allocated: &BTreeMap<String, (Resources, u32)>,
    request: &Request,
    headroom: Option<&BTreeMap<String, i64>>,
    now: Timestamp,
) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = nodes
        .iter()
        .map(|n| {
            let name = n.name_any();
            let status = n.status.clone().unwrap_or_default();
            let capacity = Resources {
                cpu_millis: n.spec.capacity.cpu_millis().unwrap_or(0),
                memory_bytes: n.spec.capacity.memory_bytes().unwrap_or(0),
                gpus: n.spec.capacity.gpu.max(0) as u32,
            };
            let used = allocated.get(&name).map(|a| a.0).unwrap_or_default();
            let ready = matches!(
                liveness(lease_of(&name).as_deref(), now),
                Liveness::Fresh { .. }
            );
            let utilization = if capacity.cpu_millis == 0 {
                1.0
            } else {
                used.cpu_millis as f64 / capacity.cpu_millis as f64
            };
            let rates = n.spec.pricing.clone().unwrap_or_else(default_pricing);
            let usage = pricing::Usage {
                cpu_millis: request.resources.cpu_millis,
                memory_bytes: request.resources.memory_bytes,
                gpus: request.resources.gpus,
                duration_ms: 3_600_000,
            };
            let market = pricing::Market {
                utilization,
                entropy_multiplier: 1.0,
            };
            NodeView {
                labels: n.labels().clone(),
                ready,
                // A node being deleted takes nothing new, like a cordoned one.
                unschedulable: n.spec.unschedulable || n.metadata.deletion_timestamp.is_some(),
                isolated: status
                    .septal
                    .as_ref()
                    .is_some_and(|s| s.state == SeptalState::Isolated),
                capacity,
                allocated: used,
                reputation: status.reputation.unwrap_or(0.5),
                nexus: status
                    .nexus_role
                    .is_some_and(|r| r != univrs_api::resources::node::NexusRole::Leaf),
                credit_balance: status.credit_balance.unwrap_or(0),
                price_per_hour: pricing::quote(&usage, &rates, &market).unwrap_or(i64::MAX),
                owner_headroom: headroom.map(|h| h.get(&name).copied().unwrap_or(0)),
                name,
            }
        })
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    views
}

/// The rates a node charges when its spec sets none (the schema's defaults).
pub fn default_pricing() -> NodePricing {
    serde_json::from_value(serde_json::json!({})).expect("NodePricing has defaults for every field")
}

//! What the reconcilers derive from cached objects: node readiness from Leases, what an
//! instance reserves, and the owner's credit position. Pure given its inputs.

use crate::core::resources::{HostPort, Resources};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use univrs_api::account::AccountKind;
use univrs_api::ledger::{Ledger, Line};
use univrs_api::resources::node::NodePricing;
use univrs_api::resources::workload::WorkloadSpec;
use univrs_api::{Account, CreditLine, Node};

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

/// When a node Lease lapses unless renewed: its last renewal (or acquisition) plus `duration`,
/// the cluster's node lease duration (`--node-lease-duration`), or None when it says neither.
/// The Lease's own `leaseDurationSeconds` is the node's to write, so it decides nothing: a node
/// claiming a day would otherwise stay Ready, and keep earning uptime, a day after it died.
pub fn lapses_at(lease: &Lease, duration: std::time::Duration) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let duration = SignedDuration::try_from(duration).unwrap_or(SignedDuration::from_secs(40));
    Some(renewed.0.checked_add(duration).unwrap_or(renewed.0))
}

/// The liveness of a node from its Lease at `now`, with the cluster's lease `duration`.
pub fn liveness(lease: Option<&Lease>, now: Timestamp, duration: std::time::Duration) -> Liveness {
    match lease.and_then(|l| lapses_at(l, duration)) {
        None => Liveness::Missing,
        Some(until) if until > now => Liveness::Fresh { until },
        Some(since) => Liveness::Lapsed { since },
    }
}

/// How far the clock of a Lease's writer is from the API server's, in whole seconds (0 when
/// within a second): its `renewTime` (the writer's clock) against the time the API server
/// stamped on the write that set it (`managedFields`, kept to the second).
pub fn clock_skew_s(lease: Option<&Lease>) -> f64 {
    let Some(lease) = lease else { return 0.0 };
    let Some(renewed) = lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()) else {
        return 0.0;
    };
    let Some(stamped) = lease
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.time.as_ref())
        .map(|t| t.0)
        .max()
    else {
        return 0.0;
    };
    // The stamp is truncated to the second: a writer in step with the server renews within
    // [stamp, stamp + 1 s).
    let d = renewed.0.as_millisecond() - stamped.as_millisecond();
    let off_ms = if d < 0 { -d } else { (d - 999).max(0) };
    (off_ms as f64 / 1000.0).round()
}

/// How near the fullest of `account`'s credit lines is to its limit, 0 to 1.
pub fn credit_use(ledger: &Ledger, account: &Account) -> f64 {
    ledger
        .lines()
        .filter(|(_, l)| l.creditor == *account || l.debtor == *account)
        .map(|(_, l)| {
            if l.limit <= 0 {
                0.0
            } else {
                (l.balance.unsigned_abs() as f64 / l.limit as f64).min(1.0)
            }
        })
        .fold(0.0, f64::max)
}

/// The host ports one instance of a workload publishes, sorted and unique (the schema allows
/// each port/protocol pair once per workload).
pub fn host_ports(spec: &WorkloadSpec) -> Vec<HostPort> {
    let mut ports: Vec<HostPort> = spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            Some(HostPort {
                port: u16::try_from(p.host_port?).ok()?,
                udp: p.protocol == univrs_api::resources::workload::Protocol::UDP,
            })
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// Resources one instance of a workload reserves (see `WorkloadSpec::request_hour`).
pub fn instance_request(spec: &WorkloadSpec) -> Resources {
    let u = spec.request_hour();
    Resources {
        cpu_millis: u.cpu_millis,
        memory_bytes: u.memory_bytes,
        gpus: u.gpus,
    }
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
            limit: cl.limit_now(),
            balance: cl.status.as_ref().map_or(0, |s| s.balance),
        };
        let _ = ledger.upsert_line(cl.name_any(), line);
    }
    ledger
}

/// What `owner` can still pay each node along its credit lines, or None when no line names
/// `owner` at all and no node pays for it (an unmetered namespace: its workloads run as
/// contributions, unbilled). `payers` are the nodes whose earnings pay for the owner's
/// Workloads (`univrs.io/pays-for`): their headroom towards a node adds to the owner's, and on
/// a payer itself the owner's Workloads run free (no limit).
pub fn owner_headroom(
    lines: &[Arc<CreditLine>],
    owner: &Account,
    payers: &[String],
) -> Option<BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    let mut any = !payers.is_empty();
    let accounts = std::iter::once(owner.clone()).chain(payers.iter().map(Account::node));
    for payer in accounts {
        let ledger = ledger_of(lines, Some(&payer));
        let mut seen = std::collections::BTreeSet::new();
        for (_, l) in ledger.lines() {
            any = true;
            let other = if l.creditor == payer {
                &l.debtor
            } else {
                &l.creditor
            };
            if other.kind == AccountKind::Node && other != &payer && seen.insert(&other.name) {
                let room = ledger.headroom(&payer, other);
                let e = out.entry(other.name.clone()).or_insert(0);
                *e = e.saturating_add(room);
            }
        }
    }
    for p in payers {
        out.insert(p.clone(), i64::MAX);
    }
    any.then_some(out)
}

/// A node's reputation as the cluster counts it: the controller's rating, or the neutral prior
/// for a node not rated yet.
pub fn reputation_of(n: &Node) -> f64 {
    n.status
        .as_ref()
        .and_then(|s| s.reputation)
        .unwrap_or(univrs_api::enr::reputation::Config::default().prior)
}

/// The rates a node charges when its spec sets none (the schema's defaults).
pub fn default_pricing() -> NodePricing {
    serde_json::from_value(serde_json::json!({})).expect("NodePricing has defaults for every field")
}

#[cfg(test)]
mod lease_tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease_renewed(renew: &str, stamped: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l", "managedFields": [
                {"manager": "agent", "operation": "Apply", "time": stamped}]},
            "spec": {"renewTime": renew}
        }))
        .unwrap()
    }

    fn line(name: &str, creditor: &str, debtor: &str, limit: i64, balance: i64) -> Arc<CreditLine> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
                "metadata": {"name": name},
                "spec": {"creditor": creditor, "debtor": debtor, "limit": limit},
                "status": {"balance": balance}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_paying_node_adds_its_headroom_and_runs_its_organization_free() {
        let school = Account::namespace("school");
        let lines = [
            line("host-school", "node/host", "namespace/school", 100, 40),
            line("host-pc", "node/host", "node/pc", 1000, 0),
            line("other-pc", "node/other", "node/pc", 50, 50),
        ];
        assert_eq!(owner_headroom(&lines[1..], &school, &[]), None, "unmetered");
        let alone = owner_headroom(&lines, &school, &[]).unwrap();
        assert_eq!(alone, BTreeMap::from([("host".to_string(), 60)]));
        let with_pc = owner_headroom(&lines, &school, &["pc".to_string()]).unwrap();
        assert_eq!(
            with_pc,
            BTreeMap::from([
                ("host".to_string(), 1060),
                ("other".to_string(), 0),
                ("pc".to_string(), i64::MAX),
            ])
        );
        // A payer alone makes the namespace metered (it pays, or runs its Workloads free).
        let only_pc = owner_headroom(&[], &school, &["pc".to_string()]).unwrap();
        assert_eq!(only_pc, BTreeMap::from([("pc".to_string(), i64::MAX)]));
    }

    #[test]
    fn clock_skew_is_the_renewal_against_the_servers_stamp() {
        let skew = |r, t| clock_skew_s(Some(&lease_renewed(r, t)));
        assert_eq!(
            skew("2026-01-01T00:00:00.700000Z", "2026-01-01T00:00:00Z"),
            0.0
        );
        assert_eq!(
            skew("2026-01-01T00:00:05.400000Z", "2026-01-01T00:00:00Z"),
            4.0
        );
        assert_eq!(
            skew("2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:07Z"),
            7.0
        );
        assert_eq!(clock_skew_s(None), 0.0);
    }
    use std::time::Duration;

    #[test]
    fn a_lease_claiming_a_day_lapses_after_the_clusters_duration() {
        let renewed = Timestamp::now();
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("rogue".into()),
                lease_duration_seconds: Some(86_400),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let forty = Duration::from_secs(40);
        let later = |s: i64| renewed.checked_add(SignedDuration::from_secs(s)).unwrap();
        assert!(matches!(
            liveness(Some(&lease), later(30), forty),
            Liveness::Fresh { .. }
        ));
        assert_eq!(
            liveness(Some(&lease), later(41), forty),
            Liveness::Lapsed { since: later(40) }
        );
        assert_eq!(liveness(None, later(0), forty), Liveness::Missing);
    }
}

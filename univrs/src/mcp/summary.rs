//! The resource `univrs://cluster/summary`: nodes, workloads and credit totals in one read,
//! so an agent can see the whole cluster before it picks a tool.

use super::error::ToolError;
use super::{credit, nodes};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use univrs_api::Workload;
use univrs_api::resources::node::SeptalState;

/// The summary's URI.
pub const URI: &str = "univrs://cluster/summary";

/// Milli-units of CPU and bytes of memory, summed; a quantity that does not parse counts as 0.
#[derive(Default)]
struct Totals {
    cpu_millis: u64,
    memory_bytes: u64,
    gpu: i64,
}

impl Totals {
    fn json(&self) -> Value {
        json!({
            "cpu": format!("{}m", self.cpu_millis),
            "memory": format!("{}Mi", self.memory_bytes / (1024 * 1024)),
            "gpu": self.gpu,
        })
    }
}

/// The summary as JSON.
pub async fn read(client: &Client) -> Result<Value, ToolError> {
    let all_nodes = nodes::all(client).await?;
    let workloads = Api::<Workload>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(ToolError::api("list workloads"))?
        .items;
    let lines = credit::all(client).await?;

    let (mut capacity, mut allocated) = (Totals::default(), Totals::default());
    let mut roles: BTreeMap<String, usize> = BTreeMap::new();
    for n in &all_nodes {
        capacity.cpu_millis += n.spec.capacity.cpu_millis().unwrap_or(0);
        capacity.memory_bytes += n.spec.capacity.memory_bytes().unwrap_or(0);
        capacity.gpu += i64::from(n.spec.capacity.gpu);
        if let Some(s) = &n.status {
            if let Some(a) = &s.allocated {
                allocated.cpu_millis += a.cpu.to_milli().unwrap_or(0);
                allocated.memory_bytes += a.memory.to_units().unwrap_or(0);
                allocated.gpu += i64::from(a.gpu);
            }
            if let Some(r) = s.nexus_role {
                *roles.entry(format!("{r:?}")).or_default() += 1;
            }
        }
    }
    let count = |f: &dyn Fn(&univrs_api::Node) -> bool| all_nodes.iter().filter(|n| f(n)).count();

    let mut namespaces: BTreeMap<String, (usize, i64, i64)> = BTreeMap::new();
    for w in &workloads {
        let e = namespaces
            .entry(w.namespace().unwrap_or_default())
            .or_default();
        e.0 += 1;
        e.1 += i64::from(w.spec.replicas);
        e.2 += i64::from(
            w.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        );
    }
    let per_ns: Vec<Value> = namespaces
        .iter()
        .map(|(ns, (n, want, ready))| json!({"namespace": ns, "workloads": n, "replicas": want, "readyReplicas": ready}))
        .collect();

    let (ledger, _) = credit::ledger(&lines);
    let outstanding: i128 = ledger.lines().map(|(_, l)| i128::from(l.balance)).sum();
    let limits: i128 = ledger.lines().map(|(_, l)| i128::from(l.limit)).sum();
    let sum: i128 = ledger.balances().values().sum();

    Ok(json!({
        "nodes": {
            "total": all_nodes.len(),
            "ready": count(&nodes::is_ready),
            "cordoned": count(&|n| n.spec.unschedulable),
            "draining": count(&nodes::is_draining),
            "isolated": count(&|n| n.status.as_ref().and_then(|s| s.septal.as_ref()).is_some_and(|s| s.state == SeptalState::Isolated)),
            "roles": roles,
            "capacity": capacity.json(),
            "allocated": allocated.json(),
        },
        "workloads": {
            "total": workloads.len(),
            "replicas": per_ns.iter().filter_map(|v| v["replicas"].as_i64()).sum::<i64>(),
            "readyReplicas": per_ns.iter().filter_map(|v| v["readyReplicas"].as_i64()).sum::<i64>(),
            "byNamespace": per_ns,
        },
        "credit": {
            "unit": "milli-credits",
            "lines": lines.len(),
            "totalLimit": credit::int(limits),
            "totalOutstanding": credit::int(outstanding),
            "sumOfBalances": credit::int(sum),
        },
    }))
}

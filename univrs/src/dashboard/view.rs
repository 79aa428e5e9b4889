//! What the page shows, computed from the cached objects alone (no I/O): the View JSON of the
//! contract between this server and `assets/app.js`. Money stays in integer milli-credits.

use super::history::History;
use serde::Serialize;
use std::collections::BTreeMap;
use univrs_api::resources::node::{NexusRole, PricingModel, SeptalState};
use univrs_api::resources::workload::{InstancePhase, instance_index};
use univrs_api::{CreditLine, Node, Workload};

/// The whole page's data.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// When it was made (RFC 3339).
    pub generated_at: String,
    /// The API server it was read from.
    pub server: String,
    /// The machines.
    pub nodes: Vec<NodeView>,
    /// Mesh connections, each pair once.
    pub links: Vec<Link>,
    /// Each account's balance and its history.
    pub accounts: Vec<AccountView>,
    /// The credit lines.
    pub credit_lines: Vec<LineView>,
    /// The Workloads.
    pub workloads: Vec<WorkloadView>,
}

/// One machine.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    name: String,
    ready: bool,
    ready_reason: Option<String>,
    ready_message: Option<String>,
    reputation: Option<f64>,
    septal: Option<SeptalState>,
    nexus_role: Option<NexusRole>,
    cpu_allocated: f64,
    cpu_capacity: f64,
    memory_allocated: u64,
    memory_capacity: u64,
    instances: i32,
    credit_balance: Option<i64>,
    reachability: Option<String>,
    peer_id: String,
    did: String,
    unschedulable: bool,
    labels: BTreeMap<String, String>,
    pricing: Option<PricingModel>,
    entropy: Option<f64>,
    conditions: serde_json::Value,
}

/// A mesh connection between two machines.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    from: String,
    to: String,
    connection: Option<String>,
    latency_ms: Option<f64>,
}

/// An account's balance: positive when owed, negative when owing.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    account: String,
    balance: i64,
    history: Vec<(i64, i64)>,
}

/// A credit line.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LineView {
    name: String,
    creditor: String,
    debtor: String,
    limit: i64,
    effective_limit: Option<i64>,
    balance: i64,
    utilization: Option<String>,
    limit_policy: String,
}

/// A Workload.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    namespace: String,
    name: String,
    replicas: i32,
    ready_replicas: i32,
    phase: &'static str,
    image: String,
    credit_spent: Option<i64>,
    conditions: serde_json::Value,
    instances: Vec<InstanceView>,
}

/// One instance of a Workload.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    name: String,
    index: Option<u32>,
    node: Option<String>,
    phase: Option<InstancePhase>,
    ready: bool,
    restarts: i32,
    started_at: Option<String>,
    ip: Option<String>,
    message: Option<String>,
}

/// The cached objects a view is made of.
pub struct Objects<'a> {
    /// Every Node.
    pub nodes: &'a [std::sync::Arc<Node>],
    /// Every Workload the credentials may list.
    pub workloads: &'a [std::sync::Arc<Workload>],
    /// Every CreditLine.
    pub lines: &'a [std::sync::Arc<CreditLine>],
}

/// The view of `objects`, with the balances' history; `now_ms` is the time in Unix ms.
pub fn build(objects: &Objects<'_>, history: &History, server: &str, now: &str) -> View {
    let mut nodes: Vec<NodeView> = objects.nodes.iter().map(|n| node_view(n)).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lines: Vec<LineView> = objects.lines.iter().map(|l| line_view(l)).collect();
    lines.sort_by(|a, b| a.name.cmp(&b.name));
    let accounts = balances(objects.lines)
        .into_iter()
        .map(|(account, balance)| AccountView {
            history: history.of(&account),
            account,
            balance,
        })
        .collect();
    let mut workloads: Vec<WorkloadView> =
        objects.workloads.iter().map(|w| workload_view(w)).collect();
    workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    View {
        generated_at: now.to_string(),
        server: server.to_string(),
        nodes,
        links: links(objects.nodes),
        accounts,
        credit_lines: lines,
        workloads,
    }
}

/// Each account's balance, as the controller's ledger of the lines reckons it (what a line's
/// debtor owes its creditor).
pub fn balances(lines: &[std::sync::Arc<CreditLine>]) -> BTreeMap<String, i64> {
    univrs_controller::core::snapshot::ledger_of(lines, None)
        .balances()
        .into_iter()
        // Lines are capped at 10^15: a sum of them fits an i64.
        .map(|(account, b)| {
            (
                account.to_string(),
                b.clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            )
        })
        .collect()
}

fn node_view(n: &Node) -> NodeView {
    let status = n.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let cores = |q: Option<&univrs_api::quantity::Quantity>| {
        q.and_then(|q| q.to_milli().ok()).unwrap_or(0) as f64 / 1000.0
    };
    let bytes =
        |q: Option<&univrs_api::quantity::Quantity>| q.and_then(|q| q.to_units().ok()).unwrap_or(0);
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default(),
        ready: ready.is_some_and(|c| c.status == "True"),
        ready_reason: ready.map(|c| c.reason.clone()),
        ready_message: ready.map(|c| c.message.clone()),
        reputation: status.reputation,
        septal: status.septal.as_ref().map(|s| s.state),
        nexus_role: status.nexus_role,
        cpu_allocated: cores(status.allocated.as_ref().map(|a| &a.cpu)),
        cpu_capacity: cores(Some(&n.spec.capacity.cpu)),
        memory_allocated: bytes(status.allocated.as_ref().map(|a| &a.memory)),
        memory_capacity: bytes(Some(&n.spec.capacity.memory)),
        instances: status.instances.unwrap_or(0),
        credit_balance: status.credit_balance,
        reachability: status
            .observations
            .as_ref()
            .and_then(|o| o.reachability)
            .map(|r| format!("{r:?}")),
        peer_id: n.spec.peer_id.clone(),
        did: n.spec.did.clone(),
        unschedulable: n.spec.unschedulable,
        labels: n.metadata.labels.clone().unwrap_or_default(),
        pricing: n.spec.pricing.as_ref().map(|p| p.model),
        entropy: status.entropy.as_ref().map(|e| e.total),
        conditions: serde_json::to_value(&status.conditions).unwrap_or_default(),
    }
}

/// Each connected pair once, as either side reports it (the first reporter by name; the
/// latency is the mean of what both sides measured).
fn links(nodes: &[std::sync::Arc<Node>]) -> Vec<Link> {
    let known: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let mut pairs: BTreeMap<(String, String), (Option<String>, Vec<f64>)> = BTreeMap::new();
    let mut sorted: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for n in sorted {
        let me = n.metadata.name.clone().unwrap_or_default();
        let peers = n
            .status
            .as_ref()
            .and_then(|s| s.observations.as_ref())
            .map(|o| o.peers.clone())
            .unwrap_or_default();
        for p in peers
            .iter()
            .filter(|p| p.connected && known.contains(p.node.as_str()))
        {
            if p.node == me {
                continue;
            }
            let key = if me < p.node {
                (me.clone(), p.node.clone())
            } else {
                (p.node.clone(), me.clone())
            };
            let entry = pairs.entry(key).or_insert((None, Vec::new()));
            if entry.0.is_none() {
                entry.0 = p.connection.map(|c| format!("{c:?}"));
            }
            entry.1.extend(p.latency_ms);
        }
    }
    pairs
        .into_iter()
        .map(|((from, to), (connection, latencies))| Link {
            from,
            to,
            connection,
            latency_ms: (!latencies.is_empty())
                .then(|| latencies.iter().sum::<f64>() / latencies.len() as f64),
        })
        .collect()
}

fn line_view(l: &CreditLine) -> LineView {
    let status = l.status.clone().unwrap_or_default();
    LineView {
        name: l.metadata.name.clone().unwrap_or_default(),
        creditor: l.spec.creditor.to_string(),
        debtor: l.spec.debtor.to_string(),
        limit: l.spec.limit,
        effective_limit: status.effective_limit,
        balance: status.balance,
        utilization: status.utilization,
        limit_policy: format!("{:?}", l.spec.limit_policy),
    }
}

fn workload_view(w: &Workload) -> WorkloadView {
    let name = w.metadata.name.clone().unwrap_or_default();
    let status = w.status.clone().unwrap_or_default();
    let instances: Vec<InstanceView> = status
        .instances
        .iter()
        .map(|i| InstanceView {
            index: instance_index(&name, &i.name),
            name: i.name.clone(),
            node: i.node.clone(),
            phase: i.phase,
            ready: i.ready.unwrap_or(false),
            restarts: i.restarts.unwrap_or(0),
            started_at: i.started_at.as_ref().map(|t| t.0.to_string()),
            ip: i.ip.clone(),
            message: i.message.clone(),
        })
        .collect();
    let ready = status.ready_replicas.unwrap_or(0);
    WorkloadView {
        namespace: w.metadata.namespace.clone().unwrap_or_default(),
        phase: phase(w.spec.replicas, ready, &instances),
        name,
        replicas: w.spec.replicas,
        ready_replicas: ready,
        image: w
            .spec
            .containers
            .first()
            .map(|c| c.image.clone())
            .unwrap_or_default(),
        credit_spent: status.credit_spent,
        conditions: serde_json::to_value(&status.conditions).unwrap_or_default(),
        instances,
    }
}

/// A Workload's state in one word: Running when every replica is ready, Failed when an
/// instance failed and none is ready, Degraded when some are ready and others failed,
/// Progressing while instances are placed and starting, Pending while none is placed.
fn phase(replicas: i32, ready: i32, instances: &[InstanceView]) -> &'static str {
    let failed = instances
        .iter()
        .any(|i| i.phase == Some(InstancePhase::Failed));
    let placed = instances.iter().any(|i| i.node.is_some());
    match () {
        _ if replicas == 0 => "Stopped",
        _ if ready >= replicas => "Running",
        _ if failed && ready == 0 => "Failed",
        _ if failed => "Degraded",
        _ if placed => "Progressing",
        _ => "Pending",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(name: &str, peers: &[(&str, &str, Option<f64>)]) -> Arc<Node> {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node",
            "metadata": {"name": name},
            "spec": {"peerId": "p", "did": "d", "capacity": {"cpu": "2", "memory": "1Gi"}},
            "status": {
                "allocated": {"cpu": "500m", "memory": "256Mi"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "LeaseRenewed",
                    "message": "", "lastTransitionTime": "2026-12-04T00:00:00Z"}],
                "observations": {"connectedPeers": 1, "uptime": 1.0, "bandwidthBps": 0,
                    "invalidMessages": 0, "peers": []}
            }
        }))
        .unwrap();
        let obs = n.status.as_mut().unwrap().observations.as_mut().unwrap();
        for (peer, how, latency) in peers {
            obs.peers.push(
                serde_json::from_value(serde_json::json!({
                    "node": peer, "connected": true, "connection": how, "latencyMs": latency
                }))
                .unwrap(),
            );
        }
        Arc::new(n)
    }

    fn line(name: &str, creditor: &str, debtor: &str, balance: i64) -> Arc<CreditLine> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
                "metadata": {"name": name},
                "spec": {"creditor": creditor, "debtor": debtor, "limit": 10000},
                "status": {"balance": balance}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_view_pairs_links_adds_up_accounts_and_reads_capacity() {
        let nodes = vec![
            node(
                "b",
                &[("a", "Relayed", Some(4.0)), ("ghost", "Direct", None)],
            ),
            node("a", &[("b", "Direct", Some(2.0))]),
        ];
        let lines = vec![
            line("l1", "node/a", "namespace/shop", 1500),
            line("l2", "node/b", "node/a", 500),
        ];
        let history = History::default();
        let v = build(
            &Objects {
                nodes: &nodes,
                workloads: &[],
                lines: &lines,
            },
            &history,
            "https://api",
            "now",
        );
        assert_eq!(v.nodes[0].name, "a");
        assert_eq!(
            (v.nodes[0].cpu_allocated, v.nodes[0].cpu_capacity),
            (0.5, 2.0)
        );
        assert_eq!(v.nodes[0].memory_allocated, 256 << 20);
        assert!(v.nodes[0].ready);
        // One link for the pair, as the first by name reports it; the unknown peer is left out.
        assert_eq!(
            v.links,
            vec![Link {
                from: "a".into(),
                to: "b".into(),
                connection: Some("Direct".into()),
                latency_ms: Some(3.0)
            }]
        );
        let bal: BTreeMap<String, i64> = v
            .accounts
            .iter()
            .map(|a| (a.account.clone(), a.balance))
            .collect();
        assert_eq!(bal["node/a"], 1000);
        assert_eq!(bal["node/b"], 500);
        assert_eq!(bal["namespace/shop"], -1500);
        assert_eq!(bal.values().sum::<i64>(), 0, "mutual credit sums to zero");
    }

    #[test]
    fn a_workload_is_summed_up_in_one_word() {
        let inst = |node: Option<&str>, phase| InstanceView {
            name: "w-0".into(),
            index: Some(0),
            node: node.map(str::to_string),
            phase,
            ready: false,
            restarts: 0,
            started_at: None,
            ip: None,
            message: None,
        };
        assert_eq!(phase(0, 0, &[]), "Stopped");
        assert_eq!(phase(2, 0, &[]), "Pending");
        assert_eq!(
            phase(2, 0, &[inst(Some("a"), Some(InstancePhase::Starting))]),
            "Progressing"
        );
        assert_eq!(
            phase(2, 1, &[inst(Some("a"), Some(InstancePhase::Failed))]),
            "Degraded"
        );
        assert_eq!(
            phase(2, 0, &[inst(Some("a"), Some(InstancePhase::Failed))]),
            "Failed"
        );
        assert_eq!(phase(2, 2, &[]), "Running");
    }
}

//! The node tools: what each node offers and how it is doing, and cordon, uncordon and drain.
//!
//! Cordon is `spec.unschedulable: true` (nothing new is placed there); drain is cordon plus the
//! annotation `univrs.io/drain: "true"`, on which the controller moves the node's instances
//! elsewhere. Uncordon undoes both. These are merge patches, as `kubectl cordon` makes, so they
//! never create a Node and leave the rest of the spec to the node's agent.

use super::args::NodeRef;
use super::error::{ToolError, ToolResult};
use super::manager::FIELD_MANAGER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use univrs_api::resources::node::DRAIN_ANNOTATION;
use univrs_api::resources::node::{CONDITION_ISOLATED, CONDITION_READY};
use univrs_api::{Node, Workload};

/// Where to look when a node is not found.
const NODES_HINT: &str = "cluster_nodes lists the nodes";

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the node carries the drain annotation.
pub fn is_draining(n: &Node) -> bool {
    n.annotations()
        .get(DRAIN_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Whether the node's Ready condition is True.
pub fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| condition(&s.conditions, CONDITION_READY))
        .is_some_and(|c| c.status == "True")
}

/// One node as `cluster_nodes` shows it.
fn describe(n: &Node) -> Value {
    let status = n.status.clone().unwrap_or_default();
    let ready = condition(&status.conditions, CONDITION_READY);
    json!({
        "name": n.name_any(),
        "ready": ready.map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into()),
        "readyReason": ready.map(|c| c.reason.clone()),
        "cordoned": n.spec.unschedulable,
        "draining": is_draining(n),
        "isolated": condition(&status.conditions, CONDITION_ISOLATED).map(|c| c.status == "True"),
        "reputation": status.reputation,
        "capacity": n.spec.capacity,
        "allocated": status.allocated,
        "instances": status.instances.unwrap_or(0),
        "nexusRole": status.nexus_role,
        "septal": status.septal,
        "creditBalance": status.credit_balance,
        "labels": n.labels(),
        "peerId": n.spec.peer_id,
        "did": n.spec.did,
    })
}

/// Every Node object.
pub async fn all(client: &Client) -> Result<Vec<Node>, ToolError> {
    Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(ToolError::api("list nodes"))
}

/// `cluster_nodes`: every node, Ready, reputation, capacity and allocation, role, septal gate.
pub async fn list(client: &Client) -> ToolResult {
    let nodes = all(client).await?;
    let items: Vec<Value> = nodes.iter().map(describe).collect();
    Ok(json!({"count": items.len(), "nodes": items}))
}

/// Merge-patches `patch` into the node `name`; a missing node is NotFound.
async fn patch_node(
    client: &Client,
    name: &str,
    verb: &str,
    patch: Value,
) -> Result<Node, ToolError> {
    if name.trim().is_empty() {
        return Err(ToolError::Invalid(format!(
            "name is required: the node to {verb}; {NODES_HINT}"
        )));
    }
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    Api::<Node>::all(client.clone())
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(ToolError::from_kube(
            format!("{verb} node {name}"),
            format!("node {name}"),
            NODES_HINT,
        ))
}

/// `node_cordon`: nothing new is placed on the node; what runs there stays.
pub async fn cordon(client: &Client, args: NodeRef) -> ToolResult {
    let n = patch_node(
        client,
        &args.name,
        "cordon",
        json!({"spec": {"unschedulable": true}}),
    )
    .await?;
    Ok(json!({
        "node": n.name_any(),
        "cordoned": true,
        "note": "instances already there keep running; node_drain moves them, node_uncordon undoes this",
    }))
}

/// `node_uncordon`: the node takes new instances again and is no longer drained.
pub async fn uncordon(client: &Client, args: NodeRef) -> ToolResult {
    let n = patch_node(
        client,
        &args.name,
        "uncordon",
        json!({"spec": {"unschedulable": false}, "metadata": {"annotations": {DRAIN_ANNOTATION: null}}}),
    )
    .await?;
    Ok(json!({"node": n.name_any(), "cordoned": false, "draining": false}))
}

/// `node_drain`: cordons the node and asks the controller to move its instances elsewhere.
pub async fn drain(client: &Client, args: NodeRef) -> ToolResult {
    let n = patch_node(
        client,
        &args.name,
        "drain",
        json!({"spec": {"unschedulable": true}, "metadata": {"annotations": {DRAIN_ANNOTATION: "true"}}}),
    )
    .await?;
    let name = n.name_any();
    let workloads = Api::<Workload>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(ToolError::api("list workloads"))?;
    let moving: Vec<String> = workloads
        .items
        .iter()
        .flat_map(|w| {
            let ns = w.namespace().unwrap_or_default();
            w.status
                .iter()
                .flat_map(|s| s.instances.iter())
                .filter(|i| i.node.as_deref() == Some(name.as_str()))
                .map(move |i| format!("{ns}/{}", i.name))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(json!({
        "node": name,
        "cordoned": true,
        "draining": true,
        "instancesToMove": moving,
        "note": "the controller moves these to other nodes (workload_get shows where); node_uncordon ends the drain",
    }))
}

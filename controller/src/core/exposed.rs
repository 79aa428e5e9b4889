//! A Workload's `Exposed` condition (`spec.expose`): whether it holds each port it exposes
//! (the first Workload to expose a port holds it; agents serve only the holder, see
//! `univrs_api::expose`), and how many member nodes' owners allow each port.

use std::collections::BTreeMap;
use std::sync::Arc;
use univrs_api::conditions::DesiredCondition;
use univrs_api::expose::Holder;
use univrs_api::resources::workload::CONDITION_EXPOSED;
use univrs_api::{Node, Workload};

/// The condition, or `None` for a Workload that exposes nothing.
pub fn condition(
    wl: &Workload,
    holders: &BTreeMap<u16, Holder>,
    nodes: &[Arc<Node>],
) -> Option<DesiredCondition> {
    if wl.spec.expose.is_empty() {
        return None;
    }
    let (ns, name) = (
        wl.metadata.namespace.as_deref().unwrap_or_default(),
        wl.metadata.name.as_deref().unwrap_or_default(),
    );
    let taken: Vec<String> = wl
        .spec
        .expose
        .iter()
        .filter_map(|p| {
            let h = holders.get(&u16::try_from(p.port).ok()?)?;
            (h.namespace != ns || h.name != name)
                .then(|| format!("{} (held by {}/{})", p.port, h.namespace, h.name))
        })
        .collect();
    if !taken.is_empty() {
        return Some(DesiredCondition::new(
            CONDITION_EXPOSED,
            false,
            "PortTaken",
            format!(
                "port {} is exposed by a Workload that claimed it first; choose another port",
                taken.join(", ")
            ),
        ));
    }
    let live: Vec<&Arc<Node>> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .collect();
    let mut notes = Vec::new();
    for p in &wl.spec.expose {
        let refusing = live
            .iter()
            .filter(|n| n.spec.host_ports.is_some_and(|r| !r.contains(p.port)))
            .count();
        if refusing > 0 {
            notes.push(format!(
                "{refusing} of {} nodes' owners do not allow port {}",
                live.len(),
                p.port
            ));
        }
    }
    let ports: Vec<String> = wl.spec.expose.iter().map(|p| p.port.to_string()).collect();
    let mut message = format!(
        "port {} served on every member node that allows it",
        ports.join(", ")
    );
    if !notes.is_empty() {
        message.push_str(&format!(" ({})", notes.join("; ")));
    }
    Some(DesiredCondition::new(
        CONDITION_EXPOSED,
        true,
        "Serving",
        message,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use univrs_api::expose::holders;

    fn wl(ns: &str, name: &str, created: i64, port: i32) -> Workload {
        let mut w: Workload = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "x"}],
                "expose": [{"name": "web", "port": port, "targetPort": 8080}]},
        }))
        .unwrap();
        w.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        w
    }

    fn node(name: &str, range: Option<(i32, i32)>) -> Arc<Node> {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
            "spec": {"peerId": "12D3KooWAbcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTU",
                "did": "did:key:z6MkAbcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTU",
                "capacity": {"cpu": "1", "memory": "1Gi"}},
        }))
        .unwrap();
        n.spec.host_ports =
            range.map(|(min, max)| univrs_api::resources::node::HostPortRange { min, max });
        Arc::new(n)
    }

    #[test]
    fn the_holder_serves_and_a_later_claim_is_told_who_holds_the_port() {
        let first = wl("a", "portal", 1, 30080);
        let second = wl("b", "copy", 2, 30080);
        let h = holders([&first, &second]);
        let nodes = [
            node("n1", Some((30000, 32767))),
            node("n2", Some((31000, 31999))),
        ];
        let ok = condition(&first, &h, &nodes).unwrap();
        assert_eq!((ok.status, ok.reason.as_str()), ("True", "Serving"));
        assert!(
            ok.message
                .contains("1 of 2 nodes' owners do not allow port 30080"),
            "{}",
            ok.message
        );
        let taken = condition(&second, &h, &nodes).unwrap();
        assert_eq!(
            (taken.status, taken.reason.as_str()),
            ("False", "PortTaken")
        );
        assert!(
            taken.message.contains("30080 (held by a/portal)"),
            "{}",
            taken.message
        );
        let mut nothing = first.clone();
        nothing.spec.expose.clear();
        assert!(condition(&nothing, &h, &nodes).is_none());
    }
}

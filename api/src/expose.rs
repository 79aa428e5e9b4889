//! Exposed ports (`spec.expose`): which Workload holds each port cluster-wide, and where a
//! connection to it can go. The controller (for the `Exposed` condition) and every agent (for
//! what it serves) decide the same way from the same objects.

use crate::resources::workload::{ExposedPort, Workload};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The Workload that holds an exposed port.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The exposed port's entry.
    pub port: ExposedPort,
}

/// Who holds each exposed port: among Workloads not being deleted, the one that exposed it
/// first (oldest creationTimestamp, then namespace and name), as the first to claim a
/// NodePort keeps it.
pub fn holders<'a>(workloads: impl IntoIterator<Item = &'a Workload>) -> BTreeMap<u16, Holder> {
    let mut sorted: Vec<&Workload> = workloads
        .into_iter()
        .filter(|w| w.metadata.deletion_timestamp.is_none() && !w.spec.expose.is_empty())
        .collect();
    sorted.sort_by(|a, b| {
        let key = |w: &Workload| {
            (
                w.metadata.creation_timestamp.clone().map(|t| t.0),
                w.metadata.namespace.clone(),
                w.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut out = BTreeMap::new();
    for w in sorted {
        for p in &w.spec.expose {
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            out.entry(port).or_insert_with(|| Holder {
                namespace: w.metadata.namespace.clone().unwrap_or_default(),
                name: w.metadata.name.clone().unwrap_or_default(),
                port: p.clone(),
            });
        }
    }
    out
}

/// The container port an exposed port's `targetPort` names in `wl` (a number, or the name of
/// one of its containers' ports).
pub fn target_port(wl: &Workload, exposed: &ExposedPort) -> Option<u16> {
    match &exposed.target_port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => wl
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Where a connection to `exposed` of `wl` can go: the ready instances on `node` (their
/// addresses on its container network) and the other nodes with a ready instance.
pub fn backends(
    wl: &Workload,
    exposed: &ExposedPort,
    node: &str,
) -> (Vec<SocketAddr>, Vec<String>) {
    match target_port(wl, exposed) {
        Some(port) => ready_backends(wl, port, node),
        None => (Vec::new(), Vec::new()),
    }
}

/// Where a connection to container port `port` of `wl` can go: its ready instances on `node`
/// (their addresses on its container network) and the other nodes with a ready instance.
pub fn ready_backends(wl: &Workload, port: u16, node: &str) -> (Vec<SocketAddr>, Vec<String>) {
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for i in wl.status.iter().flat_map(|s| &s.instances) {
        if i.ready != Some(true) {
            continue;
        }
        match i.node.as_deref() {
            Some(n) if n == node => {
                if let Some(ip) = i.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()) {
                    local.push(SocketAddr::new(ip, port));
                }
            }
            Some(n) if !remote.iter().any(|r| r == n) => remote.push(n.to_string()),
            _ => {}
        }
    }
    (local, remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::workload::{Instance, WorkloadStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn wl(ns: &str, name: &str, created_s: i64, expose: serde_json::Value) -> Workload {
        let mut w: Workload = serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "app", "image": "x",
                "ports": [{"name": "http", "containerPort": 8080}]}], "expose": expose},
        }))
        .unwrap();
        w.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created_s).unwrap(),
        ));
        w
    }

    #[test]
    fn the_first_to_expose_a_port_holds_it() {
        let e =
            |port: i32| serde_json::json!([{"name": "web", "port": port, "targetPort": "http"}]);
        let old = wl("b", "old", 100, e(30080));
        let new = wl("a", "new", 200, e(30080));
        let other = wl("a", "other", 300, e(30081));
        let mut gone = wl("a", "gone", 50, e(30081));
        gone.metadata.deletion_timestamp = gone.metadata.creation_timestamp.clone();
        let h = holders([&new, &old, &other, &gone]);
        assert_eq!(h[&30080].name, "old");
        assert_eq!(
            h[&30081].name, "other",
            "a Workload being deleted holds nothing"
        );
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn backends_are_ready_instances_here_then_other_nodes() {
        let mut w = wl(
            "a",
            "web",
            1,
            serde_json::json!([{"name": "web", "port": 30080, "targetPort": "http"}]),
        );
        let inst = |name: &str, node: &str, ip: &str, ready: bool| Instance {
            name: name.into(),
            node: Some(node.into()),
            ip: Some(ip.into()),
            ready: Some(ready),
            ..Default::default()
        };
        w.status = Some(WorkloadStatus {
            instances: vec![
                inst("web-0", "n1", "10.89.1.5", true),
                inst("web-1", "n1", "10.89.1.6", false),
                inst("web-2", "n2", "10.89.2.5", true),
                inst("web-3", "n3", "10.89.3.5", false),
            ],
            ..Default::default()
        });
        let e = w.spec.expose[0].clone();
        let (local, remote) = backends(&w, &e, "n1");
        assert_eq!(local, vec!["10.89.1.5:8080".parse().unwrap()]);
        assert_eq!(remote, vec!["n2".to_string()]);
        let (local, remote) = backends(&w, &e, "n3");
        assert!(local.is_empty());
        assert_eq!(remote, vec!["n1".to_string(), "n2".to_string()]);
        let mut by_number = e.clone();
        by_number.target_port = IntOrString::Int(9000);
        assert_eq!(target_port(&w, &by_number), Some(9000));
        by_number.target_port = IntOrString::String("nope".into());
        assert_eq!(target_port(&w, &by_number), None);
    }
}

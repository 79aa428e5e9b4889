//! What should run here: the instances the controller placed on this node, as a pure function
//! of the Workload cache, with stable names for their containers and network namespaces.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use univrs_api::resources::workload::{Container, Workload, WorkloadSpec};

/// Which placement of which instance: what identifies an instance on this node, the same in
/// what should run ([`DesiredInstance`]) and in what the agent remembers of it (its record on
/// disk, where these are top-level fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The instance's id on this node (see [`instance_id`]): its record's file name, its
    /// network namespace and its containers' id prefix.
    pub id: String,
    /// The Workload's namespace.
    pub namespace: String,
    /// The Workload's name.
    pub workload: String,
    /// The Workload's uid: a Workload deleted and created again is another workload.
    pub uid: String,
    /// The instance's name in the Workload's status (`web-0`).
    pub instance: String,
    /// When the controller placed it here; a new placement is a new instance.
    pub placed_at: Time,
}

/// One instance placed on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredInstance {
    /// Which placement it is.
    pub placement: Placement,
    /// The Workload's spec (containers, restart policy, grace period).
    pub spec: Arc<WorkloadSpec>,
    /// The Workload's registry logins, sealed to this node by the controller, if it has some
    /// (`status.imagePullCredentials`).
    pub sealed_credentials: Option<Arc<str>>,
}

/// Every instance the Workloads in `workloads` place on `node`, by instance id.
pub fn desired_on<'a>(
    node: &str,
    workloads: impl IntoIterator<Item = &'a Arc<Workload>>,
) -> BTreeMap<String, DesiredInstance> {
    let mut out = BTreeMap::new();
    for wl in workloads {
        // A Workload being deleted keeps no instance running (its finalizer-free deletion
        // may still show a status for a moment).
        if wl.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(ns), Some(uid), Some(status)) = (wl.namespace(), wl.uid(), wl.status.as_ref())
        else {
            continue;
        };
        let spec = Arc::new(wl.spec.clone());
        let sealed_credentials: Option<Arc<str>> = status
            .image_pull_credentials
            .iter()
            .find(|e| e.node == node)
            .map(|e| Arc::from(e.sealed.as_str()));
        for inst in &status.instances {
            let (Some(n), Some(placed_at)) = (inst.node.as_deref(), inst.placed_at.as_ref()) else {
                continue;
            };
            if n != node || !is_desired_name(&wl.name_any(), wl.spec.replicas, &inst.name) {
                continue;
            }
            let id = instance_id(&ns, &uid, &inst.name, placed_at);
            out.insert(
                id.clone(),
                DesiredInstance {
                    placement: Placement {
                        id,
                        namespace: ns.clone(),
                        workload: wl.name_any(),
                        uid: uid.clone(),
                        instance: inst.name.clone(),
                        placed_at: placed_at.clone(),
                    },
                    spec: spec.clone(),
                    sealed_credentials: sealed_credentials.clone(),
                },
            );
        }
    }
    out
}

/// Whether `instance` is one of the `replicas` instances of `workload` (`web-0` … `web-N-1`):
/// after a scale-down the controller drops the others, and the agent need not wait for that
/// status write to stop them.
fn is_desired_name(workload: &str, replicas: i32, instance: &str) -> bool {
    instance
        .strip_prefix(workload)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse::<i32>().ok())
        .is_some_and(|i| i >= 0 && i < replicas)
}

/// A short, stable hex digest of `parts` (length-prefixed, so no two lists collide).
fn digest(parts: &[&str], hex_len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())[..hex_len].to_string()
}

/// Keeps the characters container ids allow, at most `max` of them.
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// The id of one placement of an instance on this node: `<instance>-<10 hex>`, at most 33
/// characters. The hash covers namespace, Workload uid, instance name and placement time,
/// so two Workloads of one name in two namespaces, or a placement that left and came back,
/// never share an id. It names the instance's record, network namespace and containers.
pub fn instance_id(namespace: &str, uid: &str, instance: &str, placed_at: &Time) -> String {
    let placed = placed_at.0.to_string();
    let hash = digest(&[namespace, uid, instance, &placed], 10);
    format!("{}-{hash}", sanitize(instance, 22))
}

/// The runtime id of one container of an instance: `<instance id>.<container>`, at most 46
/// characters, so the runtime's socket paths fit under a data directory of up to 40.
pub fn container_id(instance_id: &str, container: &str) -> String {
    format!("{instance_id}.{}", sanitize(container, 12))
}

/// A digest of what a container runs; when it changes the container is recreated.
pub fn container_hash(c: &Container) -> String {
    let text = serde_json::to_string(c).unwrap_or_default();
    digest(&[&text], 16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use kube::Resource;

    fn workload(ns: &str, name: &str, replicas: i32, placed: &[(&str, &str)]) -> Arc<Workload> {
        let instances: Vec<serde_json::Value> = placed
            .iter()
            .map(|(i, n)| serde_json::json!({"name": i, "node": n, "placedAt": "2026-11-25T08:00:00Z"}))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": Workload::api_version(&()), "kind": Workload::kind(&()),
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
                "spec": {"replicas": replicas, "containers": [{"name": "app", "image": "busybox"}]},
                "status": {"instances": instances}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn picks_this_nodes_instances_only() {
        let a = workload(
            "shop",
            "web",
            3,
            &[("web-0", "n1"), ("web-1", "n2"), ("web-2", "n1")],
        );
        let b = workload("school", "web", 1, &[("web-0", "n1")]);
        let d = desired_on("n1", [&a, &b]);
        let names: Vec<(&str, &str)> = d
            .values()
            .map(|i| {
                (
                    i.placement.namespace.as_str(),
                    i.placement.instance.as_str(),
                )
            })
            .collect();
        assert_eq!(names.len(), 3);
        assert!(names.contains(&("shop", "web-0")));
        assert!(names.contains(&("shop", "web-2")));
        assert!(names.contains(&("school", "web-0")));
        assert!(desired_on("n3", [&a, &b]).is_empty());
    }

    #[test]
    fn scaled_down_instances_stop_before_the_status_says_so() {
        let a = workload("shop", "web", 1, &[("web-0", "n1"), ("web-1", "n1")]);
        let d = desired_on("n1", [&a]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.values().next().unwrap().placement.instance, "web-0");
        assert!(!is_desired_name("web", 3, "webby-0"));
        assert!(!is_desired_name("web", 3, "web-x"));
        assert!(is_desired_name("web-a", 3, "web-a-2"));
    }

    #[test]
    fn ids_are_stable_distinct_and_short() {
        let t = Time(Timestamp::from_second(1_800_000_000).unwrap());
        let t2 = Time(Timestamp::from_second(1_800_000_001).unwrap());
        let a = instance_id("shop", "u1", "web-0", &t);
        assert_eq!(a, instance_id("shop", "u1", "web-0", &t));
        assert_ne!(a, instance_id("school", "u1", "web-0", &t));
        assert_ne!(a, instance_id("shop", "u1", "web-0", &t2));
        let long = instance_id("ns", "u", &"x".repeat(200), &t);
        assert!(long.len() <= 33, "{long}");
        let c = container_id(&long, "a-very-long-container-name!");
        assert!(c.len() <= 46, "{c}");
        crate::ids::validate_id(&c).unwrap();
    }
}

//! The Workload tools: deploy (server-side apply), list, get (with instances, conditions and
//! Events), scale (through the scale subresource) and delete.

use super::args::{DeployArgs, ListArgs, ScaleArgs, WorkloadRef, namespace_or_default};
use super::error::{ToolError, ToolResult};
use super::manager::FIELD_MANAGER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use univrs_api::Workload;
use univrs_api::resources::workload::{CONDITION_AVAILABLE, CONDITION_SCHEDULED};
use univrs_io::apply::Apply;

/// The most replicas a Workload may have (the CRD's own limit).
const MAX_REPLICAS: i32 = 1000;
/// How many of a Workload's most recent Events `workload_get` shows.
const RECENT_EVENTS: usize = 10;
/// Where to look when a workload is not found.
const LIST_HINT: &str = "workload_list shows what exists";

fn check_replicas(replicas: i32) -> Result<(), ToolError> {
    if replicas < 0 {
        return Err(ToolError::Invalid(format!(
            "replicas must be ≥ 0 (got {replicas}); 0 stops every instance and keeps the Workload"
        )));
    }
    if replicas > MAX_REPLICAS {
        return Err(ToolError::Invalid(format!(
            "replicas must be at most {MAX_REPLICAS} (got {replicas})"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ToolError> {
    if name.trim().is_empty() {
        return Err(ToolError::Invalid(
            "name is required: the Workload's name, such as \"web\"".into(),
        ));
    }
    Ok(())
}

/// The status of one condition type, if the workload has it.
fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The Workload object `args` describe, for server-side apply. `existing` is the object as it
/// is now, if it exists: its replica count is kept when `args` gives none, and its single
/// container's name is reused so an update never adds a second container.
fn desired(
    args: &DeployArgs,
    ns: &str,
    existing: Option<&Workload>,
) -> Result<Apply<Workload>, ToolError> {
    check_name(&args.name)?;
    if let Some(r) = args.replicas {
        check_replicas(r)?;
    }
    if let Some(m) = args.min_reputation
        && !(0.0..=1.0).contains(&m)
    {
        return Err(ToolError::Invalid(format!(
            "minReputation must be between 0 and 1 (got {m})"
        )));
    }
    let containers = match &args.containers {
        Some(list) => full_containers(args, list)?,
        None => vec![single_container(args, existing)?],
    };
    let replicas = args
        .replicas
        .or_else(|| existing.map(|w| w.spec.replicas))
        .unwrap_or(1);
    let mut spec = json!({"containers": containers, "replicas": replicas});
    let s = spec.as_object_mut().expect("an object");
    if !args.node_selector.is_empty() {
        s.insert("nodeSelector".into(), json!(args.node_selector));
    }
    if let Some(m) = args.min_reputation {
        s.insert("minReputation".into(), json!(m));
    }
    if let Some(p) = args.restart_policy {
        s.insert("restartPolicy".into(), json!(p));
    }
    if let Some(c) = &args.credit {
        s.insert("credit".into(), json!(c));
    }
    let mut apply = Apply::<Workload>::new(&args.name).meta("namespace", ns);
    if !args.labels.is_empty() {
        apply = apply.meta("labels", json!(args.labels));
    }
    Ok(apply.spec(spec))
}

/// The fields a container may have (its schema's properties).
fn container_fields() -> Vec<String> {
    let schema = schemars::schema_for!(univrs_api::resources::workload::Container);
    schema
        .as_object()
        .and_then(|o| o.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// `containers` as given, each checked against the container schema (an unknown field is an
/// error, not silently pruned by the API server) and `resources: {cpu, memory}` read as
/// requests.
fn full_containers(args: &DeployArgs, list: &[Value]) -> Result<Vec<Value>, ToolError> {
    if args.image.is_some()
        || args.container.is_some()
        || !args.command.is_empty()
        || !args.args.is_empty()
        || !args.env.is_empty()
        || !args.ports.is_empty()
        || args.resources.is_some()
    {
        return Err(ToolError::Invalid(
            "give either containers or image (with container, command, args, env, ports and resources for it), not both".into(),
        ));
    }
    if list.is_empty() {
        return Err(ToolError::Invalid(
            "containers must hold at least one container".into(),
        ));
    }
    let known = container_fields();
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let Some(obj) = c.as_object() else {
            return Err(ToolError::Invalid(format!(
                "containers[{i}] must be an object such as {{\"name\": \"web\", \"image\": \"…\"}}"
            )));
        };
        let mut obj = obj.clone();
        if let Some(unknown) = obj.keys().find(|k| !known.contains(k)) {
            return Err(ToolError::Invalid(format!(
                "containers[{i}]: unknown field {unknown:?}; a container has {}",
                known.join(", ")
            )));
        }
        // The shorthand `{cpu, memory}` means requests.
        if let Some(r) = obj.get_mut("resources").and_then(Value::as_object_mut)
            && !r.contains_key("requests")
            && !r.contains_key("limits")
            && !r.is_empty()
        {
            let requests = std::mem::take(r);
            r.insert("requests".into(), Value::Object(requests));
        }
        let c = Value::Object(obj);
        serde_json::from_value::<univrs_api::resources::workload::Container>(c.clone())
            .map_err(|e| ToolError::Invalid(format!("containers[{i}]: {e}")))?;
        out.push(c);
    }
    Ok(out)
}

/// The one container `image` and its companions describe.
fn single_container(args: &DeployArgs, existing: Option<&Workload>) -> Result<Value, ToolError> {
    let image = args
        .image
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            ToolError::Invalid(
                "image or containers is required: the OCI image to run, such as \"registry.example:5000/demo/busybox:1.36\", or the list of containers"
                    .into(),
            )
        })?;
    let container_name = match (&args.container, existing) {
        (Some(c), _) => c.clone(),
        (None, Some(w)) if w.spec.containers.len() == 1 => w.spec.containers[0].name.clone(),
        _ => "main".to_string(),
    };
    let mut container = json!({"name": container_name, "image": image});
    let c = container.as_object_mut().expect("an object");
    if !args.command.is_empty() {
        c.insert("command".into(), json!(args.command));
    }
    if !args.args.is_empty() {
        c.insert("args".into(), json!(args.args));
    }
    if !args.env.is_empty() {
        c.insert("env".into(), json!(args.env));
    }
    if !args.ports.is_empty() {
        c.insert("ports".into(), json!(args.ports));
    }
    if let Some(r) = &args.resources {
        c.insert("resources".into(), json!(r));
    }
    Ok(container)
}

/// `workload_deploy`: creates or updates the Workload with server-side apply.
pub async fn deploy(client: &Client, args: DeployArgs) -> ToolResult {
    let ns = namespace_or_default(&args.namespace).to_string();
    check_name(&args.name)?;
    let id = format!("{ns}/{}", args.name);
    let api: Api<Workload> = Api::namespaced(client.clone(), &ns);
    let existing = api
        .get_opt(&args.name)
        .await
        .map_err(ToolError::api(format!("read workload {id}")))?;
    let body = desired(&args, &ns, existing.as_ref())?;
    // Forced: the caller states the desired spec, as `kubectl apply --server-side
    // --force-conflicts` does; fields other managers own and this call leaves out stay.
    let applied = body
        .apply(&api, FIELD_MANAGER)
        .await
        .map_err(ToolError::api(format!("apply workload {id}")))?;
    Ok(json!({
        "result": if existing.is_some() { "updated" } else { "created" },
        "workload": summary(&applied),
        "generation": applied.metadata.generation,
        "next": format!("workload_get name={} namespace={ns} follows its placement and readiness", args.name),
    }))
}

/// One line of `workload_list`.
fn summary(w: &Workload) -> Value {
    let status = w.status.clone().unwrap_or_default();
    let cond = |t| condition(&status.conditions, t);
    json!({
        "name": w.name_any(),
        "namespace": w.namespace(),
        "labels": w.labels(),
        "image": w.spec.containers.first().map(|c| c.image.clone()),
        "replicas": w.spec.replicas,
        "placedReplicas": status.replicas.unwrap_or(0),
        "readyReplicas": status.ready_replicas.unwrap_or(0),
        "available": cond(CONDITION_AVAILABLE).map(|c| c.status.clone()),
        "scheduled": cond(CONDITION_SCHEDULED).map(|c| format!("{} ({})", c.status, c.reason)),
        "creditSpent": status.credit_spent,
        "created": w.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
    })
}

/// `workload_list`: the Workloads of one namespace or of all.
pub async fn list(client: &Client, args: ListArgs) -> ToolResult {
    let api: Api<Workload> = match args.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(ToolError::api("list workloads"))?;
    let items: Vec<Value> = list.items.iter().map(summary).collect();
    Ok(json!({"count": items.len(), "workloads": items}))
}

/// `workload_get`: spec, status, instances, conditions and recent Events of one Workload.
pub async fn get(client: &Client, args: WorkloadRef) -> ToolResult {
    check_name(&args.name)?;
    let ns = namespace_or_default(&args.namespace);
    let id = format!("{ns}/{}", args.name);
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let w = api.get(&args.name).await.map_err(ToolError::from_kube(
        format!("get workload {id}"),
        format!("workload {id}"),
        LIST_HINT,
    ))?;
    let status = w.status.clone().unwrap_or_default();
    let events = recent_events(client, &w).await?;
    Ok(json!({
        "workload": summary(&w),
        "spec": w.spec,
        "observedGeneration": status.observed_generation,
        "generation": w.metadata.generation,
        "conditions": status.conditions,
        "instances": status.instances,
        "events": events,
    }))
}

/// The most recent Events about `w`, newest first.
async fn recent_events(client: &Client, w: &Workload) -> Result<Vec<Value>, ToolError> {
    let (Some(ns), Some(uid)) = (w.namespace(), w.uid()) else {
        return Ok(Vec::new());
    };
    let events = crate::events::about(client, Some(&ns), &uid, RECENT_EVENTS)
        .await
        .map_err(ToolError::api(format!(
            "list the Events of workload {ns}/{}",
            w.name_any()
        )))?;
    Ok(events
        .iter()
        .map(|e| {
            json!({
                "type": e.type_,
                "reason": e.reason,
                "message": e.message,
                "count": crate::events::count(e),
                "lastSeen": crate::events::last_seen(e).map(|t| t.to_string()),
            })
        })
        .collect())
}

/// `workload_scale`: sets the replica count through the scale subresource.
pub async fn scale(client: &Client, args: ScaleArgs) -> ToolResult {
    check_name(&args.name)?;
    check_replicas(args.replicas)?;
    let ns = namespace_or_default(&args.namespace);
    let id = format!("{ns}/{}", args.name);
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let before = api
        .get_scale(&args.name)
        .await
        .map_err(ToolError::from_kube(
            format!("read the scale of workload {id}"),
            format!("workload {id}"),
            LIST_HINT,
        ))?;
    let patch = json!({"spec": {"replicas": args.replicas}});
    let after = api
        .patch_scale(
            &args.name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(ToolError::from_kube(
            format!("scale workload {id}"),
            format!("workload {id}"),
            LIST_HINT,
        ))?;
    Ok(json!({
        "workload": id,
        "previousReplicas": before.spec.and_then(|s| s.replicas),
        "replicas": after.spec.and_then(|s| s.replicas),
        "placedReplicas": after.status.map(|s| s.replicas),
        "next": format!("workload_get name={} namespace={ns} shows the instances converge", args.name),
    }))
}

/// `workload_delete`: deletes the Workload (its instances stop on their nodes).
pub async fn delete(client: &Client, args: WorkloadRef) -> ToolResult {
    check_name(&args.name)?;
    let ns = namespace_or_default(&args.namespace);
    let id = format!("{ns}/{}", args.name);
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    api.delete(&args.name, &DeleteParams::default())
        .await
        .map_err(ToolError::from_kube(
            format!("delete workload {id}"),
            format!("workload {id}"),
            LIST_HINT,
        ))?;
    Ok(json!({"workload": id, "result": "deleted"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> DeployArgs {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn bad_arguments_say_what_to_fix() {
        let e = desired(
            &args(json!({"name": "web", "image": "x", "replicas": -1})),
            "default",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("replicas must be ≥ 0 (got -1)"),
            "{e}"
        );
        let e = desired(&args(json!({"name": "web"})), "default", None).unwrap_err();
        assert!(
            e.to_string().starts_with("image or containers is required"),
            "{e}"
        );
        let e = desired(
            &args(json!({"name": "web", "image": "x", "minReputation": 2.0})),
            "default",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("minReputation must be between 0 and 1"),
            "{e}"
        );
        let typo =
            serde_json::from_value::<DeployArgs>(json!({"name": "w", "image": "x", "replica": 2}));
        assert!(
            typo.unwrap_err()
                .to_string()
                .contains("unknown field `replica`")
        );
    }

    #[test]
    fn an_update_keeps_replicas_and_the_container_name() {
        let existing: Workload = serde_json::from_value(json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 4, "containers": [{"name": "web", "image": "old"}]}
        }))
        .unwrap();
        let body = desired(
            &args(json!({"name": "web", "image": "new", "ports": [{"containerPort": 80, "hostPort": 8080}]})),
            "default",
            Some(&existing),
        )
        .unwrap();
        assert_eq!(body.body()["spec"]["replicas"], 4);
        assert_eq!(body.body()["spec"]["containers"][0]["name"], "web");
        assert_eq!(body.body()["spec"]["containers"][0]["image"], "new");
        assert_eq!(
            body.body()["spec"]["containers"][0]["ports"][0]["hostPort"],
            8080
        );
        let fresh = desired(
            &args(json!({"name": "web", "image": "new"})),
            "default",
            None,
        )
        .unwrap();
        assert_eq!(fresh.body()["spec"]["replicas"], 1);
        assert_eq!(fresh.body()["spec"]["containers"][0]["name"], "main");
    }

    /// The call the seed document shows: the container list, its `{cpu, memory}` resources
    /// shorthand, and labels.
    #[test]
    fn the_full_container_list_and_labels_are_taken() {
        let body = desired(
            &args(json!({
                "name": "community-portal",
                "containers": [{"name": "web", "image": "community/portal:latest",
                    "ports": [{"containerPort": 80, "hostPort": 8080}],
                    "resources": {"cpu": "500m", "memory": "256Mi"}},
                    {"name": "sidecar", "image": "x", "readinessProbe": {"tcpSocket": {"port": 80}}}],
                "replicas": 3,
                "labels": {"app": "portal", "tier": "frontend"}
            })),
            "default",
            None,
        )
        .unwrap();
        let b = body.body();
        assert_eq!(b["metadata"]["labels"]["tier"], "frontend");
        assert_eq!(
            b["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "500m"
        );
        assert_eq!(
            b["spec"]["containers"][1]["readinessProbe"]["tcpSocket"]["port"],
            80
        );
        assert_eq!(b["spec"]["replicas"], 3);
        let err = |v: Value| desired(&args(v), "default", None).unwrap_err().to_string();
        let e =
            err(json!({"name": "w", "containers": [{"name": "a", "image": "x", "imagee": "y"}]}));
        assert!(
            e.starts_with("containers[0]: unknown field \"imagee\""),
            "{e}"
        );
        let e =
            err(json!({"name": "w", "image": "x", "containers": [{"name": "a", "image": "x"}]}));
        assert!(e.contains("not both"), "{e}");
        let e = err(json!({"name": "w", "containers": []}));
        assert!(e.contains("at least one"), "{e}");
        let e = err(json!({"name": "w", "containers": [{"name": "a"}]}));
        assert!(e.starts_with("containers[0]: missing field `image`"), "{e}");
    }
}

//! The CRDs in `crds/` match the Rust types, and each is a structural schema that documents
//! every field and follows the Kubernetes conventions the project promises.

use serde_json::Value;
use std::path::PathBuf;
use univrs_api::crds;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn crds_directory_matches_the_types() {
    let mut stale = Vec::new();
    for crd in crds::all() {
        let path = crds_dir().join(crds::file_name(&crd));
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != crds::to_yaml(&crd).unwrap() {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ drifted from the Rust types: {stale:?}\nrun: cargo run -p univrs -- crds --out crds/"
    );
    let files = std::fs::read_dir(crds_dir()).unwrap().count();
    assert_eq!(
        files,
        crds::all().len(),
        "crds/ holds a file that no type generates"
    );
}

/// Walks a schema node, collecting violations of the structural-schema rules and of our own
/// documentation rule.
fn check(node: &Value, path: &str, in_k8s_type: bool, problems: &mut Vec<String>) {
    let obj = node.as_object().expect("schema node is an object");
    for forbidden in ["$ref", "oneOf", "allOf", "not", "definitions", "$defs"] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: has {forbidden}"));
        }
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if obj.contains_key("anyOf") && !int_or_string {
        problems.push(format!("{path}: anyOf outside int-or-string"));
    }
    if !obj.contains_key("type") && !int_or_string && !preserve {
        problems.push(format!("{path}: no type"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        if obj.get("type").and_then(Value::as_str) != Some("object") {
            problems.push(format!("{path}: properties on a non-object"));
        }
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            // metadata is described by Kubernetes itself.
            if path.is_empty() && (name == "metadata" || name == "apiVersion" || name == "kind") {
                continue;
            }
            let is_k8s = in_k8s_type || name == "conditions";
            if !is_k8s
                && child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                problems.push(format!(
                    "{child_path}: no description (kubectl explain shows nothing)"
                ));
            }
            check(child, &child_path, is_k8s, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            let keys = obj["x-kubernetes-list-map-keys"]
                .as_array()
                .expect("map keys");
            let required: Vec<&str> = items
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in keys.iter().filter_map(Value::as_str) {
                let has_default = items["properties"][key].get("default").is_some();
                if !required.contains(&key) && !has_default {
                    problems.push(format!(
                        "{path}: list-map key {key} is neither required nor defaulted"
                    ));
                }
            }
        }
        check(items, &format!("{path}[]"), in_k8s_type, problems);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check(extra, &format!("{path}{{}}"), in_k8s_type, problems);
    }
}

#[test]
fn every_crd_is_structural_and_documented() {
    for crd in crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        let version = &crd.spec.versions[0];
        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut problems = Vec::new();
        check(&schema, "", false, &mut problems);
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    }
}

#[test]
fn every_crd_follows_the_conventions() {
    for crd in crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        assert_eq!(crd.spec.group, "univrs.io");
        let names = &crd.spec.names;
        assert!(
            names
                .categories
                .as_ref()
                .unwrap()
                .contains(&"univrs".to_string()),
            "{name}"
        );
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        let sub = version.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some(), "{name}: status subresource");
        let cols = version.additional_printer_columns.as_ref().unwrap();
        assert!(
            cols.iter().any(|c| c.name == "Age" && c.type_ == "date"),
            "{name}: Age column"
        );
        let schema = serde_json::to_value(&version.schema).unwrap();
        let conditions =
            &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{name}: conditions list-map"
        );
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"][0], "type",
            "{name}"
        );
    }
}

#[test]
fn workload_has_the_scale_subresource() {
    let crd = crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "Workload")
        .unwrap();
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .unwrap()
        .scale
        .as_ref()
        .unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(crd.spec.scope, "Namespaced");
    for kind in ["Node", "CreditLine", "Vouch"] {
        let crd = crds::all()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        assert_eq!(crd.spec.scope, "Cluster", "{kind}");
    }
}

#[test]
fn money_is_never_a_float() {
    // Every field whose name speaks of credit, balance, limit, price or budget is an integer.
    fn walk(node: &Value, path: &str, bad: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let lower = name.to_lowercase();
                let money = [
                    "credit", "balance", "limit", "price", "budget", "spent", "amount", "hour",
                ]
                .iter()
                .any(|w| lower.contains(w));
                if money && child.get("type").and_then(Value::as_str) == Some("number") {
                    bad.push(format!("{path}.{name}"));
                }
                walk(child, &format!("{path}.{name}"), bad);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, path, bad);
        }
    }
    let mut bad = Vec::new();
    for crd in crds::all() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&schema["openAPIV3Schema"], &crd.spec.names.kind, &mut bad);
    }
    assert!(bad.is_empty(), "float money fields: {bad:?}");
}

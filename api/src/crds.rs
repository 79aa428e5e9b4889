//! The CustomResourceDefinitions generated from the Rust types.
//!
//! `crds/` in the repository holds these as YAML files (one per kind, named `<plural>.yaml`);
//! a test fails when the files drift from the types, and `univrs crds` prints them.

use crate::resources::{creditline::CreditLine, node::Node, vouch::Vouch, workload::Workload};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every Univrs CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Workload::crd(),
        Node::crd(),
        CreditLine::crd(),
        Vouch::crd(),
    ]
}

/// The file name a CRD is kept under in `crds/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as YAML, with the header that marks it as generated.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "# Generated from the Rust types in api/ by `univrs crds --out crds/`. Do not edit.\n{}",
        serde_yaml::to_string(crd)?
    ))
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let docs: Result<Vec<String>, _> = all().iter().map(to_yaml).collect();
    Ok(docs?.join("---\n"))
}

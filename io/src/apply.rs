//! Server-side apply with bodies built from the resource types.
//!
//! Every write Univrs makes names exactly the fields its writer owns, under that writer's own
//! field manager. The body's `apiVersion` and `kind` come from `K::api_version()` and
//! `K::kind()`, so a new API version is one change in `api`, never a hunt for string literals.

use kube::api::{Api, Patch, PatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt::Debug;
use std::marker::PhantomData;

/// A server-side-apply body for one object of kind `K`.
#[derive(Debug, Clone)]
pub struct Apply<K> {
    body: Value,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource<DynamicType = ()>> Apply<K> {
    /// A body naming the object `name` (cluster-scoped, or in the namespace of the `Api` used).
    pub fn new(name: &str) -> Self {
        Self {
            body: serde_json::json!({
                "apiVersion": K::api_version(&()),
                "kind": K::kind(&()),
                "metadata": {"name": name},
            }),
            kind: PhantomData,
        }
    }

    fn metadata(&mut self) -> &mut Map<String, Value> {
        match &mut self.body["metadata"] {
            Value::Object(m) => m,
            _ => unreachable!("new() makes metadata an object"),
        }
    }

    /// Makes the write succeed only while the object is at `resource_version` (409 otherwise),
    /// when one is given. A null resourceVersion would read as 0 and be refused, so none is
    /// sent without one.
    pub fn resource_version(mut self, resource_version: Option<String>) -> Self {
        if let Some(rv) = resource_version {
            self.metadata().insert("resourceVersion".into(), rv.into());
        }
        self
    }

    /// Sets a field of `metadata` (labels, annotations, finalizers, …).
    pub fn meta(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.metadata().insert(field.into(), value.into());
        self
    }

    /// Sets a top-level field (`spec`, `status`, or a kind's own such as a Lease's `spec`).
    pub fn field(mut self, field: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(m) = &mut self.body {
            m.insert(field.into(), value.into());
        }
        self
    }

    /// Sets `status`.
    pub fn status(self, status: impl Into<Value>) -> Self {
        self.field("status", status)
    }

    /// Sets `spec`.
    pub fn spec(self, spec: impl Into<Value>) -> Self {
        self.field("spec", spec)
    }

    /// The body as it is sent.
    pub fn body(&self) -> &Value {
        &self.body
    }

    fn name(&self) -> String {
        self.body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl<K> Apply<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    /// Applies the object (not its status) as `manager`, taking over conflicting fields: each
    /// field has one writer, so a conflict is a stale claim, never a second owner.
    pub async fn apply(&self, api: &Api<K>, manager: &str) -> Result<K, kube::Error> {
        let params = PatchParams::apply(manager).force();
        api.patch(&self.name(), &params, &Patch::Apply(&self.body))
            .await
    }

    /// Applies the status subresource as `manager` (forced, as [`Apply::apply`]).
    pub async fn apply_status(&self, api: &Api<K>, manager: &str) -> Result<K, kube::Error> {
        let params = PatchParams::apply(manager).force();
        api.patch_status(&self.name(), &params, &Patch::Apply(&self.body))
            .await
    }
}

/// An `ObjectReference` to `K` named `name` (Events point at objects with one).
pub fn reference<K: Resource<DynamicType = ()>>(
    name: &str,
    namespace: Option<&str>,
    uid: Option<&str>,
) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        uid: uid.map(Into::into),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn the_body_names_the_type_and_only_the_fields_given() {
        let body = Apply::<Lease>::new("univrs-node-a")
            .resource_version(None)
            .meta("labels", serde_json::json!({"a": "b"}))
            .spec(serde_json::json!({"holderIdentity": "a"}));
        assert_eq!(
            body.body(),
            &serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "univrs-node-a", "labels": {"a": "b"}},
                "spec": {"holderIdentity": "a"},
            })
        );
        let guarded = Apply::<ConfigMap>::new("x")
            .resource_version(Some("42".into()))
            .status(serde_json::json!({}));
        assert_eq!(guarded.body()["apiVersion"], "v1");
        assert_eq!(guarded.body()["metadata"]["resourceVersion"], "42");
        assert_eq!(guarded.name(), "x");
    }

    #[test]
    fn a_reference_carries_the_types_version() {
        let r = reference::<Lease>("l", Some("ns"), Some("u"));
        assert_eq!(r.api_version.as_deref(), Some("coordination.k8s.io/v1"));
        assert_eq!(r.kind.as_deref(), Some("Lease"));
        assert_eq!(r.namespace.as_deref(), Some("ns"));
    }
}

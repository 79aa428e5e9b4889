//! The controller's status writes: server-side apply with the field manager
//! `univrs-controller`, so each writer owns exactly the fields it sets (the agents own theirs).

use crate::state::context::FIELD_MANAGER;

/// Writes `status` with server-side apply as the controller. With `resource_version`, the write
/// only succeeds if the object is still at that version (409 otherwise).
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    resource_version: Option<String>,
    status: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "status": status,
    });
    // Only when given: a null resourceVersion reads as 0 and is refused.
    if let Some(rv) = resource_version {
        body["metadata"]["resourceVersion"] = rv.into();
    }
    let params = kube::api::PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &kube::api::Patch::Apply(&body))
        .await
}


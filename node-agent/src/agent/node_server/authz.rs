//! What the caller may do: the API server's RBAC (or whatever authorizer it runs) answers a
//! SubjectAccessReview for `get workloads/log` on the Workload, as the kubelet asks for
//! `nodes/log`; this node decides nothing itself.

use super::authn::Caller;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use univrs_api::system::WORKLOAD_LOG_SUBRESOURCE;

/// Whether `caller` may read the logs of Workload `namespace/name`; Err(reason) when not.
pub async fn may_read_logs(
    client: &kube::Client,
    caller: &Caller,
    namespace: &str,
    name: &str,
) -> Result<Result<(), String>, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            uid: caller.uid.clone(),
            groups: Some(caller.groups.clone()),
            extra: (!caller.extra.is_empty()).then(|| caller.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(univrs_api::GROUP.to_string()),
                version: Some(univrs_api::VERSION.to_string()),
                resource: Some("workloads".into()),
                subresource: Some(WORKLOAD_LOG_SUBRESOURCE.into()),
                verb: Some("get".into()),
                namespace: Some(namespace.to_string()),
                name: Some(name.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let status = answer.status.unwrap_or_default();
    if status.allowed {
        return Ok(Ok(()));
    }
    let why = status.reason.filter(|r| !r.is_empty());
    Ok(Err(format!(
        "user {:?} may not get workloads/{WORKLOAD_LOG_SUBRESOURCE} in namespace {namespace:?}{}",
        caller.user,
        why.map(|r| format!(": {r}")).unwrap_or_default()
    )))
}

//! The join's approver: reads each node certificate request (signer
//! `kubernetes.io/kube-apiserver-client`), decides with `core::approval`, and on approval binds
//! the node's name to the node role (ClusterRoleBinding `univrs-node-<name>`, annotated with the
//! PeerId the name is now bound to) before it writes the Approved condition, so the node's
//! first request with its new certificate already has its rights. kube-controller-manager
//! signs what is approved; removing the binding (`univrs node remove`) revokes the rights.

use crate::core::approval::{self, Request, Verdict};
use crate::core::notice::Notice;
use crate::error::Error;
use crate::state::context::{Context, FIELD_MANAGER};
use crate::state::events;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use univrs_api::bootstrap::NODE_SIGNER;
use univrs_api::system::{PEER_ID_ANNOTATION, SYSTEM_NAMESPACE, node_binding, node_user};

/// Reconciles one certificate request: decide once, then leave it to the signer.
pub async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let decided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Approved" || c.type_ == "Denied")
        });
    if decided || csr.spec.signer_name != NODE_SIGNER {
        return Ok(Action::await_change());
    }
    ctx.synced().await;
    let pem = &csr.spec.request.0;
    let bound = match approval::requested_node(pem) {
        Some(node) => bound_peer(&ctx, &node).await?,
        None => None,
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let groups = csr.spec.groups.clone().unwrap_or_default();
    let requester = csr.spec.username.clone().unwrap_or_default();
    let verdict = approval::decide(
        &Request {
            signer: &csr.spec.signer_name,
            usages: &usages,
            requester: &requester,
            requester_groups: &groups,
            pem,
        },
        bound.as_deref(),
    );
    let notice = match verdict {
        Verdict::NotOurs => return Ok(Action::await_change()),
        Verdict::Approve { node, peer_id } => {
            bind(&ctx, &node, &peer_id).await?;
            let note = format!(
                "node {node} (peer {peer_id}) may act as {}",
                node_user(&node)
            );
            decide(&ctx, &csr, "Approved", "UnivrsNodeApproved", &note).await?;
            Notice::normal("Approved", note)
        }
        Verdict::Deny(why) => {
            decide(&ctx, &csr, "Denied", "UnivrsNodeDenied", &why).await?;
            Notice::warning("Denied", why)
        }
    };
    tracing::info!(csr = %csr.name_any(), requester = %requester, reason = notice.reason, note = %notice.note, "certificate request decided");
    events::announce(&ctx, &csr.object_ref(&()), &[notice]).await;
    Ok(Action::await_change())
}

/// The PeerId node name `node` is bound to: its Node's key, else its binding's annotation.
async fn bound_peer(ctx: &Context, node: &str) -> Result<Option<String>, Error> {
    if let Some(n) = ctx
        .nodes
        .state()
        .iter()
        .find(|n| n.name_any() == node && !n.spec.peer_id.is_empty())
    {
        return Ok(Some(n.spec.peer_id.clone()));
    }
    let api: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
    Ok(api
        .get_opt(&node_binding(node))
        .await?
        .and_then(|b| b.annotations().get(PEER_ID_ANNOTATION).cloned()))
}

/// Grants node `node` (key `peer_id`) the node role: the ClusterRole, and the Role of the same
/// name in univrs-system for its Lease. The RoleBinding comes first: the ClusterRoleBinding,
/// annotated with the PeerId, is what marks the name as bound.
async fn bind(ctx: &Context, node: &str, peer_id: &str) -> Result<(), Error> {
    let name = node_binding(node);
    let role = ctx.settings.node_cluster_role.clone();
    let meta = |namespace: Option<&str>| ObjectMeta {
        name: Some(name.clone()),
        namespace: namespace.map(str::to_string),
        annotations: Some([(PEER_ID_ANNOTATION.to_string(), peer_id.to_string())].into()),
        labels: Some(
            [(
                "app.kubernetes.io/managed-by".to_string(),
                "univrs-controller".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    let role_ref = |kind: &str| RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: role.clone(),
    };
    let subjects = Some(vec![Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "User".into(),
        name: node_user(node),
        namespace: None,
    }]);
    // k8s-openapi writes apiVersion and kind itself, as server-side apply needs.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let lease = RoleBinding {
        metadata: meta(Some(SYSTEM_NAMESPACE)),
        role_ref: role_ref("Role"),
        subjects: subjects.clone(),
    };
    Api::<RoleBinding>::namespaced(ctx.client.clone(), SYSTEM_NAMESPACE)
        .patch(&name, &params, &Patch::Apply(&lease))
        .await?;
    let cluster = ClusterRoleBinding {
        metadata: meta(None),
        role_ref: role_ref("ClusterRole"),
        subjects,
    };
    Api::<ClusterRoleBinding>::all(ctx.client.clone())
        .patch(&name, &params, &Patch::Apply(&cluster))
        .await?;
    Ok(())
}

/// Writes the Approved or Denied condition through the approval subresource.
async fn decide(
    ctx: &Context,
    csr: &CertificateSigningRequest,
    type_: &str,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let condition = CertificateSigningRequestCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(Timestamp::now())),
        ..Default::default()
    };
    let patch = serde_json::json!({ "status": { "conditions": [condition] } });
    Api::<CertificateSigningRequest>::all(ctx.client.clone())
        .patch_approval(
            &csr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

//! The trust tools: each node's reputation with the vouches behind it, and vouching for a node
//! with the server's own identity (`--identity`), signed as `api::resources::vouch` specifies.

use super::args::{ReputationArgs, VouchArgs};
use super::error::{ToolError, ToolResult};
use super::nodes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use univrs_api::identity::{NodeIdentity, PublicIdentity};
use univrs_api::resources::vouch::{VouchSpec, weight_milli};
use univrs_api::{Node, Vouch};

/// How long a vouch holds when the call does not say.
const DEFAULT_VOUCH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// One vouch as `reputation` shows it.
fn describe(v: &Vouch) -> Value {
    let status = v.status.clone().unwrap_or_default();
    json!({
        "name": v.name_any(),
        "voucher": v.spec.voucher,
        "voucherNode": status.voucher_node,
        "subject": v.spec.subject,
        "subjectNode": status.subject_node,
        "weight": v.spec.weight,
        "effectiveWeight": status.effective_weight,
        "verified": status.verified,
        "reason": status.reason,
        "statement": v.spec.reason,
        "expiresAt": v.spec.expires_at.0.to_string(),
    })
}

/// `reputation`: each node's reputation and service record, the vouches it received and gave.
pub async fn reputation(client: &Client, args: ReputationArgs) -> ToolResult {
    let all_nodes = nodes::all(client).await?;
    let vouches = Api::<Vouch>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(ToolError::api("list vouches"))?
        .items;
    let wanted = args.node.as_deref().filter(|n| !n.is_empty());
    let selected: Vec<&Node> = all_nodes
        .iter()
        .filter(|n| wanted.is_none_or(|w| n.name_any() == w))
        .collect();
    if let Some(w) = wanted
        && selected.is_empty()
    {
        return Err(ToolError::NotFound {
            what: format!("node {w}"),
            hint: "cluster_nodes lists the nodes",
        });
    }
    let items: Vec<Value> = selected
        .iter()
        .map(|n| {
            let status = n.status.clone().unwrap_or_default();
            let did = &n.spec.did;
            json!({
                "node": n.name_any(),
                "did": did,
                "reputation": status.reputation,
                "serviceRecord": status.service_record,
                "vouchesReceived": vouches.iter().filter(|v| &v.spec.subject == did).map(describe).collect::<Vec<_>>(),
                "vouchesGiven": vouches.iter().filter(|v| &v.spec.voucher == did).map(describe).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({"nodes": items}))
}

/// The subject's identity and node name, from a node name or a DID.
fn resolve_subject(
    subject: &str,
    nodes: &[Node],
) -> Result<(PublicIdentity, Option<String>), ToolError> {
    let subject = subject.trim();
    if subject.starts_with("did:") {
        let id = PublicIdentity::from_did(subject).map_err(|e| {
            ToolError::Invalid(format!(
                "subject {subject:?} is not an Ed25519 did:key: {e}"
            ))
        })?;
        let node = nodes
            .iter()
            .find(|n| n.spec.did == subject)
            .map(ResourceExt::name_any);
        return Ok((id, node));
    }
    let node = nodes
        .iter()
        .find(|n| n.name_any() == subject)
        .ok_or_else(|| ToolError::NotFound {
            what: format!("node {subject}"),
            hint: "cluster_nodes lists the nodes; a subject may also be a DID (did:key:z6Mk…)",
        })?;
    let id = PublicIdentity::from_did(&node.spec.did).map_err(|e| {
        ToolError::Invalid(format!(
            "node {subject} has an unusable DID {:?}: {e}",
            node.spec.did
        ))
    })?;
    Ok((id, Some(subject.to_string())))
}

/// `vouch_create`: signs a vouch for `subject` with `identity` and creates the Vouch object.
pub async fn vouch(
    client: &Client,
    identity: Option<&NodeIdentity>,
    args: VouchArgs,
) -> ToolResult {
    let identity = identity.ok_or_else(|| {
        ToolError::Unavailable(
            "vouch_create signs with the server's identity, and this server was started without one: \
             restart it with --identity FILE (a key from `univrs identity generate`, ideally a node's own)"
                .into(),
        )
    })?;
    weight_milli(args.weight).map_err(|_| {
        ToolError::Invalid(format!(
            "weight must be between 0 and 1 (got {})",
            args.weight
        ))
    })?;
    let reason = args.reason.unwrap_or_default();
    if reason.chars().count() > 256 {
        return Err(ToolError::Invalid(format!(
            "reason must be at most 256 characters (got {})",
            reason.chars().count()
        )));
    }
    let ttl = match args.expires_in.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => humantime::parse_duration(s).map_err(|e| {
            ToolError::Invalid(format!(
                "expiresIn {s:?} is not a duration ({e}); use such as 720h or 30days"
            ))
        })?,
        None => DEFAULT_VOUCH_TTL,
    };
    if ttl.is_zero() {
        return Err(ToolError::Invalid(
            "expiresIn must be longer than zero".into(),
        ));
    }
    let all_nodes = nodes::all(client).await?;
    let (subject, subject_node) = resolve_subject(&args.subject, &all_nodes)?;
    let me = identity.public();
    if subject == me {
        return Err(ToolError::Invalid(
            "an identity cannot vouch for itself: the subject is this server's own identity".into(),
        ));
    }
    let expires = SignedDuration::try_from(ttl)
        .ok()
        .and_then(|d| Timestamp::now().checked_add(d).ok())
        .ok_or_else(|| ToolError::Invalid(format!("expiresIn {ttl:?} is too long")))?;
    // Whole seconds: the signature covers seconds, and the API server stores RFC 3339 seconds.
    let expires = Timestamp::from_second(expires.as_second())
        .map_err(|e| ToolError::Invalid(format!("expiresIn: {e}")))?;
    let spec = VouchSpec::signed(identity, &subject, args.weight, reason, Time(expires))
        .map_err(|e| ToolError::Invalid(e.to_string()))?;
    // The name is derived from the signature, so the same statement is never stored twice.
    let digest = Sha256::digest(spec.signature.as_bytes());
    let name = format!("vouch-{}", &hex::encode(digest)[..16]);
    let v = Vouch::new(&name, spec);
    let created = Api::<Vouch>::all(client.clone())
        .create(
            &PostParams {
                field_manager: Some(super::manager::FIELD_MANAGER.into()),
                ..Default::default()
            },
            &v,
        )
        .await
        .map_err(ToolError::api(format!("create vouch {name}")))?;
    let voucher_is_node = all_nodes.iter().any(|n| n.spec.did == me.did());
    Ok(json!({
        "vouch": created.name_any(),
        "voucher": me.did(),
        "subject": subject.did(),
        "subjectNode": subject_node,
        "weight": created.spec.weight,
        "expiresAt": created.spec.expires_at.0.to_string(),
        "note": if voucher_is_node {
            "the controller verifies the signature and weighs it by this voucher's service record; reputation shows the effect"
        } else {
            "no nodes.univrs.io has this server's DID, so the controller will mark the vouch UnknownVoucher and it counts for nothing: run the server with a node's identity (--identity)"
        },
    }))
}

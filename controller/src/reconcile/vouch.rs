//! The Vouch reconciler: judges each vouch (`core::plan::vouch`, which says how) against the
//! cached nodes, writes the verdict to its status when it changes, and announces it.

use crate::core::plan::vouch::{self, judge, standing};
use crate::error::Error;
use crate::state::context::{Context, FIELD_MANAGER};
use crate::state::events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use univrs_api::Vouch;
use univrs_io::apply::Apply;

/// Reconciles one Vouch: read, plan, write, announce.
pub async fn reconcile(vouch: Arc<Vouch>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.synced().await;
    let now = Time(Timestamp::now());
    let nodes: Vec<(String, String, f64)> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| {
            (
                n.name_any(),
                n.spec.did.clone(),
                standing(n, &ctx.settings.trust_anchors),
            )
        })
        .collect();
    let v = judge(&vouch, &nodes, &now);
    if let Some(status) = vouch::status(&vouch, &v, &now) {
        Apply::<Vouch>::new(&vouch.name_any())
            .status(status)
            .apply_status(&Api::all(ctx.client.clone()), FIELD_MANAGER)
            .await?;
        events::announce(&ctx, &vouch.object_ref(&()), &[vouch::notice(&v)]).await;
    }
    Ok(Action::requeue(vouch::requeue(
        &vouch,
        &now,
        ctx.settings.resync,
    )))
}

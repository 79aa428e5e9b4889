//! Publishing Events about the reconciled objects. An Event is a courtesy to people: one the
//! API server refuses is logged, never an error that fails the reconcile.

use crate::core::notice::Notice;
use crate::state::context::Context;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

/// Publishes an Event, logging (not failing) when the API refuses it.
pub async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}

/// Publishes a plan's notices about `reference`, in order.
pub async fn announce(ctx: &Context, reference: &ObjectReference, notices: &[Notice]) {
    for n in notices {
        let type_ = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, reference, type_, n.reason, n.note.clone()).await;
    }
}

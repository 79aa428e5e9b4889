//! Announcing what a plan says as Events. An Event is a courtesy to people: one the API server
//! refuses is logged, never an error that fails the reconcile.

use crate::core::notice::Notice;
use crate::state::context::Context;
use k8s_openapi::api::core::v1::ObjectReference;
use univrs_io::events::EventType;

/// Publishes a plan's notices about `reference`, in order.
pub async fn announce(ctx: &Context, reference: &ObjectReference, notices: &[Notice]) {
    for n in notices {
        let type_ = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.events
            .publish(reference, type_, n.reason, n.note.clone())
            .await;
    }
}

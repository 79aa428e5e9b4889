//! The one Kubernetes Event publisher of the controller and the agents.
//!
//! Events are a record for people (`kubectl describe`, `kubectl events`), never a channel
//! between components: a refused Event is logged and forgotten, and nothing waits for one.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};

pub use kube::runtime::events::EventType;

/// Publishes Events as one reporting component.
#[derive(Clone)]
pub struct Publisher {
    recorder: Recorder,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

/// Whether the API server refused a write because the namespace it targets is being deleted.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

impl Publisher {
    /// A publisher reporting as `controller` (e.g. `univrs-controller`), from `instance` (the
    /// node name of an agent, the pod of a controller) when there is one.
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: controller.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes an Event about `reference` whose action is its reason; a refused publish is
    /// logged, not returned.
    pub async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: reason.into(),
            secondary: None,
        };
        match self.recorder.publish(&event, reference).await {
            Ok(()) => {}
            // The object's namespace is being deleted, and its Events with it: nothing is lost,
            // and a warning would read like a permission problem.
            Err(e) if namespace_terminating(&e) => tracing::debug!(
                reason,
                object = reference.name.as_deref().unwrap_or(""),
                "no Event: its namespace is being deleted"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                reason,
                object = reference.name.as_deref().unwrap_or(""),
                "could not publish an Event"
            ),
        }
    }

    /// Publishes in a task of its own, so the caller's work (starting a container, say) never
    /// waits on the API server for a record meant for people.
    pub fn publish_detached(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        note: impl Into<String>,
    ) {
        let (this, reason, note) = (self.clone(), reason.to_string(), note.into());
        tokio::spawn(async move { this.publish(&reference, type_, &reason, note).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(body).unwrap()))
    }

    #[test]
    fn only_a_terminating_namespace_is_quiet() {
        let terminating = refusal(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "unable to create new content in namespace shop because it is being terminated",
            "details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]}
        }));
        let denied = refusal(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "events.events.k8s.io is forbidden: User cannot create"
        }));
        assert!(namespace_terminating(&terminating));
        assert!(!namespace_terminating(&denied));
    }
}

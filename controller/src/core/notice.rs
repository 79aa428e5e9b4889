//! What a reconcile announces once its write landed: an Event's severity, reason and note.
//! The plan step decides them from the object before and after; the reconciler publishes them
//! (`state::events`), so the wording is tested without an API server.

/// One Event to publish about the reconciled object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// A Warning rather than a Normal Event.
    pub warning: bool,
    /// The Event's reason (and action), `CamelCase`.
    pub reason: &'static str,
    /// For people.
    pub note: String,
}

impl Notice {
    /// A Normal Event.
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            note: note.into(),
        }
    }

    /// A Warning Event.
    pub fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}

//! The controller's errors: transient ones are retried with per-object backoff.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request (retried with backoff).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A reconcile took longer than its deadline (a hung request); retried with backoff.
    #[error("reconcile did not finish within {0:?}")]
    Timeout(std::time::Duration),
    /// Settling a departed node's credit failed in a way retrying may fix.
    #[error("credit settlement: {0}")]
    Settlement(String),
    /// A namespaced object without a namespace (cannot happen for objects from the API server).
    #[error("object has no namespace")]
    MissingNamespace,
}

//! Why the agent stopped (or `univrs reset` failed).

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The identity key could not be loaded or created.
    #[error("identity: {0}")]
    Identity(#[from] crate::keyfile::KeyFileError),
    /// A Kubernetes API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The error.
        source: kube::Error,
    },
    /// Another machine's identity holds this node name.
    #[error(
        "Node {name} belongs to another identity (peer {peer_id}); choose another --node-name, or delete that Node if the machine is gone for good"
    )]
    NameTaken {
        /// The node name.
        name: String,
        /// The identity that holds it.
        peer_id: String,
    },
    /// The configuration is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl AgentError {
    /// A Kubernetes API error, with what was being done.
    pub(crate) fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Kube { context, source }
    }
}

//! What goes wrong attaching containers to the network.

use super::netns::NetnsError;
use std::path::PathBuf;
use std::time::Duration;

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A value given to the network module is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A plugin executable is missing from the plugin directories.
    #[error(
        "CNI plugin {plugin:?} not found in {dirs}; install Debian's containernetworking-plugins \
         or set the plugin directory"
    )]
    PluginNotFound {
        /// The plugin (the `type` of its configuration).
        plugin: String,
        /// The directories searched, `:`-separated.
        dirs: String,
    },
    /// A plugin reported an error (the CNI error object it printed).
    #[error(
        "CNI plugin {plugin} failed {op} for container {container_id}: {msg}{} (CNI error code {code})",
        if details.is_empty() { String::new() } else { format!(": {details}") }
    )]
    Plugin {
        /// The plugin.
        plugin: String,
        /// The operation (`ADD`, `DEL`, `CHECK`).
        op: &'static str,
        /// The container.
        container_id: String,
        /// The CNI error code (1–99 are the specification's, 100+ the plugin's own).
        code: u32,
        /// The plugin's message.
        msg: String,
        /// The plugin's details.
        details: String,
    },
    /// A plugin failed without an error object, or printed something that is not a result.
    #[error("CNI plugin {plugin} failed {op} for container {container_id}: {message}")]
    PluginOutput {
        /// The plugin.
        plugin: String,
        /// The operation.
        op: &'static str,
        /// The container.
        container_id: String,
        /// What went wrong, with what the plugin printed.
        message: String,
    },
    /// A plugin ran too long and was killed.
    #[error(
        "CNI plugin {plugin} did not finish {op} for container {container_id} within {after:?}"
    )]
    PluginTimeout {
        /// The plugin.
        plugin: String,
        /// The operation.
        op: &'static str,
        /// The container.
        container_id: String,
        /// How long it was given.
        after: Duration,
    },
    /// The container is already attached; tear it down first.
    #[error("container {0} already has a network attachment; tear it down first")]
    Exists(String),
    /// The container has no network attachment.
    #[error("container {0} has no network attachment")]
    NotFound(String),
    /// The attachment's setup never finished (the agent stopped during it); tear it down.
    #[error("the network setup of container {0} never finished; tear it down and set it up again")]
    Incomplete(String),
    /// The attachment's network namespace is gone.
    #[error("the network namespace {} of container {id} is gone; tear it down", path.display())]
    NetnsGone {
        /// The container.
        id: String,
        /// The namespace file.
        path: PathBuf,
    },
    /// Another container of this agent already maps the host port.
    #[error("host port {host_port}/{protocol} is already mapped to container {other}")]
    PortInUse {
        /// The host port.
        host_port: u16,
        /// The protocol.
        protocol: String,
        /// The container that has it.
        other: String,
    },
    /// The agent's subnet overlaps a network the host already routes elsewhere.
    #[error(
        "the container subnet {subnet} overlaps {other} on interface {iface}; \
         give this agent another subnet"
    )]
    SubnetOverlap {
        /// The agent's subnet.
        subnet: String,
        /// The overlapping route.
        other: String,
        /// The interface of that route.
        iface: String,
    },
    /// Making or removing a network namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let context = context.into();
    move |source| NetworkError::Io { context, source }
}

//! What can go wrong with images, each error naming the reference, digest or path involved.

use std::path::PathBuf;

/// An image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest is malformed or uses an algorithm other than sha256.
    #[error("invalid digest {digest:?} in {context}: {reason}")]
    InvalidDigest {
        /// The digest as found.
        digest: String,
        /// Where it was found.
        context: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Content does not hash to the digest that names it.
    #[error("{context}: content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being fetched or read (e.g. `layer 1 of REF`).
        context: String,
        /// The digest the content should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// The image is larger than the node's owner allows.
    #[error(
        "{context} is {size} bytes, more than the {limit} bytes this node takes (its owner's image size cap)"
    )]
    TooLarge {
        /// The image or layer.
        context: String,
        /// Its size (at least this many bytes).
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// Content is not the size its descriptor says.
    #[error("{context}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was being fetched or read.
        context: String,
        /// The size in the descriptor.
        expected: u64,
        /// The size received (at least this many bytes).
        actual: u64,
    },
    /// The registry refused the credentials (or asked for some and none were given).
    #[error(
        "registry {registry} refused access to {reference}: {message} (check the credentials for {registry})"
    )]
    Unauthorized {
        /// The reference being pulled.
        reference: String,
        /// The registry host.
        registry: String,
        /// What the registry said.
        message: String,
    },
    /// The registry has no such image (or tag).
    #[error("image {reference} not found in the registry: {message}")]
    NotFound {
        /// The reference being pulled.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The registry could not be reached or spoken with (connection, TLS, a broken answer).
    #[error("pulling {reference}: {message}")]
    Unreachable {
        /// The reference being pulled.
        reference: String,
        /// What failed, with its causes.
        message: String,
    },
    /// Talking to the registry failed.
    #[error("pulling {reference}: {message}")]
    Registry {
        /// The reference being pulled.
        reference: String,
        /// What failed, with its causes.
        message: String,
    },
    /// A manifest, index or image config is malformed or of an unsupported kind.
    #[error("{context}: {reason}")]
    Manifest {
        /// Which document (e.g. `manifest sha256:… of REF`).
        context: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An image index has no image for the wanted platform.
    #[error("{reference} has no image for {wanted}; it has: {available}")]
    NoMatchingPlatform {
        /// The reference being pulled.
        reference: String,
        /// The platform wanted (`os/arch`).
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// The image is not in the local store (pull it first).
    #[error("image {reference} is not in the local store ({reason}); pull it first")]
    NotPresent {
        /// The reference or digest asked for.
        reference: String,
        /// What is missing.
        reason: String,
    },
    /// A layer cannot be unpacked safely or correctly.
    #[error("layer {digest}: entry {entry:?}: {reason}")]
    Layer {
        /// The layer's digest.
        digest: String,
        /// The tar entry (path inside the layer).
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A local OCI image layout is malformed or lacks the tag.
    #[error("OCI layout {}: {reason}", path.display())]
    Layout {
        /// The layout directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A docker-style credentials file cannot be read.
    #[error("credentials file {}: {reason}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A container's root filesystem cannot be prepared or removed.
    #[error("root filesystem of container {id}: {reason}")]
    Rootfs {
        /// The container id.
        id: String,
        /// What failed.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] for `what` on `path`.
    pub(crate) fn io(
        what: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }
}

/// A closure mapping an [`std::io::Error`] to an [`ImageError::Io`] (for `map_err`).
pub(crate) fn io_err(
    what: impl Into<String>,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ImageError {
    let (what, path) = (what.into(), path.into());
    move |e| ImageError::io(what, path, e)
}

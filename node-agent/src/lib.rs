//! Univrs node agent. Today: the node's key file, the container runtime and OCI images. The
//! agent proper (Node object, Lease, the libp2p mesh) arrives with the node-agent issue.

pub mod image;
pub mod keyfile;
pub mod runtime;

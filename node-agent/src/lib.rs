//! Univrs node agent. Today: the node's key file. The agent proper (Node object, Lease,
//! containers through youki, the libp2p mesh) arrives with the node-agent issue.

pub mod keyfile;
pub mod mesh;
pub mod runtime;

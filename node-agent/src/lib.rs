//! Univrs node agent: the node's identity on disk, containers through youki (in per-container
//! shims), OCI images, container networks through CNI, and the agent that runs the instances
//! placed on its node.

pub mod agent;
pub mod demo_image;
pub mod fsutil;
pub mod ids;
pub mod image;
pub mod keyfile;
pub mod mesh;
pub mod network;
pub mod runtime;

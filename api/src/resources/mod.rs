//! The custom resources of group `univrs.io`.
pub mod creditline;
pub mod node;
pub mod vouch;
pub mod workload;

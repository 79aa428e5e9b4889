//! The custom resources of group `univrs.io`.

// Each printcolumn(...) inside #[kube(...)] repeats keys such as `type_`, which clippy mistakes
// for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod creditline;
pub mod node;
pub mod vouch;
pub mod workload;

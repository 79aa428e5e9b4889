//! `univrs mcp`: a Model Context Protocol server through which AI agents deploy and inspect
//! workloads, look after nodes and read the credit and trust state of the community cloud.
//!
//! Every action is an edit (or a read) of the custom resources through the Kubernetes API
//! with the kube client, so the same server works against the local control plane and any
//! real cluster with the CRDs installed; the controller does the rest. Writes use the field
//! manager `univrs-mcp` (`manager`), so `kubectl get --show-managed-fields` tells them apart.
//!
//! - `server`: the tools and the cluster summary resource;
//! - `args`: the tools' argument types (their schemas are the input schemas);
//! - `workloads`, `nodes`, `credit`, `trust`, `summary`: what each tool does;
//! - `error`: failures worded for the agent: what was wrong and what to do;
//! - `http`, `tls`: the streamable HTTP transport behind TLS and a bearer token (the listener
//!   and the token are `univrs_io`'s).

mod args;
mod credit;
mod error;
pub mod http;
mod logs;
mod manager;
mod nodes;
pub mod server;
mod summary;
mod trust;
mod workloads;

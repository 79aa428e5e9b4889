//! The container runtime: OCI containers through youki's `libcontainer`, one shim per container.
//!
//! `libcontainer` clones and forks, which is only safe in a single-threaded process, and the
//! agent is a multi-threaded tokio process. So `libcontainer` runs only inside a per-container
//! shim, `univrs shim run …`, that the agent spawns with [`std::process::Command`] (a fresh
//! exec, never a fork of the agent), the way containerd runs a shim per container:
//!
//! - [`spec`] builds the OCI runtime spec (`config.json`) from a [`spec::ContainerConfig`];
//! - [`shim`] is the single-threaded side: create, start, supervise, stop and delete one
//!   container with `libcontainer`, and record what happened in files;
//! - [`client`] is the agent side: plain processes and files, no `libcontainer` call, safe to
//!   use from an async process (its calls block briefly; run them on a blocking thread);
//! - [`exec`] runs a command inside a running container (`univrs shim exec`), for probes;
//! - [`userns`] pins the node's user namespace and makes network namespaces inside it;
//! - [`cgroup`] reads a container's cgroup (usage, limits, OOM kills) on cgroup v1 and v2.
//!
//! Everything about a container lives in files under one state directory ([`Layout`]), so an
//! agent that restarts finds its containers again (their shims run in their own process group
//! and outlive the agent) and can stop, inspect and delete them.

pub mod cgroup;
pub mod client;
pub mod exec;
mod executor;
pub mod layout;
pub mod log;
pub mod seccomp;
pub mod seccomp_filter;
pub mod shim;
pub mod spec;
pub mod userns;

pub use client::{ContainerState, Created, RuntimeClient, RuntimeError, ShimHandle};
pub use layout::{ExitRecord, Layout};
pub use spec::ContainerConfig;

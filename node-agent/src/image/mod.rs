//! OCI images for the node agent: where a container's root filesystem comes from.
//!
//! [`ImageStore`] keeps verified content under one directory the agent gives it:
//!
//! ```text
//! <root>/blobs/sha256/<hex>      manifests, indexes, configs and layer blobs, each verified
//!                                against its digest, written once (temporary file + rename)
//! <root>/layers/sha256/<hex>/    each layer unpacked once, overlayfs-ready (whiteouts as 0/0
//!                                character devices, opaque directories as xattrs)
//! <root>/refs/<reference>        reference -> manifest digest (JSON), so `resolve` works offline
//! <root>/rootfs/<id>/            a container's writable root: upper/, work/ and the overlay
//!                                mount merged/ (or a plain copy in merged/ without overlayfs)
//! <root>/tmp/                    downloads and unpacks in progress (named after their process;
//!                                a killed process's leftovers are removed by the next open)
//! <root>/lock                    flock: shared while adding content, exclusive for `gc`
//! ```
//!
//! - [`ImageStore::pull`] fetches an image from a registry with `oci-client` (HTTPS, or plain
//!   HTTP for registries listed as insecure; anonymous or basic-auth credentials, e.g. from a
//!   docker `config.json` through [`DockerConfig`]), picking linux and this machine's
//!   architecture from an image index. A reference `oci:DIR:TAG` imports from a local OCI image
//!   layout instead ([`ImageStore::import_oci_layout`]).
//! - [`ImageStore::resolve`] finds an image already in the store without the network.
//! - [`ImageStore::prepare_rootfs`] and [`ImageStore::remove_rootfs`] make and remove a
//!   container's root filesystem; [`ImageStore::gc`] removes what no kept image uses.
//! - [`config`] combines the image's ENTRYPOINT, CMD and ENV with a Workload's `command`,
//!   `args` and `env` the way Kubernetes does.
//!
//! Everything is safe against concurrent pulls (in one process or several) and against a kill
//! at any moment: content only appears under its final name once complete and verified.

mod auth;
pub mod config;
mod digest;
mod error;
mod layout;
pub mod manifest;
mod pull;
mod reference;
mod registry;
mod rootfs;
mod store;
mod unpack;
pub mod write;

pub use auth::{Access, Credentials, DockerConfig, load_docker_config};
pub use config::{ImageConfig, ProcessError, merge_env, process_args, resolve_user, working_dir};
pub use digest::Digest;
pub use error::ImageError;
pub use manifest::Platform;
pub use reference::{canonical_reference, parse_layout_reference};
pub use registry::PullOptions;
pub use rootfs::is_mounted;
pub use store::{GcReport, Image, ImageStore, RootfsMode, StoreStats};

//! The reconcilers, one module per resource: [`workload`], [`node`], [`vouch`], [`credit`]
//! (CreditLines, and paying along them), [`csr`] (approving the certificate a joining node asks
//! for), [`revival`] (settling a departed Node's credit) and
//! [`nexus`] (the periodic election whose result the Node reconciler writes). Each reconcile
//! reads from `state`, plans with its pure plan step in `core::plan`, writes with server-side
//! apply (`univrs_io::apply`, field manager `univrs-controller`) only when the plan changes something, and announces what the plan says
//! (`state::events`).
//!
//! Who writes which status field is said in each resource's module of the `api` crate
//! (`univrs_api::resources`) and in the plan modules: the controller's fields are written only
//! from here, each by its resource's reconciler; `credit` also writes CreditLine status for
//! transfers, carrying the resourceVersion it read.
//!
//! May import: `state`, `core`, the `api` crate, the top-level `error` and `metrics`, and
//! sibling reconcilers that do not import it back (`workload` pays through `credit`; `node`
//! settles through `revival`, which transfers through `credit`, and reads `nexus`'s election).

pub mod credit;
pub mod csr;
pub mod nexus;
pub mod node;
pub mod revival;
pub mod vouch;
pub mod workload;

//! The agent among its peers on the mesh: how it joins, what it tells them, what it heard from
//! them, and the cluster view that checks what they claim.
//!
//! - [`join`]: starts the swarm and finds peers from the other Nodes' published addresses;
//! - [`announce`]: publishes the agent's start, its instances' phase changes and the vouches
//!   its own key signed;
//! - [`heard`]: a bounded record of the vouches and transfers heard (served by the API; never
//!   the truth, which is the cluster's);
//! - [`cluster_view`]: Nodes and Vouches as the cluster has them, against which gossip claims
//!   are judged.
//!
//! Nothing here writes to the cluster's API: what the mesh sees of the peers reaches the Node
//! status through `kube::observations`.

pub mod announce;
pub mod cluster_view;
pub mod heard;
pub mod join;

//! Checks of what a message claims against a source of truth outside the mesh.
//!
//! The mesh itself can only check what a message proves (signatures, dates, shapes). Whether a
//! signed claim is *possible* (the voucher is a member, the payer owns the account it pays
//! from) needs the cluster, which the mesh does not know. A [`ClaimCheck`] given in
//! [`MeshConfig::claims`](super::MeshConfig::claims) answers that question asynchronously:
//! gossipsub holds the message (neither delivered nor forwarded) until the answer arrives, then
//! the event loop reports it, so an impossible claim is dropped, counted by reason and costs
//! its sender exactly like a bad signature does.
//!
//! The answer must come within [`MeshConfig::claim_timeout`](super::MeshConfig::claim_timeout);
//! a check that does not, or that answers [`ClaimVerdict::Unknown`], drops the message without
//! penalty (`IgnoreReason::ClaimUnchecked`): an honest sender is not punished for our API
//! server being slow.

use super::message::InboundMessage;
use super::validate::{IgnoreReason, InvalidReason};
use futures::future::BoxFuture;

/// What a [`ClaimCheck`] concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// The claim is possible: deliver and forward.
    Possible,
    /// The claim is impossible: drop, count by this reason and penalize the sender.
    Impossible(InvalidReason),
    /// The claim could not be checked: drop without penalty.
    Unknown,
    /// Drop without penalty, counted by this reason (the author is isolated, say).
    Ignore(IgnoreReason),
}

/// A check of the claims of messages that passed the mesh's own validation.
pub trait ClaimCheck: Send + Sync + std::fmt::Debug + 'static {
    /// The check for `message`, or `None` when its claims need no check (it is delivered at
    /// once). Called on the mesh's event loop, so it must only start the work, never do it.
    fn check(&self, message: &InboundMessage) -> Option<BoxFuture<'static, ClaimVerdict>>;
}

//! What the reconcilers read, and how they hear of changes: the shared [`context::Context`]
//! (client, reflector caches, settings, Event recorder, metrics), the watch [`feeds`] that keep
//! the caches and the node [`index`] current and fill the controllers' [`queues`] with exactly
//! the objects a change concerns ([`wake`]), the deletions the index remembers
//! ([`tombstones`]), and Event publishing ([`events`]).
//!
//! May import: `core`, the `api` crate, and the top-level `metrics` and `error`. Never
//! `reconcile`: what several reconcilers need (a constant, a rule) lives in `core` or in the
//! `api` crate, and a reconciler that must wake others goes through [`wake`].

pub mod context;
pub mod events;
pub mod feeds;
pub mod index;
pub mod queues;
pub mod tombstones;
pub mod wake;

//! ENR economics (Entropy, Nexus, Revival), as pure functions.
//!
//! The model's constants are the defaults of each module's `Config`, and each module's doc states
//! its formulas. What holds throughout: weights are validated and actually used, every split of
//! credit conserves it exactly in integer arithmetic, the circuit breaker's states are named for
//! what traffic does, the auction really clears, and vouches cannot inflate a ring of fresh
//! identities. Nothing here reads a clock: time is always an argument. The README's glossary
//! names the file behind each term.

pub mod bounds;
pub mod entropy;
pub mod nexus;
pub mod pricing;
pub mod reputation;
pub mod revival;
pub mod septal;

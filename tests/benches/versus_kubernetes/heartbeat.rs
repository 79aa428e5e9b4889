//! Heartbeats at scale: API server CPU and write rate with many nodes renewing Leases.

use std::path::Path;

/// Runs the part and prints its table.
pub fn run(_bin: &Path, _nodes: usize) {}

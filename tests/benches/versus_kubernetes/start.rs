//! Start latency: create → Running on the pinned kubelet with containerd versus `univrs agent`,
//! and the runtime alone.

use std::path::Path;

/// Runs the part and prints its table; returns kubelet's create → Running p50 over Univrs's.
pub fn run(_bin: &Path, _runs: usize) -> f64 {
    f64::NAN
}

//! Containers for the benchmarks: the demo image in an image store of its own, the agent's shim
//! started alone, and one `univrs agent` running Workloads one at a time.

//! What a node has and an instance asks for: CPU, memory, GPUs and host ports, with
//! saturating arithmetic. Its own module so that pricing (`quote`) and placement (`scheduler`)
//! share the types without importing each other. Pure.

use std::fmt;

/// A port published on a node's addresses (a container port's `hostPort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// The port number.
    pub port: u16,
    /// UDP rather than TCP.
    pub udp: bool,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, if self.udp { "UDP" } else { "TCP" })
    }
}

/// CPU, memory and GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Millicores.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
    /// GPUs.
    pub gpus: u32,
}

impl Resources {
    /// The sum, saturating.
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            gpus: self.gpus.saturating_add(o.gpus),
        }
    }

    /// The difference, saturating at zero.
    pub fn minus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            gpus: self.gpus.saturating_sub(o.gpus),
        }
    }
}

//! What this machine offers: CPU, memory and GPUs, detected or given on the command line.

use univrs_api::quantity::Quantity;
use univrs_api::resources::node::NodeCapacity;

/// Capacity overrides from flags; what is not given is detected.
#[derive(Debug, Clone, Default)]
pub struct CapacityOverrides {
    /// CPU to offer (`2`, `1500m`), instead of every online CPU.
    pub cpu: Option<Quantity>,
    /// Memory to offer (`4Gi`), instead of all of MemTotal.
    pub memory: Option<Quantity>,
    /// GPUs to offer, instead of the NVIDIA devices found under /dev.
    pub gpu: Option<i32>,
}

/// The node's capacity: the overrides where given, the machine's otherwise.
pub fn detect(overrides: &CapacityOverrides) -> NodeCapacity {
    let cpu = overrides.cpu.clone().unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Quantity(n.to_string())
    });
    let memory = overrides.memory.clone().unwrap_or_else(|| {
        let kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| mem_total_kib(&s))
            .unwrap_or(0);
        Quantity(format!("{kib}Ki"))
    });
    let gpu = overrides.gpu.unwrap_or_else(count_gpus);
    NodeCapacity { cpu, memory, gpu }
}

/// `MemTotal` in KiB from the text of /proc/meminfo.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// NVIDIA GPUs show up as /dev/nvidia0, /dev/nvidia1, …
fn count_gpus() -> i32 {
    std::fs::read_dir("/dev").map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("nvidia"))
                    .is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .count() as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24597484 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total_kib(text), Some(24_597_484));
        assert_eq!(mem_total_kib("nothing"), None);
    }

    #[test]
    fn detects_this_machine_and_honours_overrides() {
        let c = detect(&CapacityOverrides::default());
        assert!(c.cpu_millis().unwrap() >= 1000);
        assert!(c.memory_bytes().unwrap() > 64 << 20);
        let c = detect(&CapacityOverrides {
            cpu: Some(Quantity("500m".into())),
            memory: Some(Quantity("1Gi".into())),
            gpu: Some(1),
        });
        assert_eq!(c.cpu_millis().unwrap(), 500);
        assert_eq!(c.memory_bytes().unwrap(), 1 << 30);
        assert_eq!(c.gpu, 1);
    }
}

//! Scheduling decisions per second in the pure decision path, on one thread (printed, never
//! asserted): 1,000 / 5,000 / 10,000 nodes with 50,000 instances already placed.
//!
//! Run: `cargo bench -p univrs-controller --bench scheduler`.

use std::collections::BTreeMap;
use std::time::Instant;
use univrs_api::resources::node::{NodePricing, PricingModel};
use univrs_controller::core::resources::Resources;
use univrs_controller::core::scheduler::{NodeView, Request, place};

const GI: u64 = 1 << 30;

fn cluster(n: usize, placed: u64) -> Vec<NodeView> {
    let per_node = placed / n as u64;
    (0..n)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert(
                "site".to_string(),
                ["library", "school", "shop", "center"][i % 4].to_string(),
            );
            if i % 10 == 0 {
                labels.insert("gpu".to_string(), "true".to_string());
            }
            NodeView {
                name: format!("node-{i:05}"),
                labels,
                ready: i % 50 != 0,
                unschedulable: i % 97 == 0,
                isolated: i % 211 == 0,
                traffic: if i % 223 == 0 { 0.25 } else { 1.0 },
                capacity: Resources {
                    cpu_millis: 64_000,
                    memory_bytes: 256 * GI,
                    gpus: u32::from(i % 10 == 0),
                },
                allocated: Resources {
                    cpu_millis: per_node * 100 + (i as u64 % 7) * 500,
                    memory_bytes: per_node * 128 * (1 << 20),
                    gpus: 0,
                },
                host_ports: Vec::new(),
                host_port_range: None,
                pays_for: Vec::new(),
                reputation: 0.3 + (i % 70) as f64 / 100.0,
                nexus: i % 27 == 0,
                credit_balance: (i as i64 % 2000 - 1000) * 100,
                // Dynamic rates (the default model), priced per decision at the node's
                // utilization: 0.8 to 1.2 credits an hour for the request below.
                pricing: NodePricing {
                    model: PricingModel::Dynamic,
                    cpu_core_hour: 3000 + (i as i64 % 400) * 4,
                    memory_gib_hour: 250,
                    gpu_hour: 10_000,
                },
                price_multiplier: 1.0,
                price_memo: Default::default(),
            }
        })
        .collect()
}

fn main() {
    let req = Request {
        resources: Resources {
            cpu_millis: 250,
            memory_bytes: 256 << 20,
            gpus: 0,
        },
        host_ports: Vec::new(),
        node_selector: BTreeMap::from([("site".to_string(), "library".to_string())]),
        min_reputation: 0.5,
        max_price_per_hour: Some(1100),
        owner_headroom: None,
    };
    println!("| nodes | placed instances | decisions/s (1 thread) | µs per decision |");
    println!("|---|---|---|---|");
    for n in [1_000usize, 5_000, 10_000] {
        let fresh = cluster(n, 50_000);
        // The owner has a credit line to every node.
        let req = Request {
            owner_headroom: Some(vec![1_000_000; n]),
            ..req.clone()
        };
        let mut nodes = fresh.clone();
        let spread = vec![0u32; n];
        // Warm up, then measure for at least 2 s.
        for _ in 0..20 {
            let _ = place(&nodes, &spread, &req);
        }
        let started = Instant::now();
        let mut decisions = 0u64;
        while started.elapsed().as_secs_f64() < 2.0 {
            // Each decision changes the snapshot, as a real placement would; when the eligible
            // nodes are full, start again from the initial snapshot.
            match place(&nodes, &spread, &req) {
                Ok(i) => nodes[i].allocated = nodes[i].allocated.plus(req.resources),
                Err(_) => nodes.clone_from(&fresh),
            }
            decisions += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "| {n} | 50000 | {:.0} | {:.1} |",
            decisions as f64 / secs,
            secs * 1e6 / decisions as f64
        );
    }
}

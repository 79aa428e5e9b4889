//! Pieces the benchmarks share: counts from the environment, creating and watching many objects,
//! CPU and memory of processes and process trees, the API server's own request counters, and
//! tables printed side by side. Benchmarks print; they never assert a speed.

pub mod containers;
pub mod kwok;

use crate::{ControlPlane, children_of, quantile};
use futures::{StreamExt, stream};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// `var` from the environment as a count, or `default`.
pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `make(0..n)` with 32 in flight.
pub async fn create_all<F, Fut>(n: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    create_all_with(n, 32, make).await
}

/// Runs `make(0..n)` with `in_flight` at a time.
pub async fn create_all_with<F, Fut>(n: usize, in_flight: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    stream::iter(0..n)
        .map(make)
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await;
}

/// Watches `api` until `want` objects pass `keep`; returns when each first passed (an object
/// that stops passing is forgotten).
pub async fn watch_until<K>(
    api: Api<K>,
    mut keep: impl FnMut(&K) -> bool,
    want: usize,
) -> HashMap<String, Instant>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
    K: Send + 'static,
{
    let mut passed: HashMap<String, Instant> = HashMap::new();
    let mut events = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    // A watch through an API server this busy may break: the backoff re-lists.
    while let Some(ev) = events.next().await {
        let Ok(obj) = ev else { continue };
        if keep(&obj) {
            passed.entry(obj.name_any()).or_insert_with(Instant::now);
        } else {
            passed.remove(&obj.name_any());
        }
        if passed.len() >= want {
            break;
        }
    }
    passed
}

/// CPU seconds (user + system) a process has used so far; 0 when it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name: state, ppid, … utime is the 12th field, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        all.extend(children_of(all[i]));
        i += 1;
    }
    all
}

/// The command name (`comm`) of a process; empty when it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// The pid of the control plane's kube-apiserver.
pub fn apiserver_pid(cp: &ControlPlane) -> Option<u32> {
    component_pid(cp, "kube-apiserver")
}

/// The pid of the control plane's process named `name` (`etcd`, `kube-apiserver`, …).
pub fn component_pid(cp: &ControlPlane, name: &str) -> Option<u32> {
    children_of(cp.supervisor_pid()?)
        .into_iter()
        .find(|p| comm(*p) == name)
}

/// The one-minute load average and the number of CPUs, for the settings line of a table.
pub fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpus} CPUs, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The API server's request counts by (verb, resource/subresource, code).
pub type Requests = BTreeMap<(String, String, String), f64>;

/// Reads `apiserver_request_total` from the API server for `resources`. `nodes` means the
/// group `group_of_nodes` ("" for the core group, "univrs.io" for ours).
pub fn api_requests(cp: &ControlPlane, resources: &[&str], group_of_nodes: &str) -> Requests {
    let out = cp
        .kubectl()
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("kubectl get --raw /metrics");
    let mut counts = Requests::new();
    for r in request_totals(&String::from_utf8_lossy(&out.stdout)) {
        let resource = r.label("resource");
        if !resources.contains(&resource.as_str())
            || (resource == "nodes" && r.label("group") != group_of_nodes)
        {
            continue;
        }
        *counts
            .entry((r.label("verb"), r.what(), r.label("code")))
            .or_default() += r.count;
    }
    counts
}

/// One `apiserver_request_total` sample of the API server's `/metrics`.
pub struct RequestTotal<'a> {
    labels: &'a str,
    /// Its count.
    pub count: f64,
}

impl RequestTotal<'_> {
    /// The value of label `name` ("" when it has none).
    pub fn label(&self, name: &str) -> String {
        self.labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default()
    }

    /// `resource`, or `resource/subresource`.
    pub fn what(&self) -> String {
        match self.label("subresource").as_str() {
            "" => self.label("resource"),
            sub => format!("{}/{sub}", self.label("resource")),
        }
    }
}

/// Every `apiserver_request_total` sample in a `/metrics` text.
pub fn request_totals(metrics: &str) -> impl Iterator<Item = RequestTotal<'_>> {
    metrics.lines().filter_map(|line| {
        let (labels, value) = line
            .strip_prefix("apiserver_request_total{")?
            .rsplit_once("} ")?;
        Some(RequestTotal {
            labels,
            count: value.parse().unwrap_or(0.0),
        })
    })
}

/// The first line a command prints (a version, for a table's settings).
pub fn first_line(cmd: &mut std::process::Command) -> String {
    let (_, out, err) = crate::run(cmd);
    format!("{out}{err}")
        .lines()
        .next()
        .unwrap_or("?")
        .trim()
        .to_string()
}

/// The number of writes (create, update, patch, delete, apply) between two samples.
pub fn writes_between(before: &Requests, after: &Requests) -> f64 {
    after
        .iter()
        .filter(|((verb, _, _), _)| {
            [
                "POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE",
            ]
            .contains(&verb.to_uppercase().as_str())
        })
        .map(|(k, v)| v - before.get(k).copied().unwrap_or(0.0))
        .sum()
}

/// What changed between two samples, as `| verb resource | code | count | per s |` rows.
pub fn print_requests(title: &str, before: &Requests, after: &Requests, took: Duration) {
    println!();
    println!("| requests {title} | code | count | per s |");
    println!("|---|---|---|---|");
    for (k, v) in after {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d >= 1.0 {
            println!(
                "| {} {} | {} | {d:.0} | {:.1} |",
                k.0,
                k.1,
                k.2,
                d / took.as_secs_f64()
            );
        }
    }
}

/// `p50 / p99 / min / max` of a sample, in its own unit.
pub struct Summary {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The least.
    pub min: f64,
    /// The most.
    pub max: f64,
    /// How many.
    pub n: usize,
}

impl Summary {
    /// Summarizes `xs`.
    pub fn of(xs: &[f64]) -> Self {
        let mut v = xs.to_vec();
        let p50 = quantile(&mut v, 0.5);
        let p99 = quantile(&mut v, 0.99);
        Self {
            p50,
            p99,
            min: v.first().copied().unwrap_or(0.0),
            max: v.last().copied().unwrap_or(0.0),
            n: v.len(),
        }
    }

    /// `| what | n | p50 | p99 | min | max |`.
    pub fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            self.n, self.p50, self.p99, self.min, self.max
        )
    }
}

/// Which way a measure improves, so a ratio reads as "Univrs is N× better".
#[derive(Clone, Copy)]
pub enum Better {
    /// More is better (throughput): the ratio is Univrs over Kubernetes.
    Higher,
    /// Less is better (latency, memory, CPU): the ratio is Kubernetes over Univrs.
    Lower,
}

/// A table with one row per measure: Univrs, Kubernetes, and the ratio in Univrs's favour
/// (above 1 when Univrs does better, below 1 when Kubernetes does).
pub struct SideBySide {
    rows: Vec<String>,
}

impl SideBySide {
    /// Prints the title, the settings and the machine's load, and starts the table.
    pub fn new(title: &str, settings: &str) -> Self {
        println!();
        println!("### {title}");
        println!();
        println!("Settings: {settings}. Machine: {}.", machine_load());
        println!();
        Self { rows: Vec::new() }
    }

    /// A row of two measures in `unit`.
    pub fn row(&mut self, what: &str, univrs: f64, kubernetes: f64, unit: &str, better: Better) {
        let r = ratio(univrs, kubernetes, better);
        self.rows.push(format!(
            "| {what} | {} {unit} | {} {unit} | {} |",
            fmt(univrs),
            fmt(kubernetes),
            if r.is_finite() {
                format!("{r:.2}×")
            } else {
                "–".into()
            }
        ));
    }

    /// A row that is not a comparison (a setting, a count), shown in both columns as given.
    pub fn note(&mut self, what: &str, univrs: &str, kubernetes: &str) {
        self.rows
            .push(format!("| {what} | {univrs} | {kubernetes} | |"));
    }

    /// Prints the rows.
    pub fn print(self) {
        println!("| measure | Univrs | Kubernetes | ratio (Univrs's favour) |");
        println!("|---|---|---|---|");
        for r in self.rows {
            println!("{r}");
        }
    }
}

/// Univrs's advantage: `u / k` when more is better, `k / u` when less is.
pub fn ratio(univrs: f64, kubernetes: f64, better: Better) -> f64 {
    match better {
        Better::Higher => univrs / kubernetes,
        Better::Lower => kubernetes / univrs,
    }
}

/// Three significant digits, without a pointless fraction.
fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_favour_whoever_does_better() {
        assert_eq!(ratio(600.0, 300.0, Better::Higher), 2.0);
        assert_eq!(ratio(50.0, 500.0, Better::Lower), 10.0);
        assert!(ratio(100.0, 200.0, Better::Higher) < 1.0);
    }

    #[test]
    fn writes_are_counted_by_verb() {
        let key = |v: &str| (v.to_string(), "leases".to_string(), "200".to_string());
        let before = Requests::from([(key("PUT"), 10.0), (key("GET"), 5.0)]);
        let after = Requests::from([(key("PUT"), 25.0), (key("GET"), 50.0), (key("POST"), 3.0)]);
        assert_eq!(writes_between(&before, &after), 18.0);
    }
}

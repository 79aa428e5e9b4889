//! The scheduler's node index: one [`NodeView`] per node, kept current by the watch streams
//! (Nodes, node Leases, Workloads) apart from the reflector caches, so a placement reads
//! ready-made views instead of rebuilding thousands of them from the caches each time.
//!
//! What is allocated on each node is tracked incrementally, per workload: each workload's
//! placed instances as last *observed* (a watch event, or the response to the controller's own
//! write), and the placement a reconcile has *assumed* since deciding it, until its write is
//! answered (kube-scheduler's assume cache). Assumed placements count against their nodes from
//! the moment they are decided, so plans made concurrently never give the same room twice; a
//! refused write releases them. Stale watch events (a resourceVersion older than the one
//! recorded) are ignored, and so is a write answered after its object's deletion
//! (`tombstones`). The Node status reports observed allocations only.
//!
//! Each update says what it changed, so the watch feeds can wake exactly the objects concerned.
//! Pure: no I/O.

use crate::core::plan::node::service_base;
use crate::core::quote;
use crate::core::resources::{HostPort, Resources};
use crate::core::scheduler::NodeView;
use crate::core::snapshot;
use crate::state::tombstones::Tombstones;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use univrs_api::enr::pricing::Market;
use univrs_api::resources::node::{DRAIN_ANNOTATION, NexusRole, SeptalState};
use univrs_api::{Node, Workload};

/// A workload's key.
pub type WorkloadRef = ObjectRef<Workload>;

/// What a workload holds, as last observed and as assumed since.
#[derive(Clone, Debug, Default)]
struct Tracked {
    /// The resourceVersion observed (None when it does not parse as a number).
    version: Option<u64>,
    /// What one instance reserves.
    per_instance: Resources,
    /// The host ports each instance publishes.
    host_ports: Vec<HostPort>,
    /// Desired instances.
    replicas: usize,
    /// The node of each placed instance, as observed.
    observed: Vec<String>,
    /// The node of each instance as decided by a reconcile whose write is not answered yet.
    assumed: Option<Vec<String>>,
}

impl Tracked {
    fn effective(&self) -> &[String] {
        self.assumed.as_deref().unwrap_or(&self.observed)
    }
}

/// What about a node decides who must hear of its changes.
#[derive(Clone, Debug, PartialEq)]
struct Facts {
    /// Everything placement filters on: cordon, isolation, capacity, the spec's generation
    /// (rates), reputation in thousandths, and the labels and whom it pays for (hashed: they
    /// do not bump the generation). A change may make room.
    schedulable: (bool, bool, Resources, i64, u64, u64),
    /// The Ready condition the Node reconciler wrote.
    ready_condition: bool,
    /// Being deleted, drained or isolated: its instances may have to move.
    must_empty: (bool, bool, bool),
    /// What its vouches are judged by: its DID and service record.
    vouching: (String, u64),
}

impl Facts {
    fn of(n: &Node, view: &NodeView) -> Self {
        let status = n.status.as_ref();
        Self {
            schedulable: (
                view.unschedulable,
                view.isolated,
                view.capacity,
                n.metadata.generation.unwrap_or(0),
                (view.reputation * 1000.0).round() as u64,
                {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    view.labels.hash(&mut h);
                    view.pays_for.hash(&mut h);
                    h.finish()
                },
            ),
            ready_condition: status.is_some_and(|s| {
                univrs_api::conditions::is_true(
                    &s.conditions,
                    univrs_api::resources::node::CONDITION_READY,
                )
            }),
            must_empty: (
                n.metadata.deletion_timestamp.is_some(),
                n.annotations()
                    .get(DRAIN_ANNOTATION)
                    .is_some_and(|v| v == "true"),
                view.isolated,
            ),
            vouching: (
                n.spec.did.clone(),
                (service_base(n) * 10_000.0).round() as u64,
            ),
        }
    }
}

/// Who must hear of a node's change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeChange {
    /// It may now take instances it could not before: wake the waiting workloads.
    pub may_make_room: bool,
    /// Its instances may have to move: wake the workloads placed there.
    pub affects_instances: bool,
    /// Its DID or service record changed, or it came or went: re-judge its vouches.
    pub affects_vouches: bool,
    /// It came or went: credit lines naming it change their verdict.
    pub appeared_or_left: bool,
    /// Its reputation moved: lines it owes on under the Reputation policy change their limit.
    pub reputation_moved: bool,
}

/// What a workload's change did to the nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadChange {
    /// Nodes whose observed allocation changed (their status reports it).
    pub nodes: Vec<String>,
    /// Some node has more room than before: wake the waiting workloads.
    pub freed: bool,
}

/// The node index.
#[derive(Default)]
pub struct NodeIndex {
    /// Sorted by name.
    views: Vec<NodeView>,
    /// Each view's facts, in the same order.
    facts: Vec<Facts>,
    /// When each view's Lease lapses, in the same order (a copy of `lapses`, read per plan).
    view_lapses: Vec<Option<Timestamp>>,
    /// Name → position in `views`.
    position: HashMap<String, usize>,
    /// When each node's Lease lapses (also for nodes not seen yet).
    lapses: HashMap<String, Timestamp>,
    workloads: HashMap<WorkloadRef, Tracked>,
    /// Per node, what scheduling counts: assumed placements where there are, else observed.
    effective: HashMap<String, Resources>,
    /// Per node, the host ports taken by the same placements, with how many instances hold
    /// each (an observed double booking must not free the port when one of them leaves).
    ports: HashMap<String, BTreeMap<HostPort, u32>>,
    /// Per node, observed placements: resources and instance count.
    observed: HashMap<String, (Resources, u32)>,
    /// Per node, the workloads with an instance there (effective or observed).
    holders: HashMap<String, HashSet<WorkloadRef>>,
    /// Per node, the newest resourceVersion seen (watch or write).
    node_versions: HashMap<String, u64>,
    /// Per node, the nodes whose agents report on it (`status.observations.peers`), so its
    /// peer view reads those few Nodes instead of every Node there is.
    reporters: HashMap<String, BTreeSet<String>>,
    /// Per node, the nodes its agent reports on (to take back what `reporters` holds for it).
    reports: HashMap<String, Vec<String>>,
    /// How many nodes have a Ready condition.
    ready: usize,
    /// Deleted nodes and workloads.
    gone_nodes: Tombstones<String>,
    gone_workloads: Tombstones<WorkloadRef>,
}

fn version(rv: Option<&str>) -> Option<u64> {
    rv.and_then(|v| v.parse().ok())
}

/// The other nodes `n`'s agent reports on, each once.
fn subjects_of(n: &Node) -> Vec<String> {
    let me = n.metadata.name.as_deref();
    let subjects: BTreeSet<&str> = n
        .status
        .iter()
        .filter_map(|s| s.observations.as_ref())
        .flat_map(|o| o.peers.iter())
        .map(|p| p.node.as_str())
        .filter(|p| Some(*p) != me)
        .collect();
    subjects.into_iter().map(str::to_string).collect()
}

/// The scheduler's view of a node, without allocations or readiness (the index sets those).
pub fn view_of(n: &Node) -> NodeView {
    let status = n.status.as_ref();
    NodeView {
        name: n.name_any(),
        labels: n.labels().clone(),
        ready: false,
        // A node being deleted takes nothing new, like a cordoned one.
        unschedulable: n.spec.unschedulable || n.metadata.deletion_timestamp.is_some(),
        isolated: status
            .and_then(|s| s.septal.as_ref())
            .is_some_and(|s| s.state == SeptalState::Isolated),
        traffic: status
            .and_then(|s| s.septal.as_ref())
            .filter(|s| s.state == SeptalState::Recovering)
            .map_or(1.0, |s| s.traffic.unwrap_or(0.0).clamp(0.0, 1.0)),
        capacity: capacity_of(n),
        allocated: Resources::default(),
        host_ports: Vec::new(),
        host_port_range: n
            .spec
            .host_ports
            .and_then(|r| Some((u16::try_from(r.min).ok()?, u16::try_from(r.max).ok()?))),
        pays_for: univrs_api::resources::node::pays_for(n),
        reputation: crate::core::snapshot::reputation_of(n),
        nexus: status
            .and_then(|s| s.nexus_role)
            .is_some_and(|r| r != NexusRole::Leaf),
        credit_balance: status.and_then(|s| s.credit_balance).unwrap_or(0),
        pricing: n
            .spec
            .pricing
            .clone()
            .unwrap_or_else(snapshot::default_pricing),
        price_multiplier: price_multiplier_of(n),
        price_memo: Default::default(),
    }
}

/// A node's entropy price multiplier (1 until the controller has written its entropy).
pub fn price_multiplier_of(n: &Node) -> f64 {
    n.status
        .as_ref()
        .and_then(|s| s.entropy.as_ref())
        .map_or(1.0, |e| e.price_multiplier_milli as f64 / 1000.0)
}

/// A node's capacity.
pub fn capacity_of(n: &Node) -> Resources {
    Resources {
        cpu_millis: n.spec.capacity.cpu_millis().unwrap_or(0),
        memory_bytes: n.spec.capacity.memory_bytes().unwrap_or(0),
        gpus: n.spec.capacity.gpu.max(0) as u32,
    }
}

/// A workload's record as observed, nothing assumed.
fn tracked_of(w: &Workload) -> Tracked {
    Tracked {
        version: version(w.metadata.resource_version.as_deref()),
        per_instance: snapshot::instance_request(&w.spec),
        host_ports: snapshot::host_ports(&w.spec),
        replicas: w.spec.replicas.max(0) as usize,
        observed: w
            .status
            .iter()
            .flat_map(|s| &s.instances)
            .filter_map(|i| i.node.clone())
            .collect(),
        assumed: None,
    }
}

fn add(map: &mut HashMap<String, Resources>, node: &str, r: Resources, plus: bool) {
    let e = map.entry(node.to_string()).or_default();
    *e = if plus { e.plus(r) } else { e.minus(r) };
    if *e == Resources::default() {
        map.remove(node);
    }
}

/// Counts `ports` in or out of a node's host ports.
fn add_ports(
    map: &mut HashMap<String, BTreeMap<HostPort, u32>>,
    node: &str,
    ports: &[HostPort],
    plus: bool,
) {
    if ports.is_empty() {
        return;
    }
    let held = map.entry(node.to_string()).or_default();
    for p in ports {
        let n = held.entry(*p).or_default();
        *n = if plus { *n + 1 } else { n.saturating_sub(1) };
        if *n == 0 {
            held.remove(p);
        }
    }
    if held.is_empty() {
        map.remove(node);
    }
}

/// The host ports taken on a node, as a view lists them.
fn ports_on(map: &HashMap<String, BTreeMap<HostPort, u32>>, node: &str) -> Vec<HostPort> {
    map.get(node)
        .map(|h| h.keys().copied().collect())
        .unwrap_or_default()
}

impl NodeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many nodes it knows.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether it knows no node.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Adds or updates a node (a watch event, or the answer to the controller's own write).
    /// Returns what changed, and false when this version was seen already (or is older).
    pub fn upsert_node(&mut self, n: &Node) -> (NodeChange, bool) {
        let name = n.name_any();
        let v = version(n.metadata.resource_version.as_deref());
        if self.gone_nodes.buries(&name, v) {
            return (NodeChange::default(), false);
        }
        self.gone_nodes.exhume(&name);
        if let Some(v) = v {
            let known = self.node_versions.entry(name).or_insert(0);
            if v <= *known {
                return (NodeChange::default(), false);
            }
            *known = v;
        }
        (self.upsert_view(n), true)
    }

    /// Whether the index has seen a newer version of the node than `rv` (the cache lags
    /// behind a write the controller made).
    pub fn node_is_newer_than(&self, name: &str, rv: Option<&str>) -> bool {
        match (self.node_versions.get(name), version(rv)) {
            (Some(known), Some(seen)) => *known > seen,
            _ => false,
        }
    }

    fn upsert_view(&mut self, n: &Node) -> NodeChange {
        let mut view = view_of(n);
        let facts = Facts::of(n, &view);
        self.set_reports(&view.name, subjects_of(n));
        self.ready += usize::from(facts.ready_condition);
        view.allocated = self.effective.get(&view.name).copied().unwrap_or_default();
        view.host_ports = ports_on(&self.ports, &view.name);
        match self.position.get(&view.name).copied() {
            Some(i) => {
                let before = std::mem::replace(&mut self.facts[i], facts.clone());
                self.ready -= usize::from(before.ready_condition);
                view.ready = self.views[i].ready;
                self.views[i] = view;
                NodeChange {
                    may_make_room: before.schedulable != facts.schedulable
                        || (facts.ready_condition && !before.ready_condition),
                    affects_instances: before.must_empty != facts.must_empty
                        || before.ready_condition != facts.ready_condition,
                    affects_vouches: before.vouching != facts.vouching,
                    appeared_or_left: false,
                    reputation_moved: before.schedulable.4 != facts.schedulable.4,
                }
            }
            None => {
                let at = self.views.partition_point(|v| v.name < view.name);
                self.view_lapses
                    .insert(at, self.lapses.get(&view.name).copied());
                self.views.insert(at, view);
                self.facts.insert(at, facts);
                self.reposition(at);
                NodeChange {
                    may_make_room: true,
                    affects_instances: true,
                    affects_vouches: true,
                    appeared_or_left: true,
                    reputation_moved: true,
                }
            }
        }
    }

    /// Forgets a deleted node (`n` as last seen).
    pub fn remove_node(&mut self, n: &Node) -> NodeChange {
        let name = n.name_any();
        let v = version(n.metadata.resource_version.as_deref());
        let known = self.node_versions.remove(&name);
        self.gone_nodes.bury(name.clone(), v.max(known));
        let Some(at) = self.position.remove(&name) else {
            return NodeChange::default();
        };
        self.views.remove(at);
        let facts = self.facts.remove(at);
        self.ready -= usize::from(facts.ready_condition);
        self.set_reports(&name, Vec::new());
        self.view_lapses.remove(at);
        self.reposition(at);
        NodeChange {
            may_make_room: false,
            affects_instances: true,
            affects_vouches: true,
            appeared_or_left: true,
            reputation_moved: true,
        }
    }

    /// Records whom `reporter`'s agent reports on now, replacing what it reported before.
    fn set_reports(&mut self, reporter: &str, subjects: Vec<String>) {
        for old in self.reports.remove(reporter).unwrap_or_default() {
            if let Some(r) = self.reporters.get_mut(&old) {
                r.remove(reporter);
                if r.is_empty() {
                    self.reporters.remove(&old);
                }
            }
        }
        if subjects.is_empty() {
            return;
        }
        for s in &subjects {
            self.reporters
                .entry(s.clone())
                .or_default()
                .insert(reporter.to_string());
        }
        self.reports.insert(reporter.to_string(), subjects);
    }

    /// The nodes whose agents report on `node`, by name.
    pub fn reporters_on(&self, node: &str) -> Vec<String> {
        self.reporters
            .get(node)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The nodes `node`'s agent reports on, by name.
    pub fn reported_by(&self, node: &str) -> Vec<String> {
        self.reports.get(node).cloned().unwrap_or_default()
    }

    /// How many nodes other than `node` have a Ready condition (who could report on it).
    pub fn ready_others(&self, node: &str) -> usize {
        let own = self
            .position
            .get(node)
            .is_some_and(|&i| self.facts[i].ready_condition);
        self.ready - usize::from(own)
    }

    /// The nodes it knows, by name.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.views.iter().map(|v| v.name.as_str())
    }

    fn reposition(&mut self, from: usize) {
        for (i, v) in self.views.iter().enumerate().skip(from) {
            self.position.insert(v.name.clone(), i);
        }
    }

    /// Records a node's Lease (None: it has none). Returns whether the node's readiness may
    /// have changed at `now`: a renewal of a Lease that was fresh and stays fresh changes
    /// nothing (the Node reconciler looks again when it would lapse), so agents renewing every
    /// few seconds do not each wake a reconcile.
    pub fn set_lease(
        &mut self,
        node: &str,
        lease: Option<&Lease>,
        now: Timestamp,
        duration: std::time::Duration,
    ) -> bool {
        let lapses = lease.and_then(|l| snapshot::lapses_at(l, duration));
        let fresh = |t: Option<Timestamp>| t.is_some_and(|t| t > now);
        let before = self.lapses.get(node).copied();
        let changes = !(fresh(before) && fresh(lapses));
        match lapses {
            Some(t) => self.lapses.insert(node.to_string(), t),
            None => self.lapses.remove(node),
        };
        if let Some(&i) = self.position.get(node) {
            self.view_lapses[i] = lapses;
        }
        changes
    }

    /// Records a workload as observed. Returns what it changed on the nodes, and false when
    /// this version was seen already (the answer to the controller's own write) or is older.
    pub fn observe_workload(&mut self, w: &Workload) -> (WorkloadChange, bool) {
        let key = WorkloadRef::from_obj(w);
        let v = version(w.metadata.resource_version.as_deref());
        if self.gone_workloads.buries(&key, v) {
            return (WorkloadChange::default(), false);
        }
        self.gone_workloads.exhume(&key);
        if let (Some(known), Some(new)) = (self.workloads.get(&key).and_then(|t| t.version), v)
            && new <= known
        {
            return (WorkloadChange::default(), false);
        }
        let next = Tracked {
            assumed: self.workloads.get(&key).and_then(|t| t.assumed.clone()),
            ..tracked_of(w)
        };
        (self.replace(key, Some(next)), true)
    }

    /// Forgets a deleted workload (`w` as last seen).
    pub fn forget_workload(&mut self, w: &Workload) -> WorkloadChange {
        let key = WorkloadRef::from_obj(w);
        let v = version(w.metadata.resource_version.as_deref());
        let known = self.workloads.get(&key).and_then(|t| t.version);
        self.gone_workloads.bury(key.clone(), v.max(known));
        self.replace(key, None)
    }

    /// The workloads it tracks.
    pub fn workload_refs(&self) -> Vec<WorkloadRef> {
        self.workloads.keys().cloned().collect()
    }

    /// Whether the index holds a newer version of the workload than `rv` (the cache lags
    /// behind a write the controller made).
    pub fn is_newer_than(&self, key: &WorkloadRef, rv: Option<&str>) -> bool {
        match (self.workloads.get(key).and_then(|t| t.version), version(rv)) {
            (Some(known), Some(seen)) => known > seen,
            _ => false,
        }
    }

    /// Swaps a workload's record for `next`, keeping every per-node total in step.
    fn replace(&mut self, key: WorkloadRef, next: Option<Tracked>) -> WorkloadChange {
        let before = self.workloads.remove(&key);
        let mut change = WorkloadChange::default();
        let mut touched_observed: HashSet<String> = HashSet::new();
        let mut touched_effective: HashSet<String> = HashSet::new();
        if let Some(b) = &before {
            for n in b.effective() {
                add(&mut self.effective, n, b.per_instance, false);
                add_ports(&mut self.ports, n, &b.host_ports, false);
                touched_effective.insert(n.clone());
            }
            for n in &b.observed {
                let e = self.observed.entry(n.clone()).or_default();
                e.0 = e.0.minus(b.per_instance);
                e.1 = e.1.saturating_sub(1);
                touched_observed.insert(n.clone());
            }
            for n in b.effective().iter().chain(&b.observed) {
                if let Some(h) = self.holders.get_mut(n) {
                    h.remove(&key);
                    if h.is_empty() {
                        self.holders.remove(n);
                    }
                }
            }
        }
        if let Some(t) = &next {
            for n in t.effective() {
                add(&mut self.effective, n, t.per_instance, true);
                add_ports(&mut self.ports, n, &t.host_ports, true);
                touched_effective.insert(n.clone());
            }
            for n in &t.observed {
                let e = self.observed.entry(n.clone()).or_default();
                e.0 = e.0.plus(t.per_instance);
                e.1 += 1;
                touched_observed.insert(n.clone());
            }
            for n in t.effective().iter().chain(&t.observed) {
                self.holders
                    .entry(n.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        for n in touched_effective {
            let now = self.effective.get(&n).copied().unwrap_or_default();
            if let Some(&i) = self.position.get(&n) {
                let was = self.views[i].allocated;
                let ports = ports_on(&self.ports, &n);
                let view = &mut self.views[i];
                change.freed |= now.cpu_millis < was.cpu_millis
                    || now.memory_bytes < was.memory_bytes
                    || now.gpus < was.gpus
                    || view
                        .host_ports
                        .iter()
                        .any(|p| ports.binary_search(p).is_err());
                view.allocated = now;
                view.host_ports = ports;
            }
        }
        let observed_of = |w: &Option<Tracked>, n: &str| {
            w.as_ref()
                .map_or(0, |t| t.observed.iter().filter(|o| *o == n).count())
        };
        for n in touched_observed {
            if self.observed.get(&n).is_some_and(|o| o.1 == 0) {
                self.observed.remove(&n);
            }
            let same_request =
                before.as_ref().map(|b| b.per_instance) == next.as_ref().map(|t| t.per_instance);
            if !same_request || observed_of(&before, &n) != observed_of(&next, &n) {
                change.nodes.push(n);
            }
        }
        change.nodes.sort();
        if let Some(t) = next {
            self.workloads.insert(key, t);
        }
        change
    }

    /// Plans `key`'s placement under the index: `decide` gets the views (each `ready` as of
    /// `now`, each `allocated` and `host_ports` without this workload's own instances) with
    /// their positions by name, and returns a result and the node of every instance the
    /// workload keeps or gets; that placement (each instance reserving `per_instance` and
    /// `host_ports`) is assumed from then on, until [`Self::confirm`] or [`Self::release`].
    /// Also says whether the plan leaves some node with more room than before (a scale-down,
    /// a move, a smaller request), so the caller wakes the waiting workloads: the confirmation
    /// compares with what was assumed and would not tell.
    pub fn assume<T>(
        &mut self,
        key: &WorkloadRef,
        per_instance: Resources,
        host_ports: Vec<HostPort>,
        replicas: usize,
        now: Timestamp,
        decide: impl FnOnce(&[NodeView], &HashMap<String, usize>) -> (T, Vec<String>),
    ) -> (T, bool) {
        let mut tracked = self.workloads.get(key).cloned().unwrap_or_default();
        let held_before = tracked.effective().to_vec();
        // Take the workload's own instances out, so the views show the room they hold.
        self.replace(key.clone(), None);
        for (v, lapses) in self.views.iter_mut().zip(&self.view_lapses) {
            v.ready = lapses.is_some_and(|t| t > now);
        }
        let (out, nodes) = decide(&self.views, &self.position);
        let count = |ns: &[String], n: &String| ns.iter().filter(|m| *m == n).count();
        let freed = (!held_before.is_empty()
            && (tracked.per_instance != per_instance || tracked.host_ports != host_ports))
            || held_before
                .iter()
                .any(|n| count(&nodes, n) < count(&held_before, n));
        tracked.per_instance = per_instance;
        tracked.host_ports = host_ports;
        tracked.replicas = replicas;
        tracked.assumed = Some(nodes);
        self.replace(key.clone(), Some(tracked));
        (out, freed)
    }

    /// The controller's write of the workload was answered with `written`: what it holds now
    /// is observed, no longer assumed.
    pub fn confirm(&mut self, written: &Workload) -> WorkloadChange {
        let key = WorkloadRef::from_obj(written);
        if self
            .gone_workloads
            .buries(&key, version(written.metadata.resource_version.as_deref()))
        {
            // Deleted while the write was answered.
            return self.release(&key);
        }
        let current = self.workloads.get(&key);
        let newer = match (
            current.and_then(|t| t.version),
            version(written.metadata.resource_version.as_deref()),
        ) {
            (Some(known), Some(new)) => new > known,
            _ => true,
        };
        // One swap, so the room the assumption held is never seen freed in between.
        let next = match current {
            Some(t) if !newer => Tracked {
                assumed: None,
                ..t.clone()
            },
            _ => tracked_of(written),
        };
        self.replace(key, Some(next))
    }

    /// The workload's plan was not written (refused, failed or not needed): drop what was
    /// assumed.
    pub fn release(&mut self, key: &WorkloadRef) -> WorkloadChange {
        match self.workloads.get(key) {
            Some(t) if t.assumed.is_some() => {
                let mut t = t.clone();
                t.assumed = None;
                self.replace(key.clone(), Some(t))
            }
            _ => WorkloadChange::default(),
        }
    }

    /// What is placed on a node as observed: resources and instance count.
    pub fn observed_on(&self, node: &str) -> (Resources, u32) {
        self.observed.get(node).copied().unwrap_or_default()
    }

    /// The market a node prices in, from its capacity and what is observed placed there.
    pub fn market_of(&self, node: &Node) -> Market {
        quote::market(
            capacity_of(node),
            self.observed_on(&node.name_any()).0,
            price_multiplier_of(node),
        )
    }

    /// The nodes whose earnings pay for the Workloads of namespace `org`, by name.
    pub fn payers_for(&self, org: &str) -> Vec<String> {
        self.views
            .iter()
            .filter(|v| v.pays_for.iter().any(|o| o == org))
            .map(|v| v.name.clone())
            .collect()
    }

    /// The workloads with an instance on `node`.
    pub fn holders_of(&self, node: &str) -> Vec<WorkloadRef> {
        self.holders
            .get(node)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The workloads with fewer instances placed than replicas.
    pub fn waiting(&self) -> Vec<WorkloadRef> {
        self.workloads
            .iter()
            .filter(|(_, t)| t.effective().len() < t.replicas)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node",
            "metadata": {"name": name, "generation": 1},
            "spec": {"peerId": "p", "did": "d", "capacity": {"cpu": "1", "memory": "1Gi"}}
        }))
        .unwrap()
    }

    fn workload(name: &str, rv: u64, nodes: &[&str]) -> Workload {
        let instances: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| serde_json::json!({"name": format!("{name}-{i}"), "node": n}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string()},
            "spec": {"replicas": 2, "containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "250m", "memory": "1Mi"}}}]},
            "status": {"instances": instances}
        }))
        .unwrap()
    }

    fn cpu(index: &NodeIndex, node: &str) -> u64 {
        index.views[index.position[node]].allocated.cpu_millis
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn lease(node: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("univrs-node-{node}")},
            "spec": {"renewTime": "2023-11-14T22:13:15.000000Z", "leaseDurationSeconds": 10}
        }))
        .unwrap()
    }

    #[test]
    fn keeps_views_sorted_and_allocations_incremental() {
        let mut index = NodeIndex::new();
        for n in ["c", "a", "b"] {
            assert!(index.upsert_node(&node(n)).0.appeared_or_left);
        }
        assert_eq!(index.node_names().collect::<Vec<_>>(), ["a", "b", "c"]);
        let (change, news) = index.observe_workload(&workload("w", 5, &["a", "b"]));
        assert!(news);
        assert_eq!(change.nodes, ["a", "b"]);
        assert_eq!((cpu(&index, "a"), cpu(&index, "b")), (250, 250));
        assert_eq!(index.observed_on("a").1, 1);
        // Moving one instance frees its node and tells both nodes.
        let (change, _) = index.observe_workload(&workload("w", 6, &["a", "c"]));
        assert_eq!(change.nodes, ["b", "c"]);
        assert!(change.freed);
        // A stale event changes nothing.
        assert_eq!(
            index.observe_workload(&workload("w", 4, &["b", "b"])),
            (WorkloadChange::default(), false)
        );
        assert_eq!(cpu(&index, "b"), 0);
        // A node that comes later picks up what is placed on it.
        let mut c = node("c");
        c.metadata.resource_version = Some("3".into());
        index.remove_node(&c);
        assert_eq!(
            index.upsert_node(&c),
            (NodeChange::default(), false),
            "deleted"
        );
        c.metadata.resource_version = Some("9".into());
        assert!(index.upsert_node(&c).0.appeared_or_left, "created again");
        assert_eq!(cpu(&index, "c"), 250);
        assert_eq!(
            index.holders_of("c"),
            vec![WorkloadRef::new("w").within("ns")]
        );
        let change = index.forget_workload(&workload("w", 7, &["a", "c"]));
        assert!(change.freed && change.nodes == ["a", "c"]);
        // The answer to a write that crossed the deletion does not bring it back.
        assert_eq!(
            index.confirm(&workload("w", 7, &["a", "c"])),
            WorkloadChange::default()
        );
        assert_eq!(
            (cpu(&index, "a"), index.observed_on("a")),
            (0, Default::default())
        );
        assert!(
            index.observe_workload(&workload("w", 8, &["a"])).1,
            "created again"
        );
        assert_eq!(cpu(&index, "a"), 250);
    }

    #[test]
    fn host_ports_are_held_by_placements_and_freed_when_they_leave() {
        let mut index = NodeIndex::new();
        for n in ["a", "b"] {
            index.upsert_node(&node(n));
        }
        let web = |rv, nodes: &[&str]| {
            let mut w = serde_json::to_value(workload("web", rv, nodes)).unwrap();
            w["spec"]["containers"][0]["ports"] =
                serde_json::json!([{"containerPort": 80, "hostPort": 8080}]);
            serde_json::from_value::<Workload>(w).unwrap()
        };
        let w = web(1, &["a", "b"]);
        index.observe_workload(&w);
        let http = HostPort {
            port: 8080,
            udp: false,
        };
        let ports = |index: &NodeIndex, n: &str| index.views[index.position[n]].host_ports.clone();
        assert_eq!(
            (ports(&index, "a"), ports(&index, "b")),
            (vec![http], vec![http])
        );
        // Planning the workload itself shows its own ports out of the way.
        let key = WorkloadRef::from_obj(&w);
        let per = snapshot::instance_request(&w.spec);
        let ((), freed) = index.assume(&key, per, vec![http], 2, now(), |views, _| {
            assert!(views.iter().all(|v| v.host_ports.is_empty()));
            ((), vec!["a".to_string()])
        });
        // Leaving b frees its port, which wakes the waiting workloads.
        assert!(freed);
        assert_eq!(
            (ports(&index, "a"), ports(&index, "b")),
            (vec![http], vec![])
        );
        index.confirm(&web(2, &["a"]));
        assert_eq!(
            (ports(&index, "a"), ports(&index, "b")),
            (vec![http], vec![])
        );
    }

    #[test]
    fn assumed_placements_count_until_confirmed_or_released() {
        let mut index = NodeIndex::new();
        for n in ["a", "b"] {
            index.upsert_node(&node(n));
            assert!(
                index.set_lease(
                    n,
                    Some(&lease(n)),
                    now(),
                    std::time::Duration::from_secs(40)
                ),
                "a first Lease"
            );
            assert!(
                !index.set_lease(
                    n,
                    Some(&lease(n)),
                    now(),
                    std::time::Duration::from_secs(40)
                ),
                "a renewal"
            );
        }
        let w = workload("w", 1, &[]);
        let key = WorkloadRef::from_obj(&w);
        index.observe_workload(&w);
        assert_eq!(index.waiting(), vec![key.clone()]);
        let per = snapshot::instance_request(&w.spec);
        let (ready, freed) = index.assume(&key, per, Vec::new(), 2, now(), |views, _| {
            let ready = views
                .iter()
                .all(|v| v.ready && v.allocated == Resources::default());
            (ready, vec!["a".to_string(), "a".to_string()])
        });
        assert!(ready, "fresh Leases, nothing placed yet");
        assert!(!freed);
        // Another plan sees the assumed room taken, and the node status does not.
        assert_eq!(cpu(&index, "a"), 500);
        assert_eq!(index.observed_on("a").1, 0);
        assert!(index.waiting().is_empty());
        // Re-planning the same workload sees its own instances out of the way.
        index.assume(&key, per, Vec::new(), 2, now(), |views, position| {
            assert_eq!(views[position["a"]].allocated, Resources::default());
            ((), vec!["a".to_string(), "b".to_string()])
        });
        assert_eq!((cpu(&index, "a"), cpu(&index, "b")), (250, 250));
        index.release(&key);
        assert_eq!((cpu(&index, "a"), cpu(&index, "b")), (0, 0));
        index.assume(&key, per, Vec::new(), 2, now(), |_, _| {
            ((), vec!["b".to_string(), "b".to_string()])
        });
        let change = index.confirm(&workload("w", 2, &["b", "b"]));
        assert_eq!(change.nodes, ["b"]);
        assert_eq!((cpu(&index, "b"), index.observed_on("b").1), (500, 2));
        assert!(index.is_newer_than(&key, Some("1")));
        // The watch then brings the same version: nothing changes.
        assert_eq!(
            index.observe_workload(&workload("w", 2, &["b", "b"])),
            (WorkloadChange::default(), false),
            "the answer to its own write wakes nothing"
        );
    }

    #[test]
    fn node_changes_say_who_must_hear_of_them() {
        let mut index = NodeIndex::new();
        index.upsert_node(&node("a"));
        assert_eq!(index.upsert_node(&node("a")), (NodeChange::default(), true));
        let mut cordoned = node("a");
        cordoned.spec.unschedulable = true;
        assert!(index.upsert_node(&cordoned).0.may_make_room);
        cordoned
            .metadata
            .labels
            .get_or_insert_default()
            .insert("gpu".into(), "true".into());
        assert!(index.upsert_node(&cordoned).0.may_make_room, "labels");
        let mut drained = cordoned.clone();
        drained
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(DRAIN_ANNOTATION.into(), "true".into());
        let (c, _) = index.upsert_node(&drained);
        assert!(c.affects_instances && !c.may_make_room && !c.affects_vouches);
        assert!(index.remove_node(&drained).appeared_or_left);
        assert!(index.is_empty());
    }

    /// A Node at version `rv`, Ready or not, whose agent reports on `peers`.
    fn reporting(name: &str, rv: u64, ready: bool, peers: &[&str]) -> Node {
        let reports: Vec<serde_json::Value> = peers
            .iter()
            .map(|p| serde_json::json!({"node": p, "connected": true}))
            .collect();
        let mut n = node(name);
        n.metadata.resource_version = Some(rv.to_string());
        n.status = serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "observations": {"peers": reports}
        }))
        .unwrap();
        n
    }

    #[test]
    fn knows_who_reports_on_whom_and_how_many_are_ready() {
        let mut index = NodeIndex::new();
        index.upsert_node(&reporting("a", 1, true, &["b", "c", "a"]));
        index.upsert_node(&reporting("b", 2, true, &["c"]));
        index.upsert_node(&reporting("c", 3, false, &[]));
        assert_eq!(index.reporters_on("c"), ["a", "b"]);
        assert_eq!(index.reporters_on("b"), ["a"]);
        // Its own report on itself is no witness.
        assert!(index.reporters_on("a").is_empty());
        assert_eq!(index.ready_others("c"), 2);
        assert_eq!(index.ready_others("a"), 1);

        // A's agent stops reporting on c and a goes unready; b reports on a instead.
        index.upsert_node(&reporting("a", 4, false, &["b"]));
        index.upsert_node(&reporting("b", 5, true, &["a"]));
        assert!(index.reporters_on("c").is_empty());
        assert_eq!(index.reported_by("a"), ["b"]);
        assert_eq!(index.reporters_on("a"), ["b"]);
        assert_eq!(index.reporters_on("b"), ["a"]);
        assert_eq!(index.ready_others("c"), 1);
        assert_eq!(index.ready_others("b"), 0);
        // An old version changes nothing.
        index.upsert_node(&reporting("b", 2, true, &["c"]));
        assert!(index.reporters_on("c").is_empty());

        // A deleted node's reports and readiness go with it.
        index.remove_node(&reporting("b", 5, true, &["a"]));
        assert!(index.reporters_on("a").is_empty());
        assert_eq!(index.ready_others("a"), 0);
        assert_eq!(index.ready, 0);
    }
}

//! One task per instance on this node: from what should run (its [`DesiredInstance`]) to what
//! runs — images, network, containers through the runtime, restarts with backoff, probes,
//! usage — and, when it should no longer run, a graceful stop and a full clean-up.
//!
//! Runtime calls block briefly (files, process spawns), so they go to blocking threads; the
//! runtime itself never forks this process (see [`crate::runtime`]).

use super::desired::{DesiredInstance, container_hash, container_id};
use super::probe::{self, ProbeState, Target};
use super::records::{ContainerRecord, InstanceRecord, Records};
use super::reports::{InstanceReport, Reports};
use super::sandbox::{Image, Sandbox};
use crate::fsutil::now_ms;
use crate::image::DockerConfig;
use crate::network::PolicyJob;
use crate::runtime::spec::UserNamespace;
use crate::runtime::{
    ContainerConfig, ContainerState, Created, ExitRecord, RuntimeClient, RuntimeError,
};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use univrs_api::quantity::Quantity;
use univrs_api::registry_auth::sealed_context;
use univrs_api::resources::workload::{
    Container, InstancePhase, InstanceUsage, RestartPolicy, Workload, WorkloadSpec,
};
use univrs_io::events::{EventType, Publisher};

/// How often a supervisor looks at its containers.
const TICK: Duration = Duration::from_millis(500);
/// How often usage is saved to the record (it is reported more often from memory).
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// A run this long resets the crash backoff (as kubelet does after 10 minutes).
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// What every supervisor shares.
#[derive(Clone)]
pub struct Deps {
    /// This node's name.
    pub node: String,
    /// The container runtime.
    pub runtime: RuntimeClient,
    /// Images and networks.
    pub sandbox: Arc<Sandbox>,
    /// Instance records on disk.
    pub records: Records,
    /// Where supervisors report.
    pub reports: Reports,
    /// Events on Workloads.
    pub events: Publisher,
    /// First restart delay; doubles per consecutive crash.
    pub backoff_base: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
    /// The owner's terms (limits, host ports).
    pub policy: super::policy::OwnerPolicy,
    /// The node's pinned user namespace, which every container joins.
    pub userns: Option<std::path::PathBuf>,
    /// Host ports no Workload may publish besides those the host listens on: the agent API's.
    pub reserved_ports: Vec<u16>,
    /// This node's key: it opens the registry logins the controller sealed to it.
    pub identity: univrs_api::identity::NodeIdentity,
}

/// A container's life in memory (what is not worth persisting).
#[derive(Default)]
struct Run {
    image: Option<Image>,
    started: Option<Instant>,
    pid: Option<i32>,
    next_start: Option<Instant>,
    crashes: u32,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    waiting: Option<String>,
    last_sample: Option<Instant>,
    creating: bool,
}

/// Supervises one instance until it is no longer desired and is cleaned up.
pub async fn supervise(
    deps: Arc<Deps>,
    mut rec: InstanceRecord,
    mut desired: watch::Receiver<Option<DesiredInstance>>,
) {
    let reference = univrs_io::apply::reference::<Workload>(
        &rec.placement.workload,
        Some(&rec.placement.namespace),
        Some(&rec.placement.uid),
    );
    let mut sup = Supervisor {
        deps,
        policy_job: None,
        runs: BTreeMap::new(),
        reference,
        last_save: Instant::now(),
        last_spec: None,
        sealed_credentials: None,
    };
    loop {
        let want = desired.borrow_and_update().clone();
        match want {
            Some(d) => {
                sup.last_spec = Some(d.spec.clone());
                sup.sealed_credentials = d.sealed_credentials.clone();
                sup.step(&mut rec, &d.spec).await;
            }
            None => {
                sup.shut_down(&mut rec).await;
                return;
            }
        }
        tokio::select! {
            r = desired.changed() => {
                if r.is_err() {
                    // The agent is exiting: containers keep running and are re-adopted.
                    return;
                }
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// How long a pull runs before the instance's status says it is pulling.
const PULL_NOTICE_AFTER: Duration = Duration::from_millis(250);

/// An instance's network during one look at its containers.
enum Net {
    /// Up, or containers get no network of their own on this node.
    Ready,
    /// Being set up.
    Pending(NetworkSetup),
    /// Its set-up failed this round (reported): no container starts until the next.
    Failed,
}

/// A network set-up running on a blocking thread.
struct NetworkSetup {
    /// Fires once the namespace exists; dropped unfired when the set-up failed before.
    made: Option<tokio::sync::oneshot::Receiver<()>>,
    /// How the set-up ended: the address and the policy rebuild under way.
    done: tokio::task::JoinHandle<Result<(IpAddr, PolicyJob), String>>,
}

impl NetworkSetup {
    /// Waits until the namespace exists; false when the set-up failed first.
    async fn namespace_made(&mut self) -> bool {
        match self.made.take() {
            Some(rx) => rx.await.is_ok(),
            None => true,
        }
    }
}

struct Supervisor {
    deps: Arc<Deps>,
    /// The network policy rebuild for this instance's new address, while under way: it runs
    /// alongside the container's start and is waited for before the start is reported.
    policy_job: Option<PolicyJob>,
    runs: BTreeMap<String, Run>,
    reference: ObjectReference,
    last_save: Instant,
    last_spec: Option<Arc<WorkloadSpec>>,
    /// The Workload's registry logins sealed to this node, as last seen.
    sealed_credentials: Option<Arc<str>>,
}

/// Runs a blocking runtime call on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A time as the API server gives it back: a `metav1.Time` is written with whole seconds, so a
/// report holding milliseconds would never equal the status it was written into, and the
/// status writer would rewrite it every second (it did: 11 writes/s for three instances).
fn time_from_ms(ms: u64) -> Option<Time> {
    Timestamp::from_second((ms / 1000) as i64).ok().map(Time)
}

impl Supervisor {
    /// Publishes an Event about the Workload in the background: an API round trip must not
    /// stand between starting a container and reporting it.
    fn event(&self, type_: EventType, reason: &str, note: String) {
        self.deps
            .events
            .publish_detached(self.reference.clone(), type_, reason, note);
    }

    /// The Workload's own registry logins, opened with this node's key. One that does not
    /// open (sealed to another key, altered) is reported and the pull goes on without it.
    fn registry_logins(&self, rec: &InstanceRecord) -> Option<DockerConfig> {
        let sealed = self.sealed_credentials.as_deref()?;
        let p = &rec.placement;
        let context = sealed_context(&p.namespace, &p.workload, &p.uid, &self.deps.node);
        let opened = self
            .deps
            .identity
            .open_sealed(&context, sealed)
            .map_err(|e| e.to_string())
            .and_then(|json| DockerConfig::parse(&json).map_err(|e| e.to_string()));
        match opened {
            Ok(c) => Some(c),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedToOpenImagePullCredentials",
                    format!(
                        "the registry logins sealed to node {} do not open: {e}; pulling without them",
                        self.deps.node
                    ),
                );
                None
            }
        }
    }

    fn save(&mut self, rec: &InstanceRecord) {
        if let Err(e) = self.deps.records.save(rec) {
            tracing::warn!(instance = %rec.placement.id, "saving the instance record: {e}");
        }
        self.last_save = Instant::now();
    }

    /// One look at every container: start, sample, probe, restart.
    async fn step(&mut self, rec: &mut InstanceRecord, spec: &WorkloadSpec) {
        let mut dirty = false;
        // Containers removed from the spec are stopped.
        let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        let gone: Vec<String> = rec
            .containers
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(c) = rec.containers.remove(&name) {
                self.remove_container(&c.id, grace(spec)).await;
                self.runs.remove(&name);
                dirty = true;
            }
        }
        // The network is set up while the containers are created: a container is held
        // before its process runs until the network is up (see `start`).
        let mut net = if rec.ip.is_none() && self.deps.sandbox.has_network() {
            Net::Pending(self.begin_network(rec, spec))
        } else {
            Net::Ready
        };
        for c in &spec.containers {
            dirty |= self.step_container(rec, spec, c, &mut net).await;
        }
        // When no container started this round, the network is finished all the same.
        let was_pending = matches!(net, Net::Pending(_));
        if !self.settle_network(rec, spec, &mut net).await {
            return;
        }
        dirty |= was_pending;
        if dirty || self.last_save.elapsed() >= SAVE_EVERY {
            self.save(rec);
        }
        self.report(rec, spec, None, false);
    }

    /// Starts setting up the instance's network on a blocking thread.
    fn begin_network(&self, rec: &InstanceRecord, spec: &WorkloadSpec) -> NetworkSetup {
        let sandbox = self.deps.sandbox.clone();
        let id = rec.placement.id.clone();
        let group = rec.placement.namespace.clone();
        let ports: Vec<_> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().cloned())
            .collect();
        let policy = self.deps.policy.clone();
        let reserved = self.deps.reserved_ports.clone();
        let (made_tx, made_rx) = tokio::sync::oneshot::channel();
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let published: Vec<_> = ports.iter().filter(|p| p.host_port.is_some()).collect();
            if !published.is_empty() && !sandbox.is_attached(&id) {
                // Checked before the first set-up only: once published, the port is ours
                // (portmap's DNAT does not listen, but a restarted agent must not refuse it).
                let listening = super::policy::listening_ports();
                for p in published {
                    let port = p.host_port.and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
                    let udp = p.protocol == univrs_api::resources::workload::Protocol::UDP;
                    policy.check_host_port(port, udp, &reserved, &listening)?;
                }
            }
            let up = sandbox
                .network_up(&id, &group, &ports, || {
                    let _ = made_tx.send(());
                })
                .map_err(|e| e.to_string());
            tracing::debug!(instance = %id, ms = started.elapsed().as_secs_f64() * 1e3, "network set up");
            up
        });
        NetworkSetup {
            made: Some(made_rx),
            done,
        }
    }

    /// Ends the network set-up under way, if there is one: records the address and the
    /// policy rebuild (`net` becomes Ready), or reports why it failed (Failed). Returns
    /// whether the network is up.
    async fn settle_network(
        &mut self,
        rec: &mut InstanceRecord,
        spec: &WorkloadSpec,
        net: &mut Net,
    ) -> bool {
        let setup = match std::mem::replace(net, Net::Ready) {
            Net::Pending(setup) => setup,
            Net::Ready => return true,
            Net::Failed => {
                *net = Net::Failed;
                return false;
            }
        };
        let result = match setup.done.await {
            Ok(r) => r,
            Err(e) => Err(format!("the set-up task failed: {e}")),
        };
        match result {
            Ok((ip, policy)) => {
                rec.ip = Some(ip.to_string());
                self.policy_job = Some(policy);
                true
            }
            Err(e) => {
                *net = Net::Failed;
                let msg = format!("setting up the network: {e}");
                self.report(rec, spec, Some(msg.clone()), false);
                self.event(EventType::Warning, "FailedNetwork", msg);
                false
            }
        }
    }

    /// Returns whether the record changed.
    async fn step_container(
        &mut self,
        rec: &mut InstanceRecord,
        spec: &WorkloadSpec,
        c: &Container,
        net: &mut Net,
    ) -> bool {
        let cid = container_id(&rec.placement.id, &c.name);
        let hash = container_hash(c);
        let mut dirty = false;
        let entry = rec
            .containers
            .entry(c.name.clone())
            .or_insert_with(|| ContainerRecord {
                id: cid.clone(),
                hash: hash.clone(),
                ..Default::default()
            });
        if entry.hash != hash {
            // The spec changed: the container is recreated (not counted as a restart).
            let old = entry.id.clone();
            entry.hash = hash;
            entry.id = cid.clone();
            entry.cpu_usec_done += std::mem::take(&mut entry.cpu_usec_run);
            entry.started_at_ms = None;
            entry.finished = None;
            self.runs.remove(&c.name);
            self.event(
                EventType::Normal,
                "Killing",
                format!(
                    "container {} of {}: its spec changed; recreating it",
                    c.name, rec.placement.instance
                ),
            );
            self.remove_container(&old, grace(spec)).await;
            dirty = true;
        }
        if entry.finished.is_some() {
            return dirty;
        }
        let rt = self.deps.runtime.clone();
        let id = cid.clone();
        let state = blocking(move || rt.state(&id)).await;
        let run = self.runs.entry(c.name.clone()).or_default();
        match state {
            Err(RuntimeError::NotFound(_)) => {
                run.pid = None;
                if run.next_start.is_none_or(|t| Instant::now() >= t) {
                    dirty |= self.start(rec, spec, c, net).await;
                }
            }
            Err(e) => {
                run.waiting = Some(format!("reading container {cid}: {e}"));
            }
            Ok(ContainerState::Creating { .. }) => {
                run.creating = true;
            }
            Ok(ContainerState::Running { pid, .. }) => {
                run.creating = false;
                run.pid = Some(pid);
                run.waiting = None;
                if run.started.is_none() {
                    // Re-adopted after an agent restart.
                    run.started = Some(Instant::now());
                    run.liveness = c
                        .liveness_probe
                        .as_ref()
                        .map(|p| ProbeState::new(p, Instant::now()));
                    run.readiness = c
                        .readiness_probe
                        .as_ref()
                        .map(|p| ProbeState::new(p, Instant::now()));
                }
                self.sample(rec, c, &cid).await;
                self.probe(rec, c, &cid, spec).await;
            }
            Ok(ContainerState::Exited(exit)) => {
                dirty = true;
                self.exited(rec, spec, c, &cid, exit).await;
            }
            Ok(ContainerState::Lost { .. }) => {
                dirty = true;
                let exit = ExitRecord {
                    code: 137,
                    signal: None,
                    oom_killed: false,
                    killed_after_grace: false,
                    error: Some("the container's shim was lost".into()),
                    cleanup_error: None,
                    finished_at_ms: now_ms(),
                };
                self.exited(rec, spec, c, &cid, exit).await;
            }
        }
        dirty
    }

    /// Samples CPU and memory of a running container into the record.
    async fn sample(&mut self, rec: &mut InstanceRecord, c: &Container, cid: &str) {
        let rt = self.deps.runtime.clone();
        let id = cid.to_string();
        let Ok(usage) = blocking(move || rt.usage(&id)).await else {
            return;
        };
        let now = Instant::now();
        let run = self.runs.entry(c.name.clone()).or_default();
        let dt = run
            .last_sample
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        run.last_sample = Some(now);
        rec.memory_mib_seconds += usage.memory_bytes as f64 / (1024.0 * 1024.0) * dt;
        let gpus = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref().or(r.requests.as_ref()))
            .and_then(|l| l.gpu)
            .unwrap_or(0);
        rec.gpu_seconds += f64::from(gpus.max(0)) * dt;
        if let Some(entry) = rec.containers.get_mut(&c.name) {
            // Cumulative within one run; a new run starts from zero again.
            entry.cpu_usec_run = entry.cpu_usec_run.max(usage.cpu_usec);
        }
    }

    async fn probe(&mut self, rec: &InstanceRecord, c: &Container, cid: &str, spec: &WorkloadSpec) {
        let target = Target {
            exec: Some((self.deps.runtime.clone(), cid.to_string())),
            netns: self.deps.sandbox.netns_path(&rec.placement.id),
            ip: rec.ip.as_deref().and_then(|s| s.parse().ok()),
        };
        let now = Instant::now();
        let run = self.runs.entry(c.name.clone()).or_default();
        if let (Some(p), Some(state)) = (c.readiness_probe.as_ref(), run.readiness.as_mut())
            && state.due(now)
        {
            let result = probe::run_once(p, &target).await;
            state.record(p, now, result);
        }
        let run = self.runs.entry(c.name.clone()).or_default();
        if let (Some(p), Some(state)) = (c.liveness_probe.as_ref(), run.liveness.as_mut())
            && state.due(now)
        {
            let result = probe::run_once(p, &target).await;
            state.record(p, now, result);
            if state.healthy == Some(false) {
                let why = state.last_error.clone().unwrap_or_default();
                // Stop it; the exit path restarts it per policy.
                run.liveness = None;
                let rt = self.deps.runtime.clone();
                let id = cid.to_string();
                let g = grace(spec);
                let _ = blocking(move || rt.request_stop(&id, g)).await;
                self.event(
                    EventType::Warning,
                    "Unhealthy",
                    format!(
                        "liveness probe of {} in {} failed: {why}; restarting it",
                        c.name, rec.placement.instance
                    ),
                );
            }
        }
    }

    /// Pulls, prepares and starts container `c`, its process once `net` is up. Returns
    /// whether the record changed.
    async fn start(
        &mut self,
        rec: &mut InstanceRecord,
        spec: &WorkloadSpec,
        c: &Container,
        net: &mut Net,
    ) -> bool {
        if matches!(net, Net::Failed) {
            return false;
        }
        let cid = container_id(&rec.placement.id, &c.name);
        let t = Instant::now();
        let image = match self.runs.get(&c.name).and_then(|r| r.image.clone()) {
            Some(i) => i,
            None => {
                let sandbox = self.deps.sandbox.clone();
                let logins = self.registry_logins(rec);
                let pull = sandbox.pull(&c.image, logins.as_ref());
                tokio::pin!(pull);
                // An image at hand is ready at once: "pulling" is said (a status write) only
                // of a pull that takes a while.
                let pulled = tokio::select! {
                    r = &mut pull => r,
                    () = tokio::time::sleep(PULL_NOTICE_AFTER) => {
                        self.runs.entry(c.name.clone()).or_default().waiting =
                            Some(format!("pulling image {}", c.image));
                        self.report(rec, spec, None, false);
                        pull.await
                    }
                };
                match pulled {
                    Ok(i) => {
                        if i.devices_skipped > 0 {
                            self.event(
                                EventType::Warning,
                                "DevicesSkipped",
                                format!(
                                    "image {} names {} block or character device(s); they were not made (containers get the standard devices only)",
                                    c.image, i.devices_skipped
                                ),
                            );
                        }
                        self.event(
                            EventType::Normal,
                            "Pulled",
                            format!(
                                "image {} ({}) for {} in {}",
                                c.image,
                                i.digest(),
                                c.name,
                                rec.placement.instance
                            ),
                        );
                        self.runs.entry(c.name.clone()).or_default().image = Some(i.clone());
                        i
                    }
                    Err(e) => {
                        let msg = format!("pulling image {}: {e}", c.image);
                        self.failed_start(rec, c, msg, "ErrImagePull").await;
                        return true;
                    }
                }
            }
        };
        tracing::debug!(container = %cid, ms = t.elapsed().as_secs_f64() * 1e3, "image ready");
        let t = Instant::now();
        let sandbox = self.deps.sandbox.clone();
        let rt = self.deps.runtime.clone();
        let cfg_id = cid.clone();
        let hostname = rec.placement.instance.clone();
        let c2 = c.clone();
        let netns = self.deps.sandbox.netns_path(&rec.placement.id);
        let resolv = self.deps.sandbox.resolv_conf(&rec.placement.id);
        let pids_limit = self.deps.policy.pids_per_container;
        let log_cap = self.deps.policy.log_max_bytes;
        let userns = self.deps.userns.clone();
        let g = grace(spec);
        if let Net::Pending(setup) = net
            && !setup.namespace_made().await
        {
            // The set-up failed before the namespace existed: nothing can be created in it.
            self.settle_network(rec, spec, net).await;
            return false;
        }
        let created = blocking(move || -> Result<Created, String> {
            let rootfs = sandbox.rootfs(&image, &cfg_id).map_err(|e| e.to_string())?;
            let process = match sandbox.process(&image, &c2, &rootfs) {
                Ok(p) => p,
                Err(e) => {
                    let _ = sandbox.remove_rootfs(&cfg_id);
                    return Err(e.to_string());
                }
            };
            let mut cfg = ContainerConfig::new(cfg_id.clone(), rootfs, process.args);
            cfg.env = process.env;
            cfg.cwd = process.cwd;
            cfg.uid = process.uid;
            cfg.gid = process.gid;
            cfg.hostname = Some(hostname);
            cfg.netns = netns;
            cfg.files = resolv
                .map(|r| vec![(r, "/etc/resolv.conf".to_string())])
                .unwrap_or_default();
            // Limits, or the requests where a limit is not given: a container takes what it
            // asked for, not the node's spare room (the owner's parent cgroup caps them all).
            if let Some(r) = c2.resources.as_ref() {
                let pick = |limit: Option<&Quantity>, request: Option<&Quantity>| {
                    limit.or(request).cloned()
                };
                let limits = r.limits.as_ref();
                let requests = r.requests.as_ref();
                cfg.cpu_millis = pick(
                    limits.and_then(|l| l.cpu.as_ref()),
                    requests.and_then(|q| q.cpu.as_ref()),
                )
                .and_then(|q| q.to_milli().ok());
                cfg.memory_bytes = pick(
                    limits.and_then(|l| l.memory.as_ref()),
                    requests.and_then(|q| q.memory.as_ref()),
                )
                .and_then(|q| q.to_units().ok());
            }
            cfg.pids_limit = Some(pids_limit);
            cfg.log_max_bytes = Some(log_cap);
            cfg.userns = userns.map(UserNamespace::Join);
            // A leftover bundle of an earlier run would make the start fail.
            rt.delete(&cfg_id).map_err(|e| e.to_string())?;
            rt.create(&cfg, g).map_err(|e| e.to_string())
        })
        .await;
        tracing::debug!(container = %cid, ms = t.elapsed().as_secs_f64() * 1e3, "root filesystem and container created");
        let t = Instant::now();
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                let msg = format!("starting container {}: {e}", c.name);
                self.failed_start(rec, c, msg, "Failed").await;
                return true;
            }
        };
        if !self.settle_network(rec, spec, net).await {
            let rt = self.deps.runtime.clone();
            if let Err(e) = blocking(move || rt.abandon(created)).await {
                tracing::warn!(container = %cid, "removing a container whose network failed: {e}");
            }
            return false;
        }
        tracing::debug!(container = %cid, ms = t.elapsed().as_secs_f64() * 1e3, "network waited for");
        let t = Instant::now();
        let rt = self.deps.runtime.clone();
        let started = blocking(move || {
            rt.release(created)
                .map(|h| h.pid())
                .map_err(|e| e.to_string())
        })
        .await;
        tracing::debug!(container = %cid, ms = t.elapsed().as_secs_f64() * 1e3, "process started");
        // The policy that lets it reach its group is rebuilt meanwhile; it fails closed (the
        // process reaches none of its group until then), and it is in place before the
        // container is called running.
        let t = Instant::now();
        if let Some(job) = self.policy_job.take()
            && let Err(e) = blocking(move || job.wait()).await
        {
            // It fails closed: the container reaches none of its group until the next rebuild.
            self.event(
                EventType::Warning,
                "FailedNetwork",
                format!("the network policy for {}: {e}", rec.placement.instance),
            );
        }
        tracing::debug!(container = %cid, ms = t.elapsed().as_secs_f64() * 1e3, "network policy waited for");
        match started {
            Ok(pid) => {
                let now = Instant::now();
                let run = self.runs.entry(c.name.clone()).or_default();
                run.pid = Some(pid);
                run.started = Some(now);
                run.waiting = None;
                run.last_sample = None;
                run.liveness = c.liveness_probe.as_ref().map(|p| ProbeState::new(p, now));
                run.readiness = c.readiness_probe.as_ref().map(|p| ProbeState::new(p, now));
                if let Some(e) = rec.containers.get_mut(&c.name) {
                    e.started_at_ms = Some(now_ms());
                    e.cpu_usec_run = 0;
                }
                self.event(
                    EventType::Normal,
                    "Started",
                    format!(
                        "container {} of {} on {}",
                        c.name, rec.placement.instance, self.deps.node
                    ),
                );
                true
            }
            Err(e) => {
                let msg = format!("starting container {}: {e}", c.name);
                self.failed_start(rec, c, msg, "Failed").await;
                true
            }
        }
    }

    async fn failed_start(
        &mut self,
        rec: &mut InstanceRecord,
        c: &Container,
        msg: String,
        reason: &str,
    ) {
        let delay = self.next_backoff(&c.name);
        let run = self.runs.entry(c.name.clone()).or_default();
        run.waiting = Some(format!("{msg}; retrying in {}s", delay.as_secs()));
        self.event(
            EventType::Warning,
            reason,
            format!("{msg} (in {})", rec.placement.instance),
        );
    }

    /// The next restart delay of container `name` (and counts the crash).
    fn next_backoff(&mut self, name: &str) -> Duration {
        let base = self.deps.backoff_base;
        let max = self.deps.backoff_max;
        let run = self.runs.entry(name.to_string()).or_default();
        if run
            .started
            .is_some_and(|s| s.elapsed() >= BACKOFF_RESET_AFTER)
        {
            run.crashes = 0;
        }
        let delay = base
            .checked_mul(1u32 << run.crashes.min(16))
            .unwrap_or(max)
            .min(max);
        run.crashes += 1;
        run.next_start = Some(Instant::now() + delay);
        delay
    }

    async fn exited(
        &mut self,
        rec: &mut InstanceRecord,
        spec: &WorkloadSpec,
        c: &Container,
        cid: &str,
        exit: ExitRecord,
    ) {
        let restart = match spec.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit.code != 0,
            RestartPolicy::Never => false,
        };
        if restart {
            self.cleanup_container(cid).await;
        } else {
            // A container that is done keeps its runtime record, and with it its log, for
            // `univrs logs` until the instance leaves the node (as a finished pod's logs stay
            // until the pod goes); its root filesystem goes now.
            self.remove_rootfs(cid).await;
        }
        let Some(entry) = rec.containers.get_mut(&c.name) else {
            return;
        };
        entry.cpu_usec_done += std::mem::take(&mut entry.cpu_usec_run);
        entry.started_at_ms = None;
        let what = describe_exit(&exit);
        if !restart {
            entry.finished = Some(exit.code);
            self.runs.remove(&c.name);
            self.event(
                if exit.code == 0 {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                "Completed",
                format!(
                    "container {} of {} {what}; not restarted (restartPolicy {:?})",
                    c.name, rec.placement.instance, spec.restart_policy
                ),
            );
            return;
        }
        entry.restarts += 1;
        let delay = self.next_backoff(&c.name);
        let run = self.runs.entry(c.name.clone()).or_default();
        run.pid = None;
        run.started = None;
        run.waiting = Some(format!(
            "back-off {}s restarting container {}: it {what}",
            delay.as_secs(),
            c.name
        ));
        self.event(
            EventType::Warning,
            "BackOff",
            format!(
                "container {} of {} {what}; restarting in {}s",
                c.name,
                rec.placement.instance,
                delay.as_secs()
            ),
        );
    }

    /// Removes an exited container's runtime state and root filesystem.
    async fn cleanup_container(&self, cid: &str) {
        let rt = self.deps.runtime.clone();
        let sandbox = self.deps.sandbox.clone();
        let id = cid.to_string();
        let result = blocking(move || {
            rt.delete(&id).map_err(|e| e.to_string())?;
            sandbox.remove_rootfs(&id).map_err(|e| e.to_string())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(container = cid, "cleaning up: {e}");
        }
    }

    /// Removes an exited container's root filesystem, keeping its runtime record and log.
    async fn remove_rootfs(&self, cid: &str) {
        let sandbox = self.deps.sandbox.clone();
        let id = cid.to_string();
        if let Err(e) =
            blocking(move || sandbox.remove_rootfs(&id).map_err(|e| e.to_string())).await
        {
            tracing::warn!(container = cid, "removing the root filesystem: {e}");
        }
    }

    /// Stops a container gracefully, then removes it.
    async fn remove_container(&self, cid: &str, grace: Duration) {
        let rt = self.deps.runtime.clone();
        let id = cid.to_string();
        let _ = blocking(move || match rt.stop(&id, grace) {
            Ok(_) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => tracing::warn!(container = %id, "stopping: {e}"),
        })
        .await;
        self.cleanup_container(cid).await;
    }

    /// Stops every container (in parallel, each with the grace period), releases the network
    /// and forgets the instance.
    async fn shut_down(&mut self, rec: &mut InstanceRecord) {
        let spec = self.last_spec.clone();
        let g = spec.as_deref().map_or(Duration::from_secs(30), grace);
        if let Some(spec) = spec.as_deref() {
            self.report(rec, spec, Some("stopping".into()), true);
        }
        if !rec.containers.is_empty() {
            self.event(
                EventType::Normal,
                "Killing",
                format!(
                    "stopping {} on {} (grace {}s)",
                    rec.placement.instance,
                    self.deps.node,
                    g.as_secs()
                ),
            );
        }
        let stops = rec
            .containers
            .values()
            .map(|c| self.remove_container(&c.id, g));
        futures::future::join_all(stops).await;
        let sandbox = self.deps.sandbox.clone();
        let id = rec.placement.id.clone();
        if let Err(e) = blocking(move || sandbox.network_down(&id)).await {
            tracing::warn!(instance = %rec.placement.id, "releasing the network: {e}");
        }
        if let Err(e) = self.deps.records.remove(&rec.placement.id) {
            tracing::warn!(instance = %rec.placement.id, "removing the record: {e}");
        }
        self.deps.reports.remove(&rec.placement.id);
    }

    /// Publishes the agent's view of the instance.
    fn report(
        &self,
        rec: &InstanceRecord,
        spec: &WorkloadSpec,
        message: Option<String>,
        stopping: bool,
    ) {
        let mut waiting = None;
        let mut all_running = !spec.containers.is_empty();
        let mut any_running = false;
        let mut all_finished = !spec.containers.is_empty();
        let mut all_succeeded = true;
        let mut ready = true;
        let mut started_at: Option<u64> = None;
        let mut restarts = 0;
        let mut cpu_usec = 0u64;
        for c in &spec.containers {
            let entry = rec.containers.get(&c.name);
            let run = self.runs.get(&c.name);
            restarts += entry.map_or(0, |e| e.restarts);
            cpu_usec += entry.map_or(0, |e| e.cpu_usec_done + e.cpu_usec_run);
            let running = run.is_some_and(|r| r.pid.is_some());
            any_running |= running || run.is_some_and(|r| r.creating);
            all_running &= running;
            match entry.and_then(|e| e.finished) {
                Some(code) => all_succeeded &= code == 0,
                None => all_finished = false,
            }
            let probe_ok =
                run.is_some_and(|r| r.readiness.as_ref().is_none_or(|p| p.healthy == Some(true)));
            ready &= running && probe_ok;
            if running && let Some(ms) = entry.and_then(|e| e.started_at_ms) {
                started_at = Some(started_at.map_or(ms, |s| s.max(ms)));
            }
            if waiting.is_none() {
                waiting = run.and_then(|r| r.waiting.clone());
                if waiting.is_none() && running && !probe_ok {
                    waiting = run
                        .and_then(|r| r.readiness.as_ref())
                        .and_then(|p| p.last_error.clone())
                        .map(|e| format!("readiness probe of {}: {e}", c.name));
                }
            }
        }
        let phase = if stopping {
            InstancePhase::Terminating
        } else if all_finished {
            if all_succeeded {
                InstancePhase::Succeeded
            } else {
                InstancePhase::Failed
            }
        } else if all_running {
            InstancePhase::Running
        } else if any_running {
            InstancePhase::Starting
        } else {
            InstancePhase::Pending
        };
        let report = InstanceReport {
            namespace: rec.placement.namespace.clone(),
            workload: rec.placement.workload.clone(),
            instance: rec.placement.instance.clone(),
            phase,
            ready: ready && !stopping,
            restarts,
            started_at: if all_running {
                started_at.and_then(time_from_ms)
            } else {
                None
            },
            message: message.or(waiting),
            usage: InstanceUsage {
                node: self.deps.node.clone(),
                placed_at: rec.placement.placed_at.clone(),
                cpu_millicore_seconds: (cpu_usec / 1000) as i64,
                memory_mib_seconds: rec.memory_mib_seconds as i64,
                gpu_seconds: rec.gpu_seconds as i64,
            },
            containers: rec.containers.values().map(|c| c.id.clone()).collect(),
            ip: rec.ip.clone(),
        };
        self.deps.reports.set(&rec.placement.id, report);
    }
}

/// The Workload's termination grace period.
fn grace(spec: &WorkloadSpec) -> Duration {
    Duration::from_secs(spec.termination_grace_period_seconds.max(0) as u64)
}

/// "exited with code 1 (OOMKilled)", for messages and Events.
fn describe_exit(exit: &ExitRecord) -> String {
    let mut s = match (&exit.error, exit.signal) {
        (Some(e), _) => format!("failed: {e}"),
        (None, Some(sig)) => format!("was killed by signal {sig} (exit code {})", exit.code),
        (None, None) => format!("exited with code {}", exit.code),
    };
    if exit.oom_killed {
        s.push_str(" (OOMKilled: it exceeded its memory limit)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_time_survives_the_round_trip_through_the_api() {
        let t = time_from_ms(1_764_900_000_123).unwrap();
        let back: Time = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(t.0.as_second(), 1_764_900_000);
    }
}

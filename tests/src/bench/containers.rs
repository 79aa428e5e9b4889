//! Containers for the benchmarks: the demo image in an image store of its own, the agent's shim
//! started alone, one `univrs agent` with its TLS API, and objects created one at a time, each
//! timed by one watch from the create's answer to placed, Running and Ready.

use super::ms;
use crate::ControlPlane;
use crate::agent::{AgentApi, AgentProc, api_url};
use crate::cluster::eventually;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use univrs_api::resources::workload::InstancePhase;
use univrs_api::{Node, Workload};
use univrs_node_agent::image::{Image, ImageStore};
use univrs_node_agent::runtime::{ContainerConfig, RuntimeClient};

/// How long one object may take to turn Ready, or to be cleaned up after its delete.
pub const WAIT: Duration = Duration::from_secs(120);

/// The agents' API token (at least 32 characters).
const TOKEN: &str = "bench-agent-token-0123456789abcdef";

/// The demo image: its OCI layout (for containerd) and imported into a store of its own, as
/// the agent does.
pub struct DemoImage {
    /// The OCI image layout, named [`univrs_node_agent::demo_image::DEMO_REFERENCE`].
    pub layout: PathBuf,
    /// The agent's image store holding it.
    pub store: ImageStore,
    /// The imported image.
    pub image: Image,
    /// Its command: entrypoint then cmd.
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
}

impl DemoImage {
    /// Builds the layout under `dir` and imports it into a store there.
    pub fn new(dir: &Path) -> Self {
        let layout = univrs_node_agent::demo_image::build(&dir.join("demo-layout")).unwrap();
        let store = ImageStore::open(dir.join("images")).unwrap();
        let image = store.import_oci_layout(&layout, "latest").unwrap();
        let cfg = &image.config;
        let args: Vec<String> = cfg
            .entrypoint
            .iter()
            .chain(cfg.cmd.iter())
            .cloned()
            .collect();
        let env = cfg.env.clone();
        Self {
            layout,
            store,
            image,
            args,
            env,
        }
    }
}

/// The agent's shim alone (`univrs shim` through [`RuntimeClient`]), no agent involved: the
/// demo image with the benchmark Workload's limits (250m CPU, 64 MiB).
pub struct RawShim<'a> {
    client: RuntimeClient,
    demo: &'a DemoImage,
}

impl<'a> RawShim<'a> {
    /// A runtime client running `bin`'s shim, its state under `dir`.
    pub fn new(bin: &Path, demo: &'a DemoImage, dir: &Path) -> Self {
        Self {
            client: RuntimeClient::new(bin, dir.join("shim-state"), "ub-shim").unwrap(),
            demo,
        }
    }

    /// Prepares a root filesystem (untimed), times create + start of container `id` until it
    /// runs, then deletes it (untimed); milliseconds.
    pub fn start_once(&self, id: &str) -> f64 {
        let demo = self.demo;
        let rootfs = demo.store.prepare_rootfs(&demo.image, id).unwrap();
        let mut cfg = ContainerConfig::new(id.to_string(), rootfs, demo.args.clone());
        cfg.hostname = Some(id.to_string());
        cfg.env = demo.env.clone();
        cfg.cpu_millis = Some(250);
        cfg.memory_bytes = Some(64 * 1024 * 1024);
        let t = Instant::now();
        let handle = self.client.start(&cfg, Duration::from_secs(1)).unwrap();
        let took = ms(t.elapsed());
        self.client.delete(id).unwrap();
        drop(handle);
        demo.store.remove_rootfs(id).unwrap();
        took
    }
}

impl Drop for RawShim<'_> {
    fn drop(&mut self) {
        self.client.remove_cgroup_parent(true);
    }
}

/// Create + start of the demo image through the agent's shim, `runs` times (milliseconds).
pub fn raw_shim(bin: &Path, demo: &DemoImage, dir: &Path, runs: usize) -> Vec<f64> {
    let shim = RawShim::new(bin, demo, dir);
    (0..runs)
        .map(|i| shim.start_once(&format!("ub-shim-{i}")))
        .collect()
}

/// The agents' TLS and token files, shared by all.
pub struct ApiCreds {
    /// The self-signed certificate for 127.0.0.1.
    pub cert: PathBuf,
    /// Its key (0600).
    pub key: PathBuf,
    /// The token file (0600).
    pub token: PathBuf,
}

impl ApiCreds {
    /// Writes a certificate, its key and the token into `dir`.
    pub fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let me = Self {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            token: dir.join("token"),
        };
        std::fs::write(&me.cert, c.cert.pem()).unwrap();
        std::fs::write(&me.key, c.signing_key.serialize_pem()).unwrap();
        std::fs::write(&me.token, TOKEN).unwrap();
        for f in [&me.key, &me.token] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        me
    }

    /// The agent flags that serve its API with these files.
    pub fn flags(&self) -> Vec<String> {
        [
            "--api-tls-cert",
            self.cert.to_str().unwrap(),
            "--api-tls-key",
            self.key.to_str().unwrap(),
            "--api-token-file",
            self.token.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The TLS API of the agent of `node`, with the CA and the token.
    pub fn api(&self, node: &Node) -> AgentApi {
        AgentApi {
            url: api_url(node),
            flags: vec![
                "--cacert".into(),
                self.cert.display().to_string(),
                "-H".into(),
                format!("Authorization: Bearer {TOKEN}"),
            ],
        }
    }
}

/// Starts an agent for a benchmark: its own pod CIDR `cidr` (so several never collide), the
/// label `bench=<name>`, the TLS API, perhaps a mesh peer to bootstrap from.
pub fn start_agent(
    bin: &Path,
    cp: &ControlPlane,
    name: &str,
    cidr: &str,
    creds: &ApiCreds,
    bootstrap: Option<&str>,
) -> AgentProc {
    let mut extra = creds.flags();
    extra.extend([
        "--label".into(),
        format!("bench={name}"),
        "--pod-cidr".into(),
        cidr.into(),
    ]);
    if let Some(b) = bootstrap {
        extra.extend(["--bootstrap".into(), b.into()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    AgentProc::start_bin(bin, &cp.kubeconfig, &cp.data_dir, name, &extra)
}

/// Waits until `name`'s Node is Ready and publishes its API and mesh address.
pub async fn ready_node(nodes: &Api<Node>, name: &str) -> Node {
    eventually(&format!("Node {name} Ready"), WAIT, async || {
        let n = nodes.get_opt(name).await.ok().flatten();
        let ok = n.as_ref().is_some_and(|n| {
            n.annotations().contains_key("univrs.io/agent-api")
                && !n.spec.multiaddrs.is_empty()
                && n.status
                    .as_ref()
                    .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
        });
        (n.filter(|_| ok), String::new())
    })
    .await
}

/// A single-replica Workload of the demo image (250m CPU, 64 MiB, no probe) for the agent
/// labelled `bench=<node>`.
pub fn workload(name: &str, node: &str) -> Workload {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": name},
        "spec": {"replicas": 1, "nodeSelector": {"bench": node}, "containers": [{"name": "web",
            "image": univrs_node_agent::demo_image::DEMO_REFERENCE,
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]}
    }))
    .unwrap()
}

/// How far an object has come: placed on a node, its container running, ready.
#[derive(Clone, Copy, Default, Debug)]
pub struct Progress {
    /// A node was chosen.
    pub placed: bool,
    /// The container runs.
    pub running: bool,
    /// It is ready.
    pub ready: bool,
}

/// A single-replica Workload's progress: `status.instances[0]`'s node, `phase == Running` and
/// `ready`.
pub fn workload_progress(w: &Workload) -> Progress {
    let Some(inst) = w.status.as_ref().and_then(|s| s.instances.first()) else {
        return Progress::default();
    };
    Progress {
        placed: inst.node.is_some(),
        running: inst.phase == Some(InstancePhase::Running),
        ready: inst.ready == Some(true),
    }
}

/// A Pod's progress: `spec.nodeName`, `status.phase == Running` with a container in state
/// running, and the Ready condition.
pub fn pod_progress(p: &Pod) -> Progress {
    let status = p.status.as_ref();
    let running = status.is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.container_statuses.as_ref().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
            })
    });
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Progress {
        placed: p.spec.as_ref().is_some_and(|s| s.node_name.is_some()),
        running,
        ready,
    }
}

/// When one object's create was sent and answered, and when the watch first saw it placed,
/// Running and Ready.
#[derive(Clone, Copy, Debug)]
pub struct Timed {
    /// Just before the create request.
    pub sent: Instant,
    /// The create's answer.
    pub answered: Instant,
    /// Placed seen.
    pub placed: Instant,
    /// Running seen.
    pub running: Instant,
    /// Ready seen.
    pub ready: Instant,
}

impl Timed {
    /// Create answered → Running seen, ms.
    pub fn answered_to_running(&self) -> f64 {
        ms(self.running - self.answered)
    }

    /// Create answered → Ready seen, ms.
    pub fn answered_to_ready(&self) -> f64 {
        ms(self.ready - self.answered)
    }

    /// Create sent → Running seen, ms.
    pub fn sent_to_running(&self) -> f64 {
        ms(self.running - self.sent)
    }

    /// Placed seen → Running seen, ms.
    pub fn placed_to_running(&self) -> f64 {
        ms(self.running - self.placed)
    }

    /// Placed seen → Ready seen, ms.
    pub fn placed_to_ready(&self) -> f64 {
        ms(self.ready - self.placed)
    }
}

/// One watch over a namespace's objects, kept open for a whole benchmark: every object it
/// delivers is stamped with the moment it arrived.
pub struct Watched<K> {
    rx: mpsc::UnboundedReceiver<(Instant, K)>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Serialize,
    K: Send + Sync + 'static,
{
    /// Starts watching `api` and returns once the watch has listed (so a create made next is
    /// seen by the watch itself, never by its initial list).
    pub async fn start(api: Api<K>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut listed = Some(listed_tx);
            let mut events =
                std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            // A watch that breaks re-lists (the backoff): its objects come again, and only the
            // first time each stage is seen counts.
            while let Some(ev) = events.next().await {
                let at = Instant::now();
                let obj = match ev {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(l) = listed.take() {
                            let _ = l.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                if tx.send((at, obj)).is_err() {
                    return;
                }
            }
        });
        let _ = tokio::time::timeout(WAIT, listed_rx).await;
        Self { rx, task }
    }

    /// Creates `obj` and waits until the watch has seen it Ready (at most [`WAIT`]); `None`
    /// if it did not turn Ready in time.
    pub async fn create_timed(
        &mut self,
        api: &Api<K>,
        obj: &K,
        progress: impl Fn(&K) -> Progress,
    ) -> Option<Timed> {
        let name = obj.name_any();
        // Whatever arrived before this create is about other objects.
        while self.rx.try_recv().is_ok() {}
        let sent = Instant::now();
        api.create(&PostParams::default(), obj).await.unwrap();
        let answered = Instant::now();
        let mut seen: HashMap<&str, Instant> = HashMap::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Some((at, o))) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            if o.name_any() != name {
                continue;
            }
            let p = progress(&o);
            // A later stage implies the earlier ones, even if one update carried several.
            for (stage, on) in [
                ("placed", p.placed || p.running || p.ready),
                ("running", p.running || p.ready),
                ("ready", p.ready),
            ] {
                if on {
                    seen.entry(stage).or_insert(at);
                }
            }
            if let Some(ready) = seen.get("ready") {
                return Some(Timed {
                    sent,
                    answered,
                    placed: seen["placed"],
                    running: seen["running"],
                    ready: *ready,
                });
            }
        }
        None
    }
}

impl<K> Drop for Watched<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `runs` Workloads of the demo image for the agent `agent` (labelled `bench=<node>`) in
/// namespace `ns`, one at a time: each timed by one watch, then deleted and cleaned up (the
/// object gone, no container left) before the next.
pub async fn workloads_one_at_a_time(
    client: &kube::Client,
    ns: &str,
    node: &str,
    agent: &AgentProc,
    runs: usize,
) -> Vec<Timed> {
    let api: Api<Workload> = Api::namespaced(client.clone(), ns);
    let mut watched = Watched::start(api.clone()).await;
    let mut all = Vec::new();
    for i in 0..runs {
        all.push(workload_once(&api, &mut watched, node, agent, &format!("ptr-{i:03}")).await);
    }
    all
}

/// One Workload `name` for `node` through `watched`: created, timed, deleted and cleaned up.
pub async fn workload_once(
    api: &Api<Workload>,
    watched: &mut Watched<Workload>,
    node: &str,
    agent: &AgentProc,
    name: &str,
) -> Timed {
    let t = watched
        .create_timed(api, &workload(name, node), workload_progress)
        .await
        .unwrap_or_else(|| {
            panic!(
                "workload {name} did not turn Ready within {WAIT:?}; agent log:\n{}",
                agent.log_text()
            )
        });
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let containers = agent.data_dir.join("runtime/containers");
    eventually(&format!("{name} cleaned up"), WAIT, async || {
        let gone = api.get_opt(name).await.unwrap().is_none();
        let left = std::fs::read_dir(&containers)
            .map(|d| d.count())
            .unwrap_or(0);
        (
            (gone && left == 0).then_some(()),
            format!("workload gone {gone}, containers {left}"),
        )
    })
    .await;
    t
}

//! `univrs up` end to end: the whole system from one command, stopped with Ctrl-C (SIGINT)
//! and started again with its data.

use kube::api::{Api, PostParams};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use univrs_api::{Node, Workload};
use univrs_tests::cluster::eventually;
use univrs_tests::{Guarded, free_port, univrs_bin};

/// A running `univrs up`.
struct Up {
    proc: Guarded,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl Up {
    fn start(dir: &Path, port: u16, agents: u32) -> Self {
        // Outside the data directory, so the test can show it after `up` removed nothing.
        let log = dir.with_extension("log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(univrs_bin());
        cmd.arg("up")
            .arg("--data-dir")
            .arg(dir)
            .args(["--port", &port.to_string(), "--agents", &agents.to_string()])
            .args(["--lease-duration", "3s", "--node-grace-period", "4s"])
            .stdout(Stdio::piped())
            .stderr(err);
        let mut proc = Guarded::spawn(cmd).unwrap();
        let stdout = proc.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("ready kubeconfig=") {
                    let _ = tx.send(PathBuf::from(k));
                }
            }
        });
        let kubeconfig = rx
            .recv_timeout(Duration::from_secs(900))
            .unwrap_or_else(|_| {
                panic!(
                    "univrs up did not become ready; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Self {
            proc,
            kubeconfig,
            log,
        }
    }

    async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Ctrl-C, then waits for a clean exit.
    fn interrupt(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proc.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                assert!(status.success(), "univrs up exited with {status}:\n{log}");
                assert!(log.contains("stopped control-plane"), "{log}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "univrs up did not stop after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_system_and_ctrl_c_stops_it_keeping_the_data() {
    let dir = PathBuf::from(format!("/tmp/uu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let up = Up::start(&dir, port, 1);
    let client = up.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(
        "both agents' Nodes Ready",
        Duration::from_secs(120),
        async || {
            let list = nodes.list(&Default::default()).await.unwrap();
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
                })
                .filter_map(|n| n.metadata.name.clone())
                .collect();
            (
                (ready.len() == 2).then_some(()),
                format!("ready: {ready:?}"),
            )
        },
    )
    .await;
    let api: Api<Workload> = Api::namespaced(client.clone(), "default");
    let wl: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "keep"},
        "spec": {"replicas": 1, "containers": [{"name": "app", "image": "univrs.local/demo:latest"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &wl).await.unwrap();
    eventually("the workload placed", Duration::from_secs(60), async || {
        let w = api.get("keep").await.unwrap();
        let placed = w
            .status
            .as_ref()
            .is_some_and(|s| s.instances.iter().any(|i| i.node.is_some()));
        (placed.then_some(()), format!("{:?}", w.status))
    })
    .await;
    up.interrupt();
    let left = processes_using(&dir);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:?}");

    // Starting again keeps the data.
    let up = Up::start(&dir, port, 1);
    let client = up.client().await;
    let api: Api<Workload> = Api::namespaced(client, "default");
    assert!(api.get_opt("keep").await.unwrap().is_some());
    up.interrupt();
    assert!(processes_using(&dir).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
}

//! Univrs resources in an existing Kubernetes dashboard: k9s (pinned in deploy/k9s, built by
//! scripts/build-k9s) runs in a detached tmux session against the real control plane while the
//! real controller reconciles, and the test reads what a person would see with
//! `tmux capture-pane`: the Workload with its printer columns, the Univrs Nodes, and a Node's
//! describe page with its Conditions and Events.
//!
//! The test plays the agents' part by renewing each node's Lease, as tests/controller.rs does.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use univrs_api::identity::NodeIdentity;
use univrs_api::{Node, Workload};
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, eventually, node_object, renew_leases, start_controller,
};
use univrs_tests::{ControlPlane, repo_root, run};

const NS: &str = "dash";
const NODES: [&str; 2] = ["dash-alpha", "dash-bravo"];
/// How long k9s may take to show what the API server already holds (it refreshes every 2 s).
const SCREEN_TIMEOUT: Duration = Duration::from_secs(60);

/// The k9s binary: `UNIVRS_K9S`, or the one scripts/build-k9s built for the pin (it returns at
/// once when the pin is built; scripts/install-deps builds it).
fn k9s_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UNIVRS_K9S") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "UNIVRS_K9S={} is not a file", p.display());
        return p;
    }
    let script = repo_root().join("scripts/build-k9s");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e}; this test needs k9s: run scripts/install-deps",
                script.display()
            )
        });
    assert!(
        out.status.success(),
        "scripts/build-k9s failed (its output is above); this test needs k9s: run \
         scripts/install-deps, which builds it once from deploy/k9s/go.mod"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build-k9s prints a path")
            .trim(),
    )
}

/// Fails with what to do when tmux is not installed.
fn require_tmux() {
    match Command::new("tmux").arg("-V").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`tmux -V` failed: {}; this test drives k9s in tmux: run scripts/install-deps",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "tmux is not available ({e}); this test drives k9s in tmux: run scripts/install-deps \
             (Debian package tmux)"
        ),
    }
}

/// k9s running in a detached tmux session on a tmux server of its own (socket in `dir`), so
/// the user's tmux is never touched. Dropping it (also while a failed assertion unwinds) kills
/// that server and k9s with it.
struct Dashboard {
    socket: PathBuf,
    log: PathBuf,
}

impl Dashboard {
    /// Starts `k9s args…` 200×50 with every file it writes under `dir` and `kubeconfig` as its
    /// only cluster.
    fn start(k9s: &Path, dir: &Path, kubeconfig: &Path, args: &[&str]) -> Self {
        let home = dir.join("home");
        let config = dir.join("k9s-config");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&config).unwrap();
        // Read-only (no edit/delete keys), no logo or splash, no icons (plain text to match), and
        // no check of GitHub for a newer release (unreachable here; it would only log).
        std::fs::write(
            config.join("config.yaml"),
            "k9s:\n  readOnly: true\n  skipLatestRevCheck: true\n  refreshRate: 2\n  ui:\n    \
             enableMouse: false\n    logoless: true\n    splashless: true\n    noIcons: true\n",
        )
        .unwrap();
        let dashboard = Self {
            socket: dir.join("tmux.sock"),
            log: dir.join("k9s.log"),
        };
        // k9s under `timeout`, so that even a tmux server orphaned by a killed test binary ends
        // within minutes (--foreground: k9s must stay in the terminal's foreground process
        // group, or reading the terminal stops it with SIGTTIN); after k9s exits the pane shows
        // how it ended instead of vanishing.
        let script =
            "timeout --foreground 600 \"$@\"; echo \"k9s exited with status $?\"; sleep 600";
        let home_var = |name: &str, sub: &str| format!("{name}={}", home.join(sub).display());
        let mut cmd = Command::new("tmux");
        cmd.arg("-S")
            .arg(&dashboard.socket)
            .args(["new-session", "-d", "-s", "k9s", "-x", "200", "-y", "50"])
            .arg("-e")
            .arg(format!("KUBECONFIG={}", kubeconfig.display()))
            .arg("-e")
            .arg(format!("HOME={}", home.display()))
            .arg("-e")
            .arg(format!("K9S_CONFIG_DIR={}", config.display()))
            // k9s keeps its discovery cache in the user's ~/.kube/cache (from the passwd entry,
            // not $HOME) unless KUBECACHEDIR says otherwise.
            .arg("-e")
            .arg(format!("KUBECACHEDIR={}", dir.join("kube-cache").display()))
            .arg("-e")
            .arg(format!("K9S_LOGS_DIR={}", dir.display()))
            .args(["-e", &home_var("XDG_CONFIG_HOME", ".config")])
            .args(["-e", &home_var("XDG_STATE_HOME", ".local/state")])
            .args(["-e", &home_var("XDG_DATA_HOME", ".local/share")])
            .args(["-e", &home_var("XDG_CACHE_HOME", ".cache")])
            .args(["-e", "LANG=C.UTF-8"])
            .args(["sh", "-c", script, "sh"])
            .arg(k9s)
            .arg("--logFile")
            .arg(&dashboard.log)
            .args(args);
        let (ok, _, err) = run(&mut cmd);
        assert!(ok, "starting k9s in tmux failed: {err}");
        dashboard
    }

    /// What the pane shows now.
    fn screen(&self) -> String {
        let (ok, out, err) = run(self.tmux().args(["capture-pane", "-p", "-t", "k9s"]));
        assert!(ok, "tmux capture-pane failed: {err}");
        out
    }

    /// Types `text` literally, then presses Enter when `enter`.
    fn type_text(&self, text: &str, enter: bool) {
        let (ok, _, err) = run(self.tmux().args(["send-keys", "-t", "k9s", "-l", text]));
        assert!(ok, "tmux send-keys {text:?} failed: {err}");
        if enter {
            let (ok, _, err) = run(self.tmux().args(["send-keys", "-t", "k9s", "Enter"]));
            assert!(ok, "tmux send-keys Enter failed: {err}");
        }
    }

    /// Polls the screen until `check` accepts it; on timeout fails with the last screen and
    /// the end of k9s's log.
    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
                return screen;
            }
            if started.elapsed() > SCREEN_TIMEOUT {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                panic!(
                    "timed out waiting for {what}; the screen:\n{screen}\nk9s log ({}):\n{}",
                    self.log.display(),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn tmux(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket);
        cmd
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// The words of a line of the screen, without k9s's table borders and sort arrows.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '│' | '↑' | '↓')))
        .filter(|w| !w.is_empty())
        .collect()
}

/// The words of the first line of `screen` that holds `word` as a word.
fn row<'a>(screen: &'a str, word: &str) -> Option<Vec<&'a str>> {
    screen.lines().map(words).find(|w| w.contains(&word))
}

/// Whether `words` holds `expected` in order, next to each other.
fn has_run(words: &[&str], expected: &[&str]) -> bool {
    words.windows(expected.len()).any(|w| w == expected)
}

/// `status.conditions[type=t].<field>` of an object's JSON, as printer columns read it.
fn condition_field(obj: &serde_json::Value, t: &str, field: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .and_then(|c| c[field].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A screen's lines with their trailing blanks removed (for printing).
fn trimmed(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k9s_shows_workloads_columns_and_node_conditions_and_events() {
    require_tmux();
    let k9s = k9s_bin();
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    for ns in [NS, LEASE_NS] {
        ensure_namespace(&client, ns).await;
    }

    // Two Univrs nodes whose agents (played here) renew their Leases, and the real controller.
    let nodes_api: Api<Node> = Api::all(client.clone());
    for n in NODES {
        nodes_api
            .create(
                &PostParams::default(),
                &node_object(n, &[("site", "library")], &NodeIdentity::generate()),
            )
            .await
            .unwrap();
    }
    let alive: Arc<BTreeMap<String, AtomicBool>> = Arc::new(
        NODES
            .iter()
            .map(|n| (n.to_string(), AtomicBool::new(true)))
            .collect(),
    );
    renew_leases(client.clone(), alive);
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    eventually("2 Leases", Duration::from_secs(30), async || {
        let n = leases.list(&Default::default()).await.unwrap().items.len();
        ((n >= NODES.len()).then_some(()), format!("{n} Leases"))
    })
    .await;
    let _controller = start_controller(cp);

    let wl_api: Api<Workload> = Api::namespaced(client.clone(), NS);
    let portal: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload", "metadata": {"name": "portal"},
        "spec": {"replicas": 3, "containers": [{"name": "web", "image": "demo/busybox:latest",
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}}]}
    }))
    .unwrap();
    wl_api
        .create(&PostParams::default(), &portal)
        .await
        .unwrap();

    // What the printer columns must show, read from the API once the controller has written
    // the status: k9s has to render the server's values, whatever they are.
    let wl = eventually(
        "portal's status with Scheduled and Available",
        Duration::from_secs(60),
        async || {
            let w = serde_json::to_value(wl_api.get("portal").await.unwrap()).unwrap();
            let done = !condition_field(&w, "Scheduled", "reason").is_empty()
                && !condition_field(&w, "Available", "status").is_empty()
                && w["status"]["readyReplicas"].is_i64();
            (done.then(|| w.clone()), format!("{}", w["status"]))
        },
    )
    .await;
    let expected_row: Vec<String> = vec![
        "portal".into(),
        wl["spec"]["replicas"].to_string(),
        wl["status"]["readyReplicas"].to_string(),
        condition_field(&wl, "Available", "status"),
        condition_field(&wl, "Scheduled", "reason"),
    ];
    assert_eq!(expected_row[1], "3");

    // Both nodes Ready, and the NodeReady Event recorded (what describe must list).
    for n in NODES {
        eventually(
            &format!("{n} Ready with a NodeReady Event"),
            Duration::from_secs(60),
            async || {
                let (_, out, _) = run(cp.kubectl().args(["describe", "nodes.univrs.io", n]));
                (out.contains("NodeReady").then_some(()), out)
            },
        )
        .await;
    }
    let described = serde_json::to_value(nodes_api.get(NODES[1]).await.unwrap()).unwrap();
    let ready_reason = condition_field(&described, "Ready", "reason");
    assert_eq!(condition_field(&described, "Ready", "status"), "True");

    let dir = cp.data_dir.join(format!("k9s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // `workloads.univrs.io`, not `workload`: k9s's own "Workload" view (all pods, deployments,
    // …) holds that name; `uwl`, the CRD's short name, works too.
    let dash = Dashboard::start(
        &k9s,
        &dir,
        &cp.kubeconfig,
        &[
            "--readonly",
            "--namespace",
            NS,
            "--command",
            "workloads.univrs.io",
        ],
    );

    // 1. The Workload list with the CRD's printer columns and the controller's values.
    let expected: Vec<&str> = expected_row.iter().map(String::as_str).collect();
    let screen = dash
        .wait_for("the workloads view with portal's printer columns", |s| {
            row(s, "NAME").is_some_and(|h| {
                has_run(&h, &["NAME", "DESIRED", "READY", "AVAILABLE", "SCHEDULED"])
                    && h.contains(&"AGE")
            }) && row(s, "portal").is_some_and(|r| has_run(&r, &expected))
        })
        .await;
    eprintln!("--- k9s: workloads.univrs.io ---\n{}", trimmed(&screen));
    assert!(
        screen.contains(&format!("workloads({NS})")),
        "the view's title names the resource and namespace:\n{screen}"
    );

    // 2. The Univrs nodes (not the core `nodes`, which k9s keeps for v1 Nodes).
    dash.type_text(":", false);
    dash.type_text("nodes.univrs.io", true);
    let screen = dash
        .wait_for("the Univrs nodes view", |s| {
            row(s, "NAME").is_some_and(|h| {
                has_run(
                    &h,
                    &["NAME", "READY", "ROLE", "REPUTATION", "CPU", "MEMORY"],
                )
            }) && NODES
                .iter()
                .all(|n| row(s, n).is_some_and(|r| has_run(&r, &[n, "True"]) && r.contains(&"8Gi")))
        })
        .await;
    eprintln!("--- k9s: nodes.univrs.io ---\n{}", trimmed(&screen));

    // 3. describe (key d) of one node: its Conditions and its Events.
    dash.type_text("/", false);
    dash.type_text(NODES[1], true);
    dash.wait_for("the node list filtered to one node", |s| {
        row(s, NODES[1]).is_some() && row(s, NODES[0]).is_none()
    })
    .await;
    dash.type_text("d", false);
    let screen = dash
        .wait_for("the node's describe page", |s| {
            let all = words(s);
            has_run(&all, &["Name:", NODES[1]])
                && all.contains(&"Conditions:")
                && has_run(&all, &["Type:", "Ready"])
                && has_run(&all, &["Reason:", ready_reason.as_str()])
        })
        .await;
    eprintln!("--- k9s: describe (top) ---\n{}", trimmed(&screen));
    // The Events table is at the end of the page: jump there (G) and read it.
    dash.type_text("G", false);
    let screen = dash
        .wait_for("the node's Events in describe", |s| {
            row(s, "Events:").is_some()
                && row(s, "NodeReady").is_some_and(|r| r.contains(&"Normal"))
        })
        .await;
    eprintln!("--- k9s: describe (end) ---\n{}", trimmed(&screen));
}

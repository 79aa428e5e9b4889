//! The community dashboard in a real browser, and logs from anywhere: `univrs up --agents 2`
//! (three agents, joined with their own certificates under the chart's RBAC and admission
//! policies), the portal example and three credit lines applied with kubectl, then
//! `univrs dashboard` read by headless Chromium over WebDriver (Debian's chromium and
//! chromedriver). The page must show the three machines, the mesh graph, the credit lines and
//! the portal's instances; a scale to five through kubectl must show five without a reload;
//! each page is photographed (saved under the target's tmp directory) and the photograph is
//! checked for what it shows and read for accessibility (names, labels, keyboard, contrast).
//! Then `univrs logs -f` follows an instance on another node, the MCP tool `workload_logs`
//! reads it too, and a caller whom RBAC does not allow gets 403 and sees nothing.

use kube::api::Api;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use univrs_api::Workload;
use univrs_tests::browser::Browser;
use univrs_tests::cluster::eventually;
use univrs_tests::up::Up;
use univrs_tests::{Guarded, free_port, run, univrs_bin};

const NS: &str = "community-center";
const PORTAL: &str = "community-portal";
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Three credit lines: each machine hosts the community center.
const LINES: &str = "
apiVersion: univrs.io/v1alpha1
kind: CreditLine
metadata: {name: node-0-hosts-community-center}
spec: {creditor: node/node-0, debtor: namespace/community-center, limit: 100000}
---
apiVersion: univrs.io/v1alpha1
kind: CreditLine
metadata: {name: node-1-hosts-community-center}
spec: {creditor: node/node-1, debtor: namespace/community-center, limit: 100000}
---
apiVersion: univrs.io/v1alpha1
kind: CreditLine
metadata: {name: node-2-hosts-community-center}
spec: {creditor: node/node-2, debtor: namespace/community-center, limit: 100000}
";

/// What the stranger may do: read the portal's Workload and the Nodes (so `univrs logs` finds
/// the instance's node), and mint tokens for itself alone; not read logs.
const STRANGER_GRANTS: &str = "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: stranger, namespace: community-center}
rules:
  - {apiGroups: [univrs.io], resources: [workloads], verbs: [get]}
  - {apiGroups: [''], resources: [serviceaccounts/token], resourceNames: [stranger], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: stranger, namespace: community-center}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: stranger}
subjects: [{kind: ServiceAccount, name: stranger, namespace: community-center}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: univrs-test-stranger-nodes}
rules:
  - {apiGroups: [univrs.io], resources: [nodes], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: univrs-test-stranger-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: univrs-test-stranger-nodes}
subjects: [{kind: ServiceAccount, name: stranger, namespace: community-center}]
";

/// `univrs kubectl ARGS` against `kubeconfig`; its stdout, failing the test on an error.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, out, err) = run(Command::new(univrs_bin())
        .arg("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig));
    assert!(ok, "kubectl {args:?}: {err}");
    out
}

/// Where the screenshots go (kept after the test, for people to look at).
fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `univrs dashboard` on loopback, and its URL.
fn start_dashboard(kubeconfig: &Path, listen: &str, data_home: &Path) -> (Guarded, String) {
    let mut cmd = Command::new(univrs_bin());
    cmd.args(["dashboard", "--listen", listen])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("XDG_DATA_HOME", data_home)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut proc = Guarded::spawn(cmd).unwrap();
    let stdout = proc.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("univrs dashboard said {line:?}"))
        .to_string();
    (proc, url)
}

/// The colour a CSS property of the first element matching `selector` computes to.
fn colour(browser: &Browser, selector: &str, property: &str) -> [u8; 3] {
    let v = browser.eval(&format!(
        "const e = document.querySelector({selector:?}); return e ? getComputedStyle(e).getPropertyValue({property:?}) : null;"
    ));
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("no {selector} to read {property} of: {v}"));
    let n: Vec<u8> = text
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .take(3)
        .map(|c| c.trim().parse::<f64>().unwrap_or(0.0) as u8)
        .collect();
    assert_eq!(n.len(), 3, "{selector} {property} is {text}");
    [n[0], n[1], n[2]]
}

/// Photographs the page as `name`.png and checks the picture holds at least `min_pixels`
/// of the colour `selector` is drawn in (so the photograph shows the thing, not a blank or
/// an error page), besides the DOM checks made before.
fn photograph(browser: &Browser, name: &str, selector: &str, property: &str, min_pixels: usize) {
    // Every page photographed is also read as a screen reader, a keyboard and weaker eyes do.
    let problems = browser.accessibility_problems();
    assert!(problems.is_empty(), "the {name} page: {problems:#?}");
    let path = shots().join(format!("{name}.png"));
    let want = colour(browser, selector, property);
    let image = browser.screenshot(&path);
    let got = image.count(want, 2);
    assert!(
        got >= min_pixels && image.colours() > 16,
        "{}: {got} pixels of {want:?} ({selector} {property}), {} colours; want at least {min_pixels}",
        path.display(),
        image.colours()
    );
    eprintln!(
        "{}: {} × {}, {got} pixels of {selector}",
        path.display(),
        image.width,
        image.height
    );
}

/// `workload_logs` of the portal's instance `index` through `univrs mcp --stdio` (JSON-RPC,
/// one message a line, as MCP's stdio transport speaks it): the tool call's result.
fn mcp_workload_logs(kubeconfig: &Path, index: &str) -> serde_json::Value {
    use std::io::Write;
    let mut cmd = Command::new(univrs_bin());
    cmd.args(["mcp", "--stdio", "--kubeconfig"])
        .arg(kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = Guarded::spawn(cmd).unwrap();
    let mut input = server.0.stdin.take().unwrap();
    let mut output = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let mut answer_to = |id: u64| -> serde_json::Value {
        loop {
            let line = output.next().expect("the MCP server answered").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    let send = |input: &mut std::process::ChildStdin, v: serde_json::Value| {
        writeln!(input, "{v}").unwrap();
        input.flush().unwrap();
    };
    send(
        &mut input,
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "univrs-browser-test", "version": "0"}}}),
    );
    assert!(answer_to(1)["result"].is_object());
    send(
        &mut input,
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    );
    send(
        &mut input,
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "workload_logs", "arguments": {"name": PORTAL, "namespace": NS,
                   "instance": index.parse::<u32>().unwrap(), "tailLines": 3}}}),
    );
    answer_to(2)["result"].clone()
}

/// A kubeconfig with the cluster of `admin` and the bearer token `token`.
fn token_kubeconfig(admin: &Path, token: &str, out: &Path) -> PathBuf {
    let mut kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    kc["users"][0]["user"] = serde_yaml::from_str(&format!("{{token: {token}}}")).unwrap();
    std::fs::write(out, serde_yaml::to_string(&kc).unwrap()).unwrap();
    out.to_path_buf()
}

/// `univrs logs ARGS` with `kubeconfig`: (success, stdout, stderr).
fn univrs_logs(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    run(Command::new(univrs_bin())
        .arg("logs")
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_community_live_and_logs_are_read_from_anywhere() {
    let dir = PathBuf::from(format!("/tmp/ub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let up = Up::start(&dir, free_port(), 2);
    let kc = up.kubeconfig.clone();
    let portal = univrs_tests::repo_root().join("deploy/examples/community-portal.yaml");
    kubectl(&kc, &["apply", "-f", portal.to_str().unwrap()]);
    let lines_file = dir.with_extension("lines.yaml");
    std::fs::write(&lines_file, LINES).unwrap();
    kubectl(&kc, &["apply", "-f", lines_file.to_str().unwrap()]);
    let client = up.client().await;
    let workloads: Api<Workload> = Api::namespaced(client.clone(), NS);
    let ready = async |n: i32| {
        eventually(
            &format!("{n} portal instances ready"),
            Duration::from_secs(180),
            async || {
                let w = workloads.get(PORTAL).await.unwrap();
                let r = w
                    .status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                ((r == n).then_some(w), format!("ready: {r}"))
            },
        )
        .await
    };
    let w = ready(3).await;

    // The overview: machines, mesh, money, workloads.
    let data_home = dir.with_extension("xdg");
    let (_dashboard, url) = start_dashboard(&kc, &format!("127.0.0.1:{}", free_port()), &data_home);
    let browser = Browser::start(1280, 1800);
    browser.goto(&url);
    browser.wait_for("the three machines", PAGE_TIMEOUT, "return document.querySelectorAll('[data-node=\"node-0\"],[data-node=\"node-1\"],[data-node=\"node-2\"]').length >= 3");
    browser.wait_for("the mesh graph's three machines and its links", PAGE_TIMEOUT,
        "const s = document.getElementById('mesh'); return s && s.querySelectorAll('.mesh-node').length === 3 && s.querySelectorAll('.mesh-link').length >= 2");
    browser.wait_for(
        "the three credit lines",
        PAGE_TIMEOUT,
        "return document.querySelectorAll('#money .credit-line').length === 3",
    );
    browser.wait_for("the portal's three instances", PAGE_TIMEOUT,
        "return document.querySelectorAll('[data-workload=\"community-center/community-portal\"]').length >= 1 && new Set([...document.querySelectorAll('[data-instance]')].map(e => e.dataset.instance)).size === 3");
    browser.wait_for(
        "the stream is live",
        PAGE_TIMEOUT,
        "const l = document.getElementById('live'); return l && l.textContent.includes('Live')",
    );
    let text = browser
        .eval("return document.body.innerText")
        .as_str()
        .unwrap_or("")
        .to_string();
    for want in ["node-0", "node-1", "node-2", PORTAL] {
        assert!(
            text.contains(want),
            "the overview does not say {want}:\n{text}"
        );
    }
    // Where each instance runs, as the Workload's status says.
    for i in w.status.as_ref().unwrap().instances.iter() {
        let shown = browser.eval(&format!(
            "const e = document.querySelector('[data-instance=\"{}\"]'); return e ? e.dataset.nodeOfInstance : null;",
            i.name
        ));
        assert_eq!(shown.as_str(), i.node.as_deref(), "where {} runs", i.name);
    }
    // Each link says how the pair is connected (all Direct on one machine) and its round trip,
    // from the agents' peer reports.
    browser.wait_for(
        "each mesh link's connection and latency",
        PAGE_TIMEOUT,
        "const ls = [...document.querySelectorAll('#mesh .mesh-link')]; return ls.length >= 2 && ls.every(l => l.dataset.connection === 'Direct') && document.querySelectorAll('#mesh .link-label').length === ls.length && [...document.querySelectorAll('#mesh .link-label')].every(t => / ms$/.test(t.textContent))",
    );
    // Balances over time: an account per line end, and the community center's moved as the
    // portal was paid for.
    browser.wait_for(
        "each account's balance over time",
        PAGE_TIMEOUT,
        "const sp = [...document.querySelectorAll('svg.spark')]; return sp.length >= 4 && sp.some(s => (s.getAttribute('aria-label') || '').startsWith('From '))",
    );
    photograph(&browser, "overview", "#mesh .mesh-node circle", "fill", 200);

    // Five replicas through kubectl: the same page shows them without a reload.
    browser.eval("window.__notReloaded = true; return true;");
    kubectl(
        &kc,
        &["scale", "workload", PORTAL, "-n", NS, "--replicas", "5"],
    );
    ready(5).await;
    browser.wait_for("five instances without a reload", PAGE_TIMEOUT,
        "return window.__notReloaded === true && new Set([...document.querySelectorAll('[data-instance]')].map(e => e.dataset.instance)).size === 5");
    photograph(
        &browser,
        "overview-five",
        "#mesh .mesh-node circle",
        "fill",
        200,
    );

    // A machine's page.
    browser.goto(&format!("{url}#/nodes/node-1"));
    browser.wait_for("node-1's page", PAGE_TIMEOUT,
        "return document.querySelector('main') && document.querySelector('main').innerText.includes('node-1') && document.querySelector('main').innerText.includes('Ready')");
    photograph(&browser, "node", "h1, h2", "color", 50);

    // The portal's page, with its Events.
    browser.goto(&format!("{url}#/workloads/{NS}/{PORTAL}"));
    browser.wait_for("the portal's page with five instances and its Events", PAGE_TIMEOUT,
        "const m = document.querySelector('main'); return m && m.querySelectorAll('[data-instance]').length >= 5 && m.innerText.includes('Started')");
    photograph(&browser, "workload", "h1, h2", "color", 50);

    // An instance's log, followed live: the readiness probe's requests arrive as lines.
    let on_other = w
        .status
        .as_ref()
        .unwrap()
        .instances
        .iter()
        .find(|i| i.node.as_deref() != Some("node-0"))
        .expect("an instance off node-0")
        .clone();
    let index = on_other.name.rsplit_once('-').unwrap().1.to_string();
    browser.goto(&format!("{url}#/workloads/{NS}/{PORTAL}/logs/{index}"));
    let first = browser.wait_for("the log's first lines", PAGE_TIMEOUT,
        "const l = document.getElementById('log'); return l && l.textContent.includes('response:200') ? l.textContent.split('\\n').length : 0");
    browser.wait_for("a line written while the page is open", PAGE_TIMEOUT, &format!(
        "const l = document.getElementById('log'); return l && l.textContent.split('\\n').length > {first}"));
    photograph(&browser, "logs", "#log", "color", 50);

    // A phone: one column, nothing wider than the screen.
    browser.resize(390, 844);
    browser.goto(&url);
    browser.wait_for(
        "the overview on a phone",
        PAGE_TIMEOUT,
        "return document.querySelectorAll('[data-node]').length >= 3",
    );
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(
        overflow.as_i64().unwrap_or(99) <= 0,
        "the page is wider than a phone by {overflow} px"
    );
    photograph(&browser, "phone", "#mesh .mesh-node circle", "fill", 50);
    drop(browser);

    // An attacker's page elsewhere that rebinds its own name to 127.0.0.1 is not answered.
    let port = url.trim_end_matches('/').rsplit_once(':').unwrap().1;
    let (code, body) = univrs_tests::curl(&[
        "-H",
        &format!("Host: attacker.example:{port}"),
        &format!("{url}api/view"),
    ]);
    assert_eq!(code, "421", "{body}");
    // Off loopback: TLS and a token (made once, mode 0600); the data is refused without it,
    // and nothing is served in plain HTTP.
    let (_open, open_url) = start_dashboard(&kc, &format!("0.0.0.0:{}", free_port()), &data_home);
    assert!(open_url.starts_with("https://"), "{open_url}");
    let open_url = open_url.replace("0.0.0.0", "127.0.0.1");
    let token_file = data_home.join("univrs/dashboard/token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&token_file).unwrap();
    let (code, body) = univrs_tests::curl(&["-k", &format!("{open_url}api/view")]);
    assert_eq!(code, "401", "{body}");
    assert!(!body.contains(PORTAL), "{body}");
    let (code, body) = univrs_tests::curl(&[
        "-k",
        "-H",
        &format!("Authorization: Bearer {}", secret.trim()),
        &format!("{open_url}api/view"),
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains(PORTAL), "{body}");
    let (code, _) = univrs_tests::curl(&[
        "-m",
        "5",
        &format!("{}api/view", open_url.replace("https://", "http://")),
    ]);
    assert_ne!(code, "200", "plain HTTP was served off loopback");

    // `univrs logs -f` from this machine follows the instance on another node.
    let mut follow = Command::new(univrs_bin());
    follow
        .args([
            "logs",
            PORTAL,
            "-n",
            NS,
            "--instance",
            &index,
            "-f",
            "--tail",
            "1",
            "--kubeconfig",
        ])
        .arg(&kc)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.with_extension("follow.err")).unwrap());
    let mut follower = Guarded::spawn(follow).unwrap();
    let stdout = follower.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    while lines.len() < 3 && started.elapsed() < Duration::from_secs(60) {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            lines.push(l);
        }
    }
    assert!(
        lines.len() >= 3,
        "univrs logs -f printed {lines:?}; stderr: {}",
        std::fs::read_to_string(dir.with_extension("follow.err")).unwrap_or_default()
    );
    // The tail was one line: the others came while it followed.
    assert!(
        lines.iter().all(|(_, l)| l.contains("response:200")),
        "{lines:?}"
    );
    assert!(
        lines[2].0.duration_since(lines[0].0) >= Duration::from_secs(1),
        "{lines:?}"
    );
    eprintln!(
        "univrs logs -f on {}: {} lines in {:.1}s",
        on_other.node.as_deref().unwrap(),
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    drop(follower);
    let _ = std::fs::remove_file(dir.with_extension("follow.err"));

    // The MCP tool reads the same log through the same path.
    let answer = mcp_workload_logs(&kc, &index);
    assert_eq!(answer["isError"], serde_json::json!(false), "{answer}");
    let content = &answer["structuredContent"];
    assert_eq!(
        content["node"].as_str(),
        on_other.node.as_deref(),
        "{answer}"
    );
    assert!(
        content["log"]
            .as_str()
            .is_some_and(|l| l.contains("response:200")),
        "{answer}"
    );

    // A caller who may see the Workload and the Nodes but not the logs: a ServiceAccount whose
    // kubeconfig holds an ordinary token (for the API server), which `univrs logs` never sends
    // to a node: it mints one for that node's audience (TokenRequest on itself) instead.
    let node = on_other.node.clone().unwrap();
    kubectl(&kc, &["create", "serviceaccount", "stranger", "-n", NS]);
    let grants = dir.with_extension("stranger.yaml");
    std::fs::write(&grants, STRANGER_GRANTS).unwrap();
    kubectl(&kc, &["apply", "-f", grants.to_str().unwrap()]);
    let api_token = kubectl(&kc, &["create", "token", "stranger", "-n", NS]);
    let stranger = token_kubeconfig(
        &kc,
        api_token.trim(),
        &dir.with_extension("stranger.kubeconfig"),
    );
    let audience = univrs_api::system::node_audience(&node);
    let token = kubectl(
        &kc,
        &[
            "create",
            "token",
            "stranger",
            "-n",
            NS,
            "--audience",
            &audience,
        ],
    );
    let (ok, out, err) = univrs_logs(&stranger, &[PORTAL, "-n", NS, "--instance", &index]);
    assert!(!ok && out.is_empty(), "a stranger read the log: {out}");
    assert!(
        err.contains("forbidden (403)") && err.contains("stranger"),
        "{err}"
    );
    // Straight at the node server: no credentials, or a token meant for the API server (which
    // the node could otherwise replay), are not even authenticated.
    let nodes: Api<univrs_api::Node> = Api::all(client.clone());
    let n = nodes.get(&node).await.unwrap();
    let server = n.metadata.annotations.as_ref().unwrap()
        [univrs_api::system::NODE_SERVER_ANNOTATION]
        .clone();
    let path = format!("{server}/api/v1/namespaces/{NS}/workloads/{PORTAL}/log?instance={index}");
    let (code, body) = univrs_tests::curl(&["-k", &path]);
    assert_eq!(code, "401", "{body}");
    let (code, body) = univrs_tests::curl(&[
        "-k",
        "-H",
        &format!("Authorization: Bearer {}", api_token.trim()),
        &path,
    ]);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("not valid for audience"), "{body}");
    let (code, body) = univrs_tests::curl(&[
        "-k",
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        &path,
    ]);
    assert_eq!(code, "403", "{body}");
    assert!(!body.contains("response:200"), "{body}");
    // The chart's roles: whoever may view the namespace may read its Workloads' logs.
    kubectl(
        &kc,
        &[
            "create",
            "rolebinding",
            "stranger-views",
            "-n",
            NS,
            "--clusterrole",
            "view",
            "--serviceaccount",
            &format!("{NS}:stranger"),
        ],
    );
    let (ok, out, err) = univrs_logs(
        &stranger,
        &[PORTAL, "-n", NS, "--instance", &index, "--tail", "2"],
    );
    assert!(
        ok && out.contains("response:200"),
        "a viewer could not read the log: {err}"
    );

    let _ = std::fs::remove_file(&lines_file);
    let _ = std::fs::remove_file(&stranger);
    let _ = std::fs::remove_file(&grants);
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&data_home);
}

//! The deployment files besides the chart: the community-cloud examples (every manifest accepted
//! by the real API server, then placed by the real controller as the scenario says), the
//! systemd units (systemd-analyze verify and security; the agent unit's capability bounding set
//! still runs real containers) and the flags every deployment file passes to univrs.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::{CreditLine, Node, Workload};
use univrs_tests::cluster::{
    LEASE_NS, ensure_namespace, eventually, node_object, renew_leases, start_controller,
};
use univrs_tests::{ControlPlane, repo_root, run, univrs_bin};

fn examples() -> PathBuf {
    repo_root().join("deploy/examples")
}

fn systemd_dir() -> PathBuf {
    repo_root().join("deploy/systemd")
}

/// The KEY=VALUE lines of a systemd EnvironmentFile (comments and blank lines skipped); a line
/// of any other shape fails the test.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {l}", path.display()));
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{}: bad variable name {k}",
                path.display()
            );
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// An organization's agent as its example EnvironmentFile sets it up.
struct Agent {
    node: String,
    labels: BTreeMap<String, String>,
}

fn example_agents() -> Vec<Agent> {
    let mut agents: Vec<Agent> = std::fs::read_dir(examples().join("agents"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "env"))
        .map(|path| {
            let env = env_file(&path);
            let flags: Vec<String> = env["UNIVRS_AGENT_FLAGS"]
                .split_whitespace()
                .map(String::from)
                .collect();
            let labels = flags
                .windows(2)
                .filter(|w| w[0] == "--label")
                .map(|w| {
                    let (k, v) = w[1].split_once('=').expect("--label k=v");
                    (k.to_string(), v.to_string())
                })
                .collect();
            Agent {
                node: env["NODE_NAME"].clone(),
                labels,
            }
        })
        .collect();
    agents.sort_by(|a, b| a.node.cmp(&b.node));
    agents
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let (ok, out, err) = run(cp.kubectl().args(args));
    assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
    out
}

/// Instance → node of a Workload.
async fn placed(api: &Api<Workload>, name: &str) -> BTreeMap<String, String> {
    api.get(name)
        .await
        .unwrap()
        .status
        .iter()
        .flat_map(|s| &s.instances)
        .filter_map(|i| i.node.clone().map(|n| (i.name.clone(), n)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_apply_and_the_controller_places_them_as_the_scenario_says() {
    let cp = ControlPlane::shared();
    let client = cp.client().await.unwrap();
    ensure_namespace(&client, LEASE_NS).await;
    let dir = examples();
    kubectl(
        cp,
        &["apply", "-f", dir.join("namespaces.yaml").to_str().unwrap()],
    );
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 5, "{manifests:?}");
    for m in &manifests {
        let out = kubectl(
            cp,
            &["apply", "--dry-run=server", "-f", m.to_str().unwrap()],
        );
        assert!(out.contains("(server dry run)"), "{out}");
    }

    // The four organizations' machines, as their agents would announce them from the example
    // EnvironmentFiles; the school's has the GPU.
    let agents = example_agents();
    let names: Vec<&str> = agents.iter().map(|a| a.node.as_str()).collect();
    assert_eq!(names, ["community-center", "library", "school", "shop"]);
    let nodes: Api<Node> = Api::all(client.clone());
    for a in &agents {
        let labels: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut node = node_object(&a.node, &labels, &NodeIdentity::generate());
        node.spec.capacity.gpu = i32::from(a.labels.get("cuda").is_some_and(|v| v == "true"));
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let alive: Arc<BTreeMap<String, AtomicBool>> = Arc::new(
        names
            .iter()
            .map(|n| (n.to_string(), AtomicBool::new(true)))
            .collect(),
    );
    renew_leases(client.clone(), alive);
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    eventually("4 Leases", Duration::from_secs(30), async || {
        let n = leases.list(&Default::default()).await.unwrap().items.len();
        ((n >= 4).then_some(()), format!("{n} Leases"))
    })
    .await;

    kubectl(cp, &["apply", "-f", dir.to_str().unwrap()]);
    let _controller = start_controller(cp);

    let portal: Api<Workload> = Api::namespaced(client.clone(), "community-center");
    let p = eventually(
        "community-portal on the library, the school and the shop",
        Duration::from_secs(60),
        async || {
            let p = placed(&portal, "community-portal").await;
            let on: BTreeSet<&str> = p.values().map(String::as_str).collect();
            let ok = p.len() == 3 && on == BTreeSet::from(["library", "school", "shop"]);
            (ok.then(|| p.clone()), format!("{p:?}"))
        },
    )
    .await;
    eprintln!("community-portal: {p:?}");
    // The GPU job on the school's machine, the archive on the shop's storage.
    for (ns, name, node) in [
        ("library", "archive-ocr", "school"),
        ("school", "coursework-archive", "shop"),
    ] {
        let api: Api<Workload> = Api::namespaced(client.clone(), ns);
        eventually(
            &format!("{ns}/{name} on {node}"),
            Duration::from_secs(60),
            async || {
                let p = placed(&api, name).await;
                let ok = p.values().eq([node].iter());
                (ok.then_some(()), format!("{p:?}"))
            },
        )
        .await;
    }
    let lines: Api<CreditLine> = Api::all(client.clone());
    eventually(
        "every credit line Ready",
        Duration::from_secs(30),
        async || {
            let all = lines.list(&Default::default()).await.unwrap().items;
            let not_ready: Vec<String> = all
                .iter()
                .filter(|l| {
                    !l.status
                        .as_ref()
                        .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"))
                })
                .filter_map(|l| l.metadata.name.clone())
                .collect();
            (
                (all.len() >= 6 && not_ready.is_empty()).then_some(()),
                format!("{} lines, not Ready: {not_ready:?}", all.len()),
            )
        },
    )
    .await;
}

#[test]
fn the_helm_values_example_gives_each_organization_the_labels_of_its_env_file() {
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(examples().join("helm/community-cloud-values.yaml")).unwrap(),
    )
    .unwrap();
    let pools: BTreeMap<String, BTreeMap<String, String>> = values["agent"]["pools"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                serde_yaml::from_value(p["labels"].clone()).unwrap(),
            )
        })
        .collect();
    let env: BTreeMap<String, BTreeMap<String, String>> = example_agents()
        .into_iter()
        .map(|a| (a.node, a.labels))
        .collect();
    assert_eq!(pools, env);
}

/// A copy of `unit` in `dir` whose ExecStart runs the univrs binary just built (systemd-analyze
/// verify checks that the command exists).
fn unit_with_binary(unit: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit).unwrap();
    let out = dir.join(unit.file_name().unwrap());
    std::fs::write(
        &out,
        text.replace("/usr/local/bin/univrs", univrs_bin().to_str().unwrap()),
    )
    .unwrap();
    out
}

fn units() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(systemd_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

/// The sections and settings of a unit file; a line that is neither fails the test.
fn parse_unit(unit: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = None;
    for (n, line) in std::fs::read_to_string(unit).unwrap().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_string());
            sections.entry(name.to_string()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not a setting: {line}", unit.display(), n + 1));
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("{}:{}: outside a section", unit.display(), n + 1));
        sections
            .get_mut(&section)
            .unwrap()
            .push((k.to_string(), v.to_string()));
    }
    sections
}

#[test]
fn the_systemd_units_pass_systemd_analyze() {
    let scratch = tempfile::Builder::new()
        .prefix("univrs-units-")
        .tempdir()
        .unwrap();
    let dir = scratch.path();
    let units = units();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "univrs-agent.service",
            "univrs-controller.service",
            "univrs-up.service"
        ]
    );
    for unit in &units {
        let sections = parse_unit(unit);
        let keys: BTreeSet<&str> = sections.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["Install", "Service", "Unit"]),
            "{}",
            unit.display()
        );
        let exec = sections["Service"]
            .iter()
            .filter(|(k, _)| k == "ExecStart")
            .count();
        assert_eq!(exec, 1, "{}: one ExecStart", unit.display());
    }
    for env in std::fs::read_dir(systemd_dir()).unwrap() {
        let path = env.unwrap().path();
        if path.extension().is_some_and(|e| e == "env") {
            env_file(&path);
        }
    }
    if let Err(e) = Command::new("systemd-analyze").arg("--version").output() {
        panic!(
            "running `systemd-analyze --version`: {e}; this test verifies the units with it: \
             run scripts/install-deps (Debian package systemd)"
        );
    }
    eprintln!("| unit | systemd-analyze security exposure |\n|---|---|");
    for unit in &units {
        let copy = unit_with_binary(unit, dir);
        let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
        assert!(
            ok && err.trim().is_empty(),
            "{}:\n{out}\n{err}",
            unit.display()
        );
        let (_, out, err) = run(Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&copy));
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("{}: no exposure level:\n{out}\n{err}", unit.display()));
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        eprintln!(
            "| {} | {score} |",
            unit.file_name().unwrap().to_string_lossy()
        );
        if unit.ends_with("univrs-controller.service") {
            // The controller needs nothing of the machine: keep it in systemd's "OK" band.
            assert!(score <= 2.0, "{line}");
        }
    }
}

/// univrs subcommand → the flags deployment files pass to it, with where each comes from.
fn flags_in_deployment_files() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut add = |sub: &str, words: &[String], from: &str| {
        for w in words.iter().filter(|w| w.starts_with("--")) {
            let flag = w.split('=').next().unwrap().to_string();
            found
                .entry(sub.to_string())
                .or_default()
                .entry(flag)
                .or_insert_with(|| from.to_string());
        }
    };
    // systemd units: `ExecStart=/usr/local/bin/univrs SUB FLAGS…`.
    for unit in units() {
        let text = std::fs::read_to_string(&unit).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            assert!(words[0].ends_with("/univrs"), "{line}");
            add(&words[1], &words[2..], &unit.display().to_string());
        }
    }
    // EnvironmentFiles: the flags variables.
    let mut envs: Vec<PathBuf> = vec![
        systemd_dir().join("agent.env"),
        systemd_dir().join("up.env"),
    ];
    envs.extend(
        std::fs::read_dir(examples().join("agents"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    for path in envs {
        for (var, value) in env_file(&path) {
            let sub = match var.as_str() {
                // univrs-agent.service runs `univrs join`, which takes every agent flag.
                "UNIVRS_AGENT_FLAGS" => "join",
                "UNIVRS_UP_FLAGS" => "up",
                _ => continue,
            };
            let words: Vec<String> = value.split_whitespace().map(String::from).collect();
            add(sub, &words, &path.display().to_string());
        }
    }
    // The chart: every container's args, with default values and with the examples' values.
    let helm = repo_root().join(".tools/bin/helm");
    let chart = repo_root().join("charts/univrs");
    let example = examples().join("helm/community-cloud-values.yaml");
    for extra in [vec![], vec!["-f", example.to_str().unwrap()]] {
        let (ok, out, err) = run(Command::new(&helm)
            .env("KUBECONFIG", "/dev/null")
            .args(["template", "univrs"])
            .arg(&chart)
            .args(&extra));
        assert!(ok, "{err}");
        for doc in serde_yaml::Deserializer::from_str(&out) {
            let doc: serde_yaml::Value = k8s_openapi::serde::Deserialize::deserialize(doc).unwrap();
            let containers = &doc["spec"]["template"]["spec"]["containers"];
            for c in containers.as_sequence().into_iter().flatten() {
                let args: Vec<String> = c["args"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect();
                let from = format!(
                    "charts/univrs {}",
                    doc["metadata"]["name"].as_str().unwrap()
                );
                add(&args[0], &args[1..], &from);
            }
        }
    }
    found
}

#[test]
fn deployment_files_pass_only_flags_univrs_knows() {
    let found = flags_in_deployment_files();
    for sub in ["controller", "agent", "join", "mcp", "up"] {
        assert!(
            found.contains_key(sub),
            "no deployment file runs univrs {sub}"
        );
    }
    let mut checked = 0;
    for (sub, flags) in &found {
        let (ok, help, err) = run(Command::new(univrs_bin()).args([sub.as_str(), "--help"]));
        if !ok && err.contains("unrecognized subcommand") {
            // Being written in parallel; checked here as soon as the binary has it.
            eprintln!(
                "univrs has no `{sub}` subcommand yet: {} flags unchecked",
                flags.len()
            );
            continue;
        }
        assert!(ok, "univrs {sub} --help: {err}");
        for (flag, from) in flags {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{from} passes {flag} to univrs {sub}, which does not know it:\n{help}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "the controller's flags at least");
    eprintln!("{checked} flags checked against univrs --help");
}

/// The CapabilityBoundingSet of a unit, as setpriv writes it (`+chown,+kill,…`).
fn bounding_set(unit: &Path) -> String {
    let text = std::fs::read_to_string(unit).unwrap();
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_else(|| panic!("{} has no CapabilityBoundingSet", unit.display()));
    caps.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds the node agent's container-runtime test binary and returns its path.
fn runtime_test_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // As the harness does for univrs: CARGO_* of this test process would rebuild dependencies.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args([
            "test",
            "-p",
            "univrs-node-agent",
            "--test",
            "runtime",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "building the runtime tests failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back()
        .expect("cargo reported the runtime test executable")
}

/// Runs the node agent's real-container tests (youki through `univrs shim`) with the given
/// capability bounding set and no_new_privs, as systemd would start the agent.
fn runtime_tests_with(caps: &str, filter: &[&str]) -> (bool, String) {
    let (ok, out, err) = run(Command::new("setpriv")
        .args(["--bounding-set", &format!("-all,{caps}")])
        .args(["--inh-caps", "-all", "--no-new-privs", "--"])
        .arg(runtime_test_binary())
        .args(["--test-threads", "2"])
        .args(filter)
        .env("UNIVRS_BIN", univrs_bin()));
    (ok, format!("{out}{err}"))
}

#[test]
fn the_agent_units_capability_bounding_set_still_runs_containers() {
    let agent = bounding_set(&systemd_dir().join("univrs-agent.service"));
    assert_eq!(
        agent,
        bounding_set(&systemd_dir().join("univrs-up.service")),
        "univrs-up.service runs the agent: the same bounds"
    );
    let (ok, out) = runtime_tests_with(&agent, &[]);
    assert!(ok, "containers do not run within {agent}:\n{out}");
    let summary = out.lines().find(|l| l.starts_with("test result:")).unwrap();
    eprintln!("within the agent unit's bounds: {summary}");
    // The bounds are really applied: without CAP_SYS_ADMIN no container starts.
    let without = agent.replace(",+sys_admin", "");
    assert_ne!(without, agent);
    let (ok, _) = runtime_tests_with(&without, &["echo_reaches_the_log"]);
    assert!(!ok, "a container started without CAP_SYS_ADMIN");
}

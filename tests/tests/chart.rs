//! The Helm chart (charts/univrs) with the real helm v4 against the real API server: lint,
//! rendering, the values schema, install, upgrade (CRDs updated and kept, the MCP token and
//! certificate kept), uninstall (CRDs and users' objects kept), and its RBAC: each ServiceAccount
//! can do what its component does and nothing more, and the real controller, running on nothing
//! but its ServiceAccount's token, leads and reconciles without a single 403.
//!
//! Pods do not run here (the control plane has no kubelet): what is checked is that every object
//! is accepted and what the API server lets each identity do.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::serde::Deserialize;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use univrs_api::identity::NodeIdentity;
use univrs_api::resources::node::CREDIT_SETTLEMENT_FINALIZER;
use univrs_api::resources::vouch::VouchSpec;
use univrs_api::{CreditLine, Node, Vouch, Workload};
use univrs_tests::cluster::{LEASE_NS, ensure_namespace, eventually, metric, renew_leases};
use univrs_tests::{Guarded, free_port, repo_root, run, run_with_stdin};

const RELEASE: &str = "univrs";

fn chart() -> PathBuf {
    repo_root().join("charts/univrs")
}

/// helm v4 with its own cache and config under `home`, pointed at `kubeconfig` if given.
fn helm_cmd(home: &Path, kubeconfig: Option<&Path>) -> Command {
    let mut cmd = Command::new(repo_root().join(".tools/bin/helm"));
    for (var, dir) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, home.join(dir));
    }
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        // Rendering must not depend on any cluster.
        None => cmd.env("KUBECONFIG", "/dev/null"),
    };
    cmd
}

/// Runs helm without a cluster; returns (ok, stdout, stderr).
fn helm_offline(args: &[&str]) -> (bool, String, String) {
    let home = std::env::temp_dir().join(format!("univrs-helm-{}", std::process::id()));
    run(helm_cmd(&home, None).args(args))
}

fn helm_ok(cmd: &mut Command) -> String {
    let (ok, out, err) = run(cmd);
    assert!(ok, "{cmd:?} failed:\n{out}\n{err}");
    out
}

/// The documents of a multi-document YAML stream (empty ones dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// (kind, namespace, name) of an object.
fn id(doc: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&doc["kind"]),
        s(&doc["metadata"]["namespace"]),
        s(&doc["metadata"]["name"]),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn render(args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut all = vec!["template", RELEASE, chart.to_str().unwrap()];
    all.extend_from_slice(args);
    let (ok, out, err) = helm_offline(&all);
    assert!(ok, "helm {all:?} failed:\n{err}");
    documents(&out)
}

#[test]
fn lint_is_clean_also_strict_and_with_the_examples_values() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    let example = repo_root().join("deploy/examples/helm/community-cloud-values.yaml");
    for args in [
        vec!["lint", chart],
        vec!["lint", "--strict", chart],
        vec!["lint", "--strict", chart, "--namespace", "elsewhere"],
        vec!["lint", "--strict", chart, "-f", example.to_str().unwrap()],
    ] {
        let (ok, out, err) = helm_offline(&args);
        assert!(ok, "helm {args:?}:\n{out}\n{err}");
        assert!(out.contains("0 chart(s) failed"), "{out}");
        for level in ["[WARNING]", "[ERROR]"] {
            assert!(
                !out.contains(level),
                "helm {args:?} reports {level}:\n{out}"
            );
        }
    }
}

#[test]
fn template_renders_every_component_with_tight_security() {
    let docs = render(&["--namespace", "univrs-system"]);
    let ids: BTreeSet<_> = docs.iter().map(id).collect();
    let ns = "univrs-system";
    for (kind, namespace, name) in [
        ("CustomResourceDefinition", "", "workloads.univrs.io"),
        ("CustomResourceDefinition", "", "nodes.univrs.io"),
        ("CustomResourceDefinition", "", "creditlines.univrs.io"),
        ("CustomResourceDefinition", "", "vouches.univrs.io"),
        ("Deployment", ns, "univrs-controller"),
        ("PodDisruptionBudget", ns, "univrs-controller"),
        ("DaemonSet", ns, "univrs-agent"),
        ("Deployment", ns, "univrs-mcp"),
        ("Service", ns, "univrs-mcp"),
        ("Secret", ns, "univrs-mcp-token"),
        ("Secret", ns, "univrs-mcp-tls"),
        ("Secret", ns, "univrs-agent-api-token"),
        ("ServiceAccount", ns, "univrs-controller"),
        ("ServiceAccount", ns, "univrs-agent"),
        ("ServiceAccount", ns, "univrs-mcp"),
        ("ClusterRole", "", "univrs-controller"),
        ("ClusterRole", "", "univrs-node"),
        ("ClusterRoleBinding", "", "univrs-agent"),
        ("ClusterRoleBinding", "", "univrs-bootstrappers"),
        ("ClusterRole", "", "univrs-mcp"),
        ("ClusterRole", "", "univrs-view"),
        ("ClusterRole", "", "univrs-edit"),
        ("Role", ns, "univrs-controller-leases"),
    ] {
        assert!(
            ids.contains(&(kind.into(), namespace.into(), name.into())),
            "{kind} {namespace}/{name} not rendered; got {ids:#?}"
        );
    }
    // The release is in univrs-system: the chart does not also render that Namespace.
    assert!(!docs.iter().any(|d| d["kind"] == "Namespace"));

    for crd in docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep",
            "{:?}",
            id(crd)
        );
    }

    let controller = find(&docs, "Deployment", "univrs-controller");
    assert_eq!(controller["spec"]["replicas"], 2);
    let pod = &controller["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "controller");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|a| a == "--metrics-addr=0.0.0.0:9090"),
        "{:?}",
        c["args"]
    );

    let mcp = find(&docs, "Deployment", "univrs-mcp");
    for pod in [pod, &mcp["spec"]["template"]["spec"]] {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
        let sc = &pod["containers"][0]["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert!(
            pod["volumes"]
                .as_sequence()
                .is_none_or(|v| v.iter().all(|v| v["hostPath"].is_null()))
        );
    }
    let m = &mcp["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(m["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let args: Vec<&str> = m["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for flag in ["--listen=", "--token-file=", "--tls-cert=", "--tls-key="] {
        assert!(args.iter().any(|a| a.starts_with(flag)), "{args:?}");
    }

    // The agent: the host access it needs and nothing else.
    let ds = find(&docs, "DaemonSet", "univrs-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    assert!(pod["hostIPC"].is_null());
    let a = &pod["containers"][0];
    assert_eq!(a["securityContext"]["privileged"], true);
    assert_eq!(a["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        a["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let host_paths: BTreeMap<String, String> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|v| !v["hostPath"].is_null())
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["hostPath"]["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("data", "/var/lib/univrs"),
        ("run", "/run/univrs"),
        ("cgroup", "/sys/fs/cgroup"),
        ("xtables-lock", "/run/xtables.lock"),
        ("cni-bin", "/opt/cni/bin"),
        ("modules", "/lib/modules"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(host_paths, want);
    for m in a["volumeMounts"].as_sequence().unwrap() {
        let name = m["name"].as_str().unwrap();
        match name {
            "data" | "run" => assert_eq!(m["mountPropagation"], "Bidirectional"),
            "cni-bin" | "modules" => assert_eq!(m["readOnly"], true, "{name}"),
            _ => assert!(m["mountPropagation"].is_null(), "{name}"),
        }
    }
}

#[test]
fn another_release_namespace_gets_univrs_system_for_the_leases() {
    let docs = render(&["--namespace", "community"]);
    let ns = find(&docs, "Namespace", "univrs-system");
    assert_eq!(
        ns["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    // Components run in the release namespace; their Lease Roles stay in univrs-system.
    assert_eq!(
        find(&docs, "Deployment", "univrs-controller")["metadata"]["namespace"],
        "community"
    );
    let role = find(&docs, "RoleBinding", "univrs-controller-leases");
    assert_eq!(role["metadata"]["namespace"], "univrs-system");
    assert_eq!(role["subjects"][0]["namespace"], "community");
    let docs = render(&[
        "--namespace",
        "community",
        "--set",
        "systemNamespace.create=false",
    ]);
    assert!(!docs.iter().any(|d| d["kind"] == "Namespace"));
}

#[test]
fn agent_pools_render_one_daemonset_per_organization() {
    let values = repo_root().join("deploy/examples/helm/community-cloud-values.yaml");
    let docs = render(&["-n", "univrs-system", "-f", values.to_str().unwrap()]);
    let daemonsets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "DaemonSet").collect();
    let names: BTreeSet<&str> = daemonsets
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "univrs-agent-community-center",
            "univrs-agent-library",
            "univrs-agent-school",
            "univrs-agent-shop"
        ])
    );
    let school = find(&docs, "DaemonSet", "univrs-agent-school");
    let pod = &school["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["univrs.io/org"], "school");
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "--label=cuda=true",
        "--label=gpu=nvidia-t4",
        "--label=org=school",
        "--insecure-registry=127.0.0.1:5000",
    ] {
        assert!(args.contains(&want), "{want} missing from {args:?}");
    }
    // Each pool selects its own pods, so the DaemonSets never adopt each other's.
    assert_eq!(
        school["spec"]["selector"]["matchLabels"]["univrs.io/agent-pool"],
        "school"
    );
}

#[test]
fn the_schema_refuses_bad_values_naming_the_value() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (set, want) in [
        ("controller.replicas=two", "/controller/replicas"),
        (
            "controller.nodeGracePeriod=forty",
            "/controller/nodeGracePeriod",
        ),
        ("controller.replics=3", "'replics' not allowed"),
        (
            "controller.trustAnchors[0]=node-0",
            "/controller/trustAnchors/0",
        ),
        ("agent.listen[0]=tcp:4001", "/agent/listen/0"),
        ("agent.api.addr=localhost", "/agent/api/addr"),
        ("agent.dataDir=relative/dir", "/agent/dataDir"),
        ("agent.labels.gpu=not ok", "/agent/labels/gpu"),
        ("agent.pools[0].name=Bad_Name", "/agent/pools/0/name"),
        ("mcp.port=70000", "/mcp/port"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ] {
        let (ok, out, err) = helm_offline(&["template", RELEASE, chart, "--set", set]);
        assert!(!ok, "--set {set} was accepted:\n{out}");
        assert!(
            err.contains("don't meet the specifications of the schema") && err.contains(want),
            "--set {set}: the error does not name {want}:\n{err}"
        );
    }
}

#[test]
fn the_chart_holds_exactly_the_generated_crds() {
    let (ok, out, err) =
        run(Command::new(repo_root().join("scripts/sync-chart-crds")).arg("--check"));
    assert!(ok, "{out}{err}");
    // What Helm renders is those files with only the labels and the keep annotation added.
    let docs = render(&[]);
    let mut seen = 0;
    for entry in std::fs::read_dir(repo_root().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        let want: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = want["metadata"]["name"].as_str().unwrap().to_string();
        let mut got = find(&docs, "CustomResourceDefinition", &name).clone();
        let meta = got["metadata"].as_mapping_mut().unwrap();
        assert!(meta.remove("labels").is_some());
        assert!(meta.remove("annotations").is_some());
        assert_eq!(
            got,
            want,
            "{name} as rendered differs from {}",
            path.display()
        );
        seen += 1;
    }
    assert_eq!(seen, 4);
}

/// A private control plane without CRDs (the chart installs them), with helm pointed at it.
///
/// Its kube-apiserver runs with `--allow-privileged=true` and its kube-controller-manager also
/// runs the clusterrole-aggregation controller, as on any real cluster (kubeadm, k3s, kind):
/// the agent's DaemonSet is privileged and univrs-view/univrs-edit aggregate into view/edit.
/// `univrs control-plane` sets neither yet, so the real binaries are started through a
/// directory of wrappers that add the two flags (reported; once the local control plane sets
/// them, this can be `ControlPlane::start()`).
struct Cluster {
    _supervisor: Guarded,
    kubeconfig: PathBuf,
    server: String,
    data_dir: PathBuf,
    home: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // The harness removes univrs-test-<pid>-* directories of test binaries that are gone.
        let dir = std::env::temp_dir().join(format!("univrs-test-{}-chart{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let upstream = univrs_tests::upstream_bin_dir();
        for name in ["etcd", "kubectl"] {
            std::os::unix::fs::symlink(upstream.join(name), bin.join(name)).unwrap();
        }
        for (name, extra) in [
            ("kube-apiserver", "--allow-privileged=true"),
            (
                "kube-controller-manager",
                "--controllers=clusterrole-aggregation",
            ),
        ] {
            let script = format!(
                "#!/bin/sh\nexec '{}' \"$@\" {extra}\n",
                upstream.join(name).display()
            );
            std::fs::write(bin.join(name), script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let port = free_port();
        let mut cmd = Command::new(univrs_tests::univrs_bin());
        cmd.args(["control-plane", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--bin-dir")
            .arg(&bin)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("supervisor.log")).unwrap());
        let mut supervisor = Guarded::spawn(cmd).expect("starting univrs control-plane");
        let stdout = supervisor.0.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("ready ") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(300)).is_err() {
            panic!(
                "the control plane in {} did not become ready:\n{}",
                dir.display(),
                std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default()
            );
        }
        Self {
            _supervisor: supervisor,
            kubeconfig: dir.join("admin.kubeconfig"),
            server: format!("https://127.0.0.1:{port}"),
            home: dir.join("helm"),
            data_dir: dir,
        }
    }

    fn kubectl_cmd(&self) -> Command {
        univrs_tests::kubectl_with(&self.kubeconfig)
    }

    fn helm(&self) -> Command {
        helm_cmd(&self.home, Some(&self.kubeconfig))
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        run(self.kubectl_cmd().args(args))
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
        out
    }

    fn install(&self, extra: &[&str]) {
        let chart = chart();
        helm_ok(
            self.helm()
                .args(["install", RELEASE, chart.to_str().unwrap()])
                .args(["-n", "univrs-system", "--create-namespace"])
                .args(extra),
        );
    }

    /// Every object of the release's manifest exists on the server.
    fn assert_release_objects_exist(&self) -> usize {
        let manifest =
            helm_ok(
                self.helm()
                    .args(["get", "manifest", RELEASE, "-n", "univrs-system"]),
            );
        let out = run_with_stdin(
            self.kubectl_cmd().args(["get", "-f", "-", "-o", "name"]),
            &manifest,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "not every object of the release exists:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = documents(&manifest).len();
        assert_eq!(stdout.lines().count(), n, "{stdout}");
        n
    }

    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let jp = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &jp]);
        self.kubectl_ok(&args)
    }
}

const PORTAL: &str = "apiVersion: univrs.io/v1alpha1
kind: Workload
metadata:
  name: portal
  namespace: users
spec:
  replicas: 2
  containers:
  - name: web
    image: demo/busybox:latest
";

#[test]
fn install_upgrade_and_uninstall_keep_the_crds_users_objects_and_the_mcp_secrets() {
    let c = Cluster::start();
    c.install(&[]);
    let n = c.assert_release_objects_exist();
    eprintln!("helm install: {n} objects accepted by the API server");
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/workloads.univrs.io",
        "crd/nodes.univrs.io",
        "crd/creditlines.univrs.io",
        "crd/vouches.univrs.io",
        "--timeout=60s",
    ]);
    c.kubectl_ok(&["create", "namespace", "users"]);
    let out = run_with_stdin(c.kubectl_cmd().args(["apply", "-f", "-"]), PORTAL);
    assert!(out.status.success(), "{out:?}");

    let secret = |name: &str, key: &str| {
        c.jsonpath(
            &["secret", name, "-n", "univrs-system"],
            &format!("{{.data.{}}}", key.replace('.', "\\.")),
        )
    };
    let token = secret("univrs-mcp-token", "token");
    let cert = secret("univrs-mcp-tls", "tls.crt");
    let agent_token = secret("univrs-agent-api-token", "token");
    assert!(
        token.len() >= 64,
        "a base64 token of 48 characters: {token}"
    );
    let crd_uid = c.jsonpath(&["crd", "workloads.univrs.io"], "{.metadata.uid}");

    // The served certificate names the Service.
    let decoded = run_with_stdin(Command::new("base64").arg("-d"), &cert);
    let text = run_with_stdin(
        Command::new("openssl").args(["x509", "-noout", "-ext", "subjectAltName"]),
        &String::from_utf8_lossy(&decoded.stdout),
    );
    let sans = String::from_utf8_lossy(&text.stdout);
    assert!(
        sans.contains("univrs-mcp.univrs-system.svc"),
        "the certificate's names: {sans}"
    );

    // Upgrade: new values reach the objects, the CRDs are updated (a label added) but are the
    // same objects, and the MCP's token and certificate do not change under its clients.
    let chart = chart();
    let anchor = univrs_api::identity::NodeIdentity::generate()
        .public()
        .did();
    helm_ok(c.helm().args([
        "upgrade",
        RELEASE,
        chart.to_str().unwrap(),
        "-n",
        "univrs-system",
        "--set",
        "controller.nodeGracePeriod=90s",
        "--set",
        format!("controller.trustAnchors[0]={anchor}").as_str(),
        "--set",
        "commonLabels.univrs\\.io/upgraded=yes",
    ]));
    c.assert_release_objects_exist();
    assert_eq!(secret("univrs-mcp-token", "token"), token);
    assert_eq!(secret("univrs-mcp-tls", "tls.crt"), cert);
    assert_eq!(secret("univrs-agent-api-token", "token"), agent_token);
    assert_eq!(
        c.jsonpath(&["crd", "workloads.univrs.io"], "{.metadata.uid}"),
        crd_uid
    );
    assert_eq!(
        c.jsonpath(
            &["crd", "workloads.univrs.io"],
            "{.metadata.labels.univrs\\.io/upgraded}"
        ),
        "yes",
        "helm upgrade updates the CRDs"
    );
    let args = c.jsonpath(
        &["deploy", "univrs-controller", "-n", "univrs-system"],
        "{.spec.template.spec.containers[0].args}",
    );
    assert!(args.contains("--node-grace-period=90s"), "{args}");
    assert!(args.contains(&format!("--trust-anchor={anchor}")), "{args}");
    assert_eq!(
        c.jsonpath(&["uwl", "portal", "-n", "users"], "{.spec.replicas}"),
        "2"
    );

    // Uninstall: the components go, the CRDs and every user's object stay.
    helm_ok(
        c.helm()
            .args(["uninstall", RELEASE, "-n", "univrs-system", "--wait"]),
    );
    for crd in [
        "workloads.univrs.io",
        "nodes.univrs.io",
        "creditlines.univrs.io",
        "vouches.univrs.io",
    ] {
        let (kept, _, err) = c.kubectl(&["get", "crd", crd]);
        assert!(kept, "helm uninstall deleted {crd}: {err}");
    }
    assert_eq!(
        c.jsonpath(&["uwl", "portal", "-n", "users"], "{.spec.replicas}"),
        "2"
    );
    for gone in [
        ["deploy", "univrs-controller"],
        ["secret", "univrs-mcp-token"],
        ["clusterrole", "univrs-controller"],
    ] {
        let (found, _, _) = c.kubectl(&[gone[0], gone[1], "-n", "univrs-system"]);
        assert!(!found, "{gone:?} outlived helm uninstall");
    }

    // A new install adopts the kept CRDs.
    c.install(&[]);
    c.assert_release_objects_exist();
    assert_eq!(
        c.jsonpath(&["crd", "workloads.univrs.io"], "{.metadata.uid}"),
        crd_uid
    );
}

/// `kubectl auth can-i` as a ServiceAccount of the release.
fn can(c: &Cluster, who: &str, args: &[&str]) -> bool {
    let as_ = format!("--as=system:serviceaccount:univrs-system:{who}");
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.push(&as_);
    let (ok, out, err) = c.kubectl(&all);
    match out.trim() {
        "yes" => assert!(ok),
        "no" => assert!(!ok),
        other => panic!("kubectl {all:?}: {other} {err}"),
    }
    ok
}

fn assert_can(c: &Cluster, who: &str, allowed: &[&[&str]], denied: &[&[&str]]) {
    for args in allowed {
        assert!(can(c, who, args), "{who} cannot {args:?}");
    }
    for args in denied {
        assert!(!can(c, who, args), "{who} can {args:?}");
    }
}

/// A kubeconfig for `sa`'s token (kubectl create token), with the cluster's CA.
fn service_account_kubeconfig(c: &Cluster, sa: &str) -> PathBuf {
    let token = c.kubectl_ok(&[
        "create",
        "token",
        sa,
        "-n",
        "univrs-system",
        "--duration=1h",
    ]);
    let ca = c.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: univrs
  cluster:
    server: {}
    certificate-authority-data: {ca}
users:
- name: {sa}
  user:
    token: {}
contexts:
- name: {sa}
  context: {{cluster: univrs, user: {sa}}}
current-context: {sa}
",
        c.server,
        token.trim()
    );
    let path = c.data_dir.join(format!("{sa}.kubeconfig"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(kubeconfig.as_bytes()).unwrap();
    }
    path
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    univrs_tests::client_from(kubeconfig).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_account_can_do_its_job_and_no_more() {
    let c = Cluster::start();
    c.install(&[]);
    c.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/workloads.univrs.io",
        "crd/nodes.univrs.io",
        "crd/creditlines.univrs.io",
        "crd/vouches.univrs.io",
        "--timeout=60s",
    ]);
    let a = "-A";
    let sys = ["-n", "univrs-system"];
    let never: &[&[&str]] = &[
        &["delete", "customresourcedefinitions"],
        &["create", "customresourcedefinitions"],
        // The controller gets the Secrets Workloads name, by name; nobody lists or watches them.
        &["list", "secrets", a],
        &["watch", "secrets", a],
        &["list", "secrets", "-n", "univrs-system"],
        &["create", "pods", "-n", "default"],
        &["bind", "clusterroles/cluster-admin"],
        &["bind", "clusterroles/admin"],
        &["escalate", "clusterroles"],
        &["impersonate", "serviceaccounts", a],
        &["delete", "leases", "-n", "univrs-system"],
    ];

    assert_can(
        &c,
        "univrs-controller",
        &[
            &["watch", "workloads.univrs.io", a],
            &["list", "nodes.univrs.io"],
            &["patch", "workloads.univrs.io", "--subresource=status", a],
            &["patch", "nodes.univrs.io", "--subresource=status"],
            &["patch", "creditlines.univrs.io", "--subresource=status"],
            &["patch", "vouches.univrs.io", "--subresource=status"],
            &["patch", "nodes.univrs.io"],
            &["create", "creditlines.univrs.io"],
            &["get", "namespaces"],
            &["get", "secrets", "-n", "team-a"],
            &["create", "events.events.k8s.io", "-n", "default"],
            &["watch", "leases", sys[0], sys[1]],
            &["create", "leases", sys[0], sys[1]],
            &["update", "leases/univrs-controller", sys[0], sys[1]],
            // The join: approving node certificates and binding each node to its role.
            &["watch", "certificatesigningrequests"],
            &[
                "update",
                "certificatesigningrequests",
                "--subresource=approval",
            ],
            &["create", "clusterrolebindings"],
            &["bind", "clusterroles/univrs-node"],
            &["create", "rolebindings", sys[0], sys[1]],
            &["bind", "roles/univrs-node", sys[0], sys[1]],
        ],
        &[
            &["create", "rolebindings", "-n", "default"],
            &["delete", "clusterrolebindings"],
            &["update", "leases/univrs-node-library", sys[0], sys[1]],
            &["create", "leases", "-n", "default"],
            &["create", "workloads.univrs.io", a],
            &["delete", "workloads.univrs.io", a],
            &["delete", "nodes.univrs.io"],
            &["delete", "creditlines.univrs.io"],
            &["patch", "workloads.univrs.io", a],
            &["create", "vouches.univrs.io"],
            &["list", "namespaces"],
        ],
    );
    assert_can(&c, "univrs-controller", &[], never);

    assert_can(
        &c,
        "univrs-agent",
        &[
            &["create", "nodes.univrs.io"],
            &["patch", "nodes.univrs.io"],
            &["patch", "nodes.univrs.io", "--subresource=status"],
            &["watch", "workloads.univrs.io", a],
            &["patch", "workloads.univrs.io", "--subresource=status", a],
            &["list", "creditlines.univrs.io"],
            &["list", "vouches.univrs.io"],
            &["watch", "vouches.univrs.io"],
            &["watch", "nodes.univrs.io"],
            &["create", "leases", sys[0], sys[1]],
            &["update", "leases", sys[0], sys[1]],
            &["patch", "leases", sys[0], sys[1]],
            &["create", "events.events.k8s.io", "-n", "default"],
            // Its own certificate's renewal.
            &["create", "certificatesigningrequests"],
            // Its own DaemonSet, to tell an uninstall from a rolling update when it stops.
            &["get", "daemonsets.apps/univrs-agent", sys[0], sys[1]],
        ],
        &[
            &["create", "clusterrolebindings"],
            &[
                "update",
                "certificatesigningrequests",
                "--subresource=approval",
            ],
            &["delete", "nodes.univrs.io"],
            // A node never reads a Secret: the controller seals what it needs to its key.
            &["get", "secrets", a],
            &["create", "workloads.univrs.io", a],
            &["patch", "workloads.univrs.io", a],
            &["patch", "creditlines.univrs.io", "--subresource=status"],
            &["patch", "vouches.univrs.io", "--subresource=status"],
            &["create", "creditlines.univrs.io"],
            &["create", "leases", "-n", "default"],
            &["list", "leases", sys[0], sys[1]],
            // No other DaemonSet, and no change to its own.
            &["get", "daemonsets.apps/univrs-other", sys[0], sys[1]],
            &["list", "daemonsets.apps", sys[0], sys[1]],
            &["delete", "daemonsets.apps/univrs-agent", sys[0], sys[1]],
            &["patch", "daemonsets.apps/univrs-agent", sys[0], sys[1]],
        ],
    );
    assert_can(&c, "univrs-agent", &[], never);

    assert_can(
        &c,
        "univrs-mcp",
        &[
            &["create", "workloads.univrs.io", "-n", "community-center"],
            &["delete", "workloads.univrs.io", "-n", "community-center"],
            &["update", "workloads.univrs.io", "--subresource=scale", a],
            &["list", "nodes.univrs.io"],
            &["list", "creditlines.univrs.io"],
            &["create", "vouches.univrs.io"],
            &["list", "events", a],
            // node_cordon, node_uncordon and node_drain.
            &["patch", "nodes.univrs.io"],
        ],
        &[
            &["patch", "workloads.univrs.io", "--subresource=status", a],
            &["patch", "nodes.univrs.io", "--subresource=status"],
            &["delete", "nodes.univrs.io"],
            &["create", "creditlines.univrs.io"],
            &["delete", "vouches.univrs.io"],
            &["get", "secrets/univrs-mcp-token", sys[0], sys[1]],
            &["get", "secrets", a],
            &["create", "leases", sys[0], sys[1]],
        ],
    );
    assert_can(&c, "univrs-mcp", &[], never);

    // People: the built-in edit role in one namespace (univrs-edit aggregates into it) and
    // univrs-view across the cluster.
    c.kubectl_ok(&["create", "namespace", "team"]);
    c.kubectl_ok(&[
        "create",
        "rolebinding",
        "alice-edit",
        "-n",
        "team",
        "--clusterrole=edit",
        "--user=alice",
    ]);
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "alice-view",
        "--clusterrole=univrs-view",
        "--user=alice",
    ]);
    let alice = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        all.push("--as=alice");
        c.kubectl(&all).0
    };
    eventually(
        "univrs-edit aggregated into edit",
        Duration::from_secs(30),
        async || {
            let ok = alice(&["create", "workloads.univrs.io", "-n", "team"]);
            (
                ok.then_some(()),
                "alice cannot create Workloads in team yet".into(),
            )
        },
    )
    .await;
    assert!(alice(&[
        "update",
        "workloads.univrs.io",
        "--subresource=scale",
        "-n",
        "team"
    ]));
    assert!(alice(&["delete", "workloads.univrs.io", "-n", "team"]));
    assert!(!alice(&["create", "workloads.univrs.io", "-n", "default"]));
    assert!(alice(&["list", "workloads.univrs.io", "-A"]));
    assert!(alice(&["list", "nodes.univrs.io"]));
    assert!(!alice(&["patch", "nodes.univrs.io"]));
    assert!(!alice(&["create", "creditlines.univrs.io"]));
    assert!(!alice(&["get", "secrets", "-n", "default"]));
    for (role, labels) in [
        ("univrs-view", vec!["view", "edit", "admin"]),
        ("univrs-edit", vec!["edit", "admin"]),
    ] {
        for to in labels {
            let label = c.jsonpath(
                &["clusterrole", role],
                &format!("{{.metadata.labels.rbac\\.authorization\\.k8s\\.io/aggregate-to-{to}}}"),
            );
            assert_eq!(label, "true", "{role} aggregates into {to}");
        }
    }

    controller_and_agent_work_on_their_tokens_alone(&c).await;
}

/// A controller process on a given kubeconfig; its log is printed if the test fails.
struct Controller {
    _child: Guarded,
    metrics: String,
    log: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- controller log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn start_controller(kubeconfig: &Path, log: PathBuf) -> Controller {
    let port = free_port();
    let mut cmd = Command::new(univrs_tests::univrs_bin());
    cmd.args([
        "controller",
        "--node-lease-duration",
        "3s",
        "--node-grace-period",
        "4s",
    ])
    .arg(format!("--metrics-addr=127.0.0.1:{port}"))
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .env("RUST_LOG", "info,univrs_controller=debug,kube=warn")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    Controller {
        _child: Guarded::spawn(cmd).expect("starting the controller"),
        metrics: format!("http://127.0.0.1:{port}/metrics"),
        log,
    }
}

/// The real controller on its ServiceAccount's token leads, approves the joins, places a
/// Workload, verifies a Vouch, readies a CreditLine, settles a deleted Node through its
/// finalizer and publishes Events; the agents' part (Node objects, their observations, Lease
/// renewals) is played by nodes joined with `univrs join`, each on its own certificate, and a
/// real agent on its own certificate registers, turns Ready and runs a container. Nothing is
/// refused along the way.
async fn controller_and_agent_work_on_their_tokens_alone(c: &Cluster) {
    let admin = client_from(&c.kubeconfig).await;
    let controller_kubeconfig = service_account_kubeconfig(c, "univrs-controller");
    for ns in ["rbac", "rbac-pay"] {
        ensure_namespace(&admin, ns).await;
    }
    let ctl = start_controller(&controller_kubeconfig, c.data_dir.join("controller-sa.log"));

    // Each machine joins with its own key and writes its own Node, observations and Lease.
    let names = ["library", "school", "shop"];
    let mut keys: BTreeMap<&str, NodeIdentity> = BTreeMap::new();
    for name in names {
        let dir = c.data_dir.join(format!("joined-{name}"));
        let kubeconfig = univrs_tests::join::join(&c.kubeconfig, &dir, name);
        let me = client_from(&kubeconfig).await;
        let key = univrs_node_agent::keyfile::load(&dir.join("identity.key")).unwrap();
        let node = univrs_tests::cluster::node_object(name, &[("org", name)], &key);
        let manager = format!("univrs-agent-{name}");
        let nodes: Api<Node> = Api::all(me.clone());
        nodes
            .patch(name, &PatchParams::apply(&manager), &Patch::Apply(&node))
            .await
            .unwrap_or_else(|e| panic!("{name} creating its own Node: {e}"));
        let status = serde_json::json!({
            "apiVersion": "univrs.io/v1alpha1", "kind": "Node", "metadata": {"name": name},
            "status": {"observations": {"connectedPeers": 2, "uptime": 1.0}}
        });
        nodes
            .patch_status(name, &PatchParams::apply(&manager), &Patch::Apply(&status))
            .await
            .unwrap_or_else(|e| panic!("{name} writing its own observations: {e}"));
        renew_leases(
            me,
            Arc::new([(name.to_string(), AtomicBool::new(true))].into()),
        );
        keys.insert(name, key);
    }
    let leases: Api<Lease> = Api::namespaced(admin.clone(), LEASE_NS);
    eventually(
        "3 Leases renewed, each by its own node",
        Duration::from_secs(30),
        async || {
            let n = leases.list(&Default::default()).await.unwrap().items.len();
            (
                (n >= 4).then_some(()),
                format!("{n} Leases (the controller's too)"),
            )
        },
    )
    .await;

    let workloads: Api<Workload> = Api::namespaced(admin.clone(), "rbac");
    let w: Workload =
        serde_yaml::from_str(&PORTAL.replace("namespace: users", "namespace: rbac")).unwrap();
    workloads.create(&PostParams::default(), &w).await.unwrap();
    let vouch = Vouch::new(
        "library-vouches-for-school",
        VouchSpec::signed(
            &keys["library"],
            &keys["school"].public(),
            0.8,
            "runs our backups",
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now()
                    + k8s_openapi::jiff::SignedDuration::from_hours(24),
            ),
        )
        .unwrap(),
    );
    Api::<Vouch>::all(admin.clone())
        .create(&PostParams::default(), &vouch)
        .await
        .unwrap();
    let line: CreditLine = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "CreditLine",
        "metadata": {"name": "shop-hosts-rbac-pay"},
        "spec": {"creditor": "node/shop", "debtor": "namespace/rbac-pay", "limit": 10000}
    }))
    .unwrap();
    Api::<CreditLine>::all(admin.clone())
        .create(&PostParams::default(), &line)
        .await
        .unwrap();

    eventually(
        "the controller leads",
        Duration::from_secs(30),
        async || {
            let m = metric(&ctl.metrics, "univrs_leader");
            (
                (m == Some(1.0)).then_some(()),
                format!("univrs_leader {m:?}"),
            )
        },
    )
    .await;
    eventually("2 instances placed", Duration::from_secs(60), async || {
        let w = workloads.get("portal").await.unwrap();
        let placed: Vec<String> = w
            .status
            .iter()
            .flat_map(|s| &s.instances)
            .filter_map(|i| i.node.clone())
            .collect();
        ((placed.len() == 2).then_some(()), format!("{:?}", w.status))
    })
    .await;
    let vouches: Api<Vouch> = Api::all(admin.clone());
    eventually("the vouch verified", Duration::from_secs(30), async || {
        let v = vouches.get("library-vouches-for-school").await.unwrap();
        let ok = v.status.as_ref().is_some_and(|s| s.verified);
        (ok.then_some(()), format!("{:?}", v.status))
    })
    .await;
    let lines: Api<CreditLine> = Api::all(admin.clone());
    eventually(
        "the credit line Ready",
        Duration::from_secs(30),
        async || {
            let l = lines.get("shop-hosts-rbac-pay").await.unwrap();
            let ok = l
                .status
                .as_ref()
                .is_some_and(|s| univrs_api::conditions::is_true(&s.conditions, "Ready"));
            (ok.then_some(()), format!("{:?}", l.status))
        },
    )
    .await;
    // Events of namespaced objects go to their namespace, of cluster-scoped ones to default.
    eventually(
        "Scheduled and VouchVerified Events",
        Duration::from_secs(30),
        async || {
            let (_, out, _) = c.kubectl(&[
                "get",
                "events.events.k8s.io",
                "-A",
                "-o",
                "jsonpath={.items[*].reason}",
            ]);
            let ok = out.contains("Scheduled") && out.contains("VouchVerified");
            (ok.then_some(()), out)
        },
    )
    .await;
    // A departing node is settled and released by the controller's finalizer.
    let admin_nodes: Api<Node> = Api::all(admin.clone());
    eventually(
        "shop carries the finalizer",
        Duration::from_secs(30),
        async || {
            let n = admin_nodes.get("shop").await.unwrap();
            let ok = n
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == CREDIT_SETTLEMENT_FINALIZER);
            (ok.then_some(()), format!("{:?}", n.metadata.finalizers))
        },
    )
    .await;
    admin_nodes
        .delete("shop", &Default::default())
        .await
        .unwrap();
    eventually(
        "shop settled and gone",
        Duration::from_secs(60),
        async || {
            let gone = admin_nodes.get_opt("shop").await.unwrap().is_none();
            (gone.then_some(()), "shop still there".to_string())
        },
    )
    .await;

    // A real agent on its own certificate: registers, renews its Lease, runs what is placed
    // on it and reports it.
    let kiosk_kubeconfig = univrs_tests::join::join(
        &c.kubeconfig,
        &univrs_tests::agent::data_dir("kiosk"),
        "kiosk",
    );
    let kiosk = univrs_tests::agent::AgentProc::start_with(
        &kiosk_kubeconfig,
        &c.data_dir,
        "kiosk",
        &["--cpu", "1", "--memory", "1Gi", "--label", "org=kiosk"],
    );
    let web: Workload = serde_json::from_value(serde_json::json!({
        "apiVersion": "univrs.io/v1alpha1", "kind": "Workload",
        "metadata": {"name": "kiosk-web", "namespace": "rbac"},
        "spec": {"replicas": 1, "nodeSelector": {"org": "kiosk"}, "containers": [{"name": "app",
            "image": "univrs.local/demo:latest",
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap();
    workloads
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    eventually(
        "kiosk-web Running and Ready on the kiosk",
        Duration::from_secs(120),
        async || {
            let w = workloads.get("kiosk-web").await.unwrap();
            let i = w.status.as_ref().and_then(|s| s.instances.first().cloned());
            let ok = i.as_ref().is_some_and(|i| {
                i.node.as_deref() == Some("kiosk")
                    && i.ready == Some(true)
                    && i.phase == Some(univrs_api::resources::workload::InstancePhase::Running)
            });
            (ok.then_some(()), format!("{i:?}"))
        },
    )
    .await;
    workloads
        .delete("kiosk-web", &Default::default())
        .await
        .unwrap();
    univrs_tests::assert_never_refused("the agent", &kiosk.log_text());
    drop(kiosk);

    let log = std::fs::read_to_string(&ctl.log).unwrap();
    assert!(log.contains("leading: starting reconcilers"), "{log}");
    univrs_tests::assert_never_refused("the controller", &log);
    eprintln!(
        "controller on its ServiceAccount token: {} log lines, no 403",
        log.lines().count()
    );
}

/// An object as the Kustomize base holds it: Helm's own labels dropped; a CRD without the
/// chart's labels and keep annotation (the base's CRDs are the plain files in crds/); numbers
/// compared by value (kubectl kustomize writes `0.0` as `0`).
fn comparable(doc: Value) -> serde_json::Value {
    let mut doc = serde_json::to_value(doc).expect("YAML as JSON");
    if doc["kind"] == "CustomResourceDefinition" {
        let meta = doc["metadata"].as_object_mut().unwrap();
        meta.remove("labels");
        meta.remove("annotations");
    } else if let Some(labels) = doc["metadata"]["labels"].as_object_mut() {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    integral_numbers(doc)
}

fn integral_numbers(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => J::from(f as i64),
            _ => J::Number(n),
        },
        J::Array(a) => J::Array(a.into_iter().map(integral_numbers).collect()),
        J::Object(o) => J::Object(
            o.into_iter()
                .map(|(k, v)| (k, integral_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn the_kustomize_base_is_the_chart_and_applies() {
    let base = repo_root().join("deploy/kustomize/base");
    let (ok, out, err) = run(Command::new(repo_root().join("deploy/kustomize/generate"))
        .arg("--check")
        .env("HELM", repo_root().join(".tools/bin/helm")));
    assert!(ok, "{out}{err}");
    let kustomization = std::fs::read_to_string(base.join("kustomization.yaml")).unwrap();
    for entry in std::fs::read_dir(base.join("crds")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            kustomization.contains(&format!("crds/{file}")),
            "kustomization.yaml does not list crds/{file}"
        );
    }

    // The same objects as `helm install` with default values, less the generated Secrets and
    // plus the Namespace (Helm's release namespace is made by --create-namespace).
    let (ok, built, err) = run(
        Command::new(univrs_tests::upstream_bin_dir().join("kubectl"))
            .args(["kustomize"])
            .arg(&base),
    );
    assert!(ok, "{err}");
    let mut from_kustomize: BTreeMap<_, _> = documents(&built)
        .into_iter()
        .map(|d| (id(&d), comparable(d)))
        .collect();
    let namespace = from_kustomize
        .remove(&("Namespace".into(), "".into(), "univrs-system".into()))
        .expect("the base holds the univrs-system Namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let from_helm: BTreeMap<_, _> = render(&["--namespace", "univrs-system"])
        .into_iter()
        .filter(|d| d["kind"] != "Secret")
        .map(|d| (id(&d), comparable(d)))
        .collect();
    assert_eq!(
        from_kustomize.keys().collect::<Vec<_>>(),
        from_helm.keys().collect::<Vec<_>>()
    );
    for (key, doc) in &from_helm {
        // kubectl kustomize writes keys in its own order; compare the objects, not the text.
        assert_eq!(&from_kustomize[key], doc, "{key:?} differs");
    }

    // Applied to a real API server: first as a server-side dry run, then for real.
    let c = Cluster::start();
    c.kubectl_ok(&["apply", "-f", base.join("namespace.yaml").to_str().unwrap()]);
    let base = base.to_str().unwrap();
    let out = c.kubectl_ok(&["apply", "--dry-run=server", "-k", base]);
    assert_eq!(out.lines().count(), from_helm.len() + 1, "{out}");
    c.kubectl_ok(&["apply", "-k", base]);
    c.kubectl_ok(&["get", "-k", base]);
    let (same, out, err) = c.kubectl(&["diff", "-k", base]);
    assert!(same, "applying twice changes something:\n{out}{err}");

    // The Secrets the base names, made as deploy/kustomize/README.md says.
    for name in ["univrs-mcp-token", "univrs-agent-api-token"] {
        let token = run(Command::new("openssl").args(["rand", "-hex", "32"])).1;
        c.kubectl_ok(&[
            "-n",
            "univrs-system",
            "create",
            "secret",
            "generic",
            name,
            &format!("--from-literal=token={}", token.trim()),
        ]);
    }
    let (k, cert) = (c.data_dir.join("tls.key"), c.data_dir.join("tls.crt"));
    let (ok, _, err) = run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "825",
        "-subj",
        "/CN=univrs-mcp",
        "-addext",
        "subjectAltName=DNS:univrs-mcp,DNS:univrs-mcp.univrs-system.svc",
        "-keyout",
        k.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]));
    assert!(ok, "{err}");
    c.kubectl_ok(&[
        "-n",
        "univrs-system",
        "create",
        "secret",
        "tls",
        "univrs-mcp-tls",
        &format!("--cert={}", cert.display()),
        &format!("--key={}", k.display()),
    ]);
    // The three Secrets the base refers to now exist.
    c.kubectl_ok(&[
        "get",
        "secret",
        "-n",
        "univrs-system",
        "univrs-mcp-token",
        "univrs-mcp-tls",
        "univrs-agent-api-token",
    ]);
}

/// The status properties of a CRD's schema (and of its `status.instances` items, if any).
fn status_fields(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    path: &[&str],
) -> BTreeSet<String> {
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let mut at = &schema["properties"]["status"];
    for p in path {
        at = &at["properties"][p];
        if at["type"] == "array" {
            at = &at["items"];
        }
    }
    at["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The fields the controller-records policy locks, read from its messages (`Node status.X is`).
fn locked(policy: &Value, kind: &str) -> BTreeSet<String> {
    policy["spec"]["validations"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["messageExpression"].as_str())
        .filter_map(|m| m.strip_prefix(&format!("'{kind} status.")))
        .filter_map(|m| m.split(' ').next())
        .map(|f| f.trim_end_matches(',').to_string())
        .collect()
}

#[test]
fn every_status_field_has_one_writer_in_the_policies() {
    let docs = render(&["--namespace", "univrs-system"]);
    let policy = find(
        &docs,
        "ValidatingAdmissionPolicy",
        "univrs-controller-records",
    );
    let crds = univrs_api::crds::all();
    let crd = |kind: &str| crds.iter().find(|c| c.spec.names.kind == kind).unwrap();

    // A Node's status: everything but the agent's observations and addresses is the
    // controller's.
    let mut node = status_fields(crd("Node"), &[]);
    assert!(node.remove("observations"));
    assert!(node.remove("addresses"));
    assert!(node.remove("bids"));
    assert_eq!(
        locked(policy, "Node"),
        node,
        "Node status fields vs the policy"
    );

    // A Workload's status: everything but the instances is the controller's; in each instance
    // the controller places and bills, the agent reports how it runs.
    let mut workload = status_fields(crd("Workload"), &[]);
    assert!(workload.remove("instances"));
    let mut locked_workload = locked(policy, "Workload");
    assert!(locked_workload.remove("instances"), "{locked_workload:?}");
    assert_eq!(
        locked_workload, workload,
        "Workload status fields vs the policy"
    );
    let instance = status_fields(crd("Workload"), &["instances"]);
    let by_controller: BTreeSet<String> =
        ["name", "node", "placedAt", "billed", "awardedPricePerHour"]
            .map(String::from)
            .into();
    let by_agent: BTreeSet<String> = [
        "phase",
        "ready",
        "restarts",
        "startedAt",
        "ip",
        "message",
        "usage",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        instance,
        &by_controller | &by_agent,
        "an instance field must be placed with the controller or the agent"
    );
    let text = serde_yaml::to_string(policy).unwrap();
    for f in ["node", "placedAt", "billed", "awardedPricePerHour"] {
        assert!(
            text.contains(&format!("i.?{f} == j.?{f}")),
            "{f} is not locked"
        );
    }
}

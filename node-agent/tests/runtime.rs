//! The container runtime end to end: real containers (youki's libcontainer inside `univrs
//! shim`) from a busybox root filesystem. Needs root, and Debian's `busybox-static`.
//!
//! Every test owns a state directory `/tmp/univrs-rt-<pid>-<n>` and an agent name (its cgroup
//! parent `/univrs/<agent>`), and a guard that deletes its containers and removes both, also
//! when the test fails. Leftovers of test binaries that were killed are removed by the next
//! run.
//!
//! The create+start benchmark: `cargo test -p univrs-node-agent --test runtime -- --ignored
//! --nocapture bench_create_start`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};
use univrs_node_agent::runtime::cgroup::{self, CgroupVersion};
// The `univrs` binary holds the shim; the harness builds it once per test binary.
use univrs_node_agent::runtime::{
    ContainerConfig, ContainerState, Created, RuntimeClient, RuntimeError, ShimHandle,
};
use univrs_tests::{busybox_rootfs, univrs_bin};

/// Container starts hold it shared; removing the shared `/univrs` cgroup parent holds it
/// exclusively, so a parent is never removed under a container being created.
static CGROUP_PARENTS: RwLock<()> = RwLock::new(());

const STATE_PREFIX: &str = "univrs-rt-";

/// The repository root.
/// Is `pid` a live process?
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .is_some_and(|c| c != 'Z' && c != 'X')
}

/// Removes what killed test binaries left: their containers, cgroups and state directories.
fn sweep_stale() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(STATE_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if pid == std::process::id() as i32 || alive(pid) {
                continue;
            }
            let agent = format!("t{rest}");
            if let Ok(client) = RuntimeClient::new(univrs_bin(), e.path().join("state"), &agent) {
                for id in client.list().unwrap_or_default() {
                    let _ = client.delete(&id);
                }
                // Containers whose files are gone still have their cgroups.
                for dir in cgroup::dirs(&format!("/univrs/{agent}")) {
                    for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                        if sub.path().is_dir() {
                            let name = sub.file_name().to_string_lossy().into_owned();
                            let _ = cgroup::kill_and_remove(&format!("/univrs/{agent}/{name}"));
                        }
                    }
                }
                let _g = CGROUP_PARENTS.write();
                client.remove_cgroup_parent(true);
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    });
}

/// One test's runtime: a state directory, a root filesystem and an agent name; dropping it
/// deletes every container and removes everything it made.
struct TestRuntime {
    dir: PathBuf,
    rootfs: PathBuf,
    client: RuntimeClient,
}

impl TestRuntime {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        assert!(
            std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
            "the runtime tests run real containers and need root"
        );
        sweep_stale();
        let suffix = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let dir = std::env::temp_dir().join(format!("{STATE_PREFIX}{suffix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = busybox_rootfs(&dir);
        let client =
            RuntimeClient::new(univrs_bin(), dir.join("state"), &format!("t{suffix}")).unwrap();
        Self {
            dir,
            rootfs,
            client,
        }
    }

    fn config(&self, id: &str, args: &[&str]) -> ContainerConfig {
        ContainerConfig::new(
            id,
            &self.rootfs,
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn start(&self, config: &ContainerConfig) -> Result<ShimHandle, RuntimeError> {
        let _g = CGROUP_PARENTS.read();
        self.client.start(config, Duration::from_secs(10))
    }

    /// Creates container `id`, which its shim holds before its process runs; that process
    /// would touch `/ran-<id>` (returned, on the host), then run `then`. Returns once the shim
    /// has had time to create it and wait at the gate.
    fn hold(&self, id: &str, then: &str) -> (PathBuf, Created) {
        let script = format!("touch /ran-{id}{then}");
        let held = {
            let _g = CGROUP_PARENTS.read();
            self.client
                .create(&self.config(id, &sh(&script)), Duration::from_secs(10))
                .unwrap()
        };
        std::thread::sleep(Duration::from_millis(500));
        (self.rootfs.join(format!("ran-{id}")), held)
    }

    fn exit_of(&self, id: &str) -> univrs_node_agent::runtime::ExitRecord {
        self.client
            .wait_exit(id, Duration::from_secs(20))
            .expect("the container exits")
    }

    fn log(&self, id: &str) -> Vec<String> {
        self.client.logs_tail(id, 100).unwrap()
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        for id in self.client.list().unwrap_or_default() {
            if let Err(e) = self.client.delete(&id) {
                eprintln!("cleanup: deleting {id}: {e}");
            }
        }
        {
            let _g = CGROUP_PARENTS.write();
            self.client.remove_cgroup_parent(true);
        }
        // Namespaces a failed test left pinned below the directory.
        let dir = self.dir.display().to_string();
        for m in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
        {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

#[test]
fn echo_reaches_the_log_and_exit_zero_is_recorded() {
    let rt = TestRuntime::new();
    let handle = rt
        .start(&rt.config("echo", &sh("echo hello from busybox")))
        .unwrap();
    assert!(handle.pid() > 0);
    let exit = rt.exit_of("echo");
    assert_eq!(exit.code, 0, "{exit:?}");
    assert_eq!(exit.error, None);
    assert_eq!(exit.cleanup_error, None);
    assert!(!exit.oom_killed);
    assert_eq!(rt.log("echo"), vec!["hello from busybox"]);
    // The shim exits successfully once it has cleaned up.
    assert!(handle.wait().unwrap().unwrap().success());
}

#[test]
fn a_chatty_container_keeps_its_log_under_the_cap() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config(
        "chatty",
        &sh("i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done"),
    );
    cfg.log_max_bytes = Some(8192);
    rt.start(&cfg).unwrap();
    assert_eq!(rt.exit_of("chatty").code, 0);
    let log = rt.client.layout().log_file("chatty");
    // No rotated file when the shim read the whole output in one chunk (a loaded machine):
    // that chunk's end is kept, within half the cap.
    let sizes: Vec<u64> = [
        std::fs::metadata(&log).unwrap().len(),
        std::fs::metadata(univrs_node_agent::runtime::log::rotated(&log)).map_or(0, |m| m.len()),
    ]
    .to_vec();
    assert!(sizes.iter().sum::<u64>() <= 8192, "{sizes:?}");
    // The newest lines are kept, across the rotation.
    let tail = rt.client.logs_tail("chatty", 300).unwrap();
    assert_eq!(tail.len(), 300);
    assert_eq!(tail.last().map(String::as_str), Some("line 4999"));
}

#[test]
fn exit_code_three_is_recorded() {
    let rt = TestRuntime::new();
    rt.start(&rt.config("three", &sh("echo bye >&2; exit 3")))
        .unwrap();
    let exit = rt.exit_of("three");
    assert_eq!(exit.code, 3);
    assert_eq!(exit.signal, None);
    assert_eq!(rt.log("three"), vec!["bye"], "stderr goes to the log too");
    assert!(matches!(
        rt.client.state("three").unwrap(),
        ContainerState::Exited(_)
    ));
}

#[test]
fn memory_and_cpu_limits_are_applied_to_the_cgroup() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config("limits", &["sleep", "1000"]);
    cfg.memory_bytes = Some(64 << 20);
    cfg.cpu_millis = Some(500);
    cfg.pids_limit = Some(64);
    rt.start(&cfg).unwrap();
    let path = rt.client.cgroup_path("limits");
    assert_eq!(
        rt.client.cgroup_of("limits").as_deref(),
        Some(path.as_str())
    );

    // The kernel's own files, where this host keeps them.
    let rel = path.trim_start_matches('/');
    match cgroup::detect() {
        CgroupVersion::V1 => {
            let mem = cgroup::controller_dir("memory", &path).unwrap();
            assert!(mem.ends_with(rel));
            let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap();
            assert_eq!(limit.trim(), (64u64 << 20).to_string());
            let cpu = cgroup::controller_dir("cpu", &path).unwrap();
            let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
            assert_eq!(quota.trim(), "50000");
            let pids = cgroup::controller_dir("pids", &path).unwrap();
            let max = std::fs::read_to_string(pids.join("pids.max")).unwrap();
            assert_eq!(max.trim(), "64");
        }
        CgroupVersion::V2 => {
            let dir = Path::new("/sys/fs/cgroup").join(rel);
            let limit = std::fs::read_to_string(dir.join("memory.max")).unwrap();
            assert_eq!(limit.trim(), (64u64 << 20).to_string());
            let cpu = std::fs::read_to_string(dir.join("cpu.max")).unwrap();
            assert_eq!(cpu.trim(), "50000 100000");
        }
    }
    assert_eq!(cgroup::memory_limit(&path).unwrap(), Some(64 << 20));
    assert_eq!(cgroup::cpu_limit(&path).unwrap(), Some((50_000, 100_000)));

    let usage = rt.client.usage("limits").unwrap();
    assert!(usage.memory_bytes > 0, "{usage:?}");
    assert!(usage.cpu_usec > 0, "{usage:?}");
    rt.client.delete("limits").unwrap();
}

#[test]
fn an_oom_kill_is_recorded() {
    let rt = TestRuntime::new();
    // A shell variable far larger than the limit.
    let mut cfg = rt.config(
        "oom",
        &sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}"),
    );
    cfg.memory_bytes = Some(16 << 20);
    rt.start(&cfg).unwrap();
    let exit = rt.exit_of("oom");
    assert!(exit.oom_killed, "{exit:?} {:?}", rt.log("oom"));
    assert_ne!(exit.code, 0, "{exit:?}");
}

/// A container whose own limit is larger than all the node lends is held by the agent's
/// parent cgroup: the owner's cap holds whatever limits the Workloads declare.
#[test]
fn the_agents_parent_cgroup_caps_a_container_whose_limit_is_larger() {
    let rt = TestRuntime::new();
    let path = rt.client.cgroup_path("burst");
    let (parent, _) = path.rsplit_once('/').unwrap();
    let agent = parent.strip_prefix("/univrs/").unwrap();
    {
        let _g = CGROUP_PARENTS.read();
        cgroup::limit_agent_parent(agent, 1000, 32 << 20).unwrap();
    }
    assert_eq!(cgroup::memory_limit(parent).unwrap(), Some(32 << 20));
    let mut cfg = rt.config(
        "burst",
        &sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived ${#x}"),
    );
    cfg.memory_bytes = Some(1 << 30);
    rt.start(&cfg).unwrap();
    let exit = rt.exit_of("burst");
    assert_ne!(exit.code, 0, "{exit:?}");
    assert!(
        !rt.log("burst").iter().any(|l| l.contains("survived")),
        "{:?}",
        rt.log("burst")
    );
    assert!(exit.oom_killed, "{exit:?} {:?}", rt.log("burst"));
}

#[test]
fn burning_cpu_shows_in_usage() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config("burn", &sh("while :; do :; done"));
    cfg.cpu_millis = Some(200);
    rt.start(&cfg).unwrap();
    // Burns until the cgroup has used BURN of CPU (0.5 s at the quota's 0.2 cores; longer on a
    // busy machine), measured from the first sample that shows any use.
    const BURN: u64 = 100_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    let sample = || (Instant::now(), rt.client.usage("burn").unwrap());
    let mut first = sample();
    while first.1.cpu_usec == 0 {
        assert!(Instant::now() < deadline, "no CPU used: {:?}", first.1);
        std::thread::sleep(Duration::from_millis(20));
        first = sample();
    }
    let mut last = sample();
    while last.1.cpu_usec < first.1.cpu_usec + BURN {
        assert!(
            Instant::now() < deadline,
            "the busy loop used {} µs of CPU in {:?}, not {BURN} µs",
            last.1.cpu_usec - first.1.cpu_usec,
            last.0 - first.0
        );
        std::thread::sleep(Duration::from_millis(20));
        last = sample();
    }
    // The quota holds: 0.2 cores, plus at most one 100 ms period's share at the edges; an
    // unthrottled busy loop would use close to a whole core.
    let used = (last.1.cpu_usec - first.1.cpu_usec) as f64;
    let wall = (last.0 - first.0).as_micros() as f64;
    assert!(
        used <= 0.2 * wall + 40_000.0,
        "the quota holds: {used} µs of CPU in {wall} µs ({:.2} cores)",
        used / wall
    );
    rt.client.delete("burn").unwrap();
}

#[test]
fn sigterm_stops_sleep_within_the_grace_period() {
    let rt = TestRuntime::new();
    rt.start(&rt.config("sleeper", &["sleep", "1000"])).unwrap();
    let t = Instant::now();
    let exit = rt.client.stop("sleeper", Duration::from_secs(10)).unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert!(!exit.killed_after_grace, "{exit:?}");
    assert_eq!(exit.code, 128 + 15, "sleep died of SIGTERM: {exit:?}");
}

#[test]
fn a_container_ignoring_sigterm_is_killed_after_the_grace_period() {
    let rt = TestRuntime::new();
    rt.start(&rt.config("stubborn", &sh("trap '' TERM; echo ready; sleep 1000")))
        .unwrap();
    // Wait until the trap is installed.
    let t = Instant::now();
    while rt.log("stubborn") != vec!["ready"] {
        assert!(t.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    let grace = Duration::from_millis(1500);
    let t = Instant::now();
    let exit = rt.client.stop("stubborn", grace).unwrap();
    let took = t.elapsed();
    assert!(took >= grace, "waited the grace period: {took:?}");
    assert!(
        took < grace + Duration::from_secs(5),
        "then killed: {took:?}"
    );
    assert!(exit.killed_after_grace, "{exit:?}");
    assert_eq!(exit.code, 128 + 9, "{exit:?}");
    assert_eq!(exit.signal, Some(9));
}

#[test]
fn without_the_init_pid_1_ignores_sigterm_and_is_killed_after_the_grace_period() {
    // The kernel drops signals a PID 1 has no handler for; that is why `init` is the default.
    let rt = TestRuntime::new();
    let mut cfg = rt.config("pid1", &["sleep", "1000"]);
    cfg.init = false;
    rt.start(&cfg).unwrap();
    let grace = Duration::from_millis(800);
    let t = Instant::now();
    let exit = rt.client.stop("pid1", grace).unwrap();
    assert!(t.elapsed() >= grace);
    assert!(exit.killed_after_grace, "{exit:?}");
    assert_eq!(exit.signal, Some(9));
}

#[test]
fn delete_leaves_no_cgroup_and_no_state() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config("gone", &["sleep", "1000"]);
    cfg.memory_bytes = Some(32 << 20);
    let handle = rt.start(&cfg).unwrap();
    let path = rt.client.cgroup_path("gone");
    let dirs: Vec<PathBuf> = cgroup::dirs(&path)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    assert!(!dirs.is_empty(), "the container has cgroup directories");
    let layout = rt.client.layout().clone();
    assert!(layout.youki_dir("gone").is_dir());
    assert!(matches!(
        rt.client.state("gone").unwrap(),
        ContainerState::Running { .. }
    ));

    rt.client.delete("gone").unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} removed", d.display());
    }
    assert!(!cgroup::exists(&path));
    assert!(
        !layout.youki_dir("gone").exists(),
        "libcontainer state removed"
    );
    assert!(!layout.bundle("gone").exists(), "bundle removed");
    assert!(!alive(handle.pid()), "the container's process is gone");
    assert!(matches!(
        rt.client.state("gone"),
        Err(RuntimeError::NotFound(_))
    ));
    // Deleting again is fine.
    rt.client.delete("gone").unwrap();
}

#[test]
fn a_container_whose_shim_died_is_force_deleted() {
    let rt = TestRuntime::new();
    let handle = rt.start(&rt.config("orphan", &["sleep", "1000"])).unwrap();
    let pid = handle.pid();
    let shim_pid = handle.shim_pid();
    Command::new("kill")
        .args(["-9", &shim_pid.to_string()])
        .status()
        .unwrap();
    drop(handle); // reaps the dead shim
    let t = Instant::now();
    loop {
        match rt.client.state("orphan").unwrap() {
            ContainerState::Lost { pid: p, alive } => {
                assert_eq!(p, Some(pid));
                assert!(alive, "the container outlives its shim");
                break;
            }
            other => assert!(t.elapsed() < Duration::from_secs(5), "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let path = rt.client.cgroup_path("orphan");
    rt.client.delete("orphan").unwrap();
    assert!(!alive(pid));
    assert!(!cgroup::exists(&path));
    assert!(!rt.client.layout().youki_dir("orphan").exists());
}

#[test]
fn a_restarted_agent_readopts_running_containers() {
    let rt = TestRuntime::new();
    let handle = rt.start(&rt.config("kept", &["sleep", "1000"])).unwrap();
    let pid = handle.pid();
    drop(handle);
    // A new client over the same state directory, as a restarted agent would make.
    let again =
        RuntimeClient::new(univrs_bin(), rt.client.layout().root(), rt.client.agent()).unwrap();
    assert_eq!(again.list().unwrap(), vec!["kept".to_string()]);
    match again.state("kept").unwrap() {
        ContainerState::Running { pid: p, .. } => assert_eq!(p, pid),
        other => panic!("{other:?}"),
    }
    let exit = again.stop("kept", Duration::from_secs(5)).unwrap();
    assert_eq!(exit.code, 143);
}

#[test]
fn env_and_args_reach_the_process() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config(
        "env",
        &[
            "sh",
            "-c",
            "echo \"$FOO|$0|$1\"; pwd; env | grep -c ^PATH=",
            "zero",
            "one two",
        ],
    );
    cfg.env = vec![("FOO".into(), "bar baz".into())];
    cfg.cwd = "/tmp".into();
    rt.start(&cfg).unwrap();
    assert_eq!(rt.exit_of("env").code, 0);
    assert_eq!(rt.log("env"), vec!["bar baz|zero|one two", "/tmp", "1"]);
}

#[test]
fn hostname_is_set_and_the_network_namespace_is_private() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config(
        "net",
        &sh("hostname; readlink /proc/self/ns/net; ls /sys/class/net"),
    );
    cfg.hostname = Some("box-1".into());
    rt.start(&cfg).unwrap();
    assert_eq!(rt.exit_of("net").code, 0);
    let log = rt.log("net");
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(log[0], "box-1");
    assert!(log[1].starts_with("net:["), "{log:?}");
    assert_ne!(log[1], host_ns.to_string_lossy(), "a new network namespace");
    assert_eq!(log[2..], ["lo"], "only loopback inside");
}

#[test]
fn an_existing_network_namespace_is_joined() {
    // A namespace made the way CNI's callers do: `ip netns add`.
    if let Err(e) = Command::new("ip").arg("-V").output() {
        panic!(
            "running `ip -V`: {e}; this test needs iproute2: run scripts/install-deps \
             (Debian package iproute2)"
        );
    }
    let rt = TestRuntime::new();
    let name = format!("univrs-rt-{}", std::process::id());
    struct NetNs(String);
    impl Drop for NetNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    assert!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success()
    );
    let _ns = NetNs(name.clone());
    let path = PathBuf::from("/var/run/netns").join(&name);
    let expected = {
        use std::os::unix::fs::MetadataExt;
        format!("net:[{}]", std::fs::metadata(&path).unwrap().ino())
    };
    let mut cfg = rt.config("joined", &sh("readlink /proc/self/ns/net"));
    cfg.netns = Some(path);
    rt.start(&cfg).unwrap();
    assert_eq!(rt.exit_of("joined").code, 0);
    assert_eq!(rt.log("joined"), vec![expected]);
}

#[test]
fn the_default_hardening_is_in_place() {
    let rt = TestRuntime::new();
    let cfg = rt.config(
        "hard",
        &sh(
            "grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status; \
             unshare -U true 2>/dev/null && echo unshare-allowed; \
             cat /proc/kcore 2>/dev/null | head -c 1 | grep -q . && echo kcore-readable; \
             echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo proc-sys-writable; \
             echo done",
        ),
    );
    rt.start(&cfg).unwrap();
    assert_eq!(rt.exit_of("hard").code, 0);
    let log = rt.log("hard");
    assert!(
        log.contains(&"Seccomp:\t2".to_string()),
        "seccomp filter on: {log:?}"
    );
    assert!(log.contains(&"NoNewPrivs:\t1".to_string()), "{log:?}");
    // Docker's default set (CAP_MKNOD included: the device cgroup, v1 or v2's BPF filter,
    // lets no new node be opened).
    let caps = log
        .iter()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .unwrap();
    let caps = u64::from_str_radix(caps, 16).unwrap();
    let expected: u64 = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]
        .iter()
        .map(|b| 1u64 << b)
        .sum::<u64>();
    assert_eq!(caps, expected, "bounding set {caps:x}");
    assert_eq!(log.last().map(String::as_str), Some("done"), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.ends_with("allowed") || l.ends_with("able")),
        "{log:?}"
    );
}

/// Lines of /proc/<pid>/status and cgroup that say who a process is and what it may do.
const IDENTITY: &str = "grep -E '^(Uid|Gid|CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/$1/status; \
     cat /proc/$1/cgroup";

#[test]
fn exec_runs_inside_the_container_as_the_container_runs() {
    let rt = TestRuntime::new();
    let mut cfg = rt.config("exec", &["sleep", "1000"]);
    cfg.uid = 1000;
    cfg.gid = 1000;
    cfg.pids_limit = Some(64);
    rt.start(&cfg).unwrap();
    let exec = |script: &str| {
        let out = rt
            .client
            .exec_command("exec", &sh(script), Duration::from_secs(10))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // PID 1 (the init) and the exec'd shell agree on every line.
    let (code, init) = exec(&format!("set -- 1; {IDENTITY}"));
    assert_eq!(code, Some(0), "{init}");
    let (_, me) = exec(&format!("set -- self; {IDENTITY}"));
    assert_eq!(init, me, "PID 1:\n{init}\nexec:\n{me}");
    assert!(me.contains("Seccomp:\t2"), "{me}");
    assert!(me.contains("Uid:\t1000\t1000"), "{me}");
    assert!(
        me.contains("CapEff:\t0000000000000000"),
        "uid 1000 has no capability: {me}"
    );
    // Its PID, network and mount namespaces: the container's processes (the init and
    // sleep, this shell and grep), only a loopback interface, the busybox root.
    let (_, pids) = exec("ls -d /proc/[0-9]* | wc -l");
    assert!(pids.trim().parse::<u32>().unwrap() <= 5, "{pids}");
    let (_, links) = exec("grep -c : /proc/net/dev");
    assert_eq!(links.trim(), "1", "only lo");
    assert_eq!(
        exec("test -x /bin/busybox && test ! -e /proc/1/root/work").0,
        Some(0)
    );
    // The host's disk cannot be reached: no device node may be made and opened.
    let (code, _) = exec("mknod /tmp/d b 8 0 2>/dev/null && head -c1 /tmp/d >/dev/null");
    assert_ne!(code, Some(0));
    // Exit codes come through; the deadline kills what outlives it.
    assert_eq!(exec("exit 7").0, Some(7));
    let started = Instant::now();
    let out = rt
        .client
        .exec_command("exec", &["sleep", "30"], Duration::from_millis(300))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert!(started.elapsed() < Duration::from_secs(10));
    // A container that is not running cannot be exec'd into.
    let out = rt
        .client
        .exec_command("nope", &["true"], Duration::from_secs(5))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_command_that_does_not_exist_fails_to_start_and_leaves_nothing() {
    let rt = TestRuntime::new();
    let err = rt
        .start(&rt.config("nope", &["/bin/does-not-exist"]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::StartFailed { .. }), "{msg}");
    assert!(msg.contains("does-not-exist"), "{msg}");
    assert!(!rt.client.layout().bundle("nope").exists());
    assert!(!rt.client.layout().youki_dir("nope").exists());
    assert!(!cgroup::exists(&rt.client.cgroup_path("nope")));
}

#[test]
fn ids_are_unique_per_runtime() {
    let rt = TestRuntime::new();
    rt.start(&rt.config("twice", &["sleep", "1000"])).unwrap();
    let err = rt
        .start(&rt.config("twice", &["sleep", "1000"]))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Exists(_)), "{err}");
    // The first one is untouched.
    assert!(matches!(
        rt.client.state("twice").unwrap(),
        ContainerState::Running { .. }
    ));
}

/// Median time from spawning the shim to the container running (pid file written).
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn bench_create_start() {
    let rt = TestRuntime::new();
    let runs = 20;
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let id = format!("bench-{i}");
        let cfg = rt.config(&id, &["sleep", "1000"]);
        let t = Instant::now();
        let handle = rt.start(&cfg).unwrap();
        times.push(t.elapsed());
        rt.client.delete(&id).unwrap();
        drop(handle);
    }
    times.sort();
    let median = (times[runs / 2 - 1] + times[runs / 2]) / 2;
    println!(
        "create+start through the shim ({runs} runs): median {:.1} ms, min {:.1} ms, max {:.1} ms",
        median.as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[runs - 1].as_secs_f64() * 1000.0
    );
}

#[test]
fn root_in_the_node_user_namespace_is_nobody_on_the_host() {
    use univrs_node_agent::network::netns;
    use univrs_node_agent::runtime::spec::UserNamespace;
    let rt = TestRuntime::new();
    let base = 3_211_264; // 49 * 65536
    let userns = rt.client.pin_user_namespace(base, 65536).unwrap();
    // Pinning again with the same map keeps it; the namespace is the same file.
    assert_eq!(rt.client.pin_user_namespace(base, 65536).unwrap(), userns);
    let net = rt.dir.join("net");
    netns::create_owned(
        &net,
        &netns::Owner {
            helper: univrs_bin().to_path_buf(),
            userns: userns.clone(),
        },
    )
    .unwrap();
    let mut cfg = rt.config(
        "uns",
        &sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; \
             (echo x > /bin/owned-by-host-root) 2>/dev/null && echo wrote-host-file; \
             mknod /tmp/sda b 8 0 2>/dev/null && echo made-a-device; \
             cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
             cat /sys/class/net/lo/flags; sleep 1000"),
    );
    cfg.userns = Some(UserNamespace::Join(userns.clone()));
    cfg.netns = Some(net.clone());
    let handle = rt.start(&cfg).unwrap();
    // On the host, the container's root is the range's first id.
    let status = std::fs::read_to_string(format!("/proc/{}/status", handle.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid.split_whitespace().nth(1), Some("3211264"), "{uid}");
    let t = Instant::now();
    while rt.log("uns").len() < 5 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log: Vec<String> = rt
        .log("uns")
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        log,
        vec!["0 3211264 65536", "0 3211264 65536", "0", "0", "0x9"],
        "mapped, root inside, the host's files and devices out of reach, low ports open, lo up"
    );
    // A command exec'd into it (a probe) is in the same user namespace and cgroup, not root on
    // the host (libcontainer's tenant exec alone would leave it there).
    let out = rt
        .client
        .exec_command(
            "uns",
            &["sh", "-c", "cat /proc/self/uid_map; [ \"$(cat /proc/self/cgroup)\" = \"$(cat /proc/1/cgroup)\" ] && echo same-cgroup"],
            Duration::from_secs(5),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, vec!["0 3211264 65536", "same-cgroup"], "{out:?}");
    rt.client.delete("uns").unwrap();
    netns::remove(&net).unwrap();
    netns::remove(&userns).unwrap();
}

/// Waits up to five seconds for `f` to hold.
fn within_5s(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_created_container_runs_its_process_only_once_released() {
    let rt = TestRuntime::new();
    let (marker, held) = rt.hold("held", "; ls -l /proc/$$/fd > /fds-held; sleep 1000");
    assert_eq!(held.id(), "held");
    assert!(!marker.exists(), "the process ran before its release");
    assert!(matches!(
        rt.client.state("held").unwrap(),
        ContainerState::Creating { .. }
    ));
    let handle = rt.client.release(held).unwrap();
    assert!(alive(handle.pid()));
    within_5s("the released process runs", || marker.exists());
    let fds = rt.rootfs.join("fds-held");
    within_5s("the process lists its descriptors", || {
        std::fs::read_to_string(&fds).is_ok_and(|l| l.contains(" 2 -> "))
    });
    // The gate (the shim's fd 3) never reaches the workload: the shim makes it close-on-exec,
    // and libcontainer closes what the init inherited besides.
    let listed = std::fs::read_to_string(&fds).unwrap();
    assert!(!listed.contains(" 3 -> "), "{listed}");
    rt.client.delete("held").unwrap();
}

#[test]
fn an_abandoned_container_never_runs_and_leaves_nothing() {
    let rt = TestRuntime::new();
    let (marker, held) = rt.hold("abandoned", "");
    let path = rt.client.cgroup_path("abandoned");
    rt.client.abandon(held).unwrap();
    assert!(!marker.exists(), "an abandoned container ran its process");
    assert!(matches!(
        rt.client.state("abandoned"),
        Err(RuntimeError::NotFound(_))
    ));
    assert!(!cgroup::exists(&path));
    assert!(!rt.client.layout().youki_dir("abandoned").exists());
    assert!(!rt.client.layout().bundle("abandoned").exists());
}

#[test]
fn a_held_container_whose_agent_went_away_is_deleted_by_its_shim() {
    let rt = TestRuntime::new();
    let (marker, held) = rt.hold("orphaned", "");
    // What an agent that dies leaves: the gate's write end closes.
    drop(held);
    let mut exit = None;
    within_5s("the shim gives up and records why", || {
        if let Ok(ContainerState::Exited(e)) = rt.client.state("orphaned") {
            exit = Some(e);
        }
        exit.is_some()
    });
    let exit = exit.unwrap();
    let error = exit.error.clone().unwrap_or_default();
    assert!(error.contains("abandoned the start"), "{exit:?}");
    assert_eq!(exit.cleanup_error, None, "{exit:?}");
    assert!(!marker.exists(), "the process ran without its go-ahead");
    let path = rt.client.cgroup_path("orphaned");
    assert!(!cgroup::exists(&path), "the shim removed the cgroup");
    rt.client.delete("orphaned").unwrap();
}

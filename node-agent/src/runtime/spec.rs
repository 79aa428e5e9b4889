//! The OCI runtime spec (`config.json`) of a container, with Docker's and containerd's
//! defaults: a new PID, IPC, UTS and mount namespace (and network, unless an existing
//! namespace is joined), the default capability set, no new privileges, the default seccomp
//! profile, masked and read-only kernel paths, the standard mounts, a deny-all device cgroup
//! (plus the standard devices), CPU and memory limits, and a cgroup per container.

use super::cgroup::{self, CgroupVersion};
use super::seccomp;
use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// The annotation telling the shim to run a minimal init as PID 1 (`"true"` or `"false"`).
pub const INIT_ANNOTATION: &str = "univrs.io/init";

/// `PATH` when the configuration sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period used for CPU limits, in microseconds (100 ms, as Docker and Kubernetes).
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest memory limit accepted (Docker's minimum).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// The capabilities a container gets: Docker's and containerd's default set.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Kernel paths hidden from containers (Docker's list).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Kernel paths containers may read but not write.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What to run and how: the input of [`build_spec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The container id (see [`crate::ids::validate_id`]).
    pub id: String,
    /// The root filesystem directory (absolute).
    pub rootfs: PathBuf,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// The command and its arguments; the command is looked up in the container's `PATH`.
    pub args: Vec<String>,
    /// Environment variables; `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<(String, String)>,
    /// The working directory inside the container (absolute).
    pub cwd: String,
    /// The host name [default: the container id].
    pub hostname: Option<String>,
    /// The user id the process runs as.
    pub uid: u32,
    /// The group id the process runs as.
    pub gid: u32,
    /// CPU limit in millicores (1000 = one core), enforced with a CFS quota.
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes (at least [`MIN_MEMORY_BYTES`]).
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids_limit: Option<u64>,
    /// An existing network namespace to join (e.g. `/var/run/netns/x` made by CNI);
    /// without it the container gets a new, empty one.
    pub netns: Option<PathBuf>,
    /// Run a minimal init as PID 1 that forwards signals to the command and reaps zombies
    /// (like `docker run --init`), so that SIGTERM stops commands that install no handler.
    pub init: bool,
    /// Apply the default seccomp profile.
    pub seccomp: bool,
    /// The user namespace: root in the container is an unprivileged host id.
    pub userns: Option<UserNamespace>,
    /// The most the container's log may hold (bytes, with its one rotated file).
    pub log_max_bytes: Option<u64>,
    /// Host files shown read-only inside the container: (host path, path inside), e.g. the
    /// agent's `/etc/resolv.conf` for it. Bind mounts, so a symlink in the image cannot
    /// send the agent's write elsewhere on the host.
    pub files: Vec<(PathBuf, String)>,
}

/// How a container's ids map to the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNamespace {
    /// A new namespace mapping container ids `0..size` to host ids `base..base+size`.
    New {
        /// The first host id.
        base: u32,
        /// How many ids.
        size: u32,
    },
    /// An existing namespace pinned at this path (the node's; see
    /// [`crate::runtime::userns`]).
    Join(PathBuf),
}

impl ContainerConfig {
    /// A configuration with the defaults: root user, cwd `/`, no limits, a new network
    /// namespace, the init, seccomp on.
    pub fn new(id: impl Into<String>, rootfs: impl Into<PathBuf>, args: Vec<String>) -> Self {
        Self {
            id: id.into(),
            rootfs: rootfs.into(),
            readonly_rootfs: false,
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            hostname: None,
            uid: 0,
            gid: 0,
            cpu_millis: None,
            memory_bytes: None,
            pids_limit: None,
            netns: None,
            init: true,
            seccomp: true,
            userns: None,
            log_max_bytes: None,
            files: Vec::new(),
        }
    }
}

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field of the configuration is invalid.
    #[error("invalid container config: {0}")]
    Invalid(String),
    /// oci-spec refused a value.
    #[error("building the OCI spec: {0}")]
    Oci(#[from] OciSpecError),
}

fn invalid(msg: impl Into<String>) -> SpecError {
    SpecError::Invalid(msg.into())
}

/// Checks the configuration without building anything.
pub fn validate(cfg: &ContainerConfig) -> Result<(), SpecError> {
    crate::ids::validate_id(&cfg.id).map_err(SpecError::Invalid)?;
    if !cfg.rootfs.is_absolute() {
        return Err(invalid(format!(
            "rootfs {} must be an absolute path",
            cfg.rootfs.display()
        )));
    }
    if cfg.args.is_empty() || cfg.args[0].is_empty() {
        return Err(invalid("args must name a command"));
    }
    if cfg.args.iter().any(|a| a.contains('\0')) {
        return Err(invalid("args must not contain NUL bytes"));
    }
    for (k, v) in &cfg.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(format!(
                "environment variable {k:?} needs a non-empty name without '=' or NUL"
            )));
        }
    }
    if !cfg.cwd.starts_with('/') {
        return Err(invalid(format!("cwd {:?} must be absolute", cfg.cwd)));
    }
    if let Some(h) = &cfg.hostname {
        let ok = !h.is_empty()
            && h.len() <= 64
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !ok {
            return Err(invalid(format!(
                "hostname {h:?} must be 1 to 64 letters, digits, '-' or '.'"
            )));
        }
    }
    if cfg.cpu_millis == Some(0) {
        return Err(invalid("cpu limit must be at least 1 millicore"));
    }
    if let Some(m) = cfg.memory_bytes
        && m < MIN_MEMORY_BYTES
    {
        return Err(invalid(format!(
            "memory limit {m} bytes is below the minimum of {MIN_MEMORY_BYTES} bytes (6 MiB)"
        )));
    }
    if cfg.pids_limit == Some(0) {
        return Err(invalid("pids limit must be at least 1"));
    }
    if let Some((host, inside)) = cfg
        .files
        .iter()
        .find(|(host, inside)| !host.is_absolute() || !inside.starts_with('/'))
    {
        return Err(invalid(format!(
            "file {} shown at {inside:?}: both paths must be absolute",
            host.display()
        )));
    }
    if let Some(ns) = &cfg.netns
        && !ns.is_absolute()
    {
        return Err(invalid(format!(
            "network namespace {} must be an absolute path",
            ns.display()
        )));
    }
    Ok(())
}

/// The CFS quota for `millis` millicores over [`CPU_PERIOD_US`] (at least the kernel's 1 ms).
pub fn cpu_quota_us(millis: u64) -> i64 {
    let quota = millis.saturating_mul(CPU_PERIOD_US) / 1000;
    quota.clamp(1000, i64::MAX as u64) as i64
}

/// CPU shares proportional to the limit (1024 per core, at least 2, as Kubernetes does).
pub fn cpu_shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).max(2)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
}

/// The standard mounts: /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and a read-only /sys.
pub fn default_mounts() -> Result<Vec<Mount>, OciSpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// Builds the OCI runtime spec for `cfg`, with its cgroup at `cgroups_path` (see
/// [`cgroup::cgroup_path`]).
pub fn build_spec(cfg: &ContainerConfig, cgroups_path: &str) -> Result<Spec, SpecError> {
    validate(cfg)?;

    let mut env: Vec<String> = cfg.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !cfg.env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }

    // CAP_MKNOD stays (as in Docker): the device cgroup (v1, or v2's BPF filter) lets no
    // new node be opened, and root filesystems are mounted nodev.
    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    // A user other than root starts with no capability in effect (as Docker since 20.10):
    // the bounding set only says what a setuid binary could gain, and no-new-privileges
    // stops that too.
    let held = if cfg.uid == 0 {
        caps.clone()
    } else {
        HashSet::new()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(held.clone())
        .permitted(held)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(cfg.uid).gid(cfg.gid).build()?)
        .args(cfg.args.clone())
        .env(env)
        .cwd(PathBuf::from(&cfg.cwd))
        .capabilities(capabilities)
        // No rlimits: the container inherits the agent's, as containerd's do (raising a
        // hard limit can fail where the agent runs confined).
        .rlimits(Vec::new())
        .no_new_privileges(true)
        .build()?;

    let mut namespaces: Vec<LinuxNamespace> = Vec::new();
    let mut id_maps = None;
    match &cfg.userns {
        Some(UserNamespace::New { base, size }) => {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::User)
                    .build()?,
            );
            id_maps = Some(
                LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(*base)
                    .size(*size)
                    .build()?,
            );
        }
        Some(UserNamespace::Join(path)) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .path(path.clone())
                .build()?,
        ),
        None => {}
    }
    namespaces.extend(
        [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
        ]
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?,
    );
    let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(path) = &cfg.netns {
        net = net.path(path.clone());
    }
    namespaces.push(net.build()?);
    if cgroup::detect() == CgroupVersion::V2 {
        // As Docker does: a private cgroup namespace on cgroup v2 only.
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()?,
        );
    }

    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device; libcgroups then allows the standard ones (null, zero, full,
        // random, urandom, tty, console, ptmx, pts).
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ]);
    if let Some(millis) = cfg.cpu_millis {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(cpu_quota_us(millis))
                .period(CPU_PERIOD_US)
                .shares(cpu_shares(millis))
                .build()?,
        );
    }
    if let Some(bytes) = cfg.memory_bytes {
        let limit = i64::try_from(bytes).map_err(|_| invalid("memory limit is too large"))?;
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(pids) = cfg.pids_limit {
        let limit = i64::try_from(pids).map_err(|_| invalid("pids limit is too large"))?;
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(PathBuf::from(cgroups_path))
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .devices(Vec::new());
    if let Some(map) = id_maps {
        linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }
    if cfg.seccomp {
        linux = linux.seccomp(seccomp::default_profile(&caps)?);
    }

    let mut annotations = HashMap::from([(
        INIT_ANNOTATION.to_string(),
        if cfg.init { "true" } else { "false" }.to_string(),
    )]);
    if let Some(cap) = cfg.log_max_bytes {
        annotations.insert(super::log::LOG_CAP_ANNOTATION.to_string(), cap.to_string());
    }

    let mut mounts = default_mounts()?;
    for (host, inside) in &cfg.files {
        let host = host
            .to_str()
            .ok_or_else(|| SpecError::Invalid(format!("{} is not UTF-8", host.display())))?;
        mounts.push(mount(
            inside,
            "bind",
            host,
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    let spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(cfg.rootfs.clone())
                .readonly(cfg.readonly_rootfs)
                .build()?,
        )
        .mounts(mounts)
        .process(process)
        .hostname(cfg.hostname.clone().unwrap_or_else(|| cfg.id.clone()))
        .annotations(annotations)
        .linux(linux.build()?)
        .build()?;
    Ok(spec)
}

/// Whether a spec asks for the init (see [`INIT_ANNOTATION`]; absent means no).
pub fn wants_init(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ContainerConfig {
        let mut c = ContainerConfig::new("web-0", "/rootfs", vec!["sh".into(), "-c".into()]);
        c.env = vec![("FOO".into(), "bar".into())];
        c.cpu_millis = Some(250);
        c.memory_bytes = Some(64 << 20);
        c.pids_limit = Some(100);
        c
    }

    #[test]
    fn spec_has_limits_namespaces_and_defaults() {
        let spec = build_spec(&cfg(), "/univrs/n1/web-0").unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let res = linux.resources().as_ref().unwrap();
        let cpu = res.cpu().as_ref().unwrap();
        assert_eq!(cpu.quota(), Some(25_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 100);
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(std::path::Path::new("/univrs/n1/web-0"))
        );
        let ns = linux.namespaces().as_ref().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert!(net.path().is_none());
        assert!(linux.seccomp().is_some());
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );

        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let env = process.env().as_ref().unwrap();
        assert!(env.contains(&"FOO=bar".to_string()));
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        let caps = process.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert!(bounding.contains(&Capability::NetBindService));
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert!(caps.ambient().as_ref().unwrap().is_empty());

        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
        assert!(wants_init(&spec));
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().clone())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
        ] {
            assert!(dests.contains(&PathBuf::from(d)), "{d} mounted");
        }
        // It round-trips through JSON as config.json does.
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn joins_a_given_network_namespace() {
        let mut c = cfg();
        c.netns = Some("/var/run/netns/cni-1".into());
        let spec = build_spec(&c, "/univrs/n1/web-0").unwrap();
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(
            net.path().as_deref(),
            Some(std::path::Path::new("/var/run/netns/cni-1"))
        );
    }

    #[test]
    fn refuses_bad_configs() {
        let mut c = cfg();
        c.memory_bytes = Some(1024);
        assert!(
            build_spec(&c, "/x")
                .unwrap_err()
                .to_string()
                .contains("6 MiB")
        );
        let mut c = cfg();
        c.args.clear();
        assert!(build_spec(&c, "/x").is_err());
        let mut c = cfg();
        c.env.push(("A=B".into(), "c".into()));
        assert!(build_spec(&c, "/x").is_err());
        let mut c = cfg();
        c.rootfs = "relative".into();
        assert!(build_spec(&c, "/x").is_err());
        let mut c = cfg();
        c.id = "bad/id".into();
        assert!(build_spec(&c, "/x").is_err());
    }

    #[test]
    fn cpu_math() {
        assert_eq!(cpu_quota_us(1000), 100_000);
        assert_eq!(cpu_quota_us(1500), 150_000);
        assert_eq!(cpu_quota_us(1), 1000);
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
    }
}

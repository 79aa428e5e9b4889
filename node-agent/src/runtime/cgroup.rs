//! Reading (and, as a last resort, removing) a container's cgroup on cgroup v1 and v2.
//!
//! The layout is detected at run time: a unified hierarchy at `/sys/fs/cgroup` is v2;
//! anything else (legacy, or hybrid with a controller-less `unified` mount) is v1, where each
//! controller is found through `/proc/self/mountinfo`. This is what `libcontainer` decides
//! too, so the paths here are the ones it created. Plain file reads: safe from any thread.

use crate::fsutil::unescape_mountinfo;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup layout of this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Controllers in separate v1 hierarchies (legacy or hybrid).
    V1,
    /// One unified v2 hierarchy.
    V2,
}

/// Detects the layout: v2 when `/sys/fs/cgroup` itself is a cgroup2 mount.
pub fn detect() -> CgroupVersion {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// A container's resource usage, cumulative since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time used by every process of the container, in microseconds.
    pub cpu_usec: u64,
    /// Memory charged to the container now, in bytes (includes page cache).
    pub memory_bytes: u64,
}

/// A v1 hierarchy: its mount point and the controllers (or `name=`) mounted there.
#[derive(Debug, Clone)]
struct V1Mount {
    mount_point: PathBuf,
    options: Vec<String>,
}

/// Every cgroup v1 hierarchy mounted here.
fn v1_mounts() -> Vec<V1Mount> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            if post.next()? != "cgroup" {
                return None;
            }
            let _source = post.next()?;
            let options = post.next()?.split(',').map(str::to_string).collect();
            Some(V1Mount {
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
                options,
            })
        })
        .collect()
}

/// Where the agent mounts the controller-less hierarchy that turns on `favordynmods`.
pub const FAVOR_DYNMODS_MOUNT: &str = "/run/univrs/favordynmods";

/// What [`favor_dynamic_changes`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Favoring {
    /// A cgroup hierarchy of this machine already has `favordynmods`.
    AlreadyOn,
    /// The agent mounted its own hierarchy with it, here.
    Mounted(PathBuf),
}

/// Whether some cgroup hierarchy mounted here has `favordynmods`.
pub fn favors_dynamic_changes() -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| {
        line.split_once(" - ").is_some_and(|(_, post)| {
            let mut f = post.split(' ');
            matches!(f.next(), Some("cgroup" | "cgroup2"))
                && f.nth(1)
                    .is_some_and(|o| o.split(',').any(|o| o == "favordynmods"))
        })
    })
}

/// Makes moving a process into a cgroup cheap on this machine: the kernel's `favordynmods`.
///
/// Without it, the first migration after a quiet moment waits for an RCU grace period (the
/// global lock that guards forks against migrations is a per-CPU semaphore whose writers wait
/// for readers to switch to its slow path): 5 to 16 ms measured on this kind of machine, paid
/// by every container start when the runtime joins it to its cgroups. With it, readers (forks
/// and exits, everywhere on the machine) always take the slow path, a few atomic operations
/// more, and a migration costs a fraction of a millisecond. The kernel documents it as the
/// choice for machines whose cgroups change often, which a node running others' containers
/// is. The flag belongs to a hierarchy but acts machine-wide, so the agent mounts a hierarchy
/// of its own with no controller (`none,name=univrs`), touching none of the host's; it stays
/// mounted while any agent is on the machine ([`release_favor`]).
pub fn favor_dynamic_changes() -> io::Result<Favoring> {
    use nix::mount::{MsFlags, mount};
    if favors_dynamic_changes() {
        return Ok(Favoring::AlreadyOn);
    }
    let dir = Path::new(FAVOR_DYNMODS_MOUNT);
    std::fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    mount(
        Some("cgroup"),
        dir,
        Some("cgroup"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("none,name=univrs,favordynmods"),
    )
    .map_err(|e| {
        io::Error::other(format!(
            "mounting a cgroup hierarchy with favordynmods at {}: {e}",
            dir.display()
        ))
    })?;
    Ok(Favoring::Mounted(dir.to_path_buf()))
}

/// Unmounts the hierarchy [`favor_dynamic_changes`] mounted, when no agent but the one
/// leaving (whose directory under `/run/univrs` is `leaving`) is left on this machine: the
/// last agent to leave takes it along. Whether the kernel stops favouring migrations then is
/// the kernel's affair (6.18 kept favouring them). Returns whether it was unmounted.
pub fn release_favor(leaving: &Path) -> io::Result<bool> {
    use nix::mount::{MntFlags, umount2};
    let dir = Path::new(FAVOR_DYNMODS_MOUNT);
    let Some(top) = dir.parent() else {
        return Ok(false);
    };
    let others = std::fs::read_dir(top)?
        .flatten()
        .filter(|e| e.path() != dir && e.path() != leaving)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .count();
    let mounted = v1_mounts().iter().any(|m| m.mount_point == dir);
    if others > 0 || !mounted {
        return Ok(false);
    }
    umount2(dir, MntFlags::MNT_DETACH)
        .map_err(|e| io::Error::other(format!("unmounting {}: {e}", dir.display())))?;
    let _ = std::fs::remove_dir(dir);
    Ok(true)
}

/// The cgroup path of a container: `/univrs/<agent>/<id>`, relative to each hierarchy's root,
/// so several agents on one machine keep their containers apart.
pub fn cgroup_path(agent: &str, id: &str) -> String {
    format!("/univrs/{agent}/{id}")
}

fn join(base: &Path, cgroup_path: &str) -> PathBuf {
    base.join(cgroup_path.trim_start_matches('/'))
}

/// The directory of `cgroup_path` in the v1 hierarchy holding `controller`.
fn v1_dir(controller: &str, cgroup_path: &str) -> Option<PathBuf> {
    v1_mounts()
        .into_iter()
        .find(|m| m.options.iter().any(|o| o == controller))
        .map(|m| join(&m.mount_point, cgroup_path))
}

/// The directory of `cgroup_path` holding `controller`'s files on this host.
pub fn controller_dir(controller: &str, cgroup_path: &str) -> Option<PathBuf> {
    match detect() {
        CgroupVersion::V2 => Some(join(Path::new(CGROUP_ROOT), cgroup_path)),
        CgroupVersion::V1 => v1_dir(controller, cgroup_path),
    }
}

/// Every directory `cgroup_path` has or may have: one per v1 hierarchy, or the v2 one.
pub fn dirs(cgroup_path: &str) -> Vec<PathBuf> {
    match detect() {
        CgroupVersion::V2 => vec![join(Path::new(CGROUP_ROOT), cgroup_path)],
        CgroupVersion::V1 => v1_mounts()
            .iter()
            .map(|m| join(&m.mount_point, cgroup_path))
            .collect(),
    }
}

/// Whether any directory of `cgroup_path` exists.
pub fn exists(cgroup_path: &str) -> bool {
    dirs(cgroup_path).iter().any(|d| d.is_dir())
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
}

fn parse_u64(path: &Path, s: &str) -> io::Result<u64> {
    s.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {s:?} is not a number", path.display()),
        )
    })
}

/// The value of `key` in a flat-keyed file such as `cpu.stat` or `memory.events`.
fn keyed_value(path: &Path, key: &str) -> io::Result<Option<u64>> {
    let text = read_trimmed(path)?;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(' ')
            && k == key
        {
            return parse_u64(path, v.trim()).map(Some);
        }
    }
    Ok(None)
}

fn missing(what: &str, cgroup_path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no {what} cgroup hierarchy for {cgroup_path}"),
    )
}

/// CPU time (microseconds) and current memory (bytes) of the cgroup at `cgroup_path`.
pub fn usage(cgroup_path: &str) -> io::Result<Usage> {
    match detect() {
        CgroupVersion::V2 => {
            let dir = join(Path::new(CGROUP_ROOT), cgroup_path);
            let stat = dir.join("cpu.stat");
            let cpu_usec = keyed_value(&stat, "usage_usec")?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "cpu.stat has no usage_usec")
            })?;
            let current = dir.join("memory.current");
            let memory_bytes = parse_u64(&current, &read_trimmed(&current)?)?;
            Ok(Usage {
                cpu_usec,
                memory_bytes,
            })
        }
        CgroupVersion::V1 => {
            let cpu_dir =
                v1_dir("cpuacct", cgroup_path).ok_or_else(|| missing("cpuacct", cgroup_path))?;
            let cpu_file = cpu_dir.join("cpuacct.usage");
            let nanos = parse_u64(&cpu_file, &read_trimmed(&cpu_file)?)?;
            let mem_dir =
                v1_dir("memory", cgroup_path).ok_or_else(|| missing("memory", cgroup_path))?;
            let mem_file = mem_dir.join("memory.usage_in_bytes");
            let memory_bytes = parse_u64(&mem_file, &read_trimmed(&mem_file)?)?;
            Ok(Usage {
                cpu_usec: nanos / 1000,
                memory_bytes,
            })
        }
    }
}

/// The memory limit of the cgroup in bytes, `None` when unlimited.
pub fn memory_limit(cgroup_path: &str) -> io::Result<Option<u64>> {
    match detect() {
        CgroupVersion::V2 => {
            let f = join(Path::new(CGROUP_ROOT), cgroup_path).join("memory.max");
            let v = read_trimmed(&f)?;
            if v == "max" {
                Ok(None)
            } else {
                parse_u64(&f, &v).map(Some)
            }
        }
        CgroupVersion::V1 => {
            let dir =
                v1_dir("memory", cgroup_path).ok_or_else(|| missing("memory", cgroup_path))?;
            let f = dir.join("memory.limit_in_bytes");
            let v = parse_u64(&f, &read_trimmed(&f)?)?;
            // v1 reports "unlimited" as the largest page-aligned i64.
            Ok((v < (1 << 62)).then_some(v))
        }
    }
}

/// The CFS quota and period of the cgroup in microseconds, `None` when unlimited.
pub fn cpu_limit(cgroup_path: &str) -> io::Result<Option<(u64, u64)>> {
    match detect() {
        CgroupVersion::V2 => {
            let f = join(Path::new(CGROUP_ROOT), cgroup_path).join("cpu.max");
            let v = read_trimmed(&f)?;
            let (quota, period) = v.split_once(' ').unwrap_or((v.as_str(), "100000"));
            if quota == "max" {
                return Ok(None);
            }
            Ok(Some((parse_u64(&f, quota)?, parse_u64(&f, period)?)))
        }
        CgroupVersion::V1 => {
            let dir = v1_dir("cpu", cgroup_path).ok_or_else(|| missing("cpu", cgroup_path))?;
            let qf = dir.join("cpu.cfs_quota_us");
            let quota = read_trimmed(&qf)?;
            if quota.starts_with('-') {
                return Ok(None);
            }
            let pf = dir.join("cpu.cfs_period_us");
            Ok(Some((
                parse_u64(&qf, &quota)?,
                parse_u64(&pf, &read_trimmed(&pf)?)?,
            )))
        }
    }
}

/// How many processes of the cgroup the OOM killer killed (`None` if the kernel won't say).
pub fn oom_kills(cgroup_path: &str) -> Option<u64> {
    let file = match detect() {
        CgroupVersion::V2 => join(Path::new(CGROUP_ROOT), cgroup_path).join("memory.events"),
        CgroupVersion::V1 => v1_dir("memory", cgroup_path)?.join("memory.oom_control"),
    };
    keyed_value(&file, "oom_kill").ok().flatten()
}

/// The pids in the cgroup directory `dir`.
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills every process in the cgroup at `cgroup_path` and removes its directories: the last
/// resort when `libcontainer`'s own state is gone. Idempotent.
pub fn kill_and_remove(cgroup_path: &str) -> io::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut errors = Vec::new();
    for dir in dirs(cgroup_path) {
        if !dir.is_dir() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = procs(&dir);
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() > deadline => {
                    errors.push(format!("removing {}: {e}", dir.display()));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(errors.join("; ")))
    }
}

/// Caps everything under the agent's parent cgroup `/univrs/<agent>` together at `cpu_millis`
/// (a CFS quota) and `memory_bytes`: what the owner lends is what the node advertises, however
/// the containers under it are limited. Creates the parent where it is missing (on v2 with the
/// cpu, memory and pids controllers enabled for its children, as `libcontainer` expects).
pub fn limit_agent_parent(agent: &str, cpu_millis: u64, memory_bytes: u64) -> io::Result<()> {
    let parent = format!("/univrs/{agent}");
    let quota = (cpu_millis.saturating_mul(100_000) / 1000).max(1000);
    let write = |path: PathBuf, value: String| {
        std::fs::write(&path, &value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value} to {}: {e}", path.display()),
            )
        })
    };
    let create = |dir: &Path| {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))
    };
    match detect() {
        CgroupVersion::V2 => {
            let root = Path::new(CGROUP_ROOT);
            let dir = join(root, &parent);
            create(&dir)?;
            for d in [root.to_path_buf(), root.join("univrs"), dir.clone()] {
                write(
                    d.join("cgroup.subtree_control"),
                    "+cpu +memory +pids".into(),
                )?;
            }
            write(dir.join("cpu.max"), format!("{quota} 100000"))?;
            write(dir.join("memory.max"), memory_bytes.to_string())?;
        }
        CgroupVersion::V1 => {
            let cpu = v1_dir("cpu", &parent).ok_or_else(|| missing("cpu", &parent))?;
            create(&cpu)?;
            write(cpu.join("cpu.cfs_period_us"), "100000".into())?;
            write(cpu.join("cpu.cfs_quota_us"), quota.to_string())?;
            let memory = v1_dir("memory", &parent).ok_or_else(|| missing("memory", &parent))?;
            create(&memory)?;
            write(
                memory.join("memory.limit_in_bytes"),
                memory_bytes.to_string(),
            )?;
        }
    }
    Ok(())
}

/// Removes an agent's parent cgroup `/univrs/<agent>` wherever it is empty; with
/// `including_top`, `/univrs` too when no other agent uses it. Errors are ignored: a parent
/// still holding containers simply stays.
pub fn remove_agent_parent(agent: &str, including_top: bool) {
    for dir in dirs(&format!("/univrs/{agent}")) {
        let _ = std::fs::remove_dir(&dir);
        if including_top && let Some(top) = dir.parent() {
            let _ = std::fs::remove_dir(top);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        assert_eq!(cgroup_path("n1", "web-0"), "/univrs/n1/web-0");
    }

    #[test]
    fn finds_this_hosts_hierarchies() {
        // Our own cgroup's usage is readable on whichever layout this host has.
        match detect() {
            CgroupVersion::V2 => assert_eq!(dirs("/x"), vec![PathBuf::from("/sys/fs/cgroup/x")]),
            CgroupVersion::V1 => {
                let memory = controller_dir("memory", "/").expect("a memory hierarchy");
                assert!(memory.join("memory.usage_in_bytes").exists());
                assert!(usage("/").unwrap().cpu_usec > 0);
            }
        }
    }
}

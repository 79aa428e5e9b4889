//! The node's user namespace: container ids `0..size` are host ids `base..base+size`, so root
//! in a container is an unprivileged id on the host, owning only what the image store shifted
//! to it (see `ImageStore::open_shifted`).
//!
//! One namespace per node, pinned by a bind mount on a file like a network namespace, so that
//! each container's network namespace can be made *inside* it ([`create_netns_in`]): a
//! container that joins the node's user namespace may then join its network namespace too
//! (the kernel lets a process enter a namespace only when it holds CAP_SYS_ADMIN in the user
//! namespace that owns it), and CNI (root on the host) still configures it from outside.
//!
//! Both need a process entering a user namespace, which a multi-threaded process may not do,
//! so both run in a fresh single-threaded process (`univrs shim userns`, `univrs shim
//! netns`) that forks a child to do the entering while the parent, still root on the host,
//! writes the id maps and makes the bind mounts.

use super::shim::ShimError;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe, read, write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Ids each node's user namespace maps (the 16-bit range images use).
pub const SIZE: u32 = 65536;

/// The first host id of the node `agent`'s user namespace, by default: a block of [`SIZE`] ids
/// from 2^21 (above the ids of people and system users, and above what Kubernetes hands out
/// for its own user namespaces), chosen by a hash of the agent name so agents side by side
/// on one machine rarely share one (give them `--user-namespace-base` to be sure).
pub fn default_base(agent: &str) -> u32 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(agent.as_bytes());
    let block = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 16_000;
    (32 + block) * SIZE
}

fn rt(what: &str) -> impl FnOnce(nix::Error) -> ShimError + '_ {
    move |e| ShimError::Runtime(format!("{what}: {e}"))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ShimError {
    move |source| ShimError::Io {
        context: what,
        source,
    }
}

/// Makes the file a namespace is pinned on (an existing one is kept).
fn mount_point(path: &Path) -> Result<(), ShimError> {
    crate::fsutil::namespace_mount_point(path).map_err(io(format!("creating {}", path.display())))
}

/// Whether `path` is a pinned namespace (a bind mount of an `nsfs` file).
pub fn is_pinned(path: &Path) -> bool {
    crate::fsutil::is_pinned_namespace(path)
}

/// A forked child that entered (or made) a namespace and waits until the parent is done with
/// it: the parent reads what it needs from `/proc/<pid>` meanwhile.
struct Waiting {
    pid: Pid,
    go: OwnedFd,
}

impl Waiting {
    /// Forks; the child runs `enter`, reports, waits to be released, and exits.
    // Forking is the one way to have a second process of our own in another user namespace
    // while this one writes its maps; only here, in a single-threaded helper process.
    #[allow(unsafe_code)]
    fn fork(enter: impl FnOnce() -> nix::Result<()>) -> Result<Self, ShimError> {
        let (ready_r, ready_w) = pipe().map_err(rt("pipe"))?;
        let (go_r, go_w) = pipe().map_err(rt("pipe"))?;
        // SAFETY: this process is single-threaded (a fresh `univrs shim` process), so the
        // child may run anything; it only makes system calls and exits with _exit.
        match unsafe { fork() }.map_err(rt("fork"))? {
            ForkResult::Child => {
                drop(ready_r);
                drop(go_w);
                let ok = enter().is_ok();
                let _ = write(&ready_w, if ok { b"y" } else { b"n" });
                let mut b = [0u8; 1];
                let _ = read(go_r.as_fd(), &mut b);
                // SAFETY: _exit is always safe; no destructor of the parent's state runs.
                unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                drop(go_r);
                let mut b = [0u8; 1];
                let n = read(ready_r.as_fd(), &mut b).map_err(rt("waiting for the child"))?;
                let waiting = Self {
                    pid: child,
                    go: go_w,
                };
                if n != 1 || b[0] != b'y' {
                    return Err(ShimError::Runtime(
                        "the child could not enter the namespace".into(),
                    ));
                }
                Ok(waiting)
            }
        }
    }

    fn proc(&self, rel: &str) -> String {
        format!("/proc/{}/{rel}", self.pid)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = write(&self.go, b"x");
        let _ = waitpid(self.pid, None);
    }
}

/// Pins the node's user namespace at `path` mapping `0..size` to `base..base+size` (uids and
/// gids). One already pinned there with that map is kept; another is replaced (containers in
/// it keep it alive).
pub fn pin(path: &Path, base: u32, size: u32) -> Result<(), ShimError> {
    let map = format!("0 {base} {size}");
    if is_pinned(path) {
        if current_map(path)?.as_deref() == Some(map.as_str()) {
            return Ok(());
        }
        umount2(path, MntFlags::MNT_DETACH).map_err(rt("unpinning the old user namespace"))?;
    }
    mount_point(path)?;
    let child = Waiting::fork(|| unshare(CloneFlags::CLONE_NEWUSER))?;
    for file in ["uid_map", "gid_map"] {
        std::fs::write(child.proc(file), format!("{map}\n"))
            .map_err(io(format!("writing {file} of the node's user namespace")))?;
    }
    mount(
        Some(child.proc("ns/user").as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(rt("pinning the user namespace"))
}

/// The uid map of the user namespace pinned at `path`, first line, spaces collapsed.
fn current_map(path: &Path) -> Result<Option<String>, ShimError> {
    let ns = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let child = Waiting::fork(|| setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER))?;
    let text = std::fs::read_to_string(child.proc("uid_map")).unwrap_or_default();
    Ok(text
        .lines()
        .next()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")))
}

/// Makes a network namespace owned by the user namespace pinned at `userns` and pins it at
/// `path` (an empty file or none), with `lo` up. Processes in it may bind any port (as in Docker, the
/// namespace's `ip_unprivileged_port_start` is 0): a container user other than root may serve
/// on port 80 of its own address.
pub fn create_netns_in(userns: &Path, path: &Path) -> Result<(), ShimError> {
    let owner = std::fs::File::open(userns).map_err(io(format!("opening {}", userns.display())))?;
    mount_point(path)?;
    let child = Waiting::fork(|| {
        setns(owner.as_fd(), CloneFlags::CLONE_NEWUSER)?;
        unshare(CloneFlags::CLONE_NEWNET)
    })?;
    mount(
        Some(child.proc("ns/net").as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(rt("pinning the network namespace"))?;
    drop(child);
    // This process is root on the host and single-threaded: it may enter the new namespace.
    let ns = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(rt("entering the network namespace"))?;
    crate::network::netns::loopback_up().map_err(rt("setting lo up"))?;
    std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")
        .map_err(io("opening low ports to the namespace's users".into()))
}

//! Network namespaces pinned by a bind mount on a file, the way `ip netns add` and CNI's
//! callers keep a namespace alive without a process in it.
//!
//! A namespace is made on a short-lived thread of our own, not in a child process: the thread
//! calls `unshare(CLONE_NEWNET)` (which moves only the calling thread into a new namespace),
//! bind-mounts `/proc/thread-self/ns/net` onto the file, and exits, so no thread of the agent
//! is ever left in a foreign namespace and nothing forks inside the multi-threaded agent.
//! That is also faster than spawning `ip netns add` and does not tie the namespace to
//! `/run/netns`, so every agent keeps its namespaces under its own state directory.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use std::io;
use std::path::{Path, PathBuf};

/// Why a namespace could not be made or removed.
#[derive(Debug, thiserror::Error)]
#[error("{what} network namespace {}: {source}", path.display())]
pub struct NetnsError {
    /// What was being done ("creating", "removing", …).
    pub what: &'static str,
    /// The namespace file.
    pub path: PathBuf,
    /// The error.
    pub source: io::Error,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NetnsError {
    let path = path.to_path_buf();
    move |source| NetnsError { what, path, source }
}

/// Whether `path` is a mounted network namespace (a bind mount of an `nsfs` file).
pub fn is_mounted(path: &Path) -> bool {
    crate::fsutil::is_pinned_namespace(path)
}

/// Refuses a path where a namespace is already pinned.
fn ensure_unpinned(path: &Path) -> Result<(), NetnsError> {
    if is_mounted(path) {
        return Err(err("creating", path)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a namespace is already mounted there",
        )));
    }
    Ok(())
}

/// Creates a new network namespace pinned at `path` (its parent must exist), with `lo` up. A file
/// left there by an earlier, interrupted attempt is reused; a mounted one is an error.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    ensure_unpinned(path)?;
    crate::fsutil::namespace_mount_point(path).map_err(err("creating the mount point of", path))?;
    let target = path.to_path_buf();
    let made = std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || -> Result<(), Errno> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            loopback_up()?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .map_err(err("starting a thread to create", path))?
        .join()
        .map_err(|_| err("creating", path)(io::Error::other("the namespace thread panicked")))?;
    if let Err(e) = made {
        let _ = std::fs::remove_file(path);
        return Err(err("creating", path)(io::Error::from(e)));
    }
    Ok(())
}

/// Has the helper killed when the thread that runs it goes (the agent killed, say): a
/// namespace it pins after its agent is gone, and perhaps after `univrs reset` removed
/// everything, would be left behind (a spare is made by a thread no one waits for).
#[allow(unsafe_code)]
fn dies_with_its_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec only prctl and getppid run, both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have gone before the signal was asked for.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
}

/// Moves the namespace pinned at `from` to `to` (an empty file or none): pins it at `to`
/// too, then unpins `from`. No process enters it.
pub fn repin(from: &Path, to: &Path) -> Result<(), NetnsError> {
    ensure_unpinned(to)?;
    crate::fsutil::namespace_mount_point(to).map_err(err("creating the mount point of", to))?;
    if let Err(e) = mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = std::fs::remove_file(to);
        return Err(err("pinning", to)(io::Error::from(e)));
    }
    remove(from)
}

/// Sets `lo` up in the calling thread's network namespace, as runc once did itself: what the
/// CNI loopback plugin does, without starting a process for it (the plugin's exec took 8 to
/// 10 ms of every container start on a busy machine, and its DEL 4 ms of every teardown).
#[allow(unsafe_code)]
pub fn loopback_up() -> Result<(), Errno> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd;
    // A socket of this namespace: the ioctls act on the namespace it was made in.
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain data; zeroed is a valid value (an empty name, no flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls read and write only `req`, which outlives them.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// Who owns the network namespaces an agent makes: the node's user namespace, entered by a
/// helper process (`<helper> shim netns --userns … --path …`, see
/// [`crate::runtime::userns::create_netns_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The `univrs` binary.
    pub helper: PathBuf,
    /// The node's pinned user namespace.
    pub userns: PathBuf,
}

/// Creates a new, empty network namespace pinned at `path`, owned by `owner`'s user namespace
/// (see [`create`] for one owned by the agent's own).
pub fn create_owned(path: &Path, owner: &Owner) -> Result<(), NetnsError> {
    ensure_unpinned(path)?;
    let mut cmd = std::process::Command::new(&owner.helper);
    dies_with_its_parent(&mut cmd);
    let out = cmd
        .args(["shim", "netns", "--userns"])
        .arg(&owner.userns)
        .arg("--path")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .current_dir("/")
        .env_clear()
        .env("PATH", crate::runtime::spec::DEFAULT_PATH)
        .output()
        .map_err(err("running the helper that creates", path))?;
    if !out.status.success() {
        let _ = remove(path);
        return Err(err("creating", path)(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )));
    }
    Ok(())
}

/// Unmounts and removes the namespace file at `path`; a missing or unmounted file is fine.
/// Processes still inside the namespace keep it alive until they exit.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    if is_mounted(path) {
        match umount2(path, MntFlags::MNT_DETACH) {
            // EINVAL: no longer a mount point (someone else unmounted it meanwhile).
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(err("unmounting", path)(io::Error::from(e))),
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err("removing", path)(e)),
    }
}

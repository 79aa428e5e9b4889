//! A container's seccomp profile compiled once to the kernel's BPF, and installed by the
//! container's own executor just before the workload runs.
//!
//! `libcontainer` compiles the OCI profile with libseccomp inside every container's init
//! process: about 10 ms of CPU per start for the default profile, on the path from the go-ahead
//! to a running process. The profile depends only on the container's capability set, so the
//! shim compiles it once per distinct profile and keeps the program in the runtime's state
//! directory, named by the SHA-256 of the profile and libseccomp's version; later starts read
//! the file. The executor installs it as `libcontainer` would have: last, after the
//! capabilities are dropped, with no-new-privileges set (so no privilege is needed), right
//! before the command (or the minimal init) runs.
//!
//! The translation follows the OCI runtime spec as runc reads it: for `SCMP_CMP_MASKED_EQ`,
//! `value` is the mask and `valueTwo` the value the masked argument must equal.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// The size of one BPF instruction (`struct sock_filter`).
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

/// Why a profile could not be compiled or its program installed.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// libseccomp refused the profile.
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
    /// The profile asks for what this runtime never does.
    #[error("unsupported seccomp profile: {0}")]
    Unsupported(String),
    /// Reading or writing the compiled program.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The kernel refused the program.
    #[error("installing the seccomp filter: {0}")]
    Install(io::Error),
}

/// A compiled seccomp program, ready to install.
#[derive(Clone)]
pub struct Filter {
    program: Arc<[libc::sock_filter]>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({} instructions)", self.program.len())
    }
}

impl Filter {
    /// The program for `profile`, compiled once into `cache` (a directory only root may write:
    /// whoever can change a program there can change what every container may call).
    pub fn cached(cache: &Path, profile: &LinuxSeccomp) -> Result<Self, FilterError> {
        let file = cache.join(format!("{}.bpf", cache_key(profile)?));
        match std::fs::read(&file) {
            Ok(bytes) => return Self::from_bytes(&bytes, &file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("reading {}", file.display()), e)),
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache)
            .map_err(|e| io_err(format!("creating {}", cache.display()), e))?;
        // Written aside and renamed: a shim reading it concurrently sees all of it or none.
        let tmp = cache.join(format!(
            ".{}.{}.tmp",
            cache_key(profile)?,
            std::process::id()
        ));
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
        let compiled = compile(profile)?.export_bpf(&out);
        drop(out);
        if let Err(e) = compiled {
            let _ = std::fs::remove_file(&tmp);
            return Err(FilterError::Compile(e.to_string()));
        }
        std::fs::rename(&tmp, &file)
            .map_err(|e| io_err(format!("renaming {}", tmp.display()), e))?;
        let bytes =
            std::fs::read(&file).map_err(|e| io_err(format!("reading {}", file.display()), e))?;
        Self::from_bytes(&bytes, &file)
    }

    fn from_bytes(bytes: &[u8], file: &Path) -> Result<Self, FilterError> {
        // The kernel takes at most BPF_MAXINSNS (4096) instructions.
        if bytes.is_empty() || !bytes.len().is_multiple_of(INSN) || bytes.len() / INSN > 4096 {
            return Err(io_err(
                format!("reading {}", file.display()),
                io::Error::new(io::ErrorKind::InvalidData, "not a seccomp program"),
            ));
        }
        let program = bytes
            .chunks_exact(INSN)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        Ok(Self { program })
    }

    /// The number of BPF instructions.
    pub fn len(&self) -> usize {
        self.program.len()
    }

    /// Always false: a compiled profile has at least its default action.
    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Installs the program on the calling thread. It needs no-new-privileges set (or
    /// CAP_SYS_ADMIN); from then on every call of this thread and its children is filtered.
    #[allow(unsafe_code)]
    pub fn install(&self) -> Result<(), FilterError> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `len` instructions that live as long as `self`; the kernel
        // copies them before returning.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(FilterError::Install(io::Error::last_os_error()))
        }
    }
}

fn io_err(what: String, source: io::Error) -> FilterError {
    FilterError::Io { what, source }
}

/// The name of a profile's program: the same profile compiled by the same libseccomp gives
/// the same program.
fn cache_key(profile: &LinuxSeccomp) -> Result<String, FilterError> {
    let json = serde_json::to_vec(profile)
        .map_err(|e| FilterError::Compile(format!("serializing the profile: {e}")))?;
    let version = ScmpVersion::current()
        .map(|v| v.to_string())
        .map_err(|e| FilterError::Compile(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(version.as_bytes());
    h.update([0]);
    h.update(&json);
    Ok(hex::encode(h.finalize()))
}

/// The libseccomp filter for `profile` (not loaded).
fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, FilterError> {
    let err = |e: libseccomp::error::SeccompError| FilterError::Compile(e.to_string());
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(FilterError::Unsupported("filter flags".into()));
    }
    let mut ctx = ScmpFilterContext::new(default).map_err(err)?;
    // The caller sets no-new-privileges itself; the program must not depend on it.
    ctx.set_ctl_nnp(false).map_err(err)?;
    for a in profile.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)).map_err(err)?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // libseccomp refuses a rule that repeats the default action.
            continue;
        }
        let comparisons: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let index = a.index() as u32;
                match a.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpArgCompare::new(
                        index,
                        ScmpCompareOp::MaskedEqual(a.value()),
                        a.value_two().unwrap_or(0),
                    ),
                    op => ScmpArgCompare::new(index, compare(op), a.value()),
                }
            })
            .collect();
        // One comparison per argument in a rule; several on one argument are separate rules
        // (any of them allows), as runc adds them.
        let indexes: HashSet<u32> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| a.index() as u32)
            .collect();
        let groups: Vec<&[ScmpArgCompare]> = if indexes.len() == comparisons.len() {
            vec![&comparisons[..]]
        } else {
            comparisons.iter().map(std::slice::from_ref).collect()
        };
        for name in rule.names() {
            // A name this libseccomp does not know is a call this kernel cannot make.
            let Ok(call) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for group in &groups {
                ctx.add_rule_conditional(act, call, group).map_err(err)?;
            }
        }
    }
    Ok(ctx)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, FilterError> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(FilterError::Unsupported(
                "SCMP_ACT_NOTIFY (no listener runs)".into(),
            ));
        }
    })
}

fn compare(op: LinuxSeccompOperator) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // Handled by the caller (its mask is the rule's value).
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(0),
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::runtime::seccomp::{CLONE_NAMESPACE_FLAGS, default_profile};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    /// Runs `check` in a forked child with `filter` installed; true if it returned true.
    fn in_child_with(filter: &Filter, check: fn() -> bool) -> bool {
        // SAFETY: the child only makes syscalls and exits; the test binary's other threads
        // hold no lock it needs (no allocation happens in it before `_exit`).
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let ok = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0
                    && filter.install().is_ok()
                    && check();
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                matches!(waitpid(child, None).unwrap(), WaitStatus::Exited(_, 0))
            }
        }
    }

    fn raw_clone(flags: u64) -> i64 {
        // SAFETY: a clone without CLONE_VM: the child is a copy that exits at once.
        let r = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) };
        if r == 0 {
            unsafe { libc::_exit(0) }
        }
        r
    }

    #[test]
    fn the_compiled_default_profile_is_enforced_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("seccomp");
        let profile = default_profile(&HashSet::new()).unwrap();
        let filter = Filter::cached(&cache, &profile).unwrap();
        assert!(filter.len() > 100, "{filter:?}");
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(files.len(), 1, "one program, no temporary file left");
        // Read back from the cache: the same program.
        let again = Filter::cached(&cache, &profile).unwrap();
        assert_eq!(again.len(), filter.len());

        // A plain fork is allowed; one with a namespace flag, unshare and mount are refused
        // with EPERM, clone3 with ENOSYS (so libcs fall back to clone, whose flags it checks).
        assert!(in_child_with(&again, || raw_clone(0) > 0));
        assert!(in_child_with(&again, || {
            raw_clone(libc::CLONE_NEWUSER as u64) == -1
                && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }));
        assert!(in_child_with(&again, || {
            let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }));
        assert!(in_child_with(&again, || {
            let r = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
            r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)
        }));
        // The check itself can fail: without the filter the namespace clone works (as root).
        let none = Filter::cached(
            &cache,
            &oci_spec::runtime::LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap(),
        )
        .unwrap();
        assert!(in_child_with(&none, || raw_clone(
            libc::CLONE_NEWUSER as u64
        ) > 0));
        assert_eq!(
            CLONE_NAMESPACE_FLAGS & libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWUSER as u64
        );
    }

    #[test]
    fn a_damaged_program_is_refused_not_installed() {
        let dir = tempfile::tempdir().unwrap();
        let profile = default_profile(&HashSet::new()).unwrap();
        let key = cache_key(&profile).unwrap();
        std::fs::write(dir.path().join(format!("{key}.bpf")), b"12345").unwrap();
        let e = Filter::cached(dir.path(), &profile).unwrap_err();
        assert!(e.to_string().contains("not a seccomp program"), "{e}");
    }
}

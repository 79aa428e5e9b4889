//! The default seccomp profile: Docker's and containerd's default allowlist.
//!
//! Everything not listed fails with `EPERM`. The list follows moby's
//! `profiles/seccomp/default.json`: the common allowlist, `socket` for every family but
//! `AF_VSOCK`, the harmless `personality` values, the architecture-specific calls, `clone`
//! without namespace flags, `clone3` answered with `ENOSYS` (so libcs fall back to `clone`,
//! whose flags can be checked), and the calls that the granted capabilities make meaningful.
//! Names this kernel or libseccomp does not know are skipped when it is compiled
//! ([`super::seccomp_filter`]).

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use std::collections::HashSet;

/// The calls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // ptrace is safe since Linux 4.8 (seccomp is re-checked after a tracer changes a call).
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// The namespace flags `clone` must not carry without CAP_SYS_ADMIN: NEWNS, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET and NEWCGROUP.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `AF_VSOCK`, the one socket family containers may not open.
const AF_VSOCK: u64 = 40;

/// `ENOSYS`, the answer to `clone3` (its flags live in memory and cannot be checked).
const ENOSYS: u32 = 38;

/// `EPERM`, the answer to everything not allowed.
const EPERM: u32 = 1;

/// The seccomp architectures of this build: the native one and its compat modes.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

fn allow(names: &[&str]) -> Result<LinuxSyscall, OciSpecError> {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()
}

fn allow_if(
    name: &str,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSyscall, OciSpecError> {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v) = value_two {
        arg = arg.value_two(v);
    }
    LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(vec![arg.build()?])
        .build()
}

/// The default profile for a container holding `capabilities` (its bounding set).
pub fn default_profile(capabilities: &HashSet<Capability>) -> Result<LinuxSeccomp, OciSpecError> {
    let has = |c: Capability| capabilities.contains(&c);
    let mut syscalls = vec![allow(ALLOWED)?];

    syscalls.push(allow_if(
        "socket",
        0,
        LinuxSeccompOperator::ScmpCmpNe,
        AF_VSOCK,
        None,
    )?);
    // PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query value.
    for persona in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(allow_if(
            "personality",
            0,
            LinuxSeccompOperator::ScmpCmpEq,
            persona,
            None,
        )?);
    }

    if cfg!(target_arch = "x86_64") {
        syscalls.push(allow(&["arch_prctl", "modify_ldt"])?);
    } else if cfg!(target_arch = "aarch64") {
        syscalls.push(allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ])?);
    } else if cfg!(target_arch = "riscv64") {
        syscalls.push(allow(&["riscv_flush_icache"])?);
    }

    if has(Capability::SysAdmin) {
        syscalls.push(allow(&[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ])?);
    } else {
        // clone(flags, …): allowed when (flags & CLONE_NAMESPACE_FLAGS) == 0 (the mask is the
        // value, the expected value `valueTwo`, as in Docker's profile and runc).
        syscalls.push(allow_if(
            "clone",
            0,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
        )?);
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()?,
        );
    }

    let by_capability: &[(Capability, &[&str])] = &[
        (Capability::DacReadSearch, &["open_by_handle_at"]),
        (Capability::SysBoot, &["reboot"]),
        (Capability::SysChroot, &["chroot"]),
        (
            Capability::SysModule,
            &["delete_module", "init_module", "finit_module"],
        ),
        (Capability::SysPacct, &["acct"]),
        (
            Capability::SysPtrace,
            &["kcmp", "pidfd_getfd", "process_madvise"],
        ),
        (Capability::SysRawio, &["iopl", "ioperm"]),
        (
            Capability::SysTime,
            &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        ),
        (Capability::SysTtyConfig, &["vhangup"]),
        (
            Capability::SysNice,
            &[
                "get_mempolicy",
                "mbind",
                "set_mempolicy",
                "set_mempolicy_home_node",
            ],
        ),
        (Capability::Syslog, &["syslog"]),
        (Capability::Bpf, &["bpf"]),
        (Capability::Perfmon, &["perf_event_open"]),
    ];
    for (cap, names) in by_capability {
        if has(*cap) && !has(Capability::SysAdmin) {
            syscalls.push(allow(names)?);
        }
    }

    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_denies_namespaces_and_allows_chroot_with_its_capability() {
        let caps: HashSet<_> = [Capability::SysChroot, Capability::Chown].into();
        let p = default_profile(&caps).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let names: Vec<&String> = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names())
            .collect();
        for n in ["read", "execve", "chroot", "wait4"] {
            assert!(names.iter().any(|x| *x == n), "{n} allowed");
        }
        for n in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "clone",
        ] {
            assert!(!names.iter().any(|x| *x == n), "{n} not allowed outright");
        }
        let clone3 = p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|s| s.names().iter().any(|n| n == "clone3"))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
    }
}

//! A seccomp deny-list on top of the dropped capabilities: kernel interfaces a sandbox never
//! needs and that widen the attack surface (new namespaces, keyrings, BPF, modules, mounts,
//! clocks) fail with EPERM. Everything else is allowed, so ordinary tools keep working.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::Result;
use crate::spec::spec_err;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

const DENIED: &[&str] = &[
    // Namespaces: no new user (or network, mount…) namespace to gain capabilities in.
    "unshare",
    "setns",
    // Mounts (CAP_SYS_ADMIN is dropped too; defence in depth).
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Kernel keyrings are not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // BPF, perf and userfaultfd: frequent kernel exploit primitives.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    // The host's kernel and clocks.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
];

/// `CLONE_NEW*` flags refused in `clone`'s flags argument.
const CLONE_NS_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn errno(names: Vec<String>, errno: u32) -> Result<LinuxSyscall> {
    LinuxSyscallBuilder::default()
        .names(names)
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(errno)
        .build()
        .map_err(spec_err)
}

/// The profile.
pub(crate) fn profile() -> Result<LinuxSeccomp> {
    let mut syscalls = vec![errno(
        DENIED.iter().map(|s| (*s).to_owned()).collect(),
        EPERM,
    )?];
    // clone3 passes its flags in memory, out of seccomp's reach: ENOSYS makes libc fall back
    // to clone, whose flags are checked below.
    syscalls.push(errno(vec!["clone3".to_owned()], ENOSYS)?);
    for flag in CLONE_NS_FLAGS {
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(spec_err)?;
        let mut rule = errno(vec!["clone".to_owned()], EPERM)?;
        rule.set_args(Some(vec![arg]));
        syscalls.push(rule);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
        .map_err(spec_err)
}

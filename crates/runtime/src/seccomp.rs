//! The seccomp allow-list: the container engines' default profile (the syscall list in
//! `seccomp_allow.txt`, with its source named there) narrowed for a sandbox whose code is the
//! adversary. Anything not allowed fails with EPERM — never a kill, so the init survives a
//! stray call and callers see an ordinary error.
//!
//! On x86-64 the kernel accepts exactly three syscall ABIs (x86-64, i386, x32); all three are
//! listed, so no call arrives from an architecture the filter does not know.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use crate::error::Result;
use crate::spec::spec_err;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The engines' unconditional allow-list, as data.
const ALLOW_LIST: &str = include_str!("seccomp_allow.txt");

/// Refused although the engines' list allows them (or listed here to state the decision even
/// where the list already leaves them out; `refused_calls_are_not_allowed` checks both).
pub(crate) const REFUSED: &[&str] = &[
    // io_uring runs syscalls from kernel workers out of seccomp's sight; a long CVE record.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // File handles bypass path-based checks (the "shocker" breakout); keep both halves out.
    "open_by_handle_at",
    "name_to_handle_at",
    // BPF, perf and userfaultfd: frequent kernel exploit primitives.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    // Kernel keyrings are not namespaced.
    "keyctl",
    "add_key",
    "request_key",
    // The host's kernel.
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
    "quotactl_fd",
    "settimeofday",
    "clock_settime",
    "clock_settime64",
    "lookup_dcookie",
    "syslog",
    // Mounts.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Namespaces: no new user (or network, mount…) namespace to gain capabilities in.
    "unshare",
    "setns",
    // Debugging other processes: the init and every exec'd command share one uid, so only
    // this keeps one sandboxed process from taking over another (debuggers do not work).
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: `clone` is allowed only with none of them (the engines' mask).
const CLONE_NS_MASK: u64 = 0x7E02_0000;

/// `personality` values the engines allow: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32,
/// and the query 0xffffffff. Others (e.g. ADDR_NO_RANDOMIZE) disable hardening.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `AF_VSOCK`: a channel to the hypervisor, refused by the engines.
const AF_VSOCK: u64 = 40;

/// The names allowed unconditionally: the data file less [`REFUSED`], plus `chroot` (the
/// engines allow it with CAP_SYS_CHROOT, which the sandbox holds).
pub(crate) fn allowed_names() -> Vec<String> {
    let mut names: Vec<String> = ALLOW_LIST
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !REFUSED.contains(l))
        .map(str::to_owned)
        .collect();
    names.push("chroot".to_owned());
    names
}

fn rule(names: &[&str], action: LinuxSeccompAction) -> Result<LinuxSyscall> {
    LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .action(action)
        .build()
        .map_err(spec_err)
}

fn with_arg0(
    name: &str,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSyscall> {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(value)
        .op(op);
    if let Some(v2) = value_two {
        arg = arg.value_two(v2);
    }
    let mut r = rule(&[name], LinuxSeccompAction::ScmpActAllow)?;
    r.set_args(Some(vec![arg.build().map_err(spec_err)?]));
    Ok(r)
}

/// The profile.
pub(crate) fn profile() -> Result<LinuxSeccomp> {
    let names = allowed_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut syscalls = vec![rule(&names, LinuxSeccompAction::ScmpActAllow)?];
    // MASKED_EQ: (flags & value) == valueTwo.
    syscalls.push(with_arg0(
        "clone",
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        CLONE_NS_MASK,
        Some(0),
    )?);
    // clone3 passes its flags in memory, out of seccomp's reach: ENOSYS makes libc fall back
    // to clone, whose flags are checked above.
    let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno)?;
    clone3.set_errno_ret(Some(ENOSYS));
    syscalls.push(clone3);
    for p in PERSONALITIES {
        syscalls.push(with_arg0(
            "personality",
            LinuxSeccompOperator::ScmpCmpEq,
            p,
            None,
        )?);
    }
    syscalls.push(with_arg0(
        "socket",
        LinuxSeccompOperator::ScmpCmpNe,
        AF_VSOCK,
        None,
    )?);
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
        .map_err(spec_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_calls_are_not_allowed() {
        let names = allowed_names();
        for r in REFUSED {
            assert!(!names.iter().any(|n| n == r), "{r} allowed");
        }
        // The everyday calls are there (a truncated data file would show here).
        for n in ["read", "openat", "execve", "chroot", "arch_prctl"] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        // These are allowed only through their argument filters.
        for n in ["socket", "clone", "personality"] {
            assert!(!names.iter().any(|x| x == n), "{n} unfiltered");
        }
        assert!(names.len() > 330, "{}", names.len());
        // Every name is a plain identifier (no stray text from the data file).
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        );
    }

    #[test]
    fn default_is_eperm_and_namespaces_need_no_flag() {
        let v = serde_json::to_value(profile().unwrap()).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        let rules = v["syscalls"].as_array().unwrap();
        let clone: Vec<_> = rules
            .iter()
            .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "clone"))
            .collect();
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["value"], CLONE_NS_MASK);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0);
        assert!(
            !rules
                .iter()
                .any(|r| r["action"] == "SCMP_ACT_KILL" || r["action"] == "SCMP_ACT_KILL_PROCESS")
        );
    }
}
